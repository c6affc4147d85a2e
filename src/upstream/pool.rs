//! The upstream side as a whole: a pool of [`Conn`]s for RESP2 clients and one for RESP3
//! clients, started together with the health tracker and its probe. It hands each client its
//! connection and reports what the upstream said about itself; it never reads a reply.
use super::cluster::Cluster;
use super::conn::{Conn, ConnTask};
use super::handshake::{self, ServerInfo};
use super::lanes::{self, Lane};
use super::pinned::PinnedPool;
use super::{command_fetch, health, probe};
use crate::config::UpstreamConfig;
use crate::protocol::Protocol;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The upstream side: a pool of connections for RESP2 clients and one for RESP3 clients in the
/// URL's database, and the same again, opened on first use, for each database a tenant has of
/// its own (`tenant.db`).
pub struct Upstream {
    config: Arc<UpstreamConfig>,
    /// The URL's database: these connections are the ones the upstream's health counts.
    home: Pools,
    /// Tenants' own databases. Their connections reach the same server as `home`'s, so they
    /// add nothing to its health; a handshake refused (a database past the server's
    /// `databases`) fails only their commands.
    others: RwLock<HashMap<u32, Arc<Pools>>>,
    live: Arc<AtomicUsize>,
    info: Arc<RwLock<Option<ServerInfo>>>,
    health: Arc<health::Health>,
    /// The upstream's own command table, once read (see [`command_fetch`]).
    commands: watch::Receiver<command_fetch::Fetched>,
    shutdown: CancellationToken,
    pinned: Arc<PinnedPool>,
    /// The next out-of-band command's connection (see [`lanes::Standby`]).
    standby: Arc<lanes::Standby>,
    /// A `redis+cluster://` upstream: `home`'s connections are its routers (see
    /// [`super::cluster`]). A cluster has database 0 only: no tenant has a database of its own.
    cluster: Option<Arc<Cluster>>,
    /// The scripts in flight on the pools' connections and whose (see [`super::scripts`]).
    scripts: Arc<super::scripts::Scripts>,
}

/// The shared connections of one database: per protocol, the pool and the slow and bulk lanes'
/// connection (see [`lanes`]), the lanes opened on first use.
struct Pools {
    /// The upstream's configuration with this database in its URL (the handshake SELECTs it).
    config: Arc<UpstreamConfig>,
    resp2: Vec<Conn>,
    resp3: Vec<Conn>,
    slow: [OnceLock<Conn>; 2],
    bulk: [OnceLock<Conn>; 2],
}

impl Pools {
    fn start(config: Arc<UpstreamConfig>, counted: bool, up: &Upstream) -> Pools {
        let mut pools = [Vec::new(), Vec::new()];
        for (pool, proto) in pools.iter_mut().zip([Protocol::Resp2, Protocol::Resp3]) {
            for slot in 0..config.connections {
                pool.push(up.spawn(&config, proto, slot, Lane::Shared, counted));
            }
        }
        let [resp2, resp3] = pools;
        Pools {
            config,
            resp2,
            resp3,
            slow: [OnceLock::new(), OnceLock::new()],
            bulk: [OnceLock::new(), OnceLock::new()],
        }
    }

    fn conn_in(&self, up: &Upstream, lane: Lane, proto: Protocol, client_id: u64) -> &Conn {
        let i = match proto {
            Protocol::Resp2 => 0,
            Protocol::Resp3 => 1,
        };
        let pool = [&self.resp2, &self.resp3][i];
        let lanes = match lane {
            Lane::Shared => return &pool[(client_id % pool.len() as u64) as usize],
            Lane::Bulk => &self.bulk,
            _ => &self.slow,
        };
        lanes[i].get_or_init(|| {
            let slot = self.config.connections + (lane == Lane::Bulk) as usize;
            up.spawn(&self.config, proto, slot, lane, false)
        })
    }
}

impl Upstream {
    /// Start the pools' connection tasks and the health probe. They connect at once and keep
    /// reconnecting until `shutdown` fires and every handle is gone.
    pub fn start(
        config: UpstreamConfig,
        options: health::Options,
        shutdown: CancellationToken,
    ) -> Arc<Upstream> {
        let config = Arc::new(config);
        let live = Arc::new(AtomicUsize::new(0));
        let info = Arc::new(RwLock::new(None));
        let health = Arc::new(health::Health::new(
            config.url.addr.to_string().into(),
            // A cluster's pool connections are its nodes': only the probe speaks for the seed.
            if config.url.is_cluster() {
                0
            } else {
                2 * config.connections
            },
            config.health.recover_after,
            options,
        ));
        let cluster = config
            .url
            .is_cluster()
            .then(|| Cluster::start(config.clone(), shutdown.clone()));
        tokio::spawn(probe::run(
            health.clone(),
            config.clone(),
            cluster.clone(),
            info.clone(),
            shutdown.clone(),
        ));
        let (commands_tx, commands) = watch::channel(command_fetch::Fetched::Pending);
        tokio::spawn(command_fetch::fetch(
            config.clone(),
            commands_tx,
            shutdown.clone(),
        ));
        let mut up = Upstream {
            pinned: PinnedPool::new(config.clone(), health.clone()),
            home: Pools {
                config: config.clone(),
                resp2: Vec::new(),
                resp3: Vec::new(),
                slow: [OnceLock::new(), OnceLock::new()],
                bulk: [OnceLock::new(), OnceLock::new()],
            },
            others: RwLock::default(),
            standby: Arc::default(),
            scripts: Arc::default(),
            config: config.clone(),
            live,
            info,
            health,
            shutdown,
            commands,
            cluster,
        };
        match &up.cluster {
            // Clients' connections are routers; the nodes' own pools are opened by the cluster.
            Some(c) => {
                let home = &mut up.home;
                for (i, proto) in [Protocol::Resp2, Protocol::Resp3].into_iter().enumerate() {
                    for slot in 0..config.connections {
                        let router = c.router(proto, Lane::Shared, slot);
                        match proto {
                            Protocol::Resp2 => home.resp2.push(router),
                            Protocol::Resp3 => home.resp3.push(router),
                        }
                    }
                    let _ = home.slow[i].set(c.router(proto, Lane::Slow, 0));
                    let _ = home.bulk[i].set(c.router(proto, Lane::Bulk, 0));
                }
            }
            None => up.home = Pools::start(config, true, &up),
        }
        Arc::new(up)
    }

    /// Start one connection's task; its handle.
    fn spawn(
        &self,
        config: &Arc<UpstreamConfig>,
        proto: Protocol,
        slot: usize,
        lane: Lane,
        counted: bool,
    ) -> Conn {
        // The queue holds what one write can take; past it, senders wait.
        let (tx, rx) = mpsc::channel(config.max_inflight.min(4096));
        let task = ConnTask {
            config: config.clone(),
            proto,
            slot,
            lane,
            counted,
            rx,
            live: self.live.clone(),
            info: self.info.clone(),
            addr: handshake::addr(config),
            state: self.health.subscribe(),
            health: self.health.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.run());
        Conn { tx }
    }

    /// The upstream's own command table, waiting (at most `upstream.connect_timeout_ms`, and not
    /// at all in local-only mode) while it is still being read; `None` if there is none yet or
    /// the upstream has none respite could read.
    pub async fn commands(&self) -> Option<Arc<crate::command::UpstreamCommands>> {
        let mut rx = self.commands.clone();
        // Unreachable (local-only mode): no wait, so a command neither table knows is refused
        // at once, as it would be once the table is read.
        if self.health.state().is_local() {
            return match &*rx.borrow() {
                command_fetch::Fetched::Done(t) => t.clone(),
                command_fetch::Fetched::Pending => None,
            };
        }
        let wait = rx.wait_for(|f| !matches!(f, command_fetch::Fetched::Pending));
        match tokio::time::timeout(self.config.connect_timeout, wait).await {
            Ok(Ok(f)) => match &*f {
                command_fetch::Fetched::Done(t) => t.clone(),
                command_fetch::Fetched::Pending => None,
            },
            _ => None,
        }
    }

    /// The connection a client uses for a command in `lane` (see [`lanes`]). The slow and bulk
    /// lanes' connections are started here the first time they are asked for, so a proxy whose
    /// clients never run a slow command opens no connection for it.
    pub fn conn_in(&self, lane: Lane, proto: Protocol, client_id: u64) -> &Conn {
        if lane == Lane::Slow {
            // What ends a slow command must not wait for a connection to open behind it.
            self.ready_out_of_band();
        }
        self.home.conn_in(self, lane, proto, client_id)
    }

    /// [`Upstream::conn_in`] for a client of a tenant with a database of its own: the same
    /// connection every time for (`db`, lane, protocol, client), in that database. Its pools are
    /// started the first time a client of that database sends anything.
    pub fn conn_in_db(&self, db: u32, lane: Lane, proto: Protocol, client_id: u64) -> Conn {
        if db == self.config.url.db {
            return self.conn_in(lane, proto, client_id).clone();
        }
        if lane == Lane::Slow {
            self.ready_out_of_band();
        }
        let found = self.others.read().ok().and_then(|m| m.get(&db).cloned());
        let pools = found.unwrap_or_else(|| {
            let mut others = self.others.write().unwrap_or_else(|e| e.into_inner());
            others
                .entry(db)
                .or_insert_with(|| {
                    let mut config = (*self.config).clone();
                    config.url.db = db;
                    Arc::new(Pools::start(Arc::new(config), false, self))
                })
                .clone()
        });
        pools.conn_in(self, lane, proto, client_id).clone()
    }

    /// Send one encoded command on a connection of its own (SCRIPT KILL and the like, see
    /// [`lanes::out_of_band`]).
    pub fn out_of_band(
        &self,
        proto: Protocol,
        bytes: bytes::Bytes,
        budget: Option<Arc<super::ReplyBudget>>,
    ) -> tokio::sync::oneshot::Receiver<super::Reply> {
        lanes::send(
            self.config.clone(),
            self.health.clone(),
            self.standby.clone(),
            proto,
            bytes,
            budget,
        )
    }

    /// The scripts in flight on this upstream's pool connections (see [`super::scripts`]).
    pub fn scripts(&self) -> &Arc<super::scripts::Scripts> {
        &self.scripts
    }

    /// Have a connection ready for the next out-of-band command (see [`lanes::Standby`]): called
    /// when a command that may keep the server busy is sent (the slow lane, a pinned connection).
    pub fn ready_out_of_band(&self) {
        self.standby.ready(&self.config, &self.health);
    }

    /// The connection a client uses. A client always uses the same one per protocol, so its
    /// commands reach the upstream in the order it sent them.
    pub fn conn(&self, proto: Protocol, client_id: u64) -> &Conn {
        self.conn_in(Lane::Shared, proto, client_id)
    }

    /// Connections established now, over both pools (of every node, for a cluster).
    pub fn live_connections(&self) -> usize {
        match &self.cluster {
            Some(c) => c.nodes().iter().map(|n| n.live_connections()).sum(),
            None => self.live.load(Ordering::Relaxed),
        }
    }

    pub fn server_info(&self) -> Option<ServerInfo> {
        if let Some(c) = &self.cluster {
            return c.nodes().iter().find_map(|n| n.server_info());
        }
        self.info.read().ok().and_then(|i| i.clone())
    }

    /// The pool of connections of one client's own for a command on hash slot `slot` (its
    /// first key's): in a cluster, the pool of the node serving it (the seed's when there is
    /// none or the slot is not known yet); otherwise the one pool.
    pub fn pinned_for(&self, slot: Option<u16>) -> Arc<PinnedPool> {
        if let (Some(c), Some(slot)) = (&self.cluster, slot)
            && let Some(topology) = c.current()
            && let Some(addr) = topology.primary(slot)
        {
            return c.node(addr).pinned().clone();
        }
        self.pinned.clone()
    }

    /// With a cluster's reads from replicas on: the mark a connection of a client's own for
    /// `slot` holds while leased (see [`super::cluster::replicas`]), on the node
    /// [`Upstream::pinned_for`] picks.
    pub fn pinned_mark(&self, slot: Option<u16>) -> Option<super::cluster::replicas::WriteMark> {
        let c = self.cluster.as_ref().filter(|c| c.reads_from_replicas())?;
        let addr = slot
            .and_then(|s| c.current()?.primary(s).map(str::to_string))
            .unwrap_or_else(|| self.config.url.addr.to_string());
        Some(c.replicas().write_node(&addr))
    }

    /// The cluster behind a `redis+cluster://` upstream.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Connections of one client's own (see [`super::pinned`]).
    pub fn pinned(&self) -> &Arc<PinnedPool> {
        &self.pinned
    }

    pub fn health(&self) -> &Arc<health::Health> {
        &self.health
    }
}

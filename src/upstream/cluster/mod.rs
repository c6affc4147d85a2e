//! A Redis Cluster or Valkey Cluster behind one endpoint (`redis+cluster://h1:p1,h2:p2…`).
//!
//! The cluster is a set of primaries, each an ordinary [`Upstream`] of its own (its
//! auto-pipelined pools, health and probe), found from the seeds' topology ([`topology`]) and
//! refreshed on MOVED, on a connection failure and every [`REFRESH_EVERY`]. The clients' side
//! does not change: their pool connections are [`Conn`]s like any other, but the task behind
//! each is a router ([`route`]) that frames the commands of a job, routes each by the hash slot
//! of its keys ([`slot`]), splits the multi-key commands that may span slots and merges their
//! replies ([`merge`]), follows MOVED and ASK, and hands the job its replies in order.
//!
//! # Invariants
//! - Every job gets exactly one outcome, with one reply per command in the order sent: the
//!   router completes it once every command's reply is in.
//! - A client's commands reach each node in the order it sent them: one router per pool
//!   connection, and each router uses the same connection of each node.
//! - A command is resent only when the node said it did not run it (MOVED, ASK, TRYAGAIN, or
//!   a connection that never sent it); a command lost in flight gets its error, never a retry.
use super::conn::Conn;
use super::job::Job;
use super::lanes::Lane;
use super::{Upstream, handshake, health};
use crate::config::{UpstreamAddr, UpstreamConfig};
use crate::protocol::Protocol;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod counts;
mod ctx;
mod merge;
mod plan;
pub mod replicas;
mod route;
mod scan;
pub mod slot;
pub mod topology;

use topology::Topology;

pub use plan::CROSSSLOT;

/// The periodic topology refresh, on top of those MOVED and failures ask for.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Refreshes asked for closer together than this wait for the next one.
const REFRESH_GAP: Duration = Duration::from_millis(100);
/// Redirections (MOVED, ASK, TRYAGAIN) followed for one command before it fails.
pub const MAX_REDIRECTS: usize = 6;

/// A node: its connections and its series.
type Node = (Arc<Upstream>, Arc<crate::metrics::ClusterNode>);

/// The cluster: its topology and one [`Upstream`] per node seen.
pub struct Cluster {
    config: Arc<UpstreamConfig>,
    shutdown: CancellationToken,
    topology: watch::Sender<Option<Arc<Topology>>>,
    nodes: RwLock<HashMap<String, Node>>,
    refresh: Notify,
    /// Counts the topology changes that moved a slot to another primary, each counted before
    /// the new topology is published (the near cache empties itself when it changes).
    slot_moves: AtomicU64,
    /// Per slot, how many times it moved to another primary: bumped before the topology that
    /// routes it anywhere new is published (the near cache's entries of a slot carry it).
    slot_move_counts: Arc<[std::sync::atomic::AtomicU32]>,
    /// Which reads replicas may serve (`upstream.read_from_replicas`; unused when off).
    pub(super) replicas: Arc<replicas::Replicas>,
}

impl Cluster {
    /// Start discovery and the refresh task; nodes are connected as the topology names them.
    pub fn start(config: Arc<UpstreamConfig>, shutdown: CancellationToken) -> Arc<Cluster> {
        let cluster = Arc::new(Cluster {
            config,
            shutdown,
            topology: watch::channel(None).0,
            nodes: RwLock::new(HashMap::new()),
            refresh: Notify::new(),
            slot_moves: AtomicU64::new(0),
            replicas: Arc::new(replicas::Replicas::new()),
            slot_move_counts: (0..slot::SLOTS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        });
        tokio::spawn(refresh_task(cluster.clone()));
        if cluster.config.read_from_replicas {
            tokio::spawn(replicas::poll(Arc::downgrade(&cluster)));
        }
        cluster
    }

    /// A router in front of the cluster for clients of `proto` on `lane`, using connection
    /// `index` of each node.
    pub(super) fn router(self: &Arc<Self>, proto: Protocol, lane: Lane, index: usize) -> Conn {
        let (tx, rx) = mpsc::channel(self.config.max_inflight.min(4096));
        let ctx = ctx::Ctx {
            cluster: self.clone(),
            proto,
            lane,
            index,
        };
        tokio::spawn(route::run(ctx, rx));
        Conn { tx }
    }

    /// The topology, waiting up to `upstream.connect_timeout_ms` for the first one.
    pub async fn topology(&self) -> Option<Arc<Topology>> {
        // Every job asks: known, it costs a read of the current one, not a new receiver.
        if let Some(t) = self.current() {
            return Some(t);
        }
        let mut rx = self.topology.subscribe();
        if let Some(t) = rx.borrow().clone() {
            return Some(t);
        }
        let wait = rx.wait_for(|t| t.is_some());
        match tokio::time::timeout(self.config.connect_timeout, wait).await {
            Ok(Ok(t)) => t.clone(),
            _ => None,
        }
    }

    /// The topology as it changes (`None` until the first is read).
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Topology>>> {
        self.topology.subscribe()
    }

    /// How many topology changes so far moved a slot to another primary.
    pub fn slot_moves(&self) -> u64 {
        self.slot_moves.load(Ordering::Acquire)
    }

    /// Per slot, how many times it moved (see the field).
    pub fn slot_move_counts(&self) -> Arc<[std::sync::atomic::AtomicU32]> {
        self.slot_move_counts.clone()
    }

    /// Count a move of each of `slots`, before the topology that moves them is published.
    fn count_moves(&self, slots: impl Iterator<Item = u16>) {
        for s in slots {
            self.slot_move_counts[s as usize].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The topology now, if known.
    pub fn current(&self) -> Option<Arc<Topology>> {
        self.topology.borrow().clone()
    }

    /// The node at `addr`, connected on first use.
    pub fn node(&self, addr: &str) -> Arc<Upstream> {
        self.node_and_metrics(addr).0
    }

    /// The node at `addr` and its series (see [`crate::metrics::ClusterNode`]), both made on
    /// first use.
    pub fn node_and_metrics(
        &self,
        addr: &str,
    ) -> (Arc<Upstream>, Arc<crate::metrics::ClusterNode>) {
        if let Some(n) = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return n.clone();
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(addr.to_string())
            .or_insert_with(|| {
                let config = self.config.for_node(addr);
                info!(node = addr, "cluster node connected");
                // A node's health is its own, not the upstream's gauge (see `publish`).
                let options = health::Options {
                    publish: false,
                    ..health::Options::default()
                };
                let up = Upstream::start(config, options, self.shutdown.clone());
                (up, Arc::new(crate::metrics::ClusterNode::new(addr)))
            })
            .clone()
    }

    /// Whether reads may go to replicas (`upstream.read_from_replicas`).
    pub fn reads_from_replicas(&self) -> bool {
        self.config.read_from_replicas
    }

    /// Which reads replicas may serve, and the marks of writes in flight.
    pub fn replicas(&self) -> &Arc<replicas::Replicas> {
        &self.replicas
    }

    /// Every node connected so far.
    pub fn nodes(&self) -> Vec<Arc<Upstream>> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|n| n.0.clone())
            .collect()
    }

    /// Set the scrape-time gauges: each node's slots in the topology now, and the slots served
    /// locally (`local`: local-only mode, which is for the whole cluster).
    pub fn publish_metrics(&self, local: bool) {
        let topo = self.current();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        if let Some(t) = &topo {
            for s in 0..slot::SLOTS as u16 {
                if let Some(p) = t.primary(s) {
                    *counts.entry(p).or_default() += 1;
                }
            }
        }
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        for (addr, (_, m)) in nodes.iter() {
            m.slots
                .set(counts.get(addr.as_str()).copied().unwrap_or(0) as f64);
        }
        metrics::gauge!(crate::metrics::CLUSTER_SLOTS_LOCAL).set(if local {
            slot::SLOTS as f64
        } else {
            0.0
        });
    }

    /// Ask for a topology refresh soon (after a MOVED or a connection failure).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// A MOVED says `slot` is served by `addr` now: routed there at once, and the whole
    /// topology read again soon.
    pub fn moved(&self, slot: u16, addr: &str) {
        self.topology.send_if_modified(|t| match t {
            Some(topo) if topo.primary(slot) != Some(addr) => {
                let mut next = (**topo).clone();
                next.moved(slot, addr);
                self.count_moves(std::iter::once(slot));
                self.replicas.slots_moved(std::iter::once(slot));
                self.slot_moves.fetch_add(1, Ordering::AcqRel);
                *t = Some(Arc::new(next));
                true
            }
            _ => false,
        });
        crate::metrics::cluster_redirect("moved");
        self.request_refresh();
    }

    /// Read the topology from a known primary, else a seed; the first that answers wins.
    async fn discover(&self) -> Option<Topology> {
        let mut candidates: Vec<String> = self
            .current()
            .map(|t| t.primaries().to_vec())
            .unwrap_or_default();
        candidates.extend(self.config.url.seeds.iter().cloned());
        candidates.dedup();
        for addr in candidates {
            match fetch(&self.config, &addr).await {
                Ok(t) => return Some(t),
                Err(e) => warn!(node = %addr, error = %e, "cluster topology not read"),
            }
        }
        None
    }
}

/// Read the topology from the node at `addr`: CLUSTER SHARDS, else CLUSTER SLOTS.
async fn fetch(config: &UpstreamConfig, addr: &str) -> Result<Topology, String> {
    let mut config = config.clone();
    config.url.addr = UpstreamAddr::Tcp(addr.to_string());
    let mut opened = handshake::open(&config, Protocol::Resp2, "respite-cluster")
        .await
        .map_err(|e| e.to_string())?;
    let name: Arc<str> = addr.into();
    let host = config.url.host().to_string();
    let shards = handshake::request(
        &mut opened.read,
        &mut opened.write,
        &name,
        "CLUSTER SHARDS",
        b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n",
    )
    .await
    .map_err(|e| e.to_string())?;
    match Topology::from_shards(&shards, &host, config.tls.is_some()) {
        Ok(t) => Ok(t),
        Err(shards_err) => {
            let slots = handshake::request(
                &mut opened.read,
                &mut opened.write,
                &name,
                "CLUSTER SLOTS",
                b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n",
            )
            .await
            .map_err(|e| e.to_string())?;
            Topology::from_slots(&slots, &host).map_err(|e| format!("{shards_err}; then {e}"))
        }
    }
}

/// Keep the topology current: at once, then on request (at most one per [`REFRESH_GAP`]) and
/// every [`REFRESH_EVERY`], until shutdown.
async fn refresh_task(cluster: Arc<Cluster>) {
    let c = cluster;
    let mut known = false;
    while !c.shutdown.is_cancelled() {
        match c.discover().await {
            Some(t) => {
                for addr in t.primaries() {
                    c.node(addr);
                }
                let changed = c.topology.send_if_modified(|cur| {
                    if cur.as_deref() != Some(&t) {
                        if let Some(old) = cur.as_deref()
                            && !old.same_owners(&t)
                        {
                            c.count_moves(old.moved_slots(&t));
                            c.replicas.slots_moved(old.moved_slots(&t));
                            c.slot_moves.fetch_add(1, Ordering::AcqRel);
                        }
                        *cur = Some(Arc::new(t));
                        true
                    } else {
                        false
                    }
                });
                if changed {
                    crate::metrics::cluster_refresh();
                    info!(
                        primaries = c.current().map_or(0, |t| t.primaries().len()),
                        "cluster topology read"
                    );
                }
                known = true;
            }
            // Nothing known yet: try again soon rather than after a whole period.
            None if !known => {
                tokio::time::sleep(REFRESH_GAP * 5).await;
                continue;
            }
            None => {}
        }
        tokio::select! {
            _ = c.refresh.notified() => {}
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
            _ = c.shutdown.cancelled() => return,
        }
        tokio::time::sleep(REFRESH_GAP).await;
    }
}

/// The bytes of a command, for tests and synthesised sends.
pub(super) fn command(args: &[&[u8]]) -> Bytes {
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode::command(&mut out, args);
    out.freeze()
}

/// The job a router could not route at all: every command gets `error`.
pub(super) fn fail_job(job: Job, error: &str) {
    let mut out = bytes::BytesMut::new();
    for _ in 0..job.count {
        crate::protocol::encode::error(&mut out, error);
    }
    let _ = job.reply.send(Ok(out.freeze()));
}

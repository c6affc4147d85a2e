//! The upstream side as a whole: a pool of [`Conn`]s for RESP2 clients and one for RESP3
//! clients, started together with the health tracker and its probe. It hands each client its
//! connection and reports what the upstream said about itself; it never reads a reply.
use super::conn::{Conn, ConnTask};
use super::handshake::{self, ServerInfo};
use super::pinned::PinnedPool;
use super::{health, probe};
use crate::config::UpstreamConfig;
use crate::protocol::Protocol;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The upstream side: a pool of connections for RESP2 clients and one for RESP3 clients.
pub struct Upstream {
    config: Arc<UpstreamConfig>,
    resp2: Vec<Conn>,
    resp3: Vec<Conn>,
    live: Arc<AtomicUsize>,
    info: Arc<RwLock<Option<ServerInfo>>>,
    health: Arc<health::Health>,
    pinned: Arc<PinnedPool>,
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
            2 * config.connections,
            config.health.recover_after,
            options,
        ));
        tokio::spawn(probe::run(health.clone(), config.clone(), shutdown.clone()));
        let mut pools = [Vec::new(), Vec::new()];
        for (pool, proto) in pools.iter_mut().zip([Protocol::Resp2, Protocol::Resp3]) {
            for slot in 0..config.connections {
                // The queue holds what one write can take; past it, senders wait.
                let (tx, rx) = mpsc::channel(config.max_inflight.min(4096));
                let task = ConnTask {
                    config: config.clone(),
                    proto,
                    slot,
                    rx,
                    live: live.clone(),
                    info: info.clone(),
                    addr: handshake::addr(&config),
                    state: health.subscribe(),
                    health: health.clone(),
                    shutdown: shutdown.clone(),
                };
                tokio::spawn(task.run());
                pool.push(Conn { tx });
            }
        }
        let [resp2, resp3] = pools;
        Arc::new(Upstream {
            pinned: PinnedPool::new(config.clone()),
            config,
            resp2,
            resp3,
            live,
            info,
            health,
        })
    }

    /// The connection a client uses. A client always uses the same one per protocol, so its
    /// commands reach the upstream in the order it sent them.
    pub fn conn(&self, proto: Protocol, client_id: u64) -> &Conn {
        let pool = match proto {
            Protocol::Resp2 => &self.resp2,
            Protocol::Resp3 => &self.resp3,
        };
        &pool[(client_id % pool.len() as u64) as usize]
    }

    /// Connections established now, over both pools.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn server_info(&self) -> Option<ServerInfo> {
        self.info.read().ok().and_then(|i| i.clone())
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

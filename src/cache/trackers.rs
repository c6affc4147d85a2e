//! Which tracking connection a key's fills ride: `CLIENT TRACKING` is per server, so a key
//! must be read on a connection to the server that will see its writes.
//!
//! - One upstream: `near_cache.connections` trackers, a key on `hash(key) % K`.
//! - A cluster: K trackers per primary, opened the first time a key of its slots is read; a
//!   key on its slot's primary's `hash(key) % K`. When a slot moves (resharding, a failover),
//!   its entries are not served again ([`super::store::SlotStamp`]: the cluster counts the
//!   slot's moves before it routes the slot anywhere new): an entry filled from a slot's old
//!   primary would hear no invalidation for writes on its new one. Other slots' entries stay.
//!   A fill that a node answers with a redirection
//!   (the slot moved before respite knew) is resent through the cluster's router and answered,
//!   never cached ([`redirected`]).
//!
//! # Invariants
//! - A key's fills go to one connection for as long as its slot stays on one primary, so its
//!   fill replies and invalidations arrive in order (see [`super::tracking_conns`]).
//! - Nothing of a slot filled before the slot moved is served after: every entry carries its
//!   slot's move count, taken before its node was picked, and a hit needs it unchanged.
use super::tracking_conns::{self, FillJob, Handle};
use super::{FlushReason, Shared};
use crate::config::UpstreamConfig;
use crate::protocol::{Protocol, ReplyScanner};
use crate::upstream::Upstream;
use crate::upstream::cluster::Cluster;
use crate::upstream::cluster::slot::key_slot;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

pub(crate) enum Trackers {
    One(Vec<Handle>),
    Cluster(ByNode),
}

pub(crate) struct ByNode {
    cluster: Arc<Cluster>,
    config: Arc<UpstreamConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    per_node: usize,
    nodes: RwLock<HashMap<String, Arc<[Handle]>>>,
    /// The cluster's move count last counted in the metric.
    seen_moves: AtomicU64,
}

/// A picked tracker: borrowed from the one upstream's, or held from a node's.
pub(crate) enum Picked<'a> {
    Borrowed(&'a Handle),
    Held(Arc<[Handle]>, usize),
}

impl std::ops::Deref for Picked<'_> {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        match self {
            Picked::Borrowed(h) => h,
            Picked::Held(all, i) => &all[*i],
        }
    }
}

impl Trackers {
    /// The trackers of `config`'s upstream: for a cluster (`upstream` has one), per node.
    pub fn start(
        shared: &Arc<Shared>,
        config: Arc<UpstreamConfig>,
        upstream: Option<Arc<Upstream>>,
        shutdown: CancellationToken,
    ) -> Trackers {
        let per_node = shared.config.connections;
        match upstream.and_then(|u| u.cluster().cloned()) {
            Some(cluster) => Trackers::Cluster(ByNode {
                seen_moves: AtomicU64::new(cluster.slot_moves()),
                cluster,
                config,
                shared: shared.clone(),
                shutdown,
                per_node,
                nodes: RwLock::new(HashMap::new()),
            }),
            None => Trackers::One(
                (0..per_node)
                    .map(|i| {
                        tracking_conns::spawn(i, shared.clone(), config.clone(), shutdown.clone())
                    })
                    .collect(),
            ),
        }
    }

    /// The tracker for `key` (hashed to `hash`); `None` in a cluster whose slot map does not
    /// name the key's primary yet.
    pub fn pick(&self, key: &[u8], hash: u64) -> Option<Picked<'_>> {
        match self {
            Trackers::One(all) => Some(Picked::Borrowed(&all[(hash % all.len() as u64) as usize])),
            Trackers::Cluster(by) => {
                let topology = by.cluster.current()?;
                let addr = topology.primary(key_slot(key))?;
                let all = by.node(addr);
                let i = (hash % all.len() as u64) as usize;
                Some(Picked::Held(all, i))
            }
        }
    }

    /// In a cluster, count the slot-map changes that moved slots since the last read (under
    /// `respite_near_cache_flushes_total{reason="slots_moved"}`): their entries, and only
    /// theirs, are already not served (see [`super::store::SlotStamp`]).
    pub fn check_moves(&self) {
        if let Trackers::Cluster(by) = self {
            let moves = by.cluster.slot_moves();
            let seen = by.seen_moves.swap(moves, Ordering::AcqRel);
            if seen != moves {
                metrics::counter!(super::FLUSHES_TOTAL, "reason" => FlushReason::SlotsMoved.label())
                    .increment(moves.saturating_sub(seen));
            }
        }
    }

    /// Tracking connections acknowledged now, and how many there are.
    pub fn ready(&self) -> (usize, usize) {
        let count = |all: &[Handle]| {
            let up = all.iter().filter(|h| h.up()).count();
            (up, all.len())
        };
        match self {
            Trackers::One(all) => count(all),
            Trackers::Cluster(by) => {
                let nodes = by.nodes.read().unwrap_or_else(|p| p.into_inner());
                nodes.values().fold((0, 0), |(u, t), all| {
                    let (a, b) = count(all);
                    (u + a, t + b)
                })
            }
        }
    }
}

impl ByNode {
    /// The node's trackers, started the first time it is asked for.
    fn node(&self, addr: &str) -> Arc<[Handle]> {
        if let Some(all) = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return all.clone();
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(addr.to_string())
            .or_insert_with(|| {
                let config = Arc::new(self.config.for_node(addr));
                (0..self.per_node)
                    .map(|i| {
                        tracking_conns::spawn(
                            i,
                            self.shared.clone(),
                            config.clone(),
                            self.shutdown.clone(),
                        )
                    })
                    .collect()
            })
            .clone()
    }
}

/// Whether a fill's first reply is a cluster redirection (the node does not serve the key's
/// slot, or not yet, or not all of it).
pub(crate) fn is_redirect(reply: &[u8]) -> bool {
    [&b"-MOVED "[..], b"-ASK ", b"-TRYAGAIN"]
        .iter()
        .any(|p| reply.starts_with(p))
}

/// A fill a node answered with a redirection: its commands go again through the cluster's
/// router (which follows redirections and reads the topology again) and the waiting clients
/// get that answer; nothing is cached from it (it was not read on a tracking connection).
pub(crate) fn redirected(shared: Arc<Shared>, router: Arc<Upstream>, job: FillJob) {
    tokio::spawn(async move {
        let rx = router
            .conn(Protocol::Resp3, 0)
            .send(job.command.clone(), 2)
            .await;
        let reply = match rx.await {
            Ok(Ok(bytes)) => first_frame(&bytes)
                .map(|value| Ok(super::cached(&value, job.ticket.sig.kind.scored())))
                .unwrap_or_else(|| {
                    Err(Arc::from("ERR respite could not read the cluster's reply"))
                }),
            Ok(Err(partial)) => Err(Arc::from(format!("ERR {}", partial.error).as_str())),
            Err(_) => Err(Arc::from("ERR upstream connection closed before replying")),
        };
        shared.store.abandon(job.ticket, reply);
    });
}

fn first_frame(bytes: &Bytes) -> Option<Bytes> {
    let found = ReplyScanner::new().scan(bytes).ok()??;
    Some(bytes.slice(..found.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_told_from_other_errors() {
        assert!(is_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"));
        assert!(is_redirect(b"-ASK 3999 127.0.0.1:6381\r\n"));
        assert!(is_redirect(
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
        ));
        assert!(!is_redirect(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        ));
        assert!(!is_redirect(b"$5\r\nMOVED\r\n"));
    }
}

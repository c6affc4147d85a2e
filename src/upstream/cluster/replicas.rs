//! Reads from replicas (`upstream.read_from_replicas`), with read-your-writes: which reads a
//! replica may serve, and the replication-offset polls that decide it.
//!
//! A write through respite marks its slot (or, on a connection of a client's own, its node; for
//! a keyless write such as FLUSHALL, every slot) from the moment it is planned until its reply
//! is in, and then with the poll round it needs: the next round that starts after the reply.
//! A round takes a new number from one counter, then asks each primary for its
//! `master_repl_offset` and each of its replicas for `slave_repl_offset`; a replica whose offset
//! has reached its primary's (the same `master_replid`, its link up) has applied every write
//! answered before the round began, and is *caught up to* that round. A read-only command goes
//! to a replica only if its slot (and node) has no marked write in flight and the replica is
//! caught up to the round the slot's last write needs; otherwise to the primary.
//!
//! # Invariants
//! - A write's mark is taken before any command of its job is sent and dropped only after its
//!   reply (or its failure) is in: a read planned meanwhile goes to the primary.
//! - A write answered before round `g` took its number needs a round `≤ g`
//!   ([`Replicas::needed`] reads the counter after the reply; a round's number is taken before
//!   it sends anything), so a replica caught up to `g` has applied it.
//! - A replica is never caught up before its first poll, nor while its link to its primary is
//!   down or it follows another history (another `master_replid`).
use super::Cluster;
use super::slot::SLOTS;
use super::topology::Topology;
use crate::protocol::Protocol;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Rounds at most this often while a write waits for its replicas.
pub const POLL_GAP: Duration = Duration::from_millis(10);
/// A round at least this often anyway: a replica's link going down (or coming up) is seen.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What replicas may serve, shared by every router of the cluster.
pub struct Replicas {
    /// The poll-round counter: a round's number is taken before it asks anything.
    round: AtomicU64,
    /// Per slot: marked writes in flight, and the round a read of it must wait for.
    inflight: Box<[AtomicU32]>,
    needs: Box<[AtomicU64]>,
    /// Keyless writes (FLUSHALL, FLUSHDB, SCRIPT LOAD…) touch every slot.
    all_inflight: AtomicU32,
    all_needs: AtomicU64,
    /// Connections of a client's own (and keyless writes) by primary address: while held, a
    /// node's every slot may be written (`leased` counts them, so reads look only when there
    /// are some). Let go, they count as a write to every slot (a node's slots may move).
    nodes: Mutex<HashMap<String, u32>>,
    leased: AtomicUsize,
    /// The highest round any write needs: the poller runs while a replica is short of it.
    wanted: AtomicU64,
    /// Per replica address: the latest round it is caught up to (0: not serving).
    caught_up: RwLock<HashMap<String, u64>>,
    /// The last round found a replica that serves but had not caught up with it.
    short: AtomicBool,
    wake: Notify,
}

impl Replicas {
    pub fn new() -> Replicas {
        Replicas {
            round: AtomicU64::new(1),
            inflight: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            needs: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            all_inflight: AtomicU32::new(0),
            all_needs: AtomicU64::new(0),
            nodes: Mutex::new(HashMap::new()),
            leased: AtomicUsize::new(0),
            wanted: AtomicU64::new(0),
            caught_up: RwLock::new(HashMap::new()),
            short: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// The round a write answered now needs: the next one to start.
    fn needed(&self) -> u64 {
        self.round.load(Ordering::SeqCst) + 1
    }

    /// Mark a write to `slot`, until the mark is dropped (after its reply).
    pub fn write_slot(self: &Arc<Self>, slot: u16) -> WriteMark {
        self.inflight[slot as usize].fetch_add(1, Ordering::SeqCst);
        WriteMark {
            replicas: self.clone(),
            what: Marked::Slot(slot),
        }
    }

    /// Mark a write to every slot (a keyless write on every primary).
    pub fn write_all(self: &Arc<Self>) -> WriteMark {
        self.all_inflight.fetch_add(1, Ordering::SeqCst);
        WriteMark {
            replicas: self.clone(),
            what: Marked::All,
        }
    }

    /// Mark every slot of the primary at `addr` for as long as a connection of a client's own
    /// to it is held: anything may be written on it.
    pub fn write_node(self: &Arc<Self>, addr: &str) -> WriteMark {
        let mut nodes = lock(&self.nodes);
        *nodes.entry(addr.to_string()).or_insert(0) += 1;
        self.leased.fetch_add(1, Ordering::SeqCst);
        WriteMark {
            replicas: self.clone(),
            what: Marked::Node(addr.to_string()),
        }
    }

    /// The replica that may serve a read of `slot` now, if any (`pick` spreads reads over a
    /// primary's replicas); `healthy` says whether a node's connections are up.
    pub fn replica_for<'t>(
        &self,
        topo: &'t Topology,
        slot: u16,
        pick: usize,
        healthy: impl Fn(&str) -> bool,
    ) -> Option<&'t str> {
        let s = slot as usize;
        if self.inflight[s].load(Ordering::SeqCst) > 0
            || self.all_inflight.load(Ordering::SeqCst) > 0
        {
            return None;
        }
        let need = self.needs[s]
            .load(Ordering::SeqCst)
            .max(self.all_needs.load(Ordering::SeqCst))
            .max(1);
        let primary = topo.primary_index(slot)?;
        if self.leased.load(Ordering::SeqCst) > 0
            && lock(&self.nodes).contains_key(&topo.primaries()[primary])
        {
            return None;
        }
        let replicas = topo.replicas(primary);
        if replicas.is_empty() {
            return None;
        }
        let caught_up = self.caught_up.read().unwrap_or_else(|p| p.into_inner());
        (0..replicas.len())
            .map(|i| &replicas[(pick + i) % replicas.len()])
            .find(|r| caught_up.get(r.as_str()).is_some_and(|&g| g >= need) && healthy(r))
            .map(String::as_str)
    }

    /// Slots whose primary changed: what a replica of their new primary holds of them says
    /// nothing of writes made on the old one, so their reads wait for a round started now.
    pub fn slots_moved(&self, slots: impl Iterator<Item = u16>) {
        let need = self.needed();
        for s in slots {
            self.needs[s as usize].fetch_max(need, Ordering::SeqCst);
        }
        self.want(need);
    }

    fn want(&self, need: u64) {
        if self.wanted.fetch_max(need, Ordering::SeqCst) < need {
            self.wake.notify_one();
        }
    }

    /// Whether some replica is short of the round the latest write needs, or was short of the
    /// last round.
    fn behind(&self) -> bool {
        if self.short.load(Ordering::SeqCst) {
            return true;
        }
        let wanted = self.wanted.load(Ordering::SeqCst);
        let caught_up = self.caught_up.read().unwrap_or_else(|p| p.into_inner());
        caught_up.values().any(|&g| g > 0 && g < wanted)
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Marked {
    Slot(u16),
    All,
    Node(String),
}

/// A write in flight (see [`Replicas`]); dropped once its reply is in.
pub struct WriteMark {
    replicas: Arc<Replicas>,
    what: Marked,
}

impl Drop for WriteMark {
    fn drop(&mut self) {
        let r = &self.replicas;
        let need = r.needed();
        // The round first, then the count: a read that sees the count at zero sees the round.
        match &self.what {
            Marked::Slot(s) => {
                r.needs[*s as usize].fetch_max(need, Ordering::SeqCst);
                r.inflight[*s as usize].fetch_sub(1, Ordering::SeqCst);
            }
            Marked::All => {
                r.all_needs.fetch_max(need, Ordering::SeqCst);
                r.all_inflight.fetch_sub(1, Ordering::SeqCst);
            }
            Marked::Node(addr) => {
                r.all_needs.fetch_max(need, Ordering::SeqCst);
                let mut nodes = lock(&r.nodes);
                if let Some(n) = nodes.get_mut(addr) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(addr);
                    }
                }
                r.leased.fetch_sub(1, Ordering::SeqCst);
            }
        }
        r.want(need);
    }
}

/// What one node's `INFO replication` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Replication {
    replid: String,
    /// A primary's `master_repl_offset`, a replica's `slave_repl_offset`.
    offset: u64,
    /// A replica's `master_link_status:up`.
    link_up: bool,
}

fn parse_info(text: &str, replica: bool) -> Option<Replication> {
    let mut r = Replication::default();
    let mut offset = None;
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else {
            continue;
        };
        match k {
            "master_replid" => r.replid = v.to_string(),
            "master_repl_offset" if !replica => offset = v.parse().ok(),
            "slave_repl_offset" | "replica_repl_offset" if replica => offset = v.parse().ok(),
            "master_link_status" => r.link_up = v == "up",
            "role" if (v == "master") == replica => return None,
            _ => {}
        }
    }
    r.offset = offset?;
    Some(r)
}

/// Ask the node at `addr` for `INFO replication` on one of its pool connections.
async fn info(cluster: &Cluster, addr: &str, replica: bool) -> Option<Replication> {
    let node = cluster.node(addr);
    let rx = node
        .conn(Protocol::Resp2, 0)
        .send(super::command(&[b"INFO", b"replication"]), 1)
        .await;
    let bytes = rx.await.ok()?.ok()?;
    let v = crate::protocol::value::parse(&bytes).ok()?;
    parse_info(&String::from_utf8_lossy(v.bulk()?), replica)
}

/// The poller: a round whenever a write waits for its replicas (at most every [`POLL_GAP`]),
/// and every [`POLL_EVERY`] regardless, until the cluster is gone.
pub(super) async fn poll(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        if c.shutdown.is_cancelled() {
            return;
        }
        let replicas = c.replicas.clone();
        if let Some(topo) = c.current() {
            round(&c, &replicas, &topo).await;
        }
        let shutdown = c.shutdown.clone();
        drop(c);
        tokio::time::sleep(POLL_GAP).await;
        if !replicas.behind() {
            tokio::select! {
                _ = replicas.wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// One round over every primary with replicas.
async fn round(c: &Cluster, replicas: &Replicas, topo: &Topology) {
    let g = replicas.round.fetch_add(1, Ordering::SeqCst) + 1;
    let mut asks = Vec::new();
    for (i, p) in topo.primaries().iter().enumerate() {
        for r in topo.replicas(i) {
            asks.push(async move {
                let (primary, replica) = tokio::join!(info(c, p, false), info(c, r, true));
                (r.clone(), primary, replica)
            });
        }
    }
    // Replicas no longer in the topology are forgotten (a promoted one serves as a primary).
    let mut next: HashMap<String, u64> = HashMap::new();
    let prev = replicas
        .caught_up
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut short = false;
    for ask in asks {
        let (addr, primary, replica) = ask.await;
        let before = prev.get(&addr).copied().unwrap_or(0);
        let now = match (primary, replica) {
            (Some(p), Some(r)) if r.link_up && r.replid == p.replid => {
                if r.offset >= p.offset {
                    g
                } else {
                    short = true;
                    before
                }
            }
            // Its link down, another history, or no answer: not to be read from.
            _ => 0,
        };
        next.insert(addr, now);
    }
    *replicas
        .caught_up
        .write()
        .unwrap_or_else(|p| p.into_inner()) = next;
    replicas.short.store(short, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replication_is_read_for_each_role() {
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_replid:abc\r\nmaster_repl_offset:42\r\n";
        let replica = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nslave_repl_offset:40\r\nmaster_replid:abc\r\nmaster_repl_offset:40\r\n";
        assert_eq!(
            parse_info(primary, false),
            Some(Replication {
                replid: "abc".into(),
                offset: 42,
                link_up: false
            })
        );
        let r = parse_info(replica, true).unwrap();
        assert_eq!((r.offset, r.link_up), (40, true));
        // A node in the other role than expected (a failover between topology reads).
        assert_eq!(parse_info(primary, true), None);
        assert_eq!(parse_info(replica, false), None);
    }

    #[test]
    fn a_written_slot_is_read_from_the_primary_until_a_later_round() {
        let r = Arc::new(Replicas::new());
        let mut topo = Topology::single("p:1");
        topo.set_replicas(0, vec!["r:1".into()]);
        let up = |_: &str| true;
        // Never polled: not caught up.
        assert_eq!(r.replica_for(&topo, 5, 0, up), None);
        r.caught_up.write().unwrap().insert("r:1".into(), 1);
        assert_eq!(r.replica_for(&topo, 5, 0, up), Some("r:1"));
        let mark = r.write_slot(5);
        assert_eq!(r.replica_for(&topo, 5, 0, up), None);
        assert_eq!(r.replica_for(&topo, 6, 0, up), Some("r:1"));
        drop(mark);
        // Answered during round 1: needs round 2.
        assert_eq!(r.replica_for(&topo, 5, 0, up), None);
        r.round.fetch_add(1, Ordering::SeqCst);
        r.caught_up.write().unwrap().insert("r:1".into(), 2);
        assert_eq!(r.replica_for(&topo, 5, 0, up), Some("r:1"));
        // A node held by a client's own connection, and a keyless write.
        let node = r.write_node("p:1");
        assert_eq!(r.replica_for(&topo, 6, 0, up), None);
        drop(node);
        assert_eq!(r.replica_for(&topo, 6, 0, up), None);
        let all = r.write_all();
        r.caught_up.write().unwrap().insert("r:1".into(), 3);
        assert_eq!(r.replica_for(&topo, 6, 0, up), None);
        drop(all);
        assert_eq!(r.replica_for(&topo, 6, 0, up), Some("r:1"));
        // A replica that is down is not read from.
        assert_eq!(r.replica_for(&topo, 6, 0, |_| false), None);
    }
}

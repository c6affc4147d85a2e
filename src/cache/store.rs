//! The near cache's memory: per key, the cached replies of its reads, the fills in flight, and
//! how often it has been invalidated lately.
//!
//! # Invariants
//! - A fill is inserted only while its token still owns the slot it was started for, and only if
//!   the flush generation has not changed since it started. Invalidating a key drops every slot
//!   of that key (tokens included), so a fill that an invalidation overtook is answered but never
//!   cached. Both checks happen under the key's shard lock.
//! - A hit is an entry of the current generation whose deadline has not passed.
//! - Lock order: the eviction clock before any shard; no shard lock is held while taking the
//!   clock.
//! - Cached bytes are counted on insert and uncounted on every removal; eviction keeps them at
//!   or under the bound (one entry may overshoot it until the next insert's eviction).
use super::reads::Sig;
use crate::protocol::Protocol;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A reply ready for either protocol: what the upstream sent a RESP3 connection, and the same
/// reply as Redis would write it to a RESP2 client.
#[derive(Debug)]
pub struct Cached {
    pub resp2: Bytes,
    pub resp3: Bytes,
}

impl Cached {
    pub fn get(&self, proto: crate::protocol::Protocol) -> Bytes {
        match proto {
            crate::protocol::Protocol::Resp2 => self.resp2.clone(),
            crate::protocol::Protocol::Resp3 => self.resp3.clone(),
        }
    }
}

/// What a client waiting on a fill gets: the reply, or why there is none.
pub type Fetched = Result<Arc<Cached>, Arc<str>>;

/// The clients waiting on one fill. Owned by the fill in flight, so an invalidation that drops
/// the slot does not leave them unanswered.
#[derive(Default)]
pub struct Joiners(Mutex<Vec<oneshot::Sender<Fetched>>>);

impl Joiners {
    fn join(&self) -> oneshot::Receiver<Fetched> {
        let (tx, rx) = oneshot::channel();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Answer everyone waiting.
    pub fn answer(&self, reply: Fetched) {
        let waiting = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for tx in waiting {
            let _ = tx.send(reply.clone());
        }
    }
}

/// A fill the store has started: the tracking connection carries it out and hands it back to
/// [`Store::complete`].
pub struct Ticket {
    pub key: Bytes,
    pub sig: Sig,
    token: u64,
    generation: u64,
    /// The key's cluster slot and its move count when the read began (see [`SlotStamp`]).
    slot: SlotStamp,
    pub joiners: Arc<Joiners>,
}

/// What a read found.
pub enum Found {
    /// The cached reply, for the protocol asked.
    Hit(Bytes),
    /// A fill is in flight (perhaps just started for this read): its reply comes here.
    Wait(oneshot::Receiver<Fetched>),
    /// Not served from the cache: cooling down, or the fill could not be started.
    Bypass,
}

/// How a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    Cached,
    /// Answered only: an error, too big, or otherwise not cacheable.
    Uncacheable,
    /// Answered only: the key was invalidated (or the cache flushed) while it was in flight.
    Raced,
}

struct Ready {
    value: Arc<Cached>,
    /// Milliseconds on the store's clock.
    expires: u64,
    generation: u64,
    slot: SlotStamp,
    id: u64,
    weight: usize,
    visited: AtomicBool,
}

impl Ready {
    /// Mark it read since it was clocked. Only written when not yet set: hits on a hot entry
    /// from several threads do not bounce its cache line.
    fn visit(&self) {
        if !self.visited.load(Ordering::Relaxed) {
            self.visited.store(true, Ordering::Relaxed);
        }
    }
}

enum State {
    Filling { token: u64, joiners: Arc<Joiners> },
    Ready(Ready),
}

struct Slot {
    sig: Sig,
    state: State,
}

#[derive(Default)]
struct KeyState {
    slots: Vec<Slot>,
    /// Invalidations of cached entries within a second of `heat_start`.
    heat: u32,
    heat_start: u64,
    cool_until: u64,
}

impl KeyState {
    fn slot(&self, sig: &Sig) -> Option<usize> {
        self.slots.iter().position(|s| s.sig == *sig)
    }

    /// The cached entry with this clock id.
    fn ready_slot(&self, id: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(&s.state, State::Ready(r) if r.id == id))
    }
}

/// A key's cluster slot and the slot's move count, taken before the read picked the node to
/// fill it from (`None` for a single upstream): an entry is served only while its slot's count
/// is unchanged, so a slot's move drops its entries, and only its, before any read of them.
pub type SlotStamp = Option<(u16, u32)>;

/// Counts the store keeps for metrics and stats.
#[derive(Default)]
pub struct Counts {
    pub fills: AtomicU64,
    pub raced: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
}

pub struct Store {
    map: DashMap<Bytes, KeyState, foldhash::fast::RandomState>,
    generation: AtomicU64,
    tokens: AtomicU64,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    /// Cached entries in insertion order, for second-chance (CLOCK) eviction.
    clock: Mutex<VecDeque<(Bytes, u64)>>,
    max_memory: usize,
    cooldown_after: u32,
    cooldown: u64,
    epoch: Instant,
    /// Stale-if-error: entries of generations from `stale_from` on (`u64::MAX`: none), which
    /// lost coherence at `stale_since`, may still answer local-only reads for `stale_keep` ms.
    stale_from: AtomicU64,
    stale_since: AtomicU64,
    stale_keep: u64,
    /// A cluster's move count per slot (see [`SlotStamp`]), bumped by the cluster before it
    /// routes a moved slot anywhere new.
    slot_moves: Option<Arc<[AtomicU32]>>,
    pub counts: Counts,
}

/// What an entry costs beyond its bytes: the slot, the `Arc`, the clock entry.
const OVERHEAD: usize = 128;

impl Store {
    pub fn new(max_memory: usize, cooldown_after: u32, cooldown: Duration) -> Store {
        Store::with_stale_reads(max_memory, cooldown_after, cooldown, Duration::ZERO)
    }

    /// A store whose entries stay readable for `stale_keep` after coherence is lost (see
    /// [`Store::flush`] and [`Store::peek_stale`]).
    pub fn with_stale_reads(
        max_memory: usize,
        cooldown_after: u32,
        cooldown: Duration,
        stale_keep: Duration,
    ) -> Store {
        Store {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            generation: AtomicU64::new(0),
            tokens: AtomicU64::new(1),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            clock: Mutex::new(VecDeque::new()),
            max_memory,
            cooldown_after: cooldown_after.max(1),
            cooldown: cooldown.as_millis() as u64,
            epoch: Instant::now(),
            stale_from: AtomicU64::new(u64::MAX),
            stale_since: AtomicU64::new(0),
            stale_keep: stale_keep.as_millis() as u64,
            slot_moves: None,
            counts: Counts::default(),
        }
    }

    /// Fills started so far: a slot only ever appears for a fill, each with a token of its own
    /// taken first, so while this count stands still no slot has appeared anywhere.
    pub fn fills_started(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }

    /// Serve entries only while their cluster slot has not moved since they were read (see
    /// [`SlotStamp`]): `moves` is the cluster's move count per slot.
    pub fn with_slot_moves(mut self, moves: Arc<[AtomicU32]>) -> Store {
        self.slot_moves = Some(moves);
        self
    }

    /// `key`'s slot stamp now: take it before picking the node a fill of it goes to.
    pub fn slot_stamp(&self, key: &[u8]) -> SlotStamp {
        let moves = self.slot_moves.as_ref()?;
        let slot = crate::upstream::cluster::slot::key_slot(key);
        Some((slot, moves[slot as usize].load(Ordering::Acquire)))
    }

    /// Whether an entry's slot is still where it was read.
    fn slot_current(&self, stamp: SlotStamp) -> bool {
        match (stamp, &self.slot_moves) {
            (Some((slot, n)), Some(moves)) => moves[slot as usize].load(Ordering::Acquire) == n,
            _ => true,
        }
    }

    /// Milliseconds on the store's clock.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    fn fresh(&self, r: &Ready, now: u64) -> bool {
        r.generation == self.generation.load(Ordering::Acquire)
            && now < r.expires
            && self.slot_current(r.slot)
    }

    /// Still within the stale-if-error window (and its key's own TTL).
    fn stale_ok(&self, r: &Ready, now: u64) -> bool {
        let from = self.stale_from.load(Ordering::Acquire);
        from != u64::MAX
            && r.generation >= from
            && now <= self.stale_since.load(Ordering::Acquire) + self.stale_keep
            && now < r.expires
            && self.slot_current(r.slot)
    }

    /// A cached reply for local-only mode: fresh, or stale within the window; none when stale
    /// reads are off. Never for a key that is cooling down.
    pub fn peek_stale(&self, key: &[u8], sig: &Sig, now: u64) -> Option<Arc<Cached>> {
        // Stale reads off: the engine answers every local-only read, even one whose entry is
        // still here because its tracking connection has not yet seen the upstream go (the
        // probe can call it down first).
        if self.stale_keep == 0 {
            return None;
        }
        let ks = self.map.get(key)?;
        match &ks.slots[ks.slot(sig)?].state {
            State::Ready(r) if self.fresh(r, now) || self.stale_ok(r, now) => Some(r.value.clone()),
            _ => None,
        }
    }

    /// A cached reply, without starting anything.
    pub fn peek(&self, key: &[u8], sig: &Sig, now: u64) -> Option<Arc<Cached>> {
        let ks = self.map.get(key)?;
        if ks.cool_until > now {
            return None;
        }
        match &ks.slots[ks.slot(sig)?].state {
            State::Ready(r) if self.fresh(r, now) => {
                r.visit();
                Some(r.value.clone())
            }
            _ => None,
        }
    }

    /// Serve a read: a fresh entry, or a place among the clients waiting on its fill, or a new
    /// fill, which `start` must hand to the tracking connection (false: it could not, and the
    /// read bypasses the cache). With `wait` false (a prefetch), nobody waits on the new fill.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        key: &Bytes,
        sig: &Sig,
        slot: SlotStamp,
        now: u64,
        wait: bool,
        proto: Protocol,
        start: impl FnOnce(Ticket) -> bool,
    ) -> Found {
        // The shared lock first: hits and joins need nothing more. The guard is gone before
        // the exclusive lock below is taken.
        if let Some(ks) = self.map.get(key.as_ref())
            && let Some(found) = self.existing(&ks, sig, now, wait, proto)
        {
            return found;
        }
        let mut ks = self.map.entry(key.clone()).or_default();
        if let Some(found) = self.existing(&ks, sig, now, wait, proto) {
            return found;
        }
        let joiners = Arc::new(Joiners::default());
        let rx = wait.then(|| joiners.join());
        // SeqCst, as `fills_started` reads it: a write answered on another thread must see a
        // fill started after its first invalidation (see `coherence::answered`).
        let token = self.tokens.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket {
            key: key.clone(),
            sig: sig.clone(),
            token,
            generation: self.generation.load(Ordering::Acquire),
            slot,
            joiners: joiners.clone(),
        };
        // Still under the shard lock: nobody can join before the slot exists, and a slot whose
        // fill was never sent is never seen.
        if !start(ticket) {
            return Found::Bypass;
        }
        let state = State::Filling { token, joiners };
        match ks.slot(sig) {
            Some(i) => {
                let old = std::mem::replace(&mut ks.slots[i].state, state);
                if let State::Ready(r) = old {
                    self.uncount(&r);
                }
            }
            None => ks.slots.push(Slot {
                sig: sig.clone(),
                state,
            }),
        }
        match rx {
            Some(rx) => Found::Wait(rx),
            None => Found::Bypass,
        }
    }

    fn existing(
        &self,
        ks: &KeyState,
        sig: &Sig,
        now: u64,
        wait: bool,
        proto: Protocol,
    ) -> Option<Found> {
        if ks.cool_until > now {
            return Some(Found::Bypass);
        }
        match &ks.slots[ks.slot(sig)?].state {
            State::Ready(r) if self.fresh(r, now) => {
                r.visit();
                Some(Found::Hit(r.value.get(proto)))
            }
            State::Filling { joiners, .. } if wait => Some(Found::Wait(joiners.join())),
            State::Filling { .. } => Some(Found::Bypass),
            State::Ready(_) => None,
        }
    }

    fn uncount(&self, r: &Ready) {
        self.bytes.fetch_sub(r.weight, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// Finish a fill: cache `value` until `expires` if its token still owns the slot and the
    /// generation is unchanged (`value` `None`: not cacheable), then answer everyone waiting.
    pub fn complete(
        &self,
        ticket: Ticket,
        value: Option<(Arc<Cached>, u64)>,
        reply: Fetched,
    ) -> Filled {
        self.counts.fills.fetch_add(1, Ordering::Relaxed);
        let mut inserted = None;
        let outcome = match self.map.get_mut(ticket.key.as_ref()) {
            Some(mut ks) => {
                let owned = ks.slot(&ticket.sig).filter(|&i| {
                    matches!(ks.slots[i].state, State::Filling { token, .. } if token == ticket.token)
                });
                match (owned, value) {
                    (None, _) => Filled::Raced,
                    (Some(i), _)
                        if self.generation.load(Ordering::Acquire) != ticket.generation
                            || !self.slot_current(ticket.slot) =>
                    {
                        ks.slots.swap_remove(i);
                        Filled::Raced
                    }
                    (Some(i), None) => {
                        ks.slots.swap_remove(i);
                        Filled::Uncacheable
                    }
                    (Some(i), Some((value, expires))) => {
                        let weight = OVERHEAD
                            + ticket.key.len()
                            + ticket.sig.weight()
                            + value.resp2.len()
                            + value.resp3.len();
                        let id = ticket.token;
                        ks.slots[i].state = State::Ready(Ready {
                            value,
                            expires,
                            generation: ticket.generation,
                            slot: ticket.slot,
                            id,
                            weight,
                            visited: AtomicBool::new(false),
                        });
                        self.bytes.fetch_add(weight, Ordering::Relaxed);
                        self.entries.fetch_add(1, Ordering::Relaxed);
                        inserted = Some(id);
                        Filled::Cached
                    }
                }
            }
            None => Filled::Raced,
        };
        if outcome == Filled::Raced {
            self.counts.raced.fetch_add(1, Ordering::Relaxed);
        }
        ticket.joiners.answer(reply);
        if let Some(id) = inserted {
            self.clocked(ticket.key, id);
        }
        outcome
    }

    /// Give up on a fill that will get no reply: free its slot (if it still owns it) so later
    /// reads start afresh, and answer the clients waiting on it.
    pub fn abandon(&self, ticket: Ticket, reply: Fetched) {
        if let Some(mut ks) = self.map.get_mut(ticket.key.as_ref())
            && let Some(i) = ks.slot(&ticket.sig)
            && matches!(ks.slots[i].state, State::Filling { token, .. } if token == ticket.token)
        {
            ks.slots.swap_remove(i);
        }
        ticket.joiners.answer(reply);
    }

    /// Forget clock positions whose entry is gone (invalidated, evicted, replaced).
    fn drop_stale_positions(&self, clock: &mut VecDeque<(Bytes, u64)>) {
        clock.retain(|(k, id)| {
            self.map
                .get(k)
                .is_some_and(|ks| ks.ready_slot(*id).is_some())
        });
    }

    /// Enter a new entry in the eviction clock, then evict while over the bound.
    fn clocked(&self, key: Bytes, id: u64) {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        clock.push_back((key, id));
        // Entries invalidated since they were clocked leave stale positions behind: drop them
        // once they outnumber the live ones (amortised O(1) per insert).
        if clock.len() > 2 * self.entries() + 1024 {
            self.drop_stale_positions(&mut clock);
        }
        let mut budget = clock.len() * 2 + 2;
        while self.bytes() > self.max_memory && budget > 0 {
            budget -= 1;
            let Some((key, id)) = clock.pop_front() else {
                break;
            };
            let Some(mut ks) = self.map.get_mut(&key) else {
                continue;
            };
            let Some(i) = ks.ready_slot(id) else {
                continue;
            };
            if let State::Ready(r) = &ks.slots[i].state
                && r.visited.swap(false, Ordering::Relaxed)
            {
                // Read since it was clocked: a second chance.
                drop(ks);
                clock.push_back((key, id));
                continue;
            }
            if let State::Ready(r) = ks.slots.swap_remove(i).state {
                self.uncount(&r);
            }
            self.counts.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drop everything cached or being filled for `key`. True if a cached entry went; a key
    /// whose entries keep going is left uncached for the cool-down.
    pub fn invalidate(&self, key: &[u8], now: u64) -> bool {
        self.invalidate_then(key, || now)
    }

    /// [`Store::invalidate`], reading the clock (`now`) only if a cached entry goes: a write's
    /// key is usually not cached.
    pub fn invalidate_then(&self, key: &[u8], now: impl FnOnce() -> u64) -> bool {
        self.counts.invalidations.fetch_add(1, Ordering::Relaxed);
        let Some(mut ks) = self.map.get_mut(key) else {
            return false;
        };
        if ks.slots.is_empty() {
            return false;
        }
        let mut cached = false;
        for slot in std::mem::take(&mut ks.slots) {
            if let State::Ready(r) = slot.state {
                self.uncount(&r);
                cached = true;
            }
        }
        if cached {
            let now = now();
            if now < ks.heat_start + 1000 {
                ks.heat += 1;
            } else {
                ks.heat_start = now;
                ks.heat = 1;
            }
            if ks.heat >= self.cooldown_after {
                ks.cool_until = now + self.cooldown;
            }
        }
        cached
    }

    /// Empty the cache at once: every entry and every fill in flight belongs to an older
    /// generation from now on. The memory goes in the next [`Store::sweep`]. With `coherence_lost`
    /// (a tracking connection went away; the data itself was not flushed), what was cached stays
    /// readable by [`Store::peek_stale`] for the stale-if-error window, counted from the first
    /// loss.
    pub fn flush(&self, coherence_lost: bool) {
        let old = self.generation.fetch_add(1, Ordering::AcqRel);
        if !coherence_lost || self.stale_keep == 0 {
            self.stale_from.store(u64::MAX, Ordering::Release);
            return;
        }
        let now = self.now();
        let active = self.stale_from.load(Ordering::Acquire) != u64::MAX
            && now <= self.stale_since.load(Ordering::Acquire) + self.stale_keep;
        if !active {
            self.stale_since.store(now, Ordering::Release);
            self.stale_from.store(old, Ordering::Release);
        }
    }

    /// Reclaim what is dead: entries of older generations or past their deadline, and keys
    /// that hold nothing and are not cooling down. O(entries); run it off the async workers.
    pub fn sweep(&self) {
        let now = self.now();
        let generation = self.generation.load(Ordering::Acquire);
        self.map.retain(|_, ks| {
            ks.slots.retain(|s| match &s.state {
                State::Ready(r)
                    if (r.generation != generation && !self.stale_ok(r, now))
                        || now >= r.expires
                        || !self.slot_current(r.slot) =>
                {
                    self.uncount(r);
                    false
                }
                _ => true,
            });
            !ks.slots.is_empty() || ks.cool_until > now || ks.heat_start + 1000 > now
        });
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if clock.len() > 2 * self.entries() + 1024 {
            self.drop_stale_positions(&mut clock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::reads::ReadKind;

    fn sig() -> Sig {
        Sig::new(
            ReadKind::Get,
            &[Bytes::from_static(b"get"), Bytes::from_static(b"k")],
        )
    }

    fn value(s: &'static [u8]) -> Arc<Cached> {
        Arc::new(Cached {
            resp2: Bytes::from_static(s),
            resp3: Bytes::from_static(s),
        })
    }

    fn start(store: &Store, key: &Bytes) -> (Ticket, oneshot::Receiver<Fetched>) {
        let mut ticket = None;
        let found = store.read(key, &sig(), None, store.now(), true, Protocol::Resp2, |t| {
            ticket = Some(t);
            true
        });
        let Found::Wait(rx) = found else {
            panic!("expected a fill")
        };
        (ticket.unwrap(), rx)
    }

    /// A read that must not start a fill.
    fn lookup(store: &Store, key: &Bytes) -> Found {
        store.read(
            key,
            &sig(),
            None,
            store.now(),
            true,
            Protocol::Resp2,
            |_| panic!("no fill expected"),
        )
    }

    #[test]
    fn fill_then_hit_and_single_flight() {
        let store = Store::new(1 << 20, 10, Duration::from_secs(1));
        let key = Bytes::from_static(b"k");
        let (ticket, mut first) = start(&store, &key);
        // A second miss joins the fill in flight instead of starting one.
        let Found::Wait(mut second) = lookup(&store, &key) else {
            panic!("expected to join")
        };
        let v = value(b"$1\r\nv\r\n");
        let outcome = store.complete(ticket, Some((v.clone(), store.now() + 1000)), Ok(v));
        assert_eq!(outcome, Filled::Cached);
        assert!(first.try_recv().unwrap().is_ok());
        assert!(second.try_recv().unwrap().is_ok());
        assert!(matches!(lookup(&store, &key), Found::Hit(_)));
        assert_eq!(store.entries(), 1);
    }

    #[test]
    fn invalidation_overtaking_a_fill_keeps_it_out() {
        let store = Store::new(1 << 20, 10, Duration::from_secs(1));
        let key = Bytes::from_static(b"k");
        let (ticket, mut rx) = start(&store, &key);
        store.invalidate(&key, store.now());
        let v = value(b"$3\r\nold\r\n");
        let outcome = store.complete(ticket, Some((v.clone(), store.now() + 1000)), Ok(v));
        assert_eq!(outcome, Filled::Raced);
        // The waiting client is still answered.
        assert!(rx.try_recv().unwrap().is_ok());
        assert_eq!(store.entries(), 0);
        assert!(store.peek(&key, &sig(), store.now()).is_none());
    }

    #[test]
    fn a_flush_during_a_fill_keeps_it_out_and_hides_entries() {
        let store = Store::new(1 << 20, 10, Duration::from_secs(1));
        let a = Bytes::from_static(b"a");
        let (ticket, _rx) = start(&store, &a);
        let v = value(b"$1\r\nv\r\n");
        store.complete(
            ticket,
            Some((v.clone(), store.now() + 10_000)),
            Ok(v.clone()),
        );
        assert!(store.peek(&a, &sig(), store.now()).is_some());
        let b = Bytes::from_static(b"b");
        let (ticket, _rx) = start(&store, &b);
        store.flush(false);
        assert!(store.peek(&a, &sig(), store.now()).is_none());
        assert_eq!(
            store.complete(ticket, Some((v.clone(), store.now() + 10_000)), Ok(v)),
            Filled::Raced
        );
        store.sweep();
        assert_eq!((store.entries(), store.bytes()), (0, 0));
    }

    #[test]
    fn expired_entries_miss() {
        let store = Store::new(1 << 20, 10, Duration::from_secs(1));
        let key = Bytes::from_static(b"k");
        let (ticket, _rx) = start(&store, &key);
        let v = value(b"$1\r\nv\r\n");
        store.complete(ticket, Some((v.clone(), store.now())), Ok(v));
        assert!(store.peek(&key, &sig(), store.now()).is_none());
    }

    #[test]
    fn memory_stays_bounded_and_hot_entries_survive() {
        let store = Store::new(20_000, 10, Duration::from_secs(1));
        let hot = Bytes::from_static(b"hot");
        let (ticket, _rx) = start(&store, &hot);
        let v = value(b"$10\r\n0123456789\r\n");
        store.complete(ticket, Some((v.clone(), u64::MAX)), Ok(v.clone()));
        for i in 0..1000 {
            assert!(
                store.peek(&hot, &sig(), store.now()).is_some(),
                "hot entry evicted at {i}"
            );
            let key = Bytes::from(format!("cold{i}"));
            let (ticket, _rx) = start(&store, &key);
            store.complete(ticket, Some((v.clone(), u64::MAX)), Ok(v.clone()));
            assert!(store.bytes() <= 20_000 + 200, "{} bytes", store.bytes());
        }
        assert!(store.counts.evictions.load(Ordering::Relaxed) > 800);
    }

    #[test]
    fn keys_invalidated_too_often_cool_down() {
        let store = Store::new(1 << 20, 3, Duration::from_secs(60));
        let key = Bytes::from_static(b"k");
        let v = value(b"$1\r\nv\r\n");
        for _ in 0..3 {
            let (ticket, _rx) = start(&store, &key);
            store.complete(ticket, Some((v.clone(), u64::MAX)), Ok(v.clone()));
            assert!(store.invalidate(&key, store.now()));
        }
        assert!(matches!(lookup(&store, &key), Found::Bypass), "cooling");
    }
}

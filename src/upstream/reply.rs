//! What a client gets back for the commands it sent upstream: the raw bytes of their replies,
//! or the part that arrived and the [`NoReply`] that cut the rest short; and the
//! [`ReplyBudget`] that bounds the replies a client has not read yet. Types only: the
//! connection ([`super::conn`]) fills them in, the session reads them.
use super::error::NoReply;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// The outcome of a job: the raw bytes of all its replies, in order, or what arrived before a failure.
pub type Reply = Result<Bytes, Partial>;

/// A job that did not get all its replies: the first `count` arrived (`replies`), the rest failed.
#[derive(Debug, Clone)]
pub struct Partial {
    pub replies: Bytes,
    pub count: usize,
    pub error: NoReply,
}

impl Partial {
    /// The failure alone: for a caller that needs a reply which did not arrive.
    pub fn without_replies(self) -> Partial {
        self.error.into()
    }
}

impl From<NoReply> for Partial {
    fn from(error: NoReply) -> Self {
        Partial {
            replies: Bytes::new(),
            count: 0,
            error,
        }
    }
}

/// What respite holds for one client: the bytes of replies it is owed (received from the
/// upstream or answered by respite, not yet written to it, counted as they arrive), the bytes of
/// a request of its still arriving, and the requests read from it while its reader waited (for
/// it to take its replies, or for the upstream). Its own limit bounds the replies it leaves
/// unread plus the requests waiting behind them: a client that stops reading while it keeps
/// writing (a pipeline written whole before its replies are read, past the limit) gets errors
/// instead of the replies that would go over, and is closed, as Redis closes a client past its
/// output buffer limit. Every client's budget also draws on one [`ClientMemory`]; when that runs
/// out, the client holding the most is closed first.
///
/// # Invariants
/// - Bytes are counted before the reader or the writer keeps them past one read: a charge or a
///   hold that would go over a limit is refused (and the client closed) instead.
/// - Every byte counted is released exactly once: written to the client, dropped with the
///   client's replies, or, whatever is left, when the budget is dropped.
#[derive(Debug)]
pub struct ReplyBudget {
    owed: AtomicUsize,
    /// Bytes of the unfinished request the client's reader holds.
    request: AtomicUsize,
    /// Bytes read from the client while its reader waited, not yet framed.
    parked: AtomicUsize,
    limit: usize,
    exceeded: AtomicBool,
    /// Wakes the client's writer, which may be blocked writing to a client that never reads.
    closing: Notify,
    global: Option<Arc<ClientMemory>>,
    /// What this client has counted in the global budget now: given back in one piece when it
    /// is closed (its bytes are as good as freed), so later victims are chosen by what is left.
    counted: AtomicUsize,
    /// Its latest job put a large reply on its connection (or it has had none answered yet):
    /// its next groups go on the bulk lane (see [`super::lanes`]).
    heavy: AtomicBool,
    /// Its reader waits for the writer to drain what it owes ([`ReplyBudget::drained`]).
    gated: AtomicBool,
    drain: Notify,
    /// Closed for the clients' total (`limits.max_client_memory`), not its own limit.
    by_total: AtomicBool,
    /// The writer is blocked on the client's socket ([`ReplyBudget::writer_stalled`]).
    stalled: AtomicBool,
    stall: Notify,
    /// The client's id, for the log line.
    client: u64,
}

impl ReplyBudget {
    pub fn new(limit: usize) -> ReplyBudget {
        ReplyBudget {
            owed: AtomicUsize::new(0),
            request: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            limit,
            exceeded: AtomicBool::new(false),
            closing: Notify::new(),
            global: None,
            counted: AtomicUsize::new(0),
            heavy: AtomicBool::new(true),
            gated: AtomicBool::new(false),
            drain: Notify::new(),
            by_total: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stall: Notify::new(),
            client: 0,
        }
    }

    /// A budget of `limit` for client `client` (its id, for the log line that closes it),
    /// drawing on `global` as well.
    pub fn within(limit: usize, global: &Arc<ClientMemory>, client: u64) -> Arc<ReplyBudget> {
        let mut budget = ReplyBudget::new(limit);
        budget.global = Some(global.clone());
        budget.client = client;
        let budget = Arc::new(budget);
        global.register(&budget);
        budget
    }

    /// Count `n` more bytes owed; false (and exceeded from now on) if that goes over the limit,
    /// or over the global budget with this client the largest, in which case they are not counted.
    pub(crate) fn charge(&self, n: usize) -> bool {
        if self.exceeded.load(Ordering::Relaxed) {
            return false;
        }
        let owed = self.owed.fetch_add(n, Ordering::AcqRel) + n;
        if owed > self.limit || !self.count(n) {
            self.owed.fetch_sub(n, Ordering::AcqRel);
            self.exceed();
            return false;
        }
        true
    }

    /// Count `n` bytes of a reply respite answered itself (a near-cache hit, a local answer, an
    /// error) as owed until written: unlike [`ReplyBudget::charge`] it is always counted, as the
    /// reply is queued whatever happens (the writer releases exactly what was counted), and
    /// going over a limit closes the client (or, for the total, the one holding the most).
    pub(crate) fn owe(&self, n: usize) {
        let owed = self.owed.fetch_add(n, Ordering::AcqRel) + n;
        if let Some(g) = &self.global {
            if !g.add(n, self) {
                // Refused for the total with this client the largest: counted all the same.
                self.by_total.store(true, Ordering::Release);
                g.used.fetch_add(n, Ordering::AcqRel);
                self.counted.fetch_add(n, Ordering::AcqRel);
                self.exceed();
                return;
            }
            self.counted.fetch_add(n, Ordering::AcqRel);
        }
        if owed > self.limit {
            self.exceed();
        }
    }

    /// The writer took `n` bytes of replies.
    pub fn release(&self, n: usize) {
        self.owed.fetch_sub(n, Ordering::SeqCst);
        self.uncount(n);
        // One load on the hot path; the wake-up only while the reader is gated.
        if self.gated.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Bytes of replies received for this client and not yet taken by its writer.
    pub fn owed(&self) -> usize {
        self.owed.load(Ordering::Relaxed)
    }

    /// Bytes of the unfinished request its reader holds (see [`ReplyBudget::hold_request`]).
    pub fn request_bytes(&self) -> usize {
        self.request.load(Ordering::Relaxed)
    }

    /// Wait until at most `gate` bytes are owed, the client is closed, or a [`ReplyBudget::wake`]
    /// (the caller checks again why it woke). A client that does not read its replies waits
    /// here: its reader stops reading, which is TCP backpressure on it, instead of sending more
    /// commands whose replies it will not take.
    pub async fn drained(&self, gate: usize) {
        let notified = self.drain.notified();
        // Set before the check, so a release after the check sees it and wakes us.
        self.gated.store(true, Ordering::SeqCst);
        if self.owed.load(Ordering::SeqCst) > gate && !self.exceeded() {
            notified.await;
        }
        self.gated.store(false, Ordering::SeqCst);
    }

    /// End a [`ReplyBudget::drained`] wait (bytes were taken, or the writer gave up on the client).
    pub fn wake(&self) {
        self.gated.store(false, Ordering::SeqCst);
        self.drain.notify_one();
    }

    /// Whether this client's latest job put [`HEAVY_JOB`] bytes or more on its connection; true
    /// too before any job of its was answered, as nothing is known of it yet.
    pub fn is_heavy(&self) -> bool {
        self.heavy.load(Ordering::Relaxed)
    }

    /// Record whether a job of this client put `bytes` on its connection at once.
    pub(crate) fn weigh(&self, bytes: usize) {
        let heavy = bytes >= HEAVY_JOB;
        if self.heavy.load(Ordering::Relaxed) != heavy {
            self.heavy.store(heavy, Ordering::Relaxed);
        }
    }

    /// The reader now holds `bytes` of an unfinished request; false if this client is to be
    /// closed (the global budget is spent and it holds the most).
    pub fn hold_request(&self, bytes: usize) -> bool {
        self.hold(&self.request, bytes)
    }

    /// The reader now holds `bytes` read from the client while it waited, not yet framed; false
    /// if this client is to be closed (the global budget is spent and it holds the most).
    pub fn hold_parked(&self, bytes: usize) -> bool {
        self.hold(&self.parked, bytes)
    }

    /// Whether the reader may read more of the client while it waits, holding `parked` bytes of
    /// its requests: the replies it has not read and the requests behind them are under its
    /// limit. At the limit, the reader closes it if it is not taking its replies
    /// ([`ReplyBudget::stalled`]: it would wait for them for ever), or else stops reading until
    /// the wait ends (TCP backpressure: the upstream is what it waits for).
    pub fn parked_room(&self, parked: usize) -> bool {
        self.owed.load(Ordering::Acquire) + parked < self.limit
    }

    /// The writer is blocked writing to the client (its socket is full: it is not reading), or
    /// no longer is.
    pub fn writer_stalled(&self, on: bool) {
        self.stalled.store(on, Ordering::Release);
        if on {
            self.stall.notify_one();
        }
    }

    /// Whether the writer is blocked writing to the client now.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Completes once the writer is blocked writing to the client (or may be: the caller checks
    /// [`ReplyBudget::is_stalled`] again).
    pub async fn stalled(&self) {
        let notified = self.stall.notified();
        if self.is_stalled() {
            return;
        }
        notified.await
    }

    /// `slot` (request or parked bytes) now holds `bytes`: the difference is counted in the
    /// global budget; false if that closes this client.
    fn hold(&self, slot: &AtomicUsize, bytes: usize) -> bool {
        if self.exceeded() {
            return false;
        }
        let before = slot.swap(bytes, Ordering::AcqRel);
        if bytes > before && !self.count(bytes - before) {
            slot.fetch_sub(bytes - before, Ordering::AcqRel);
            self.exceed();
            return false;
        }
        self.uncount(before.saturating_sub(bytes));
        !self.exceeded()
    }

    /// Count `n` more bytes in the global budget; false if that closes this client.
    fn count(&self, n: usize) -> bool {
        let Some(g) = &self.global else { return true };
        if !g.add(n, self) {
            self.by_total.store(true, Ordering::Release);
            return false;
        }
        self.counted.fetch_add(n, Ordering::AcqRel);
        true
    }

    /// `n` bytes fewer in the global budget.
    fn uncount(&self, n: usize) {
        let Some(g) = &self.global else { return };
        if n == 0 {
            return;
        }
        let before = self
            .counted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        g.used.fetch_sub(before.min(n), Ordering::AcqRel);
    }

    /// A job of this client's is alone larger than its limit: it is to be closed.
    pub(crate) fn overflow(&self) {
        self.exceed()
    }

    /// Closed from now on. What it holds stays counted until it is really released (written,
    /// or dropped with its session): a client closed for its own limit may still take its
    /// errors for a while, and the memory is still there meanwhile.
    fn exceed(&self) {
        if self.exceeded.swap(true, Ordering::AcqRel) {
            return;
        }
        let by_total = self.by_total.load(Ordering::Acquire);
        crate::metrics::client_closed_for_memory(by_total);
        // As Redis logs a client it closes past its output buffer limit (or evicts for
        // maxmemory-clients): which client, what it held, and which limit.
        tracing::warn!(
            client = self.client,
            owed = self.owed.load(Ordering::Relaxed),
            clients_total = self.global.as_ref().map_or(0, |g| g.used()),
            waiting_requests =
                self.parked.load(Ordering::Relaxed) + self.request.load(Ordering::Relaxed),
            "client closed for its replies: {}",
            self.overflow_error()
        );
        // Every waiter: the writer, blocked writing to a client that does not read, and the
        // reader both wait for this (`notify_one` woke one of them, and a writer left blocked
        // held its replies, uncounted, until the client went away).
        self.closing.notify_waiters();
        self.wake();
    }

    /// Closed for the clients' total (`limits.max_client_memory`): its writer drops what it
    /// holds at once rather than wait for it to read, so the memory is freed now.
    pub fn evicted(&self) -> bool {
        self.exceeded() && self.by_total.load(Ordering::Acquire)
    }

    /// What this client holds now: the bytes counted for it (for the log line that closes it).
    pub fn held(&self) -> usize {
        self.size()
    }

    /// The client went over its limit: it is to be closed.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// Completes once the client is to be closed (at once if it already is).
    pub async fn closed(&self) {
        loop {
            // Made before the check: a close between the two still wakes it.
            let notified = self.closing.notified();
            if self.exceeded() {
                return;
            }
            notified.await;
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The error that replaces a reply of a client closed for its replies: naming
    /// `limits.max_client_memory` when the clients' total closed it, else its own
    /// `limits.max_reply_bytes`.
    pub fn overflow_error(&self) -> NoReply {
        match (&self.global, self.by_total.load(Ordering::Acquire)) {
            (Some(g), true) => NoReply::Overflow {
                limit: g.limit,
                total: true,
            },
            _ => NoReply::Overflow {
                limit: self.limit,
                total: false,
            },
        }
    }

    fn size(&self) -> usize {
        self.owed.load(Ordering::Relaxed)
            + self.request.load(Ordering::Relaxed)
            + self.parked.load(Ordering::Relaxed)
    }
}

impl Drop for ReplyBudget {
    fn drop(&mut self) {
        // Whatever the session still had counted leaves the global budget with it.
        if let Some(g) = &self.global {
            g.used
                .fetch_sub(self.counted.swap(0, Ordering::AcqRel), Ordering::AcqRel);
        }
    }
}

/// A job whose replies reach this many bytes makes its client heavy: as much as Redis writes to
/// one connection per turn of its event loop (`NET_MAX_WRITES_PER_EVENT`), so a reply past it
/// already takes the server more than one turn, and on a shared connection it would sit in front
/// of every other client's.
pub const HEAVY_JOB: usize = 64 * 1024;

/// The budget all clients' unread replies and unfinished requests share
/// (`limits.max_client_memory`, Redis's `maxmemory-clients`). Going over it closes the client
/// that holds the most, not whichever client happened to add the last byte.
#[derive(Debug)]
pub struct ClientMemory {
    used: AtomicUsize,
    limit: usize,
    /// Every live client's budget, to find the largest (dead ones are swept while looking).
    clients: Mutex<Vec<Weak<ReplyBudget>>>,
}

impl ClientMemory {
    pub fn new(limit: usize) -> ClientMemory {
        ClientMemory {
            used: AtomicUsize::new(0),
            limit,
            clients: Mutex::new(Vec::new()),
        }
    }

    fn register(&self, budget: &Arc<ReplyBudget>) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() == clients.capacity() {
            clients.retain(|w| w.strong_count() > 0);
        }
        clients.push(Arc::downgrade(budget));
    }

    /// Bytes counted now, across all clients.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Count `n` more bytes for `who`. Over the limit, the largest client still open is closed;
    /// false if that is `who` itself (its `n` bytes are then not counted). Exactly one client is
    /// closed where one suffices: the bytes of clients already closed for the total are on their
    /// way out (their writers drop them as soon as they run), so they do not close another.
    fn add(&self, n: usize, who: &ReplyBudget) -> bool {
        let used = self.used.fetch_add(n, Ordering::AcqRel) + n;
        if used <= self.limit {
            return true;
        }
        let victim = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            clients.retain(|w| w.strong_count() > 0);
            let live: Vec<Arc<ReplyBudget>> = clients.iter().filter_map(Weak::upgrade).collect();
            drop(clients);
            let leaving: usize = live
                .iter()
                .filter(|b| b.evicted())
                .map(|b| b.counted.load(Ordering::Acquire))
                .sum();
            if used.saturating_sub(leaving) <= self.limit {
                return true;
            }
            live.into_iter()
                .filter(|b| !b.exceeded())
                .max_by_key(|b| b.size())
        };
        match victim {
            Some(v) if !std::ptr::eq(&*v, who) && v.size() > who.size() => {
                crate::metrics::error(crate::metrics::ErrorKind::Refused);
                v.by_total.store(true, Ordering::Release);
                v.exceed();
                true
            }
            _ => {
                self.used.fetch_sub(n, Ordering::AcqRel);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_budget_closes_the_largest_client_first() {
        let global = Arc::new(ClientMemory::new(100));
        let small = ReplyBudget::within(1000, &global, 1);
        let large = ReplyBudget::within(1000, &global, 1);
        assert!(small.charge(20) && large.charge(70));
        // Over the budget by the small one's charge: the large one goes, the small one stays.
        assert!(small.charge(20));
        assert!(large.exceeded() && large.evicted() && !small.exceeded());
        // Its error names the setting that closed it: the clients' total, not its own limit.
        let text = large.overflow_error().to_string();
        assert!(
            text.contains("100 bytes (limits.max_client_memory)"),
            "{text}"
        );
        // Its bytes stay counted until they are really freed (its writer drops them), but they
        // are on their way out: a charge meanwhile closes no second client.
        assert_eq!(global.used(), 110);
        assert!(small.charge(30));
        assert!(!small.exceeded(), "one client closed where one suffices");
        large.release(70);
        assert_eq!(global.used(), 70);
        // Over again with the charger the largest: it is refused and closed itself.
        let other = ReplyBudget::within(1000, &global, 1);
        assert!(other.hold_request(10));
        assert!(!small.charge(70));
        assert!(small.exceeded() && !other.exceeded());
        assert_eq!(global.used(), 80);
        drop(other);
        assert_eq!(global.used(), 70);
        // Released and dropped bytes never go below zero, nor are counted twice.
        small.release(70);
        assert_eq!(global.used(), 0);
        drop((small, large));
        assert_eq!(global.used(), 0);
    }

    #[test]
    fn waiting_requests_and_unread_replies_share_the_clients_limit() {
        let global = Arc::new(ClientMemory::new(1 << 20));
        let b = ReplyBudget::within(100, &global, 1);
        // Nothing owed: requests may wait up to the limit.
        assert!(b.hold_parked(99) && b.parked_room(0) && b.parked_room(99));
        assert!(!b.parked_room(100));
        assert!(b.hold_parked(0));
        // Owed replies and the requests behind them together.
        assert!(b.charge(60));
        assert!(b.hold_parked(39));
        assert!(b.parked_room(39) && !b.parked_room(40));
        assert_eq!(global.used(), 99);
        // Waiting requests leave the count when framed, replies when written.
        assert!(b.hold_parked(0));
        b.release(60);
        assert_eq!(global.used(), 0);
        // The writer's stall is what the reader checks at the limit.
        assert!(!b.is_stalled());
        b.writer_stalled(true);
        assert!(b.is_stalled());
        b.writer_stalled(false);
        assert!(!b.is_stalled());
    }

    #[test]
    fn replies_answered_here_are_counted_until_written() {
        let global = Arc::new(ClientMemory::new(1 << 20));
        let b = ReplyBudget::within(100, &global, 1);
        b.owe(60);
        assert_eq!((b.owed(), global.used()), (60, 60));
        b.release(60);
        assert_eq!((b.owed(), global.used()), (0, 0));
        // Always counted (the writer releases exactly that), and over the limit it closes.
        b.owe(101);
        assert!(b.exceeded());
        assert_eq!(global.used(), 101);
        b.release(101);
        assert_eq!(global.used(), 0);
    }

    #[test]
    fn a_client_over_its_own_limit_is_closed() {
        let b = ReplyBudget::new(10);
        assert!(b.charge(10));
        assert!(!b.charge(1) && b.exceeded());
        assert!(!b.charge(1), "closed stays closed");
        let text = b.overflow_error().to_string();
        assert!(
            text.contains("10 bytes of replies unread and requests waiting behind them (limits.max_reply_bytes)"),
            "{text}"
        );
    }
}

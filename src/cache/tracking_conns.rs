//! The tracking connections: RESP3 connections with `CLIENT TRACKING ON` (default mode) that
//! carry the near cache's fills and receive the upstream's invalidations for the keys they read.
//!
//! A tracking connection is opened like every upstream connection, by
//! [`crate::upstream::handshake`], and reopened after a failure by the same
//! [`crate::upstream::backoff`] rules; this module adds `CLIENT TRACKING ON` on top, and what it
//! reads (fill replies, pushes) is decoded by [`crate::protocol::resp3`].
//!
//! # Invariants
//! - A key's fills always go through the same connection, so its fill replies and its
//!   invalidations arrive in the order the upstream produced them.
//! - The reader applies each frame (fill reply or push) before it looks at the next, so an
//!   invalidation that the upstream sent after a fill's read and before its `PTTL` reply drops
//!   that fill ([`super::store`]).
//! - While a connection is not acknowledged as tracking, its `trusted` deadline is 0: nothing
//!   is served from the cache for its keys and no fill is sent. Losing it (a failure, or no
//!   reply within the heartbeat deadline) empties the whole cache before the deadline can be
//!   set again.
//! - A hit of a connection's keys is served only before its `trusted` deadline: the send time
//!   of the last heartbeat it had answered (or of its `CLIENT TRACKING ON`) plus
//!   `near_cache.max_silence_ms`. An answer proves that every invalidation the upstream sent
//!   before it has been applied (they share the connection, in order), so a connection gone
//!   silent (a frozen upstream, a black-holed link) stops its hits within that bound, however
//!   long the heartbeat deadline; the entries stay, and serve again once an answer catches
//!   up. The hit path pays one atomic load for it, as it paid for the `ready` flag before.
use super::store::{Fetched, Ticket};
use super::{FlushReason, Shared};
use crate::config::UpstreamConfig;
use crate::protocol::resp3::{self as resp, Push};
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::upstream::backoff::{Backoff, Waited, fail_fast};
use crate::upstream::error::{Deadline, Kind, Lost, ProtocolError, Refusal, UpstreamError};
use crate::upstream::handshake::{self, BoxRead, BoxWrite};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// One fill: the store's ticket and the commands to send (the read, then `PTTL`).
pub(crate) struct FillJob {
    pub ticket: Ticket,
    pub command: Bytes,
    /// When the fill was started, on the store's clock: the entry's TTL counts from here.
    pub sent: u64,
    /// Sent once already, on a connection lost before it answered.
    pub retried: bool,
}

/// Fills waiting to be written, per connection; past this the read bypasses the cache.
const QUEUE: usize = 4096;

/// Fills on the wire at once, per connection: two commands each, well under the 10,000 queued
/// commands past which Dragonfly stops reading a connection. Past it, fills wait in the queue.
const IN_FLIGHT: usize = 2048;

/// One tracking connection as the cache uses it: where its fills go, and until when (the
/// store's clock, in ms) its keys may be served: 0 while it is not acknowledged as tracking.
#[derive(Clone)]
pub(crate) struct Handle {
    pub fills: mpsc::Sender<FillJob>,
    pub trusted: Arc<AtomicU64>,
}

impl Handle {
    /// Acknowledged as tracking now (perhaps silent for the moment).
    pub fn up(&self) -> bool {
        self.trusted.load(Ordering::Relaxed) != 0
    }

    /// Its keys may be served at `now` (the store's clock).
    pub fn trusted_at(&self, now: u64) -> bool {
        now < self.trusted.load(Ordering::Acquire)
    }
}

pub(crate) fn spawn(
    index: usize,
    shared: Arc<Shared>,
    upstream: Arc<UpstreamConfig>,
    shutdown: CancellationToken,
) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE);
    let trusted = Arc::new(AtomicU64::new(0));
    let task = Tracker {
        index,
        trusted: trusted.clone(),
        shared,
        upstream,
        rx,
        shutdown,
        retry: Vec::new(),
    };
    tokio::spawn(task.run());
    Handle { fills: tx, trusted }
}

struct Tracker {
    index: usize,
    /// See [`Handle::trusted`].
    trusted: Arc<AtomicU64>,
    shared: Arc<Shared>,
    upstream: Arc<UpstreamConfig>,
    rx: mpsc::Receiver<FillJob>,
    shutdown: CancellationToken,
    /// Fills that were on the wire when the connection was lost: a read can be repeated, so each
    /// is sent once more, first thing on the next connection, and its waiting clients get an
    /// answer rather than an error. (Its entry is not cached: the loss emptied the cache, which
    /// the fill's ticket predates.)
    retry: Vec<FillJob>,
}

/// A request on the wire, waiting for its replies.
enum Waiting {
    Fill {
        job: FillJob,
        at: Instant,
        first: Option<Bytes>,
    },
    Ping {
        at: Instant,
        /// When it was sent, on the store's clock.
        sent: u64,
    },
}

impl Waiting {
    fn at(&self) -> Instant {
        match self {
            Waiting::Fill { at, .. } | Waiting::Ping { at, .. } => *at,
        }
    }
}

/// Encode fills into `out`, to be written together, each now waiting for its replies.
fn enqueue(
    out: &mut BytesMut,
    waiting: &mut VecDeque<Waiting>,
    jobs: impl Iterator<Item = FillJob>,
) {
    let at = Instant::now();
    for job in jobs {
        out.extend_from_slice(&job.command);
        waiting.push_back(Waiting::Fill {
            job,
            at,
            first: None,
        });
    }
}

impl Tracker {
    async fn run(mut self) {
        let addr = handshake::addr(&self.upstream);
        let mut backoff = Backoff::new(&self.upstream);
        loop {
            // Before `CLIENT TRACKING ON` is sent: its answer vouches for the connection as of
            // then (the first trust, until the first heartbeat's answer).
            let began = self.shared.store.now();
            let cause = match self.connect(&addr).await {
                Ok((r, w)) => {
                    if backoff.succeeded() {
                        info!(upstream = %addr, connection = self.index, "near-cache tracking restored");
                    }
                    self.trust(began);
                    let cause = self.serve(r, w, &addr).await;
                    self.lost();
                    match cause {
                        Some(c) => c,
                        None => return self.fail_retries("respite is shutting down"),
                    }
                }
                Err(UpstreamError {
                    kind: Kind::Refused(refusal @ Refusal::Command { .. }),
                    ..
                }) => {
                    let e = refusal.reply();
                    self.fail_retries(&format!("near-cache tracking refused ({e})"));
                    error!(upstream = %addr, error = %e, "the upstream refused CLIENT TRACKING: the near cache is OFF");
                    self.shared.disabled.store(true, Ordering::Relaxed);
                    metrics::gauge!(super::ENABLED).set(0.0);
                    return;
                }
                Err(e) => {
                    self.fail_retries(&format!("near-cache tracking connection lost ({e})"));
                    e
                }
            };
            if self.shutdown.is_cancelled() {
                return self.fail_retries("respite is shutting down");
            }
            let retry = backoff.failed();
            // Once per 30 s for all tracking connections together (crate::logging::Repeats).
            static REPEATS: crate::logging::Repeats =
                crate::logging::Repeats::new(std::time::Duration::from_secs(30));
            if let Some(suppressed) = REPEATS.check() {
                warn!(upstream = %addr, connection = self.index, %cause, retry_in = ?retry.delay, suppressed, "near-cache tracking connection failed; the near cache is empty and bypassed until it is back");
            }
            let shared = self.shared.clone();
            let fail = |job: FillJob| fail(&shared, job, "near-cache tracking connection down");
            match fail_fast(retry.delay, &mut self.rx, fail, self.shutdown.cancelled()).await {
                Waited::Elapsed => {}
                Waited::Woken => return self.fail_retries("respite is shutting down"),
                Waited::Closed => return,
            }
        }
    }

    /// Connect (the upstream's own handshake), then turn tracking on; only a reply that is not
    /// an error makes the connection usable. An error reply is the upstream refusing tracking.
    async fn connect(&self, addr: &Arc<str>) -> Result<(BoxRead, BoxWrite), UpstreamError> {
        let opened = handshake::open(&self.upstream, Protocol::Resp3, "respite").await?;
        // Fills and heartbeats are respite's own: MONITOR shows none of them.
        if let Some(key) = &opened.key {
            crate::upstream::own::set_own(key);
        }
        let (mut r, mut w) = (opened.read, opened.write);
        let mut out = BytesMut::new();
        encode::command(&mut out, &[&b"CLIENT"[..], b"TRACKING", b"ON"]);
        let setup = handshake::request(&mut r, &mut w, addr, "CLIENT TRACKING", &out);
        match tokio::time::timeout(self.upstream.connect_timeout, setup).await {
            Ok(reply) => reply.map(|_| (r, w)),
            Err(_) => {
                let kind = Kind::TimedOut(Deadline::Setup("CLIENT TRACKING ON"));
                Err(UpstreamError::new(addr.clone(), kind))
            }
        }
    }

    /// The connection is gone: no hits until tracking is back, and nothing cached survives,
    /// since invalidations may have been missed.
    fn lost(&self) {
        self.trusted.store(0, Ordering::Release);
        self.shared.flush(FlushReason::TrackingLost);
    }

    /// An answer came to what was sent at `sent` (the store's clock): every invalidation the
    /// upstream sent before it has been applied, so hits may be served for `max_silence` from
    /// then. Never moves the deadline back (nor off 0 once the connection is lost: only the
    /// connection's own task calls this, between `connect` and `lost`).
    fn trust(&self, sent: u64) {
        let until = sent + self.shared.config.max_silence.as_millis() as u64;
        // At least 1: 0 means not acknowledged.
        self.trusted.fetch_max(until.max(1), Ordering::AcqRel);
    }

    /// Run one tracking connection until it fails (`Some(cause)`) or the proxy stops (`None`).
    async fn serve(
        &mut self,
        mut read: BoxRead,
        mut write: BoxWrite,
        addr: &Arc<str>,
    ) -> Option<UpstreamError> {
        let heartbeat = self.shared.config.heartbeat;
        let deadline = self.shared.config.heartbeat_timeout;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut buf = BytesMut::new();
        let mut scanner = ReplyScanner::new();
        let mut out = BytesMut::new();
        let mut jobs = Vec::with_capacity(64);
        // Taken before the interval starts: its ticks are then at least a heartbeat after it.
        let mut last_ping = Instant::now();
        let mut beat = tokio::time::interval(heartbeat.min(deadline / 2));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        enqueue(&mut out, &mut waiting, self.retry.drain(..));
        let resent = if out.is_empty() {
            Ok(())
        } else {
            write.write_all(&out).await
        };
        out.clear();
        let cause = if let Err(e) = resent {
            Some(Kind::Lost(Lost::Write(e.into())))
        } else {
            loop {
                tokio::select! {
                    biased;
                    r = read.read_buf(&mut buf) => match r {
                        Ok(0) => break Some(Kind::Lost(Lost::Closed)),
                        Err(e) => break Some(Kind::Lost(Lost::Read(e.into()))),
                        Ok(_) => {
                            if let Err(e) = self.frames(&mut buf, &mut scanner, &mut waiting) {
                                break Some(e);
                            }
                            if buf.is_empty() && buf.capacity() > 64 * 1024 {
                                buf = BytesMut::new();
                            }
                        }
                    },
                    n = self.rx.recv_many(&mut jobs, 64), if waiting.len() < IN_FLIGHT => {
                        if n == 0 {
                            break None;
                        }
                        enqueue(&mut out, &mut waiting, jobs.drain(..));
                        if let Err(e) = write.write_all(&out).await {
                            break Some(Kind::Lost(Lost::Write(e.into())));
                        }
                        out.clear();
                    }
                    tick = beat.tick() => {
                        if let Some(w) = waiting.front()
                            && w.at().elapsed() > deadline
                        {
                            break Some(Kind::TimedOut(Deadline::Heartbeat(deadline)));
                        }
                        if last_ping.elapsed() >= heartbeat
                            && !waiting.iter().any(|w| matches!(w, Waiting::Ping { .. }))
                        {
                            // The tick's own instant, not the clock's: the next tick is one
                            // period after it, so with the tick as long as the heartbeat a PING
                            // goes out on every tick, not every other one.
                            last_ping = tick;
                            let sent = self.shared.store.now();
                            if let Err(e) = write.write_all(b"*1\r\n$4\r\nPING\r\n").await {
                                break Some(Kind::Lost(Lost::Write(e.into())));
                            }
                            waiting.push_back(Waiting::Ping { at: last_ping, sent });
                        }
                    }
                    _ = self.shutdown.cancelled() => break None,
                }
            }
        };
        let cause = cause.map(|kind| UpstreamError::new(addr.clone(), kind));
        let why = match &cause {
            Some(e) => e.to_string(),
            None => "respite is shutting down".to_string(),
        };
        for w in waiting {
            if let Waiting::Fill { mut job, .. } = w {
                if job.retried || cause.is_none() {
                    self.fail(job, &format!("near-cache tracking connection lost ({why})"));
                } else {
                    job.retried = true;
                    self.retry.push(job);
                }
            }
        }
        cause
    }

    /// The fills kept for the next connection will not get one: their clients get `why`.
    fn fail_retries(&mut self, why: &str) {
        for job in std::mem::take(&mut self.retry) {
            self.fail(job, why);
        }
    }

    /// Apply every complete frame in `buf`, in order.
    fn frames(
        &self,
        buf: &mut BytesMut,
        scanner: &mut ReplyScanner,
        waiting: &mut VecDeque<Waiting>,
    ) -> Result<(), Kind> {
        loop {
            let found = match scanner.scan(buf) {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Kind::Protocol(ProtocolError::Garbled(e))),
            };
            let frame = buf.split_to(found.len).freeze();
            if found.push {
                self.push(&frame);
                continue;
            }
            match waiting.front_mut() {
                None => return Err(Kind::Protocol(ProtocolError::Unsolicited)),
                Some(&mut Waiting::Ping { sent, .. }) => {
                    waiting.pop_front();
                    self.trust(sent);
                }
                Some(Waiting::Fill { first, .. }) if first.is_none() => *first = Some(frame),
                Some(Waiting::Fill { .. }) => {
                    let Some(Waiting::Fill { job, first, .. }) = waiting.pop_front() else {
                        unreachable!("front is a fill");
                    };
                    self.complete(job, first.expect("checked above"), &frame);
                }
            }
        }
    }

    fn push(&self, frame: &Bytes) {
        match resp::push(frame) {
            Push::Keys(keys) => {
                let store = &self.shared.store;
                let now = store.now();
                self.shared
                    .pushes
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                for k in keys {
                    store.invalidate(&k, now);
                }
            }
            Push::All => self.shared.flush(FlushReason::Upstream),
            Push::Other => {}
        }
    }

    /// A fill that will get no reply: its slot goes, and its waiting clients get an error
    /// naming why.
    fn fail(&self, job: FillJob, why: &str) {
        fail(&self.shared, job, why);
    }

    /// A fill's two replies are in: cache the read's reply if it may be, and answer the waiting
    /// clients either way.
    fn complete(&self, job: FillJob, value: Bytes, pttl: &[u8]) {
        if let Some(router) = &self.shared.router
            && super::trackers::is_redirect(&value)
        {
            return super::trackers::redirected(self.shared.clone(), router.clone(), job);
        }
        let config = &self.shared.config;
        let cached = super::cached(&value, job.ticket.sig.kind.scored());
        let cacheable = !cached.resp2.starts_with(b"-")
            && !resp::is_error(&value)
            && value.len() * 2 + job.ticket.key.len() <= config.max_entry;
        let expires = match resp::integer(pttl) {
            Some(ms) if ms >= 0 => {
                Some(job.sent + (ms as u64).min(config.safety_ttl.as_millis() as u64))
            }
            Some(-1 | -2) => Some(job.sent + config.safety_ttl.as_millis() as u64),
            _ => None,
        };
        let value = match (cacheable, expires) {
            (true, Some(at)) => Some((cached.clone(), at)),
            _ => None,
        };
        self.shared.store.complete(job.ticket, value, Ok(cached));
    }
}

/// A fill that will get no reply: its slot goes, and its waiting clients get `why`.
fn fail(shared: &Shared, job: FillJob, why: &str) {
    let reply: Fetched = Err(Arc::from(why));
    shared.store.abandon(job.ticket, reply);
}

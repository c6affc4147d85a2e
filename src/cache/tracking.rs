//! The tracking connections: RESP3 connections with `CLIENT TRACKING ON` (default mode) that
//! carry the near cache's fills and receive the upstream's invalidations for the keys they read.
//!
//! # Invariants
//! - A key's fills always go through the same connection, so its fill replies and its
//!   invalidations arrive in the order the upstream produced them.
//! - The reader applies each frame (fill reply or push) before it looks at the next, so an
//!   invalidation that the upstream sent after a fill's read and before its `PTTL` reply drops
//!   that fill ([`super::store`]).
//! - While a connection is not acknowledged as tracking, its `ready` flag is down: nothing is
//!   served from the cache for its keys and no fill is sent. Losing it (a failure, or no reply
//!   within the heartbeat deadline) empties the whole cache before the flag can rise again.
use super::resp::{self, Push};
use super::store::{Cached, Fetched, Ticket};
use super::{FlushReason, Shared};
use crate::config::UpstreamConfig;
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::upstream::{self, BoxRead, BoxWrite};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

pub(crate) fn spawn(
    index: usize,
    shared: Arc<Shared>,
    upstream: Arc<UpstreamConfig>,
    shutdown: CancellationToken,
) -> mpsc::Sender<FillJob> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = Tracker {
        index,
        shared,
        upstream,
        rx,
        shutdown,
        retry: Vec::new(),
    };
    tokio::spawn(task.run());
    tx
}

struct Tracker {
    index: usize,
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
    },
}

impl Waiting {
    fn at(&self) -> Instant {
        match self {
            Waiting::Fill { at, .. } | Waiting::Ping { at } => *at,
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

enum Setup {
    Failed(String),
    Refused(String),
}

impl Tracker {
    async fn run(mut self) {
        let addr = self.upstream.url.addr.to_string();
        let mut failures: u32 = 0;
        loop {
            let cause = match self.connect().await {
                Ok((r, w)) => {
                    if failures > 0 {
                        info!(upstream = %addr, connection = self.index, "near-cache tracking restored");
                    }
                    failures = 0;
                    self.shared.ready[self.index].store(true, Ordering::Release);
                    let cause = self.serve(r, w).await;
                    self.lost();
                    match cause {
                        Some(c) => c,
                        None => return self.fail_retries("respite is shutting down"),
                    }
                }
                Err(Setup::Refused(e)) => {
                    self.fail_retries(&format!("near-cache tracking refused ({e})"));
                    error!(upstream = %addr, error = %e, "the upstream refused CLIENT TRACKING: the near cache is OFF");
                    self.shared.disabled.store(true, Ordering::Relaxed);
                    metrics::gauge!(super::ENABLED).set(0.0);
                    return;
                }
                Err(Setup::Failed(e)) => {
                    self.fail_retries(&format!("near-cache tracking connection lost ({e})"));
                    e
                }
            };
            if self.shutdown.is_cancelled() {
                return self.fail_retries("respite is shutting down");
            }
            failures = failures.saturating_add(1);
            let delay = upstream::backoff(
                self.upstream.backoff_base,
                self.upstream.backoff_max,
                failures,
                &mut rand::rng(),
            );
            // Once per 30 s for all tracking connections (crate::logging::Repeats).
            static REPEATS: crate::logging::Repeats =
                crate::logging::Repeats::new(std::time::Duration::from_secs(30));
            if let Some(suppressed) = REPEATS.check() {
                warn!(upstream = %addr, connection = self.index, %cause, retry_in = ?delay, suppressed, "near-cache tracking connection failed; the near cache is empty and bypassed until it is back");
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.shutdown.cancelled() => return self.fail_retries("respite is shutting down"),
                    job = self.rx.recv() => match job {
                        Some(job) => self.fail(job, "near-cache tracking connection down"),
                        None => return,
                    },
                }
            }
        }
    }

    /// Connect, then turn tracking on; only an `+OK` to that makes the connection usable.
    async fn connect(&self) -> Result<(BoxRead, BoxWrite), Setup> {
        let (mut r, mut w, _) = upstream::connect(&self.upstream, Protocol::Resp3)
            .await
            .map_err(Setup::Failed)?;
        let mut out = BytesMut::new();
        encode::command(&mut out, &[&b"CLIENT"[..], b"TRACKING", b"ON"]);
        let setup = async {
            w.write_all(&out)
                .await
                .map_err(|e| Setup::Failed(format!("CLIENT TRACKING: {e}")))?;
            upstream::read_replies(&mut r, Protocol::Resp3, 1)
                .await
                .map_err(Setup::Failed)
        };
        let replies = tokio::time::timeout(self.upstream.connect_timeout, setup)
            .await
            .map_err(|_| Setup::Failed("no reply to CLIENT TRACKING ON".into()))??;
        match upstream::error_text(&replies[0]) {
            Some(e) => Err(Setup::Refused(e)),
            None => Ok((r, w)),
        }
    }

    /// The connection is gone: no hits until tracking is back, and nothing cached survives,
    /// since invalidations may have been missed.
    fn lost(&self) {
        self.shared.ready[self.index].store(false, Ordering::Release);
        self.shared.flush(FlushReason::TrackingLost);
    }

    /// Run one tracking connection until it fails (`Some(cause)`) or the proxy stops (`None`).
    async fn serve(&mut self, mut read: BoxRead, mut write: BoxWrite) -> Option<String> {
        let heartbeat = self.shared.config.heartbeat;
        let deadline = self.shared.config.heartbeat_timeout;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut buf = BytesMut::new();
        let mut scanner = ReplyScanner::new();
        let mut out = BytesMut::new();
        let mut jobs = Vec::with_capacity(64);
        let mut beat = tokio::time::interval(heartbeat.min(deadline / 2));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping = Instant::now();
        enqueue(&mut out, &mut waiting, self.retry.drain(..));
        let resent = if out.is_empty() {
            Ok(())
        } else {
            write.write_all(&out).await
        };
        out.clear();
        let cause = if let Err(e) = resent {
            Some(format!("write failed: {e}"))
        } else {
            loop {
                tokio::select! {
                    biased;
                    r = read.read_buf(&mut buf) => match r {
                        Ok(0) => break Some("upstream closed the connection".to_string()),
                        Err(e) => break Some(format!("read failed: {e}")),
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
                            break Some(format!("write failed: {e}"));
                        }
                        out.clear();
                    }
                    _ = beat.tick() => {
                        if let Some(w) = waiting.front()
                            && w.at().elapsed() > deadline
                        {
                            break Some(format!("no reply within {deadline:?} (heartbeat)"));
                        }
                        if last_ping.elapsed() >= heartbeat
                            && !waiting.iter().any(|w| matches!(w, Waiting::Ping { .. }))
                        {
                            last_ping = Instant::now();
                            if let Err(e) = write.write_all(b"*1\r\n$4\r\nPING\r\n").await {
                                break Some(format!("write failed: {e}"));
                            }
                            waiting.push_back(Waiting::Ping { at: last_ping });
                        }
                    }
                    _ = self.shutdown.cancelled() => break None,
                }
            }
        };
        let why = cause
            .clone()
            .unwrap_or_else(|| "respite is shutting down".to_string());
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
    ) -> Result<(), String> {
        loop {
            let found = match scanner.scan(buf) {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let frame = buf.split_to(found.len).freeze();
            if found.push {
                self.push(&frame);
                continue;
            }
            match waiting.front_mut() {
                None => return Err("reply with no request in flight".into()),
                Some(Waiting::Ping { .. }) => {
                    waiting.pop_front();
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
        let reply: Fetched = Err(Arc::from(why));
        self.shared.store.abandon(job.ticket, reply);
    }

    /// A fill's two replies are in: cache the read's reply if it may be, and answer the waiting
    /// clients either way.
    fn complete(&self, job: FillJob, value: Bytes, pttl: &[u8]) {
        let config = &self.shared.config;
        // Copied out of the read buffer, so a cached entry does not pin the buffer it came in.
        let resp3 = Bytes::copy_from_slice(&value);
        let resp2 = if job.ticket.sig.kind.scored() {
            resp::to_resp2_flattening_pairs(&value)
        } else {
            resp::to_resp2(&value)
        };
        let cacheable = resp2.is_some()
            && !resp::is_error(&value)
            && value.len() * 2 + job.ticket.key.len() <= config.max_entry;
        let expires = match resp::integer(pttl) {
            Some(ms) if ms >= 0 => {
                Some(job.sent + (ms as u64).min(config.safety_ttl.as_millis() as u64))
            }
            Some(-1 | -2) => Some(job.sent + config.safety_ttl.as_millis() as u64),
            _ => None,
        };
        let cached = Arc::new(Cached {
            resp2: resp2.unwrap_or_else(|| {
                let mut out = BytesMut::new();
                encode::error(
                    &mut out,
                    "ERR respite could not re-encode the upstream's reply for RESP2",
                );
                out.freeze()
            }),
            resp3,
        });
        let value = match (cacheable, expires) {
            (true, Some(at)) => Some((cached.clone(), at)),
            _ => None,
        };
        self.shared.store.complete(job.ticket, value, Ok(cached));
    }
}

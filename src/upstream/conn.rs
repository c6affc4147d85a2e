//! One multiplexed, auto-pipelined connection to the upstream: the [`Conn`] handle clients send
//! through, and the task that owns the socket, reconnects it and keeps its replies paired.
//!
//! The writer half takes whatever jobs are queued (from any number of clients) and sends them in
//! one write; for each it pushes a reply slot onto a FIFO. A job is one or more commands a client
//! pipelined together, and its slot collects that many replies. The reader half finds reply
//! boundaries with the [`ReplyScanner`] and completes the slot at the head of the FIFO with the
//! raw bytes of its replies. Each batch ends with an alignment marker ([`Markers`]); the replies
//! of a batch are held until its marker's echo arrives in place, then delivered. A watchdog fails
//! the connection when the oldest slot has waited past its deadline.
//!
//! # Invariants
//! - Every command handed to [`Conn::send`] gets exactly one outcome: its own reply, or an error
//!   that names the cause.
//!   Replies are paired with slots strictly in the order the commands were written, and a
//!   connection whose pairing could be in doubt (a reply with no slot, a protocol error, a
//!   deadline passed, a marker not echoed in place) is closed, failing every slot still on it.
//!   No reply ever reaches the wrong request: a reply is delivered only once the marker written
//!   after its command has come back where due. A connection that fails, however (a protocol
//!   error, a clean close, a deadline), delivers none of its unverified replies: their commands
//!   get the indeterminate error.
//! - A command is never written twice. Commands whose fate is unknown when a connection dies get
//!   an error, not a retry.
//! - Memory is bounded: each connection's queue and its number of commands in flight are bounded.
//!
//! This module must never interpret replies beyond finding their boundaries: what a reply means
//! is the session's business.
use super::activity::Activity;
use super::backoff::{Backoff, Waited, fail_fast};
use super::error::{Closer, Deadline, Kind, NoReply, UpstreamError};
use super::handshake::{self, BoxRead, BoxWrite, ServerInfo};
use super::health::{self, Cause};
pub(super) use super::job::{InFlight, Job, Slot};
use super::lanes::Lane;
use super::marker::Markers;
use super::pipe::{read_marked, write_marked};
use super::reply::{Partial, Reply, ReplyBudget};
use crate::config::UpstreamConfig;
use crate::metrics;
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A handle on one multiplexed upstream connection (its managing task lives as long as handles do).
#[derive(Clone)]
pub struct Conn {
    pub(super) tx: mpsc::Sender<Job>,
}

impl Conn {
    /// Queue `count` encoded commands; the receiver yields their replies. Waits while the
    /// connection's queue is full (backpressure on the client that sends).
    pub async fn send(&self, bytes: Bytes, count: usize) -> oneshot::Receiver<Reply> {
        self.send_within(bytes, count, None).await
    }

    /// [`Conn::send`], with the replies counted against a client's [`ReplyBudget`].
    pub async fn send_within(
        &self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
    ) -> oneshot::Receiver<Reply> {
        self.send_marked(bytes, count, budget, false).await
    }

    /// [`Conn::send_within`], saying whether the commands include a known-slow one
    /// ([`crate::command::known_slow`]): while it runs, the upstream's silence is work, not an
    /// outage, and the connection's command deadline stretches to `health.busy_grace_ms`.
    pub async fn send_marked(
        &self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
        slow: bool,
    ) -> oneshot::Receiver<Reply> {
        self.send_scripts(bytes, count, budget, slow, None).await
    }

    /// [`Conn::send_marked`] for a job holding scripts, registered by `script` until its
    /// replies are in (see [`super::scripts`]).
    pub async fn send_scripts(
        &self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
        slow: bool,
        script: Option<super::scripts::ScriptTag>,
    ) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            bytes,
            count,
            reply,
            budget,
            slow,
            script,
        };
        // A closed queue means the pool is shutting down: dropping `reply` tells the receiver.
        // Waiting for room is the rare case: its (large) future lives on the heap, so it does not
        // grow every session's future, which idle clients pay for.
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let _ = Box::pin(self.tx.send(job)).await;
        }
        rx
    }
}

pub(super) struct ConnTask {
    pub(super) config: Arc<UpstreamConfig>,
    pub(super) proto: Protocol,
    pub(super) slot: usize,
    /// A slow- or bulk-lane connection (see [`super::lanes`]) is not one of the pool's: it does
    /// not count towards the upstream's health; a slow lane's commands have no reply deadline.
    pub(super) lane: Lane,
    /// One of the URL's database's pool connections: its ups and downs are the upstream's
    /// health (and the live-connection gauges). False for lanes and tenants' own databases.
    pub(super) counted: bool,
    pub(super) rx: mpsc::Receiver<Job>,
    pub(super) live: Arc<AtomicUsize>,
    pub(super) info: Arc<RwLock<Option<ServerInfo>>>,
    pub(super) addr: Arc<str>,
    pub(super) health: Arc<health::Health>,
    /// Health transitions, to fail the connection on `down` and to cut a backoff short on
    /// `recovering`.
    pub(super) state: watch::Receiver<health::State>,
    pub(super) shutdown: CancellationToken,
}

fn proto_label(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Resp2 => "resp2",
        Protocol::Resp3 => "resp3",
    }
}

impl ConnTask {
    pub(super) async fn run(mut self) {
        let label = proto_label(self.proto);
        let mut backoff = Backoff::new(&self.config);
        let pooled = self.counted;
        loop {
            // Transitions from here on are news to the backoff below.
            self.state.borrow_and_update();
            let cause = match self.connect().await {
                Ok((r, w)) => {
                    if backoff.succeeded() {
                        info!(upstream = %self.addr, protocol = label, slot = self.slot, "upstream connection restored");
                    }
                    if pooled {
                        self.live.fetch_add(1, Ordering::Relaxed);
                        metrics::upstream_connections(label).increment(1.0);
                        metrics::upstream_shared_connections().increment(1.0);
                        self.health.report(health::Event::ConnUp, None);
                    }
                    let cause = self.serve(r, w).await;
                    if pooled {
                        self.live.fetch_sub(1, Ordering::Relaxed);
                        metrics::upstream_connections(label).decrement(1.0);
                        metrics::upstream_shared_connections().decrement(1.0);
                    }
                    match cause {
                        None => return, // every handle dropped: the proxy is gone
                        Some(c) if pooled => {
                            self.health
                                .report(health::Event::ConnDown, Some(Cause::Conn(c.clone())));
                            c
                        }
                        Some(c) => c,
                    }
                }
                Err(e) => {
                    if pooled {
                        self.health.attempt_failed(&e);
                    }
                    e
                }
            };
            if self.shutdown.is_cancelled() && self.rx.is_closed() {
                return;
            }
            metrics::upstream_reconnect(label);
            let retry = backoff.failed();
            // Once per 30 s for all slots together: an outage is one story, not a line per attempt
            // per connection (31 lines in 20 s with the near cache's, before).
            static REPEATS: crate::logging::Repeats =
                crate::logging::Repeats::new(std::time::Duration::from_secs(30));
            if let Some(suppressed) = REPEATS.check() {
                warn!(upstream = %self.addr, protocol = label, slot = self.slot, %cause, retry_in = ?retry.delay, failures = retry.failures, suppressed, "upstream connection failed");
            }
            // Until the next attempt, fail fast: nothing is queued behind a dead connection. The
            // probe having an answer again cuts the wait short: reconnect now, not at the end of
            // a backoff grown during the outage, so recovery takes a probe, not backoff_max.
            let cause = Arc::new(cause);
            let fail = |job: Job| {
                let _ = job
                    .reply
                    .send(Err(NoReply::Unavailable(cause.clone()).into()));
            };
            let recovering = became(&mut self.state, |s| s == health::State::Recovering);
            if fail_fast(retry.delay, &mut self.rx, fail, recovering).await == Waited::Closed {
                return;
            }
        }
    }

    /// Connect and handshake; records what the upstream says about itself.
    async fn connect(&self) -> Result<(BoxRead, BoxWrite), UpstreamError> {
        let name = match self.lane {
            Lane::Shared => "respite",
            Lane::Slow => "respite-slow",
            Lane::Bulk => "respite-bulk",
        };
        let opened =
            handshake::open_patient(&self.config, self.proto, name, &self.health, None).await?;
        if let Ok(mut slot) = self.info.write() {
            *slot = Some(opened.info);
        }
        Ok((opened.read, opened.write))
    }

    /// Run one established connection until it fails (`Some(cause)`) or every handle is dropped
    /// (`None`). On return every slot still in flight has been completed with an error.
    async fn serve(&mut self, mut read: BoxRead, mut write: BoxWrite) -> Option<UpstreamError> {
        let label = proto_label(self.proto);
        let inflight: InFlight = Mutex::new(VecDeque::new());
        // The reader keeps the replies of a partly answered slot here until the rest arrive.
        let mut buf = BytesMut::new();
        // Complete replies not yet vouched for by their batch's marker, oldest first.
        let mut held = Vec::new();
        let markers = Markers::new();
        // The bulk lane carries large replies: a bound in commands is a bound in what the
        // server copies out in one go while the shared connections wait their turn.
        let max_inflight = match self.lane {
            Lane::Bulk => self.config.max_inflight.min(super::lanes::BULK_INFLIGHT),
            _ => self.config.max_inflight,
        };
        let permits = Semaphore::new(max_inflight);
        self.state.borrow_and_update();
        let fail_on_down = self.health.fail_inflight_on_down();
        // Jobs taken off the queue but not yet written: if the connection fails first, they are
        // known not to have been sent.
        let mut unsent = VecDeque::new();
        let activity = &self.health.activity;
        let deadlines = Deadlines {
            command: self.config.command_timeout,
            busy: self.config.health.busy_grace,
        };
        let result = tokio::select! {
            r = write_marked(&mut self.rx, &mut unsent, &mut write, &inflight, &permits, max_inflight, activity, Some(label), Some(markers)) => r,
            r = read_marked(&mut read, &mut buf, &mut held, &inflight, &permits, activity, Some(label), Some(markers), None) => r,
            r = watchdog(&inflight, deadlines, activity, self.lane, &self.health) => r,
            // Local-only mode took over: what is in flight here fails now instead of holding its
            // clients until the command deadline.
            _ = became(&mut self.state, |s| s == health::State::Down), if fail_on_down => {
                Some(Kind::Closed(Closer::LocalOnly))
            }
        };
        let result = result.map(|kind| UpstreamError::new(self.addr.clone(), kind));
        let cause = result.clone().unwrap_or_else(|| {
            UpstreamError::new(self.addr.clone(), Kind::Closed(Closer::Shutdown))
        });
        let cause = Arc::new(cause);
        let lost = NoReply::Lost(cause.clone());
        let not_sent = NoReply::NotSent(cause);
        for job in unsent {
            let _ = job.reply.send(Err(not_sent.clone().into()));
        }
        let slots = std::mem::take(&mut *inflight.lock().unwrap_or_else(|p| p.into_inner()));
        let lost_count: usize = slots
            .iter()
            .filter(|s| s.reply.is_some())
            .map(|s| s.count)
            .sum();
        metrics::upstream_inflight_add(label, -(lost_count as i64));
        activity.settled(lost_count);
        // Replies no marker has vouched for are never delivered, whatever ended the connection:
        // after a misaligned one the pairing itself is in doubt, and after a clean close or a
        // deadline nothing shows it was not (an unsolicited reply just before a FIN would have
        // shifted them all). Their commands get the indeterminate error; the replies of earlier
        // batches, confirmed, were delivered as their markers came. The cost: a batch cut short
        // loses the replies of its commands that had already come back.
        drop(buf);
        let fail = |mut slot: Slot| {
            if let Some(reply) = slot.reply.take() {
                let _ = reply.send(Err(Partial::from(lost.clone())));
            }
        };
        // Held slots were counted finished when their replies came.
        held.drain(..).for_each(|(slot, _)| fail(slot));
        for slot in slots {
            if slot.slow {
                activity.slow_finished();
            }
            fail(slot);
        }
        result
    }
}

/// A connection's command deadlines: `upstream.command_timeout_ms`, and `health.busy_grace_ms`
/// while a known-slow command is ahead on any pool connection.
#[derive(Clone, Copy)]
struct Deadlines {
    command: Duration,
    busy: Duration,
}

/// Fail the connection when its oldest command has waited past the deadline (since it was sent,
/// or since bytes of its replies last arrived: a long pipeline being answered is not stuck):
/// everything behind it on this connection is stuck too, and only closing it can free them. While a known-slow command
/// runs on the upstream (a script, DEBUG SLEEP, a BITOP over a large string), whatever waits behind
/// it waits for a live server, so the deadline is the busy grace: the same signal that keeps the
/// health probe from calling a busy upstream down (see [`super::activity`]).
///
/// On the slow lane a command may rightly run for longer than any deadline (a script, KEYS on a
/// big keyspace), and nothing fast waits behind it there: its connection is failed only once the
/// health probe has found the upstream gone as well (local-only mode), never while the server
/// answers, e.g. with `-BUSY` to the probe and to the shared connections.
async fn watchdog(
    inflight: &InFlight,
    deadlines: Deadlines,
    activity: &Activity,
    lane: Lane,
    health: &health::Health,
) -> Option<Kind> {
    let tick = (deadlines.command / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let oldest = inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|slot| slot.progress);
        let deadline = if activity.slow_ahead() {
            deadlines.busy.max(deadlines.command)
        } else {
            deadlines.command
        };
        if let Some(t) = oldest
            && t.elapsed() > deadline
            && (lane != Lane::Slow || health.state().is_local())
        {
            return Some(Kind::TimedOut(Deadline::Reply(deadline)));
        }
    }
}

/// Wait for a health transition (after the receiver's last seen one) into a state `want` accepts.
/// Never completes once the health tracker is gone.
async fn became(rx: &mut watch::Receiver<health::State>, want: impl Fn(health::State) -> bool) {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if want(*rx.borrow_and_update()) {
            return;
        }
    }
}

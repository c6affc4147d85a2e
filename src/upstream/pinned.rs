//! Pinned upstream connections: a connection of one client's own, for what a shared,
//! multiplexed connection cannot carry (WATCH, a blocking command, a database other than the
//! configured one). A bounded pool ([`PinnedPool`], `upstream.max_pinned`) leases them out
//! ([`Pinned`]) and takes them back only clean.
//!
//! A lease speaks the same job protocol as a shared [`Conn`](super::Conn) (the same write and
//! read loops, so the same FIFO pairing of replies with commands), without the command deadline:
//! a blocking command may wait as long as the client asked it to.
//!
//! # Invariants
//! - A connection goes back to the idle list only after every reply it owed has been read and
//!   [`handshake::reset`] verified it: `RESET` answered `+RESET` and respite's own HELLO/SELECT
//!   were applied again. Anything else (a lease dropped without [`Pinned::release`], a client gone
//!   while a reply is owed, a failed reset) closes it. No client ever inherits another's WATCH,
//!   transaction, database or name.
//! - A client gone while its command is in flight (blocked in BLPOP) has its connection closed at
//!   once: the server then never pops an element for it, so nothing is lost.
//! - Leased and idle connections together never exceed `upstream.max_pinned`: each holds one of
//!   the pool's permits for as long as it lives.
//!
//! This module never interprets a forwarded reply beyond finding where it ends.
use super::blockable::Blockable;
use super::error::{Kind, Lost, NoReply, Refusal, UpstreamError};
use super::handshake::{self, BoxRead, BoxWrite, Login};
use super::health::Health;
use super::job::{InFlight, Job, PushSink};
use super::pipe::read_loop_pushing;
use super::pipe::{read_loop, write_loop};
use super::reply::{Reply, ReplyBudget};
use crate::config::UpstreamConfig;
use crate::metrics;
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Why no pinned connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "ERR respite has no pinned upstream connection free: all {0} are in use (upstream.max_pinned)"
    )]
    Exhausted(usize),
    #[error("ERR respite could not open a pinned upstream connection: {0}")]
    Open(UpstreamError),
    /// The upstream's own refusal, in its own words, of what the client would have had refused
    /// directly: its credentials (a login), or any command while the server is busy or loading.
    #[error("{0}")]
    Upstream(Arc<str>),
}

impl PinError {
    /// A failed open: the upstream's own error where a client connected to it directly would
    /// have got the same (see [`PinError::Upstream`]), else respite's account of the failure.
    fn open(e: UpstreamError, login: bool) -> PinError {
        match &e.kind {
            Kind::Refused(r @ (Refusal::Hello(_) | Refusal::Select { .. }))
                if login || !r.is_rejection() =>
            {
                PinError::Upstream(r.reply().into())
            }
            _ => PinError::Open(e),
        }
    }
}

type SinkSlot = arc_swap::ArcSwapOption<Arc<dyn PushSink>>;

/// The lease's sink as its reader sees it: none set, pushes are dropped.
struct SlotSink<'a>(&'a SinkSlot);

impl PushSink for SlotSink<'_> {
    fn delivered(&self) {
        if let Some(s) = &*self.0.load() {
            s.delivered()
        }
    }
    fn push(&self, frame: Bytes, mid_job: bool) {
        if let Some(s) = &*self.0.load() {
            s.push(frame, mid_job)
        }
    }
    fn lost(&self) {
        if let Some(s) = &*self.0.load() {
            s.lost()
        }
    }
}

/// The name pinned connections carry on the upstream (CLIENT LIST there).
const NAME: &str = "respite-pinned";

/// The PING that ends a lease: its reply is the last one owed to the client.
pub const RELEASE_PING: &[u8] = b"*2\r\n$4\r\nPING\r\n$15\r\nrespite-release\r\n";

struct Idle {
    proto: Protocol,
    /// Its id on the upstream (CLIENT UNBLOCK), kept across resets.
    id: Option<u64>,
    read: BoxRead,
    write: BoxWrite,
    permit: OwnedSemaphorePermit,
}

/// The pool of pinned connections.
pub struct PinnedPool {
    config: Arc<UpstreamConfig>,
    /// Whether the upstream is up, so a connection opened while it is busy waits for it.
    health: Arc<Health>,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
}

impl PinnedPool {
    pub fn new(config: Arc<UpstreamConfig>, health: Arc<Health>) -> Arc<PinnedPool> {
        Arc::new(PinnedPool {
            health,
            permits: Arc::new(Semaphore::new(config.max_pinned)),
            config,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lease a connection speaking `proto`: a clean idle one, else a new one. Fails fast when
    /// `upstream.max_pinned` are taken (an idle one of the other protocol is closed to make room).
    /// With `login` (a client authenticating as one of the upstream's users), always a new one,
    /// set up with those credentials rather than respite's: the client is not refused for
    /// respite's credentials (changed through respite, say), and an idle connection is never
    /// authenticated as anyone but respite. Its reset at release makes it respite's again.
    pub async fn take(
        self: &Arc<Self>,
        proto: Protocol,
        gone: CancellationToken,
        login: Option<&Login>,
    ) -> Result<Pinned, PinError> {
        let found = match login {
            Some(_) => None,
            None => {
                let mut idle = self.idle();
                idle.iter()
                    .position(|c| c.proto == proto)
                    .map(|i| idle.swap_remove(i))
            }
        };
        let (read, write, permit, id) = match found {
            Some(c) => {
                metrics::upstream_pinned("idle").decrement(1.0);
                (c.read, c.write, c.permit, c.id)
            }
            None => {
                let permit = match self.permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(TryAcquireError::Closed) | Err(TryAcquireError::NoPermits) => {
                        let other = self.idle().pop();
                        match other {
                            Some(c) => {
                                metrics::upstream_pinned("idle").decrement(1.0);
                                c.permit
                            }
                            None => {
                                metrics::upstream_pinned_refused();
                                return Err(PinError::Exhausted(self.config.max_pinned));
                            }
                        }
                    }
                };
                let opened =
                    handshake::open_patient(&self.config, proto, NAME, &self.health, login)
                        .await
                        .map_err(|e| PinError::open(e, login.is_some()))?;
                (opened.read, opened.write, permit, opened.id)
            }
        };
        metrics::upstream_pinned("in_use").increment(1.0);
        let (tx, rx) = mpsc::channel(64);
        let sink: Arc<SinkSlot> = Arc::default();
        let (last, released) = oneshot::channel();
        let blockable = Blockable::new(id);
        let task = Task {
            pool: self.clone(),
            proto,
            id,
            blockable: blockable.clone(),
            rx,
            read,
            write,
            permit,
            released,
            abandoned: gone,
            sink: sink.clone(),
        };
        tokio::spawn(task.run());
        Ok(Pinned {
            tx,
            last,
            sink,
            blockable,
            addr: handshake::addr(&self.config),
            mark: None,
        })
    }

    /// A RESP3 connection that only receives (`CLIENT TRACKING … REDIRECT` to its id, which
    /// this returns): counted against `upstream.max_pinned` like a lease, never reused.
    pub async fn redirect_target(&self) -> Result<(i64, Monitor), PinError> {
        let permit = self.permit()?;
        let mut opened = handshake::open(&self.config, Protocol::Resp3, "respite-tracking")
            .await
            .map_err(PinError::Open)?;
        let addr = handshake::addr(&self.config);
        let reply = handshake::request(
            &mut opened.read,
            &mut opened.write,
            &addr,
            "CLIENT ID",
            b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n",
        )
        .await
        .map_err(PinError::Open)?;
        let id = crate::protocol::resp3::integer(&reply).unwrap_or(-1);
        Ok((
            id,
            Monitor {
                read: opened.read,
                upstream: addr,
                write: opened.write,
                _permit: permit,
            },
        ))
    }

    /// A place of the pool's, for a connection that is never reused: a free permit, else an idle
    /// connection's (closed to make room).
    fn permit(&self) -> Result<OwnedSemaphorePermit, PinError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => match self.idle().pop() {
                Some(c) => {
                    metrics::upstream_pinned("idle").decrement(1.0);
                    Ok(c.permit)
                }
                None => {
                    metrics::upstream_pinned_refused();
                    Err(PinError::Exhausted(self.config.max_pinned))
                }
            },
        }
    }

    /// A connection for MONITOR: counted against `upstream.max_pinned` like a lease, in monitor
    /// mode once this returns (the upstream answered `+OK`), and never reused: the caller reads
    /// it until done and drops it, which closes it and frees its place.
    pub async fn monitor(&self) -> Result<Monitor, PinError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match self.idle().pop() {
                Some(c) => {
                    metrics::upstream_pinned("idle").decrement(1.0);
                    c.permit
                }
                None => {
                    metrics::upstream_pinned_refused();
                    return Err(PinError::Exhausted(self.config.max_pinned));
                }
            },
        };
        let mut opened = handshake::open(&self.config, Protocol::Resp2, "respite-monitor")
            .await
            .map_err(PinError::Open)?;
        let addr = handshake::addr(&self.config);
        handshake::request_line(
            &mut opened.read,
            &mut opened.write,
            &addr,
            "MONITOR",
            b"*1\r\n$7\r\nMONITOR\r\n",
        )
        .await
        .map_err(PinError::Open)?;
        Ok(Monitor {
            read: opened.read,
            upstream: addr,
            write: opened.write,
            _permit: permit,
        })
    }

    /// Connections leased or idle now.
    pub fn open(&self) -> usize {
        self.config.max_pinned - self.permits.available_permits()
    }
}

/// A leased connection: one client's commands, in order, and their replies.
pub struct Pinned {
    tx: mpsc::Sender<Job>,
    /// Where the connection's pushes go while the client tracks keys on it.
    sink: Arc<SinkSlot>,
    /// On release: the reply slot of a last PING sent after everything else, which tells the
    /// task when every reply owed on the connection has been read.
    last: oneshot::Sender<oneshot::Receiver<Reply>>,
    blockable: Arc<Blockable>,
    /// The upstream's address, for the error of a command its failed connection never took.
    addr: Arc<str>,
    /// A cluster node's every slot marked written while the lease lasts (see
    /// [`super::cluster::replicas`]); let go once the last reply owed on it is read.
    mark: Option<super::cluster::replicas::WriteMark>,
}

impl Pinned {
    /// Where CLIENT UNBLOCK finds this lease's connection (see [`super::blockable`]).
    pub fn blockable(&self) -> Arc<Blockable> {
        self.blockable.clone()
    }

    /// Queue `count` encoded commands; the receiver yields their replies (see
    /// [`Conn::send_within`](super::Conn::send_within)).
    pub async fn send_within(
        &self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
    ) -> oneshot::Receiver<Reply> {
        self.send_marked(bytes, count, budget, false).await
    }

    /// [`Pinned::send_within`], saying whether the commands include a known-slow one (see
    /// [`Conn::send_marked`](super::Conn::send_marked)).
    pub async fn send_marked(
        &self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
        slow: bool,
    ) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            bytes,
            count,
            reply,
            budget,
            slow,
            script: None,
        };
        // A closed queue means the connection failed before this job was taken: never sent.
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job).await {
            let cause = UpstreamError::new(self.addr.clone(), Kind::Lost(Lost::Closed));
            let _ = job
                .reply
                .send(Err(NoReply::NotSent(Arc::new(cause)).into()));
        }
        rx
    }

    /// From now on, the connection's push frames go to `sink` (`None`: dropped, as before).
    pub fn track(&self, sink: Option<Arc<dyn PushSink>>) {
        self.sink.store(sink.map(Arc::new));
    }

    /// The connection failed: nothing sent on it will be answered any more.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Give the connection back: once the replies still owed on it are read, it is reset and
    /// returns to the pool. If the client goes first (its `gone` token, given to
    /// [`PinnedPool::take`], is cancelled), the connection is closed instead.
    pub async fn release(mut self) {
        self.track(None);
        let ping = self
            // Named, so MONITOR can tell it from a client's PING (see `session::monitor`).
            .send_within(Bytes::from_static(RELEASE_PING), 1, None)
            .await;
        match self.mark.take() {
            None => {
                let _ = self.last.send(ping);
            }
            // Held until every reply owed is in: the PING's comes after them.
            Some(mark) => {
                let (tx, rx) = oneshot::channel();
                let _ = self.last.send(rx);
                tokio::spawn(async move {
                    if let Ok(reply) = ping.await {
                        let _ = tx.send(reply);
                    }
                    drop(mark);
                });
            }
        }
    }

    /// Hold `mark` while the lease lasts (see [`Pinned::release`]).
    pub fn hold(&mut self, mark: super::cluster::replicas::WriteMark) {
        self.mark = Some(mark);
    }
}

/// An upstream connection in monitor mode: read its lines from `read`; dropped, it closes.
pub struct Monitor {
    pub(crate) read: BoxRead,
    /// The upstream's configured address (how [`super::own`] tells its connections from another
    /// upstream's).
    pub(crate) upstream: Arc<str>,
    /// Held for as long as the monitor lives (its drop shuts the connection down); the relay
    /// writes on it only the PING that ends it.
    pub(crate) write: BoxWrite,
    _permit: OwnedSemaphorePermit,
}

struct Task {
    pool: Arc<PinnedPool>,
    proto: Protocol,
    id: Option<u64>,
    blockable: Arc<Blockable>,
    rx: mpsc::Receiver<Job>,
    read: BoxRead,
    write: BoxWrite,
    permit: OwnedSemaphorePermit,
    released: oneshot::Receiver<oneshot::Receiver<Reply>>,
    abandoned: CancellationToken,
    sink: Arc<SinkSlot>,
}

impl Task {
    async fn run(mut self) {
        let clean = self.serve().await;
        if !clean {
            // What the lease still queued was never written: its commands get "not sent" (the
            // session answers them so), not the silence of a reply that can never come, which
            // is kept for commands whose fate is unknown.
            self.rx.close();
            let cause = Arc::new(UpstreamError::new(
                handshake::addr(&self.pool.config),
                Kind::Lost(Lost::Closed),
            ));
            while let Ok(job) = self.rx.try_recv() {
                let _ = job.reply.send(Err(NoReply::NotSent(cause.clone()).into()));
            }
        }
        // Before the connection can carry anyone else's commands (see `blockable`).
        self.blockable.retire().await;
        metrics::upstream_pinned("in_use").decrement(1.0);
        if !clean {
            // Dropping the halves closes the socket; the permit goes back with them.
            return;
        }
        let config = self.pool.config.clone();
        match handshake::reset(&mut self.read, &mut self.write, &config, self.proto, NAME).await {
            Ok(()) => {
                metrics::upstream_pinned("idle").increment(1.0);
                self.pool.idle().push(Idle {
                    proto: self.proto,
                    id: self.id,
                    read: self.read,
                    write: self.write,
                    permit: self.permit,
                });
            }
            Err(e) => debug!(error = %e, "pinned connection failed its reset: closed"),
        }
    }

    /// Carry the lease's jobs until it ends. True if it ended released with every reply read.
    ///
    /// What it sees counts in the upstream's [`Activity`](super::activity::Activity): replies are signs of life, and a
    /// known-slow command (a script) written here makes the upstream's silence work, as on a
    /// shared connection, until it is answered or the connection fails. (A blocking command's
    /// silence says nothing either way: it carries no known-slow mark.)
    async fn serve(&mut self) -> bool {
        let inflight: InFlight = std::sync::Mutex::new(VecDeque::new());
        let mut unsent = VecDeque::new();
        let clean = self.serve_on(&inflight, &mut unsent).await;
        if !clean {
            // Taken off the queue, never written (see `run` for what is still queued).
            let cause = Arc::new(UpstreamError::new(
                handshake::addr(&self.pool.config),
                Kind::Lost(Lost::Closed),
            ));
            for job in unsent {
                let _ = job.reply.send(Err(NoReply::NotSent(cause.clone()).into()));
            }
        }
        let health = self.pool.health.clone();
        for slot in inflight.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if slot.slow {
                health.activity.slow_finished();
            }
        }
        clean
    }

    async fn serve_on(&mut self, inflight: &InFlight, unsent: &mut VecDeque<Job>) -> bool {
        let health = self.pool.health.clone();
        let activity = &health.activity;
        let mut buf = BytesMut::new();
        // No command deadline here, but the bound on what is in flight holds as on any connection.
        let max = self.pool.config.max_inflight;
        let permits = Semaphore::new(max);
        let sink = SlotSink(&self.sink);
        // Under the lease, a client that leaves drops its handle, which ends the write loop and
        // closes the connection below. (Not `abandoned`: a lease released just before its
        // client left must still be read to its end and kept.)
        let ended = tokio::select! {
            r = write_loop(&mut self.rx, unsent, &mut self.write, inflight, &permits, max, activity, None) => r,
            r = read_loop_pushing(&mut self.read, &mut buf, inflight, &permits, activity, &sink) => r,
        };
        if ended.is_some() {
            // Failed under the lease (a release ends the write loop cleanly first).
            sink.lost();
        }
        // The write loop ends once every handle is gone and all they sent is written.
        let Ok(last) = (match ended {
            None => self.released.try_recv(),
            Some(_) => return false,
        }) else {
            // Dropped without a release: the client's state is still on it.
            return false;
        };
        // Released: read what is still owed, up to the last PING's reply — unless the client
        // goes first while one of its own replies is still owed (a blocked BLPOP): then the
        // connection closes, so the server never pops for a client that cannot get it.
        let mut last = last;
        let abandoned = self.abandoned.clone();
        let r = tokio::select! {
            biased;
            _ = abandoned.cancelled() => None,
            _ = read_loop(&mut self.read, &mut buf, inflight, &permits, activity, None) => return false,
            r = &mut last => Some(r),
        };
        let r = match r {
            Some(r) => r,
            None => {
                // Gone with only respite's own PING owed: wait for it, within the deadline.
                if inflight.lock().unwrap_or_else(|p| p.into_inner()).len() > 1 {
                    return false;
                }
                let deadline = self.pool.config.command_timeout;
                tokio::select! {
                    _ = read_loop(&mut self.read, &mut buf, inflight, &permits, activity, None) => return false,
                    _ = tokio::time::sleep(deadline) => return false,
                    r = &mut last => r,
                }
            }
        };
        r.is_ok_and(|r| r.is_ok())
            && buf.is_empty()
            && inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }
}

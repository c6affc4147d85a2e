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
use super::activity::Activity;
use super::blockable::Blockable;
use super::job::{InFlight, Job, PushSink};
use super::pipe::{read_loop, write_loop};
use super::error::UpstreamError;
use super::handshake::{self, BoxRead, BoxWrite};
use super::pipe::read_loop_pushing;
use super::reply::{Reply, ReplyBudget};
use crate::config::UpstreamConfig;
use crate::metrics;
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};

/// Pinned connections are one client's own: their silence (a BLPOP waiting) says nothing of the
/// upstream's health, and they carry no known-slow mark, so what they see goes nowhere.
static UNTRACKED: LazyLock<Activity> = LazyLock::new(Activity::default);
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
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
}

impl PinnedPool {
    pub fn new(config: Arc<UpstreamConfig>) -> Arc<PinnedPool> {
        Arc::new(PinnedPool {
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
    pub async fn take(
        self: &Arc<Self>,
        proto: Protocol,
        gone: CancellationToken,
    ) -> Result<Pinned, PinError> {
        let found = {
            let mut idle = self.idle();
            idle.iter()
                .position(|c| c.proto == proto)
                .map(|i| idle.swap_remove(i))
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
                let opened = handshake::open(&self.config, proto, NAME)
                    .await
                    .map_err(PinError::Open)?;
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
                _write: opened.write,
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
        handshake::request(
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
            _write: opened.write,
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
        let (reply, rx) = oneshot::channel();
        let job = Job {
            bytes,
            count,
            reply,
            budget,
            slow: false,
        };
        // A closed queue means the connection failed: dropping `reply` tells the receiver.
        let _ = self.tx.send(job).await;
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
    pub async fn release(self) {
        self.track(None);
        let ping = self
            .send_within(Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), 1, None)
            .await;
        let _ = self.last.send(ping);
    }
}

/// An upstream connection in monitor mode: read its lines from `read`; dropped, it closes.
pub struct Monitor {
    pub(crate) read: BoxRead,
    _write: BoxWrite,
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
    async fn serve(&mut self) -> bool {
        let inflight: InFlight = std::sync::Mutex::new(VecDeque::new());
        let mut buf = BytesMut::new();
        // No command deadline here, but the bound on what is in flight holds as on any connection.
        let max = self.pool.config.max_inflight;
        let permits = Semaphore::new(max);
        let mut unsent = VecDeque::new();
        let sink = SlotSink(&self.sink);
        // Under the lease, a client that leaves drops its handle, which ends the write loop and
        // closes the connection below. (Not `abandoned`: a lease released just before its
        // client left must still be read to its end and kept.)
        let ended = tokio::select! {
            r = write_loop(&mut self.rx, &mut unsent, &mut self.write, &inflight, &permits, max, &UNTRACKED, None) => r,
            r = read_loop_pushing(&mut self.read, &mut buf, &inflight, &permits, &UNTRACKED, &sink) => r,
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
            _ = read_loop(&mut self.read, &mut buf, &inflight, &permits, &UNTRACKED, None) => return false,
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
                    _ = read_loop(&mut self.read, &mut buf, &inflight, &permits, &UNTRACKED, None) => return false,
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

//! Connections to the upstream (Redis, Valkey, Dragonfly): pools of multiplexed, auto-pipelined
//! connections, one pool per client protocol.
//!
//! Each connection is owned by one task. Its writer half takes whatever jobs are queued (from any
//! number of clients) and sends them in one write; for each it pushes a reply slot onto a FIFO. A job
//! is one or more commands a client pipelined together, and its slot collects that many replies. The
//! reader half finds reply boundaries with the [`ReplyScanner`] and completes the slot at the head of
//! the FIFO with the raw bytes of its replies. A watchdog fails the connection when the oldest slot
//! has waited past its deadline.
//!
//! [`health`] tracks whether the upstream answers: the connection tasks report their connections
//! coming and going, and a probe PINGs on a connection of its own.
//!
//! # Invariants
//! - Every command handed to [`Conn::send`] gets exactly one outcome: its own reply, or an error that
//!   names the cause (a job cut short gets the replies that did arrive, then the error). Replies are paired with slots strictly in the order the commands were written,
//!   and a connection whose pairing could be in doubt (a reply with no slot, a protocol error, a
//!   deadline passed) is closed, failing every slot still on it. No reply ever reaches the wrong request.
//! - A command is never written twice. Commands whose fate is unknown when a connection dies get an
//!   error, not a retry.
//! - Memory is bounded: each connection's queue and its number of commands in flight are bounded.
//!
//! This module must never interpret replies beyond finding their boundaries: what a reply means is
//! the session's business.
pub mod health;

use crate::config::{UpstreamAddr, UpstreamConfig};
use crate::logging::Repeats;
use crate::metrics;
use crate::protocol::{Protocol, ReplyScanner, encode};
use bytes::{Buf, Bytes, BytesMut};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why an upstream command has no reply. `Display` is the text after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Not sent: no connection to the upstream right now.
    #[error("upstream {addr} unavailable: {cause}")]
    Unavailable { addr: Arc<str>, cause: Arc<str> },
    /// Run, but its reply would take the client past `limits.max_reply_bytes` of replies it has
    /// not read: dropped, and the client is closed.
    #[error(
        "reply dropped: this client has more than {limit} bytes of replies unread (limits.max_reply_bytes); closing the connection"
    )]
    Overflow { limit: usize },
    /// Sent, or possibly sent, when the connection failed: its fate is unknown and it is not retried.
    #[error(
        "upstream connection lost with the command in flight ({cause}); it may or may not have run"
    )]
    Lost { cause: Arc<str> },
}

impl UpstreamError {
    pub fn kind(&self) -> metrics::ErrorKind {
        match self {
            UpstreamError::Lost { cause } if cause.starts_with("no reply within") => {
                metrics::ErrorKind::Timeout
            }
            UpstreamError::Overflow { .. } => metrics::ErrorKind::Refused,
            _ => metrics::ErrorKind::Upstream,
        }
    }
}

/// The outcome of a job: the raw bytes of all its replies, in order, or what arrived before a failure.
pub type Reply = Result<Bytes, Partial>;

/// A job that did not get all its replies: the first `count` arrived (`replies`), the rest failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub replies: Bytes,
    pub count: usize,
    pub error: UpstreamError,
}

impl Partial {
    /// The failure alone: for a caller that needs a reply which did not arrive.
    pub fn without_replies(self) -> Partial {
        self.error.into()
    }
}

impl From<UpstreamError> for Partial {
    fn from(error: UpstreamError) -> Self {
        Partial {
            replies: Bytes::new(),
            count: 0,
            error,
        }
    }
}

/// Commands on their way: their encoded bytes, how many they are, and where the replies go.
struct Job {
    bytes: Bytes,
    count: usize,
    reply: oneshot::Sender<Reply>,
    budget: Option<Arc<ReplyBudget>>,
}

/// A job written to the connection and waiting for its replies.
struct Slot {
    reply: oneshot::Sender<Reply>,
    count: usize,
    permits: u32,
    sent: Instant,
    budget: Option<Arc<ReplyBudget>>,
}

/// The bytes of replies one client is owed: received from the upstream, not yet taken by its
/// writer. A client that lets them pile up past the limit (pipelining reads of large values
/// without reading the replies) gets errors instead of the replies that would go over, and is
/// closed, as Redis closes a client past its output buffer limit.
#[derive(Debug)]
pub struct ReplyBudget {
    owed: AtomicUsize,
    limit: usize,
    exceeded: std::sync::atomic::AtomicBool,
}

impl ReplyBudget {
    pub fn new(limit: usize) -> ReplyBudget {
        ReplyBudget {
            owed: AtomicUsize::new(0),
            limit,
            exceeded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Count `n` more bytes owed; false (and exceeded from now on) if that goes over the limit,
    /// in which case they are not counted.
    fn charge(&self, n: usize) -> bool {
        if self.exceeded.load(Ordering::Relaxed) {
            return false;
        }
        let owed = self.owed.fetch_add(n, Ordering::AcqRel) + n;
        if owed > self.limit {
            self.owed.fetch_sub(n, Ordering::AcqRel);
            self.exceeded.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// The writer took `n` bytes of replies.
    pub fn release(&self, n: usize) {
        self.owed.fetch_sub(n, Ordering::AcqRel);
    }

    /// The client went over its limit: it is to be closed.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

type InFlight = Mutex<VecDeque<Slot>>;

/// What the upstream said about itself in its HELLO reply; respite's own HELLO echoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server: String,
    pub version: String,
}

/// The upstream side: a pool of connections for RESP2 clients and one for RESP3 clients.
pub struct Upstream {
    config: Arc<UpstreamConfig>,
    resp2: Vec<Conn>,
    resp3: Vec<Conn>,
    live: Arc<AtomicUsize>,
    info: Arc<RwLock<Option<ServerInfo>>>,
    health: Arc<health::Health>,
}

/// A handle on one multiplexed upstream connection (its managing task lives as long as handles do).
#[derive(Clone)]
pub struct Conn {
    tx: mpsc::Sender<Job>,
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
        let (reply, rx) = oneshot::channel();
        let job = Job {
            bytes,
            count,
            reply,
            budget,
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
        tokio::spawn(health::probe(
            health.clone(),
            config.clone(),
            shutdown.clone(),
        ));
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

    pub fn health(&self) -> &Arc<health::Health> {
        &self.health
    }
}

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

struct ConnTask {
    config: Arc<UpstreamConfig>,
    proto: Protocol,
    slot: usize,
    rx: mpsc::Receiver<Job>,
    live: Arc<AtomicUsize>,
    info: Arc<RwLock<Option<ServerInfo>>>,
    health: Arc<health::Health>,
    /// Health transitions, to fail the connection on `down` and to cut a backoff short on
    /// `recovering`.
    state: watch::Receiver<health::State>,
    shutdown: CancellationToken,
}

fn proto_label(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Resp2 => "resp2",
        Protocol::Resp3 => "resp3",
    }
}

impl ConnTask {
    async fn run(mut self) {
        let addr: Arc<str> = self.config.url.addr.to_string().into();
        let label = proto_label(self.proto);
        let mut failures: u32 = 0;
        loop {
            // Transitions from here on are news to the backoff below.
            self.state.borrow_and_update();
            let cause: Arc<str> = match self.connect().await {
                Ok((r, w)) => {
                    if failures > 0 {
                        info!(upstream = %addr, protocol = label, slot = self.slot, "upstream connection restored");
                    }
                    failures = 0;
                    self.live.fetch_add(1, Ordering::Relaxed);
                    metrics::upstream_connections(label).increment(1.0);
                    self.health.report(health::Event::ConnUp, None);
                    let cause = self.serve(r, w).await;
                    self.live.fetch_sub(1, Ordering::Relaxed);
                    metrics::upstream_connections(label).decrement(1.0);
                    match cause {
                        None => return, // every handle dropped: the proxy is gone
                        Some(c) => {
                            self.health.report(health::Event::ConnDown, Some(&c));
                            c.into()
                        }
                    }
                }
                Err(e) => {
                    self.health.attempt_failed(&e);
                    e.into()
                }
            };
            if self.shutdown.is_cancelled() && self.rx.is_closed() {
                return;
            }
            failures = failures.saturating_add(1);
            metrics::upstream_reconnect(label);
            let delay = backoff(
                self.config.backoff_base,
                self.config.backoff_max,
                failures,
                &mut rand::rng(),
            );
            // Once per 30 s for all slots together: an outage is one story, not a line per attempt
            // per connection (31 lines in 20 s with the near cache's, before).
            static REPEATS: Repeats = Repeats::new(Duration::from_secs(30));
            if let Some(suppressed) = REPEATS.check() {
                warn!(upstream = %addr, protocol = label, slot = self.slot, %cause, retry_in = ?delay, failures, suppressed, "upstream connection failed");
            }
            // Until the next attempt, fail fast: nothing is queued behind a dead connection.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    // The probe has an answer again: reconnect now, not at the end of a backoff
                    // grown during the outage, so recovery takes a probe, not backoff_max.
                    _ = became(&mut self.state, |s| s == health::State::Recovering) => break,
                    job = self.rx.recv() => match job {
                        Some(job) => {
                            let e = UpstreamError::Unavailable { addr: addr.clone(), cause: cause.clone() };
                            let _ = job.reply.send(Err(e.into()));
                        }
                        None => return,
                    },
                }
            }
        }
    }

    /// Connect and handshake; records what the upstream says about itself.
    async fn connect(&self) -> Result<(BoxRead, BoxWrite), String> {
        let (r, w, info) = connect(&self.config, self.proto).await?;
        if let Ok(mut slot) = self.info.write() {
            *slot = Some(info);
        }
        Ok((r, w))
    }

    /// Run one established connection until it fails (`Some(cause)`) or every handle is dropped
    /// (`None`). On return every slot still in flight has been completed with an error.
    async fn serve(&mut self, read: BoxRead, write: BoxWrite) -> Option<String> {
        let inflight: InFlight = Mutex::new(VecDeque::new());
        // The reader keeps the replies of a partly answered slot here until the rest arrive.
        let mut buf = BytesMut::new();
        let permits = Semaphore::new(self.config.max_inflight);
        self.state.borrow_and_update();
        let fail_on_down = self.health.fail_inflight_on_down();
        // Jobs taken off the queue but not yet written: if the connection fails first, they are
        // known not to have been sent.
        let mut unsent = VecDeque::new();
        let result = tokio::select! {
            r = write_loop(&mut self.rx, &mut unsent, write, &inflight, &permits, self.config.max_inflight) => r,
            r = read_loop(read, &mut buf, &inflight, &permits) => r,
            r = watchdog(&inflight, self.config.command_timeout) => r,
            // Local-only mode took over: what is in flight here fails now instead of holding its
            // clients until the command deadline.
            _ = became(&mut self.state, |s| s == health::State::Down), if fail_on_down => {
                Some("upstream is down (health probes failed); local-only mode took over".into())
            }
        };
        let cause = match &result {
            Some(c) => c.clone(),
            None => "respite is shutting down".to_string(),
        };
        let lost = UpstreamError::Lost {
            cause: cause.clone().into(),
        };
        let not_sent = UpstreamError::Unavailable {
            addr: self.config.url.addr.to_string().into(),
            cause: format!("{cause}; the command was not sent").into(),
        };
        for job in unsent {
            let _ = job.reply.send(Err(not_sent.clone().into()));
        }
        let slots = std::mem::take(&mut *inflight.lock().unwrap_or_else(|p| p.into_inner()));
        let mut partial = Some(std::mem::take(&mut buf));
        for slot in slots {
            // Only the head slot can have replies waiting in the buffer.
            let (replies, count) = match partial.take() {
                Some(b) => {
                    let (count, len) = completed_prefix(&b, slot.count);
                    (b.freeze().slice(..len), count)
                }
                None => (Bytes::new(), 0),
            };
            let _ = slot.reply.send(Err(Partial {
                replies,
                count,
                error: lost.clone(),
            }));
        }
        result
    }
}

/// Connect to the upstream and handshake as `respite` (see [`connect_as`]). Shared by the pools
/// and the near cache's tracking connections.
pub(crate) async fn connect(
    config: &UpstreamConfig,
    proto: Protocol,
) -> Result<(BoxRead, BoxWrite, ServerInfo), String> {
    connect_as(config, proto, "respite").await
}

/// Connect to the upstream and handshake: HELLO with `proto`, the URL's credentials and the
/// client name `name`, then SELECT.
pub(crate) async fn connect_as(
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
) -> Result<(BoxRead, BoxWrite, ServerInfo), String> {
    let timeout = config.connect_timeout;
    let connect = async {
        let (mut r, mut w): (BoxRead, BoxWrite) = match &config.url.addr {
            UpstreamAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            UpstreamAddr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        let url = &config.url;
        let mut hello: Vec<Vec<u8>> =
            vec![b"HELLO".to_vec(), proto.version().to_string().into_bytes()];
        if let Some(pass) = &url.password {
            hello.push(b"AUTH".to_vec());
            hello.push(
                url.username
                    .as_deref()
                    .unwrap_or("default")
                    .as_bytes()
                    .to_vec(),
            );
            hello.push(pass.as_bytes().to_vec());
        }
        hello.extend([b"SETNAME".to_vec(), name.as_bytes().to_vec()]);
        let mut out = BytesMut::new();
        encode::command(&mut out, &hello);
        let mut expect = 1;
        if url.db != 0 {
            encode::command(
                &mut out,
                &[b"SELECT".to_vec(), url.db.to_string().into_bytes()],
            );
            expect += 1;
        }
        w.write_all(&out)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let replies = read_replies(&mut r, proto, expect).await?;
        let info = server_info(&replies[0])?;
        for reply in &replies[1..] {
            if let Some(err) = error_text(reply) {
                return Err(format!("SELECT {}: {err}", url.db));
            }
        }
        Ok::<_, String>((r, w, info))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// Coalesce queued jobs into one write. Returns `None` when every handle is gone.
async fn write_loop(
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut VecDeque<Job>,
    mut write: BoxWrite,
    inflight: &InFlight,
    permits: &Semaphore,
    max_inflight: usize,
) -> Option<String> {
    const BATCH: usize = 1024;
    let (batch_commands, batch_bytes) = metrics::batch_histograms();
    let mut received = Vec::with_capacity(BATCH);
    let mut out = BytesMut::new();
    loop {
        if rx.recv_many(&mut received, BATCH).await == 0 {
            return None;
        }
        jobs.extend(received.drain(..));
        if jobs.len() < BATCH {
            // Auto-pipelining: let every client task that is ready right now queue its commands
            // before this write goes out, so one write carries many clients' commands. Costs one
            // trip through the scheduler, not a timer.
            tokio::task::yield_now().await;
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push_back(job),
                    Err(_) => break,
                }
            }
        }
        let commands: usize = jobs.iter().map(|j| j.count).sum();
        let now = Instant::now();
        let mut total = 0;
        // A job leaves `jobs` only once its slot is in flight (see `serve`).
        while let Some(next) = jobs.front() {
            // Bound what is in flight: each slot holds min(count, bound) permits. Out of permits,
            // first send what is already queued here (its replies are what frees permits), then
            // wait; meanwhile later jobs stay in the channel and their senders wait in turn.
            let weight = next.count.min(max_inflight) as u32;
            match permits.try_acquire_many(weight) {
                Ok(p) => p.forget(),
                Err(_) => {
                    if let Err(e) = write.write_all(&out).await {
                        return Some(format!("write failed: {e}"));
                    }
                    out.clear();
                    match permits.acquire_many(weight).await {
                        Ok(p) => p.forget(),
                        Err(_) => return Some("internal: permits closed".into()),
                    }
                }
            }
            let job = jobs.pop_front().expect("the front job");
            total += job.bytes.len();
            out.extend_from_slice(&job.bytes);
            // The slot goes in before its bytes go out, so the reader always finds it.
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(Slot {
                    reply: job.reply,
                    count: job.count,
                    permits: weight,
                    sent: now,
                    budget: job.budget,
                });
        }
        batch_commands.record(commands as f64);
        batch_bytes.record(total as f64);
        if let Err(e) = write.write_all(&out).await {
            return Some(format!("write failed: {e}"));
        }
        out.clear();
        // Large one-off batches should not pin their buffer forever.
        if out.capacity() > 1 << 20 {
            out = BytesMut::new();
        }
    }
}

/// Pair replies with slots, oldest first: a slot is complete once its `count` replies are in.
async fn read_loop(
    mut read: BoxRead,
    buf: &mut BytesMut,
    inflight: &InFlight,
    permits: &Semaphore,
) -> Option<String> {
    let mut scanner = ReplyScanner::new();
    // Replies of the head slot already scanned: their count and total length at the front of buf.
    let mut scanned = 0;
    let mut have = 0;
    let error_replies = metrics::upstream_error_replies();
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match read.read_buf(buf).await {
            Ok(0) => return Some("upstream closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Some(format!("read failed: {e}")),
        }
        let mut done = 0;
        let mut errors = 0;
        loop {
            let found = match scanner.scan(&buf[scanned..]) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return Some(e.to_string()),
            };
            if found.push {
                // Out of band (e.g. a tracking invalidation): not the answer to any request.
                debug!("ignoring push frame on a shared connection");
                let mut tail = buf.split_off(scanned);
                tail.advance(found.len);
                buf.extend_from_slice(&tail);
                continue;
            }
            // `-` (RESP2 and RESP3) or `!` (a RESP3 blob error) opens an error reply.
            errors += matches!(buf[scanned], b'-' | b'!') as u64;
            scanned += found.len;
            have += 1;
            let mut q = inflight.lock().unwrap_or_else(|p| p.into_inner());
            let Some(head) = q.front() else {
                return Some("reply with no request in flight".into());
            };
            if have < head.count {
                continue;
            }
            let slot = q.pop_front().expect("head exists");
            drop(q);
            // The client may have gone: its replies are dropped, the pairing holds.
            let replies = buf.split_to(scanned).freeze();
            let reply = match &slot.budget {
                Some(b) if !b.charge(replies.len()) => {
                    Err(Partial::from(UpstreamError::Overflow { limit: b.limit() }))
                }
                _ => Ok(replies),
            };
            let _ = slot.reply.send(reply);
            done += slot.permits as usize;
            scanned = 0;
            have = 0;
        }
        if done > 0 {
            permits.add_permits(done);
        }
        if errors > 0 {
            error_replies.increment(errors);
        }
    }
}

/// How many complete replies (at most `max`) the front of `buf` holds, and their total length.
fn completed_prefix(buf: &[u8], max: usize) -> (usize, usize) {
    let mut scanner = ReplyScanner::new();
    let (mut count, mut len) = (0, 0);
    while count < max {
        match scanner.scan(&buf[len..]) {
            Ok(Some(s)) if !s.push => {
                len += s.len;
                count += 1;
            }
            _ => break,
        }
    }
    (count, len)
}

/// Fail the connection when its oldest command has waited past the deadline: everything behind it
/// on this connection is stuck too, and only closing it can free them.
async fn watchdog(inflight: &InFlight, deadline: Duration) -> Option<String> {
    let tick = (deadline / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let oldest = inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|slot| slot.sent);
        if let Some(t) = oldest
            && t.elapsed() > deadline
        {
            return Some(format!("no reply within {deadline:?}"));
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

/// Exponential backoff with full jitter over the upper half: attempt n waits between d/2 and d,
/// d = min(max, base·2ⁿ⁻¹), so a fleet of proxies does not reconnect in lockstep.
pub fn backoff(base: Duration, max: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    half + Duration::from_nanos(rng.random_range(0..=half.as_nanos() as u64))
}

/// Read `n` complete replies during the handshake (not the hot path: full decoding is fine).
pub(crate) async fn read_replies(
    r: &mut BoxRead,
    proto: Protocol,
    n: usize,
) -> Result<Vec<redis_protocol::resp3::types::OwnedFrame>, String> {
    use redis_protocol::resp3::decode::complete::decode;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        match decode(&buf) {
            Ok(Some((frame, len))) => {
                let _ = buf.split_to(len);
                out.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(format!("handshake: bad reply ({proto:?}): {e:?}")),
        }
        if r.read_buf(&mut buf)
            .await
            .map_err(|e| format!("handshake: {e}"))?
            == 0
        {
            return Err("handshake: upstream closed the connection".into());
        }
    }
    Ok(out)
}

pub(crate) fn error_text(frame: &redis_protocol::resp3::types::OwnedFrame) -> Option<String> {
    use redis_protocol::resp3::types::OwnedFrame;
    match frame {
        OwnedFrame::SimpleError { data, .. } => Some(data.clone()),
        OwnedFrame::BlobError { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
        _ => None,
    }
}

/// Pick `server` and `version` out of a HELLO reply (a map in RESP3, a flat array in RESP2).
fn server_info(frame: &redis_protocol::resp3::types::OwnedFrame) -> Result<ServerInfo, String> {
    use redis_protocol::resp3::types::OwnedFrame;
    if let Some(err) = error_text(frame) {
        return Err(format!("HELLO refused: {err}"));
    }
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BlobString { data, .. } | OwnedFrame::SimpleString { data, .. } => {
            Some(String::from_utf8_lossy(data).into_owned())
        }
        _ => None,
    };
    let pairs: Vec<(&OwnedFrame, &OwnedFrame)> = match frame {
        OwnedFrame::Map { data, .. } => data.iter().collect(),
        OwnedFrame::Array { data, .. } => data
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        _ => return Err("HELLO: unexpected reply".into()),
    };
    let mut info = ServerInfo {
        server: "redis".into(),
        version: "7.0.0".into(),
    };
    for (k, v) in pairs {
        match text(k).as_deref() {
            Some("server") => info.server = text(v).unwrap_or(info.server),
            Some("version") => info.version = text(v).unwrap_or(info.version),
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut rng = rand::rng();
        let base = Duration::from_millis(50);
        let max = Duration::from_millis(2000);
        for attempt in 1..40 {
            let d = backoff(base, max, attempt, &mut rng);
            let ceiling = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {attempt}: {d:?} vs {ceiling:?}"
            );
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(base, max, 10, &mut rng)).collect();
        assert!(spread.len() > 10, "jitter should spread retries");
    }
}

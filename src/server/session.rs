//! One client connection: frame its requests, dispatch each, write replies back in request order.
//!
//! # Invariants
//! - Every request framed from a client gets exactly one reply, written in the order the requests
//!   arrived, whatever path each took (answered here, forwarded upstream, refused). The reader pushes
//!   one [`Pending`] per request into a FIFO channel *at the moment it dispatches that request*; the
//!   writer resolves them strictly in channel order. Nothing else writes to the client socket.
//! - A client's forwarded commands all go through one upstream connection per protocol, so they run
//!   on the upstream in the order the client sent them; a protocol switch (HELLO, RESET) first waits
//!   for every earlier reply ([`Pending::Barrier`]).
//! - Memory per client is bounded: at most `limits.max_inflight_per_client` requests are pending;
//!   past that the reader stops reading and TCP pushes back on the client. An idle client holds no
//!   read or write buffer.
mod multi;

use super::fifo::Fifo;
use super::io::{ClientSocket, RawStream, SCRATCH};
use super::{Accepted, Shared, builtin};
use crate::cache::{Fetched, Lookup, NearCache, ReadKind};
use crate::command::{self, AclCategories, CommandSpec, Flags, Route};
use crate::engine::Engine;
use crate::metrics::{self, ErrorKind};
use crate::policy::{self, NamespaceRun, NamespaceStep, Plan, ReplyRewrite, Tenant};
use crate::protocol::ReplyScanner;
use crate::protocol::{Framer, Protocol, Request, encode};
use crate::upstream::{Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};

use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::debug;

pub(crate) enum ClientStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

enum Either {
    Tcp(ClientSocket<std::net::TcpStream>),
    Unix(ClientSocket<std::os::unix::net::UnixStream>),
}

/// A reply owed to the client, in request order.
pub(crate) enum Pending {
    /// Already known (answered by respite, or an error).
    Ready(Bytes),
    /// The replies of `count` commands sent upstream together.
    Upstream {
        rx: oneshot::Receiver<Reply>,
        count: usize,
        keep: Keep,
    },
    /// A read answered by a near-cache fill in flight.
    Cached {
        rx: oneshot::Receiver<Fetched>,
        proto: Protocol,
    },
    /// The writes in the upstream job just before this one have been answered: invalidate
    /// their keys in the near cache again (a fill may have raced them) and count them done.
    Written(Box<Written>),
    /// Signalled once every earlier reply has been written: nothing is in flight any more.
    Barrier(oneshot::Sender<()>),
    /// Flush everything before this, then close the connection.
    Close,
}

/// Which of a job's replies the client sees.
pub(crate) enum Keep {
    /// All of them, as they came.
    All,
    /// Only the one after `skip` replies (the command's own; the others answer what respite
    /// added around it: policy follow-ups such as default TTLs, a transaction's MULTI and
    /// QUEUED), rewritten for the tenant's namespace.
    First {
        skip: usize,
        rewrite: ReplyRewrite,
        prefix: Bytes,
        proto: Protocol,
    },
}

/// Writes bound upstream whose replies are not in yet, as the near cache needs to know them.
#[derive(Default)]
pub(crate) struct Written {
    /// Their keys, as the upstream names them.
    keys: Vec<Bytes>,
    /// One of them empties the keyspace (FLUSHALL, FLUSHDB, SWAPDB).
    flush: bool,
    /// How many of them may write keys they do not name (scripts, flushes).
    wide: usize,
    count: usize,
}

/// A client's writes sent upstream and not answered yet, for the near cache: the client's reads
/// of those keys bypass the cache (and all its reads, while a write of unknown reach is out), so
/// it always reads its own writes, while its reads of other keys still hit.
#[derive(Default)]
pub(crate) struct Unanswered(std::sync::Mutex<UnansweredKeys>);

#[derive(Default)]
struct UnansweredKeys {
    keys: std::collections::HashMap<Bytes, usize>,
    wide: usize,
}

impl Unanswered {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnansweredKeys> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, keys: &[Bytes], wide: bool) {
        let mut u = self.lock();
        for k in keys {
            *u.keys.entry(k.clone()).or_default() += 1;
        }
        u.wide += wide as usize;
    }

    fn answered(&self, written: &Written) {
        let mut u = self.lock();
        for k in &written.keys {
            if let Some(n) = u.keys.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    u.keys.remove(k);
                }
            }
        }
        u.wide -= written.wide;
        if u.keys.is_empty() && u.keys.capacity() > 64 {
            // A burst of writes should not pin its table.
            u.keys = Default::default();
        }
    }

    /// Whether a read of `keys` (as the client names them, under `prefix`) must bypass the cache.
    fn blocks<'a>(&self, prefix: &[u8], mut keys: impl Iterator<Item = &'a Bytes>) -> bool {
        let u = self.lock();
        if u.wide > 0 {
            return true;
        }
        if u.keys.is_empty() {
            return false;
        }
        keys.any(|k| u.keys.contains_key(&crate::cache::upstream_key(prefix, k)))
    }
}

/// Per-client state that respite itself keeps.
pub(crate) struct Client {
    pub id: u64,
    pub peer: String,
    pub local: String,
    pub proto: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub user: String,
    pub db: u32,
    pub created: std::time::Instant,
    pub last_command: &'static str,
    /// Whose rules apply, when tenants are configured; `None` there means not yet authenticated.
    pub tenant: Option<Arc<Tenant>>,
}

/// What the reader does after a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// Refuse a client with one error reply (e.g. over `listen.max_clients`), then close. The reply is
/// small enough for an empty socket buffer, so one non-blocking write is enough.
pub(crate) async fn refuse(conn: Accepted, msg: &str) {
    use std::io::Write;
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    metrics::error(ErrorKind::Refused);
    let _ = match &conn.stream {
        ClientStream::Tcp(s) => (&*s).write(&out),
        ClientStream::Unix(s) => (&*s).write(&out),
    };
}

pub(crate) async fn serve(conn: Accepted, id: u64, shared: Arc<Shared>) {
    let gauge = metrics::client_connections();
    gauge.increment(1.0);
    let client = Client {
        id,
        peer: conn.peer,
        local: conn.local,
        proto: Protocol::Resp2,
        name: None,
        lib_name: None,
        lib_ver: None,
        user: "default".into(),
        db: shared
            .config
            .upstream
            .as_ref()
            .map(|u| u.url.db)
            .unwrap_or(0),
        created: std::time::Instant::now(),
        last_command: "NULL",
        tenant: shared
            .tenants
            .as_ref()
            .and_then(|t| t.default_tenant().cloned()),
    };
    // Registered once, as a readiness-driven socket (see `io`).
    let registered = match conn.stream {
        ClientStream::Tcp(s) => ClientSocket::new(s).map(Either::Tcp),
        ClientStream::Unix(s) => ClientSocket::new(s).map(Either::Unix),
    };
    match registered {
        Ok(Either::Tcp(sock)) => run(sock, client, shared).await,
        Ok(Either::Unix(sock)) => run(sock, client, shared).await,
        Err(e) => debug!(error = %e, "could not register the client socket"),
    }
    gauge.decrement(1.0);
}

async fn run<S: RawStream>(sock: ClientSocket<S>, client: Client, shared: Arc<Shared>) {
    let fifo = Fifo::new(shared.config.max_inflight_per_client);
    let unanswered_writes = Unanswered::default();
    let cache = shared.cache.clone();
    let budget = shared
        .upstream
        .as_ref()
        .map(|_| Arc::new(ReplyBudget::new(shared.config.max_reply_bytes)));
    let reader = Reader {
        client,
        shared,
        fifo: &fifo,
        group: BytesMut::new(),
        group_count: 0,
        written: Written::default(),
        budget: budget.clone(),
        multi: None,
        ready: BytesMut::new(),
        ready_count: 0,
        unanswered_writes: &unanswered_writes,
        cache_now: None,
    };
    // Both halves run in this task: the reader stops when the client closes, sends QUIT or a
    // fatal error, or the proxy drains; its end drops the FIFO's sender, and the writer then
    // flushes what is owed and finishes.
    let read = async {
        reader.read_loop(&sock).await;
        fifo.close();
    };
    let writer = write_loop(
        &sock,
        &fifo,
        cache.as_deref(),
        &unanswered_writes,
        budget.as_deref(),
    );
    let ((), ()) = tokio::join!(read, writer);
    debug!("client closed");
}

pub(crate) struct Reader<'f> {
    client: Client,
    shared: Arc<Shared>,
    fifo: &'f Fifo<Pending>,
    /// Forwarded commands not yet sent upstream, encoded back to back, and how many.
    group: BytesMut,
    group_count: usize,
    /// The writes among them (near cache only).
    written: Written,
    /// Bytes of upstream replies this client has not taken yet, against limits.max_reply_bytes.
    budget: Option<Arc<ReplyBudget>>,
    /// A transaction being queued (MULTI … EXEC), see [`multi`].
    multi: Option<Box<multi::Multi>>,
    /// Replies already known (near-cache hits) not yet queued, back to back, and how many.
    /// Whatever the group holds came after them.
    ready: BytesMut,
    ready_count: usize,
    /// This client's writes sent upstream and not answered yet (near cache only): while there
    /// are any, its reads bypass the cache, so it always reads its own writes.
    unanswered_writes: &'f Unanswered,
    /// The near cache's clock, read once per batch of requests (and again after any wait).
    cache_now: Option<u64>,
}

/// Most commands, and bytes, in one group: big pipelines still stream to the upstream.
const GROUP_MAX: usize = 128;
const GROUP_BYTES: usize = 64 * 1024;

impl Reader<'_> {
    async fn read_loop<S: RawStream>(mut self, sock: &ClientSocket<S>) {
        let limits = self.shared.config.limits;
        let mut framer = Framer::new(limits);
        let mut buf = BytesMut::new();
        let draining = self.shared.draining.clone();
        // One registration for the whole session, polled once to register this task's waker (a
        // task's waker stays the same for its life); after that only the token's flag is read,
        // which is set before the waiters are woken. A fresh `cancelled()` per read, or a
        // re-poll of this one, would lock the token's waiter list every time the session wakes,
        // twice per unpipelined request (callgrind: about 500 instructions).
        let drained = draining.cancelled();
        tokio::pin!(drained);
        let mut registered = false;
        // Small requests fit a small buffer, which the allocator recycles cheaply; a read that
        // fills it asks for a bigger one next time.
        let mut read_size = 1024;
        loop {
            loop {
                if self.budget.as_ref().is_some_and(|b| b.exceeded()) {
                    // The writer is closing this client (limits.max_reply_bytes).
                    return;
                }
                match framer.next(&mut buf) {
                    Ok(Some(mut req)) => {
                        let flow = self.handle(&mut req).await;
                        framer.recycle(req.args);
                        if flow == Flow::Close {
                            return self.close().await;
                        }
                    }
                    Ok(None) => {
                        self.send_group().await;
                        break;
                    }
                    Err(e) => {
                        metrics::error(ErrorKind::Protocol);
                        self.reply_error(&format!("ERR {}", e.message)).await;
                        if e.fatal {
                            return self.close().await;
                        }
                    }
                }
            }
            if buf.len() > limits.max_query_buffer {
                metrics::error(ErrorKind::Protocol);
                let msg = format!(
                    "ERR unfinished request of {} bytes is over the limit of {} (limits.max_query_buffer)",
                    buf.len(),
                    limits.max_query_buffer
                );
                self.reply_error(&msg).await;
                return self.close().await;
            }
            if buf.is_empty() {
                // Idle clients keep no buffer: the allocation goes once its requests are done.
                buf = BytesMut::new();
            }
            // A large argument in progress: reserve all of it at once (bounded by the framer's
            // limits) rather than growing and copying the buffer step by step.
            // Otherwise the read allocates only once data is there: idle clients hold no buffer.
            let want = match framer.needed_len() {
                Some(n) if n > buf.len() + read_size => {
                    buf.reserve(n - buf.len());
                    n - buf.len()
                }
                _ => read_size,
            };
            // Each read takes at most what the thread's scratch buffer holds (see `io`).
            let want = want.min(SCRATCH);
            tokio::select! {
                biased;
                r = sock.read(&mut buf, want) => {
                    // A new batch: the near cache's clock is read afresh.
                    self.cache_now = None;
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) if n == want => read_size = (read_size * 4).min(64 * 1024),
                        Ok(_) => {}
                    }
                }
                _ = std::future::poll_fn(|cx| {
                    if registered && !draining.is_cancelled() {
                        return std::task::Poll::Pending;
                    }
                    registered = true;
                    drained.as_mut().poll(cx)
                }) => return self.close().await,
            }
        }
    }

    async fn close(&mut self) {
        self.push(Pending::Close).await
    }

    /// Queue a reply; any group of forwarded commands before it goes first, keeping the order.
    async fn push(&mut self, p: Pending) {
        self.send_group().await;
        if self.fifo.full_for(1) {
            // About to wait for the client: the batch's clock reading will be old by then.
            self.cache_now = None;
        }
        self.fifo.push(p, 1).await
    }

    pub(super) async fn reply(&mut self, out: BytesMut) {
        self.push(Pending::Ready(out.freeze())).await
    }

    async fn reply_error(&mut self, msg: &str) {
        if let Some(t) = &self.client.tenant {
            policy::metrics::error(t);
        }
        self.push(Pending::Ready(error_bytes(msg))).await
    }

    /// Wait until every reply owed before this point has been written.
    pub(super) async fn barrier(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.push(Pending::Barrier(tx)).await;
        let _ = rx.await;
    }

    async fn handle(&mut self, req: &mut Request) -> Flow {
        let spec = match command::resolve(&req.args) {
            Ok(spec) => spec,
            Err(e) => {
                metrics::error(match e {
                    command::CommandError::Arity(_) => ErrorKind::Arity,
                    _ => ErrorKind::UnknownCommand,
                });
                self.queue_failed();
                self.reply_error(&format!("ERR {e}")).await;
                return Flow::Continue;
            }
        };
        metrics::command(spec).increment(1);
        self.client.last_command = spec.name;
        let route = command::route(spec, &req.args);
        // Answered by respite itself: the commands the session handles, INFO where the
        // upstream's would say too much, and transactions (queued here).
        let info_here = spec.name == "info"
            && (self.shared.upstream.is_none()
                || self.client.tenant.as_ref().is_some_and(|t| t.has_prefix()));
        let transaction =
            self.multi.is_some() || matches!(spec.name, "multi" | "exec" | "discard" | "unwatch");
        if self.shared.tenants.is_some() && !spec.flags.contains(Flags::NO_AUTH) {
            let Some(tenant) = &self.client.tenant else {
                metrics::error(ErrorKind::Refused);
                self.reply_error(policy::NOAUTH).await;
                return Flow::Continue;
            };
            policy::metrics::command(tenant);
            if (route == Route::Proxy || info_here || transaction) && !tenant.permits(spec) {
                let e = tenant.no_perm(spec);
                policy::metrics::refusal(&tenant.name, &e);
                self.queue_failed();
                self.reply_error(&e.to_string()).await;
                return Flow::Continue;
            }
        }
        if transaction {
            // Commands that end or leave a transaction are answered as usual.
            if !matches!(spec.name, "quit" | "reset") {
                // Boxed: rare, and inline its state would grow every idle session.
                Box::pin(self.transaction(spec, req, route)).await;
                return Flow::Continue;
            }
            // QUIT and RESET discard the transaction, as in Redis.
            self.multi = None;
        }
        if info_here {
            let out = builtin::tenant_info(self, &req.args);
            self.reply(out).await;
            return Flow::Continue;
        }
        match route {
            Route::Forward => {
                match self.client.tenant.clone() {
                    // Boxed for the same reason as local answers: its state is large.
                    Some(tenant) => Box::pin(self.forward_for(tenant, spec, req)).await,
                    None => self.forward(spec, req).await,
                }
                Flow::Continue
            }
            // Boxed: rare next to forwarding, and large; inline it would grow every idle session.
            Route::Proxy => Box::pin(builtin::answer(self, spec, req)).await,
            Route::Stateful(why) => {
                metrics::error(ErrorKind::Refused);
                let msg = format!(
                    "ERR {} is not supported by respite yet: {why} needs a dedicated upstream connection",
                    spec.name.replace('|', " ").to_uppercase()
                );
                self.reply_error(&msg).await;
                Flow::Continue
            }
        }
    }

    /// Add a command to the group bound upstream. Consecutive forwarded commands of one read
    /// travel as one job with one reply slot: one channel send and one wake-up for the lot.
    async fn forward(&mut self, spec: &'static CommandSpec, req: &Request) {
        if let Some(local) = self.shared.answerer(spec) {
            if let Some(reply) = self.stale_read(spec, &req.args, &[]) {
                return self.push(Pending::Ready(reply)).await;
            }
            // Standalone or local-only: the local engine answers at once (in order with
            // everything else).
            let reply =
                local.run(|e| e.execute(spec, &req.args, self.client.proto, unix_ms() as u64));
            return self.push(Pending::Ready(reply)).await;
        }
        if self.shared.cache.is_some() {
            if self.through_cache(spec, &req.args, &[]).await {
                return;
            }
            self.written_through(spec, &req.args, &[]);
        }
        append_request(&mut self.group, req);
        self.grouped().await
    }

    /// Count the command just appended to the group; a full group goes upstream now, so big
    /// pipelines stream instead of piling up.
    async fn grouped(&mut self) {
        self.group_count += 1;
        if self.group_count >= GROUP_MAX || self.group.len() >= GROUP_BYTES {
            self.send_group().await;
        }
    }

    /// Forward under a tenant's rules: prefixed keys, capped TTLs, refusals, namespace-local ops.
    async fn forward_for(
        &mut self,
        tenant: Arc<Tenant>,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        let now_ms = unix_ms();
        let plan = tenant.check(spec, &req.args, req.raw.as_ref(), now_ms);
        if let (Some(local), Ok(plan)) = (self.shared.answerer(spec), &plan) {
            if let Some(reply) = self.stale_read(spec, &req.args, &tenant.prefix) {
                return self.push(Pending::Ready(reply)).await;
            }
            let reply =
                local.run(|e| standalone(e, plan.clone(), &tenant.prefix, self.client.proto));
            return self.push(Pending::Ready(reply)).await;
        }
        match plan {
            Err(e) => {
                metrics::error(ErrorKind::Refused);
                policy::metrics::refusal(&tenant.name, &e);
                self.reply_error(&e.to_string()).await
            }
            // Cacheable reads only ever need their errors unprefixed, and the errors they can
            // get (WRONGTYPE, a bad index) name no key: a cached reply needs no rewrite.
            Ok(Plan::Forward(f))
                if self.shared.cache.is_some()
                    && f.follow_ups.is_empty()
                    && matches!(f.reply, ReplyRewrite::None | ReplyRewrite::Errors)
                    && self.through_cache(spec, &req.args, &tenant.prefix).await => {}
            Ok(Plan::Forward(f)) if f.follow_ups.is_empty() && f.reply == ReplyRewrite::None => {
                // Noted before it joins the group, so its keys are invalidated again once the
                // group that carries it is answered.
                self.written_through(spec, &req.args, &tenant.prefix);
                self.group.extend_from_slice(&f.command);
                self.grouped().await
            }
            Ok(Plan::Forward(f)) => {
                // A job of its own, so its first reply is the command's and the rest are the
                // follow-ups', which the client never sees.
                self.send_group().await;
                self.written_through(spec, &req.args, &tenant.prefix);
                self.group.extend_from_slice(&f.command);
                for c in &f.follow_ups {
                    self.group.extend_from_slice(c);
                }
                self.group_count = 1 + f.follow_ups.len();
                let keep = Keep::First {
                    skip: 0,
                    rewrite: f.reply,
                    prefix: tenant.prefix.clone(),
                    proto: self.client.proto,
                };
                self.send_group_keeping(keep).await;
            }
            // Boxed: rare, and inline its state would grow every idle session.
            Ok(Plan::Namespace(op)) => Box::pin(self.run_namespace(op)).await,
        }
    }

    /// The near cache's part in forwarding a read: answered (or waited on) here, true; or
    /// false, forward it. (Writes are noted by [`Reader::written_through`] right before they
    /// join the group, in whichever path forwards them.)
    async fn through_cache(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        prefix: &[u8],
    ) -> bool {
        let Some(cache) = self.shared.cache.as_deref() else {
            return false;
        };
        if let Some(kind) = ReadKind::of(spec) {
            let keys = if kind == ReadKind::Mget {
                &args[1..]
            } else {
                &args[1..2]
            };
            if self.unanswered_writes.blocks(prefix, keys.iter()) {
                return false;
            }
            let tenant = self.client.tenant.as_ref().map(|t| t.name.as_str());
            let Some(rules) = cache.rules(tenant) else {
                return false;
            };
            let now = *self.cache_now.get_or_insert_with(|| cache.now());
            let pending = match cache.read(rules, kind, args, prefix, self.client.proto, now) {
                Lookup::Hit(bytes) => {
                    self.ready_reply(bytes).await;
                    return true;
                }
                Lookup::Wait(rx) => Pending::Cached {
                    rx,
                    proto: self.client.proto,
                },
                Lookup::Bypass => return false,
            };
            self.push(pending).await;
            return true;
        }
        false
    }

    /// Local-only mode: a cacheable read the near cache can still answer within the
    /// stale-if-error window — unless the local engine holds the key (written during the
    /// outage), which then answers.
    fn stale_read(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        prefix: &[u8],
    ) -> Option<Bytes> {
        let cache = self.shared.cache.as_deref()?;
        let kind = ReadKind::of(spec)?;
        let engine = self.shared.engine.as_deref()?;
        let rules = cache.rules(self.client.tenant.as_ref().map(|t| t.name.as_str()))?;
        let exists = command::lookup("exists")?;
        let key = crate::cache::upstream_key(prefix, &args[1]);
        let held = engine.execute(
            exists,
            &[Bytes::from_static(b"EXISTS"), key],
            Protocol::Resp2,
            unix_ms() as u64,
        );
        if &held[..] != b":0\r\n" {
            return None;
        }
        cache.stale(rules, kind, args, prefix, self.client.proto)
    }

    /// Note a write about to join the group bound upstream (see [`note_write`]).
    fn written_through(&mut self, spec: &'static CommandSpec, args: &[Bytes], prefix: &[u8]) {
        if let Some(cache) = self.shared.cache.as_deref()
            && (spec.flags.contains(Flags::WRITE) || spec.acl.contains(AclCategories::SCRIPTING))
        {
            let start = self.written.keys.len();
            let wide = note_write(cache, &mut self.written, spec, args, prefix);
            self.unanswered_writes
                .add(&self.written.keys[start..], wide);
        }
    }

    /// Drive a namespace-local operation (DBSIZE, FLUSHDB, RANDOMKEY for a prefixed tenant) to
    /// its end before reading on: its upstream calls go through the client's own connection, one
    /// at a time, so they run after everything the client sent before and before what follows.
    async fn run_namespace(&mut self, op: policy::NamespaceOp) {
        self.send_group().await;
        let upstream = self.shared.upstream.clone().expect("checked by the caller");
        let conn = upstream.conn(self.client.proto, self.client.id);
        let (mut run, mut cmd) = NamespaceRun::start(op, self.client.proto);
        let out = loop {
            let reply = match conn.send(cmd, 1).await.await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(partial)) => break Err(format!("ERR {}", partial.error)),
                Err(_) => break Err("ERR upstream connection closed before replying".into()),
            };
            if reply.first() == Some(&b'-') {
                break Ok(reply);
            }
            match run.step(&reply) {
                Ok(NamespaceStep::Send(next)) => cmd = next,
                Ok(NamespaceStep::Reply(bytes)) => break Ok(bytes),
                Err(e) => break Err(format!("ERR {e}")),
            }
        };
        if let Some(cache) = &self.shared.cache {
            // FLUSHDB within a namespace deleted keys this proxy may hold.
            cache.flush_local();
        }
        match out {
            Ok(bytes) => self.push(Pending::Ready(bytes)).await,
            Err(msg) => {
                metrics::error(ErrorKind::Upstream);
                self.reply_error(&msg).await
            }
        }
    }

    /// A reply known at once (a near-cache hit): consecutive ones are queued together, one FIFO
    /// entry and one copy into the client's output for a whole pipeline of hits.
    async fn ready_reply(&mut self, bytes: Bytes) {
        if self.group_count > 0 {
            self.send_group().await;
        }
        self.ready.extend_from_slice(&bytes);
        self.ready_count += 1;
        if self.ready_count >= GROUP_MAX || self.ready.len() >= GROUP_BYTES {
            self.flush_ready().await;
        }
    }

    async fn flush_ready(&mut self) {
        if self.ready_count == 0 {
            return;
        }
        let count = std::mem::take(&mut self.ready_count);
        if self.fifo.full_for(count) {
            self.cache_now = None;
        }
        // Taken whole: an idle client keeps no buffer.
        let bytes = std::mem::take(&mut self.ready).freeze();
        self.fifo.push(Pending::Ready(bytes), count).await
    }

    /// Send the group of forwarded commands, if any, and queue the slot for their replies.
    async fn send_group(&mut self) {
        self.send_group_keeping(Keep::All).await
    }

    async fn send_group_keeping(&mut self, keep: Keep) {
        // Replies already known are older than anything in the group (a hit sends the group
        // before it joins them).
        self.flush_ready().await;
        if self.group_count == 0 {
            return;
        }
        let count = std::mem::take(&mut self.group_count);
        let bytes = self.group.split().freeze();
        let upstream = self
            .shared
            .upstream
            .as_ref()
            .expect("grouped only with an upstream");
        let rx = upstream
            .conn(self.client.proto, self.client.id)
            .send_within(bytes, count, self.budget.clone())
            .await;
        // The send may have waited for room upstream.
        self.cache_now = None;
        self.fifo
            .push(Pending::Upstream { rx, count, keep }, count)
            .await;
        if self.written.count > 0 {
            let written = Box::new(std::mem::take(&mut self.written));
            self.fifo.push(Pending::Written(written), 0).await;
        }
    }
}

/// A write is about to go upstream: invalidate its keys now, and remember them for when its
/// reply is in.
fn note_write(
    cache: &NearCache,
    written: &mut Written,
    spec: &'static CommandSpec,
    args: &[Bytes],
    prefix: &[u8],
) -> bool {
    let mut wide = spec.acl.contains(AclCategories::SCRIPTING);
    if matches!(spec.name, "flushall" | "flushdb" | "swapdb") {
        cache.flush_local();
        written.flush = true;
        wide = true;
    }
    let found = command::keys(spec, args);
    if found.as_ref().is_ok_and(|k| k.is_empty()) || found.is_err() {
        wide = true;
    }
    if let Ok(keys) = found {
        for pos in keys.positions() {
            let key = crate::cache::upstream_key(prefix, &args[pos]);
            cache.invalidate(&key);
            written.keys.push(key);
        }
    }
    written.count += 1;
    written.wide += wide as usize;
    wide
}

/// A request as the upstream gets it: the client's own bytes when it sent an array, otherwise
/// (inline) encoded from its arguments.
fn append_request(out: &mut BytesMut, req: &Request) {
    match &req.raw {
        Some(raw) => out.extend_from_slice(raw),
        None => encode::command(out, &req.args),
    }
}

pub(crate) use crate::clock::unix_ms;

/// Carry out a tenant's plan on the local engine (standalone or local-only mode): the rewritten
/// command, its follow-ups (replies discarded) and the reply rewrite, or a namespace-local run.
fn standalone(engine: &Engine, plan: Plan, prefix: &[u8], proto: Protocol) -> Bytes {
    let now = unix_ms() as u64;
    let call = |cmd: &Bytes| -> Bytes {
        // Plans are encoded commands; frame them back into arguments for the engine.
        let mut buf = BytesMut::from(&cmd[..]);
        let args = match Framer::new(Default::default()).next(&mut buf) {
            Ok(Some(req)) => req.args,
            _ => return error_bytes("ERR respite could not re-read a rewritten command"),
        };
        match command::resolve(&args) {
            Ok(spec) => engine.execute(spec, &args, proto, now),
            Err(e) => error_bytes(&format!("ERR {e}")),
        }
    };
    match plan {
        Plan::Forward(f) => {
            let reply = call(&f.command);
            for c in &f.follow_ups {
                call(c);
            }
            policy::rewrite_reply(f.reply, prefix, &reply, proto)
                .unwrap_or_else(|e| error_bytes(&format!("ERR {e}")))
        }
        Plan::Namespace(op) => {
            let (mut run, mut cmd) = NamespaceRun::start(op, proto);
            loop {
                let reply = call(&cmd);
                if reply.first() == Some(&b'-') {
                    return reply;
                }
                match run.step(&reply) {
                    Ok(NamespaceStep::Send(next)) => cmd = next,
                    Ok(NamespaceStep::Reply(bytes)) => return bytes,
                    Err(e) => return error_bytes(&format!("ERR {e}")),
                }
            }
        }
    }
}

fn error_bytes(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    out.freeze()
}

/// Write replies in FIFO order. After waiting for the reply at the head, take every reply behind
/// it that is already known, so a pipelining client gets them in one write.
async fn write_loop<S: RawStream>(
    w: &ClientSocket<S>,
    fifo: &Fifo<Pending>,
    cache: Option<&NearCache>,
    unanswered_writes: &Unanswered,
    budget: Option<&ReplyBudget>,
) {
    // Upstream replies leave the client's budget as the writer takes them.
    let taken = |r: &Result<Reply, ()>| {
        if let (Some(b), Ok(Ok(bytes))) = (budget, r) {
            b.release(bytes.len());
        }
    };
    const FLUSH_AT: usize = 64 * 1024;
    let mut out = BytesMut::new();
    let mut head: Option<Pending> = None;
    'session: loop {
        let mut item = match head.take() {
            Some(p) => Some(p),
            None => fifo.pop().await,
        };
        if item.is_none() {
            break;
        }
        while let Some(p) = item.take() {
            let written = match p {
                Pending::Ready(b) => append(w, &mut out, b).await,
                Pending::Upstream { rx, count, keep } => {
                    let r = rx.await.map_err(|_| ());
                    taken(&r);
                    append(w, &mut out, reply_bytes(r, count, &keep)).await
                }
                Pending::Cached { rx, proto } => {
                    append(w, &mut out, fetched_bytes(rx.await.ok(), proto)).await
                }
                Pending::Written(written) => {
                    answered(cache, &written, unanswered_writes);
                    Ok(())
                }
                Pending::Barrier(done) => {
                    let r = flush(w, &mut out).await;
                    let _ = done.send(());
                    r
                }
                Pending::Close => break 'session,
            };
            if written.is_err() {
                return;
            }
            if out.len() >= FLUSH_AT {
                break;
            }
            item = match fifo.try_pop() {
                Some(Pending::Upstream {
                    mut rx,
                    count,
                    keep,
                }) => match rx.try_recv() {
                    Ok(r) => {
                        let r = Ok(r);
                        taken(&r);
                        Some(Pending::Ready(reply_bytes(r, count, &keep)))
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some(Pending::Ready(reply_bytes(Err(()), count, &keep)))
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        // Not here yet: write what we have before waiting for it.
                        head = Some(Pending::Upstream { rx, count, keep });
                        None
                    }
                },
                Some(Pending::Cached { mut rx, proto }) => match rx.try_recv() {
                    Ok(f) => Some(Pending::Ready(fetched_bytes(Some(f), proto))),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some(Pending::Ready(fetched_bytes(None, proto)))
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        head = Some(Pending::Cached { rx, proto });
                        None
                    }
                },
                Some(other) => Some(other),
                None => None,
            };
        }
        if budget.is_some_and(|b| b.exceeded()) {
            // Past limits.max_reply_bytes: the errors that replaced the replies go out, then the
            // connection closes. Whatever the reader still queues is dropped until it stops.
            let _ = flush(w, &mut out).await;
            w.shutdown_both();
            while fifo.pop().await.is_some() {}
            return;
        }
        if flush(w, &mut out).await.is_err() {
            return;
        }
        if head.is_none() && fifo.is_empty() {
            // Idle clients keep no write buffer.
            out = BytesMut::new();
        }
    }
    let _ = flush(w, &mut out).await;
    w.shutdown_write();
}

/// A near-cache fill's reply for a client (`None`: the fill vanished unanswered).
fn fetched_bytes(f: Option<Fetched>, proto: Protocol) -> Bytes {
    match f {
        Some(Ok(cached)) => cached.get(proto),
        Some(Err(why)) => {
            metrics::error(ErrorKind::Upstream);
            error_bytes(&format!("ERR {why}"))
        }
        None => {
            metrics::error(ErrorKind::Upstream);
            error_bytes("ERR near-cache fill abandoned before its reply")
        }
    }
}

/// Writes were answered (whatever the answer): their keys leave the near cache again, in case
/// a fill that read the old value landed while they were in flight.
fn answered(cache: Option<&NearCache>, written: &Written, unanswered_writes: &Unanswered) {
    if let Some(cache) = cache {
        if written.flush {
            cache.flush_local();
        }
        for key in &written.keys {
            cache.invalidate(key);
        }
    }
    unanswered_writes.answered(written);
}

async fn flush<S: RawStream>(w: &ClientSocket<S>, out: &mut BytesMut) -> Result<(), ()> {
    if out.is_empty() {
        return Ok(());
    }
    w.write_all(out).await.map_err(|_| ())?;
    out.clear();
    Ok(())
}

/// The bytes a client gets for the `count` commands of one upstream job: their replies, or the
/// replies that arrived followed by one error for each command that got none. `Err(())`: the
/// slot vanished unanswered (the pool shut down).
fn reply_bytes(r: Result<Reply, ()>, count: usize, keep: &Keep) -> Bytes {
    if let Keep::First {
        skip,
        rewrite,
        prefix,
        proto,
    } = keep
    {
        return first_reply(r, *skip, *rewrite, prefix, *proto);
    }
    let (mut out, failed, msg) = match r {
        Ok(Ok(bytes)) => return bytes,
        Ok(Err(partial)) => {
            metrics::error(partial.error.kind());
            (
                BytesMut::from(&partial.replies[..]),
                count - partial.count,
                format!("ERR {}", partial.error),
            )
        }
        Err(()) => {
            metrics::error(ErrorKind::Upstream);
            (
                BytesMut::new(),
                count,
                "ERR upstream connection closed before replying".to_string(),
            )
        }
    };
    for _ in 0..failed {
        encode::error(&mut out, &msg);
    }
    out.freeze()
}

/// The command's own reply (the one after `skip`) out of a job that also carried what respite
/// added around it, rewritten for the tenant.
fn first_reply(
    r: Result<Reply, ()>,
    skip: usize,
    rewrite: ReplyRewrite,
    prefix: &[u8],
    proto: Protocol,
) -> Bytes {
    let replies = match r {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(partial)) if partial.count > skip => partial.replies,
        Ok(Err(partial)) => return reply_bytes(Ok(Err(partial.without_replies())), 1, &Keep::All),
        other => return reply_bytes(other, 1, &Keep::All),
    };
    let mut scanner = ReplyScanner::new();
    let mut at = 0;
    for _ in 0..skip {
        match scanner.scan(&replies[at..]) {
            Ok(Some(s)) => at += s.len,
            _ => break,
        }
    }
    let len = match scanner.scan(&replies[at..]) {
        Ok(Some(s)) => s.len,
        _ => replies.len() - at,
    };
    let first = replies.slice(at..at + len);
    policy::rewrite_reply(rewrite, prefix, &first, proto)
        .unwrap_or_else(|e| error_bytes(&format!("ERR {e}")))
}

/// Add a reply to the output batch; a large reply is written straight through instead of copied.
async fn append<S: RawStream>(w: &ClientSocket<S>, out: &mut BytesMut, b: Bytes) -> Result<(), ()> {
    if b.len() >= 16 * 1024 {
        flush(w, out).await?;
        w.write_all(&b).await.map_err(|_| ())
    } else {
        out.extend_from_slice(&b);
        Ok(())
    }
}

impl Reader<'_> {
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }
}

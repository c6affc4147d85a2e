//! The session's first stage: read a client's bytes, frame requests, and dispatch each one —
//! refused, answered here ([`builtin`](super::commands::builtin), a transaction), or forwarded
//! ([`forward`](super::forward)) — its reply queued in the order it arrived, through the
//! [`outgoing`](super::outgoing) side, the only way onto the reply FIFO. It never writes to the
//! client socket; the writer does.
use super::commands::builtin;
use super::{Flow, Pending, Reader, error_bytes};
use crate::command::{self, Flags, Route};
use crate::config::SessionLimits;
use crate::metrics::{self, ErrorKind};
use crate::policy;
use crate::protocol::{Framer, Request};
use crate::server::io::{ClientIo, SCRATCH};
use crate::upstream::{Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use tokio::sync::oneshot;

/// What `dispatch` leaves to `handle`: the request's flow, or its route still to take.
enum Next {
    Done(Flow),
    Route(&'static crate::command::CommandSpec, Route),
}

/// The waker the session's drain (or CLIENT KILL) wakes: it records that it fired, then wakes
/// the session's task, so the reader learns of it from one atomic load instead of the token's
/// lock.
struct Fired {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// The most a read reserves ahead for an argument still arriving.
const RESERVE_CHUNK: usize = 64 * 1024;

const REQUEST_TIMEOUT: &str =
    "ERR request not completed within limits.request_timeout_ms; closing the connection";

impl Reader<'_> {
    pub(super) async fn read_loop<C: ClientIo>(&mut self, sock: &C) {
        // Read through these rather than copied into locals: this future is nested in every
        // session's task at its largest.
        let config = self.config.clone();
        let shared = self.shared.clone();
        let mut framer = Framer::new(config.limits);
        let mut buf = BytesMut::new();
        // The session's own token: a child of the proxy's draining token, also cancelled by
        // CLIENT KILL, so one registration serves both.
        let draining = self.registered.entry.kill.clone();
        // One registration for the whole session, polled once with a waker of its own (see
        // [`Fired`]); after that only that waker's flag is read, until it fires. A fresh
        // `cancelled()` per read, or a re-poll of this one, would lock the token's waiter list
        // every time the session wakes, twice per unpipelined request (callgrind: about 500
        // instructions), and so would `is_cancelled()` (about 110).
        let drained = draining.cancelled();
        tokio::pin!(drained);
        let mut fired: Option<Arc<Fired>> = None;
        // Closed for the global budget (limits.max_client_memory) by another client's charge:
        // registered once like the drain, then only its flag is read.
        let budget = self.out.budget().cloned();
        let evicted = async {
            match &budget {
                Some(b) => b.closed().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(evicted);
        let is_evicted = || budget.as_ref().is_some_and(|b| b.exceeded());
        let timeouts = &shared.config.sessions;
        let timed = timeouts.idle_timeout.is_some() || timeouts.request_timeout.is_some();
        let mut last_read = timed.then(tokio::time::Instant::now);
        // When the request now in the buffer began to arrive (request_timeout_ms).
        let mut request_began: Option<tokio::time::Instant> = None;
        // Small requests fit a small buffer, which the allocator recycles cheaply; a read that
        // fills it asks for a bigger one next time.
        let mut read_size = 1024;
        loop {
            loop {
                if self.out.abandoned() || budget.as_ref().is_some_and(|b| b.exceeded()) {
                    // The client is gone (or hung up while parked), or the writer is closing
                    // it (limits.max_reply_bytes).
                    return;
                }
                // Before AUTH, Redis's small limits (policy::unauthenticated).
                let restricted = self.tenants.is_some() && self.client.tenant.is_none();
                framer.set_limits(if restricted {
                    policy::unauthenticated(config.limits)
                } else {
                    config.limits
                });
                match framer.next(&mut buf) {
                    Ok(Some(mut req)) => {
                        // What is still to frame counts with what a wait reads meanwhile.
                        self.out.unframed(buf.len());
                        let flow = self.handle(&mut req).await;
                        framer.recycle(req.args);
                        if flow == Flow::Close {
                            return self.close().await;
                        }
                    }
                    Ok(None) => {
                        // What arrived while a wait was parked (see `outgoing::park`) comes
                        // after `buf`, now down to an unfinished request at most, and was read
                        // just now as far as the timeouts are concerned.
                        if self.out.take_parked(&mut buf) {
                            if timed {
                                last_read = Some(tokio::time::Instant::now());
                            }
                            if let Some(b) = &budget
                                && !b.hold_request(buf.len())
                            {
                                return;
                            }
                            continue;
                        }
                        self.out.unframed(0);
                        self.send_group().await;
                        if let Some((spec, framed)) = self.timed.take() {
                            self.out.timed(spec, framed).await;
                        }
                        if self.out.has_parked() {
                            // Sending the group waited, and more arrived meanwhile.
                            continue;
                        }
                        break;
                    }
                    Err(e) if restricted && !e.fatal => {
                        metrics::error(ErrorKind::Protocol);
                        self.reply_error(policy::UNAUTHENTICATED_LIMIT).await;
                        return self.close().await;
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
            if buf.len() > framer.limits().max_query_buffer {
                metrics::error(ErrorKind::Protocol);
                let msg = format!(
                    "ERR unfinished request of {} bytes is over the limit of {} (limits.max_query_buffer)",
                    buf.len(),
                    framer.limits().max_query_buffer
                );
                self.reply_error(&msg).await;
                return self.close().await;
            }
            if buf.is_empty() {
                // Idle clients keep no buffer: the allocation goes back to the thread's spares
                // once its requests are done (see `io::put_back`), for the next read to take.
                crate::server::io::put_back(std::mem::take(&mut buf));
                request_began = None;
            } else if timed && request_began.is_none() {
                request_began = last_read;
            }
            // An unfinished request counts against limits.max_client_memory.
            if let Some(b) = &budget
                && !b.hold_request(buf.len())
            {
                return;
            }
            // A large argument in progress: reserve a chunk of it at a time, never the declared
            // length at once (a client declaring 512 MiB and sending nothing must cost nothing).
            // Otherwise the read allocates only once data is there: idle clients hold no buffer.
            let want = match framer.needed_len() {
                Some(n) if n > buf.len() + read_size => {
                    let chunk = (n - buf.len()).min(RESERVE_CHUNK);
                    buf.reserve(chunk);
                    chunk
                }
                _ => read_size,
            };
            // Subscribers wait for messages, not for themselves (Redis's `timeout` spares them too).
            let exempt = self.client.timeouts_exempt || self.pubsub.subscribed();
            let deadline = if timed && !exempt {
                self.deadline(*timeouts, last_read, request_began, buf.is_empty())
            } else {
                None
            };
            let mut expiry = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
            // Each read takes at most what the thread's scratch buffer holds (see `io`).
            let want = want.min(SCRATCH);
            tokio::select! {
                biased;
                r = sock.read(&mut buf, want) => {
                    // A new batch: the near cache's clock is read afresh.
                    self.out.new_batch();
                    self.registered.entry.read_now();
                    if timed {
                        last_read = Some(tokio::time::Instant::now());
                    }
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) if n == want => read_size = (read_size * 4).min(64 * 1024),
                        Ok(_) => {}
                    }
                }
                stop = std::future::poll_fn(|cx| {
                    if fired.as_ref().is_some_and(|f| !f.fired.load(Ordering::Acquire))
                        && !is_evicted()
                    {
                        return std::task::Poll::Pending;
                    }
                    if evicted.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(false);
                    }
                    let f = fired.get_or_insert_with(|| {
                        Arc::new(Fired {
                            fired: AtomicBool::new(false),
                            task: cx.waker().clone(),
                        })
                    });
                    let waker = Waker::from(f.clone());
                    drained
                        .as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .map(|()| true)
                }) => {
                    // Drained: what is owed goes out first. Evicted: the writer is closing it.
                    if stop {
                        return self.close().await;
                    }
                    return;
                }
                _ = async { expiry.as_mut().expect("a deadline").await }, if expiry.is_some() => {
                    if buf.is_empty() && self.out.owes_replies() {
                        // Not idle: waiting for its replies (a slow command). Idle from now.
                        last_read = Some(tokio::time::Instant::now());
                        continue;
                    }
                    if !buf.is_empty() {
                        metrics::error(ErrorKind::Protocol);
                        self.reply_error(REQUEST_TIMEOUT).await;
                    }
                    return self.close().await;
                }
            }
        }
    }

    /// The built-in table refused `args` with `err`: the upstream's entry if it has one (the
    /// first such request may wait for the table to be read, at most the connect deadline).
    async fn resolve_miss(
        &self,
        args: &[Bytes],
        err: command::CommandError,
    ) -> Result<&'static crate::command::CommandSpec, command::CommandError> {
        let Some(upstream) = &self.shared.upstream else {
            return Err(err);
        };
        match upstream.commands().await {
            Some(table) => table.resolve_miss(args, err),
            None => Err(err),
        }
    }

    /// When this client is to be closed if nothing more arrives: an unfinished request's
    /// deadline, or with no request begun, the idle timeout.
    fn deadline(
        &self,
        t: SessionLimits,
        last_read: Option<tokio::time::Instant>,
        request_began: Option<tokio::time::Instant>,
        buf_empty: bool,
    ) -> Option<tokio::time::Instant> {
        let request = t.request_timeout.zip(request_began).map(|(t, b)| b + t);
        let idle = buf_empty
            .then_some(t.idle_timeout.zip(last_read).map(|(t, r)| r + t))
            .flatten();
        request.into_iter().chain(idle).min()
    }

    /// A reload happened since the last command: take the tenants in force now, and this
    /// client's tenant's new rules by name (a tenant that is gone leaves it unauthenticated;
    /// an unauthenticated one takes the default tenant).
    fn reloaded(&mut self) {
        self.generation = self.shared.live.generation();
        self.tenants = self.shared.live.tenants();
        let Some(tenants) = &self.tenants else {
            self.client.tenant = None;
            return;
        };
        self.client.tenant = match &self.client.tenant {
            None => tenants.default_tenant().cloned(),
            Some(t) => tenants.iter().find(|n| n.name == t.name).cloned(),
        };
    }

    pub(super) async fn handle(&mut self, req: &mut Request) -> Flow {
        if self.shared.live.generation() != self.generation {
            self.reloaded();
        }
        // After CLIENT REPLY SKIP, this command's reply is the one dropped.
        let skipping = std::mem::take(&mut self.skip_pending);
        let flow = match self.dispatch(req).await {
            Next::Done(flow) => flow,
            Next::Route(spec, route) => self.route(spec, req, route).await,
        };
        if skipping && self.reply_mode == super::clients::ReplyMode::Skip {
            self.push(Pending::Silence(false)).await;
            self.reply_mode = super::clients::ReplyMode::On;
        }
        flow
    }

    /// Everything before the route: resolve, count, refuse, Pub/Sub and transactions. What is
    /// left to route is returned rather than awaited here, so that `handle` awaits `route` at
    /// its own level (nested, this function's locals would add to every session's future).
    async fn dispatch(&mut self, req: &mut Request) -> Next {
        let resolved = match command::resolve(&req.args) {
            Ok(spec) => Ok(spec),
            // Boxed: rare, and inline its state would grow every idle session.
            Err(e) => Box::pin(self.resolve_miss(&req.args, e)).await,
        };
        let spec = match resolved {
            Ok(spec) => spec,
            Err(e) => {
                metrics::error(match e {
                    command::CommandError::Arity(_) => ErrorKind::Arity,
                    _ => ErrorKind::UnknownCommand,
                });
                self.queue_failed();
                self.reply_error(&format!("ERR {e}")).await;
                return Next::Done(Flow::Continue);
            }
        };
        metrics::command(spec).increment(1);
        if self.sample_tick == 0 && self.timed.is_none() {
            self.timed = Some((spec, std::time::Instant::now()));
        }
        self.sample_tick = (self.sample_tick + 1) % metrics::COMMAND_SAMPLE_EVERY;
        self.client.last_command = spec.name;
        self.registered.entry.ran(spec);
        let route = command::route(spec, &req.args);
        // Answered by respite itself: the commands the session handles, INFO where the
        // upstream's would say too much, and transactions (queued here).
        // Also in local-only mode, as standalone answers it (ioredis's ready check sends INFO
        // on connect).
        let prefixed = self.client.tenant.as_ref().is_some_and(|t| t.has_prefix());
        let info_here = (spec.name == "info"
            && (self.shared.upstream.is_none()
                || prefixed
                || self.shared.answerer(spec, &req.args).is_some()))
            || (spec.name == "config|get" && prefixed)
            || (spec.name == "config|set"
                && prefixed
                && policy::info::config_set(&req.args).is_some());
        let transaction = self.multi.is_some() || route == Route::Transaction;
        if self.tenants.is_some() && !spec.flags.contains(Flags::NO_AUTH) {
            let Some(tenant) = &self.client.tenant else {
                metrics::error(ErrorKind::Refused);
                self.reply_error(policy::NOAUTH).await;
                return Next::Done(Flow::Continue);
            };
            policy::metrics::command(tenant);
            if (route == Route::Proxy || info_here || transaction) && !tenant.permits(spec) {
                let e = tenant.no_perm(spec);
                policy::metrics::refusal(&tenant.name, &e);
                self.queue_failed();
                self.reply_error(&e.to_string()).await;
                return Next::Done(Flow::Continue);
            }
        }
        // An upstream user's ACL holds for what respite serves without that user's connection.
        if self.out.pin.needs.auth
            && self.multi.is_none()
            && super::commands::upstream_acl::checked(spec)
            && let Some(refusal) = Box::pin(self.upstream_refusal(req)).await
        {
            metrics::error(ErrorKind::Refused);
            self.push(Pending::Ready(refusal)).await;
            return Next::Done(Flow::Continue);
        }
        // A monitoring client, as Redis treats one (a RESP2 subscriber's commands are the
        // Pub/Sub stage's to refuse first, as Redis's subscribed-mode check comes first).
        if self.monitoring.is_some()
            && !(self.pubsub.subscribed() && self.client.proto == crate::protocol::Protocol::Resp2)
        {
            if spec.name == "monitor" {
                // Redis ignores a second MONITOR: no reply at all.
                return Next::Done(Flow::Continue);
            }
            if super::commands::monitor::refused_while_monitoring(spec) {
                metrics::error(ErrorKind::Refused);
                self.queue_failed();
                self.reply_error(super::commands::monitor::KEYSPACE).await;
                return Next::Done(Flow::Continue);
            }
        }
        if self.pubsub_takes(spec)
            && let Some(flow) = Box::pin(self.pubsub(spec, req)).await
        {
            return Next::Done(flow);
        }
        if self.multi.is_some() {
            // Commands that end or leave a transaction are answered as usual.
            if !matches!(spec.name, "quit" | "reset") {
                // Boxed: rare, and inline its state would grow every idle session.
                Box::pin(self.transaction(spec, req, route)).await;
                return Next::Done(Flow::Continue);
            }
            // QUIT and RESET discard the transaction, as in Redis.
            self.multi = None;
        }
        if info_here {
            // Boxed: rare, and inline its state would grow every idle session.
            let out = match spec.name {
                "config|get" => Box::pin(builtin::tenant_config_get(self, &req.args)).await,
                "config|set" => builtin::tenant_config_set(self, &req.args),
                _ => Box::pin(builtin::tenant_info(self, &req.args)).await,
            };
            self.reply(out).await;
            return Next::Done(Flow::Continue);
        }
        if spec.name == "slowlog|get"
            && self.tracking.is_none()
            && !prefixed
            && self.shared.upstream.is_some()
            && self.shared.answerer(spec, &req.args).is_none()
        {
            // The upstream's, without respite's own commands (boxed: rare).
            Box::pin(self.slowlog_get(req)).await;
            return Next::Done(Flow::Continue);
        }
        if spec.name == "info" && self.tracking.is_none() {
            // The upstream's, its client count made CLIENT LIST's (boxed: rare).
            Box::pin(self.info_forwarded(req)).await;
            return Next::Done(Flow::Continue);
        }
        if self.tracking.is_some() {
            // Boxed: only tracked clients come here.
            // Local-only mode answers it from the local engine, untracked.
            let local = self.shared.answerer(spec, &req.args).is_some();
            Box::pin(self.tracked_before(spec, req)).await;
            let flow = Box::pin(self.route(spec, req, route)).await;
            Box::pin(self.tracked_after(spec, local)).await;
            return Next::Done(flow);
        }
        Next::Route(spec, route)
    }

    async fn route(
        &mut self,
        spec: &'static crate::command::CommandSpec,
        req: &mut Request,
        route: Route,
    ) -> Flow {
        match route {
            // Held by a CLIENT PAUSE WRITE in force: on a connection of the client's own, where
            // the upstream holds it without holding anyone else's (see `server::pause`).
            Route::Forward if self.pause_holds(spec, req) => {
                Box::pin(self.blocking(spec, req)).await;
                Flow::Continue
            }
            Route::Forward => {
                self.enter_lane(spec).await;
                match self.client.tenant.clone() {
                    // Boxed for the same reason as local answers: its state is large.
                    Some(tenant) => Box::pin(self.forward_for(tenant, spec, req)).await,
                    None => self.forward(spec, req).await,
                }
                self.leave_out_of_band().await;
                Flow::Continue
            }
            // Boxed: rare next to forwarding, and large; inline it would grow every idle session.
            Route::Proxy => {
                let flow = Box::pin(builtin::answer(self, spec, req)).await;
                // Its name, user, database or protocol may have changed: CLIENT LIST shows it.
                self.publish();
                flow
            }
            // MULTI, or EXEC, DISCARD, UNWATCH outside a transaction. Boxed like the queueing.
            Route::Transaction => {
                Box::pin(self.transaction(spec, req, route)).await;
                Flow::Continue
            }
            Route::Stateful("blocking command") => {
                Box::pin(self.blocking(spec, req)).await;
                Flow::Continue
            }
            Route::Stateful(_) if spec.name == "monitor" => {
                Box::pin(self.monitor(spec)).await;
                Flow::Continue
            }
            Route::Stateful(_) if spec.name == "watch" => {
                Box::pin(self.watch(spec, req)).await;
                Flow::Continue
            }
            Route::Stateful(_) if super::tracking::takes(spec.name) => {
                Box::pin(self.tracking_command(spec, req)).await;
                Flow::Continue
            }
            Route::Stateful(_)
                if spec.name.starts_with("client|")
                    && !matches!(
                        spec.name,
                        "client|tracking"
                            | "client|caching"
                            | "client|getredir"
                            | "client|trackinginfo"
                    ) =>
            {
                Box::pin(self.client_command(spec, req)).await;
                Flow::Continue
            }
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
}

/// The session's ways into its [`Outgoing`](super::outgoing::Outgoing) side, for the client as it
/// is now (its protocol, its id). Plain functions returning the outgoing side's own futures, so
/// no future is nested one level deeper in every session's task for them.
impl<'f> Reader<'f> {
    /// Queue a reply for one request; whatever is held goes first, keeping the order.
    pub(super) fn push(&mut self, p: Pending) -> impl Future<Output = ()> + use<'_, 'f> {
        self.out.push(&self.client, p)
    }

    pub(super) fn reply(&mut self, out: BytesMut) -> impl Future<Output = ()> + use<'_, 'f> {
        self.push(Pending::Ready(out.freeze()))
    }

    pub(super) fn reply_error(&mut self, msg: &str) -> impl Future<Output = ()> + use<'_, 'f> {
        if let Some(t) = &self.client.tenant {
            policy::metrics::error(t);
        }
        self.push(Pending::Ready(error_bytes(msg)))
    }

    /// Flush what is owed, then close the connection.
    pub(super) fn close(&mut self) -> impl Future<Output = ()> + use<'_, 'f> {
        self.push(Pending::Close)
    }

    /// Wait until every reply owed before this point has been written, reading the client
    /// meanwhile: one that leaves is seen (see `outgoing::park`).
    pub(super) fn barrier(&mut self) -> impl Future<Output = ()> + use<'_, 'f> {
        self.out.barrier(&self.client)
    }

    /// Send the group of forwarded commands held, if any.
    pub(super) fn send_group(&mut self) -> impl Future<Output = ()> + use<'_, 'f> {
        self.out.send_group(&self.client)
    }

    /// Count a command just held in the group (see [`Outgoing::grouped`](super::outgoing::Outgoing::grouped)).
    pub(super) fn grouped(&mut self) -> impl Future<Output = ()> + use<'_, 'f> {
        self.out.grouped(&self.client)
    }

    /// Hold a request in the group, as the upstream gets it, and count it.
    pub(super) fn hold_request(&mut self, req: &Request) -> impl Future<Output = ()> + use<'_, 'f> {
        self.out.hold_request(req, false);
        self.out.grouped(&self.client)
    }

    /// One command of the client's own on its connection, its reply awaited while the client
    /// keeps being read ([`park`](super::outgoing::Outgoing::park)); an error reply if none came.
    pub(super) async fn upstream_reply(&mut self, command: Bytes) -> Bytes {
        let rx = self.upstream_send(command, 1, None).await;
        let answered = self.out.park(rx).await;
        self.took_reply();
        match answered {
            Some(Ok(Ok(bytes))) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        }
    }

    /// Send a job of the client's own on its connection, after the group held before it; the
    /// caller waits for the reply.
    pub(super) fn upstream_send(
        &mut self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
    ) -> impl Future<Output = oneshot::Receiver<Reply>> + use<'_, 'f> {
        self.out.send(&self.client, bytes, count, budget, false)
    }
}

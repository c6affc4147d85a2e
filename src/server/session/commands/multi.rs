//! MULTI/EXEC, queued by respite or streamed on a pinned connection.
//!
//! A transaction without WATCH: respite answers MULTI and each queued command itself (`+OK`,
//! `+QUEUED`), checking what it can at queue time (the command table, tenant rules); at EXEC it
//! sends the whole transaction as one job on the client's shared upstream connection: `MULTI`,
//! the commands, `EXEC`, back to back. A job's bytes go out contiguously and the upstream runs a
//! connection's commands in order, so nothing from another client lands inside the transaction,
//! and the client gets EXEC's own reply (its array of results, or the upstream's EXECABORT).
//!
//! A transaction on a pinned connection (after WATCH or SELECT, see [`super::stateful`]), or one
//! grown past what one job may hold (`upstream.max_inflight - 2` commands or
//! `limits.max_query_buffer` bytes), streams instead: MULTI and each command go to the upstream
//! as they come and the upstream answers QUEUED itself, so any length Redis accepts goes through.
//! Tenant rules apply to each command as it is queued either way; their follow-ups (default
//! TTLs) go right after EXEC. In standalone and local-only mode the local engine runs the queued
//! commands one after another.
use crate::command::{CommandSpec, Route};
use crate::metrics::{self, ErrorKind};
use crate::policy::{self, Plan, PolicyError, ReplyRewrite};
use crate::protocol::{Request, encode};
use crate::server::session::{Keep, Pending, Reader, error_bytes, unix_ms};
use bytes::{Bytes, BytesMut};

/// A transaction being queued.
#[derive(Default)]
pub(crate) struct Multi {
    /// The client's MULTI as it sent it: the upstream (and so MONITOR) gets the client's own
    /// spelling when the transaction goes upstream.
    begin: Bytes,
    /// The queued commands as the upstream gets them, back to back.
    commands: BytesMut,
    /// Each queued command as the client sent it, for the local engine.
    queued: Vec<(&'static CommandSpec, Vec<Bytes>)>,
    /// Tenant follow-ups (default TTLs), sent after EXEC.
    follow_ups: Vec<Bytes>,
    /// A command was refused while queueing: EXEC aborts, as Redis does.
    failed: bool,
    /// Streamed on the pinned connection: the upstream holds the queue (only follow-ups and
    /// `failed` are kept here).
    streaming: bool,
    /// A SELECT queued in it: the database the client is in after EXEC.
    select: Option<u32>,
    /// Commands queued so far (the index of the next in EXEC's array).
    count: usize,
    /// Those respite answers itself, in EXEC's array ([`super::exec_splice`]).
    spliced: Vec<super::exec_splice::Spliced>,
}

impl Multi {
    /// Commands queued so far (CLIENT LIST's `multi`).
    pub(in crate::server::session) fn queued_count(&self) -> usize {
        self.count
    }
}

pub(crate) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

impl Reader<'_> {
    /// MULTI, EXEC and DISCARD, and every command while a transaction is open.
    pub(in crate::server::session) async fn transaction(
        &mut self,
        spec: &'static CommandSpec,
        req: &mut Request,
        route: Route,
    ) {
        match (spec.name, self.multi.is_some()) {
            ("multi", true) => {
                // Each upstream's own answer: Valkey rejects MULTI like any command not allowed
                // in a transaction, which also aborts it; Redis 7.0 only refuses the nesting.
                if self.upstream_is_valkey() {
                    self.refuse_queued("ERR Command 'multi' not allowed inside a transaction")
                        .await
                } else {
                    self.reply_error("ERR MULTI calls can not be nested").await
                }
            }
            ("multi", false) if self.out.pin.held().is_some() => {
                self.multi = Some(Box::new(Multi {
                    streaming: true,
                    ..Multi::default()
                }));
                self.out.pin.needs.multi = true;
                self.hold_request(req).await
            }
            ("multi", false) => {
                let mut begin = BytesMut::new();
                crate::server::session::forward::append_request(&mut begin, req);
                self.multi = Some(Box::new(Multi {
                    begin: begin.freeze(),
                    ..Multi::default()
                }));
                self.reply_simple("OK").await
            }
            ("exec", false) => self.reply_error("ERR EXEC without MULTI").await,
            ("discard", false) => self.reply_error("ERR DISCARD without MULTI").await,
            ("discard", true) if self.multi.as_ref().is_some_and(|m| m.streaming) => {
                self.multi = None;
                self.end_on_pinned(req).await
            }
            ("discard", true) => {
                self.multi = None;
                self.out.release_written().await;
                self.reply_simple("OK").await
            }
            ("exec", true) => {
                let multi = self.multi.take().expect("checked");
                self.exec(*multi, req).await
            }
            ("watch", true) => {
                self.reply_error("ERR WATCH inside MULTI is not allowed")
                    .await
            }
            ("unwatch", false) if self.out.pin.held().is_some() => self.end_on_pinned(req).await,
            // Nothing is watched without a pinned connection: UNWATCH has nothing to undo.
            ("unwatch", false) => self.reply_simple("OK").await,
            _ => self.queue(spec, req, route).await,
        }
        // CLIENT LIST shows the transaction (`multi`, `x`).
        self.publish();
    }

    /// A command queued by the client: refused (and the transaction marked to abort) or queued.
    async fn queue(&mut self, spec: &'static CommandSpec, req: &mut Request, route: Route) {
        let streaming = self.multi.as_ref().is_some_and(|m| m.streaming);
        if !streaming && spec.flags.contains(crate::command::Flags::NO_MULTI) {
            // SAVE, SHUTDOWN and the like: refused at queue time, in the server's words (a
            // streaming transaction's upstream refuses them itself).
            let msg = if self.upstream_is_valkey() {
                format!(
                    "ERR Command '{}' not allowed inside a transaction",
                    spec.name.split('|').next().unwrap_or(spec.name)
                )
            } else {
                "ERR Command not allowed inside a transaction".to_string()
            };
            return self.refuse_queued(&msg).await;
        }
        let prefixed = self.client.tenant.as_ref().is_some_and(|t| t.has_prefix());
        let here = super::exec_splice::answered_here_for(spec.name, prefixed);
        let queueable = match route {
            Route::Forward => true,
            // Queued as Redis queues it, on a pinned connection (below).
            Route::Proxy if spec.name == "select" => self.shared.answerer(spec, &[]).is_none(),
            // Run by the upstream inside the transaction, as Redis does, or answered by respite
            // in EXEC's array.
            Route::Proxy => matches!(spec.name, "ping" | "echo") || here,
            Route::Stateful(_) if here => true,
            // Server-wide, not the connection's: the pause starts when EXEC runs, as in Redis
            // (noted when EXEC is sent, see `exec`). A tenant's is refused as outside MULTI.
            Route::Stateful(_) if matches!(spec.name, "client|pause" | "client|unpause") => {
                self.client.tenant.is_none() && self.shared.answerer(spec, &[]).is_none()
            }
            // UNWATCH (the only one that gets here) is harmless on a shared connection, where
            // nothing is ever watched.
            Route::Transaction => true,
            // Blocking commands do not block inside a transaction.
            Route::Stateful(why) => why == "blocking command",
        };
        if !queueable {
            let msg = format!(
                "ERR {} inside MULTI is not supported by respite: it changes the connection's state",
                spec.name.replace('|', " ").to_uppercase()
            );
            return self.refuse_queued(&msg).await;
        }
        if spec.name == "select" {
            return self.queue_select(req).await;
        }
        if here {
            return self.queue_spliced(spec, req).await;
        }
        let limit = self
            .shared
            .upstream
            .as_ref()
            .map_or(usize::MAX, |u| u.config().max_inflight.saturating_sub(2));
        // What respite holds for the transaction is bounded like an unfinished request.
        let max_bytes = self.config.limits.max_query_buffer;
        let too_big = self.multi.as_ref().is_some_and(|m| {
            !m.streaming && (m.queued.len() >= limit || m.commands.len() > max_bytes)
        });
        if too_big && self.shared.answerer(spec, &[]).is_none() && !self.start_streaming().await {
            let msg = format!(
                "ERR transaction too long for respite: at most {limit} commands or {max_bytes} bytes when no pinned upstream connection is free"
            );
            return self.refuse_queued(&msg).await;
        }
        let mut rewrite = None;
        let (command, follow_ups, prefix) = match self.client.tenant.clone() {
            None => {
                let mut b = BytesMut::new();
                crate::server::session::forward::append_request(&mut b, req);
                (b.freeze(), Vec::new(), Bytes::new())
            }
            Some(tenant) => match tenant.check(spec, &req.args, req.raw.as_ref(), unix_ms()) {
                Err(e) => {
                    policy::metrics::refusal(&tenant.name, &e);
                    return self.refuse_queued(&e.to_string()).await;
                }
                Ok(Plan::Namespace(_)) => {
                    let msg = format!(
                        "ERR {} inside MULTI is not supported by respite for a tenant with a key prefix",
                        spec.name.to_uppercase()
                    );
                    return self.refuse_queued(&msg).await;
                }
                Ok(Plan::Forward(f)) => {
                    if !matches!(f.reply, ReplyRewrite::None | ReplyRewrite::Errors) {
                        // Its reply names keys (BLPOP's, XREAD's…): its element of EXEC's array
                        // is rewritten out of the namespace at EXEC ([`super::exec_splice`]).
                        rewrite = Some(f.reply);
                    }
                    (f.command, f.follow_ups, tenant.prefix.clone())
                }
            },
        };
        if self.shared.answerer(spec, &req.args).is_none() {
            // Bound upstream: its keys leave the near cache now and again once EXEC is answered.
            self.written_through(spec, &req.args, &prefix);
        }
        let streaming = self.multi.as_ref().is_some_and(|m| m.streaming);
        if !streaming && let Some(refusal) = self.busy_refusal().await {
            // Redis refuses every command a busy (or loading) server is sent, queued ones too,
            // and then aborts EXEC: the same here, in the upstream's own words.
            return self.refuse_queued(&refusal).await;
        }
        let multi = self.multi.as_mut().expect("in a transaction");
        multi.follow_ups.extend(follow_ups);
        if let Some(rewrite) = rewrite {
            multi.spliced.push(super::exec_splice::Spliced {
                at: multi.count,
                spec,
                args: Vec::new(),
                rewrite: Some(rewrite),
            });
        }
        multi.count += 1;
        if multi.streaming {
            // The upstream queues it and answers QUEUED (or its own error) itself.
            self.out.hold(&command, false);
            return self.grouped().await;
        }
        multi.commands.extend_from_slice(&command);
        multi.queued.push((spec, std::mem::take(&mut req.args)));
        self.reply_simple("QUEUED").await
    }

    /// Whether the upstream said it is Valkey (its error texts differ from Redis's here).
    fn upstream_is_valkey(&self) -> bool {
        self.shared
            .upstream
            .as_ref()
            .and_then(|u| u.server_info())
            .is_some_and(|i| i.server == "valkey")
    }

    /// The upstream's refusal of every command right now (`BUSY …`, `LOADING …`), if the latest
    /// word from it says it was refusing: confirmed by a PING of the client's own, so a hint that
    /// is out of date (the script just ended) refuses nothing. Costs nothing otherwise.
    ///
    /// A known-slow command in flight (a script that may have passed its time limit since the
    /// last probe, 250 ms apart) is asked about too: the PING then waits its turn as the queued
    /// command would at Redis (a script under its limit answers no one), so the cost is a round
    /// trip per queued command while such a command runs, never a wrong answer.
    async fn busy_refusal(&mut self) -> Option<String> {
        let upstream = self.shared.upstream.as_ref()?;
        let activity = &upstream.health().activity;
        if !activity.refusing() && !activity.slow_ahead() {
            return None;
        }
        let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
        let rx = self.upstream_send(ping, 1, None).await;
        let answered = self.out.park(rx).await;
        self.took_reply();
        match answered {
            Some(Ok(Ok(reply))) if crate::upstream::activity::refuses_all(&reply) => {
                Some(String::from_utf8_lossy(&reply[1..]).trim_end().to_string())
            }
            _ => None,
        }
    }

    /// EXEC's reply for a transaction respite already knows must abort: Redis refuses EXEC itself
    /// while busy or loading, before it looks at what was queued, and says so
    /// (`EXECABORT Transaction discarded because of: BUSY …`); otherwise the queueing errors.
    async fn exec_abort(&mut self) -> String {
        match self.busy_refusal().await {
            Some(refusal) => format!("EXECABORT Transaction discarded because of: {refusal}"),
            None => EXECABORT.to_string(),
        }
    }

    /// Move a transaction queued here onto a pinned connection: MULTI and what was queued so far
    /// go to the upstream now (their QUEUED replies were already given by respite, so they are
    /// read here and dropped; an error among them makes the upstream abort EXEC itself). False if
    /// no pinned connection could be had.
    async fn start_streaming(&mut self) -> bool {
        if !self.pin().await {
            // `pin` has queued the pool's error for this command.
            self.queue_failed();
            return false;
        }
        let multi = self.multi.as_mut().expect("in a transaction");
        let mut job = BytesMut::from(&multi.begin[..]);
        job.extend_from_slice(&std::mem::take(&mut multi.commands));
        let count = 1 + std::mem::take(&mut multi.queued).len();
        multi.streaming = true;
        self.out.pin.needs.multi = true;
        let rx = self.upstream_send(job.freeze(), count, None).await;
        if !matches!(self.out.park(rx).await, Some(Ok(Ok(_)))) {
            self.queue_failed();
        }
        self.took_reply();
        true
    }

    /// SELECT inside MULTI: the transaction moves to a pinned connection and the upstream queues
    /// it (or refuses a bad index itself, which aborts EXEC as in Redis). The client keeps that
    /// connection afterwards, in whatever database EXEC left it.
    async fn queue_select(&mut self, req: &Request) {
        if self.client.tenant.as_ref().is_some_and(|t| t.has_prefix()) {
            return self
                .refuse_queued("ERR SELECT is not allowed for a tenant with a key prefix")
                .await;
        }
        let streaming = self.multi.as_ref().is_some_and(|m| m.streaming);
        if !streaming && !self.start_streaming().await {
            return;
        }
        let db = std::str::from_utf8(&req.args[1])
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(m) = self.multi.as_mut() {
            m.count += 1;
            if let Some(db) = db {
                m.select = Some(db);
            }
        }
        self.out.pin.needs.sticky = true;
        self.hold_request(req).await
    }

    /// EXEC, DISCARD or UNWATCH on the pinned connection: the upstream answers, the WATCH and
    /// the transaction end, and the connection goes back if nothing else holds it.
    async fn end_on_pinned(&mut self, req: &Request) {
        self.hold_request(req).await;
        self.out.pin.needs.multi = false;
        self.out.pin.needs.watching = false;
        self.unpin_if_done().await
    }

    async fn refuse_queued(&mut self, msg: &str) {
        metrics::error(ErrorKind::Refused);
        if let Some(m) = self.multi.as_mut() {
            m.failed = true;
        }
        self.reply_error(msg).await
    }

    /// A command that could not be resolved while a transaction is open also aborts it.
    pub(in crate::server::session) fn queue_failed(&mut self) {
        if let Some(m) = self.multi.as_mut() {
            m.failed = true;
        }
    }

    async fn exec(&mut self, multi: Multi, req: &Request) {
        if multi.streaming {
            return self.exec_on_pinned(multi, req).await;
        }
        if multi.failed {
            let abort = self.exec_abort().await;
            if self.shared.upstream.is_some()
                && self
                    .shared
                    .answerer(crate::command::lookup("exec").expect("in the table"), &[])
                    .is_none()
            {
                // The upstream sees the transaction begin and end (an empty one, which touches
                // nothing), so its MONITOR shows `multi` and `exec` as for an aborted transaction
                // sent to it directly (introspection.tcl). Its reply is not the client's.
                self.send_group().await;
                let mut job = BytesMut::from(&multi.begin[..]);
                crate::server::session::forward::append_request(&mut job, req);
                let rx = self.upstream_send(job.freeze(), 2, None).await;
                let _ = self.out.park(rx).await;
                self.took_reply();
            }
            self.out.release_written().await;
            return self.reply_error(&abort).await;
        }
        let exec = crate::command::lookup("exec").expect("in the table");
        if self.shared.answerer(exec, &[]).is_some() {
            if self.client.db != self.configured_db()
                || self.client.tenant.as_ref().is_some_and(|t| t.db.is_some())
            {
                // The engine and its journal know the URL's database only.
                self.out.release_written().await;
                metrics::error(ErrorKind::Refused);
                return self
                    .reply_error(crate::server::session::forward::OTHER_DB)
                    .await;
            }
            return self.exec_locally(multi).await;
        }
        self.shared.fence().await;
        if self.shared.upstream.is_none() {
            return self.reply_error("ERR no upstream").await;
        }
        // Held by a CLIENT PAUSE WRITE in force: on a connection of the client's own, where the
        // upstream holds it without holding anyone else's (see `server::pause`).
        let paused = self.out.pin.held().is_none()
            && multi
                .queued
                .iter()
                .any(|(spec, _)| self.shared.pause.holds(spec));
        if paused && !self.pin().await {
            return self.out.release_written().await;
        }
        // A CLIENT PAUSE or UNPAUSE in it takes effect when EXEC runs: noted now, before
        // anyone can see EXEC's reply (at worst a write is sent on a connection of its
        // client's own for nothing, if EXEC fails).
        for (spec, args) in &multi.queued {
            match (spec.name, crate::server::pause::parse(args)) {
                ("client|pause", Some((ms, true))) => self.shared.pause.write_paused(ms),
                ("client|pause", Some(_)) | ("client|unpause", _) => self.shared.pause.unpaused(),
                _ => {}
            }
        }
        self.send_group().await;
        let slow = multi
            .queued
            .iter()
            .any(|(spec, _)| crate::command::known_slow(spec));
        // MULTI and EXEC go upstream as the client spelled them (MONITOR shows the client's own).
        let mut exec_req = BytesMut::new();
        crate::server::session::forward::append_request(&mut exec_req, req);
        let mut job: Vec<&[u8]> = vec![&multi.begin, &multi.commands, &exec_req];
        job.extend(multi.follow_ups.iter().map(|f| &f[..]));
        let n = multi.queued.len();
        let count = n + 2 + multi.follow_ups.len();
        let keep = Keep::first(n + 1, ReplyRewrite::None, Bytes::new(), self.client.proto);
        if multi.spliced.is_empty() {
            self.out
                .send_job(&self.client, &job, count, slow, keep)
                .await;
        } else {
            let job = Bytes::from(job.concat());
            self.exec_spliced(job, count, slow, keep, multi.spliced)
                .await;
            self.out.release_written().await;
        }
        if paused {
            self.unpin_if_done().await;
        }
    }

    /// EXEC of a streamed transaction: the upstream runs it (a null reply if a WATCHed key
    /// changed); a tenant's follow-ups go right after it. One that respite refused while queueing
    /// is discarded upstream and aborted here, as Redis aborts it.
    async fn exec_on_pinned(&mut self, multi: Multi, req: &Request) {
        self.out.pin.needs.multi = false;
        self.out.pin.needs.watching = false;
        if multi.failed {
            let abort = self.exec_abort().await;
            self.send_group().await;
            let rx = self
                .upstream_send(Bytes::from_static(b"*1\r\n$7\r\nDISCARD\r\n"), 1, None)
                .await;
            let _ = self.out.park(rx).await;
            self.took_reply();
            self.out.release_written().await;
            self.reply_error(&abort).await;
            return self.unpin_if_done().await;
        }
        if let Some(db) = multi.select {
            // (If EXEC fails, the upstream stays where it was, and so does the connection.)
            self.client.db = db;
        }
        self.send_group().await;
        let mut exec_req = BytesMut::new();
        crate::server::session::forward::append_request(&mut exec_req, req);
        let mut job: Vec<&[u8]> = vec![&exec_req];
        job.extend(multi.follow_ups.iter().map(|f| &f[..]));
        let count = job.len();
        let keep = Keep::first(0, ReplyRewrite::None, Bytes::new(), self.client.proto);
        if multi.spliced.is_empty() {
            self.out
                .send_job(&self.client, &job, count, false, keep)
                .await;
        } else {
            let job = Bytes::from(job.concat());
            self.exec_spliced(job, count, false, keep, multi.spliced)
                .await;
            self.out.release_written().await;
        }
        self.unpin_if_done().await
    }

    /// Standalone or local-only: the engine runs the queued commands in order; their replies
    /// make EXEC's array.
    async fn exec_locally(&mut self, multi: Multi) {
        self.out.release_written().await;
        let proto = self.client.proto;
        let mut out = BytesMut::new();
        encode::array_header(&mut out, multi.queued.len());
        // (Rewritten elements are the engine's to answer, rewritten by `standalone`.)
        let spliced: Vec<usize> = multi
            .spliced
            .iter()
            .filter(|l| l.rewrite.is_none())
            .map(|l| l.at)
            .collect();
        for (i, (spec, args)) in multi.queued.into_iter().enumerate() {
            if spliced.contains(&i) {
                out.extend_from_slice(&self.answer_in_exec(spec, &args));
                continue;
            }
            let reply = match self.shared.answerer(spec, &args) {
                None => error_bytes("ERR the upstream came back during the transaction"),
                Some(local) => match self.client.tenant.clone() {
                    None => local.run(|e| e.execute(spec, &args, proto, unix_ms() as u64)),
                    Some(tenant) => match tenant.check(spec, &args, None, unix_ms()) {
                        Ok(plan) => local.run(|e| {
                            crate::server::session::forward::standalone(
                                e,
                                plan,
                                &tenant.prefix,
                                proto,
                            )
                        }),
                        Err(e) => error_bytes(&PolicyError::to_string(&e)),
                    },
                },
            };
            out.extend_from_slice(&reply);
        }
        self.push(Pending::Ready(out.freeze())).await
    }

    /// CLIENT SETNAME and the like inside a transaction: a placeholder holds its place upstream
    /// and respite answers it in EXEC's array ([`super::exec_splice`]).
    async fn queue_spliced(&mut self, spec: &'static CommandSpec, req: &mut Request) {
        let multi = self.multi.as_mut().expect("in a transaction");
        multi.spliced.push(super::exec_splice::Spliced {
            at: multi.count,
            spec,
            args: req.args.clone(),
            rewrite: None,
        });
        multi.count += 1;
        if multi.streaming {
            // The upstream answers the placeholder's QUEUED itself.
            self.out.hold(super::exec_splice::PLACEHOLDER, false);
            return self.grouped().await;
        }
        multi
            .commands
            .extend_from_slice(super::exec_splice::PLACEHOLDER);
        multi.queued.push((spec, std::mem::take(&mut req.args)));
        self.reply_simple("QUEUED").await
    }

    async fn reply_simple(&mut self, s: &str) {
        let mut out = BytesMut::new();
        encode::simple(&mut out, s);
        self.reply(out).await
    }
}

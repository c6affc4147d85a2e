//! Forwarding: what becomes of a command bound upstream before it joins the group the
//! [`outgoing`](super::outgoing) side sends — the near cache has its say first (a hit, a shared
//! fill, or a write noted for read-your-writes, see [`coherence`](crate::cache::coherence)), a
//! tenant's rules rewrite or refuse it, and in standalone and local-only mode the local engine
//! answers instead, in order with everything else. It never waits for a reply: the writer does.
use super::{Keep, Pending, Reader, error_bytes, unix_ms};
use crate::cache::{Lookup, ReadKind};
use crate::command::{self, AclCategories, CommandSpec, Flags};
use crate::local_only::Local;
use crate::metrics::{self, ErrorKind};
use crate::policy::{self, NamespaceRun, NamespaceStep, Plan, ReplyRewrite, Tenant};
use crate::protocol::{Framer, Protocol, Request, encode};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// What a client in a database other than the URL's gets in local-only mode.
pub(super) const OTHER_DB: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which serves the upstream URL's database only (this client SELECTed another)";

impl Reader<'_> {
    /// Add a command to the group bound upstream. Consecutive forwarded commands of one read
    /// travel as one job with one reply slot: one channel send and one wake-up for the lot.
    pub(super) async fn forward(&mut self, spec: &'static CommandSpec, req: &Request) {
        if let Some(local) = self.shared.answerer(spec, &req.args) {
            if self.client.db != self.configured_db() {
                // The engine and its journal know the URL's database only: a SELECT-ed
                // session's write would be replayed into the wrong one.
                metrics::error(ErrorKind::Refused);
                return self.reply_error(OTHER_DB).await;
            }
            if let Some(reply) = self.stale_read(spec, &req.args, &[]) {
                return self.push(Pending::Ready(reply)).await;
            }
            // Standalone or local-only: the local engine answers at once (in order with
            // everything else).
            let reply =
                local.run(|e| e.execute(spec, &req.args, self.client.proto, unix_ms() as u64));
            return self.push(Pending::Ready(reply)).await;
        }
        // Just after an outage: not before the keys written locally are deleted upstream.
        self.shared.fence().await;
        self.note_write_slot(spec, &req.args, &[]);
        if self.shared.cache.is_some() {
            if self.through_cache(spec, &req.args, &[]).await {
                return;
            }
            self.written_through(spec, &req.args, &[]);
        }
        if let Some(function) = script_kind(spec) {
            self.out.mark_script(None, function);
        }
        self.out.hold_request(req, command::known_slow(spec));
        self.grouped().await
    }

    /// Forward under a tenant's rules: prefixed keys, capped TTLs, refusals, namespace-local ops.
    pub(super) async fn forward_for(
        &mut self,
        tenant: Arc<Tenant>,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        let now_ms = unix_ms();
        let plan = tenant.check(spec, &req.args, req.raw.as_ref(), now_ms);
        if tenant.db.is_some() && plan.is_ok() && self.shared.answerer(spec, &req.args).is_some() {
            // The local engine and its recovery know one database, the URL's: a tenant whose
            // keys live in another is not served from it.
            metrics::error(ErrorKind::Refused);
            return self
                .reply_error("TRYAGAIN the upstream is unavailable, and local-only mode does not serve a tenant with a database of its own (tenant.db)")
                .await;
        }
        if let (Some(local), Ok(plan)) = (self.shared.answerer(spec, &req.args), &plan) {
            if let Plan::Namespace(op) = plan
                && op.kind == policy::NamespaceKind::FlushDb
                && self.shared.local_only_serves()
            {
                // A namespace's FLUSHDB deletes what a SCAN finds: on the engine, only the
                // outage's keys, so the upstream's would survive it unsaid.
                metrics::error(ErrorKind::Refused);
                return self.reply_error(crate::local_only::PARTIAL_KEYSPACE).await;
            }
            if let Some(reply) = self.stale_read(spec, &req.args, &tenant.prefix) {
                return self.push(Pending::Ready(reply)).await;
            }
            let reply =
                local.run(|e| standalone(e, plan.clone(), &tenant.prefix, self.client.proto));
            return self.push(Pending::Ready(reply)).await;
        }
        self.shared.fence().await;
        self.note_write_slot(spec, &req.args, &tenant.prefix);
        match plan {
            Err(e) => {
                metrics::error(ErrorKind::Refused);
                policy::metrics::refusal(&tenant.name, &e);
                self.reply_error(&e.to_string()).await
            }
            // Only the tenant's own running script (boxed: rare).
            Ok(_)
                if tenant.has_prefix()
                    && matches!(spec.name, "script|kill" | "function|kill")
                    && let Some(upstream) = self.shared.upstream.clone() =>
            {
                let (owner, prefix) = (tenant.name.as_str().into(), tenant.prefix.clone());
                let function = spec.name == "function|kill";
                let reply = super::commands::script_kill::decide(upstream, owner, prefix, function);
                self.push_task(async move { Some(reply.await) }).await
            }
            // Cacheable reads only ever need their errors unprefixed, and the errors they can
            // get (WRONGTYPE, a bad index) name no key: a cached reply needs no rewrite.
            // The near cache holds the URL's database only.
            Ok(Plan::Forward(f))
                if self.shared.cache.is_some()
                    && tenant.db.is_none()
                    && f.follow_ups.is_empty()
                    && matches!(f.reply, ReplyRewrite::None | ReplyRewrite::Errors)
                    && self.through_cache(spec, &req.args, &tenant.prefix).await => {}
            Ok(Plan::Forward(f)) if f.follow_ups.is_empty() && f.reply == ReplyRewrite::None => {
                // Noted before it joins the group, so its keys are invalidated again once the
                // group that carries it is answered.
                self.written_through(spec, &req.args, &tenant.prefix);
                if let Some(function) = script_kind(spec) {
                    self.out
                        .mark_script(Some(tenant.name.as_str().into()), function);
                }
                self.out.hold(&f.command, command::known_slow(spec));
                self.grouped().await
            }
            Ok(Plan::Forward(f)) => {
                // A job of its own, so its first reply is the command's and the rest are the
                // follow-ups', which the client never sees.
                self.send_group().await;
                self.written_through(spec, &req.args, &tenant.prefix);
                let job: Vec<&[u8]> = std::iter::once(&f.command[..])
                    .chain(f.follow_ups.iter().map(|c| &c[..]))
                    .collect();
                let keep = Keep::first(0, f.reply, tenant.prefix.clone(), self.client.proto);
                if let Some(function) = script_kind(spec) {
                    // After the group before it went, so the mark is this job's.
                    self.out
                        .mark_script(Some(tenant.name.as_str().into()), function);
                }
                let slow = command::known_slow(spec);
                self.out
                    .send_job(&self.client, &job, job.len(), slow, keep)
                    .await;
            }
            // Boxed: rare, and inline its state would grow every idle session.
            Ok(Plan::Namespace(op)) => Box::pin(self.run_namespace(op)).await,
        }
    }

    /// The near cache's part in forwarding a read: answered (or waited on) here, true; or
    /// false, forward it. (Writes are noted by [`Reader::written_through`] right before they
    /// join the group, in whichever path forwards them.)
    pub(super) async fn through_cache(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        prefix: &[u8],
    ) -> bool {
        let Some(cache) = self.shared.cache.as_deref() else {
            return false;
        };
        if self.out.pin.held().is_some() {
            // A pinned client may be in another database, or WATCHing: it reads the upstream.
            return false;
        }
        if let Some(kind) = ReadKind::of(spec) {
            let keys = if kind == ReadKind::Mget {
                &args[1..]
            } else {
                &args[1..2]
            };
            if self.out.unanswered_writes().blocks(prefix, keys.iter()) {
                return false;
            }
            let tenant = self.client.tenant.as_ref().map(|t| t.name.as_str());
            let Some(rules) = cache.rules(tenant) else {
                return false;
            };
            let now = self.out.cache_now(cache);
            let pending = match cache.read(&rules, kind, args, prefix, self.client.proto, now) {
                Lookup::Hit(bytes) => {
                    self.out.ready_reply(&self.client, bytes).await;
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
    pub(super) fn stale_read(
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
        cache.stale(&rules, kind, args, prefix, self.client.proto)
    }

    /// In a cluster, note the slot of a write's first key (`prefix` + key, as the node gets it):
    /// the client's WAIT goes to that slot's primary (see [`Reader::pin_for`]).
    fn note_write_slot(&mut self, spec: &'static CommandSpec, args: &[Bytes], prefix: &[u8]) {
        if !spec.flags.contains(Flags::WRITE)
            || self
                .shared
                .upstream
                .as_ref()
                .is_none_or(|u| u.cluster().is_none())
        {
            return;
        }
        let key = command::keys(spec, args)
            .ok()
            .and_then(|k| k.positions().next())
            .and_then(|pos| args.get(pos));
        if let Some(key) = key {
            self.client.last_write_slot = Some(crate::upstream::cluster::slot::key_slot(
                &[prefix, &key[..]].concat(),
            ));
        }
    }

    /// Note a write about to join the group bound upstream (see
    /// [`note_write`](crate::cache::coherence::note_write)).
    pub(super) fn written_through(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        prefix: &[u8],
    ) {
        if let Some(cache) = self.shared.cache.as_deref()
            // The near cache holds the configured database only.
            && self.client.db == self.configured_db()
            && (spec.flags.contains(Flags::WRITE) || spec.acl.contains(AclCategories::SCRIPTING))
        {
            self.out.note_write(cache, spec, args, prefix);
        }
    }

    /// Drive a namespace-local operation (DBSIZE, FLUSHDB, RANDOMKEY for a prefixed tenant) to
    /// its end before reading on: its upstream calls go through the client's own connection, one
    /// at a time, so they run after everything the client sent before and before what follows.
    pub(super) async fn run_namespace(&mut self, op: policy::NamespaceOp) {
        self.send_group().await;
        let (mut run, mut cmd) = NamespaceRun::start(op, self.client.proto);
        let out = loop {
            let answered = self.upstream_send(cmd, 1, None).await.await;
            self.took_reply();
            let reply = match answered {
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
            cache.flush_sent_through();
        }
        match out {
            Ok(bytes) => self.push(Pending::Ready(bytes)).await,
            Err(msg) => {
                metrics::error(ErrorKind::Upstream);
                self.reply_error(&msg).await
            }
        }
    }
}

/// `Some(true)` for FCALL and FCALL_RO, `Some(false)` for the EVAL family, else `None`: the
/// commands that run a script a SCRIPT KILL or FUNCTION KILL could end.
fn script_kind(spec: &CommandSpec) -> Option<bool> {
    match spec.name {
        "fcall" | "fcall_ro" => Some(true),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => Some(false),
        _ => None,
    }
}

/// A request as the upstream gets it: the client's own bytes when it sent an array, otherwise
/// (inline) encoded from its arguments.
pub(super) fn append_request(out: &mut BytesMut, req: &Request) {
    match &req.raw {
        Some(raw) => out.extend_from_slice(raw),
        None => encode::command(out, &req.args),
    }
}

/// [`append_request`] as bytes of their own (the client's, uncopied, when it sent an array).
pub(super) fn request_bytes(req: &Request) -> Bytes {
    match &req.raw {
        Some(raw) => raw.clone(),
        None => {
            let mut out = BytesMut::new();
            encode::command(&mut out, &req.args);
            out.freeze()
        }
    }
}

impl Reader<'_> {
    /// Forward `command` on the client's connection (behind the recovery fence) and queue its
    /// reply rewritten by `rewrite` (an error reply goes through as the upstream sent it). The
    /// upstream's reply is not charged to the client's budget; the rewritten one is, since that
    /// is what the client owes. For counts respite corrects (PUBLISH's receivers, INFO's
    /// `connected_clients`).
    pub(super) async fn forward_rewritten(
        &mut self,
        command: Bytes,
        rewrite: impl FnOnce(Bytes) -> Bytes + Send + 'static,
    ) {
        self.shared.fence().await;
        let upstream = self.out.send(&self.client, command, 1, None, false).await;
        self.push_task(async move { upstream.await.ok().map(|reply| reply.map(rewrite)) })
            .await;
    }

    /// Queue a reply computed by a task of its own (so later commands are read meanwhile),
    /// charged to the client's budget as an upstream reply is: the writer releases what it
    /// writes. `None` from the task drops the slot unanswered, which tells the writer what a
    /// dropped job would.
    async fn push_task(
        &mut self,
        reply: impl Future<Output = Option<crate::upstream::Reply>> + Send + 'static,
    ) {
        let budget = self.out.budget().cloned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let Some(reply) = reply.await else { return };
            if let (Ok(bytes), Some(b)) = (&reply, budget) {
                b.charge(bytes.len());
            }
            let _ = tx.send(reply);
        });
        self.push(Pending::Upstream {
            rx,
            count: 1,
            keep: Keep::All,
        })
        .await
    }
}

/// Carry out a tenant's plan on the local engine (standalone or local-only mode): the rewritten
/// command, its follow-ups (replies discarded) and the reply rewrite, or a namespace-local run.
pub(super) fn standalone(engine: &Local<'_>, plan: Plan, prefix: &[u8], proto: Protocol) -> Bytes {
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

//! `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT TRACKINGINFO` and `CLIENT GETREDIR` for
//! respite's clients: client-side caching through the proxy, with the upstream doing the
//! tracking on a connection of the client's own.
//!
//! The design: a client that turns tracking on keeps a pinned upstream connection
//! ([`crate::upstream::Pinned`]) for as long as it tracks, and respite turns `CLIENT TRACKING`
//! on there with the client's own options (tenant prefixes applied to `PREFIX`; a prefixed
//! tenant's `BCAST` without a prefix becomes `PREFIX <its prefix>`). Every command the client
//! sends runs on that connection, so the upstream tracks exactly the keys it read, honours
//! `OPTIN`/`OPTOUT` with `CLIENT CACHING` (sent on the same connection just before the read),
//! `NOLOOP` (its writes come from that connection), `BCAST`, and applies its own bound on
//! tracked keys (`tracking-table-max-keys`, evicting with an invalidation). respite keeps no
//! per-key table, so it holds no memory per tracked key.
//! - Without `REDIRECT` (RESP3), the connection's invalidation pushes are rewritten for the
//!   client (tenant prefix taken off; a key outside its namespace dropped) and written to it in
//!   their place between the replies ([`invalidations`]).
//! - With `REDIRECT <respite client id>`, respite opens a receiving connection
//!   ([`crate::upstream::PinnedPool::redirect_target`]) and redirects the upstream's messages to
//!   it; from there they go to the target client: an `invalidate` push (RESP3), or a
//!   `__redis__:invalidate` message if it is a RESP2 client subscribed to that channel, which
//!   respite serves itself ([`crate::pubsub`]). A target that is gone makes it a broken
//!   redirect (`tracking-redir-broken` to a RESP3 client, `broken_redirect` in TRACKINGINFO).
//!
//! # Invariants
//! - A tracked client never goes without an invalidation it would have had from Redis: when
//!   respite loses the upstream's tracking of it (its connection, or the receiving one, fails;
//!   the upstream goes down), it is sent `invalidate` with a null (flush everything), after the
//!   replies the lost connection gave. Until tracking is acknowledged again on a new connection
//!   (tried before each command; local-only mode answers from the local engine meanwhile), every
//!   command's reply is followed by another such flush, so nothing it reads then stays cached.
//!   So is every reply the local engine gives it in local-only mode, whether or not its
//!   connection survived the outage (a frozen upstream keeps it open).
//! - A tenant sees only its own keys, un-prefixed: the upstream can only track keys the
//!   client's connection read or the prefixes respite registered for it, which are inside its
//!   namespace, and a key outside it is dropped here all the same. A redirect target must be a
//!   client of the same prefixed tenant.
//!
//! Standalone mode (no upstream) refuses `CLIENT TRACKING ON`: it is the upstream that tracks.
mod options;
mod sinks;

mod invalidations;

use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::{Protocol, Request, encode};
use crate::server::session::{Pending, Reader, error_bytes};
use bytes::{Bytes, BytesMut};
use invalidations::FLUSH_ALL;
pub(crate) use invalidations::Invalidations;
use options::{OnError, Options, parse, upstream_command};
use sinks::{ConnSink, Target, receive};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The CLIENT subcommands this module answers.
pub(in crate::server::session) fn takes(name: &str) -> bool {
    matches!(
        name,
        "client|tracking" | "client|caching" | "client|trackinginfo" | "client|getredir"
    )
}

/// A client's tracking while it is on.
pub(crate) struct Tracking {
    opts: Options,
    /// Set once the upstream's tracking of this client is gone (see the invariants).
    lost: Arc<AtomicBool>,
    /// The redirect target was gone when an invalidation was due.
    broken: Arc<AtomicBool>,
    /// Where invalidations go with REDIRECT (`None`: in band).
    target: Option<Arc<Target>>,
    /// Ends the receiving connection's task (REDIRECT) when tracking ends.
    _stop: Option<DropGuard>,
    /// CLIENT CACHING YES/NO for the next command.
    caching: bool,
    /// After a failed attempt to have tracking back, not before this (a command each time
    /// would each wait for a connect that fails).
    retry_at: Option<tokio::time::Instant>,
    /// The protocol its connection's sink was made for (HELLO may change the client's).
    proto: Protocol,
}

impl Tracking {
    /// Whether it tracks in BCAST mode (CLIENT LIST's `B`).
    pub(crate) fn bcast(&self) -> bool {
        self.opts.bcast
    }
}

/// How long after a failed attempt to track again the next one is made.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for Tracking {
    fn drop(&mut self) {
        metrics::tracking_clients().decrement(1.0);
    }
}

impl Reader<'_> {
    /// The tracking state's before-command step: once tracking was lost, try to have it again
    /// before the command runs (not in local-only mode: the local engine answers then).
    pub(in crate::server::session) async fn tracked_before(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        if !self.tracking_lost() || self.shared.answerer(spec, &req.args).is_some() {
            return;
        }
        let Some(t) = self.tracking.as_ref() else {
            return;
        };
        if t.retry_at
            .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return;
        }
        let opts = t.opts.clone();
        self.send_group().await;
        self.barrier().await;
        // The failed lease and whatever state it held go; the new one gets tracking first.
        self.out.pin.drop_lease();
        let reply = self.enable(opts, Vec::new(), true).await;
        if &reply[..] != b"+OK\r\n"
            && let Some(t) = self.tracking.as_mut()
        {
            t.retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }

    /// The after-command step: while tracking is lost, or the local engine answered (`local`:
    /// local-only mode, whose reads the upstream does not track), nothing read may stay cached.
    pub(in crate::server::session) async fn tracked_after(
        &mut self,
        spec: &'static CommandSpec,
        local: bool,
    ) {
        let Some(t) = self.tracking.as_mut() else {
            return;
        };
        // As Redis: any command but a CLIENT subcommand uses CLIENT CACHING up.
        if !spec.name.starts_with("client|") {
            t.caching = false;
        }
        if t.proto != self.client.proto {
            // HELLO switched the protocol (and the pinned connection's with it).
            t.proto = self.client.proto;
            let (target, lost) = (t.target.clone(), t.lost.clone());
            let sink = self.conn_sink(target, lost);
            if let Some(p) = self.out.pin.held() {
                p.track(Some(sink));
            }
        }
        if !local && !self.tracking_lost() {
            return;
        }
        let t = self.tracking.as_ref().expect("checked above");
        match &t.target {
            Some(target) => target.deliver(None),
            None if self.client.proto == Protocol::Resp3 => {
                self.push(Pending::Ready(Bytes::from_static(FLUSH_ALL)))
                    .await
            }
            None => {}
        }
    }

    /// The pinned connection's sink for this client as it is now: its queue for in-band pushes
    /// when it speaks RESP3 (a RESP2 client without REDIRECT gets nothing, as from Redis: it has
    /// no pushes), or the REDIRECT `target`.
    fn conn_sink(&self, target: Option<Arc<Target>>, lost: Arc<AtomicBool>) -> Arc<ConnSink> {
        let inband = target.is_none() && self.client.proto == Protocol::Resp3;
        Arc::new(ConnSink {
            inband: self.invalidations.get().filter(|_| inband).cloned(),
            target,
            prefix: self
                .client
                .tenant
                .as_ref()
                .map(|t| t.prefix.clone())
                .unwrap_or_default(),
            lost,
        })
    }

    fn tracking_lost(&self) -> bool {
        self.tracking.as_ref().is_some_and(|t| {
            t.lost.load(Ordering::Acquire) || self.out.pin.held().is_none_or(|p| p.is_closed())
        })
    }

    /// A job whose reply the session's reader took itself: it counts as written for the
    /// tracking pushes' order (see [`invalidations`]).
    pub(in crate::server::session) fn took_reply(&self) {
        if let Some(i) = self.invalidations.get() {
            i.consumed();
        }
    }

    pub(in crate::server::session) async fn tracking_command(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        if let Some(tenant) = self.client.tenant.clone()
            && !tenant.permits(spec)
        {
            let e = tenant.no_perm(spec);
            crate::policy::metrics::refusal(&tenant.name, &e);
            return self.reply_error(&e.to_string()).await;
        }
        match spec.name {
            "client|tracking" => {
                self.client_tracking(req).await;
                // CLIENT LIST shows it (`t`, `B`).
                self.publish();
            }
            "client|caching" => self.client_caching(req).await,
            "client|getredir" => {
                let id = match &self.tracking {
                    None => -1,
                    Some(t) => t.opts.redirect.map_or(0, |id| id as i64),
                };
                let mut out = BytesMut::new();
                encode::integer(&mut out, id);
                self.reply(out).await
            }
            _ => {
                let out = self.tracking_info();
                self.reply(out).await
            }
        }
    }

    async fn client_tracking(&mut self, req: &Request) {
        let (on, opts) = match parse(&req.args) {
            Ok(p) => p,
            Err(e) => return self.refuse(e).await,
        };
        if !on {
            self.tracking_off().await;
            let mut out = BytesMut::new();
            encode::simple(&mut out, "OK");
            return self.reply(out).await;
        }
        if self.shared.upstream.is_none() {
            return self.refuse(OnError::Standalone).await;
        }
        if let Some(id) = opts.redirect.filter(|id| *id != 0) {
            let tenant = self.prefixed_tenant();
            let exists = self
                .shared
                .clients
                .find(id)
                .is_some_and(|e| e.prefixed_tenant() == tenant);
            if !exists {
                return self.refuse(OnError::NoSuchClient).await;
            }
        }
        let mut opts = opts;
        if opts.redirect == Some(0) {
            opts.redirect = None;
        }
        // Redis keeps the prefixes of earlier calls (it checks BCAST and OPTIN/OPTOUT switches,
        // and new prefixes against the ones it has, itself, on the connection that tracks). So
        // the upstream is sent only this call's prefixes while the connection that has the
        // earlier ones still tracks (sent again they would overlap themselves), and respite
        // records them all for a connection opened after a loss.
        let earlier = match &self.tracking {
            Some(t) if opts.bcast && !self.tracking_lost() => t.opts.prefixes.clone(),
            Some(t) if opts.bcast => {
                let mut all = t.opts.prefixes.clone();
                all.extend(opts.prefixes.iter().cloned());
                opts.prefixes = all;
                Vec::new()
            }
            _ => Vec::new(),
        };
        let reply = self.enable(opts, earlier, false).await;
        self.push(Pending::Ready(reply)).await;
        self.unpin_if_done().await
    }

    fn prefixed_tenant(&self) -> Option<String> {
        self.client
            .tenant
            .as_ref()
            .filter(|t| t.has_prefix())
            .map(|t| t.name.clone())
    }

    async fn refuse(&mut self, e: OnError) {
        metrics::error(ErrorKind::Refused);
        self.reply_error(&e.to_string()).await
    }

    /// Turn tracking on (or change its options) on the client's pinned connection, taking one
    /// if it has none: the upstream's reply (`+OK`, or its refusal). `earlier`: BCAST prefixes
    /// the connection already has (not sent again; recorded with `opts`'s). `quiet`: after a
    /// loss, nothing is queued for the client.
    async fn enable(&mut self, opts: Options, earlier: Vec<Bytes>, quiet: bool) -> Bytes {
        let upstream = self.shared.upstream.clone().expect("checked by the caller");
        self.send_group().await;
        self.barrier().await;
        if self.out.pin.held().is_none() {
            let gone = self.out.pin.gone_token();
            match upstream.pinned().take(self.client.proto, gone, None).await {
                Ok(p) => self.out.pin.lease(p),
                Err(e) => {
                    metrics::error(ErrorKind::Refused);
                    return error_bytes(&e.to_string());
                }
            }
            if let Err(msg) = self.enter_tenant_db().await {
                self.unpin().await;
                return error_bytes(&msg);
            }
        }
        let limit = self
            .shared
            .pubsub
            .as_ref()
            .map_or(1 << 20, |h| h.output_limit);
        let inv = self
            .invalidations
            .get_or_init(|| Arc::new(Invalidations::new(limit)))
            .clone();
        inv.restart();
        let prefix = self
            .client
            .tenant
            .as_ref()
            .map(|t| t.prefix.clone())
            .unwrap_or_default();
        let lost = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(AtomicBool::new(false));
        let source = (self.client.proto == Protocol::Resp3).then(|| inv.clone());
        let target = opts.redirect.map(|id| {
            Arc::new(Target {
                shared: self.shared.clone(),
                id,
                tenant: self.prefixed_tenant(),
                prefix: prefix.clone(),
                source,
                broken: broken.clone(),
            })
        });
        let receiver = match &target {
            Some(_) => match upstream.pinned().redirect_target().await {
                Ok(r) => Some(r),
                Err(e) => {
                    metrics::error(ErrorKind::Refused);
                    return error_bytes(&e.to_string());
                }
            },
            None => None,
        };
        let sink = self.conn_sink(target.clone(), lost.clone());
        let pinned = self.out.pin.held().expect("taken above");
        pinned.track(Some(sink.clone()));
        let command = upstream_command(&opts, &prefix, receiver.as_ref().map(|r| r.0));
        let reply = match self.upstream_send(command, 1, None).await.await {
            Ok(Ok(bytes)) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        };
        self.took_reply();
        if &reply[..] != b"+OK\r\n" {
            if !quiet && let Some(t) = self.tracking.as_ref() {
                // Refused: the tracking that was on stays as it was.
                let keep = self.conn_sink(t.target.clone(), t.lost.clone());
                if let Some(p) = self.out.pin.held() {
                    p.track(Some(keep));
                }
            } else if !quiet && let Some(p) = self.out.pin.held() {
                p.track(None);
            }
            return reply;
        }
        let mut opts = opts;
        if !earlier.is_empty() {
            let mut all = earlier;
            all.extend(opts.prefixes.iter().cloned());
            opts.prefixes = all;
        }
        let stop = receiver.map(|(_, conn)| {
            let stop = CancellationToken::new();
            tokio::spawn(receive(conn, sink, stop.clone()));
            stop.drop_guard()
        });
        // Counted in here, out when dropped (a replaced one included).
        metrics::tracking_clients().increment(1.0);
        self.tracking = Some(Box::new(Tracking {
            opts,
            lost,
            broken,
            target,
            _stop: stop,
            caching: false,
            retry_at: None,
            proto: self.client.proto,
        }));
        reply
    }

    /// CLIENT TRACKING OFF (and RESET): the upstream stops tracking the connection, which then
    /// goes back to the pool unless other state keeps it.
    pub(in crate::server::session) async fn tracking_off(&mut self) {
        if self.tracking.take().is_none() {
            return;
        }
        if let Some(p) = self.out.pin.held().filter(|p| !p.is_closed()) {
            p.track(None);
            let off = Bytes::from_static(b"*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$3\r\nOFF\r\n");
            let rx = self.upstream_send(off, 1, None).await;
            let _ = rx.await;
            self.took_reply();
        }
    }

    async fn client_caching(&mut self, req: &Request) {
        let mode = self
            .tracking
            .as_ref()
            .map(|t| (t.opts.optin, t.opts.optout));
        let msg = match mode {
            Some((true, _)) | Some((_, true)) => None,
            _ => Some(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            ),
        };
        let (optin, optout) = mode.unwrap_or_default();
        let yes = req.args[2].eq_ignore_ascii_case(b"yes");
        let msg = msg.or(match () {
            _ if !yes && !req.args[2].eq_ignore_ascii_case(b"no") => Some("ERR syntax error"),
            _ if yes && !optin => {
                Some("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
            }
            _ if !yes && !optout => {
                Some("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
            }
            _ => None,
        });
        if let Some(msg) = msg {
            return self.reply_error(msg).await;
        }
        if let Some(t) = self.tracking.as_mut() {
            t.caching = true;
        }
        // On the tracking connection, just before the command it is for.
        self.hold_request(req).await
    }

    /// CLIENT TRACKINGINFO, from respite's own state (Redis 7's reply).
    fn tracking_info(&self) -> BytesMut {
        let proto = self.client.proto;
        let mut flags: Vec<&str> = Vec::new();
        let (redirect, prefixes) = match &self.tracking {
            None => {
                flags.push("off");
                (-1, Vec::new())
            }
            Some(t) => {
                let o = &t.opts;
                flags.push("on");
                if o.bcast {
                    flags.push("bcast");
                }
                if o.optin {
                    flags.push("optin");
                    if t.caching {
                        flags.push("caching-yes");
                    }
                }
                if o.optout {
                    flags.push("optout");
                    if t.caching {
                        flags.push("caching-no");
                    }
                }
                if o.noloop {
                    flags.push("noloop");
                }
                if t.broken.load(Ordering::Acquire) {
                    flags.push("broken_redirect");
                }
                let mut prefixes = match (o.bcast, o.prefixes.is_empty()) {
                    // BCAST without a prefix is the empty prefix to Redis.
                    (true, true) => vec![Bytes::new()],
                    _ => o.prefixes.clone(),
                };
                // Redis keeps them in a radix tree: sorted, each once.
                prefixes.sort();
                prefixes.dedup();
                (o.redirect.map_or(0, |id| id as i64), prefixes)
            }
        };
        let mut out = BytesMut::new();
        encode::map_header(&mut out, proto, 3);
        encode::bulk(&mut out, b"flags");
        match proto {
            Protocol::Resp3 => out.extend_from_slice(format!("~{}\r\n", flags.len()).as_bytes()),
            Protocol::Resp2 => encode::array_header(&mut out, flags.len()),
        }
        for f in flags {
            encode::bulk(&mut out, f.as_bytes());
        }
        encode::bulk(&mut out, b"redirect");
        encode::integer(&mut out, redirect);
        encode::bulk(&mut out, b"prefixes");
        encode::array_header(&mut out, prefixes.len());
        for p in prefixes {
            encode::bulk(&mut out, &p);
        }
        out
    }
}

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
//!   their place between the replies ([`super::invalidations`]).
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
use super::invalidations::{FLUSH_ALL, Invalidations};
use super::{Pending, Reader, error_bytes, stateful::Pin};
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::resp3::{self, Push};
use crate::protocol::{Protocol, ReplyScanner, Request, encode};
use crate::upstream::{Monitor, PushSink};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncReadExt;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The CLIENT subcommands this module answers.
pub(super) fn takes(name: &str) -> bool {
    matches!(
        name,
        "client|tracking" | "client|caching" | "client|trackinginfo" | "client|getredir"
    )
}

/// `CLIENT TRACKING ON`'s options, as the client gave them.
#[derive(Clone, Default, Debug, PartialEq)]
struct Options {
    redirect: Option<u64>,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    prefixes: Vec<Bytes>,
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
}

/// How long after a failed attempt to track again the next one is made.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for Tracking {
    fn drop(&mut self) {
        metrics::tracking_clients().decrement(1.0);
    }
}

/// Why `CLIENT TRACKING ON` is refused by respite itself.
#[derive(Debug, thiserror::Error)]
enum OnError {
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR A client can only redirect to a single other client")]
    TwoRedirects,
    #[error("ERR The client ID you want redirect to does not exist")]
    NoSuchClient,
    #[error(
        "ERR CLIENT TRACKING is not supported by respite without an upstream: the upstream tracks the keys"
    )]
    Standalone,
}

/// Parse `CLIENT TRACKING ON|OFF [options]` (Redis's order: options first, then ON/OFF).
fn parse(args: &[Bytes]) -> Result<(bool, Options), OnError> {
    let mut o = Options::default();
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        let a = &args[j];
        let is = |w: &[u8]| a.eq_ignore_ascii_case(w);
        if is(b"redirect") && more {
            j += 1;
            if o.redirect.is_some() {
                return Err(OnError::TwoRedirects);
            }
            let id = std::str::from_utf8(&args[j])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(OnError::NotInteger)?;
            // 0 is "no redirect" to Redis; a negative id names no client.
            o.redirect = Some(u64::try_from(id).map_err(|_| OnError::NoSuchClient)?);
        } else if is(b"bcast") {
            o.bcast = true;
        } else if is(b"optin") {
            o.optin = true;
        } else if is(b"optout") {
            o.optout = true;
        } else if is(b"noloop") {
            o.noloop = true;
        } else if is(b"prefix") && more {
            j += 1;
            o.prefixes.push(args[j].clone());
        } else {
            return Err(OnError::Syntax);
        }
        j += 1;
    }
    match &args[2] {
        a if a.eq_ignore_ascii_case(b"on") => Ok((true, o)),
        a if a.eq_ignore_ascii_case(b"off") => Ok((false, o)),
        _ => Err(OnError::Syntax),
    }
}

/// The command the upstream gets: the tenant's prefix on every `PREFIX` (and as the prefix of a
/// prefixed tenant's `BCAST`), `REDIRECT` to respite's receiving connection.
fn upstream_command(o: &Options, prefix: &[u8], redirect: Option<i64>) -> Bytes {
    let mut args: Vec<Vec<u8>> = vec![b"CLIENT".to_vec(), b"TRACKING".to_vec(), b"ON".to_vec()];
    if let Some(id) = redirect {
        args.push(b"REDIRECT".to_vec());
        args.push(id.to_string().into_bytes());
    }
    for (on, word) in [
        (o.bcast, &b"BCAST"[..]),
        (o.optin, b"OPTIN"),
        (o.optout, b"OPTOUT"),
        (o.noloop, b"NOLOOP"),
    ] {
        if on {
            args.push(word.to_vec());
        }
    }
    for p in &o.prefixes {
        args.push(b"PREFIX".to_vec());
        args.push([prefix, &p[..]].concat());
    }
    if o.bcast && o.prefixes.is_empty() && !prefix.is_empty() {
        args.push(b"PREFIX".to_vec());
        args.push(prefix.to_vec());
    }
    let mut out = BytesMut::new();
    encode::command(&mut out, &args);
    out.freeze()
}

/// An invalidation's keys as a client of `prefix` sees them: `None` if none of them is its.
fn unprefixed(keys: Vec<Bytes>, prefix: &[u8]) -> Option<Vec<Bytes>> {
    if prefix.is_empty() {
        return Some(keys);
    }
    let mine: Vec<Bytes> = keys
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .map(|k| k.slice(prefix.len()..))
        .collect();
    (!mine.is_empty()).then_some(mine)
}

/// `invalidate` for these keys (`None`: everything), as a RESP3 push or, for a RESP2 client
/// subscribed to `__redis__:invalidate`, as a message on it.
fn frame(proto: Protocol, keys: Option<&[Bytes]>) -> Bytes {
    let mut out = BytesMut::new();
    match proto {
        Protocol::Resp3 => out.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n"),
        Protocol::Resp2 => {
            out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n")
        }
    }
    match keys {
        Some(keys) => {
            encode::array_header(&mut out, keys.len());
            for k in keys {
                encode::bulk(&mut out, k);
            }
        }
        None => encode::null(&mut out, proto),
    }
    out.freeze()
}

/// The pinned connection's side: its pushes (in band) and its failure.
struct ConnSink {
    /// The client's own queue; `None` with REDIRECT (the upstream sends nothing in band then).
    inband: Option<Arc<Invalidations>>,
    target: Option<Arc<Target>>,
    prefix: Bytes,
    lost: Arc<AtomicBool>,
}

impl PushSink for ConnSink {
    fn delivered(&self) {
        if let Some(i) = &self.inband {
            i.delivered();
        }
    }

    fn push(&self, frame_bytes: Bytes, mid_job: bool) {
        let Some(i) = &self.inband else { return };
        let keys = match resp3::push(&frame_bytes) {
            Push::Keys(keys) => keys,
            Push::All => {
                metrics::tracking_invalidations(1);
                return i.push(Bytes::from_static(FLUSH_ALL), mid_job);
            }
            Push::Other => return,
        };
        if self.prefix.is_empty() {
            metrics::tracking_invalidations(1);
            return i.push(frame_bytes, mid_job);
        }
        if let Some(keys) = unprefixed(keys, &self.prefix) {
            metrics::tracking_invalidations(1);
            i.push(frame(Protocol::Resp3, Some(&keys)), mid_job);
        }
    }

    fn lost(&self) {
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics::tracking_lost();
        if let Some(i) = &self.inband {
            i.push(Bytes::from_static(FLUSH_ALL), false);
        }
        if let Some(t) = &self.target {
            t.deliver(None);
        }
    }
}

/// Where a REDIRECT client's invalidations go.
struct Target {
    shared: Arc<crate::server::Shared>,
    id: u64,
    /// The source's prefixed tenant: the target must be of the same one.
    tenant: Option<String>,
    prefix: Bytes,
    /// The source, told of a broken redirect when it speaks RESP3.
    source: Option<Arc<Invalidations>>,
    broken: Arc<AtomicBool>,
}

impl Target {
    fn deliver(&self, keys: Option<&[Bytes]>) {
        let entry = self
            .shared
            .clients
            .find(self.id)
            .filter(|e| e.prefixed_tenant() == self.tenant);
        let Some(entry) = entry else {
            self.broken.store(true, Ordering::Release);
            if let Some(source) = &self.source {
                let mut out = BytesMut::from(&b">2\r\n$21\r\ntracking-redir-broken\r\n"[..]);
                encode::integer(&mut out, self.id as i64);
                source.push(out.freeze(), false);
            }
            return;
        };
        let sent = if entry.resp() >= 3 {
            entry
                .outbox
                .as_ref()
                .map(|o| o.push(frame(Protocol::Resp3, keys)))
        } else {
            self.shared
                .pubsub
                .as_ref()
                .and_then(|h| h.tracking_subscriber(self.id))
                .map(|(o, _)| o.push(frame(Protocol::Resp2, keys)))
        };
        if sent.is_some() {
            metrics::tracking_invalidations(1);
        }
    }
}

/// Read the receiving connection until it fails or tracking ends, handing each invalidation to
/// the target; a failure is a loss of tracking (the target is told to flush).
async fn receive(mut conn: Monitor, sink: Arc<ConnSink>, stop: CancellationToken) {
    let target = sink.target.clone().expect("a redirect sink");
    let mut buf = BytesMut::new();
    let mut scanner = ReplyScanner::new();
    loop {
        let read = tokio::select! {
            r = conn.read.read_buf(&mut buf) => r,
            _ = stop.cancelled() => return,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return sink.lost();
        }
        loop {
            let found = match scanner.scan(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return sink.lost(),
            };
            let frame = buf.split_to(found.len).freeze();
            match resp3::push(&frame) {
                Push::Keys(keys) => {
                    if let Some(keys) = unprefixed(keys, &target.prefix) {
                        target.deliver(Some(&keys));
                    }
                }
                Push::All => target.deliver(None),
                Push::Other => {}
            }
        }
    }
}

impl Reader<'_> {
    /// The tracking state's before-command step: once tracking was lost, try to have it again
    /// before the command runs (not in local-only mode: the local engine answers then).
    pub(super) async fn tracked_before(&mut self, spec: &'static CommandSpec, req: &Request) {
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
        self.pinned = None;
        self.pin = Pin::default();
        let reply = self.enable(opts, true).await;
        if &reply[..] != b"+OK\r\n"
            && let Some(t) = self.tracking.as_mut()
        {
            t.retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }

    /// The after-command step: while tracking is lost, or the local engine answered (`local`:
    /// local-only mode, whose reads the upstream does not track), nothing read may stay cached.
    pub(super) async fn tracked_after(&mut self, spec: &'static CommandSpec, local: bool) {
        let Some(t) = self.tracking.as_mut() else {
            return;
        };
        if spec.name != "client|caching" {
            t.caching = false;
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

    fn tracking_lost(&self) -> bool {
        self.tracking.as_ref().is_some_and(|t| {
            t.lost.load(Ordering::Acquire) || self.pinned.as_ref().is_none_or(|p| p.is_closed())
        })
    }

    /// A job whose reply the session's reader took itself: it counts as written for the
    /// tracking pushes' order (see [`super::invalidations`]).
    pub(super) fn took_reply(&self) {
        if let Some(i) = self.invalidations.get() {
            i.consumed();
        }
    }

    pub(super) async fn tracking_command(&mut self, spec: &'static CommandSpec, req: &Request) {
        if let Some(tenant) = self.client.tenant.clone()
            && !tenant.permits(spec)
        {
            let e = tenant.no_perm(spec);
            crate::policy::metrics::refusal(&tenant.name, &e);
            return self.reply_error(&e.to_string()).await;
        }
        match spec.name {
            "client|tracking" => self.client_tracking(req).await,
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
        if let Some(t) = &self.tracking
            && opts.bcast
        {
            // Redis keeps the prefixes of earlier calls (it checks BCAST and OPTIN/OPTOUT
            // switches itself, on the connection that tracks).
            let mut all = t.opts.prefixes.clone();
            all.extend(opts.prefixes.iter().cloned());
            opts.prefixes = all;
        }
        let reply = self.enable(opts, false).await;
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
    /// if it has none: the upstream's reply (`+OK`, or its refusal). `quiet`: after a loss,
    /// nothing is queued for the client.
    async fn enable(&mut self, opts: Options, quiet: bool) -> Bytes {
        let upstream = self.shared.upstream.clone().expect("checked by the caller");
        self.send_group().await;
        self.barrier().await;
        if self.pinned.is_none() {
            let gone = self.gone_token();
            match upstream.pinned().take(self.client.proto, gone).await {
                Ok(p) => self.pinned = Some(p),
                Err(e) => {
                    metrics::error(ErrorKind::Refused);
                    return error_bytes(&e.to_string());
                }
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
        let sink = Arc::new(ConnSink {
            inband: target.is_none().then(|| inv.clone()),
            target: target.clone(),
            prefix: prefix.clone(),
            lost: lost.clone(),
        });
        let pinned = self.pinned.as_ref().expect("taken above");
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
                let keep = Arc::new(ConnSink {
                    inband: t.target.is_none().then(|| inv.clone()),
                    target: t.target.clone(),
                    prefix,
                    lost: t.lost.clone(),
                });
                if let Some(p) = &self.pinned {
                    p.track(Some(keep));
                }
            } else if !quiet && let Some(p) = &self.pinned {
                p.track(None);
            }
            return reply;
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
        }));
        reply
    }

    /// CLIENT TRACKING OFF (and RESET): the upstream stops tracking the connection, which then
    /// goes back to the pool unless other state keeps it.
    pub(super) async fn tracking_off(&mut self) {
        if self.tracking.take().is_none() {
            return;
        }
        if let Some(p) = self.pinned.as_ref().filter(|p| !p.is_closed()) {
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
        super::forward::append_request(&mut self.group, req);
        self.grouped().await
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
                let prefixes = match (o.bcast, o.prefixes.is_empty()) {
                    // BCAST without a prefix is the empty prefix to Redis.
                    (true, true) => vec![Bytes::new()],
                    _ => o.prefixes.clone(),
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn options_parse_as_redis_does() {
        let (on, o) = parse(&args("CLIENT TRACKING on BCAST prefix a PREFIX b noloop")).unwrap();
        assert!(on && o.bcast && o.noloop);
        assert_eq!(o.prefixes, vec![Bytes::from("a"), Bytes::from("b")]);
        assert!(matches!(
            parse(&args("CLIENT TRACKING on REDIRECT 1 REDIRECT 2")),
            Err(OnError::TwoRedirects)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING on REDIRECT x")),
            Err(OnError::NotInteger)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING maybe")),
            Err(OnError::Syntax)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING on PREFIX")),
            Err(OnError::Syntax)
        ));
    }

    #[test]
    fn a_tenant_tracks_inside_its_namespace() {
        let o = Options {
            bcast: true,
            prefixes: vec![Bytes::from("user:")],
            ..Default::default()
        };
        let cmd = upstream_command(&o, b"t1:", Some(7));
        let want = "*8\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$8\r\nREDIRECT\r\n$1\r\n7\r\n$5\r\nBCAST\r\n$6\r\nPREFIX\r\n$8\r\nt1:user:\r\n";
        assert_eq!(&cmd[..], want.as_bytes());
        let bcast = Options {
            bcast: true,
            ..Default::default()
        };
        let cmd = upstream_command(&bcast, b"t1:", None);
        assert!(cmd.ends_with(b"$6\r\nPREFIX\r\n$3\r\nt1:\r\n"));
        let keys = vec![Bytes::from("t1:a"), Bytes::from("t2:a")];
        assert_eq!(unprefixed(keys, b"t1:"), Some(vec![Bytes::from("a")]));
        assert_eq!(unprefixed(vec![Bytes::from("t2:a")], b"t1:"), None);
    }

    #[test]
    fn frames_as_redis_sends_them() {
        let k = [Bytes::from("a")];
        assert_eq!(
            &frame(Protocol::Resp3, Some(&k))[..],
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"
        );
        assert_eq!(&frame(Protocol::Resp3, None)[..], FLUSH_ALL);
        assert_eq!(
            &frame(Protocol::Resp2, None)[..],
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
    }
}

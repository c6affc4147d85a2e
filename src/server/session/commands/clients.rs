//! respite's own clients as CLIENT LIST, CLIENT INFO and CLIENT KILL see them: a registry of the
//! sessions (id, addresses, name, library, user, database, last command) and the kill switch of
//! each, and the CLIENT subcommands answered from it and from the session's own state (REPLY,
//! NO-EVICT, NO-TOUCH, PAUSE/UNPAUSE).
//!
//! A client sees respite's clients, never the upstream's connections (which are respite's own);
//! a client of a tenant with a key prefix sees and kills only its own tenant's clients. The
//! registry is updated when a session's state changes (its rare connection commands), not per
//! command, except the last command's id, one relaxed store.
use crate::command::{self, CommandSpec};
use crate::metrics::{self, ErrorKind};
use crate::protocol::{Request, encode};
use crate::server::session::{Client, Pending, Reader, simple};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every session, by client id.
#[derive(Default)]
pub(crate) struct Registry {
    clients: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// One session as others see it.
pub(crate) struct Entry {
    pub id: u64,
    peer: String,
    local_addr: String,
    created: Instant,
    /// The id of the last command's spec (`u32::MAX`: none yet).
    last: AtomicU32,
    view: Mutex<View>,
    /// Cancelled by CLIENT KILL, or with its parent when the proxy drains: the session closes.
    pub kill: CancellationToken,
    /// Its latest pinned lease, where CLIENT UNBLOCK finds it blocked (see `crate::upstream::blockable`).
    pub blockable: Mutex<Option<Arc<crate::upstream::blockable::Blockable>>>,
    /// Where pushes for it go: the invalidations of clients tracking with REDIRECT to it.
    pub outbox: Option<Arc<crate::pubsub::Outbox>>,
    /// The client socket's descriptor (`fd`).
    fd: i32,
    /// Milliseconds after `created` of its latest read (`idle`): stored once per socket read,
    /// not per command.
    last_read: AtomicU64,
    /// What respite holds for it: replies received and not yet written (`omem`), the unfinished
    /// request its reader holds (with them, `tot-mem`). None without an upstream.
    budget: Option<Arc<crate::upstream::ReplyBudget>>,
}

/// What changes over a session's life, copied from its [`Client`] when it changes.
#[derive(Clone, Default)]
struct View {
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    user: String,
    db: u32,
    resp: i64,
    /// The tenant, when it has a key prefix (its clients see only each other).
    tenant: Option<String>,
    /// What its other stages hold (see [`Modes`]).
    modes: Modes,
}

/// The session's modes as CLIENT LIST shows them: its subscriptions (`sub`, `psub`, `ssub`,
/// flag `P`), its open transaction (`multi`: commands queued, or -1; flag `x`) and tracking (`t`,
/// `B` for BCAST).
#[derive(Clone, Default)]
pub(in crate::server::session) struct Modes {
    pub subs: (usize, usize, usize),
    pub multi: Option<usize>,
    pub tracking: bool,
    pub bcast: bool,
}

impl Modes {
    /// Redis's `flags` letters for them, in its order; `N` for none.
    fn flags(&self) -> String {
        let mut f = String::new();
        if self.subs != (0, 0, 0) {
            f.push('P');
        }
        if self.multi.is_some() {
            f.push('x');
        }
        if self.tracking {
            f.push('t');
        }
        if self.bcast {
            f.push('B');
        }
        if f.is_empty() {
            f.push('N');
        }
        f
    }
}

impl View {
    fn of(c: &Client) -> View {
        View {
            name: c.name.clone(),
            lib_name: c.lib_name.clone(),
            lib_ver: c.lib_ver.clone(),
            user: c.user.clone(),
            db: c.db,
            resp: c.proto.version(),
            tenant: c
                .tenant
                .as_ref()
                .filter(|t| t.has_prefix())
                .map(|t| t.name.clone()),
            modes: Modes::default(),
        }
    }
}

/// Removes the session's entry when the session ends.
pub(crate) struct Registered {
    registry: Arc<Shared>,
    pub entry: Arc<Entry>,
}

type Shared = crate::server::Shared;

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry.clients.clients).remove(&self.entry.id);
    }
}

pub(in crate::server::session) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Add a session to the registry for as long as the returned guard lives.
pub(crate) fn register(
    shared: &Arc<Shared>,
    c: &Client,
    outbox: Option<Arc<crate::pubsub::Outbox>>,
    budget: Option<Arc<crate::upstream::ReplyBudget>>,
) -> Registered {
    let entry = Arc::new(Entry {
        id: c.id,
        peer: c.peer.clone(),
        local_addr: c.local_addr.clone(),
        created: c.created,
        last: AtomicU32::new(u32::MAX),
        view: Mutex::new(View::of(c)),
        kill: shared.draining.child_token(),
        blockable: Mutex::new(None),
        outbox,
        fd: c.fd,
        last_read: AtomicU64::new(0),
        budget,
    });
    lock(&shared.clients.clients).insert(c.id, entry.clone());
    Registered {
        registry: shared.clone(),
        entry,
    }
}

impl Registry {
    /// The session with client id `id`, if it is still connected.
    pub fn find(&self, id: u64) -> Option<Arc<Entry>> {
        lock(&self.clients).get(&id).cloned()
    }
}

impl Entry {
    /// The protocol it speaks now (2 or 3).
    pub fn resp(&self) -> i64 {
        lock(&self.view).resp
    }

    /// Its tenant's name when that tenant has a key prefix (see [`View`]).
    pub fn prefixed_tenant(&self) -> Option<String> {
        lock(&self.view).tenant.clone()
    }

    pub fn ran(&self, spec: &'static CommandSpec) {
        self.last.store(spec.id as u32, Ordering::Relaxed);
    }

    /// Bytes arrived from the client (CLIENT LIST's `idle` counts from the latest).
    pub fn read_now(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_read.store(ms, Ordering::Relaxed);
    }

    pub(in crate::server::session) fn update(&self, c: &Client, modes: Modes) {
        *lock(&self.view) = View {
            modes,
            ..View::of(c)
        };
    }

    /// The `CLIENT LIST` / `CLIENT INFO` line, in Redis 7.2's layout; buffer sizes are respite's.
    /// `me`: the arguments of the command being answered, when this is the asking client's own
    /// line (its query buffer holds that command, as Redis's does while it runs it: `qbuf`,
    /// `argv-mem`); another client's buffers hold no command between its commands.
    fn line(&self, me: Option<&[Bytes]>) -> String {
        let v = lock(&self.view).clone();
        let s = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let cmd = command::all()
            .get(self.last.load(Ordering::Relaxed) as usize)
            .map_or("NULL", |spec| spec.name);
        let age = self.created.elapsed();
        let idle = (age.as_millis() as u64).saturating_sub(self.last_read.load(Ordering::Relaxed));
        let (qbuf, argv_mem) = match me {
            Some(args) => (request_len(args), args.iter().map(|a| a.len()).sum()),
            None => (0, 0),
        };
        let (omem, request) = self
            .budget
            .as_ref()
            .map_or((0, 0), |b| (b.owed(), b.request_bytes()));
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={qbuf} qbuf-free=0 argv-mem={argv_mem} multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={omem} tot-mem={} events=r cmd={cmd} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local_addr,
            self.fd,
            s(&v.name),
            age.as_secs(),
            idle / 1000,
            v.modes.flags(),
            v.db,
            v.modes.subs.0,
            v.modes.subs.1,
            v.modes.subs.2,
            v.modes.multi.map_or(-1, |n| n as i64),
            qbuf.max(request) + argv_mem + omem,
            v.user,
            v.resp,
            s(&v.lib_name),
            s(&v.lib_ver),
        )
    }
}

/// What the writer does with replies (`CLIENT REPLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    On,
    Off,
    /// Drop the next command's reply only.
    Skip,
}

/// A KILL filter (`CLIENT KILL <filter> <value> …`).
enum Filter {
    Id(Vec<u64>),
    Addr(Vec<u8>),
    Laddr(Vec<u8>),
    User(Vec<u8>),
    Type(bool),
    SkipMe(bool),
}

impl Reader<'_> {
    /// The CLIENT subcommands that are about the connection's mode or other clients.
    pub(in crate::server::session) async fn client_command(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        let args = &req.args;
        if let Some(tenant) = &self.client.tenant
            && !tenant.permits(spec)
        {
            let e = tenant.no_perm(spec);
            crate::policy::metrics::refusal(&tenant.name, &e);
            return self.reply_error(&e.to_string()).await;
        }
        let prefixed = self.client.tenant.as_ref().is_some_and(|t| t.has_prefix());
        let on_off = || match args.get(2) {
            Some(a) if args.len() == 3 && a.eq_ignore_ascii_case(b"on") => Some(true),
            Some(a) if args.len() == 3 && a.eq_ignore_ascii_case(b"off") => Some(false),
            _ => None,
        };
        match spec.name {
            "client|reply" => {
                let mode = match args.get(2).map(|a| a.to_ascii_lowercase()) {
                    Some(a) if args.len() == 3 && a == b"on" => ReplyMode::On,
                    Some(a) if args.len() == 3 && a == b"off" => ReplyMode::Off,
                    Some(a) if args.len() == 3 && a == b"skip" => ReplyMode::Skip,
                    _ => return self.reply_error("ERR syntax error").await,
                };
                // Only ON is answered; OFF and SKIP take effect on their own reply already.
                if mode == ReplyMode::On {
                    if self.reply_mode != ReplyMode::On {
                        self.push(Pending::Silence(false)).await;
                    }
                    self.reply_mode = ReplyMode::On;
                    return self.reply(simple("OK")).await;
                }
                if self.reply_mode == ReplyMode::On {
                    self.push(Pending::Silence(true)).await;
                }
                // CLIENT REPLY's own reply is dropped; SKIP then drops the next one too.
                self.reply(simple("OK")).await;
                self.reply_mode = mode;
                if mode == ReplyMode::Skip {
                    self.skip_pending = true;
                }
            }
            "client|no-touch" => Box::pin(self.no_touch(spec, req)).await,
            "client|no-evict" => {
                if on_off().is_none() {
                    return self.reply_error("ERR syntax error").await;
                }
                if self.out.pin.held().is_some() {
                    // Meaningful on the client's own connection (its reset turns it off again).
                    return self.forward_any(spec, req).await;
                }
                // On a shared connection it would apply to every client on it: noted, not sent.
                self.reply(simple("OK")).await
            }
            "client|pause" | "client|unpause" if self.client.tenant.is_some() => {
                metrics::error(ErrorKind::Refused);
                let msg = format!(
                    "ERR CLIENT {} is not allowed for a tenant: it would pause every tenant's clients",
                    if spec.name == "client|pause" {
                        "PAUSE"
                    } else {
                        "UNPAUSE"
                    }
                );
                self.reply_error(&msg).await
            }
            "client|pause" | "client|unpause" => self.pause_command(spec, req).await,
            "client|list" => {
                let lines = self.client_list(args, prefixed);
                match lines {
                    Ok(text) => {
                        let mut out = BytesMut::new();
                        encode::verbatim(&mut out, self.client.proto, "txt", text.as_bytes());
                        self.reply(out).await
                    }
                    Err(e) => self.reply_error(e).await,
                }
            }
            "client|kill" => self.client_kill(&args[2..], prefixed).await,
            "client|unblock" => Box::pin(self.client_unblock(&args[2..], prefixed)).await,
            _ => {
                metrics::error(ErrorKind::Refused);
                let msg = format!(
                    "ERR {} is not supported by respite yet: connection state needs a dedicated upstream connection",
                    spec.name.replace('|', " ").to_uppercase()
                );
                self.reply_error(&msg).await
            }
        }
    }

    /// The clients of this client's prefixed tenant (or, without one, of no prefixed tenant),
    /// this one included: INFO's `connected_clients`.
    pub(super) fn tenant_clients(&self) -> usize {
        let mine = self.registered.entry.prefixed_tenant();
        lock(&self.shared.clients.clients)
            .values()
            .filter(|e| lock(&e.view).tenant == mine)
            .count()
    }

    /// The upstream ids of the pinned connections its prefixed tenant's clients hold now (where
    /// any of them can be blocked: blocking commands run on pinned connections).
    pub(super) fn tenant_leases(&self) -> Vec<u64> {
        let mine = self.registered.entry.prefixed_tenant();
        lock(&self.shared.clients.clients)
            .values()
            .filter(|e| lock(&e.view).tenant == mine)
            .filter_map(|e| lock(&e.blockable).as_ref().and_then(|b| b.live_id()))
            .collect()
    }

    /// The entries this client may see: all, or its prefixed tenant's.
    pub(in crate::server::session) fn visible(&self, prefixed: bool) -> Vec<Arc<Entry>> {
        let mine = self
            .client
            .tenant
            .as_ref()
            .filter(|_| prefixed)
            .map(|t| t.name.clone());
        let mut all: Vec<Arc<Entry>> = lock(&self.shared.clients.clients)
            .values()
            .filter(|e| !prefixed || lock(&e.view).tenant == mine)
            .cloned()
            .collect();
        all.sort_by_key(|e| e.id);
        all
    }

    /// CLIENT LIST's text; `request`: the whole command (`CLIENT LIST …`).
    fn client_list(&mut self, request: &[Bytes], prefixed: bool) -> Result<String, &'static str> {
        let args = &request[2..];
        self.publish();
        let mut ids: Option<Vec<u64>> = None;
        let mut normal = true;
        let mut i = 0;
        while i < args.len() {
            let opt = args[i].to_ascii_lowercase();
            if opt == b"type" && i + 1 < args.len() {
                normal = match args[i + 1].to_ascii_lowercase().as_slice() {
                    b"normal" => true,
                    b"master" | b"replica" | b"slave" | b"pubsub" => false,
                    _ => return Err("ERR Unknown client type"),
                };
                i += 2;
            } else if opt == b"id" && i + 1 < args.len() {
                let mut v = Vec::new();
                for a in &args[i + 1..] {
                    match std::str::from_utf8(a)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        Some(n) if n > 0 => v.push(n),
                        _ => return Err("ERR Invalid client ID"),
                    }
                }
                ids = Some(v);
                i = args.len();
            } else {
                return Err("ERR syntax error");
            }
        }
        let mut text = String::new();
        if normal {
            for e in self.visible(prefixed) {
                if ids.as_ref().is_none_or(|ids| ids.contains(&e.id)) {
                    let me = (e.id == self.client.id).then_some(request);
                    text.push_str(&e.line(me));
                }
            }
        }
        Ok(text)
    }

    async fn client_kill(&mut self, args: &[Bytes], prefixed: bool) {
        self.publish();
        // The old form: CLIENT KILL addr:port, +OK or an error.
        if args.len() == 1 {
            let found: Vec<_> = self
                .visible(prefixed)
                .into_iter()
                .filter(|e| e.peer.as_bytes() == &args[0][..])
                .collect();
            if found.is_empty() {
                return self.reply_error("ERR No such client").await;
            }
            for e in found {
                e.kill.cancel();
            }
            return self.reply(simple("OK")).await;
        }
        let mut filters = Vec::new();
        if args.is_empty() || !args.len().is_multiple_of(2) {
            return self.reply_error("ERR syntax error").await;
        }
        for pair in args.chunks(2) {
            let (opt, v) = (pair[0].to_ascii_lowercase(), &pair[1]);
            let yes_no = |v: &Bytes| match v.to_ascii_lowercase().as_slice() {
                b"yes" => Some(true),
                b"no" => Some(false),
                _ => None,
            };
            let f = match opt.as_slice() {
                b"id" => match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    Some(n) if n > 0 => Filter::Id(vec![n]),
                    _ => {
                        return self
                            .reply_error("ERR client-id should be greater than 0")
                            .await;
                    }
                },
                b"addr" => Filter::Addr(v.to_vec()),
                b"laddr" => Filter::Laddr(v.to_vec()),
                b"user" => Filter::User(v.to_vec()),
                b"type" => match v.to_ascii_lowercase().as_slice() {
                    b"normal" => Filter::Type(true),
                    b"master" | b"replica" | b"slave" | b"pubsub" => Filter::Type(false),
                    _ => {
                        let msg =
                            format!("ERR Unknown client type '{}'", String::from_utf8_lossy(v));
                        return self.reply_error(&msg).await;
                    }
                },
                b"skipme" => match yes_no(v) {
                    Some(b) => Filter::SkipMe(b),
                    None => return self.reply_error("ERR syntax error").await,
                },
                _ => return self.reply_error("ERR syntax error").await,
            };
            filters.push(f);
        }
        for f in &filters {
            if let Filter::User(u) = f
                && !self.user_exists(u).await
            {
                let msg = format!("ERR No such user '{}'", String::from_utf8_lossy(u));
                return self.reply_error(&msg).await;
            }
        }
        let skip_me = filters
            .iter()
            .rev()
            .find_map(|f| match f {
                Filter::SkipMe(b) => Some(*b),
                _ => None,
            })
            .unwrap_or(true);
        let mut killed = 0;
        for e in self.visible(prefixed) {
            if skip_me && e.id == self.client.id {
                continue;
            }
            let user = lock(&e.view).user.clone();
            let matches = filters.iter().all(|f| match f {
                Filter::Id(ids) => ids.contains(&e.id),
                Filter::Addr(a) => e.peer.as_bytes() == &a[..],
                Filter::Laddr(a) => e.local_addr.as_bytes() == &a[..],
                Filter::User(u) => user.as_bytes() == &u[..],
                Filter::Type(normal) => *normal,
                Filter::SkipMe(_) => true,
            });
            if matches {
                e.kill.cancel();
                killed += 1;
            }
        }
        let mut out = BytesMut::new();
        encode::integer(&mut out, killed);
        self.reply(out).await
    }

    /// Whether `user` is a user CLIENT KILL USER may name, as Redis refuses one it does not know:
    /// without tenants, the upstream's own users are the clients' (asked with `ACL GETUSER`; an
    /// upstream that will not say is taken to know it); with tenants, or without an upstream,
    /// any name is taken as known.
    async fn user_exists(&mut self, user: &[u8]) -> bool {
        if self.tenants.is_some() || self.shared.upstream.is_none() {
            return true;
        }
        let mut cmd = BytesMut::new();
        encode::command(&mut cmd, &[&b"ACL"[..], b"GETUSER", user]);
        let rx = self.upstream_send(cmd.freeze(), 1, None).await;
        let answered = self.out.park(rx).await;
        self.took_reply();
        !matches!(answered, Some(Ok(Ok(reply))) if [&b"$-1\r\n"[..], b"*-1\r\n", b"_\r\n"].contains(&&reply[..]))
    }

    /// INFO forwarded to the upstream, its `connected_clients` made the number of clients CLIENT
    /// LIST shows (respite's, not the upstream's connections, which count respite's pools).
    /// `blocked_clients` stays the upstream's: each client blocked through respite holds one
    /// upstream connection blocked, so it counts them one for one, beside direct clients.
    pub(in crate::server::session) async fn info_forwarded(&mut self, req: &Request) {
        let registry = self.shared.clone();
        let command = crate::server::session::forward::request_bytes(req);
        self.forward_rewritten(command, move |bytes| {
            let clients = lock(&registry.clients.clients).len();
            with_field(&bytes, b"connected_clients:", clients).unwrap_or(bytes)
        })
        .await;
    }

    /// Copy this session's state into its registry entry (after a connection command).
    pub(in crate::server::session) fn publish(&self) {
        let modes = Modes {
            subs: self.pubsub.counts(),
            multi: self.multi.as_ref().map(|m| m.queued_count()),
            tracking: self.tracking.is_some(),
            bcast: self.tracking.as_ref().is_some_and(|t| t.bcast()),
        };
        self.registered.entry.update(&self.client, modes);
    }
}

/// An INFO reply (a bulk or verbatim string) with `field`'s value replaced by `value`; `None` if it
/// has no such field (a section without it, or an error).
fn with_field(reply: &[u8], field: &[u8], value: usize) -> Option<Bytes> {
    if !matches!(reply.first(), Some(b'$' | b'=')) {
        return None;
    }
    let header = reply.windows(2).position(|w| w == b"\r\n")?;
    let body = reply.get(header + 2..reply.len().checked_sub(2)?)?;
    let at = body
        .windows(field.len())
        .position(|w| w == field)
        .filter(|&i| i == 0 || body[i - 1] == b'\n')?;
    let start = at + field.len();
    let end = start + body[start..].iter().position(|&b| b == b'\r')?;
    let mut new = Vec::with_capacity(body.len() + 8);
    new.extend_from_slice(&body[..start]);
    new.extend_from_slice(value.to_string().as_bytes());
    new.extend_from_slice(&body[end..]);
    let mut out = BytesMut::with_capacity(new.len() + 16);
    out.extend_from_slice(&[reply[0]]);
    out.extend_from_slice(new.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&new);
    out.extend_from_slice(b"\r\n");
    Some(out.freeze())
}

/// `CLIENT INFO` for the client itself, from the same line as CLIENT LIST.
pub(in crate::server::session) fn own_line(r: &Reader<'_>, args: &[Bytes]) -> String {
    r.publish();
    r.registered.entry.line(Some(args))
}

/// The bytes of a request of `args` as a RESP array (`*2\r\n$6\r\nclient\r\n$4\r\nlist\r\n`: 26).
fn request_len(args: &[Bytes]) -> usize {
    let digits = |n: usize| n.to_string().len();
    3 + digits(args.len())
        + args
            .iter()
            .map(|a| 5 + digits(a.len()) + a.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::with_field;

    #[test]
    fn a_requests_length_as_sent() {
        let args = [bytes::Bytes::from("client"), bytes::Bytes::from("list")];
        assert_eq!(super::request_len(&args), 26);
        let long = [bytes::Bytes::from(vec![b'x'; 1000])];
        assert_eq!(super::request_len(&long), "*1\r\n$1000\r\n".len() + 1002);
    }

    #[test]
    fn info_field_replaced_in_bulk_and_verbatim_replies() {
        let framed = |kind: char, body: &str| format!("{kind}{}\r\n{body}\r\n", body.len());
        let before = "# Clients\r\nconnected_clients:10\r\nblocked_clients:0\r\n";
        let after = "# Clients\r\nconnected_clients:4\r\nblocked_clients:0\r\n";
        for kind in ['$', '='] {
            let (before, after) = if kind == '=' {
                (format!("txt:{before}"), format!("txt:{after}"))
            } else {
                (before.to_string(), after.to_string())
            };
            let got = with_field(framed(kind, &before).as_bytes(), b"connected_clients:", 4);
            assert_eq!(&got.unwrap()[..], framed(kind, &after).as_bytes());
        }
        // Only a whole field name at a line's start; none, or an error: left alone.
        let inside = framed('$', "xconnected_clients:1\r\n");
        assert!(with_field(inside.as_bytes(), b"connected_clients:", 4).is_none());
        assert!(with_field(b"-ERR no\r\n", b"connected_clients:", 4).is_none());
    }
}

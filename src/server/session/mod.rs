//! One client connection: frame its requests, dispatch each, write replies back in request order.
//!
//! # Map
//! The stages a request passes through, one owner each:
//! - this file: the session's task ([`serve`], `run`), the types the stages share ([`Pending`],
//!   [`Keep`], [`Client`]) and the [`Reader`], which holds the client's state and its
//!   [`Outgoing`] side;
//! - [`reader`]: read the client's bytes, frame requests, dispatch and route each one (the only
//!   place that reads the client, but for the waits in `outgoing::park`);
//! - [`forward`]: a command bound upstream before it joins the group: the near cache, tenant
//!   rules, the local engine in standalone and local-only mode;
//! - [`outgoing`]: everything owed to the client and not yet sent or queued: the group of
//!   forwarded commands, the known replies, the near-cache writes noted and the batch's cache
//!   clock, the upstream send, the reply FIFO (`outgoing/fifo.rs`) and the only way to push onto
//!   it, and the waits: for room, barriers and the drain wait (`outgoing/fairness.rs`), during
//!   which the client is still read (`outgoing/park.rs`);
//! - [`pin`]: which connection the client's jobs go on: its pinned connection and what it
//!   carries, its lane, an out-of-band command; taking and giving back the lease;
//! - [`writer`]: take the FIFO's entries in order, resolve them and write them to the client,
//!   with Pub/Sub and tracking pushes between whole replies;
//! - [`halves`]: the join of the reader and the writer in the session's task, which polls the
//!   reader only when something woke it.
//!
//! The command families the session answers or handles itself live under [`commands`]:
//! `builtin` (PING, HELLO, AUTH, SELECT, …) with `exec_splice` (CLIENT SETNAME and the like
//! answered inside EXEC's array), `clients` (CLIENT LIST/KILL/REPLY, the registry) with `unblock`
//! (CLIENT UNBLOCK, NO-TOUCH), `multi` (MULTI/EXEC), `stateful` (blocking commands, WATCH, the
//! pinned SELECT and AUTH) with `upstream_acl` (an upstream user's ACL on what respite serves
//! itself), `subscribe`, `monitor`, and `tracking/` (CLIENT TRACKING, its options, sinks and the
//! in-band invalidations queue).
//!
//! A GET goes reader (`read_loop`, `handle`, `dispatch`, `route`) → pin (`enter_lane`) → forward
//! (`forward`, `through_cache`) → outgoing (`hold_request`, `grouped`; at the end of the batch
//! `send_group`, `send_now`, `enqueue`) → writer.
//!
//! # Invariants
//! - Every request framed from a client gets exactly one reply, written in the order the requests
//!   arrived, whatever path each took (answered here, forwarded upstream, refused). Replies are
//!   queued in that order through [`Outgoing`] alone: an entry on the FIFO ([`Fifo`]) answers as
//!   many requests as its weight (a group of forwarded commands, a run of near-cache hits, one
//!   reply); [`Pending::Barrier`], [`Pending::Written`], [`Pending::Timed`],
//!   [`Pending::Silence`] and [`Pending::Close`] answer none (a barrier inside a send weighs 1
//!   so a full queue waits for it). The writer resolves entries strictly in FIFO order; nothing
//!   else writes to the client socket.
//! - A client's forwarded commands all go through one upstream connection at a time — its shared
//!   one for its protocol and lane (slow commands on the slow lane, a heavy client's on the bulk
//!   lane, SCRIPT KILL and the like out of band), or its pinned one while it holds one (see
//!   [`pin`]) — so they run on the upstream in the order the client sent them; a switch of
//!   connection (HELLO or RESET changing the protocol, a lane switch, taking or giving back a
//!   pinned connection) first waits for every earlier reply ([`Pending::Barrier`]).
//! - A pinned connection carries one client's commands only, and goes back to its pool only
//!   reset and verified (see [`crate::upstream::pinned`]); a client gone while a reply is owed on
//!   one has it closed at once — also when it pipelined more behind it, because a wait while such
//!   a reply is owed keeps reading the client (`outgoing::park`).
//! - CLIENT TRACKING's own pushes (RESP3, no REDIRECT) never go before a reply the upstream
//!   sent before them, and go before the reply of any later job (see `commands::tracking`).
//! - Pub/Sub pushes and MONITOR lines never take a reply slot: they wait in the client's own
//!   bounded outbox, which the writer drains only between whole replies (`commands::subscribe`
//!   says how confirmations keep their place; a monitor's lines start once its +OK is written);
//!   a client past `limits.pubsub_output_bytes` is closed.
//! - Memory per client is bounded in bytes, not in commands: the FIFO holds entries weighing at
//!   most `limits.max_inflight_per_client` requests, and past that nothing more is forwarded
//!   for the client; nor while it is owed more than `outgoing::gate` bytes of replies, nor on
//!   the bulk lane while any earlier reply is unwritten, so a client that does not read stops
//!   pulling replies through the upstream. The reader keeps reading it meanwhile
//!   (`outgoing::park`): what it sends waits, counted with the replies it has not read against
//!   `limits.max_reply_bytes` (and all clients' against `limits.max_client_memory`), and past
//!   that it is closed, as Redis closes a client past its output buffer limit. An idle client
//!   holds no read or write buffer.
mod commands;
mod forward;
mod halves;
mod outgoing;
mod pin;
mod reader;
mod writer;

use crate::cache::Fetched;
use crate::cache::coherence::{Unanswered, Written};
use crate::metrics::{self, ErrorKind};
use crate::policy::{ReplyRewrite, Tenant};
use crate::protocol::{Protocol, encode};
use crate::server::io::{ClientIo, ClientSocket};
use crate::server::tls_io::TlsSocket;
use crate::server::{Accepted, Shared};
use crate::upstream::{Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};
pub(crate) use commands::clients::Registry;
use commands::{clients, subscribe, tracking};
use outgoing::{Fifo, Outgoing};

use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::debug;

pub(crate) enum ClientStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    /// Accepted on the TLS listener: the handshake runs in the session's task.
    Tls(std::net::TcpStream),
}

enum Either {
    Tcp(ClientSocket<std::net::TcpStream>),
    Unix(ClientSocket<std::os::unix::net::UnixStream>),
    Tls(std::net::TcpStream),
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
    /// CLIENT REPLY: from here on, replies are dropped (`true`) or written again (`false`).
    Silence(bool),
    /// Flush everything before this, then close the connection.
    Close,
    /// A sampled command framed at this instant: its reply is among those before this marker,
    /// so its latency is recorded once they have been written (see `metrics::command_duration`).
    Timed(&'static crate::command::CommandSpec, std::time::Instant),
}

/// Which of a job's replies the client sees.
pub(crate) enum Keep {
    /// All of them, as they came.
    All,
    /// Only one (see [`First`]). Boxed: rare next to `All`, and a [`Pending`] is held several
    /// times over in every session's future (64 -> 40 bytes each).
    First(Box<First>),
}

/// Only the reply after `skip` replies (the command's own; the others answer what respite
/// added around it: policy follow-ups such as default TTLs, a transaction's MULTI and QUEUED),
/// rewritten for the tenant's namespace.
pub(crate) struct First {
    pub skip: usize,
    pub rewrite: ReplyRewrite,
    pub prefix: Bytes,
    pub proto: Protocol,
}

impl Keep {
    pub(crate) fn first(
        skip: usize,
        rewrite: ReplyRewrite,
        prefix: Bytes,
        proto: Protocol,
    ) -> Keep {
        Keep::First(Box::new(First {
            skip,
            rewrite,
            prefix,
            proto,
        }))
    }
}

/// Per-client state that respite itself keeps.
pub(crate) struct Client {
    pub id: u64,
    pub peer: String,
    pub local_addr: String,
    pub proto: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub user: String,
    pub db: u32,
    pub created: std::time::Instant,
    /// The client socket's descriptor, as CLIENT LIST shows it.
    pub fd: i32,
    pub last_command: &'static str,
    /// Whose rules apply, when tenants are configured; `None` there means not yet authenticated.
    pub tenant: Option<Arc<Tenant>>,
    /// Blocked or subscribed: silence is expected, so `limits.idle_timeout_ms` and
    /// `limits.request_timeout_ms` do not apply (as Redis exempts such clients from `timeout`).
    pub timeouts_exempt: bool,
    /// In a cluster, the slot of the first key of the client's last write: its WAIT goes to
    /// that slot's primary, which holds the write and knows its replicas.
    pub last_write_slot: Option<u16>,
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
        // Before a TLS handshake, a plain error would only garble it: just close.
        ClientStream::Tcp(s) => (&*s).write(&out),
        ClientStream::Unix(s) => (&*s).write(&out),
        ClientStream::Tls(_) => Ok(0),
    };
}

/// A session's task. The setup is done before the future is made, so that the future holds
/// only what the session needs (an idle client costs mostly its task's future).
pub(crate) fn serve(
    conn: Accepted,
    id: u64,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> {
    let gauge = metrics::client_connections();
    gauge.increment(1.0);
    let fd = {
        use std::os::fd::AsRawFd;
        match &conn.stream {
            ClientStream::Tcp(s) | ClientStream::Tls(s) => s.as_raw_fd(),
            ClientStream::Unix(s) => s.as_raw_fd(),
        }
    };
    // Boxed: moved into the reader in `run`, it would otherwise stay in this task's future
    // twice more (as `run`'s argument and its local), in every idle session.
    let client = Box::new(Client {
        id,
        peer: conn.peer,
        local_addr: conn.local_addr,
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
        fd,
        last_command: "NULL",
        tenant: shared
            .live
            .tenants()
            .as_ref()
            .and_then(|t| t.default_tenant().cloned()),
        timeouts_exempt: false,
        last_write_slot: None,
    });
    // Registered once, as a readiness-driven socket (see `io`).
    let registered = match conn.stream {
        ClientStream::Tcp(s) => ClientSocket::new(s).map(Either::Tcp),
        ClientStream::Unix(s) => ClientSocket::new(s).map(Either::Unix),
        ClientStream::Tls(s) => Ok(Either::Tls(s)),
    };
    async move {
        match registered {
            Ok(Either::Tcp(sock)) => run(sock, client, shared).await,
            Ok(Either::Unix(sock)) => run(sock, client, shared).await,
            // The TLS handshake runs in the session's task.
            Ok(Either::Tls(s)) => match shared.live.tls() {
                None => {}
                Some(config) => match TlsSocket::accept(s, config).await {
                    Ok(sock) => run(sock, client, shared).await,
                    Err(e) => {
                        metrics::error(ErrorKind::Protocol);
                        tracing::info!(error = %e, "TLS client refused");
                    }
                },
            },
            Err(e) => debug!(error = %e, "could not register the client socket"),
        }
        gauge.decrement(1.0);
    }
}

async fn run<C: ClientIo>(sock: C, client: Box<Client>, shared: Arc<Shared>) {
    // Limits as configured when the client connects (a reload applies to later connections).
    let config = shared.live.config();
    let fifo = Fifo::new(config.max_inflight_per_client);
    let unanswered_writes = Unanswered::default();
    let cache = shared.cache.clone();
    let shared_hub = shared.pubsub.clone();
    let pubsub = subscribe::PubSub::new(shared_hub.as_deref());
    let budget = shared
        .upstream
        .as_ref()
        .map(|_| ReplyBudget::within(config.max_reply_bytes, &shared.client_memory, client.id));
    let registered = clients::register(&shared, &client, pubsub.outbox.clone(), budget.clone());
    let invalidations = std::sync::OnceLock::new();
    let kill = registered.entry.kill.clone();
    let reader = Box::new(Reader {
        generation: shared.live.generation(),
        tenants: shared.live.tenants(),
        config: config.clone(),
        sample_tick: 0,
        timed: None,
        // Out of its box, which is freed here rather than at the end of the session.
        client: {
            let boxed = client;
            *boxed
        },
        out: Outgoing::new(outgoing::Parts {
            fifo: &fifo,
            unanswered_writes: &unanswered_writes,
            budget: budget.clone(),
            upstream: shared.upstream.clone(),
            shared: shared.clone(),
            kill,
            max_reply_bytes: config.max_reply_bytes,
            max_query_buffer: config.limits.max_query_buffer,
            sock: &sock,
        }),
        shared,
        multi: None,
        pubsub,
        invalidations: &invalidations,
        tracking: None,
        registered,
        reply_mode: clients::ReplyMode::On,
        skip_pending: false,
        monitoring: None,
    });
    let outbox = reader.pubsub.outbox.clone();
    // Both halves run in this task: the reader stops when the client closes, sends QUIT or a
    // fatal error, or the proxy drains; its end drops the reader (its pinned connection, its
    // registry entry, the `gone` guard) and the FIFO's sender, and the writer then flushes what
    // is owed and finishes.
    // Memory: this future is most of what an idle client costs (the task is allocated at its
    // largest size, and a value moved from one local or argument to another keeps both slots).
    // So the reader is boxed and lent to `read_loop` (taken by value it was stored three times),
    // and the halves are joined by a combinator that holds each once ([`halves`]; an `async`
    // block around `join!` kept both as captures beside the copies `join!` moves them into).
    let (sock, fifo) = (&sock, &fifo);
    let read = async move {
        let mut reader = reader;
        reader.read_loop(sock).await;
        drop(reader);
        fifo.close();
    };
    let writer = writer::write_loop(
        sock,
        fifo,
        cache.as_deref(),
        &unanswered_writes,
        budget.as_deref(),
        outbox.as_deref(),
        &invalidations,
    );
    // The reader when woken, then the writer, in every poll (see `halves`).
    let session = halves::Halves::new(read, writer, fifo);
    match &outbox {
        // A subscriber over its limit is closed at once, whatever its halves are waiting on
        // (typically the writer, on a client that stopped reading): dropping them drops its
        // subscriptions and then the socket.
        // Polled by hand, the session first, on every wake-up of the session: `select!`'s
        // bookkeeping cost more than the overflow check (one atomic load once registered).
        Some(o) => {
            let mut session = std::pin::pin!(session);
            let mut overflowed = std::pin::pin!(o.overflowed());
            let overflow = std::future::poll_fn(|cx| {
                if session.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(false);
                }
                overflowed.as_mut().poll(cx).map(|()| true)
            })
            .await;
            if overflow {
                metrics::pubsub_slow_subscriber();
                debug!("subscriber or monitor over limits.pubsub_output_bytes: closed");
            }
        }
        None => {
            session.await;
        }
    }
    debug!("client closed");
}

/// The reading half of a session: what reading and dispatching need, and the session's
/// [`Outgoing`] side, through which alone replies are queued.
pub(crate) struct Reader<'f> {
    client: Client,
    shared: Arc<Shared>,
    /// The group, known replies, the connection choice, the reply FIFO ([`outgoing`]).
    out: Outgoing<'f>,
    /// A transaction being queued (MULTI … EXEC), see [`commands::multi`].
    multi: Option<Box<commands::multi::Multi>>,
    /// Subscriptions and the outbox their pushes wait in, see [`commands::subscribe`].
    pubsub: subscribe::PubSub,
    /// CLIENT TRACKING's pushes on their way to the writer, once the client turned it on; and
    /// its state while it is on ([`commands::tracking`]).
    invalidations: &'f std::sync::OnceLock<Arc<tracking::Invalidations>>,
    tracking: Option<Box<tracking::Tracking>>,
    /// The reload generation `tenants` was taken at (see [`crate::reload`]).
    generation: u64,
    /// The tenants in force; refreshed when a reload is seen, before the next command.
    tenants: Option<Arc<crate::policy::Tenants>>,
    /// The configuration as of connect: its limits apply to this client.
    config: Arc<crate::config::Config>,
    /// Commands since the last one timed, and the one being timed in this batch.
    sample_tick: u32,
    timed: Option<(&'static crate::command::CommandSpec, std::time::Instant)>,
    /// This session in the registry of clients (CLIENT LIST, KILL); leaves it when dropped.
    registered: clients::Registered,
    /// CLIENT REPLY; with SKIP, `skip_pending` until the next command is dispatched.
    reply_mode: clients::ReplyMode,
    skip_pending: bool,
    /// The MONITOR relays while the client monitors (RESET and QUIT end monitoring).
    monitoring: Option<commands::monitor::Monitoring>,
}

/// Most commands, and bytes, in one group: big pipelines still stream to the upstream.
const GROUP_MAX: usize = 128;
const GROUP_BYTES: usize = 64 * 1024;

/// Whether a batch of `count` commands (or replies) over `bytes` is full: it goes now rather
/// than growing further.
fn group_full(count: usize, bytes: usize) -> bool {
    count >= GROUP_MAX || bytes >= GROUP_BYTES
}

pub(crate) use crate::clock::unix_ms;

/// A simple-string reply (`+OK`).
fn simple(s: &str) -> BytesMut {
    let mut out = BytesMut::new();
    encode::simple(&mut out, s);
    out
}

fn error_bytes(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_fill_by_count_or_bytes() {
        assert!(!group_full(0, 0));
        assert!(!group_full(GROUP_MAX - 1, GROUP_BYTES - 1));
        assert!(
            group_full(GROUP_MAX, 10),
            "a long pipeline of small commands"
        );
        assert!(group_full(1, GROUP_BYTES), "one large command");
        assert!(group_full(3, GROUP_BYTES + 1));
    }

    #[test]
    fn error_bytes_are_a_resp_error() {
        assert_eq!(&error_bytes("ERR x")[..], b"-ERR x\r\n");
    }
}

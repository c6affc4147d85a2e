//! Which upstream connection a forwarded command travels on, so one client's slow command never
//! holds up other clients' fast ones, and the commands that end a slow one reach the server.
//!
//! - [`Lane::Shared`]: the multiplexed connections, for everything quick.
//! - [`Lane::Slow`]: one more multiplexed connection per protocol, opened on first use, for
//!   commands that can keep the server (and so the socket they came on) busy for long: scripts
//!   and functions, KEYS, FLUSHALL/FLUSHDB, SAVE, DEBUG. While a script runs there, the shared
//!   connections stay free, so other clients' commands reach the server and get its own `-BUSY`
//!   (or their replies, once it ends) instead of waiting behind it in respite.
//! - [`Lane::Bulk`]: one more multiplexed connection per protocol, opened on first use, for
//!   clients whose replies are large ([`HEAVY_JOB`](super::reply::HEAVY_JOB) or more per job) or
//!   not yet known: a client's first job, and every job of a client whose latest one was heavy.
//!   On one connection, replies come back in order, so a client that asked for 10 MB puts 10 MB
//!   in front of every later reply on it; on its own connection the server interleaves it with
//!   the shared connections' small replies. The session decides ([`ReplyBudget::is_heavy`]).
//! - [`out_of_band`]: SCRIPT KILL, FUNCTION KILL and SHUTDOWN, sent on a connection of their
//!   own, used once: the only way to be sure they are behind nothing. It is opened and set up
//!   ahead of need ([`Standby`]: once the slow lane is first used, and again after each use), so
//!   the command goes out at once even while the server answers nobody (a script before its time
//!   limit: a connection opened then would get no HELLO reply until the script ends), and is read
//!   by the server the moment it looks at its clients again.
//!
//! A client's own commands still run in the order it sent them: the session waits for its
//! earlier replies before it changes lanes (see `session::reader`). This module decides and
//! carries; it never reads what a reply means beyond where it ends.
use super::error::{Deadline, Kind, Lost, NoReply, ProtocolError, UpstreamError};
use super::handshake::{self, Opened};
use super::health::Health;
use super::reply::{Partial, Reply, ReplyBudget};
use crate::command::{CommandSpec, all};
use crate::config::UpstreamConfig;
use crate::protocol::{Protocol, ReplyScanner};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Commands in flight at once on a bulk-lane connection: 128 GETs of 100 KB are 12.8 MB, which
/// the server copies out while the shared connections' commands wait for its next turn (about
/// 5 ms measured on this 2-core machine), and still a deep pipeline for a client that reads.
pub const BULK_INFLIGHT: usize = 128;

/// Commands in one group of a heavy client's (on the bulk lane): what it may have in flight at a
/// time, so its bulk comes in pieces others' replies can pass between.
pub const BULK_GROUP: usize = 16;

/// The kind of connection a command goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    #[default]
    Shared,
    Slow,
    Bulk,
}

/// How a command travels, by `CommandSpec::id` for the built-in table: one index per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Lane(Lane),
    OutOfBand,
}

static WAYS: LazyLock<Box<[Way]>> = LazyLock::new(|| all().iter().map(|s| way(s.name)).collect());

/// By name, not by Redis's `@slow` ACL category: most commands are in `@slow` (HGETALL, LRANGE,
/// …), and routing all of them apart would split every client's pipeline. These are the ones that
/// can hold the server for seconds on their own, and the ones that end such a command.
fn way(name: &str) -> Way {
    match name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "keys"
        | "flushall" | "flushdb" | "save" | "debug" | "function|load" | "function|restore" => {
            Way::Lane(Lane::Slow)
        }
        "script|kill" | "function|kill" | "shutdown" => Way::OutOfBand,
        _ => Way::Lane(Lane::Shared),
    }
}

fn way_of(spec: &CommandSpec) -> Way {
    match WAYS.get(spec.id as usize) {
        Some(way) => *way,
        // Read from the upstream's own table (FCALL on a table without it, …).
        None => way(spec.name),
    }
}

/// The lane for `spec` (an out-of-band command's is [`Lane::Shared`]; see [`out_of_band`]).
pub fn lane(spec: &CommandSpec) -> Lane {
    match way_of(spec) {
        Way::Lane(lane) => lane,
        Way::OutOfBand => Lane::Shared,
    }
}

/// True for the commands that end a busy server's work (or the server): they must not queue
/// behind it on any connection that might carry it.
pub fn out_of_band(spec: &CommandSpec) -> bool {
    way_of(spec) == Way::OutOfBand
}

/// A connection set up ahead of need for the next out-of-band command (RESP2: the replies of
/// SCRIPT KILL, FUNCTION KILL and SHUTDOWN are a simple string or an error, the same in both
/// protocols). Never carries anything else; taken by one command and then closed.
#[derive(Default)]
pub struct Standby {
    conn: Mutex<Option<Opened>>,
    opening: AtomicBool,
}

impl Standby {
    /// Open the standby connection in the background unless it is open or being opened.
    pub fn ready(self: &Arc<Self>, config: &Arc<UpstreamConfig>, health: &Arc<Health>) {
        if self.lock().is_some() || self.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, config, health) = (self.clone(), config.clone(), health.clone());
        tokio::spawn(async move {
            let opened =
                handshake::open_patient(&config, Protocol::Resp2, NAME, &health, None).await;
            if let Ok(opened) = opened {
                *me.lock() = Some(opened);
            }
            me.opening.store(false, Ordering::Release);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The standby connection, if there is one and the upstream has not closed it meanwhile
    /// (its `timeout`, a restart, a CLIENT KILL): a closed one is known to have received
    /// nothing, and is dropped.
    fn take(&self) -> Option<Opened> {
        let mut opened = self.lock().take()?;
        let mut buf = [0u8; 64];
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match tokio::io::AsyncRead::poll_read(
            std::pin::Pin::new(&mut opened.read),
            &mut cx,
            &mut rb,
        ) {
            // Nothing to read: open and idle, as it should be.
            std::task::Poll::Pending => Some(opened),
            // Closed, failed, or something nobody asked for: not to be trusted with a command.
            std::task::Poll::Ready(_) => None,
        }
    }
}

/// The name out-of-band connections carry on the upstream (CLIENT LIST there).
const NAME: &str = "respite-admin";

/// Send `bytes` (one encoded command) on a connection of its own — the `standby` one when it is
/// ready, else one opened and set up for this call — and hand its one reply to the receiver. The
/// connection is closed after the reply (or at once for SHUTDOWN, whose success is the server
/// closing it), and a new standby is made ready. Bounded by `upstream.connect_timeout_ms` to
/// connect and `upstream.command_timeout_ms` to answer, each stretched while the upstream's
/// health says it is up but busy (see [`handshake::patiently`]). The reply is counted against
/// the client's `budget` as a shared connection's would be.
pub fn send(
    config: Arc<UpstreamConfig>,
    health: Arc<Health>,
    standby: Arc<Standby>,
    proto: Protocol,
    bytes: Bytes,
    budget: Option<Arc<ReplyBudget>>,
) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let addr = handshake::addr(&config);
        let ready = standby.take();
        let reply = exchange(&config, &health, ready, proto, &bytes).await;
        standby.ready(&config, &health);
        let reply = match reply {
            Ok(bytes) => match &budget {
                Some(b) if !b.charge(bytes.len()) => Err(Partial::from(b.overflow_error())),
                _ => Ok(bytes),
            },
            Err(kind) => Err(Partial::from(NoReply::Lost(Arc::new(UpstreamError::new(
                addr, kind,
            ))))),
        };
        let _ = tx.send(reply);
    });
    rx
}

async fn exchange(
    config: &UpstreamConfig,
    health: &Health,
    ready: Option<Opened>,
    proto: Protocol,
    bytes: &[u8],
) -> Result<Bytes, Kind> {
    let mut opened = match ready {
        Some(opened) => opened,
        None => handshake::open_patient(config, proto, NAME, health, None)
            .await
            .map_err(|e| e.kind)?,
    };
    let deadline = tokio::time::Instant::now() + config.command_timeout;
    let work = async {
        opened
            .write
            .write_all(bytes)
            .await
            .map_err(|e| Kind::Lost(Lost::Write(e.into())))?;
        let mut buf = BytesMut::new();
        let mut scanner = ReplyScanner::new();
        loop {
            match scanner.scan(&buf) {
                // A push (RESP3) is nobody's answer here.
                Ok(Some(found)) if found.push => {
                    let _ = buf.split_to(found.len);
                    continue;
                }
                Ok(Some(found)) => return Ok(buf.split_to(found.len).freeze()),
                Ok(None) => {}
                Err(e) => return Err(Kind::Protocol(ProtocolError::Garbled(e))),
            }
            match opened.read.read_buf(&mut buf).await {
                Ok(0) => return Err(Kind::Lost(Lost::Closed)),
                Ok(_) => {}
                Err(e) => return Err(Kind::Lost(Lost::Read(e.into()))),
            }
        }
    };
    handshake::patiently(work, deadline, Some(health), config)
        .await
        .map_err(|e| match e {
            Kind::TimedOut(_) => Kind::TimedOut(Deadline::Reply(config.command_timeout)),
            e => e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup;

    #[test]
    fn lanes_by_name() {
        assert_eq!(lane(lookup("get").unwrap()), Lane::Shared);
        assert_eq!(lane(lookup("hgetall").unwrap()), Lane::Shared);
        assert_eq!(lane(lookup("eval").unwrap()), Lane::Slow);
        assert_eq!(lane(lookup("keys").unwrap()), Lane::Slow);
        assert_eq!(lane(lookup("function|load").unwrap()), Lane::Slow);
        assert!(out_of_band(lookup("script|kill").unwrap()));
        assert!(out_of_band(lookup("function|kill").unwrap()));
        assert!(!out_of_band(lookup("script|load").unwrap()));
    }
}

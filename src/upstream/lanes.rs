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
//! - [`out_of_band`]: SCRIPT KILL, FUNCTION KILL and SHUTDOWN, sent on a fresh short-lived
//!   connection of their own: the only way to be sure they are behind nothing.
//!
//! A client's own commands still run in the order it sent them: the session waits for its
//! earlier replies before it changes lanes (see `session::reader`). This module decides and
//! carries; it never reads what a reply means beyond where it ends.
use super::error::{Deadline, Kind, Lost, NoReply, ProtocolError, UpstreamError};
use super::handshake;
use super::reply::{Partial, Reply, ReplyBudget};
use crate::command::{CommandSpec, all};
use crate::config::UpstreamConfig;
use crate::protocol::{Protocol, ReplyScanner};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, LazyLock};
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

/// Send `bytes` (one encoded command) on a connection of its own, opened and handshaken for
/// this call, and hand its one reply to the receiver. The connection is closed after the reply
/// (or at once for SHUTDOWN, whose success is the server closing it). Bounded by
/// `upstream.connect_timeout_ms` to connect and `upstream.command_timeout_ms` to answer.
/// The reply is counted against the client's `budget` as a shared connection's would be.
pub fn send(
    config: Arc<UpstreamConfig>,
    proto: Protocol,
    bytes: Bytes,
    budget: Option<Arc<ReplyBudget>>,
) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let addr = handshake::addr(&config);
        let reply =
            match tokio::time::timeout(config.command_timeout, exchange(&config, proto, &bytes))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::new(
                    addr,
                    Kind::TimedOut(Deadline::Reply(config.command_timeout)),
                )),
            };
        let reply = match reply {
            Ok(bytes) => match &budget {
                Some(b) if !b.charge(bytes.len()) => {
                    Err(Partial::from(NoReply::Overflow { limit: b.limit() }))
                }
                _ => Ok(bytes),
            },
            Err(e) => Err(Partial::from(NoReply::Lost(Arc::new(e)))),
        };
        let _ = tx.send(reply);
    });
    rx
}

async fn exchange(
    config: &UpstreamConfig,
    proto: Protocol,
    bytes: &[u8],
) -> Result<Bytes, UpstreamError> {
    let mut opened = handshake::open(config, proto, "respite-admin").await?;
    let err = |kind| UpstreamError::new(handshake::addr(config), kind);
    opened
        .write
        .write_all(bytes)
        .await
        .map_err(|e| err(Kind::Lost(Lost::Write(e.into()))))?;
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
            Err(e) => return Err(err(Kind::Protocol(ProtocolError::Garbled(e)))),
        }
        match opened.read.read_buf(&mut buf).await {
            Ok(0) => return Err(err(Kind::Lost(Lost::Closed))),
            Ok(_) => {}
            Err(e) => return Err(err(Kind::Lost(Lost::Read(e.into())))),
        }
    }
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

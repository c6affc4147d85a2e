//! Commands answered within a tenant's namespace by respite itself: DBSIZE, FLUSHDB, RANDOMKEY,
//! and FUNCTION FLUSH (one FUNCTION LIST of the tenant's function namespace, then a FUNCTION
//! DELETE per library).
//!
//! For a tenant in the shared database. (A tenant with a database of its own, `tenant.db`, gets the
//! upstream's own answers there instead: see `check`.) The upstream can only answer these for the
//! whole database, so respite walks the tenant's keys
//! with `SCAN cursor MATCH <escaped prefix>* COUNT 1000` and works from what it finds. [`NamespaceRun`]
//! is a pure state machine: the session sends each command it yields on one upstream connection,
//! feeds back each reply, and finally writes the reply it yields to the client. Nothing here does
//! I/O. Costs (docs/tenants.md material):
//! - DBSIZE: a full SCAN of the upstream's keyspace (O(all keys), in round trips of ~1000 keys
//!   examined), plus memory for the tenant's key names, kept to count SCAN's possible duplicates
//!   once. Exact for keys that exist for the whole walk.
//! - FLUSHDB [ASYNC|SYNC]: the same SCAN, with one UNLINK per non-empty batch. Keys written
//!   during the walk may survive, as keys written just after a FLUSHDB would.
//! - RANDOMKEY: SCAN until the first batch holding one of the tenant's keys, then a random one of
//!   that batch: one round trip when the tenant's keys are common, a full walk when it has none.
//!   Not uniform across the namespace, which RANDOMKEY does not promise either.
use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use rand::Rng;

use super::reply_rewrite::{ReplyError, Value, parse};
use crate::protocol::{Protocol, encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    DbSize,
    FlushDb,
    RandomKey,
    /// FUNCTION FLUSH: every library in the tenant's function namespace (`pattern`), deleted
    /// one by one after one FUNCTION LIST (libraries loaded meanwhile may survive).
    FunctionFlush,
}

/// A command to be answered within the namespace; run it with [`NamespaceRun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOp {
    pub kind: NamespaceKind,
    /// The tenant's prefix, taken off the key RANDOMKEY returns.
    pub prefix: Bytes,
    /// `SCAN … MATCH` pattern: the escaped prefix followed by `*`.
    pub pattern: Bytes,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceStep {
    /// Send this command upstream and pass its reply to [`NamespaceRun::step`].
    Send(Bytes),
    /// Write this reply to the client; the run is over.
    Reply(Bytes),
}

/// The progress of one [`NamespaceOp`].
#[derive(Debug)]
pub struct NamespaceRun {
    op: NamespaceOp,
    client: Protocol,
    /// The cursor to continue from after the pending UNLINK (FLUSHDB only).
    cursor: Bytes,
    seen: HashSet<Bytes>,
    unlinking: bool,
    /// FUNCTION FLUSH: the libraries still to delete, once listed.
    libraries: Option<Vec<Bytes>>,
}

/// Keys SCAN examines per round trip: large enough to keep round trips few, small enough that one
/// call does not stall the upstream.
const SCAN_COUNT: &[u8] = b"1000";

impl NamespaceRun {
    /// Start `op` for a client speaking `client`; returns the run and the first command to send.
    pub fn start(op: NamespaceOp, client: Protocol) -> (NamespaceRun, Bytes) {
        let run = NamespaceRun {
            op,
            client,
            cursor: Bytes::from_static(b"0"),
            seen: HashSet::new(),
            unlinking: false,
            libraries: None,
        };
        let first = match run.op.kind {
            NamespaceKind::FunctionFlush => {
                let mut out = BytesMut::new();
                let words: [&[u8]; 4] = [b"FUNCTION", b"LIST", b"LIBRARYNAME", &run.op.pattern];
                encode::command(&mut out, &words);
                out.freeze()
            }
            _ => run.scan(b"0"),
        };
        (run, first)
    }

    /// FUNCTION FLUSH's steps: the list, then one FUNCTION DELETE per library. A library gone
    /// meanwhile (another client's DELETE) is no error: it is flushed.
    fn function_flush(&mut self, reply: &[u8]) -> Result<NamespaceStep, ReplyError> {
        let pending = match &mut self.libraries {
            Some(pending) => pending,
            None => {
                if matches!(reply.first(), Some(b'-' | b'!')) {
                    return Ok(NamespaceStep::Reply(Bytes::copy_from_slice(reply)));
                }
                let v = parse(reply)?;
                let names = v
                    .items()
                    .ok_or(ReplyError)?
                    .iter()
                    .filter_map(|lib| super::functions::field(lib, b"library_name"))
                    .filter_map(Value::bulk)
                    .map(Bytes::copy_from_slice)
                    .collect();
                self.libraries.insert(names)
            }
        };
        match pending.pop() {
            Some(name) => {
                let mut out = BytesMut::new();
                let words: [&[u8]; 3] = [b"FUNCTION", b"DELETE", &name];
                encode::command(&mut out, &words);
                Ok(NamespaceStep::Send(out.freeze()))
            }
            None => Ok(self.done_flush()),
        }
    }

    fn scan(&self, cursor: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        encode::command(
            &mut out,
            &[
                b"SCAN",
                cursor,
                b"MATCH",
                &self.op.pattern,
                b"COUNT",
                SCAN_COUNT,
            ],
        );
        out.freeze()
    }

    /// Feed the reply to the last command sent. An error reply from the upstream ends the run
    /// with that error for the client.
    pub fn step(&mut self, reply: &[u8]) -> Result<NamespaceStep, ReplyError> {
        if self.op.kind == NamespaceKind::FunctionFlush {
            return self.function_flush(reply);
        }
        if matches!(reply.first(), Some(b'-' | b'!')) {
            return Ok(NamespaceStep::Reply(Bytes::copy_from_slice(reply)));
        }
        if self.unlinking {
            self.unlinking = false;
            if &self.cursor[..] == b"0" {
                return Ok(self.done_flush());
            }
            return Ok(NamespaceStep::Send(self.scan(&self.cursor.clone())));
        }
        let v = parse(reply)?;
        let items = v.items().ok_or(ReplyError)?;
        let (cursor, keys) = match items {
            [c, k] => (c.bulk().ok_or(ReplyError)?, k.items().ok_or(ReplyError)?),
            _ => return Err(ReplyError),
        };
        let keys: Vec<&[u8]> = keys.iter().filter_map(Value::bulk).collect();
        let finished = cursor == b"0";
        match self.op.kind {
            NamespaceKind::DbSize => {
                self.seen
                    .extend(keys.iter().map(|k| Bytes::copy_from_slice(k)));
                if finished {
                    let mut out = BytesMut::new();
                    encode::integer(&mut out, self.seen.len() as i64);
                    return Ok(NamespaceStep::Reply(out.freeze()));
                }
            }
            NamespaceKind::RandomKey => {
                if !keys.is_empty() {
                    let pick = keys[rand::rng().random_range(0..keys.len())];
                    let name = pick.strip_prefix(&self.op.prefix[..]).unwrap_or(pick);
                    let mut out = BytesMut::new();
                    encode::bulk(&mut out, name);
                    return Ok(NamespaceStep::Reply(out.freeze()));
                }
                if finished {
                    let mut out = BytesMut::new();
                    encode::null(&mut out, self.client);
                    return Ok(NamespaceStep::Reply(out.freeze()));
                }
            }
            NamespaceKind::FlushDb => {
                self.cursor = Bytes::copy_from_slice(cursor);
                if !keys.is_empty() {
                    self.unlinking = true;
                    let mut words: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
                    words.push(b"UNLINK");
                    words.extend(keys);
                    let mut out = BytesMut::new();
                    encode::command(&mut out, &words);
                    return Ok(NamespaceStep::Send(out.freeze()));
                }
                if finished {
                    return Ok(self.done_flush());
                }
            }
            NamespaceKind::FunctionFlush => return Err(ReplyError),
        }
        Ok(NamespaceStep::Send(self.scan(cursor)))
    }

    fn done_flush(&self) -> NamespaceStep {
        let mut out = BytesMut::new();
        encode::simple(&mut out, "OK");
        NamespaceStep::Reply(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: NamespaceKind) -> NamespaceOp {
        NamespaceOp {
            kind,
            prefix: Bytes::from_static(b"t:"),
            pattern: Bytes::from_static(b"t:*"),
        }
    }

    fn send(step: NamespaceStep) -> Bytes {
        match step {
            NamespaceStep::Send(b) => b,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn dbsize_counts_each_key_once() {
        let (mut run, first) = NamespaceRun::start(op(NamespaceKind::DbSize), Protocol::Resp2);
        assert_eq!(
            &first[..],
            b"*6\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$3\r\nt:*\r\n$5\r\nCOUNT\r\n$4\r\n1000\r\n"
        );
        let next = send(
            run.step(b"*2\r\n$1\r\n7\r\n*2\r\n$3\r\nt:a\r\n$3\r\nt:b\r\n")
                .unwrap(),
        );
        assert!(next.starts_with(b"*6\r\n$4\r\nSCAN\r\n$1\r\n7\r\n"));
        let done = run
            .step(b"*2\r\n$1\r\n0\r\n*2\r\n$3\r\nt:b\r\n$3\r\nt:c\r\n")
            .unwrap();
        assert_eq!(done, NamespaceStep::Reply(Bytes::from_static(b":3\r\n")));
    }

    #[test]
    fn flushdb_unlinks_each_batch() {
        let (mut run, _) = NamespaceRun::start(op(NamespaceKind::FlushDb), Protocol::Resp3);
        let unlink = send(run.step(b"*2\r\n$1\r\n5\r\n*1\r\n$3\r\nt:a\r\n").unwrap());
        assert_eq!(&unlink[..], b"*2\r\n$6\r\nUNLINK\r\n$3\r\nt:a\r\n");
        let scan = send(run.step(b":1\r\n").unwrap());
        assert!(scan.starts_with(b"*6\r\n$4\r\nSCAN\r\n$1\r\n5\r\n"));
        let done = run.step(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap();
        assert_eq!(done, NamespaceStep::Reply(Bytes::from_static(b"+OK\r\n")));
        let (mut run, _) = NamespaceRun::start(op(NamespaceKind::FlushDb), Protocol::Resp3);
        let err = run.step(b"-ERR boom\r\n").unwrap();
        assert_eq!(
            err,
            NamespaceStep::Reply(Bytes::from_static(b"-ERR boom\r\n"))
        );
    }

    #[test]
    fn randomkey() {
        let (mut run, _) = NamespaceRun::start(op(NamespaceKind::RandomKey), Protocol::Resp3);
        send(run.step(b"*2\r\n$1\r\n3\r\n*0\r\n").unwrap());
        let got = run.step(b"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nt:k\r\n").unwrap();
        assert_eq!(
            got,
            NamespaceStep::Reply(Bytes::from_static(b"$1\r\nk\r\n"))
        );
        let (mut run, _) = NamespaceRun::start(op(NamespaceKind::RandomKey), Protocol::Resp3);
        let none = run.step(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap();
        assert_eq!(none, NamespaceStep::Reply(Bytes::from_static(b"_\r\n")));
    }
}

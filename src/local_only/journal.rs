//! The replay journal (`local_only.on_recovery = "replay"`): every write local-only mode
//! acknowledged, as the encoded command the engine ran (a tenant's keys already prefixed), in the
//! order the engine ran them, bounded in bytes.
//!
//! # Invariants
//! - A write is in the journal before its reply exists, in the engine's own order: the journal's
//!   lock is held around the engine's call ([`Journal::run`]), so two clients' writes to one key
//!   replay in the order they were applied locally, and each client's in the order it sent them.
//! - Only writes the engine acknowledged (any reply but an error) are kept: a write that failed
//!   locally was not acknowledged, and replaying it could make it happen upstream.
//! - Nothing acknowledged is ever dropped for room: a write that would take the journal past
//!   `local_only.journal_max_bytes` is refused before it runs ([`Journal::run`] returns `None`).
//! - Entries leave the journal only to be sent ([`Journal::take`]); what was not sent goes back in
//!   front of anything written since ([`Journal::put_front`]), so the order holds across a
//!   recovery that failed half-way.
//!
//! It never talks to the upstream: [`super::recovery`] replays it.
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Mutex;

/// What is kept per entry besides its bytes: about 16 bytes of bookkeeping.
const ENTRY_OVERHEAD: usize = 16;

/// One journaled write.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The encoded command (RESP array of bulk strings), as the engine ran it.
    pub command: Bytes,
    /// The kind of reply the engine gave ([`kind`]), to tell a conflict at replay.
    pub local: u8,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: usize,
}

pub(crate) struct Journal {
    inner: Mutex<Inner>,
    max_bytes: usize,
    /// `respite_local_only_journal_{entries,bytes}`, set under the lock at every change (a
    /// store each: local-only writes pay it, forwarding never does).
    gauges: (metrics::Gauge, metrics::Gauge),
}

impl Journal {
    pub(crate) fn new(max_bytes: usize) -> Journal {
        let journal = Journal {
            inner: Mutex::default(),
            max_bytes,
            gauges: crate::metrics::journal_gauges(),
        };
        journal.publish(&journal.lock());
        journal
    }

    fn publish(&self, inner: &Inner) {
        self.gauges.0.set(inner.entries.len() as f64);
        self.gauges.1.set(inner.bytes as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a write through `apply` (the engine) and keep it if it is acknowledged; `None`, and
    /// `apply` never called, when the journal has no room for it.
    pub(crate) fn run(&self, args: &[Bytes], apply: impl FnOnce() -> Bytes) -> Option<Bytes> {
        // Sized up front (a header of at most 16 bytes per argument): one allocation per write,
        // not a buffer grown by doubling, which held up to twice the command.
        let mut command =
            BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        crate::protocol::encode::command(&mut command, args);
        let size = command.len() + ENTRY_OVERHEAD;
        let mut inner = self.lock();
        if inner.bytes + size > self.max_bytes {
            return None;
        }
        let reply = apply();
        let local = kind(&reply);
        if local != b'-' {
            inner.bytes += size;
            inner.entries.push_back(Entry {
                command: command.freeze(),
                local,
            });
            self.publish(&inner);
        }
        Some(reply)
    }

    /// Take every entry, oldest first.
    pub(crate) fn take(&self) -> Vec<Entry> {
        let mut inner = self.lock();
        inner.bytes = 0;
        let taken = std::mem::take(&mut inner.entries).into();
        self.publish(&inner);
        taken
    }

    /// Put back entries that were taken and not sent, ahead of anything journaled since. The
    /// bound may be passed meanwhile: they were acknowledged, so they are kept whatever it costs.
    pub(crate) fn put_front(&self, entries: Vec<Entry>) {
        let mut inner = self.lock();
        inner.bytes += entries
            .iter()
            .map(|e| e.command.len() + ENTRY_OVERHEAD)
            .sum::<usize>();
        for e in entries.into_iter().rev() {
            inner.entries.push_front(e);
        }
        self.publish(&inner);
    }

    /// (entries, bytes) held now.
    pub(crate) fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

/// A reply's kind, the same in RESP2 and RESP3: `-` error, `_` nil, `:` integer (and boolean),
/// `+` status, `$` string (bulk, verbatim, double, big number), `*` aggregate (array, map, set).
pub(crate) fn kind(reply: &[u8]) -> u8 {
    match reply {
        [b'$', b'-', ..] | [b'*', b'-', ..] | [b'_', ..] => b'_',
        [b'#', ..] | [b':', ..] => b':',
        [b'=', ..] | [b',', ..] | [b'(', ..] | [b'$', ..] => b'$',
        [b'%', ..] | [b'~', ..] | [b'>', ..] | [b'*', ..] => b'*',
        [b'!', ..] | [b'-', ..] => b'-',
        [b'+', ..] => b'+',
        _ => b'?',
    }
}

/// The first key-like argument of an encoded command (its second element), for log lines.
pub(crate) fn first_key(command: &[u8]) -> String {
    let mut buf = BytesMut::from(command);
    match crate::protocol::Framer::new(Default::default()).next(&mut buf) {
        Ok(Some(req)) => {
            let name = String::from_utf8_lossy(&req.args[0]).to_string();
            match req.args.get(1) {
                Some(k) => format!("{name} {}", String::from_utf8_lossy(k)),
                None => name,
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn keeps_acknowledged_writes_in_order_and_refuses_past_the_bound() {
        // Room for two `SET k v`s (29 bytes encoded each, plus the bookkeeping).
        let j = Journal::new(2 * (29 + ENTRY_OVERHEAD));
        let ok = || Bytes::from_static(b"+OK\r\n");
        assert!(j.run(&args("SET k 1"), ok).is_some());
        // A write the engine refused is not acknowledged: not kept, and costs nothing.
        let err = || Bytes::from_static(b"-WRONGTYPE x\r\n");
        assert!(j.run(&args("SET k 2"), err).is_some());
        assert!(j.run(&args("SET k 3"), ok).is_some());
        let mut ran = false;
        assert!(
            j.run(&args("SET k 4"), || {
                ran = true;
                ok()
            })
            .is_none()
        );
        assert!(!ran, "a write past the bound never runs");
        let taken = j.take();
        assert_eq!(taken.len(), 2);
        assert!(taken[0].command.ends_with(b"$1\r\n1\r\n"));
        assert!(taken[1].command.ends_with(b"$1\r\n3\r\n"));
        assert_eq!(j.size(), (0, 0));
        // Not sent: back in front of what came since.
        assert!(j.run(&args("SET k 5"), ok).is_some());
        j.put_front(taken[1..].to_vec());
        let again = j.take();
        assert!(again[0].command.ends_with(b"$1\r\n3\r\n"));
        assert!(again[1].command.ends_with(b"$1\r\n5\r\n"));
        assert_eq!(first_key(&again[0].command), "SET k");
    }

    #[test]
    fn kinds_are_the_same_in_both_protocols() {
        assert_eq!(kind(b"$-1\r\n"), kind(b"_\r\n"));
        assert_eq!(kind(b"$2\r\n10\r\n"), kind(b",10\r\n"));
        assert_eq!(kind(b"*0\r\n"), kind(b"%0\r\n"));
        assert_ne!(kind(b"+OK\r\n"), kind(b"$-1\r\n"));
        assert_ne!(kind(b":1\r\n"), kind(b"-ERR x\r\n"));
    }
}

//! Read-your-writes for the near cache: which of a client's writes are bound upstream and not
//! answered yet, so that client's reads of those keys bypass the cache (and all its reads, while
//! a write of unknown reach is out), while its reads of other keys still hit.
//!
//! The session notes each write as it joins a group bound upstream ([`note_write`]) and reports
//! the group's writes answered once their replies are in ([`answered`]). This module only keeps
//! the books and invalidates; it never decides where a command goes or reads a reply.
use super::{NearCache, upstream_key};
use crate::command::{self, AclCategories, CommandSpec};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Writes bound upstream whose replies are not in yet, as the near cache needs to know them.
#[derive(Default)]
pub(crate) struct Written {
    /// Their keys, as the upstream names them.
    keys: Vec<Bytes>,
    /// One of them empties the keyspace (FLUSHALL, FLUSHDB, SWAPDB).
    flush: bool,
    /// How many of them may write keys they do not name (scripts, flushes).
    wide: usize,
    count: usize,
}

impl Written {
    /// No write noted since the last take.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Record one write of `args`, naming its keys under `prefix`; true if it may write keys it
    /// does not name. Its keys are the tail of `self.keys` from the length before.
    fn note(&mut self, spec: &'static CommandSpec, args: &[Bytes], prefix: &[u8]) -> bool {
        let mut wide = spec.acl.contains(AclCategories::SCRIPTING);
        if flushes(spec) {
            self.flush = true;
            wide = true;
        }
        match command::keys(spec, args) {
            Ok(keys) => {
                wide |= keys.is_empty();
                for pos in keys.positions() {
                    self.keys.push(upstream_key(prefix, &args[pos]));
                }
            }
            Err(_) => wide = true,
        }
        self.count += 1;
        self.wide += wide as usize;
        wide
    }
}

/// Empties the keyspace, whatever keys it names.
fn flushes(spec: &CommandSpec) -> bool {
    matches!(spec.name, "flushall" | "flushdb" | "swapdb")
}

/// A client's writes sent upstream and not answered yet: every [`Written`] noted goes in at
/// once and comes out when its group is answered.
#[derive(Default)]
pub(crate) struct Unanswered(Mutex<UnansweredKeys>);

#[derive(Default)]
struct UnansweredKeys {
    keys: HashMap<Bytes, usize>,
    wide: usize,
}

impl Unanswered {
    fn lock(&self) -> MutexGuard<'_, UnansweredKeys> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, keys: &[Bytes], wide: bool) {
        let mut u = self.lock();
        for k in keys {
            *u.keys.entry(k.clone()).or_default() += 1;
        }
        u.wide += wide as usize;
    }

    fn answered(&self, written: &Written) {
        let mut u = self.lock();
        for k in &written.keys {
            if let Some(n) = u.keys.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    u.keys.remove(k);
                }
            }
        }
        u.wide -= written.wide;
        if u.keys.is_empty() && u.keys.capacity() > 64 {
            // A burst of writes should not pin its table.
            u.keys = Default::default();
        }
    }

    /// Whether a read of `keys` (as the client names them, under `prefix`) must bypass the cache.
    pub(crate) fn blocks<'a>(
        &self,
        prefix: &[u8],
        mut keys: impl Iterator<Item = &'a Bytes>,
    ) -> bool {
        let u = self.lock();
        if u.wide > 0 {
            return true;
        }
        if u.keys.is_empty() {
            return false;
        }
        keys.any(|k| u.keys.contains_key(&upstream_key(prefix, k)))
    }
}

/// A write is about to go upstream: invalidate its keys now (the whole cache for a flush), and
/// remember them in `written` for when its reply is in and in `unanswered` until then.
pub(crate) fn note_write(
    cache: &NearCache,
    written: &mut Written,
    unanswered: &Unanswered,
    spec: &'static CommandSpec,
    args: &[Bytes],
    prefix: &[u8],
) {
    let start = written.keys.len();
    let wide = written.note(spec, args, prefix);
    if flushes(spec) {
        cache.flush_sent_through();
    }
    for key in &written.keys[start..] {
        cache.invalidate(key);
    }
    unanswered.add(&written.keys[start..], wide);
}

/// Writes were answered (whatever the answer): their keys leave the near cache again, in case
/// a fill that read the old value landed while they were in flight, and leave `unanswered`.
pub(crate) fn answered(cache: Option<&NearCache>, written: &Written, unanswered: &Unanswered) {
    if let Some(cache) = cache {
        if written.flush {
            cache.flush_sent_through();
        }
        for key in &written.keys {
            cache.invalidate(key);
        }
    }
    unanswered.answered(written);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_args as args;

    /// What the session does per write, without the cache's side: note it, count it in.
    fn write(written: &mut Written, unanswered: &Unanswered, line: &str, prefix: &[u8]) -> bool {
        let args = args(line);
        let spec = command::resolve(&args).expect(line);
        let start = written.keys.len();
        let wide = written.note(spec, &args, prefix);
        unanswered.add(&written.keys[start..], wide);
        wide
    }

    fn blocks(unanswered: &Unanswered, prefix: &[u8], keys: &str) -> bool {
        unanswered.blocks(prefix, args(keys).iter())
    }

    #[test]
    fn keys_counted_in_and_out() {
        let u = Unanswered::default();
        let mut first = Written::default();
        assert!(first.is_empty());
        assert!(!write(&mut first, &u, "SET a 1", b""));
        assert!(!write(&mut first, &u, "MSET b 1 a 2", b""));
        assert!(!first.is_empty());
        assert_eq!(first.keys, args("a b a"));
        assert_eq!((first.count, first.wide, first.flush), (2, 0, false));
        let mut second = Written::default();
        write(&mut second, &u, "DEL a", b"");
        assert!(blocks(&u, b"", "a") && blocks(&u, b"", "b"));
        assert!(!blocks(&u, b"", "c"));
        assert!(blocks(&u, b"", "c b"), "any key of a multi-key read");
        u.answered(&first);
        // `a` is still written by the second group.
        assert!(blocks(&u, b"", "a"));
        assert!(!blocks(&u, b"", "b"));
        u.answered(&second);
        assert!(!blocks(&u, b"", "a b c"));
        assert!(u.lock().keys.is_empty());
    }

    #[test]
    fn wide_writes_block_every_read() {
        let u = Unanswered::default();
        let mut w = Written::default();
        assert!(
            write(&mut w, &u, "EVAL s 0", b""),
            "scripts write what they like"
        );
        assert!(write(&mut w, &u, "FLUSHALL", b""));
        assert!(!write(&mut w, &u, "SET a 1", b""));
        assert_eq!(w.wide, 2);
        assert!(blocks(&u, b"", "anything"));
        u.answered(&w);
        assert!(!blocks(&u, b"", "anything"));
        assert_eq!(u.lock().wide, 0);
    }

    #[test]
    fn flush_flag() {
        let u = Unanswered::default();
        for line in ["FLUSHALL", "FLUSHDB", "FLUSHALL ASYNC"] {
            let mut w = Written::default();
            write(&mut w, &u, line, b"");
            assert!(w.flush, "{line}");
            u.answered(&w);
        }
        let mut w = Written::default();
        write(&mut w, &u, "DEL a", b"");
        assert!(!w.flush);
    }

    #[test]
    fn blocks_under_a_prefix() {
        let u = Unanswered::default();
        let mut w = Written::default();
        write(&mut w, &u, "SET a 1", b"t1:");
        // Kept as the upstream names them.
        assert_eq!(w.keys, args("t1:a"));
        assert!(blocks(&u, b"t1:", "a"));
        assert!(
            !blocks(&u, b"t2:", "a"),
            "another tenant's key of the same name"
        );
        assert!(!blocks(&u, b"", "a"));
        assert!(blocks(&u, b"", "t1:a"));
        u.answered(&w);
        assert!(!blocks(&u, b"t1:", "a"));
    }

    #[test]
    fn a_burst_does_not_pin_its_table() {
        let u = Unanswered::default();
        let mut w = Written::default();
        for i in 0..1000 {
            write(&mut w, &u, &format!("SET k{i} v"), b"");
        }
        u.answered(&w);
        assert_eq!(u.lock().keys.capacity(), 0);
    }
}

//! Read-your-writes for the near cache: which of a client's writes are bound upstream and not
//! answered yet, so that client's reads of those keys bypass the cache (and all its reads, while
//! a write of unknown reach is out), while its reads of other keys still hit.
//!
//! The session notes each write as it joins a group bound upstream ([`note_write`]) and reports
//! the group's writes answered once their replies are in ([`answered`]). This module only keeps
//! the books and invalidates; it never decides where a command goes or reads a reply.
use super::NearCache;
use crate::command::{self, AclCategories, CommandSpec};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Writes bound upstream whose replies are not in yet, as the near cache needs to know them.
///
/// Their keys are copied, back to back, not kept as slices of the client's requests: a slice
/// would keep the client's read buffer from going back to the thread's spares until the reply
/// came, and every next read would allocate afresh (callgrind: about 1,800 instructions per
/// SET with the near cache on).
#[derive(Default)]
pub(crate) struct Written {
    /// Each key as the upstream names it: its [`key_hash`] (8 bytes), its length (4 bytes), its
    /// bytes.
    keys: Vec<u8>,
    /// One of them empties the keyspace (FLUSHALL, FLUSHDB, SWAPDB).
    flush: bool,
    /// How many of them may write keys they do not name (scripts, flushes).
    wide: usize,
    count: usize,
    /// The near cache's count of fills started, read before the first of them invalidated its
    /// keys (see [`answered`]).
    fills_before: u64,
}

/// Answered writes' books, emptied, for the next group's writes on this thread: a session's
/// write then allocates neither the box nor its keys' buffer (callgrind: about 350 instructions
/// per SET with the near cache on), and an idle session holds none. Bounded in number and in
/// what each keeps.
const SPARES: usize = 64;
const SPARE_KEYS_MAX: usize = 4096;

thread_local! {
    // Boxes, not the books themselves: the point is to reuse the box a `Pending::Written` carries.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Written>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Written {
    /// Empty books for a group's writes: a spare if this thread has one.
    pub(crate) fn spare() -> Box<Written> {
        SPARE.with_borrow_mut(|s| s.pop()).unwrap_or_default()
    }

    /// Done with: kept (emptied) for [`Written::spare`] unless large or enough are kept.
    fn recycle(mut self: Box<Self>) {
        if self.keys.capacity() > SPARE_KEYS_MAX {
            return;
        }
        self.keys.clear();
        self.flush = false;
        self.wide = 0;
        self.count = 0;
        SPARE.with_borrow_mut(|s| {
            if s.len() < SPARES {
                s.push(self);
            }
        });
    }

    /// No write noted since the last take.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Record one write of `args`, naming its keys under `prefix`; true if it may write keys it
    /// does not name. Its keys are the entries of `self.keys` from the length before.
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
                    let key = &args[pos];
                    if self.keys.capacity() == 0 {
                        // One allocation for the usual job's keys.
                        self.keys.reserve(64);
                    }
                    self.keys
                        .extend_from_slice(&key_hash(prefix, key).to_le_bytes());
                    let len = (prefix.len() + key.len()) as u32;
                    self.keys.extend_from_slice(&len.to_le_bytes());
                    self.keys.extend_from_slice(prefix);
                    self.keys.extend_from_slice(key);
                }
            }
            Err(_) => wide = true,
        }
        self.count += 1;
        self.wide += wide as usize;
        wide
    }

    /// The keys noted from byte `from` of `self.keys` on: (hash, key as the upstream names it).
    fn keys_from(&self, from: usize) -> impl Iterator<Item = (u64, &[u8])> {
        let mut rest = &self.keys[from..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let (hash, tail) = rest.split_at(8);
            let (len, tail) = tail.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (key, tail) = tail.split_at(len);
            rest = tail;
            Some((u64::from_le_bytes(hash.try_into().expect("8 bytes")), key))
        })
    }
}

/// A key's hash as the upstream names it, `prefix` then `key`: the same for any split of the
/// same bytes (FNV-1a, byte by byte), so a client that changed tenant still blocks on its own
/// unanswered writes. A collision only sends a read upstream.
fn key_hash(prefix: &[u8], key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in prefix.iter().chain(key) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Empties the keyspace, whatever keys it names.
fn flushes(spec: &CommandSpec) -> bool {
    matches!(spec.name, "flushall" | "flushdb" | "swapdb")
}

/// A client's writes sent upstream and not answered yet: every [`Written`] noted goes in at
/// once and comes out when its group is answered. Kept by key hash (see [`key_hash`]).
#[derive(Default)]
pub(crate) struct Unanswered(Mutex<UnansweredKeys>);

#[derive(Default)]
struct UnansweredKeys {
    keys: HashMap<u64, usize, foldhash::fast::FixedState>,
    wide: usize,
}

impl Unanswered {
    fn lock(&self) -> MutexGuard<'_, UnansweredKeys> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, written: &Written, from: usize, wide: bool) {
        let mut u = self.lock();
        for (hash, _) in written.keys_from(from) {
            *u.keys.entry(hash).or_default() += 1;
        }
        u.wide += wide as usize;
    }

    fn answered(&self, written: &Written) {
        let mut u = self.lock();
        for (hash, _) in written.keys_from(0) {
            if let Some(n) = u.keys.get_mut(&hash) {
                *n -= 1;
                if *n == 0 {
                    u.keys.remove(&hash);
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
        keys.any(|k| u.keys.contains_key(&key_hash(prefix, k)))
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
    if written.is_empty() {
        // Before any of the group's keys is invalidated: a fill started after that counts.
        written.fills_before = cache.fills_started();
    }
    let start = written.keys.len();
    let wide = written.note(spec, args, prefix);
    if flushes(spec) {
        cache.flush_sent_through();
    }
    for (_, key) in written.keys_from(start) {
        cache.invalidate(key);
    }
    unanswered.add(written, start, wide);
}

/// Writes were answered (whatever the answer): their keys leave the near cache again, in case
/// a fill that read the old value landed while they were in flight, and leave `unanswered`.
/// Only a fill started after their first invalidation can have: the first one dropped every
/// slot of their keys, and a new slot takes a new fill. So when the cache has started none
/// since (its count is unchanged), there is nothing to drop and the keys are not looked up
/// again: a write costs one invalidation, not two, while no read misses meanwhile.
pub(crate) fn answered(cache: Option<&NearCache>, written: Box<Written>, unanswered: &Unanswered) {
    if let Some(cache) = cache {
        if written.flush {
            cache.flush_sent_through();
        }
        if cache.fills_started() != written.fills_before {
            for (_, key) in written.keys_from(0) {
                cache.invalidate(key);
            }
        }
    }
    unanswered.answered(&written);
    written.recycle();
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
        unanswered.add(written, start, wide);
        wide
    }

    fn keys(w: &Written) -> Vec<String> {
        w.keys_from(0)
            .map(|(_, k)| String::from_utf8(k.to_vec()).unwrap())
            .collect()
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
        assert_eq!(keys(&first), ["a", "b", "a"]);
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
        assert_eq!(keys(&w), ["t1:a"]);
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
    fn answered_books_are_emptied_and_reused() {
        let u = Unanswered::default();
        let mut w = Written::spare();
        write(&mut w, &u, "EVAL s 1 k", b"");
        let used = w.keys.capacity();
        assert!(used > 0);
        answered(None, w, &u);
        assert!(!blocks(&u, b"", "k"), "counted out");
        let again = Written::spare();
        assert!(again.is_empty() && again.keys.is_empty() && again.wide == 0 && !again.flush);
        assert_eq!(again.keys.capacity(), used, "its key buffer kept");
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

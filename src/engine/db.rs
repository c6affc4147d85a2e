//! The keyspace: stored values, their entries (expiry, size, access history) and the map that
//! holds them, with the size accounting and the scan order kept right by every insert and
//! remove. Commands live in the family modules; this file must never parse arguments or reply.
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use rand::Rng;

use super::ZSet;
use super::{evict, scan};

/// A stored value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(Vec<u8>),
    Hash(HashMap<Bytes, Vec<u8>>),
    Set(HashSet<Bytes>),
    ZSet(ZSet),
    List(VecDeque<Bytes>),
    Stream(super::stream_data::Stream),
}

impl Value {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::List(_) => "list",
            Value::Stream(_) => "stream",
        }
    }

    /// Approximate heap bytes: payload plus a per-element overhead for the container's nodes.
    /// Containers are estimated from a sample of their first elements so that re-accounting after
    /// every write stays O(1) however large the container grows.
    fn size(&self) -> usize {
        const NODE: usize = 32;
        const SAMPLE: usize = 16;
        fn estimate<I: Iterator<Item = usize>>(len: usize, lens: I) -> usize {
            let (n, total) = lens
                .take(SAMPLE)
                .fold((0usize, 0usize), |(n, t), l| (n + 1, t + l));
            total.checked_div(n).map_or(0, |avg| len * (avg + NODE))
        }
        match self {
            Value::Str(s) => s.len(),
            Value::Hash(h) => estimate(h.len(), h.iter().map(|(k, v)| k.len() + v.len())),
            Value::Set(s) => estimate(s.len(), s.iter().map(|m| m.len())),
            Value::ZSet(z) => z.size(),
            Value::List(l) => estimate(l.len(), l.iter().map(|m| m.len())),
            Value::Stream(s) => s.size(),
        }
    }

    /// Containers that became empty are deleted, as Redis never keeps an empty one.
    fn is_empty_container(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.len() == 0,
            Value::List(l) => l.is_empty(),
            // Redis keeps a stream that XDEL or XTRIM emptied.
            Value::Stream(_) => false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    /// Absolute expiry in Unix milliseconds.
    pub(crate) expire_at: Option<u64>,
    /// What this entry adds to `Db::used` (key, value, overhead) when last accounted.
    size: usize,
    /// Access history for eviction (see [`super::evict`]).
    pub(super) hits: evict::Hits,
}

/// Per-key fixed overhead: the map slot, the entry and the key's allocation.
pub(super) const ENTRY_OVERHEAD: usize = 64;

/// One keyspace. Every method that removes or inserts keeps `used` right; in-place mutations are
/// re-accounted by [`Db::account`] after each write command.
#[derive(Debug, Default)]
pub(crate) struct Db {
    pub(super) map: HashMap<Bytes, Entry>,
    /// Every key of `map` by (`scan::hash`, key): SCAN's cursor order, which, unlike a hash
    /// map's, does not move when the map grows; and random sampling for eviction in O(log n).
    pub(super) order: BTreeSet<(u64, Bytes)>,
    pub(super) used: usize,
    pub(crate) now: u64,
}

impl Db {
    fn expired(&self, e: &Entry) -> bool {
        e.expire_at.is_some_and(|t| t <= self.now)
    }

    /// Drops `key` if it has expired, so every lookup sees only live keys.
    pub(super) fn expire_if_needed(&mut self, key: &[u8]) {
        if self.map.get(key).is_some_and(|e| self.expired(e)) {
            self.remove(key);
        }
    }

    /// A live entry, its access noted for eviction (every command reads through here).
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        self.get_mut(key).map(|e| &*e)
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.expire_if_needed(key);
        let now = self.now;
        let e = self.map.get_mut(key)?;
        e.hits.touch(now);
        Some(e)
    }

    pub(crate) fn contains(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (k, e) = self.map.remove_entry(key)?;
        self.order.remove(&(scan::hash(&k), k));
        self.used -= e.size;
        Some(e)
    }

    /// Insert or replace, without any expiry.
    pub(crate) fn set(&mut self, key: Bytes, value: Value) {
        self.insert(key, value, None);
    }

    pub(crate) fn insert(&mut self, key: Bytes, value: Value, expire_at: Option<u64>) {
        // An overwritten key keeps its access history, as Redis's `dbOverwrite` keeps its LFU.
        let mut hits = self
            .remove(&key)
            .map_or_else(|| evict::Hits::new(self.now), |old| old.hits);
        hits.touch(self.now);
        let size = ENTRY_OVERHEAD + key.len() + value.size();
        self.used += size;
        self.order.insert((scan::hash(&key), key.clone()));
        self.map.insert(
            key,
            Entry {
                value,
                expire_at,
                size,
                hits,
            },
        );
    }

    /// Recompute `key`'s size after an in-place change, deleting it if it became an empty container.
    pub(crate) fn account(&mut self, key: &[u8]) {
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        if e.value.is_empty_container() {
            self.remove(key);
            return;
        }
        let size = ENTRY_OVERHEAD + key.len() + e.value.size();
        self.used = self.used - e.size + size;
        e.size = size;
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.used = 0;
    }

    /// Live keys (expired ones are skipped but left for lazy removal or [`Engine::sweep`]).
    pub(crate) fn live_keys(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.map.iter().filter(|(_, e)| !self.expired(e))
    }

    pub(super) fn sweep(&mut self) {
        let now = self.now;
        let dead: Vec<Bytes> = self
            .map
            .iter()
            .filter(|(_, e)| e.expire_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }

    /// A key picked at random (by the order index: the first key hashed at or after a random
    /// point, so nearly uniform), live or expired.
    pub(super) fn random_key(&self) -> Option<Bytes> {
        let at: u64 = rand::rng().random();
        self.order
            .range((at, Bytes::new())..)
            .next()
            .or_else(|| self.order.first())
            .map(|(_, k)| k.clone())
    }
}

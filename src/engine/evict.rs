//! Eviction under the memory bound, by the policies Redis's `maxmemory-policy` names, and the
//! per-key access history they read.
//!
//! As Redis does, the victim is chosen among a few sampled keys ([`SAMPLES`], Redis's
//! `maxmemory-samples` default), not from an exact order: LRU evicts the sampled key least
//! recently used, LFU the one with the lowest logarithmic access counter (Redis's: +1 with
//! probability 1/((counter-5)·10+1), −1 per idle minute), TTL the one expiring soonest. The
//! `volatile-*` policies consider only keys with an expiry; when none is found they, like
//! `noeviction`, refuse the write with `-OOM`. This module must never read the clock: access
//! times are the `now` the caller passed to the command.
use bytes::Bytes;
use rand::Rng;

use super::Db;

/// Keys sampled per eviction (Redis's `maxmemory-samples` default).
const SAMPLES: usize = 5;
/// Random draws spent looking for keys with an expiry before a `volatile-*` policy scans them
/// all (few such keys among many is the case where draws keep missing).
const VOLATILE_DRAWS: usize = 64;
/// Redis's `LFU_INIT_VAL`: a new key's counter, so it is not evicted before it can be used.
const LFU_INIT: u8 = 5;
/// Redis's `lfu-log-factor` and `lfu-decay-time` (minutes) defaults.
const LFU_LOG_FACTOR: f64 = 10.0;
const LFU_DECAY_MS: u64 = 60_000;

/// Redis's `maxmemory-policy` values; the configuration owns the names (`local.maxmemory_policy`).
pub use crate::config::Eviction;

/// A key's access history: last access (ms) and the LFU counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hits {
    last: u64,
    counter: u8,
}

impl Hits {
    pub(super) fn new(now: u64) -> Self {
        Hits {
            last: now,
            counter: LFU_INIT,
        }
    }

    /// Note one access at `now`: decay the counter for the idle minutes, then maybe raise it.
    pub(super) fn touch(&mut self, now: u64) {
        self.counter = self.decayed(now);
        if self.counter < u8::MAX {
            let base = f64::from(self.counter.saturating_sub(LFU_INIT));
            let p = 1.0 / (base * LFU_LOG_FACTOR + 1.0);
            if rand::rng().random::<f64>() < p {
                self.counter += 1;
            }
        }
        self.last = self.last.max(now);
    }

    fn decayed(&self, now: u64) -> u8 {
        let idle_minutes = now.saturating_sub(self.last) / LFU_DECAY_MS;
        self.counter
            .saturating_sub(u8::try_from(idle_minutes).unwrap_or(u8::MAX))
    }
}

/// Evict until `incoming` more bytes fit under `max`; false if the policy allows no (further)
/// eviction and they still do not fit, which is Redis's `-OOM`.
pub(super) fn make_room(db: &mut Db, policy: Eviction, max: usize, incoming: usize) -> bool {
    if max == 0 {
        return true;
    }
    if incoming > max {
        return false;
    }
    while db.used + incoming > max {
        if policy == Eviction::NoEviction {
            return false;
        }
        let Some(victim) = pick(db, policy) else {
            return false;
        };
        db.remove(&victim);
    }
    true
}

/// The best of a few sampled keys by the policy's measure (lower is evicted first).
fn pick(db: &Db, policy: Eviction) -> Option<Bytes> {
    let now = db.now;
    let mut sample: Vec<Bytes> = Vec::with_capacity(SAMPLES);
    if policy.volatile() {
        for _ in 0..VOLATILE_DRAWS {
            if sample.len() == SAMPLES {
                break;
            }
            let k = db.random_key()?;
            if db.map.get(&k).is_some_and(|e| e.expire_at.is_some()) {
                sample.push(k);
            }
        }
        if sample.is_empty() {
            // Draws kept missing: few keys have an expiry, so look at all of them once.
            sample = db
                .map
                .iter()
                .filter(|(_, e)| e.expire_at.is_some())
                .map(|(k, _)| k.clone())
                .take(SAMPLES)
                .collect();
        }
    } else {
        let n = if policy == Eviction::AllKeysRandom {
            1
        } else {
            SAMPLES
        };
        for _ in 0..n {
            sample.push(db.random_key()?);
        }
    }
    sample.into_iter().min_by_key(|k| {
        let e = &db.map[k];
        match policy {
            Eviction::AllKeysLfu | Eviction::VolatileLfu => {
                (u64::from(e.hits.decayed(now)), e.hits.last)
            }
            Eviction::VolatileTtl => (e.expire_at.unwrap_or(u64::MAX), 0),
            Eviction::AllKeysRandom | Eviction::VolatileRandom => (0, 0),
            _ => (e.hits.last, 0),
        }
    })
}

//! `[local]` (the in-memory engine's memory bound) and `[local_only]` (what the engine does while
//! the upstream is down, and what becomes of its data when the upstream is back).
use super::{Check, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[local_only]`: the local engine answering while the upstream is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOnlyConfig {
    /// Serve from the local engine while the upstream is down (otherwise commands fail fast).
    pub enabled: bool,
    pub writes: LocalWrites,
    pub on_recovery: OnRecovery,
    /// The bound of `replay`'s journal, in bytes (encoded commands plus about 16 bytes each).
    pub journal_max_bytes: usize,
    /// How long after the near cache lost coherence its entries may still answer reads in
    /// local-only mode (stale-if-error); zero: never.
    pub stale_reads: Duration,
    /// `[[local_only.rule]]`: per key pattern overrides of `writes`, first match wins.
    pub rules: Vec<LocalRule>,
    /// Serve locally an upstream that has never answered since start. Off: such an upstream is
    /// as likely a typo as an outage, and writes acknowledged for it would be lost.
    pub serve_before_first_contact: bool,
}

/// `[[local_only.rule]] pattern = "lock:*" writes = "refuse"`: what a write to a key matching
/// `pattern` (a Redis glob, matched against the key as the client names it) gets while down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRule {
    pub pattern: Vec<u8>,
    pub writes: LocalWrites,
}

/// What a write gets in local-only mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWrites {
    /// Applied to the local engine (and never sent upstream).
    Apply,
    /// Refused with `-TRYAGAIN`, naming local-only mode.
    Refuse,
}

/// What becomes of the local engine's data when the upstream is healthy again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRecovery {
    /// The default: every write acknowledged locally is replayed upstream, in the order it was
    /// applied, exactly once, before forwarding resumes; commutative writes add to what the
    /// upstream held.
    Replay,
    /// Every key written locally during the outage is deleted upstream before forwarding
    /// resumes (the next read refills it from the application's source of truth); the local data
    /// is dropped: no read after recovery returns a value older than a write acknowledged during
    /// the outage, and the values written before it are lost with them.
    Invalidate,
    /// Flushed: it missed every change made upstream meanwhile, so nothing in it can be trusted.
    /// Writes acknowledged locally are lost, and the upstream's older copies stay readable.
    Drop,
    /// Keys the upstream does not have are created there (never overwriting one it has), then
    /// the local data is dropped.
    Merge,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLocalOnly {
    enabled: bool,
    writes: String,
    on_recovery: String,
    journal_max_bytes: i64,
    stale_reads_ms: i64,
    rule: Vec<RawRule>,
    serve_before_first_contact: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pattern: String,
    writes: String,
}

impl Default for RawLocalOnly {
    fn default() -> Self {
        RawLocalOnly {
            enabled: true,
            writes: "apply".into(),
            on_recovery: "replay".into(),
            journal_max_bytes: 64 * 1024 * 1024,
            stale_reads_ms: 0,
            rule: Vec::new(),
            serve_before_first_contact: false,
        }
    }
}

impl RawLocalOnly {
    pub(super) fn validate(&self, c: &Check) -> Result<LocalOnlyConfig, ConfigError> {
        let writes = |key: &str, v: &str| match v {
            "apply" => Ok(LocalWrites::Apply),
            "refuse" => Ok(LocalWrites::Refuse),
            other => Err(c.invalid(key, format!("`{other}` is not `apply` or `refuse`"))),
        };
        let mut rules = Vec::with_capacity(self.rule.len());
        for r in &self.rule {
            if r.pattern.is_empty() {
                return Err(c.invalid(
                    "local_only.rule.pattern",
                    "must not be empty (`*` matches every key)".into(),
                ));
            }
            rules.push(LocalRule {
                pattern: r.pattern.as_bytes().to_vec(),
                writes: writes("local_only.rule.writes", &r.writes)?,
            });
        }
        Ok(LocalOnlyConfig {
            enabled: self.enabled,
            writes: writes("local_only.writes", &self.writes)?,
            on_recovery: match self.on_recovery.as_str() {
                "replay" => OnRecovery::Replay,
                "invalidate" => OnRecovery::Invalidate,
                "drop" => OnRecovery::Drop,
                "merge" => OnRecovery::Merge,
                other => {
                    return Err(c.invalid(
                        "local_only.on_recovery",
                        format!(
                            "`{other}` is not `replay`, `invalidate`, `drop` or `merge` (see \
                             docs/local-only.md)"
                        ),
                    ));
                }
            },
            journal_max_bytes: match self.journal_max_bytes {
                n if n < 1024 => {
                    return Err(c.invalid(
                        "local_only.journal_max_bytes",
                        "must be at least 1024".into(),
                    ));
                }
                n => n as usize,
            },
            stale_reads: match self.stale_reads_ms {
                ms if ms < 0 => {
                    return Err(c.invalid(
                        "local_only.stale_reads_ms",
                        "must be 0 (never) or more".into(),
                    ));
                }
                ms => Duration::from_millis(ms as u64),
            },
            rules,
            serve_before_first_contact: self.serve_before_first_contact,
        })
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLocal {
    max_memory_bytes: i64,
    maxmemory_policy: String,
}

impl Default for RawLocal {
    fn default() -> Self {
        RawLocal {
            max_memory_bytes: 256 * 1024 * 1024,
            maxmemory_policy: "allkeys-lru".into(),
        }
    }
}

impl RawLocal {
    /// The engine's memory bound in bytes; 0 for none.
    pub(super) fn validate(&self, c: &Check) -> Result<usize, ConfigError> {
        if self.max_memory_bytes < 0 {
            return Err(c.invalid(
                "local.max_memory_bytes",
                "must be 0 (no bound) or more".into(),
            ));
        }
        Ok(self.max_memory_bytes as usize)
    }

    /// How the engine makes room under its bound.
    pub(super) fn eviction(&self, c: &Check) -> Result<Eviction, ConfigError> {
        Eviction::parse(&self.maxmemory_policy).ok_or_else(|| {
            c.invalid(
                "local.maxmemory_policy",
                format!(
                    "`{}` is not one of noeviction, allkeys-lru, allkeys-lfu, allkeys-random, \
                     volatile-lru, volatile-lfu, volatile-random, volatile-ttl",
                    self.maxmemory_policy
                ),
            )
        })
    }
}

/// Redis's `maxmemory-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    NoEviction,
    #[default]
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Eviction {
    /// The policy by its Redis name (`allkeys-lru`, …); None for an unknown name.
    pub fn parse(name: &str) -> Option<Eviction> {
        Some(match name {
            "noeviction" => Eviction::NoEviction,
            "allkeys-lru" => Eviction::AllKeysLru,
            "allkeys-lfu" => Eviction::AllKeysLfu,
            "allkeys-random" => Eviction::AllKeysRandom,
            "volatile-lru" => Eviction::VolatileLru,
            "volatile-lfu" => Eviction::VolatileLfu,
            "volatile-random" => Eviction::VolatileRandom,
            "volatile-ttl" => Eviction::VolatileTtl,
            _ => return None,
        })
    }

    /// Only keys with an expiry may be evicted.
    pub fn volatile(self) -> bool {
        matches!(
            self,
            Eviction::VolatileLru
                | Eviction::VolatileLfu
                | Eviction::VolatileRandom
                | Eviction::VolatileTtl
        )
    }
}

//! `[near_cache]` and its `[[near_cache.rule]]`s, as written and validated, and [`ReadKind`]: the
//! reads a rule's `commands` may name (the cache answers exactly these; `cache::reads` says how).
use super::{Check, ConfigError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The validated near-cache configuration.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Tracking connections to the upstream; a key always uses the same one.
    pub connections: usize,
    /// Bound on cached bytes (keys and both encodings of each reply).
    pub max_memory: usize,
    /// Replies bigger than this are answered but not cached.
    pub max_entry: usize,
    /// Longest an entry lives when its key has no TTL.
    pub safety_ttl: Duration,
    /// PING period on each tracking connection, and how long a reply may take before the
    /// connection counts as lost (and the cache is emptied).
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    /// Hits of a tracking connection's keys stop this long after the last heartbeat it had
    /// answered was sent: the bound on how stale a silent connection (a frozen upstream, a
    /// black-holed link) can leave a hit, well before `heartbeat_timeout` calls it lost.
    pub max_silence: Duration,
    /// A key whose cached entry is invalidated this many times within one second is not cached
    /// again for `cooldown`.
    pub cooldown_after: u32,
    pub cooldown: Duration,
    pub rules: Vec<Rule>,
}

/// Reads of keys matching `pattern` (as the client names them, before any tenant prefix) are
/// cached, for one tenant or for every client.
#[derive(Debug, Clone)]
pub struct Rule {
    pub tenant: Option<String>,
    pub pattern: Bytes,
    /// A bit per [`ReadKind`].
    pub reads: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNearCache {
    enabled: bool,
    connections: i64,
    max_memory_bytes: i64,
    max_entry_bytes: i64,
    safety_ttl_ms: i64,
    heartbeat_ms: i64,
    heartbeat_timeout_ms: i64,
    max_silence_ms: i64,
    cooldown_after: i64,
    cooldown_ms: i64,
    rule: Vec<RawRule>,
}

impl Default for RawNearCache {
    fn default() -> Self {
        RawNearCache {
            enabled: false,
            connections: 2,
            max_memory_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 256 * 1024,
            safety_ttl_ms: 60_000,
            heartbeat_ms: 100,
            heartbeat_timeout_ms: 3000,
            max_silence_ms: 500,
            cooldown_after: 10,
            cooldown_ms: 10_000,
            rule: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    tenant: Option<String>,
    pattern: String,
    #[serde(default)]
    commands: Vec<String>,
}

impl RawNearCache {
    /// Validate; `tenant_exists` says whether a rule's tenant is configured. `None` when the
    /// cache is off (its keys are checked all the same).
    pub(super) fn validate(
        &self,
        has_upstream: bool,
        tenant_exists: &dyn Fn(&str) -> bool,
        c: &Check,
    ) -> Result<Option<CacheConfig>, ConfigError> {
        let raw = self;
        let positive = |key: &str, v: i64| c.positive(key, v);
        let millis = |key: &str, v: i64| c.millis(key, v);
        let invalid = |key: &str, m: String| c.invalid(key, m);
        let config = CacheConfig {
            connections: positive("near_cache.connections", raw.connections)?,
            max_memory: positive("near_cache.max_memory_bytes", raw.max_memory_bytes)?,
            max_entry: positive("near_cache.max_entry_bytes", raw.max_entry_bytes)?,
            safety_ttl: millis("near_cache.safety_ttl_ms", raw.safety_ttl_ms)?,
            heartbeat: millis("near_cache.heartbeat_ms", raw.heartbeat_ms)?,
            heartbeat_timeout: millis("near_cache.heartbeat_timeout_ms", raw.heartbeat_timeout_ms)?,
            max_silence: millis("near_cache.max_silence_ms", raw.max_silence_ms)?,
            cooldown_after: positive("near_cache.cooldown_after", raw.cooldown_after)?
                .min(u32::MAX as usize) as u32,
            cooldown: millis("near_cache.cooldown_ms", raw.cooldown_ms)?,
            rules: raw
                .rule
                .iter()
                .enumerate()
                .map(|(i, r)| rule(i, r, tenant_exists, c))
                .collect::<Result<_, ConfigError>>()?,
        };
        if config.connections > 64 {
            return Err(invalid(
                "near_cache.connections",
                format!("{} is more than 64", config.connections),
            ));
        }
        if config.heartbeat_timeout <= config.heartbeat {
            return Err(invalid(
                "near_cache.heartbeat_timeout_ms",
                "must be longer than near_cache.heartbeat_ms".into(),
            ));
        }
        if config.max_silence <= config.heartbeat {
            // Trust would lapse between two answered heartbeats of a healthy connection.
            return Err(invalid(
                "near_cache.max_silence_ms",
                "must be longer than near_cache.heartbeat_ms".into(),
            ));
        }
        if config.max_entry > config.max_memory {
            return Err(invalid(
                "near_cache.max_entry_bytes",
                "must not be more than near_cache.max_memory_bytes".into(),
            ));
        }
        if !raw.enabled {
            return Ok(None);
        }
        if !has_upstream {
            return Err(invalid(
                "near_cache.enabled",
                "the near cache needs an upstream (upstream.url); standalone mode answers everything locally already"
                    .into(),
            ));
        }
        Ok(Some(config))
    }
}

fn rule(
    i: usize,
    raw: &RawRule,
    tenant_exists: &dyn Fn(&str) -> bool,
    c: &Check,
) -> Result<Rule, ConfigError> {
    let invalid = |key: &str, m: String| c.invalid(key, m);
    let key = |field: &str| format!("near_cache.rule[{i}].{field}");
    if raw.pattern.is_empty() {
        return Err(invalid(
            &key("pattern"),
            "must not be empty (use \"*\" for every key)".into(),
        ));
    }
    if let Some(t) = &raw.tenant
        && !tenant_exists(t)
    {
        return Err(invalid(
            &key("tenant"),
            format!("no [[tenant]] is named `{t}`"),
        ));
    }
    let mut reads = 0;
    if raw.commands.is_empty() {
        reads = ReadKind::ALL.iter().fold(0, |acc, k| acc | k.bit());
    }
    for name in &raw.commands {
        match ReadKind::by_name(name) {
            Some(kind) => reads |= kind.bit(),
            None => {
                let names: Vec<String> = ReadKind::ALL
                    .iter()
                    .map(|k| k.name().to_uppercase())
                    .collect();
                return Err(invalid(
                    &key("commands"),
                    format!(
                        "`{name}` is not a read respite can cache; these are: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Rule {
        tenant: raw.tenant.clone(),
        pattern: Bytes::from(raw.pattern.clone().into_bytes()),
        reads,
    })
}

/// The 1-based line of `near_cache.rule[i].field` (or of the `[[near_cache.rule]]` header when
/// the field is not written).
pub(super) fn rule_key_line(source: &str, key: &str) -> Option<usize> {
    let rest = key.strip_prefix("near_cache.rule[")?;
    let (index, field) = rest.split_once("].")?;
    let index: usize = index.parse().ok()?;
    let mut current: Option<usize> = None;
    let mut header = None;
    let mut in_rule = false;
    for (n, line) in source.lines().enumerate() {
        let t = line.trim();
        if t == "[[near_cache.rule]]" {
            current = Some(current.map_or(0, |c| c + 1));
            in_rule = true;
            if current == Some(index) {
                header = Some(n + 1);
            }
        } else if t.starts_with('[') {
            in_rule = false;
        } else if in_rule
            && current == Some(index)
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == field
        {
            return Some(n + 1);
        }
    }
    header
}

macro_rules! reads {
    ($($kind:ident = $name:literal),* $(,)?) => {
        /// A cacheable read command.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum ReadKind { $($kind),* }

        impl ReadKind {
            pub const ALL: &'static [ReadKind] = &[$(ReadKind::$kind),*];

            /// The command's name, as in the command table.
            pub fn name(self) -> &'static str {
                match self { $(ReadKind::$kind => $name),* }
            }
        }
    };
}

reads! {
    Get = "get",
    Mget = "mget",
    Strlen = "strlen",
    Getrange = "getrange",
    Exists = "exists",
    Type = "type",
    Hget = "hget",
    Hmget = "hmget",
    Hgetall = "hgetall",
    Hexists = "hexists",
    Hlen = "hlen",
    Hstrlen = "hstrlen",
    Hkeys = "hkeys",
    Hvals = "hvals",
    Scard = "scard",
    Sismember = "sismember",
    Smismember = "smismember",
    Smembers = "smembers",
    Llen = "llen",
    Lindex = "lindex",
    Lrange = "lrange",
    Zcard = "zcard",
    Zscore = "zscore",
    Zmscore = "zmscore",
    Zrank = "zrank",
    Zrevrank = "zrevrank",
    Zcount = "zcount",
    Zlexcount = "zlexcount",
    Zrange = "zrange",
    Zrevrange = "zrevrange",
    Zrangebyscore = "zrangebyscore",
    Zrevrangebyscore = "zrevrangebyscore",
    Zrangebylex = "zrangebylex",
    Zrevrangebylex = "zrevrangebylex",
    Xlen = "xlen",
    Xrange = "xrange",
    Xrevrange = "xrevrange",
    Getbit = "getbit",
    Bitcount = "bitcount",
    Lpos = "lpos",
}

impl ReadKind {
    /// Find a cacheable read by the name configuration uses (`GET`, `hgetall`).
    pub fn by_name(name: &str) -> Option<ReadKind> {
        let lower = name.to_ascii_lowercase();
        ReadKind::ALL.iter().copied().find(|k| k.name() == lower)
    }

    pub fn bit(self) -> u64 {
        1 << self as u8
    }
}

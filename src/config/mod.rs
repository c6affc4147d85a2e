//! Configuration: proxy.toml, then `RESPITE_*` environment overrides, then command-line flags,
//! parsed into raw serde structs and validated into a typed [`Config`].
//!
//! Every error names the key (`upstream.url`) and, when the key came from the file, its line. Nothing
//! here opens sockets or files other than the config file itself.
use crate::policy::Tenants;
use crate::protocol::Limits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A configuration error; its `Display` names the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: invalid value for `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// The validated configuration respite runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub limits: Limits,
    /// Most commands one client may have in flight before respite stops reading from it.
    pub max_inflight_per_client: usize,
    /// Most bytes of upstream replies one client may leave unread before it is closed.
    pub max_reply_bytes: usize,
    pub upstream: Option<UpstreamConfig>,
    pub admin: Option<SocketAddr>,
    pub log_level: String,
    /// Tokio worker threads; 0 means one per core. One by default: a sidecar shares its cores with
    /// the app (and here with the upstream), and one thread avoids cross-thread wake-ups.
    pub worker_threads: usize,
    /// How long SIGTERM waits for clients to finish their in-flight commands.
    pub shutdown_grace: Duration,
    /// Tenants (`[[tenant]]`): when there are any, every client acts as one of them.
    pub tenants: Option<Arc<Tenants>>,
    /// Memory bound of the local engine (standalone and local-only mode), in bytes; 0 for none.
    pub local_max_memory: usize,
    /// How the local engine makes room under its bound (`local.maxmemory_policy`).
    pub local_eviction: crate::engine::Eviction,
    /// What happens while the upstream is down (`[local_only]`).
    pub local_only: LocalOnlyConfig,
    /// The near cache (`[near_cache]`), when enabled.
    pub near_cache: Option<crate::cache::CacheConfig>,
}

/// `[local_only]`: the local engine answering while the upstream is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOnlyConfig {
    /// Serve from the local engine while the upstream is down (otherwise commands fail fast).
    pub enabled: bool,
    pub writes: LocalWrites,
    pub on_recovery: OnRecovery,
    /// How long after the near cache lost coherence its entries may still answer reads in
    /// local-only mode (stale-if-error); zero: never.
    pub stale_reads: Duration,
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
    /// Flushed: it missed every change made upstream meanwhile, so nothing in it can be trusted.
    Drop,
    /// Keys the upstream does not have are created there (never overwriting one it has), then
    /// the local data is dropped.
    Merge,
}

/// `[health]`: how the upstream's health is judged (see `upstream::health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between PING probes on the probe connection.
    pub probe_interval: Duration,
    /// The upstream is silent (down) when no probe has been answered for this long.
    pub probe_timeout: Duration,
    /// Successful probes in a row, after a failure, before the upstream counts as healthy again.
    pub recover_after: u32,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub tcp: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    pub max_clients: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: UpstreamUrl,
    /// Multiplexed connections per protocol (RESP2 and RESP3 clients use separate pools so replies
    /// are forwarded byte for byte).
    pub connections: usize,
    /// Most commands in flight on one upstream connection (Dragonfly stops reading past 10,000).
    pub max_inflight: usize,
    /// A command unanswered for this long fails its connection: every command in flight on it gets
    /// an error and the connection is replaced.
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub health: HealthConfig,
}

/// Where the upstream is: `redis://[user:pass@]host:port[/db]` or `unix:///path[?db=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub addr: UpstreamAddr,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddr::Tcp(a) => write!(f, "{a}"),
            UpstreamAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

// ---- raw, as written in proxy.toml ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    /// The tenant clients get before (or without) AUTH; see `[[tenant]]`.
    default_tenant: Option<String>,
    tenant: Vec<crate::policy::config::RawTenant>,
    listen: RawListen,
    limits: RawLimits,
    upstream: RawUpstream,
    admin: RawAdmin,
    log: RawLog,
    runtime: RawRuntime,
    local: RawLocal,
    health: RawHealth,
    local_only: RawLocalOnly,
    near_cache: crate::cache::config::RawNearCache,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    probe_interval_ms: i64,
    probe_timeout_ms: i64,
    recover_after: i64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            probe_interval_ms: 250,
            probe_timeout_ms: 1000,
            recover_after: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLocalOnly {
    enabled: bool,
    writes: String,
    on_recovery: String,
    stale_reads_ms: i64,
}

impl Default for RawLocalOnly {
    fn default() -> Self {
        RawLocalOnly {
            enabled: true,
            writes: "apply".into(),
            on_recovery: "drop".into(),
            stale_reads_ms: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLocal {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    tcp: String,
    unix: String,
    max_clients: i64,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            tcp: "127.0.0.1:6380".into(),
            unix: String::new(),
            max_clients: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_args: i64,
    max_bulk_len: i64,
    max_inline_len: i64,
    max_query_buffer: i64,
    max_inflight_per_client: i64,
    max_reply_bytes: i64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let l = Limits::default();
        RawLimits {
            max_args: l.max_args as i64,
            max_bulk_len: l.max_bulk_len as i64,
            max_inline_len: l.max_inline_len as i64,
            max_query_buffer: l.max_query_buffer as i64,
            max_inflight_per_client: 1024,
            max_reply_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: String,
    connections: i64,
    max_inflight: i64,
    command_timeout_ms: i64,
    connect_timeout_ms: i64,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: String::new(),
            connections: 2,
            max_inflight: 8192,
            command_timeout_ms: 5000,
            connect_timeout_ms: 1000,
            backoff_base_ms: 50,
            backoff_max_ms: 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9121".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRuntime {
    worker_threads: i64,
    shutdown_grace_ms: i64,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            worker_threads: 1,
            shutdown_grace_ms: 5000,
        }
    }
}

/// Overrides from the command line: `(dotted key, value)` pairs, applied after the file and the
/// environment. Values are TOML literals when they parse as one, strings otherwise.
pub type Overrides = Vec<(String, String)>;

/// Sections whose keys may be overridden by `RESPITE_<SECTION>_<KEY>` environment variables.
/// A section that is a prefix of another (`local`, `local_only`) comes after it: the longest wins.
const SECTIONS: &[&str] = &[
    "listen",
    "limits",
    "upstream",
    "admin",
    "log",
    "runtime",
    "local_only",
    "local",
    "health",
    "near_cache",
];

/// Environment overrides: `RESPITE_UPSTREAM_URL=…` sets `upstream.url`; `REDIS_URL` sets
/// `upstream.url` too, with lower precedence than `RESPITE_UPSTREAM_URL`.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Overrides {
    let mut redis_url = None;
    let mut out = Vec::new();
    for (name, value) in vars {
        if name == "REDIS_URL" {
            redis_url = Some(value);
            continue;
        }
        let Some(rest) = name.strip_prefix("RESPITE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        for section in SECTIONS {
            if let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
                out.push((format!("{section}.{key}"), value.clone()));
                break;
            }
        }
    }
    if let Some(url) = redis_url {
        out.insert(0, ("upstream.url".into(), url));
    }
    out
}

/// Where one override came from, for error messages.
fn apply_override(
    table: &mut toml::Table,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let Some((section, field)) = key.split_once('.') else {
        return Err(ConfigError::Parse {
            origin: origin.into(),
            message: format!("override `{key}` must be of the form section.key"),
        });
    };
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(field.to_string(), parsed);
            Ok(())
        }
        _ => Err(ConfigError::Parse {
            origin: origin.into(),
            message: format!("`{section}` is not a table"),
        }),
    }
}

/// Load and validate: the file (if any), then `env`, then `flags`.
pub fn load(
    path: Option<&std::path::Path>,
    env: &Overrides,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let (source, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (String::new(), "defaults".to_string()),
    };
    from_str_with(&source, &origin, env, flags)
}

/// Parse and validate a configuration text (tests use this directly).
pub fn from_str_with(
    source: &str,
    origin: &str,
    env: &Overrides,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table =
        source
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: origin.into(),
                message: e.to_string(),
            })?;
    let mut origins: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        apply_override(&mut table, k, v, "environment")?;
        origins.push((k.clone(), "environment".into()));
    }
    for (k, v) in flags {
        apply_override(&mut table, k, v, "command line")?;
        origins.push((k.clone(), "command line".into()));
    }
    // Report where a bad key came from: an override names its source, a file key its line.
    let where_is = |key: &str| -> String {
        if let Some((_, o)) = origins.iter().rev().find(|(k, _)| k == key) {
            return o.clone();
        }
        let line = if key.starts_with("tenant[") || key == "default_tenant" {
            crate::policy::config::tenant_key_line(source, key)
        } else if key.starts_with("near_cache.rule[") {
            crate::cache::config::rule_key_line(source, key)
        } else {
            line_of(source, key)
        };
        match line {
            Some(line) => format!("{origin} line {line}"),
            None => origin.to_string(),
        }
    };
    let raw: RawConfig = RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
        let message = e.to_string().trim().replace('\n', " ");
        // serde names the unknown or mistyped field but not where it was set: find that.
        let origin = unknown_field(&message)
            .and_then(|f| {
                let suffix = format!(".{f}");
                if let Some((_, o)) = origins.iter().rev().find(|(k, _)| k.ends_with(&suffix)) {
                    return Some(o.clone());
                }
                source
                    .lines()
                    .position(|l| {
                        let l = l.trim_start();
                        l.strip_prefix(f)
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map(|i| format!("{origin} line {}", i + 1))
            })
            .unwrap_or_else(|| origin.to_string());
        ConfigError::Parse { origin, message }
    })?;
    validate(raw, &where_is)
}

fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

/// The 1-based line of `section.key` in a TOML text, found by a light scan of table headers.
fn line_of(source: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let mut current = String::new();
    for (i, line) in source.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
        } else if current == section
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return Some(i + 1);
        }
    }
    None
}

fn validate(raw: RawConfig, where_is: &dyn Fn(&str) -> String) -> Result<Config, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        origin: where_is(key),
        key: key.to_string(),
        message,
    };
    let positive = |key: &str, v: i64| -> Result<usize, ConfigError> {
        if v <= 0 {
            Err(invalid(key, format!("must be a positive integer, got {v}")))
        } else {
            Ok(v as usize)
        }
    };
    let millis = |key: &str, v: i64| -> Result<Duration, ConfigError> {
        positive(key, v).map(|v| Duration::from_millis(v as u64))
    };
    let addr = |key: &str, v: &str| -> Result<Option<SocketAddr>, ConfigError> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| invalid(key, format!("`{v}` is not an address of the form ip:port")))
    };

    let listen = ListenConfig {
        tcp: addr("listen.tcp", &raw.listen.tcp)?,
        unix: (!raw.listen.unix.is_empty()).then(|| PathBuf::from(&raw.listen.unix)),
        max_clients: positive("listen.max_clients", raw.listen.max_clients)?,
    };
    if listen.tcp.is_none() && listen.unix.is_none() {
        return Err(invalid(
            "listen.tcp",
            "no listener: set listen.tcp or listen.unix".into(),
        ));
    }

    let limits = Limits {
        max_args: positive("limits.max_args", raw.limits.max_args)?,
        max_bulk_len: positive("limits.max_bulk_len", raw.limits.max_bulk_len)?,
        max_inline_len: positive("limits.max_inline_len", raw.limits.max_inline_len)?,
        max_query_buffer: positive("limits.max_query_buffer", raw.limits.max_query_buffer)?,
    };
    let hard = Limits::default();
    for (key, v, max) in [
        ("limits.max_args", limits.max_args, hard.max_args),
        (
            "limits.max_bulk_len",
            limits.max_bulk_len,
            hard.max_bulk_len,
        ),
        (
            "limits.max_inline_len",
            limits.max_inline_len,
            hard.max_inline_len,
        ),
        (
            "limits.max_query_buffer",
            limits.max_query_buffer,
            hard.max_query_buffer,
        ),
    ] {
        if v > max {
            return Err(invalid(
                key,
                format!("{v} is over Redis's own limit of {max}"),
            ));
        }
    }
    let max_inflight_per_client = positive(
        "limits.max_inflight_per_client",
        raw.limits.max_inflight_per_client,
    )?;
    let max_reply_bytes = positive("limits.max_reply_bytes", raw.limits.max_reply_bytes)?;

    // Every upstream key is checked even without a URL, so a typo is never silently ignored.
    let max_inflight = positive("upstream.max_inflight", raw.upstream.max_inflight)?;
    if max_inflight > 10_000 {
        return Err(invalid(
            "upstream.max_inflight",
            format!(
                "{max_inflight} is over 10000, past which Dragonfly stops reading a connection"
            ),
        ));
    }
    let backoff_base = millis("upstream.backoff_base_ms", raw.upstream.backoff_base_ms)?;
    let backoff_max = millis("upstream.backoff_max_ms", raw.upstream.backoff_max_ms)?;
    if backoff_max < backoff_base {
        return Err(invalid(
            "upstream.backoff_max_ms",
            "must be at least upstream.backoff_base_ms".into(),
        ));
    }
    let connections = positive("upstream.connections", raw.upstream.connections)?;
    let command_timeout = millis(
        "upstream.command_timeout_ms",
        raw.upstream.command_timeout_ms,
    )?;
    let connect_timeout = millis(
        "upstream.connect_timeout_ms",
        raw.upstream.connect_timeout_ms,
    )?;
    // Checked even without an upstream, like the upstream keys.
    let health = HealthConfig {
        probe_interval: millis("health.probe_interval_ms", raw.health.probe_interval_ms)?,
        probe_timeout: millis("health.probe_timeout_ms", raw.health.probe_timeout_ms)?,
        recover_after: match raw.health.recover_after {
            n @ 1..=1000 => n as u32,
            n => {
                return Err(invalid(
                    "health.recover_after",
                    format!("must be from 1 to 1000, got {n}"),
                ));
            }
        },
    };
    if health.probe_timeout <= health.probe_interval {
        return Err(invalid(
            "health.probe_timeout_ms",
            "must be longer than health.probe_interval_ms (a probe is sent every interval; \
             the upstream is down when none is answered within the timeout)"
                .into(),
        ));
    }
    let local_only = LocalOnlyConfig {
        enabled: raw.local_only.enabled,
        writes: match raw.local_only.writes.as_str() {
            "apply" => LocalWrites::Apply,
            "refuse" => LocalWrites::Refuse,
            other => {
                return Err(invalid(
                    "local_only.writes",
                    format!("`{other}` is not `apply` or `refuse`"),
                ));
            }
        },
        on_recovery: match raw.local_only.on_recovery.as_str() {
            "drop" => OnRecovery::Drop,
            "merge" => OnRecovery::Merge,
            other => {
                return Err(invalid(
                    "local_only.on_recovery",
                    format!(
                        "`{other}` is not `drop` or `merge` (local writes are never replayed \
                         over the upstream's data; see README, Local-only mode)"
                    ),
                ));
            }
        },
        stale_reads: match raw.local_only.stale_reads_ms {
            ms if ms < 0 => {
                return Err(invalid(
                    "local_only.stale_reads_ms",
                    "must be 0 (never) or more".into(),
                ));
            }
            ms => Duration::from_millis(ms as u64),
        },
    };
    let url = raw.upstream.url.trim();
    let upstream = if url.is_empty() || url == "none" {
        None
    } else {
        Some(UpstreamConfig {
            url: parse_url(url).map_err(|m| invalid("upstream.url", m))?,
            connections,
            max_inflight,
            command_timeout,
            connect_timeout,
            backoff_base,
            backoff_max,
            health,
        })
    };

    let tenants = if raw.tenant.is_empty() && raw.default_tenant.is_none() {
        None
    } else {
        Some(Arc::new(crate::policy::config::validate(
            raw.default_tenant.as_deref(),
            &raw.tenant,
            where_is,
        )?))
    };
    let admin = match raw.admin.listen.as_str() {
        "" | "none" => None,
        v => addr("admin.listen", v)?,
    };
    let level = raw.log.level.to_ascii_lowercase();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "log.level",
            format!("`{level}` is not a level (error, warn, info, debug, trace) or filter"),
        ));
    }
    if raw.runtime.worker_threads < 0 {
        return Err(invalid(
            "runtime.worker_threads",
            "must be 0 (one per core) or more".into(),
        ));
    }
    let near_cache = crate::cache::config::validate(
        &raw.near_cache,
        upstream.is_some(),
        &|name| {
            tenants
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t.name == name))
        },
        &invalid,
    )?;
    Ok(Config {
        near_cache,
        listen,
        limits,
        max_inflight_per_client,
        max_reply_bytes,
        upstream,
        admin,
        log_level: level,
        worker_threads: raw.runtime.worker_threads as usize,
        shutdown_grace: millis("runtime.shutdown_grace_ms", raw.runtime.shutdown_grace_ms)?,
        tenants,
        local_max_memory: if raw.local.max_memory_bytes < 0 {
            return Err(invalid(
                "local.max_memory_bytes",
                "must be 0 (no bound) or more".into(),
            ));
        } else {
            raw.local.max_memory_bytes as usize
        },
        local_eviction: crate::engine::Eviction::parse(&raw.local.maxmemory_policy).ok_or_else(
            || {
                invalid(
                    "local.maxmemory_policy",
                    format!(
                        "`{}` is not one of noeviction, allkeys-lru, allkeys-lfu, allkeys-random, \
                         volatile-lru, volatile-lfu, volatile-random, volatile-ttl",
                        raw.local.maxmemory_policy
                    ),
                )
            },
        )?,
        local_only,
    })
}

/// Parse an upstream URL. Errors are phrased for the user.
pub fn parse_url(url: &str) -> Result<UpstreamUrl, String> {
    if let Some(rest) = url.strip_prefix("unix://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err(format!(
                "`{url}`: a unix URL needs an absolute path: unix:///path/to/socket"
            ));
        }
        let mut db = 0;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("db", v)) => {
                    db = v
                        .parse()
                        .map_err(|_| format!("`{url}`: db `{v}` is not a number"))?
                }
                _ => {
                    return Err(format!(
                        "`{url}`: unknown query parameter `{pair}` (only db=N)"
                    ));
                }
            }
        }
        return Ok(UpstreamUrl {
            addr: UpstreamAddr::Unix(PathBuf::from(path)),
            username: None,
            password: None,
            db,
        });
    }
    let rest = if let Some(r) = url.strip_prefix("redis://") {
        r
    } else if url.starts_with("rediss://") {
        return Err(format!("`{url}`: TLS (rediss://) is not supported yet"));
    } else {
        return Err(format!(
            "`{url}` is not a redis://host:port[/db] or unix:///path URL"
        ));
    };
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, d)) => (
            h,
            d.parse()
                .map_err(|_| format!("`{url}`: database `{d}` is not a number"))?,
        ),
        None => (hostpart, 0),
    };
    if hostport.is_empty() {
        return Err(format!("`{url}`: missing host"));
    }
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
        let port = hostport.rsplit(':').next().unwrap_or_default();
        port.parse::<u16>()
            .map_err(|_| format!("`{url}`: port `{port}` is not a number from 1 to 65535"))?;
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (None, Some(a.to_string())),
        },
    };
    Ok(UpstreamUrl {
        addr: UpstreamAddr::Tcp(hostport),
        username,
        password,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_str_with(s, "proxy.toml", &vec![], &vec![])
    }

    #[test]
    fn urls() {
        let u = parse_url("redis://u:p@10.0.0.1:7000/3").unwrap();
        assert_eq!(u.addr, UpstreamAddr::Tcp("10.0.0.1:7000".into()));
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref(), u.db),
            (Some("u"), Some("p"), 3)
        );
        let u = parse_url("redis://:secret@localhost").unwrap();
        assert_eq!(u.addr, UpstreamAddr::Tcp("localhost:6379".into()));
        assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
        let u = parse_url("unix:///tmp/r.sock?db=2").unwrap();
        assert_eq!(
            (u.addr, u.db),
            (UpstreamAddr::Unix("/tmp/r.sock".into()), 2)
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://h:99999").unwrap_err().contains("port"));
        assert!(parse_url("redis://h:1/x").unwrap_err().contains("database"));
    }

    #[test]
    fn near_cache_errors_name_the_key_and_line() {
        let base = "[upstream]\nurl = \"redis://a:1\"\n[near_cache]\nenabled = true\n";
        let c = parse(&format!(
            "{base}[[near_cache.rule]]\npattern = \"user:*\"\n"
        ))
        .unwrap();
        let cache = c.near_cache.expect("enabled");
        assert_eq!(cache.rules.len(), 1);
        assert_eq!(
            cache.rules[0].reads.count_ones() as usize,
            crate::cache::ReadKind::ALL.len()
        );
        let e = parse(&format!(
            "{base}[[near_cache.rule]]\npattern = \"*\"\n[[near_cache.rule]]\npattern = \"a*\"\ncommands = [\"GET\", \"SET\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("near_cache.rule[1].commands")
                && e.contains("line 9")
                && e.contains("`SET`"),
            "{e}"
        );
        let e = parse(&format!(
            "{base}[[near_cache.rule]]\ntenant = \"nobody\"\npattern = \"*\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("near_cache.rule[0].tenant") && e.contains("line 6"),
            "{e}"
        );
        let e = parse("[near_cache]\nenabled = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("near_cache.enabled") && e.contains("upstream"),
            "{e}"
        );
        let e = parse(&format!("{base}heartbeat_ms = 5000\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("near_cache.heartbeat_timeout_ms"), "{e}");
        // Off unless enabled, and its keys are still checked.
        assert!(
            parse("[near_cache]\nmax_memory_bytes = 1000000\n")
                .unwrap()
                .near_cache
                .is_none()
        );
        assert!(parse("[near_cache]\nmax_memory_bytes = 0\n").is_err());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse("[upstream]\nurl = \"redis://a:1\"\nconections = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("conections"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn invalid_value_is_named_with_its_line() {
        let e = parse("[limits]\n\nmax_args = 0\n").unwrap_err().to_string();
        assert!(
            e.contains("`limits.max_args`") && e.contains("line 3"),
            "{e}"
        );
        let e = parse("[upstream]\nurl = \"redis://a:1\"\nmax_inflight = 20000\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream.max_inflight") && e.contains("Dragonfly"),
            "{e}"
        );
    }

    #[test]
    fn overrides_take_precedence_and_are_named() {
        let env = env_overrides(vec![
            ("REDIS_URL".to_string(), "redis://a:1".to_string()),
            ("RESPITE_UPSTREAM_CONNECTIONS".to_string(), "7".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        let flags = vec![("listen.tcp".to_string(), "127.0.0.1:1".to_string())];
        let c = from_str_with("[upstream]\nconnections = 3\n", "f", &env, &flags).unwrap();
        let up = c.upstream.unwrap();
        assert_eq!(up.connections, 7);
        assert_eq!(up.url.addr, UpstreamAddr::Tcp("a:1".into()));
        assert_eq!(c.listen.tcp, Some("127.0.0.1:1".parse().unwrap()));
        let bad = vec![("upstream.connections".to_string(), "-1".to_string())];
        let e = from_str_with("", "f", &bad, &vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("environment") && e.contains("upstream.connections"),
            "{e}"
        );
    }

    #[test]
    fn health_and_local_only() {
        let c = parse("[upstream]\nurl = \"redis://a:1\"\n").unwrap();
        let h = c.upstream.unwrap().health;
        assert_eq!(
            (h.probe_interval, h.probe_timeout, h.recover_after),
            (Duration::from_millis(250), Duration::from_millis(1000), 2)
        );
        assert_eq!(
            c.local_only,
            LocalOnlyConfig {
                enabled: true,
                writes: LocalWrites::Apply,
                on_recovery: OnRecovery::Drop,
                stale_reads: Duration::ZERO,
            }
        );
        let c = parse("[local_only]\nwrites = \"refuse\"\nenabled = false\n").unwrap();
        assert_eq!(
            (c.local_only.writes, c.local_only.enabled),
            (LocalWrites::Refuse, false)
        );
        let e = parse("[local_only]\n\nwrites = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`local_only.writes`") && e.contains("line 3"),
            "{e}"
        );
        assert_eq!(
            parse("[local_only]\non_recovery = \"merge\"\n")
                .unwrap()
                .local_only
                .on_recovery,
            OnRecovery::Merge
        );
        let e = parse("[local_only]\non_recovery = \"keep\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`local_only.on_recovery`") && e.contains("drop"),
            "{e}"
        );
        let e = parse("[health]\nprobe_interval_ms = 500\nprobe_timeout_ms = 500\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`health.probe_timeout_ms`") && e.contains("line 3"),
            "{e}"
        );
        let e = parse("[health]\nrecover_after = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`health.recover_after`"), "{e}");
        let e = parse("[health]\nprobe_every = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("probe_every") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn env_overrides_pick_the_longest_section() {
        let env = env_overrides(vec![
            (
                "RESPITE_LOCAL_ONLY_WRITES".to_string(),
                "refuse".to_string(),
            ),
            (
                "RESPITE_LOCAL_MAX_MEMORY_BYTES".to_string(),
                "5".to_string(),
            ),
            ("RESPITE_HEALTH_RECOVER_AFTER".to_string(), "3".to_string()),
            (
                "RESPITE_NEAR_CACHE_MAX_ENTRY_BYTES".to_string(),
                "7".to_string(),
            ),
        ]);
        assert_eq!(
            env,
            vec![
                ("local_only.writes".to_string(), "refuse".to_string()),
                ("local.max_memory_bytes".to_string(), "5".to_string()),
                ("health.recover_after".to_string(), "3".to_string()),
                ("near_cache.max_entry_bytes".to_string(), "7".to_string()),
            ]
        );
        let c = from_str_with("", "f", &env, &vec![]).unwrap();
        assert_eq!(c.local_only.writes, LocalWrites::Refuse);
        assert_eq!(c.local_max_memory, 5);
        assert_eq!(c.local_eviction, crate::engine::Eviction::AllKeysLru);
    }

    #[test]
    fn local_maxmemory_policy_is_a_redis_policy_name() {
        let c = parse("[local]\nmaxmemory_policy = \"volatile-lfu\"\n").unwrap();
        assert_eq!(c.local_eviction, crate::engine::Eviction::VolatileLfu);
        let e = parse("[local]\nmaxmemory_policy = \"lru\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("local.maxmemory_policy"), "{e}");
    }

    #[test]
    fn no_upstream_means_standalone() {
        assert!(parse("").unwrap().upstream.is_none());
        assert!(
            parse("[upstream]\nurl = \"none\"\n")
                .unwrap()
                .upstream
                .is_none()
        );
    }
}

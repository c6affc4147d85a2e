//! Configuration: proxy.toml, then `RESPITE_*` environment overrides, then command-line flags,
//! parsed into raw serde structs and validated into a typed [`Config`].
//!
//! A leaf: each section's raw struct and its validation live in one file here ([`listen`],
//! [`limits`], [`upstream`], [`local_only`], [`near_cache`], [`tenants`] with its compiled
//! [`allow`] rules, [`runtime`]), and the parts they configure import their typed section from here,
//! never the reverse. The only crate modules it reads are leaves: [`crate::command`] (to check
//! command names in allow lists) and [`crate::protocol`] (whose framing [`Limits`] it fills).
//! `sources` layers the file, the environment and the flags.
//!
//! Every error names the key (`upstream.url`) and where its value came from: the file and line,
//! the environment variable, or the flag. Secrets (passwords in the upstream URL and the tenants)
//! never appear in a `Debug` or an error. Nothing here opens sockets or files other than the
//! config file itself.
pub mod allow;
pub mod limits;
pub mod listen;
pub mod local_only;
pub mod near_cache;
pub mod runtime;
mod sources;
pub mod tenants;
pub mod upstream;

pub use allow::AllowSet;
pub use limits::SessionLimits;
pub use listen::{ListenConfig, Principal, ServerTls};
pub use local_only::{Eviction, LocalOnlyConfig, LocalWrites, OnRecovery};
pub use near_cache::{CacheConfig, ReadKind, Rule};
pub use runtime::{LogFormat, UnknownFormat};
pub use sources::{Overrides, Setting, env_overrides, env_settings};
pub use tenants::{ExcessTtl, Secret, TenantConfig, TenantSecret, TenantsConfig, TtlRuleConfig};
pub use upstream::{
    HealthConfig, UpstreamAddr, UpstreamConfig, UpstreamTls, UpstreamUrl, parse_url,
};

use crate::protocol::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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
    /// A `RESPITE_*` variable that names no setting: a typo would otherwise be silently ignored.
    #[error(
        "environment variable {name} is not a respite setting (RESPITE_<SECTION>_<KEY>, \
         sections: {sections}; or RESPITE_CONFIG)"
    )]
    UnknownVariable { name: String, sections: String },
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
    /// Most bytes of Pub/Sub messages one subscriber may leave unread before it is closed.
    pub pubsub_output_bytes: usize,
    /// Limits across all clients, and in time.
    pub sessions: SessionLimits,
    pub upstream: Option<UpstreamConfig>,
    pub admin: Option<SocketAddr>,
    /// `admin.reload_token_file`: with it, `POST /reload` needs the token the file holds;
    /// without it, `POST /reload` is served only on a loopback `admin.listen`.
    pub admin_reload_token_file: Option<std::path::PathBuf>,
    /// `admin.command_histograms`: a latency histogram per command (true) or one for all
    /// commands, `command="all"` (false); see `metrics::command_duration`.
    pub command_histograms: bool,
    pub log_level: String,
    /// `log.format`: text or json.
    pub log_format: LogFormat,
    /// Tokio worker threads; 0 means one per core. One by default: a sidecar shares its cores with
    /// the app (and here with the upstream), and one thread avoids cross-thread wake-ups.
    pub worker_threads: usize,
    /// How long SIGTERM waits for clients to finish their in-flight commands.
    pub shutdown_grace: Duration,
    /// Tenants (`[[tenant]]`): when there are any, every client acts as one of them. The policy
    /// builds its runtime tenants from this (`policy::Tenants::from_config`).
    pub tenants: Option<TenantsConfig>,
    /// Memory bound of the local engine (standalone and local-only mode), in bytes; 0 for none.
    pub local_max_memory: usize,
    /// How the local engine makes room under its bound (`local.maxmemory_policy`).
    pub local_eviction: Eviction,
    /// What happens while the upstream is down (`[local_only]`).
    pub local_only: LocalOnlyConfig,
    /// The near cache (`[near_cache]`), when enabled.
    pub near_cache: Option<CacheConfig>,
}

/// proxy.toml as written: one field per section, each validated by its own module.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    /// The tenant clients get before (or without) AUTH; see `[[tenant]]`.
    default_tenant: Option<String>,
    tenant: Vec<tenants::RawTenant>,
    listen: listen::RawListen,
    limits: limits::RawLimits,
    upstream: upstream::RawUpstream,
    admin: listen::RawAdmin,
    log: runtime::RawLog,
    runtime: runtime::RawRuntime,
    local: local_only::RawLocal,
    health: upstream::RawHealth,
    local_only: local_only::RawLocalOnly,
    near_cache: near_cache::RawNearCache,
}

/// What every section's validation needs: a way to build an error that names the key and where
/// it was set, and the checks most keys share.
pub(crate) struct Check<'a> {
    where_is: &'a dyn Fn(&str) -> String,
}

impl Check<'_> {
    pub(crate) fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: (self.where_is)(key),
            key: key.to_string(),
            message,
        }
    }

    pub(crate) fn positive(&self, key: &str, v: i64) -> Result<usize, ConfigError> {
        if v <= 0 {
            Err(self.invalid(key, format!("must be a positive integer, got {v}")))
        } else {
            Ok(v as usize)
        }
    }

    pub(crate) fn millis(&self, key: &str, v: i64) -> Result<Duration, ConfigError> {
        self.positive(key, v)
            .map(|v| Duration::from_millis(v as u64))
    }

    /// An `ip:port`, or `None` when empty.
    pub(crate) fn addr(&self, key: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| self.invalid(key, format!("`{v}` is not an address of the form ip:port")))
    }
}

/// Load and validate: the file (if any), then `env`, then `flags` (each [`Setting`] names its
/// own source for errors).
pub fn load(
    path: Option<&std::path::Path>,
    env: &[Setting],
    flags: &[Setting],
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
    let settings: Vec<Setting> = env.iter().chain(flags).cloned().collect();
    from_source(&source, &origin, &settings)
}

/// Parse and validate a configuration text (tests use this directly); overrides are blamed on
/// "environment" and "command line".
pub fn from_str_with(
    source: &str,
    origin: &str,
    env: &Overrides,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let label = |pairs: &Overrides, origin: &str| -> Vec<Setting> {
        pairs
            .iter()
            .map(|(key, value)| Setting::new(key, value, origin))
            .collect()
    };
    let mut settings = label(env, "environment");
    settings.extend(label(flags, "command line"));
    from_source(source, origin, &settings)
}

/// Parse `source` (named `origin`), apply `settings` in order, validate.
pub fn from_source(
    source: &str,
    origin: &str,
    settings: &[Setting],
) -> Result<Config, ConfigError> {
    let (table, settings) = merge(source, origin, settings)?;
    let message = |e: &toml::de::Error| e.message().trim().replace('\n', " ");
    // Report where a bad value came from: a setting names its source, a file key its line.
    let where_is = |key: &str| -> String {
        if let Some(s) = settings.iter().find(|s| s.key == key) {
            return s.origin.clone();
        }
        let line = if key.starts_with("tenant[") || key == "default_tenant" {
            tenants::tenant_key_line(source, key)
        } else if key.starts_with("near_cache.rule[") {
            near_cache::rule_key_line(source, key)
        } else {
            sources::line_of(source, key)
        }
        // The light scans read tables written as `[section]` headers; toml's spans find the
        // rest (dotted keys, inline tables).
        .or_else(|| sources::key_line(source, key));
        match line {
            Some(line) => format!("{origin} line {line}"),
            None => origin.to_string(),
        }
    };
    let raw =
        RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: message(&e),
        })?;
    validate(
        raw,
        &Check {
            where_is: &where_is,
        },
    )
}

/// The client listener `url` names, if it names one of respite's own: an IP literal or
/// `localhost` on a listener's port (an unspecified listener address takes every local address),
/// or the unix socket's path. Host names are not resolved here (no I/O in configuration).
fn own_listener(url: &UpstreamUrl, listen: &ListenConfig) -> Option<(&'static str, String)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match &url.addr {
        UpstreamAddr::Unix(path) => (listen.unix.as_ref() == Some(path))
            .then(|| ("listen.unix", path.display().to_string())),
        UpstreamAddr::Tcp(hostport) => {
            let port: u16 = hostport.rsplit_once(':')?.1.parse().ok()?;
            let host = url.host();
            let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
                vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
            } else {
                vec![host.parse().ok()?]
            };
            [("listen.tcp", listen.tcp), ("listen.tls", listen.tls)]
                .into_iter()
                .filter_map(|(key, a)| Some((key, a?)))
                .find(|(_, a)| {
                    a.port() == port
                        && ips.iter().any(|ip| {
                            *ip == a.ip()
                                || (a.ip().is_unspecified()
                                    && (ip.is_loopback() || ip.is_unspecified()))
                                || (ip.is_unspecified() && a.ip().is_loopback())
                        })
                })
                .map(|(key, a)| (key, a.to_string()))
        }
    }
}

/// The file's table with `settings` applied in order (only the last setting of a key counts),
/// each step checked so that an error is blamed on the file's line or on the setting.
fn merge<'s>(
    source: &str,
    origin: &str,
    settings: &'s [Setting],
) -> Result<(toml::Table, Vec<&'s Setting>), ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(r) => format!("{origin} line {}", sources::line_at(source, r.start)),
        None => origin.to_string(),
    };
    let message = |e: &toml::de::Error| e.message().trim().replace('\n', " ");
    let mut table: toml::Table =
        source
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: at(e.span()),
                message: message(&e),
            })?;
    // The file on its own first, so that its mistakes are blamed on their line (toml's spans)
    // and an override's on the override.
    if let Err(e) = toml::from_str::<RawConfig>(source) {
        return Err(ConfigError::Parse {
            origin: at(e.span()),
            message: message(&e),
        });
    }
    // A later setting of a key replaces an earlier one (a flag beats the environment), so only
    // the last of each counts, and then each key's own value decides whether it parses.
    let settings: Vec<&Setting> = settings
        .iter()
        .enumerate()
        .filter(|(i, s)| !settings[i + 1..].iter().any(|later| later.key == s.key))
        .map(|(_, s)| s)
        .collect();
    for s in &settings {
        sources::apply_override(&mut table, &s.key, &s.value, &s.origin)?;
        if let Err(e) = RawConfig::deserialize(toml::Value::Table(table.clone())) {
            // An unknown key is its own message; a value of the wrong type is the key's.
            return Err(if e.message().starts_with("unknown field") {
                ConfigError::Parse {
                    origin: s.origin.clone(),
                    message: message(&e),
                }
            } else {
                ConfigError::Invalid {
                    origin: s.origin.clone(),
                    key: s.key.clone(),
                    message: message(&e),
                }
            });
        }
    }
    Ok((table, settings))
}

/// The effective configuration as TOML: every key with the value respite runs with (defaults
/// filled in, the environment and flags applied), passwords shown as `<redacted>`. What
/// `--check-config` prints; valid input is assumed (call [`load`] first).
pub fn effective_toml(
    path: Option<&std::path::Path>,
    env: &[Setting],
    flags: &[Setting],
) -> Result<String, ConfigError> {
    let source = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.display().to_string(),
            source,
        })?,
        None => String::new(),
    };
    let origin = path.map_or("defaults".into(), |p| p.display().to_string());
    let settings: Vec<Setting> = env.iter().chain(flags).cloned().collect();
    let (table, _) = merge(&source, &origin, &settings)?;
    let raw =
        RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.message().trim().replace('\n', " "),
        })?;
    toml::to_string(&raw).map_err(|e| ConfigError::Parse {
        origin,
        message: e.to_string(),
    })
}

/// Validate section by section, in the order errors have always been reported.
fn validate(raw: RawConfig, c: &Check) -> Result<Config, ConfigError> {
    let listen = raw.listen.validate(c)?;
    let (limits, max_inflight_per_client, max_reply_bytes, pubsub_output_bytes) =
        raw.limits.validate(c)?;
    let sessions = raw.limits.sessions(c)?;
    let upstream = upstream::validate(&raw.upstream, &raw.health, c)?;
    if let Some(u) = &upstream
        && let Some((key, addr)) = own_listener(&u.url, &listen)
    {
        return Err(c.invalid(
            "upstream.url",
            format!(
                "`{}` is respite's own listener ({key} = {addr}): every command would come back \
                 to respite and never reach a server",
                upstream::redacted(raw.upstream.url.trim())
            ),
        ));
    }
    // A cluster's probe speaks for the whole cluster (any node answering keeps it up), so
    // local-only mode takes over only when no node answers; one node down fails only its slots.
    let local_only = raw.local_only.validate(c)?;
    let tenants = if raw.tenant.is_empty() && raw.default_tenant.is_none() {
        None
    } else {
        Some(tenants::validate(
            raw.default_tenant.as_deref(),
            &raw.tenant,
            c,
        )?)
    };
    for (i, t) in tenants.iter().flat_map(|t| t.tenants.iter()).enumerate() {
        let Some(db) = t.db else { continue };
        let key = format!("tenant[{i}].db");
        match &upstream {
            None => {
                return Err(c.invalid(
                    &key,
                    "needs an upstream (upstream.url): standalone, respite has one keyspace".into(),
                ));
            }
            Some(u) if u.url.is_cluster() => {
                return Err(c.invalid(
                    &key,
                    "a cluster upstream has database 0 only (Redis Cluster): a tenant's keys stay under its prefix there".into(),
                ));
            }
            Some(u) if u.url.db == db => {
                return Err(c.invalid(
                    &key,
                    format!(
                        "database {db} is upstream.url's, which the tenants without a db share"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let admin = raw.admin.validate(c)?;
    let admin_reload_token_file = raw.admin.reload_token_file(c)?;
    let log_level = raw.log.validate(c)?;
    let log_format = raw.log.format(c)?;
    let worker_threads = raw.runtime.worker_threads(c)?;
    let near_cache = raw.near_cache.validate(
        upstream.is_some(),
        &|name| {
            tenants
                .as_ref()
                .is_some_and(|t| t.tenants.iter().any(|t| t.name == name))
        },
        c,
    )?;
    Ok(Config {
        near_cache,
        listen,
        limits,
        max_inflight_per_client,
        max_reply_bytes,
        pubsub_output_bytes,
        sessions,
        upstream,
        admin,
        admin_reload_token_file,
        command_histograms: raw.admin.command_histograms,
        log_level,
        log_format,
        worker_threads,
        shutdown_grace: c.millis("runtime.shutdown_grace_ms", raw.runtime.shutdown_grace_ms)?,
        tenants,
        local_max_memory: raw.local.validate(c)?,
        local_eviction: raw.local.eviction(c)?,
        local_only,
    })
}

#[cfg(test)]
mod tests;

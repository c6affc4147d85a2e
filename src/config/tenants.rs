//! The `[[tenant]]` section and `default_tenant`: raw serde structs and their validation into
//! [`TenantsConfig`], from which the policy builds its runtime tenants.
//!
//! Unknown fields are errors, and every error names its key (`tenant[1].prefix`) and where it was
//! set. Passwords are kept as [`Secret`]s, whose `Debug` never shows them; hashing them is the
//! policy's business.
use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::allow::AllowSet;
use super::sources::line_of_field;
use super::{Check, ConfigError};

/// A value that must never be printed: `Debug` shows `"<redacted>"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Serialized (`--check-config`'s TOML) as `"<redacted>"`, as `Debug` shows it.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A secret that is a plain `Option<String>` in the raw file (the password's SHA-256).
fn redact<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Every validated tenant, and which one (by index) a client gets before AUTH.
#[derive(Debug, Clone)]
pub struct TenantsConfig {
    pub tenants: Vec<TenantConfig>,
    pub default: Option<usize>,
}

/// One validated `[[tenant]]`.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    /// Username and password; `None` for a tenant reached only as the default tenant.
    pub credentials: Option<(String, TenantSecret)>,
    pub prefix: Bytes,
    pub allowed: AllowSet,
    pub scripts: bool,
    pub sort_patterns: bool,
    pub max_value_bytes: Option<usize>,
    pub ttl: Vec<TtlRuleConfig>,
    /// The upstream database that holds this tenant's keys (`tenant.db`), when it has one of its
    /// own; `None`: the upstream URL's database, shared with the other tenants.
    pub db: Option<u32>,
    /// Its `notify-keyspace-events` at start (Redis's flags; see `policy::keyspace`).
    pub notify_keyspace_events: u32,
    /// Server parameters (glob patterns, lowercase) this tenant may CONFIG GET and SET upstream
    /// (`tenant.server_config`; see `policy::info::server_param`).
    pub server_config: Vec<String>,
}

/// How a tenant's password is given. `Debug` shows neither the password nor its hash.
#[derive(Clone, PartialEq, Eq)]
pub enum TenantSecret {
    Password(Secret),
    /// The SHA-256 of the password (`password_sha256`).
    Sha256([u8; 32]),
}

impl std::fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantSecret::Password(s) => f.debug_tuple("Password").field(s).finish(),
            TenantSecret::Sha256(_) => f.write_str("Sha256(\"<redacted>\")"),
        }
    }
}

/// One validated `[[tenant.ttl]]` rule; `default_ms` is already `max_ms` when only that is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlRuleConfig {
    pub pattern: Bytes,
    pub max_ms: Option<i64>,
    pub default_ms: Option<i64>,
    pub on_excess: ExcessTtl,
}

/// `on_excess`: what a TTL over the rule's maximum gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExcessTtl {
    Cap,
    Refuse,
}

/// The tenant part of proxy.toml, for callers (and tests) that parse it on its own.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTenants {
    pub default_tenant: Option<String>,
    pub tenant: Vec<RawTenant>,
}

/// One `[[tenant]]` entry as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTenant {
    pub name: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// 64 hex digits: the SHA-256 of the password, so the file need not hold it in clear.
    #[serde(serialize_with = "redact")]
    pub password_sha256: Option<String>,
    pub prefix: String,
    /// ACL-style rules applied in order: `@category`, `+@category`, `-@category`, `command`,
    /// `-command`, `parent|sub`, `@all`/`allcommands`. Nothing is allowed until a rule allows it.
    pub allow: Vec<String>,
    pub scripts: bool,
    pub sort_patterns: bool,
    pub max_value_bytes: Option<i64>,
    pub ttl: Vec<RawTtlRule>,
    /// A database of the upstream's own for this tenant's keys (see [`TenantConfig::db`]).
    pub db: Option<i64>,
    /// Which keyspace notifications of its keys reach the tenant until it CONFIG SETs them:
    /// Redis's class letters (`KEA`, `Ex`, …); empty, as Redis's default, when not given.
    pub notify_keyspace_events: Option<String>,
    /// Server parameters, as glob patterns, the tenant may read and set upstream with CONFIG
    /// GET/SET: server-wide settings (every tenant's keys live under them), so for trusted
    /// tenants only; a few (files, passwords, addresses, replication) never (docs/tenants.md).
    pub server_config: Vec<String>,
}

/// One `[[tenant.ttl]]` rule as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTtlRule {
    /// A Redis glob over the client's key name (without the tenant prefix).
    pub pattern: String,
    pub max_ms: Option<i64>,
    pub default_ms: Option<i64>,
    /// `cap` (the default) or `refuse`.
    pub on_excess: Option<String>,
}

/// Parse a TOML text holding only `default_tenant` and `[[tenant]]` entries (tests, tools).
pub fn from_toml(source: &str, origin: &str) -> Result<TenantsConfig, ConfigError> {
    let raw: RawTenants = toml::from_str(source).map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let where_is = |key: &str| match tenant_key_line(source, key) {
        Some(line) => format!("{origin} line {line}"),
        None => origin.to_string(),
    };
    validate(
        raw.default_tenant.as_deref(),
        &raw.tenant,
        &Check {
            where_is: &where_is,
        },
    )
}

/// Validate the tenant section (see [`tenant_key_line`] for how an error finds its line).
pub(crate) fn validate(
    default_tenant: Option<&str>,
    raw: &[RawTenant],
    c: &Check,
) -> Result<TenantsConfig, ConfigError> {
    let invalid = |key: String, message: String| c.invalid(&key, message);
    let mut tenants = Vec::with_capacity(raw.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut usernames: HashMap<&str, usize> = HashMap::new();
    for (i, t) in raw.iter().enumerate() {
        let key = |field: &str| format!("tenant[{i}].{field}");
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            // Names become metric labels and appear in error texts: keep them plain.
            return Err(invalid(
                key("name"),
                format!(
                    "`{}` must be 1 to 64 of A-Z a-z 0-9 _ - .",
                    t.name.escape_debug()
                ),
            ));
        }
        if let Some(j) = names.insert(&t.name, i) {
            return Err(invalid(
                key("name"),
                format!("`{}` is also the name of tenant[{j}]", t.name),
            ));
        }
        let credentials = match (&t.username, &t.password, &t.password_sha256) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(invalid(
                    key("username"),
                    format!("tenant `{}` has a password but no username", t.name),
                ));
            }
            (Some(u), pw, sha) => {
                if u.is_empty()
                    || u.bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    return Err(invalid(
                        key("username"),
                        format!("`{}` must be non-empty, without spaces", u.escape_debug()),
                    ));
                }
                if let Some(j) = usernames.insert(u, i) {
                    return Err(invalid(
                        key("username"),
                        format!("`{u}` is also the username of tenant[{j}]"),
                    ));
                }
                let secret = match (pw, sha) {
                    (Some(pw), None) => TenantSecret::Password(pw.clone()),
                    (None, Some(hex)) => TenantSecret::Sha256(from_hex(hex).ok_or_else(|| {
                        invalid(
                            key("password_sha256"),
                            "must be 64 hex digits (the SHA-256 of the password)".into(),
                        )
                    })?),
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            key("password"),
                            "set password or password_sha256, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            key("password"),
                            format!("user `{u}` needs password or password_sha256"),
                        ));
                    }
                };
                Some((u.clone(), secret))
            }
        };
        if t.prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(invalid(
                key("prefix"),
                "must not contain control characters".into(),
            ));
        }
        if t.sort_patterns && (t.prefix.contains('*') || t.prefix.contains("->")) {
            // SORT patterns substitute at the first `*` and read a hash field after `->`: a
            // prefix holding either would change what the prefixed pattern means.
            return Err(invalid(
                key("sort_patterns"),
                format!(
                    "cannot be used with prefix `{}`, which contains `*` or `->`",
                    t.prefix
                ),
            ));
        }
        let allowed = AllowSet::parse(&t.allow)
            .map_err(|(n, msg)| invalid(format!("tenant[{i}].allow[{n}]"), msg))?;
        let max_value_bytes = match t.max_value_bytes {
            None => None,
            Some(v) if v > 0 => Some(v as usize),
            Some(v) => {
                return Err(invalid(
                    key("max_value_bytes"),
                    format!("must be a positive integer, got {v}"),
                ));
            }
        };
        let mut ttl = Vec::with_capacity(t.ttl.len());
        for (r, rule) in t.ttl.iter().enumerate() {
            let key = |field: &str| format!("tenant[{i}].ttl[{r}].{field}");
            if rule.pattern.is_empty() {
                return Err(invalid(
                    key("pattern"),
                    "must not be empty (use \"*\")".into(),
                ));
            }
            let positive = |field: &str, v: Option<i64>| match v {
                Some(v) if v <= 0 => Err(invalid(
                    key(field),
                    format!("must be a positive number of milliseconds, got {v}"),
                )),
                v => Ok(v),
            };
            let max_ms = positive("max_ms", rule.max_ms)?;
            let default_ms = positive("default_ms", rule.default_ms)?;
            let default_ms = match (max_ms, default_ms) {
                (None, None) => {
                    return Err(invalid(
                        key("max_ms"),
                        "a TTL rule needs max_ms, default_ms or both".into(),
                    ));
                }
                (Some(max), Some(d)) if d > max => {
                    return Err(invalid(
                        key("default_ms"),
                        format!("{d} is over max_ms ({max})"),
                    ));
                }
                // Without a default, keys written without a TTL would outlive the cap.
                (Some(max), None) => Some(max),
                (_, d) => d,
            };
            let on_excess = match rule.on_excess.as_deref() {
                None | Some("cap") => ExcessTtl::Cap,
                Some("refuse") => ExcessTtl::Refuse,
                Some(other) => {
                    return Err(invalid(
                        key("on_excess"),
                        format!("`{other}` is not `cap` or `refuse`"),
                    ));
                }
            };
            ttl.push(TtlRuleConfig {
                pattern: Bytes::copy_from_slice(rule.pattern.as_bytes()),
                max_ms,
                default_ms,
                on_excess,
            });
        }
        let db = match t.db {
            None => None,
            // A database of its own makes FLUSHDB, DBSIZE, RANDOMKEY, SCAN and KEYS the
            // upstream's own, in O(the tenant's keys); the prefix still confines what databases
            // do not separate (channels, scripts' key names) and keeps a key's name unique
            // across tenants in the near cache and the local engine.
            Some(_) if t.prefix.is_empty() => {
                return Err(invalid(
                    key("db"),
                    "needs a prefix: channels, scripts and the local engine are not separated by databases".into(),
                ));
            }
            Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Some(v as u32),
            Some(v) => {
                return Err(invalid(
                    key("db"),
                    format!("must be a database index from 0, got {v}"),
                ));
            }
        };
        if let Some(db) = db
            && let Some(j) = tenants.iter().position(|o: &TenantConfig| o.db == Some(db))
        {
            return Err(invalid(
                key("db"),
                format!("database {db} is also tenant[{j}]'s: a tenant's database is its own"),
            ));
        }
        let notify_keyspace_events = match &t.notify_keyspace_events {
            None => 0,
            Some(s) => crate::policy::keyspace::parse(s.as_bytes())
                .map_err(|e| invalid(key("notify_keyspace_events"), e.into()))?,
        };
        tenants.push(TenantConfig {
            name: t.name.clone(),
            db,
            notify_keyspace_events,
            server_config: t
                .server_config
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            credentials,
            prefix: Bytes::copy_from_slice(t.prefix.as_bytes()),
            allowed,
            scripts: t.scripts,
            sort_patterns: t.sort_patterns,
            max_value_bytes,
            ttl,
        });
    }
    // A key belongs to one namespace only if no prefix starts another: with `a:` and `a:b:`, the
    // key `b:x` of the first is the key `x` of the second.
    for (i, a) in raw.iter().enumerate() {
        for (j, b) in raw.iter().enumerate() {
            if i == j {
                continue;
            }
            if a.prefix.is_empty() {
                return Err(invalid(
                    format!("tenant[{i}].prefix"),
                    format!(
                        "tenant `{}` has no prefix, which is allowed only when it is the only tenant",
                        a.name
                    ),
                ));
            }
            if b.prefix.starts_with(&a.prefix) {
                return Err(invalid(
                    format!("tenant[{j}].prefix"),
                    format!(
                        "`{}` of tenant `{}` starts with `{}`, the prefix of tenant `{}`",
                        b.prefix, b.name, a.prefix, a.name
                    ),
                ));
            }
        }
    }
    let default = match default_tenant {
        None | Some("") => None,
        Some(name) => match names.get(name) {
            Some(&i) => Some(i),
            None => {
                return Err(invalid(
                    "default_tenant".into(),
                    format!("no tenant is named `{name}`"),
                ));
            }
        },
    };
    for (i, t) in tenants.iter().enumerate() {
        if t.credentials.is_none() && default != Some(i) {
            return Err(invalid(
                format!("tenant[{i}].username"),
                format!(
                    "tenant `{}` has no username and is not the default_tenant, so no client can reach it",
                    t.name
                ),
            ));
        }
    }
    Ok(TenantsConfig { tenants, default })
}

/// The 1-based line of a key such as `tenant[1].prefix` or `tenant[1].ttl[0].max_ms` in a TOML
/// text that writes tenants as `[[tenant]]` / `[[tenant.ttl]]` tables, by a light scan of headers.
pub fn tenant_key_line(source: &str, key: &str) -> Option<usize> {
    if key == "default_tenant" {
        return line_of_field(source.lines().enumerate(), "default_tenant", |_| true);
    }
    let rest = key.strip_prefix("tenant[")?;
    let (index, rest) = rest.split_once("].")?;
    let index: usize = index.parse().ok()?;
    let (rule, field) = match rest.strip_prefix("ttl[") {
        Some(r) => {
            let (n, f) = r.split_once("].")?;
            (Some(n.parse::<usize>().ok()?), f)
        }
        None => (None, rest),
    };
    // Strip `allow[3]` to `allow`: the whole list is on one line or starts on it.
    let field = field.split('[').next()?;
    let (mut tenant, mut ttl) = (None::<usize>, None::<usize>);
    let mut section = "";
    for (n, line) in source.lines().enumerate() {
        let t = line.trim();
        if t == "[[tenant]]" {
            tenant = Some(tenant.map_or(0, |x| x + 1));
            ttl = None;
            section = "tenant";
        } else if t == "[[tenant.ttl]]" {
            ttl = Some(ttl.map_or(0, |x| x + 1));
            section = "ttl";
        } else if t.starts_with('[') {
            section = "";
        } else if tenant == Some(index)
            && ((rule.is_none() && section == "tenant") || (section == "ttl" && ttl == rule))
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == field
        {
            return Some(n + 1);
        }
    }
    None
}

/// The 32 bytes that 64 hex digits (either case) spell: a tenant password's SHA-256 digest.
pub(crate) fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

//! `[upstream]` and `[health]`: where the upstream is (its URL), how respite connects to it, and
//! how its health is judged. Every key is checked even without a URL, so a typo is never silently
//! ignored in standalone mode.
use super::{Check, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: UpstreamUrl,
    /// Multiplexed connections per protocol (RESP2 and RESP3 clients use separate pools so replies
    /// are forwarded byte for byte).
    pub connections: usize,
    /// Most commands in flight on one upstream connection (Dragonfly stops reading past 10,000).
    pub max_inflight: usize,
    /// Most pinned connections (one client's own: WATCH, blocking commands, SELECT of another
    /// database), in use and idle together; past it, a command that needs one is refused.
    pub max_pinned: usize,
    /// A command unanswered for this long fails its connection: every command in flight on it gets
    /// an error and the connection is replaced.
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub health: HealthConfig,
    /// TLS to the upstream: `Some` exactly when the URL is `rediss://`.
    pub tls: Option<UpstreamTls>,
    /// The URL's user and password as every new connection logs in with them now.
    pub credentials: Credentials,
    /// `upstream.read_from_replicas`: a cluster's read-only commands may be served by the
    /// primary's replicas (see `upstream::cluster::replicas`).
    pub read_from_replicas: bool,
    /// Every connection says `READONLY` in its setup (a cluster node's, with
    /// `read_from_replicas`: a replica then serves its reads).
    pub readonly: bool,
}

impl UpstreamConfig {
    /// The same settings for one cluster node at `addr` (host:port): every connection respite
    /// opens to a single node (its pool, a tracking connection, a Pub/Sub link) uses these.
    pub fn for_node(&self, addr: &str) -> UpstreamConfig {
        let mut config = self.clone();
        config.url.addr = UpstreamAddr::Tcp(addr.to_string());
        config.url.seeds = Vec::new();
        config.readonly = self.read_from_replicas;
        config
    }
}

/// respite's own upstream credentials (the URL's user and password), shared by every clone of
/// the configuration that started with them: a reload that changes only these stores them here
/// (`reload.rs`), and every connection opened or reset afterwards (shared, pinned, Pub/Sub,
/// MONITOR, tracking) logs in with the new ones, while those already open stay logged in.
#[derive(Clone)]
pub struct Credentials(std::sync::Arc<arc_swap::ArcSwap<(Option<String>, Option<String>)>>);

impl Credentials {
    pub fn new(username: Option<String>, password: Option<String>) -> Credentials {
        Credentials(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee((
            username, password,
        ))))
    }

    /// The user and password now.
    pub fn get(&self) -> std::sync::Arc<(Option<String>, Option<String>)> {
        self.0.load_full()
    }

    /// Replace them for every later login; true if they changed.
    pub fn set(&self, username: Option<String>, password: Option<String>) -> bool {
        let next = (username, password);
        if *self.0.load_full() == next {
            return false;
        }
        self.0.store(std::sync::Arc::new(next));
        true
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// `upstream.tls_*`: how respite verifies the upstream and proves itself to it. Paths only: the
/// files are read by `crate::tls` when a connection is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA bundle the upstream's certificate must chain to, instead of the system's trust
    /// store (`None`: the system's, see `crate::tls`).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key, when the upstream asks for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the certificate must carry and SNI sends: `upstream.tls_server_name`, else the
    /// URL's host.
    pub server_name: String,
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
    /// How long a silent upstream with a known-slow command in flight (a script, DEBUG, BITOP,
    /// KEYS…) counts as busy rather than down; also the command deadline while one is in flight.
    pub busy_grace: Duration,
}

/// Where the upstream is: `redis://[user:pass@]host:port[/db]` or `unix:///path[?db=N]`.
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub addr: UpstreamAddr,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: the connection speaks TLS.
    pub tls: bool,
    /// `redis+cluster://h1:p1,h2:p2…`: the cluster's seed nodes (`host:port`, `addr` is the
    /// first); empty for a single server (see `upstream::cluster`).
    pub seeds: Vec<String>,
}

impl std::fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamUrl")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("seeds", &self.seeds)
            .finish()
    }
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    #[serde(serialize_with = "redact_url")]
    pub(super) url: String,
    connections: i64,
    max_inflight: i64,
    max_pinned: i64,
    command_timeout_ms: i64,
    connect_timeout_ms: i64,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    tls_ca: String,
    tls_cert: String,
    tls_key: String,
    tls_server_name: String,
    read_from_replicas: bool,
}

/// The URL as `--check-config` prints it: its password as `<redacted>`.
fn redact_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &redacted(url)
            .replace(":***@", ":<redacted>@")
            .replace("://***@", "://<redacted>@"),
    )
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: String::new(),
            connections: 2,
            max_inflight: 8192,
            max_pinned: 1024,
            command_timeout_ms: 5000,
            connect_timeout_ms: 1000,
            backoff_base_ms: 50,
            backoff_max_ms: 2000,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_server_name: String::new(),
            read_from_replicas: false,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHealth {
    probe_interval_ms: i64,
    probe_timeout_ms: i64,
    recover_after: i64,
    busy_grace_ms: i64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            probe_interval_ms: 250,
            probe_timeout_ms: 1000,
            recover_after: 2,
            busy_grace_ms: 30_000,
        }
    }
}

/// Validate `[upstream]` and `[health]`; `None` when the URL is empty or `none` (standalone).
pub(super) fn validate(
    raw: &RawUpstream,
    raw_health: &RawHealth,
    c: &Check,
) -> Result<Option<UpstreamConfig>, ConfigError> {
    let max_inflight = c.positive("upstream.max_inflight", raw.max_inflight)?;
    if max_inflight > 10_000 {
        return Err(c.invalid(
            "upstream.max_inflight",
            format!(
                "{max_inflight} is over 10000, past which Dragonfly stops reading a connection"
            ),
        ));
    }
    let backoff_base = c.millis("upstream.backoff_base_ms", raw.backoff_base_ms)?;
    let backoff_max = c.millis("upstream.backoff_max_ms", raw.backoff_max_ms)?;
    if backoff_max < backoff_base {
        return Err(c.invalid(
            "upstream.backoff_max_ms",
            "must be at least upstream.backoff_base_ms".into(),
        ));
    }
    let connections = c.positive("upstream.connections", raw.connections)?;
    let max_pinned = c.positive("upstream.max_pinned", raw.max_pinned)?;
    let command_timeout = c.millis("upstream.command_timeout_ms", raw.command_timeout_ms)?;
    let connect_timeout = c.millis("upstream.connect_timeout_ms", raw.connect_timeout_ms)?;
    let health = HealthConfig {
        probe_interval: c.millis("health.probe_interval_ms", raw_health.probe_interval_ms)?,
        probe_timeout: c.millis("health.probe_timeout_ms", raw_health.probe_timeout_ms)?,
        recover_after: match raw_health.recover_after {
            n @ 1..=1000 => n as u32,
            n => {
                return Err(c.invalid(
                    "health.recover_after",
                    format!("must be from 1 to 1000, got {n}"),
                ));
            }
        },
        busy_grace: c.millis("health.busy_grace_ms", raw_health.busy_grace_ms)?,
    };
    if health.busy_grace < health.probe_timeout {
        return Err(c.invalid(
            "health.busy_grace_ms",
            "must be at least health.probe_timeout_ms (a busy upstream gets longer than a silent one)"
                .into(),
        ));
    }
    if health.probe_timeout <= health.probe_interval {
        return Err(c.invalid(
            "health.probe_timeout_ms",
            "must be longer than health.probe_interval_ms (a probe is sent every interval; \
             the upstream is down when none is answered within the timeout)"
                .into(),
        ));
    }
    let url = raw.url.trim();
    if url.is_empty() || url == "none" {
        return Ok(None);
    }
    let url = parse_url(url).map_err(|m| c.invalid("upstream.url", m))?;
    let tls = upstream_tls(raw, &url, c)?;
    let credentials = Credentials::new(url.username.clone(), url.password.clone());
    if raw.read_from_replicas && !url.is_cluster() {
        return Err(c.invalid(
            "upstream.read_from_replicas",
            "has no effect without a redis+cluster:// URL (a single server has no replicas \
             respite knows of)"
                .into(),
        ));
    }
    Ok(Some(UpstreamConfig {
        read_from_replicas: raw.read_from_replicas,
        readonly: false,
        url,
        tls,
        credentials,
        connections,
        max_inflight,
        max_pinned,
        command_timeout,
        connect_timeout,
        backoff_base,
        backoff_max,
        health,
    }))
}

/// `upstream.tls_*`, which only a `rediss://` URL may use.
fn upstream_tls(
    raw: &RawUpstream,
    url: &UpstreamUrl,
    c: &Check,
) -> Result<Option<UpstreamTls>, ConfigError> {
    let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
    if !url.tls {
        for (key, v) in [
            ("upstream.tls_ca", &raw.tls_ca),
            ("upstream.tls_cert", &raw.tls_cert),
            ("upstream.tls_key", &raw.tls_key),
            ("upstream.tls_server_name", &raw.tls_server_name),
        ] {
            if !v.is_empty() {
                return Err(c.invalid(key, "has no effect without a rediss:// URL".into()));
            }
        }
        return Ok(None);
    }
    if raw.tls_cert.is_empty() != raw.tls_key.is_empty() {
        let key = if raw.tls_cert.is_empty() {
            "upstream.tls_cert"
        } else {
            "upstream.tls_key"
        };
        return Err(c.invalid(
            key,
            "upstream.tls_cert and upstream.tls_key go together".into(),
        ));
    }
    let server_name = match raw.tls_server_name.as_str() {
        "" => url.host().to_string(),
        n => n.to_string(),
    };
    Ok(Some(UpstreamTls {
        ca: path(&raw.tls_ca),
        cert: path(&raw.tls_cert),
        key: path(&raw.tls_key),
        server_name,
    }))
}

impl UpstreamUrl {
    /// A `redis+cluster://` or `rediss+cluster://` URL.
    pub fn is_cluster(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// The host part of a TCP address (brackets of an IPv6 literal removed); empty for unix.
    pub fn host(&self) -> &str {
        match &self.addr {
            UpstreamAddr::Tcp(a) => a
                .rsplit_once(':')
                .map_or(a.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']'),
            UpstreamAddr::Unix(_) => "",
        }
    }
}

/// Parse an upstream URL with the `url` crate; user and password are percent-decoded (`%40` for
/// `@`). Errors are phrased for the user and show the URL with its password redacted.
pub fn parse_url(full: &str) -> Result<UpstreamUrl, String> {
    let url = &redacted(full);
    // A cluster URL lists its seeds (`h1:7000,h2:7001`), which no URL parser reads as one host:
    // the first is parsed in place, the others each as a host of its own.
    let (scheme, rest) = full.split_once("://").unwrap_or((full, ""));
    let cluster = matches!(scheme, "redis+cluster" | "rediss+cluster");
    let (single, more_seeds): (String, Vec<&str>) = if cluster {
        let (auth, after) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hosts, path) = match after.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (after, None),
        };
        let mut hosts = hosts.split(',');
        let first = hosts.next().unwrap_or_default();
        let single = format!(
            "{scheme}://{}{first}{}",
            auth.map_or(String::new(), |a| format!("{a}@")),
            path.map_or(String::new(), |p| format!("/{p}"))
        );
        (single, hosts.collect())
    } else {
        (full.to_string(), Vec::new())
    };
    let parsed = url::Url::parse(&single).map_err(|e| match e {
        url::ParseError::InvalidPort => {
            format!("`{url}`: the port is not a number from 1 to 65535")
        }
        e => format!("`{url}` is not a valid URL: {e}"),
    })?;
    let query = |parsed: &url::Url| -> Result<u32, String> {
        let mut db = None;
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "db" if db.is_none() => {
                    db = Some(
                        v.parse()
                            .map_err(|_| format!("`{url}`: db `{v}` is not a number"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "`{url}`: unknown query parameter `{k}` (only db=N, for unix URLs)"
                    ));
                }
            }
        }
        Ok(db.unwrap_or(0))
    };
    if parsed.fragment().is_some() {
        return Err(format!(
            "`{url}`: a URL fragment (`#…`) has no meaning here"
        ));
    }
    match parsed.scheme() {
        "unix" => {
            if parsed.host_str().is_some_and(|h| !h.is_empty()) || !parsed.path().starts_with('/') {
                return Err(format!(
                    "`{url}`: a unix URL needs an absolute path: unix:///path/to/socket"
                ));
            }
            let path = percent_encoding::percent_decode_str(parsed.path())
                .decode_utf8()
                .map_err(|_| format!("`{url}`: the path is not UTF-8"))?;
            return Ok(UpstreamUrl {
                addr: UpstreamAddr::Unix(PathBuf::from(&*path)),
                username: None,
                password: None,
                db: query(&parsed)?,
                tls: false,
                seeds: Vec::new(),
            });
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {}
        _ => {
            return Err(format!(
                "`{url}` is not a redis://host:port[/db], rediss://host:port[/db], \
                 redis+cluster://host:port[,host:port…] or unix:///path URL"
            ));
        }
    }
    if parsed.query().is_some() {
        return Err(format!(
            "`{url}`: a redis:// URL takes its database as a path (/N), not a query"
        ));
    }
    let hostport = host_port(&parsed, url)?;
    let db = match parsed.path() {
        "" | "/" => 0,
        p => {
            let d = &p[1..];
            d.parse()
                .map_err(|_| format!("`{url}`: database `{d}` is not a number"))?
        }
    };
    if cluster && db != 0 {
        return Err(format!(
            "`{url}`: a cluster has only database 0 (Redis Cluster refuses SELECT)"
        ));
    }
    let mut seeds = Vec::new();
    if cluster {
        seeds.push(hostport.clone());
        for seed in more_seeds {
            let p = url::Url::parse(&format!("redis://{seed}"))
                .map_err(|e| format!("`{url}`: seed `{seed}` is not a host[:port]: {e}"))?;
            if !matches!(p.path(), "" | "/") || p.query().is_some() || !p.username().is_empty() {
                return Err(format!("`{url}`: seed `{seed}` is not a host[:port]"));
            }
            seeds.push(host_port(&p, url)?);
        }
    }
    // `url` keeps a `%` that starts no escape as it was; respite refuses it rather than guess.
    let decode = |part: &str, what: &str| -> Result<String, String> {
        let bad =
            || format!("`{url}`: the {what} has a `%` not followed by two hex digits of UTF-8");
        let b = part.as_bytes();
        let escapes_ok = b.iter().enumerate().all(|(i, &c)| {
            c != b'%'
                || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if !escapes_ok {
            return Err(bad());
        }
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad())
    };
    // `user@host` without a `:` is a password alone, as respite has always read it (Redis's
    // `AUTH <password>`); `url` calls it a username.
    let (username, password) = match (parsed.username(), parsed.password()) {
        ("", None) => (None, None),
        (p, None) => (None, Some(decode(p, "password")?)),
        ("", Some(p)) => (None, Some(decode(p, "password")?)),
        (u, Some(p)) => (Some(decode(u, "username")?), Some(decode(p, "password")?)),
    };
    Ok(UpstreamUrl {
        addr: UpstreamAddr::Tcp(hostport),
        username,
        password,
        db,
        tls: scheme.starts_with("rediss"),
        seeds,
    })
}

/// A parsed URL's `host:port` (6379 when the port is left out; IPv6 in brackets).
fn host_port(parsed: &url::Url, url: &str) -> Result<String, String> {
    let host = match parsed.host() {
        Some(url::Host::Domain("")) | None => return Err(format!("`{url}`: missing host")),
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
    };
    let port = match parsed.port() {
        Some(0) => {
            return Err(format!(
                "`{url}`: port 0 is not a port to connect to (a number from 1 to 65535)"
            ));
        }
        Some(p) => p,
        None => 6379,
    };
    Ok(format!("{host}:{port}"))
}

/// `url` with the password (between `user:` and `@`) shown as `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

//! `[upstream]` and `[health]`: where the upstream is (its URL), how respite connects to it, and
//! how its health is judged. Every key is checked even without a URL, so a typo is never silently
//! ignored in standalone mode.
use super::{Check, ConfigError};
use serde::Deserialize;
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
}

/// `upstream.tls_*`: how respite verifies the upstream and proves itself to it. Paths only: the
/// files are read by `crate::tls` when a connection is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA bundle the upstream's certificate must chain to; `None` trusts nothing but what
    /// `tls_ca` would add, so it is required (no system roots are bundled).
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    url: String,
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
        }
    }
}

#[derive(Debug, Deserialize)]
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
    Ok(Some(UpstreamConfig {
        url,
        tls,
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
    if raw.tls_ca.is_empty() {
        return Err(c.invalid(
            "upstream.tls_ca",
            "a rediss:// URL needs the CA bundle (PEM) the upstream's certificate is checked against"
                .into(),
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

/// Parse an upstream URL; user and password are percent-decoded (`%40` for `@`). Errors are
/// phrased for the user and show the URL with its password redacted.
pub fn parse_url(full: &str) -> Result<UpstreamUrl, String> {
    let url = &redacted(full);
    if let Some(rest) = full.strip_prefix("unix://") {
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
            tls: false,
            seeds: Vec::new(),
        });
    }
    let (rest, tls, cluster) = if let Some(r) = full.strip_prefix("redis://") {
        (r, false, false)
    } else if let Some(r) = full.strip_prefix("rediss://") {
        (r, true, false)
    } else if let Some(r) = full.strip_prefix("redis+cluster://") {
        (r, false, true)
    } else if let Some(r) = full.strip_prefix("rediss+cluster://") {
        (r, true, true)
    } else {
        return Err(format!(
            "`{url}` is not a redis://host:port[/db], rediss://host:port[/db], \
             redis+cluster://host:port[,host:port…] or unix:///path URL"
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
    if cluster && db != 0 {
        return Err(format!(
            "`{url}`: a cluster has only database 0 (Redis Cluster refuses SELECT)"
        ));
    }
    let mut seeds = Vec::new();
    if cluster {
        for seed in hostport.split(',') {
            seeds.push(host_port(seed, url)?);
        }
    }
    let hostport = match seeds.first() {
        Some(first) => first.clone(),
        None => host_port(hostport, url)?,
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => {
            let decode = |part: &str, what: &str| {
                percent_decode(part).ok_or_else(|| {
                    format!("`{url}`: the {what} has a `%` not followed by two hex digits of UTF-8")
                })
            };
            match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| decode(u, "username")).transpose()?,
                    Some(decode(p, "password")?),
                ),
                None => (None, Some(decode(a, "password")?)),
            }
        }
    };
    Ok(UpstreamUrl {
        addr: UpstreamAddr::Tcp(hostport),
        username,
        password,
        db,
        tls,
        seeds,
    })
}

/// One `host[:port]` of a URL as `host:port` (6379 when the port is left out).
fn host_port(hostport: &str, url: &str) -> Result<String, String> {
    if hostport.is_empty() {
        return Err(format!("`{url}`: missing host"));
    }
    Ok(if hostport.contains(':') && !hostport.ends_with(']') {
        let port = hostport.rsplit(':').next().unwrap_or_default();
        port.parse::<u16>()
            .map_err(|_| format!("`{url}`: port `{port}` is not a number from 1 to 65535"))?;
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    })
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

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

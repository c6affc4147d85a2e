//! Tenants and how a client becomes one: AUTH / HELLO AUTH credentials, the default tenant, and
//! the per-peer slowdown after repeated failures.
//!
//! Pure logic: the session owns the socket, decides when to call [`Tenants::authenticate`], and
//! sleeps for whatever [`FailureTracker`] says before replying. Passwords are never kept in clear.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::acl::AllowSet;
use super::sha256;
use super::ttl::TtlRule;

/// Redis's reply when a command arrives before AUTH and there is no default tenant.
pub const NOAUTH: &str = "NOAUTH Authentication required.";

/// Why AUTH failed; `Display` is the whole error reply text, as Redis 7 words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password: Redis does not say which, and neither does respite.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
}

#[derive(Debug, Clone)]
pub(super) struct Credentials {
    pub username: String,
    pub digest: [u8; 32],
}

/// One tenant: who it is, its namespace and what it may do. Shared by every session that
/// authenticated as it.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    credentials: Option<Credentials>,
    /// Prepended to every key and channel; empty for a lone tenant that needs no namespace.
    pub prefix: Bytes,
    pub(super) allowed: AllowSet,
    /// EVAL/EVALSHA (and SCRIPT LOAD/EXISTS) for a prefixed tenant; see the module docs.
    pub scripts: bool,
    /// SORT BY/GET patterns with `*` for a prefixed tenant (they are prefixed, hence confined).
    pub sort_patterns: bool,
    pub max_value_bytes: Option<usize>,
    ttl: Vec<TtlRule>,
    /// This tenant's per-command counters, registered on first use.
    pub(crate) counters: super::metrics::TenantCounters,
}

impl Tenant {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: String,
        credentials: Option<Credentials>,
        prefix: Bytes,
        allowed: AllowSet,
        scripts: bool,
        sort_patterns: bool,
        max_value_bytes: Option<usize>,
        ttl: Vec<TtlRule>,
    ) -> Self {
        Tenant {
            name,
            credentials,
            prefix,
            allowed,
            scripts,
            sort_patterns,
            max_value_bytes,
            ttl,
            counters: Default::default(),
        }
    }

    /// A tenant built in code (tests, tools): `allow` uses the same rules as the config file.
    pub fn builder(name: &str) -> TenantBuilder {
        TenantBuilder {
            tenant: Tenant::new(
                name.to_string(),
                None,
                Bytes::new(),
                AllowSet::none(),
                false,
                false,
                None,
                Vec::new(),
            ),
        }
    }

    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.username.as_str())
    }

    /// The name NOPERM errors use: the username, as Redis does, or the tenant's name if it has none.
    pub fn user_label(&self) -> &str {
        self.username().unwrap_or(&self.name)
    }

    pub fn ttl_rules(&self) -> &[TtlRule] {
        &self.ttl
    }

    /// The first TTL rule whose pattern matches `key` (the client's name, without the prefix).
    pub fn ttl_rule(&self, key: &[u8]) -> Option<&TtlRule> {
        // `*` is every key, the empty name included, which Redis's matcher alone would miss.
        self.ttl
            .iter()
            .find(|r| &r.pattern[..] == b"*" || super::glob::matches(&r.pattern, key))
    }

    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }
}

/// Builds a [`Tenant`] without a config file.
pub struct TenantBuilder {
    tenant: Tenant,
}

impl TenantBuilder {
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.tenant.credentials = Some(Credentials {
            username: username.to_string(),
            digest: sha256::digest(password.as_bytes()),
        });
        self
    }
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.tenant.prefix = Bytes::copy_from_slice(prefix.as_bytes());
        self
    }
    /// Panics on an unknown rule: for tests and tools, where a typo should fail loudly.
    pub fn allow(mut self, rules: &[&str]) -> Self {
        let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        self.tenant.allowed =
            AllowSet::parse(&rules).unwrap_or_else(|(n, e)| panic!("allow[{n}]: {e}"));
        self
    }
    pub fn scripts(mut self, on: bool) -> Self {
        self.tenant.scripts = on;
        self
    }
    pub fn sort_patterns(mut self, on: bool) -> Self {
        self.tenant.sort_patterns = on;
        self
    }
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.tenant.max_value_bytes = Some(n);
        self
    }
    pub fn ttl(mut self, rule: TtlRule) -> Self {
        self.tenant.ttl.push(rule);
        self
    }
    pub fn build(self) -> Tenant {
        self.tenant
    }
}

/// Every configured tenant, looked up by username.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    all: Vec<Arc<Tenant>>,
    by_username: HashMap<String, usize>,
    default: Option<usize>,
}

impl Tenants {
    pub(super) fn new(all: Vec<Arc<Tenant>>, default: Option<usize>) -> Self {
        let by_username = all
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.username().map(|u| (u.to_string(), i)))
            .collect();
        Tenants {
            all,
            by_username,
            default,
        }
    }

    /// No tenants configured: respite runs without policy (the session skips all of this).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.all.iter()
    }

    /// The tenant of a client that never authenticated; `None` means such a client gets
    /// [`NOAUTH`] for everything but AUTH, HELLO, QUIT and RESET.
    pub fn default_tenant(&self) -> Option<&Arc<Tenant>> {
        self.default.map(|i| &self.all[i])
    }

    /// Check `AUTH username password` (or `HELLO … AUTH username password`). `AUTH password`
    /// alone means the user `default`, as in Redis.
    ///
    /// The password is hashed and compared in constant time even when the username is unknown,
    /// so timing does not reveal which usernames exist.
    pub fn authenticate(&self, username: &[u8], password: &[u8]) -> Result<Arc<Tenant>, AuthError> {
        let presented = sha256::digest(password);
        let found = std::str::from_utf8(username)
            .ok()
            .and_then(|u| self.by_username.get(u))
            .map(|&i| &self.all[i]);
        let expected = found
            .and_then(|t| t.credentials.as_ref())
            .map_or([0u8; 32], |c| c.digest);
        let ok = sha256::ct_eq(&presented, &expected);
        match found {
            Some(t) if ok => Ok(Arc::clone(t)),
            _ => Err(AuthError::WrongPass),
        }
    }
}

/// Counts AUTH failures per peer address and says how long to hold the reply to the next one.
///
/// The first two failures in a row are free (typos); from the third the delay doubles from
/// [`FailureTracker::BASE`] up to [`FailureTracker::CAP`]. A success or [`FailureTracker::FORGET`]
/// without failures clears the peer. The table is bounded: when full, the peer whose last failure
/// is oldest is dropped, so a flood of addresses costs memory, not correctness for the others.
#[derive(Debug)]
pub struct FailureTracker {
    peers: Mutex<HashMap<IpAddr, Failures>>,
    max_peers: usize,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Default for FailureTracker {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl FailureTracker {
    pub const BASE: Duration = Duration::from_millis(25);
    pub const CAP: Duration = Duration::from_secs(1);
    pub const FORGET: Duration = Duration::from_secs(60);
    /// Failures before delays start.
    pub const FREE: u32 = 2;

    pub fn new(max_peers: usize) -> Self {
        FailureTracker {
            peers: Mutex::new(HashMap::new()),
            max_peers: max_peers.max(1),
        }
    }

    /// Record a failed AUTH from `peer` at `now`; returns how long to wait before replying.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> Duration {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            peers.retain(|_, f| now.saturating_duration_since(f.last) < Self::FORGET);
            if peers.len() >= self.max_peers
                && let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
            {
                peers.remove(&oldest);
            }
        }
        let entry = peers.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) >= Self::FORGET {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Self::delay_for(entry.count)
    }

    /// A successful AUTH from `peer` clears its count.
    pub fn succeeded(&self, peer: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.remove(&peer);
    }

    /// The delay after the `n`th failure in a row.
    pub fn delay_for(n: u32) -> Duration {
        if n <= Self::FREE {
            return Duration::ZERO;
        }
        let shift = (n - Self::FREE - 1).min(16);
        (Self::BASE * (1u32 << shift)).min(Self::CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let a = Tenant::builder("a")
            .credentials("alice", "pw")
            .prefix("a:")
            .build();
        let anon = Tenant::builder("anon").prefix("anon:").build();
        Tenants::new(vec![Arc::new(a), Arc::new(anon)], Some(1))
    }

    #[test]
    fn authenticate() {
        let t = tenants();
        assert_eq!(t.authenticate(b"alice", b"pw").unwrap().name, "a");
        assert_eq!(
            t.authenticate(b"alice", b"px").unwrap_err(),
            AuthError::WrongPass
        );
        assert_eq!(
            t.authenticate(b"bob", b"pw").unwrap_err(),
            AuthError::WrongPass
        );
        // A tenant without credentials cannot be authenticated into, even with an empty password.
        assert!(t.authenticate(b"anon", b"").is_err());
        assert!(t.authenticate(b"default", b"").is_err());
        assert_eq!(t.default_tenant().unwrap().name, "anon");
        assert_eq!(
            AuthError::WrongPass.to_string(),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
    }

    #[test]
    fn slowdown() {
        let tr = FailureTracker::new(2);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(tr.failed(peer, t0), Duration::ZERO);
        assert_eq!(tr.failed(peer, t0), Duration::ZERO);
        assert_eq!(tr.failed(peer, t0), Duration::from_millis(25));
        assert_eq!(tr.failed(peer, t0), Duration::from_millis(50));
        for _ in 0..20 {
            tr.failed(peer, t0);
        }
        assert_eq!(tr.failed(peer, t0), FailureTracker::CAP);
        // Forgotten after a quiet minute; cleared by success.
        assert_eq!(
            tr.failed(peer, t0 + Duration::from_secs(61)),
            Duration::ZERO
        );
        tr.failed(peer, t0);
        tr.failed(peer, t0);
        tr.succeeded(peer);
        assert_eq!(tr.failed(peer, t0), Duration::ZERO);
        // Bounded: other peers push the oldest out instead of growing the table.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let third: IpAddr = "10.0.0.3".parse().unwrap();
        tr.failed(other, t0 + Duration::from_secs(1));
        tr.failed(third, t0 + Duration::from_secs(2));
        assert_eq!(tr.peers.lock().unwrap().len(), 2);
    }
}

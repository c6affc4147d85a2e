//! Tenants and how a client becomes one: AUTH / HELLO AUTH credentials (password-only AUTH picks
//! the tenant whose password it is), the default tenant, and the slowdown after repeated failures
//! per (address, username).
//!
//! Pure logic: the session owns the socket, decides when to call [`Tenants::authenticate`], and
//! sleeps for whatever [`FailureTracker`] says before replying. Passwords are never kept in clear.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::allow::AllowSet;
use super::sha256;
use super::ttl_rule::TtlRule;
use crate::protocol::framer::Limits;

/// Redis's reply when a command arrives before AUTH and there is no default tenant.
pub const NOAUTH: &str = "NOAUTH Authentication required.";

/// Redis's limits for a client that has not authenticated (networking.c): at most 10 arguments of
/// 16 KiB each, and 1 MiB of unfinished request; tighter configured limits stay.
pub fn unauthenticated(limits: Limits) -> Limits {
    Limits {
        max_args: limits.max_args.min(10),
        max_bulk_len: limits.max_bulk_len.min(16 * 1024),
        max_inline_len: limits.max_inline_len.min(16 * 1024),
        max_query_buffer: limits.max_query_buffer.min(1024 * 1024),
    }
}

/// The reply to a client that has not authenticated and exceeded [`unauthenticated`] limits,
/// before its connection is closed, as Redis does.
pub const UNAUTHENTICATED_LIMIT: &str = "ERR Protocol error: unauthenticated request over the limits for clients that have not authenticated (10 arguments, 16384 bytes each)";

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
    /// The upstream database of its own that holds its keys (`tenant.db`): the session sends
    /// its commands there, and whole-database commands are the upstream's own there.
    pub db: Option<u32>,
    /// Server parameters (lowercase glob patterns) it may CONFIG GET and SET upstream
    /// (`tenant.server_config`; [`super::info::server_param`] says which).
    pub server_config: Vec<String>,
    /// Its `notify-keyspace-events`: which keyspace notifications of its keys reach it.
    pub events: Arc<super::keyspace::Events>,
    /// `tenant.notify_keyspace_events` as configured: a reload keeps the run-time setting
    /// unless the file's changed.
    pub(super) events_configured: u32,
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
            db: None,
            server_config: Vec::new(),
            events: Default::default(),
            events_configured: 0,
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
    pub fn db(mut self, db: u32) -> Self {
        self.tenant.db = Some(db);
        self
    }
    pub fn build(self) -> Tenant {
        self.tenant
    }
}

/// Every configured tenant, looked up by username.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    pub(super) all: Vec<Arc<Tenant>>,
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
    /// alone means the user `default`, as in Redis: a tenant named `default` if there is one,
    /// otherwise the tenant whose password it is, provided no other tenant has the same password
    /// (a shared password names nobody and is refused; those tenants must send a username).
    ///
    /// Passwords are hashed and compared in constant time, against every tenant for `default`,
    /// so timing reveals neither which usernames exist nor which tenant a password belongs to.
    pub fn authenticate(&self, username: &[u8], password: &[u8]) -> Result<Arc<Tenant>, AuthError> {
        let presented = sha256::digest(password);
        let found = std::str::from_utf8(username)
            .ok()
            .and_then(|u| self.by_username.get(u))
            .map(|&i| &self.all[i]);
        if found.is_none() && username == b"default" {
            return self.by_password(&presented);
        }
        let expected = found
            .and_then(|t| t.credentials.as_ref())
            .map_or([0u8; 32], |c| c.digest);
        let ok = sha256::ct_eq(&presented, &expected);
        match found {
            Some(t) if ok => Ok(Arc::clone(t)),
            _ => Err(AuthError::WrongPass),
        }
    }

    /// The one tenant whose password digest is `presented`; every tenant is compared.
    fn by_password(&self, presented: &[u8; 32]) -> Result<Arc<Tenant>, AuthError> {
        let mut matched = None;
        let mut count = 0usize;
        for (i, t) in self.all.iter().enumerate() {
            let expected = t.credentials.as_ref().map_or([0u8; 32], |c| c.digest);
            let ok = t.credentials.is_some() && sha256::ct_eq(presented, &expected);
            count += usize::from(ok);
            if ok {
                matched = Some(i);
            }
        }
        match matched {
            Some(i) if count == 1 => Ok(Arc::clone(&self.all[i])),
            _ => Err(AuthError::WrongPass),
        }
    }
}

/// Counts AUTH failures per (peer address, username) and says how long to hold the reply to the
/// next one.
///
/// The first two failures in a row are free (typos); from the third the delay doubles from
/// [`FailureTracker::BASE`] up to [`FailureTracker::CAP`]. A success clears only its own
/// (address, username): guessing user `b`'s password between successful logins as `a` is slowed
/// all the same. Password-only AUTH counts under `default`, and a success there clears nothing,
/// since it may be any tenant's: its count fades after [`FailureTracker::FORGET`] without failures.
/// The table is bounded: when full, the entry whose last failure is oldest is dropped, so a flood
/// of addresses or names costs memory, not correctness for the others.
#[derive(Debug)]
pub struct FailureTracker {
    peers: Mutex<HashMap<PeerUser, Failures>>,
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

/// Usernames are kept to this many bytes: longer ones that share it count together, which only
/// slows them more, and a huge name cannot grow the table.
const NAME_KEPT: usize = 128;

/// One (address, username) pair, the username cut to [`NAME_KEPT`] bytes.
type PeerUser = (IpAddr, Box<[u8]>);

fn entry_key(peer: IpAddr, user: &[u8]) -> PeerUser {
    (peer, user[..user.len().min(NAME_KEPT)].into())
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

    /// Record a failed AUTH as `user` (`default` for password-only) from `peer` at `now`;
    /// returns how long to wait before replying.
    pub fn failed(&self, peer: IpAddr, user: &[u8], now: Instant) -> Duration {
        let key = entry_key(peer, user);
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.contains_key(&key) && peers.len() >= self.max_peers {
            peers.retain(|_, f| now.saturating_duration_since(f.last) < Self::FORGET);
            if peers.len() >= self.max_peers
                && let Some(oldest) = peers
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
            {
                peers.remove(&oldest);
            }
        }
        let entry = peers.entry(key).or_insert(Failures {
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

    /// A successful AUTH as `user` from `peer` clears that pair's count, unless `user` is
    /// `default` (password-only AUTH, which may have picked any tenant).
    pub fn succeeded(&self, peer: IpAddr, user: &[u8]) {
        if user == b"default" {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.remove(&entry_key(peer, user));
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
    fn password_only_picks_the_tenant_whose_password_it_is() {
        let a = Tenant::builder("a").credentials("alice", "pa").build();
        let b = Tenant::builder("b").credentials("bob", "pb").build();
        let c = Tenant::builder("c").credentials("carol", "shared").build();
        let d = Tenant::builder("d").credentials("dave", "shared").build();
        let t = Tenants::new(
            vec![Arc::new(a), Arc::new(b), Arc::new(c), Arc::new(d)],
            None,
        );
        assert_eq!(t.authenticate(b"default", b"pa").unwrap().name, "a");
        assert_eq!(t.authenticate(b"default", b"pb").unwrap().name, "b");
        assert!(t.authenticate(b"default", b"nope").is_err());
        // A password two tenants share names neither; their usernames still work.
        assert!(t.authenticate(b"default", b"shared").is_err());
        assert_eq!(t.authenticate(b"dave", b"shared").unwrap().name, "d");
        // A tenant named `default` is what `AUTH password` means, as in Redis.
        let def = Tenant::builder("def").credentials("default", "pd").build();
        let a = Tenant::builder("a").credentials("alice", "pa").build();
        let t = Tenants::new(vec![Arc::new(def), Arc::new(a)], None);
        assert_eq!(t.authenticate(b"default", b"pd").unwrap().name, "def");
        assert!(t.authenticate(b"default", b"pa").is_err());
    }

    #[test]
    fn slowdown() {
        let tr = FailureTracker::new(2);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(tr.failed(peer, b"u", t0), Duration::ZERO);
        assert_eq!(tr.failed(peer, b"u", t0), Duration::ZERO);
        assert_eq!(tr.failed(peer, b"u", t0), Duration::from_millis(25));
        assert_eq!(tr.failed(peer, b"u", t0), Duration::from_millis(50));
        for _ in 0..20 {
            tr.failed(peer, b"u", t0);
        }
        assert_eq!(tr.failed(peer, b"u", t0), FailureTracker::CAP);
        // Another user's success from the same address clears nothing of `u`'s.
        tr.succeeded(peer, b"other");
        assert_eq!(tr.failed(peer, b"u", t0), FailureTracker::CAP);
        // Forgotten after a quiet minute; cleared by its own success.
        assert_eq!(
            tr.failed(peer, b"u", t0 + Duration::from_secs(61)),
            Duration::ZERO
        );
        tr.failed(peer, b"u", t0);
        tr.failed(peer, b"u", t0);
        tr.succeeded(peer, b"u");
        assert_eq!(tr.failed(peer, b"u", t0), Duration::ZERO);
        // Password-only successes clear nothing: they may be any tenant's.
        for _ in 0..3 {
            tr.failed(peer, b"default", t0);
        }
        tr.succeeded(peer, b"default");
        assert_eq!(tr.failed(peer, b"default", t0), Duration::from_millis(50));
        // Bounded: other peers push the oldest out instead of growing the table.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let third: IpAddr = "10.0.0.3".parse().unwrap();
        tr.failed(other, b"u", t0 + Duration::from_secs(1));
        tr.failed(third, b"u", t0 + Duration::from_secs(2));
        assert_eq!(tr.peers.lock().unwrap().len(), 2);
    }
}

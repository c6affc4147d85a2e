//! Hot reload: re-read the configuration from the sources it was loaded from (file, environment,
//! flags, through the same `config::load`), and swap in what may change while clients stay
//! connected; on SIGHUP and on the admin's `POST /reload`.
//!
//! What changes live, swapped whole (arc-swap) so a reader sees the old set or the new, never a
//! mix: the tenants (credentials, allow lists, prefixes, TTL rules, value limits), the client
//! limits, the client TLS certificate and the near cache's rules (`near_cache.rule`; a change
//! empties the cache, see `NearCache::replace_rules`). A live session takes its tenant's new rules
//! at its next command (by tenant name; a tenant that is gone leaves it unauthenticated), new
//! credentials at its next AUTH, new limits when it next connects, and a new certificate at its
//! next handshake; the upstream URL's user and password, for every upstream connection opened or
//! reset afterwards. What cannot change live (listeners, upstream, admin, runtime, logging, local
//! engine, the near cache's other settings) is left as it was and named in the outcome as needing a
//! restart. An invalid configuration changes nothing. This module never opens sockets.
use crate::cache::NearCache;
use crate::config::{self, Config, ConfigError, Setting};
use crate::policy::Tenants;
use crate::tls::TlsError;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Where the running configuration came from, to read it again. No `Debug`: settings may hold
/// passwords.
#[derive(Clone, Default)]
pub struct Sources {
    pub path: Option<PathBuf>,
    pub env: Vec<Setting>,
    pub flags: Vec<Setting>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("reload is not available: respite was not started from a configuration source")]
    NoSources,
}

/// A reload that applied: the sections that differ but wait for a restart.
#[derive(Debug, Default)]
pub struct Applied {
    pub needs_restart: Vec<&'static str>,
}

/// What sessions read of the configuration that may change live.
pub struct Live {
    /// Bumped by every applied reload; a session compares it with the one it last saw (one
    /// relaxed load per command) before looking at anything else here.
    generation: AtomicU64,
    config: ArcSwap<Config>,
    tenants: ArcSwapOption<Tenants>,
    tls: ArcSwapOption<rustls::ServerConfig>,
    sources: Option<Sources>,
    /// The near cache whose rules a reload replaces; attached once it is started (it needs the
    /// upstream, which starts after this).
    cache: OnceLock<Arc<NearCache>>,
    /// One reload at a time (SIGHUP and POST may race).
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    /// The state at start. `sources` is `None` for a proxy run from a configuration built in
    /// memory (tests), which cannot reload.
    pub fn new(config: Arc<Config>, sources: Option<Sources>) -> Result<Live, TlsError> {
        let tenants = config
            .tenants
            .as_ref()
            .map(|t| Arc::new(Tenants::from_config(t)));
        let tls = match &config.listen.tls_files {
            Some(files) => Some(crate::tls::server_config(files)?),
            None => None,
        };
        Ok(Live {
            generation: AtomicU64::new(0),
            config: ArcSwap::new(config),
            tenants: ArcSwapOption::new(tenants),
            tls: ArcSwapOption::new(tls),
            sources,
            cache: OnceLock::new(),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The running near cache, for reloads to replace its rules.
    pub fn attach_cache(&self, cache: Arc<NearCache>) {
        let _ = self.cache.set(cache);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The configuration in force (limits are read from it when a session starts).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn tenants(&self) -> Option<Arc<Tenants>> {
        self.tenants.load_full()
    }

    /// The client TLS configuration new handshakes use.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.load_full()
    }

    /// Read the sources again and apply what may change live. Logs and counts the outcome
    /// (`respite_config_reloads_total{result}`).
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        let _one = self.reloading.lock().await;
        let r = self.try_reload();
        match &r {
            Ok(a) => {
                crate::metrics::config_reload(true);
                tracing::info!(needs_restart = ?a.needs_restart, "configuration reloaded");
            }
            Err(e) => {
                crate::metrics::config_reload(false);
                tracing::error!(error = %e, "reload failed; the running configuration stays");
            }
        }
        r
    }

    fn try_reload(&self) -> Result<Applied, ReloadError> {
        let sources = self.sources.as_ref().ok_or(ReloadError::NoSources)?;
        let new = config::load(sources.path.as_deref(), &sources.env, &sources.flags)?;
        // Everything that can fail is built before anything is swapped.
        let tls = match &new.listen.tls_files {
            Some(files) => Some(crate::tls::server_config(files)?),
            None => None,
        };
        let previous = self.tenants.load_full();
        let tenants = new.tenants.as_ref().map(|t| {
            let built = Tenants::from_config(t);
            Arc::new(match &previous {
                Some(p) => built.carry_over(p),
                None => built,
            })
        });
        let old = self.config.load_full();
        let needs_restart = fixed_differences(&old, &new);
        // What cannot change stays as it runs: the swapped config keeps the old fixed parts.
        let mut merged = (*old).clone();
        merged.limits = new.limits;
        merged.max_inflight_per_client = new.max_inflight_per_client;
        merged.max_reply_bytes = new.max_reply_bytes;
        merged.tenants = new.tenants.clone();
        if old.listen.tls.is_some() && new.listen.tls.is_some() {
            merged.listen.tls_files = new.listen.tls_files.clone();
            self.tls.store(tls);
            if let Some(files) = &new.listen.tls_files {
                crate::tls::record_server_expiry(files);
            }
        }
        if let (Some(running), Some(next)) = (&mut merged.near_cache, &new.near_cache) {
            running.rules = next.rules.clone();
            if let Some(cache) = self.cache.get() {
                cache.replace_rules(&next.rules, tenants.as_deref());
            }
        }
        if let (Some(running), Some(next)) = (&old.upstream, &new.upstream)
            && !needs_restart.contains(&"upstream")
            && running
                .credentials
                .set(next.url.username.clone(), next.url.password.clone())
        {
            // Every connection opened or reset from now on logs in with them (an operator's
            // answer to a password changed under respite); open ones stay logged in.
            tracing::info!("upstream credentials replaced for new connections");
        }
        if let Some(t) = &tenants {
            crate::policy::metrics::register(t);
        }
        self.tenants.store(tenants);
        self.config.store(Arc::new(merged));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Applied { needs_restart })
    }
}

/// The sections that differ between `old` and `new` but only change with a restart.
fn fixed_differences(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let l = (&old.listen, &new.listen);
    if l.0.tcp != l.1.tcp
        || l.0.unix != l.1.unix
        || l.0.tls != l.1.tls
        || l.0.unix_mode != l.1.unix_mode
        || l.0.unix_owner != l.1.unix_owner
        || l.0.unix_group != l.1.unix_group
        || l.0.max_clients != l.1.max_clients
    {
        out.push("listen");
    }
    // The URL compared whole but for its credentials (they change live, see `try_reload`), the
    // rest through Debug (which hides the password and the live credentials).
    let upstream = |c: &Config| {
        c.upstream.as_ref().map(|u| {
            let mut url = u.url.clone();
            (url.username, url.password) = (None, None);
            (
                url.clone(),
                format!(
                    "{:?}",
                    (
                        url,
                        u.connections,
                        u.max_inflight,
                        u.max_pinned,
                        u.command_timeout,
                        u.connect_timeout,
                        u.backoff_base,
                        u.backoff_max,
                        u.health,
                        &u.tls
                    )
                ),
            )
        })
    };
    if upstream(old) != upstream(new) {
        out.push("upstream");
    }
    if old.admin != new.admin
        || old.admin_reload_token_file != new.admin_reload_token_file
        || old.command_histograms != new.command_histograms
    {
        out.push("admin");
    }
    if old.worker_threads != new.worker_threads || old.shutdown_grace != new.shutdown_grace {
        out.push("runtime");
    }
    if old.log_level != new.log_level || old.log_format != new.log_format {
        out.push("log");
    }
    if old.local_max_memory != new.local_max_memory || old.local_eviction != new.local_eviction {
        out.push("local");
    }
    if format!("{:?}", old.local_only) != format!("{:?}", new.local_only) {
        out.push("local_only");
    }
    // The rules change live; everything else in the section waits for a restart.
    let fixed = |c: &Config| {
        c.near_cache.clone().map(|mut n| {
            n.rules.clear();
            format!("{n:?}")
        })
    };
    if fixed(old) != fixed(new) {
        out.push("near_cache");
    }
    out
}

//! Accepting clients and running their sessions; [`run`] is the proxy's entry point.
//!
//! `run` takes listeners that are already bound (tests bind `127.0.0.1:0`) and a shutdown future.
//! It starts the upstream pools and the admin endpoint, accepts TCP, unix-socket and TLS
//! ([`tls_io`]) clients up to `listen.max_clients`, reloads what may change live on SIGHUP
//! ([`crate::reload`]), and on shutdown stops accepting, lets every session finish the commands it
//! has in flight, and returns within the grace period. It never touches the upstream directly.
//!
//! Who answers instead of the upstream (standalone and local-only mode) is [`crate::local_only`]'s.

mod io;
pub(crate) mod pause;
mod session;
mod tls_io;

use crate::command::CommandSpec;
use crate::config::Config;
use crate::engine::Engine;
use crate::local_only::{self, Answerer};
use crate::reload::{Live, Sources};
use crate::upstream::Upstream;
use crate::upstream::health::{self, Health};
use crate::{admin, metrics};
use io::Acceptor;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

/// Bound sockets for `run`: at least one client listener, and the admin HTTP listener if wanted.
#[derive(Default)]
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<UnixListener>,
    /// The TLS client listener (`listen.tls`).
    pub tls: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// The startup summary: one line with what an operator checks first. It names the upstream
    /// by its address alone, never its URL (which may carry a password).
    pub fn log_summary(&self, config: &Config) {
        let addr = |l: Option<&TcpListener>| match l.map(|l| l.local_addr()) {
            Some(Ok(a)) => a.to_string(),
            Some(Err(_)) => "?".into(),
            None => "none".into(),
        };
        let unix = config
            .listen
            .unix
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string());
        let (mode, upstream) = match &config.upstream {
            Some(u) => ("proxy", u.url.addr.to_string()),
            None => ("standalone", "none".into()),
        };
        info!(
            version = env!("CARGO_PKG_VERSION"),
            git_revision = crate::metrics::GIT_REVISION,
            mode,
            tcp = addr(self.tcp.as_ref()),
            tls = addr(self.tls.as_ref()),
            unix,
            upstream,
            admin = addr(self.admin.as_ref()),
            "respite started"
        );
    }

    /// Bind what the configuration names. A stale unix socket file left by a previous run is
    /// replaced, and the new one gets `listen.unix_mode`, `unix_owner` and `unix_group`. An error
    /// names the listener (tcp, unix, admin) and its address.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let named = |which: &'static str, addr: String| {
            move |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("{which} listener {addr}: {e}"))
            }
        };
        let tcp = match config.listen.tcp {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(named("tcp", a.to_string()))?,
            ),
            None => None,
        };
        let unix = match &config.listen.unix {
            Some(p) => {
                let err = named("unix", p.display().to_string());
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    std::fs::remove_file(p).map_err(&err)?;
                }
                let listener = UnixListener::bind(p).map_err(&err)?;
                // Until these apply, the socket has what the umask gave it (0755 under the usual
                // 022, which lets no other user connect): run under a umask at least as tight
                // as unix_mode for no moment of a wider socket.
                if let Some(mode) = config.listen.unix_mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                        .map_err(&err)?;
                }
                let (owner, group) = (&config.listen.unix_owner, &config.listen.unix_group);
                if owner.is_some() || group.is_some() {
                    let missing = |what: &str, who: &crate::config::Principal| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("no {what} `{who}` in the system's {what} database"),
                        )
                    };
                    let ids = || -> std::io::Result<_> {
                        let uid = match owner {
                            Some(o) => Some(o.uid()?.ok_or_else(|| missing("user", o))?),
                            None => None,
                        };
                        let gid = match group {
                            Some(g) => Some(g.gid()?.ok_or_else(|| missing("group", g))?),
                            None => None,
                        };
                        Ok((uid, gid))
                    };
                    let (uid, gid) = ids().map_err(&err)?;
                    std::os::unix::fs::chown(p, uid, gid).map_err(&err)?;
                }
                Some(listener)
            }
            None => None,
        };
        let tls = match config.listen.tls {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(named("tls", a.to_string()))?,
            ),
            None => None,
        };
        let admin = match config.admin {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(named("admin", a.to_string()))?,
            ),
            None => None,
        };
        Ok(Listeners {
            tcp,
            unix,
            tls,
            admin,
        })
    }
}

/// State every session shares.
pub(crate) struct Shared {
    /// The configuration as started: what a reload cannot change (upstream, local-only mode, …)
    /// is read here; what it can is in `live`.
    pub config: Arc<Config>,
    pub upstream: Option<Arc<Upstream>>,
    pub next_id: AtomicU64,
    /// Fires when the proxy starts draining: sessions stop reading new commands.
    pub draining: CancellationToken,
    /// What may change on reload: the tenants built from `[[tenant]]` (when there are any, every
    /// client acts as one of them), the client limits, the client TLS configuration.
    pub live: Arc<Live>,
    /// Failed AUTH attempts per peer, to slow down password guessing.
    pub auth_failures: crate::policy::FailureTracker,
    /// The in-memory engine: it answers everything when no upstream is configured (standalone
    /// mode), and in local-only mode while the upstream is down. `None` with an upstream and
    /// `local_only.enabled = false`.
    pub engine: Option<Arc<Engine>>,
    /// The upstream's health; `None` in standalone mode.
    pub health: Option<Arc<Health>>,
    /// The near cache, when `[near_cache]` is enabled.
    pub cache: Option<Arc<crate::cache::NearCache>>,
    /// What local-only mode leaves to undo: the keys written locally, and the recovery fence.
    pub outage: Arc<local_only::Outage>,
    /// What all clients' unread replies and unfinished requests may hold together
    /// (`limits.max_client_memory`).
    pub client_memory: Arc<crate::upstream::ClientMemory>,
    /// Every client session, for CLIENT LIST and CLIENT KILL.
    pub clients: session::Registry,
    /// Pub/Sub: fan-out of the upstream's messages, and delivery within respite in standalone
    /// mode and while local-only. Always present (an `Option` for the sessions' sake).
    pub pubsub: Option<Arc<crate::pubsub::Hub>>,
    /// A CLIENT PAUSE WRITE respite forwarded, while in force.
    pub(crate) pause: pause::Pause,
}

impl Shared {
    /// Who answers `spec` (with the client's `args`) instead of the upstream, or `None` to
    /// forward it (see [`local_only`]).
    pub(crate) fn answerer(
        &self,
        spec: &CommandSpec,
        args: &[bytes::Bytes],
    ) -> Option<Answerer<'_>> {
        // The common case, an upstream in service, in one atomic load (asked twice per
        // forwarded command).
        if self
            .health
            .as_deref()
            .is_some_and(|h| !h.state().is_local())
        {
            return None;
        }
        local_only::answerer(
            self.engine.as_deref(),
            self.health.as_deref(),
            &self.config.local_only,
            Some(&self.outage),
            self.pubsub.as_deref(),
            spec,
            args,
        )
    }

    /// Whether local-only mode answers instead of the upstream now (standalone mode aside): one
    /// atomic load while the upstream is in service.
    pub(crate) fn local_only_serves(&self) -> bool {
        match (&self.engine, self.health.as_deref()) {
            (Some(_), Some(h)) => local_only::serves(h, &self.config.local_only),
            _ => false,
        }
    }

    /// Wait while the recovery fence is up (the journal of an outage is being replayed, or the
    /// keys written during it deleted, upstream); at once otherwise, at the cost of one atomic
    /// load.
    pub(crate) async fn fence(&self) {
        if self.outage.fenced() {
            self.outage.wait().await
        }
    }
}

/// Run the proxy until `shutdown` completes, then drain within `config.shutdown_grace`.
/// Without its sources the configuration cannot be reloaded (see [`run_reloadable`]).
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_reloadable(listeners, config, None, shutdown).await
}

/// [`run`], reloading the configuration from `sources` on SIGHUP and on `POST /reload`: start,
/// accept until `shutdown`, drain.
pub async fn run_reloadable(
    listeners: Listeners,
    config: Config,
    sources: Option<Sources>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // INFO's uptime counts from here.
    crate::policy::info::started();
    // First, so no SIGHUP from here on ends the process (its default action).
    let hup = match sources.is_some() {
        true => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        )?),
        false => None,
    };
    let started = start(config, sources)?;
    let Listeners {
        tcp,
        unix,
        tls,
        admin,
    } = listeners;
    let acceptors = Acceptors {
        tcp: tcp.map(|l| Acceptor::new(l.into_std()?)).transpose()?,
        unix: unix.map(|l| Acceptor::new(l.into_std()?)).transpose()?,
        tls: tls.map(|l| Acceptor::new(l.into_std()?)).transpose()?,
    };
    if let Some(hup) = hup {
        tokio::spawn(reload_on_hangup(
            hup,
            started.shared.live.clone(),
            started.stop_upstream.clone(),
        ));
    }
    // The admin port outlives the drain, so /readyz can say "draining" while clients finish.
    let stop_admin = CancellationToken::new();
    let admin_task = admin.map(|l| {
        let shared = &started.shared;
        let control = admin::Control {
            loopback: l.local_addr().is_ok_and(|a| a.ip().is_loopback()),
            token_file: shared.config.admin_reload_token_file.clone(),
        };
        let state = admin::State {
            control,
            upstream: shared.upstream.clone(),
            draining: shared.draining.clone(),
            local_only: shared.config.local_only.enabled,
            before_first_contact: shared.config.local_only.serve_before_first_contact,
            engine: shared.engine.clone(),
            cache: shared.cache.clone(),
            live: shared.live.clone(),
        };
        tokio::spawn(admin::serve(l, state, stop_admin.clone()))
    });
    let sessions = accept_loop(&started.shared, acceptors, shutdown).await;
    drain(&started, sessions).await;
    stop_admin.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    if let Some(p) = &started.shared.config.listen.unix {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// What [`start`] builds from a configuration: the state every session shares, and the token
/// that stops the upstream's background tasks (pools, health, near cache, recovery, sweeps).
struct Started {
    shared: Arc<Shared>,
    stop_upstream: CancellationToken,
}

/// The client listeners, registered for readiness (see `io`).
struct Acceptors {
    tcp: Option<Acceptor<std::net::TcpListener>>,
    unix: Option<Acceptor<std::os::unix::net::UnixListener>>,
    tls: Option<Acceptor<std::net::TcpListener>>,
}

/// Build the shared state from a configuration: the live (reloadable) part, the local engine,
/// the upstream with its local-only hooks and recovery task, the near cache, Pub/Sub.
fn start(config: Config, sources: Option<Sources>) -> std::io::Result<Started> {
    let live = Arc::new(
        Live::new(Arc::new(config.clone()), sources)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
    );
    // Before anything records a metric: handles created earlier would stay bound to no recorder.
    admin::recorder();
    if let Some(files) = &config.listen.tls_files {
        crate::tls::record_server_expiry(files);
    }
    if let Some(t) = live.tenants() {
        crate::policy::metrics::register(&t);
    }
    crate::metrics::set_command_histograms(config.command_histograms);
    let stop_upstream = CancellationToken::new();
    let local_only = config.local_only.clone();
    let engine = (config.upstream.is_none() || local_only.enabled).then(|| {
        Arc::new(Engine::with_eviction(
            config.local_max_memory,
            config.local_eviction,
        ))
    });
    let outage = Arc::new(local_only::Outage::new(local_only.journal_max_bytes));
    // on_recovery = "replay", "invalidate" or "merge": the transition hands the work to a task that does
    // it upstream (the hook itself cannot wait on the upstream).
    let (recoveries, recovery_rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = config.upstream.clone().map(|u| {
        let options = health::Options {
            fail_inflight_on_down: local_only.enabled,
            on_transition: local_only::on_transition(
                engine.clone(),
                local_only.on_recovery,
                outage.clone(),
                recoveries,
                local_only.serve_before_first_contact,
            ),
            publish: true,
        };
        Upstream::start(u, options, stop_upstream.clone())
    });
    let health = upstream.as_ref().map(|u| u.health().clone());
    let tenants = live.tenants();
    let cache = near_cache(
        &config,
        upstream.as_ref(),
        tenants.as_deref(),
        &stop_upstream,
    );
    if let Some(c) = &cache {
        live.attach_cache(c.clone());
    }
    if let Some(u) = &upstream {
        tokio::spawn(local_only::recovery_task(
            u.clone(),
            recovery_rx,
            outage.clone(),
            cache.clone(),
            stop_upstream.clone(),
        ));
    }
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        outage,
        cache: cache.clone(),
        config: config.clone(),
        upstream: upstream.clone(),
        next_id: AtomicU64::new(1),
        clients: Default::default(),
        draining: CancellationToken::new(),
        live: live.clone(),
        auth_failures: crate::policy::FailureTracker::new(10_000),
        engine: engine.clone(),
        health,
        pause: Default::default(),
        pubsub: Some(match config.upstream.clone() {
            Some(u) => {
                let cluster = upstream.as_ref().and_then(|up| up.cluster().cloned());
                crate::pubsub::Hub::start(
                    u,
                    cluster,
                    config.pubsub_output_bytes,
                    stop_upstream.clone(),
                )
            }
            None => crate::pubsub::Hub::standalone(config.pubsub_output_bytes),
        }),
        client_memory: Arc::new(crate::upstream::ClientMemory::new(
            config.sessions.max_client_memory,
        )),
    });
    if let Some(engine) = engine {
        tokio::spawn(sweep_expired(engine, stop_upstream.clone()));
    }
    Ok(Started {
        shared,
        stop_upstream,
    })
}

/// The near cache, when configured with an upstream (a cluster's: tracking per primary, see
/// `cache::trackers`).
fn near_cache(
    config: &Config,
    upstream: Option<&Arc<Upstream>>,
    tenants: Option<&crate::policy::Tenants>,
    stop: &CancellationToken,
) -> Option<Arc<crate::cache::NearCache>> {
    let (c, u) = (config.near_cache.as_ref()?, upstream?);
    let stale_reads = if config.local_only.enabled {
        config.local_only.stale_reads
    } else {
        Duration::ZERO
    };
    Some(crate::cache::NearCache::start(
        c.clone(),
        Arc::new(u.config().clone()),
        Some(u.clone()),
        tenants,
        stale_reads,
        stop.clone(),
    ))
}

/// Expired keys are also removed on access; the sweep frees the ones nobody reads.
async fn sweep_expired(engine: Arc<Engine>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => engine.sweep(crate::clock::unix_ms() as u64),
            _ = stop.cancelled() => return,
        }
    }
}

/// Reload the configuration on each SIGHUP, until the upstream's tasks stop.
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    live: Arc<Live>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = live.reload().await;
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Accept clients until `shutdown`, each session in a task of the tracker returned (past
/// `listen.max_clients`, a refusal instead); the listeners close when this returns.
async fn accept_loop(
    shared: &Arc<Shared>,
    acceptors: Acceptors,
    shutdown: impl Future<Output = ()>,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(shared.config.listen.max_clients));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = accept_tcp(acceptors.tcp.as_ref()) => r,
            r = accept_unix(acceptors.unix.as_ref()) => r,
            r = accept_tls(acceptors.tls.as_ref()) => r,
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        metrics::client_accepted();
        let permit = slots.clone().try_acquire_owned().ok();
        let shared = shared.clone();
        let id = shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = info_span!("client", id, peer = %conn.peer);
        tracker.spawn(
            async move {
                match permit {
                    Some(_permit) => session::serve(conn, id, shared).await,
                    None => session::refuse(conn, "ERR max number of clients reached").await,
                }
            }
            .instrument(span),
        );
    }
    tracker
}

/// No new clients: tell every session to finish what it has in flight, wait for them within
/// `shutdown_grace`, then stop the upstream's tasks.
async fn drain(started: &Started, sessions: TaskTracker) {
    info!("shutting down: no new clients; draining");
    let shared = &started.shared;
    shared.draining.cancel();
    sessions.close();
    let grace = shared.config.shutdown_grace;
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        warn!(?grace, "grace period over with clients still open");
    }
    started.stop_upstream.cancel();
}

/// A freshly accepted client, TCP or unix, as a non-blocking std socket not yet registered.
pub(crate) struct Accepted {
    pub stream: session::ClientStream,
    pub peer: String,
    pub local_addr: String,
}

async fn accept_tcp(l: Option<&Acceptor<std::net::TcpListener>>) -> std::io::Result<Accepted> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let (s, peer) = l.accept(|l| l.accept()).await?;
    s.set_nonblocking(true)?;
    let _ = s.set_nodelay(true);
    io::bound_send_buffer(&s);
    let local_addr = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    Ok(Accepted {
        stream: session::ClientStream::Tcp(s),
        peer: peer.to_string(),
        local_addr,
    })
}

async fn accept_tls(l: Option<&Acceptor<std::net::TcpListener>>) -> std::io::Result<Accepted> {
    let mut a = accept_tcp(l).await?;
    if let session::ClientStream::Tcp(s) = a.stream {
        a.stream = session::ClientStream::Tls(s);
    }
    Ok(a)
}

async fn accept_unix(
    l: Option<&Acceptor<std::os::unix::net::UnixListener>>,
) -> std::io::Result<Accepted> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let (s, _) = l.accept(|l| l.accept()).await?;
    s.set_nonblocking(true)?;
    let path = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default();
    Ok(Accepted {
        stream: session::ClientStream::Unix(s),
        peer: format!("{path}:0"),
        local_addr: format!("{path}:0"),
    })
}

//! Accepting clients and running their sessions; [`run`] is the proxy's entry point.
//!
//! `run` takes listeners that are already bound (tests bind `127.0.0.1:0`) and a shutdown future.
//! It starts the upstream pools and the admin endpoint, accepts TCP and unix-socket clients up to
//! `listen.max_clients`, and on shutdown stops accepting, lets every session finish the commands it
//! has in flight, and returns within the grace period. It never touches the upstream directly.
//!
//! It also decides who answers instead of the upstream (`Shared::local`): the local engine in
//! standalone mode, and in local-only mode while the upstream's health says it is down.
mod fifo;
mod io;
mod local;
mod session;

use crate::command::{CommandSpec, Flags};
use crate::config::{Config, LocalWrites, OnRecovery};
use crate::local::Engine;
use crate::upstream::Upstream;
use crate::upstream::health::{self, Health};
use crate::{admin, metrics};
use bytes::Bytes;
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
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Bind what the configuration names. A stale unix socket file left by a previous run is replaced.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let tcp = match config.listen.tcp {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let unix = match &config.listen.unix {
            Some(p) => {
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    std::fs::remove_file(p)?;
                }
                Some(UnixListener::bind(p)?)
            }
            None => None,
        };
        let admin = match config.admin {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        Ok(Listeners { tcp, unix, admin })
    }
}

/// State every session shares.
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub upstream: Option<Arc<Upstream>>,
    pub next_id: AtomicU64,
    /// Fires when the proxy starts draining: sessions stop reading new commands.
    pub draining: CancellationToken,
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
}

/// Who answers a command instead of the upstream.
pub(crate) enum Local<'a> {
    /// The local engine.
    Engine(&'a Engine),
    /// Nobody: a write in local-only mode under `local_only.writes = "refuse"`.
    Refused,
}

/// What a refused write gets. TRYAGAIN: the same command may succeed once the upstream is back.
pub(crate) const LOCAL_ONLY_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes (local_only.writes = \"refuse\")";

impl Local<'_> {
    /// The reply: `run` on the engine, or the refusal.
    pub fn run(self, run: impl FnOnce(&Engine) -> Bytes) -> Bytes {
        match self {
            Local::Engine(engine) => run(engine),
            Local::Refused => {
                metrics::error(metrics::ErrorKind::LocalOnly);
                let mut out = bytes::BytesMut::new();
                crate::protocol::encode::error(&mut out, LOCAL_ONLY_REFUSED);
                out.freeze()
            }
        }
    }
}

impl Shared {
    /// Who answers `spec` instead of the upstream, or `None` to forward it. Hot path: with an
    /// upstream and local-only mode enabled this is one relaxed atomic load.
    pub(crate) fn local(&self, spec: &CommandSpec) -> Option<Local<'_>> {
        let engine = self.engine.as_deref()?;
        let Some(health) = &self.health else {
            return Some(Local::Engine(engine)); // standalone
        };
        if !health.state().is_local() || health.rejected() {
            return None;
        }
        // Reads the near cache held when the upstream went away may be answered from it (see
        // `session::Reader::stale_read`), before the engine.
        if spec.flags.contains(Flags::WRITE) && self.config.local_only.writes == LocalWrites::Refuse
        {
            return Some(Local::Refused);
        }
        Some(Local::Engine(engine))
    }
}

/// Run the proxy until `shutdown` completes, then drain within `config.shutdown_grace`.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Before anything records a metric: handles created earlier would stay bound to no recorder.
    admin::recorder();
    let stop_upstream = CancellationToken::new();
    let local_only = config.local_only;
    let engine = (config.upstream.is_none() || local_only.enabled)
        .then(|| Arc::new(Engine::new(config.local_max_memory)));
    // on_recovery = "merge": the transition hands the local data to a task that writes it
    // upstream (the hook itself cannot wait on the upstream).
    let (merges, merge_rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = config.upstream.clone().map(|u| {
        let options = health::Options {
            fail_inflight_on_down: local_only.enabled,
            on_transition: on_transition(engine.clone(), local_only.on_recovery, merges),
        };
        Upstream::start(u, options, stop_upstream.clone())
    });
    if let Some(u) = &upstream {
        tokio::spawn(merge_task(u.clone(), merge_rx, stop_upstream.clone()));
    }
    let health = upstream.as_ref().map(|u| u.health().clone());
    let cache = match (&config.near_cache, &upstream) {
        (Some(c), Some(u)) => Some(crate::cache::NearCache::start(
            c.clone(),
            Arc::new(u.config().clone()),
            config.tenants.as_deref(),
            if config.local_only.enabled {
                config.local_only.stale_reads
            } else {
                Duration::ZERO
            },
            stop_upstream.clone(),
        )),
        _ => None,
    };
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        cache: cache.clone(),
        config: config.clone(),
        upstream: upstream.clone(),
        next_id: AtomicU64::new(1),
        draining: CancellationToken::new(),
        auth_failures: crate::policy::FailureTracker::new(10_000),
        engine: engine.clone(),
        health,
    });
    if let Some(engine) = engine {
        // Expired keys are also removed on access; the sweep frees the ones nobody reads.
        let stop = stop_upstream.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => engine.sweep(session::unix_ms() as u64),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let Listeners { tcp, unix, admin } = listeners;
    let tcp = match tcp {
        Some(l) => Some(Acceptor::new(l.into_std()?)?),
        None => None,
    };
    let unix = match unix {
        Some(l) => Some(Acceptor::new(l.into_std()?)?),
        None => None,
    };
    // The admin port outlives the drain, so /readyz can say "draining" while clients finish.
    let stop_admin = CancellationToken::new();
    let admin_task = admin.map(|l| {
        let state = admin::State {
            upstream: upstream.clone(),
            draining: shared.draining.clone(),
            local_only: local_only.enabled,
            engine: shared.engine.clone(),
            cache: cache.clone(),
        };
        tokio::spawn(admin::serve(l, state, stop_admin.clone()))
    });

    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.listen.max_clients));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = accept_tcp(tcp.as_ref()) => r,
            r = accept_unix(unix.as_ref()) => r,
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

    info!("shutting down: no new clients; draining");
    drop((tcp, unix));
    shared.draining.cancel();
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(grace = ?config.shutdown_grace, "grace period over with clients still open");
    }
    stop_upstream.cancel();
    stop_admin.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    if let Some(p) = &config.listen.unix {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// What the engine goes through on health transitions (run before the new state is visible).
///
/// On recovery (`recovering` → `healthy`/`degraded`) its data is dropped: it missed every write and
/// invalidation made upstream meanwhile. It is also dropped on entering `down` from a forwarding
/// state: it should be empty then, but a session that read `recovering` just before recovery
/// completed may have written to it a moment after it was flushed.
fn on_transition(
    engine: Option<Arc<Engine>>,
    on_recovery: OnRecovery,
    merges: tokio::sync::mpsc::UnboundedSender<Vec<crate::local::merge::Call>>,
) -> Box<dyn Fn(health::State, health::State) + Send + Sync> {
    Box::new(move |from, to| {
        let Some(engine) = &engine else { return };
        if from.is_local() == to.is_local() {
            return;
        }
        match on_recovery {
            OnRecovery::Merge if !to.is_local() => {
                // Taken out before forwarding resumes; written upstream just after.
                let calls = engine.take_for_merge(session::unix_ms() as u64);
                info!(%from, %to, keys = calls.len(), "local-only mode over: merging local keys the upstream does not have");
                let _ = merges.send(calls);
            }
            OnRecovery::Drop | OnRecovery::Merge => {
                let keys = engine.len();
                engine.flush();
                if to.is_local() {
                    info!(%from, %to, "local-only mode: the local engine serves until the upstream is back");
                } else {
                    info!(%from, %to, dropped_keys = keys, "local-only mode over: local data dropped");
                }
            }
        }
    })
}

/// Write what local-only mode held into the upstream, creating only keys it does not have.
async fn merge_task(
    upstream: Arc<Upstream>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<crate::local::merge::Call>>,
    stop: CancellationToken,
) {
    use crate::local::merge;
    loop {
        let calls = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let conn = upstream.conn(crate::protocol::Protocol::Resp2, 0);
        let (mut created, mut existed, mut failed) = (0usize, 0usize, 0usize);
        for batch in calls.chunks(128) {
            let mut out = bytes::BytesMut::new();
            for c in batch {
                out.extend_from_slice(&c.first);
            }
            let replies = match conn.send(out.freeze(), batch.len()).await.await {
                Ok(Ok(r)) => r,
                Ok(Err(partial)) => {
                    warn!(error = %partial.error, "merge into the upstream cut short");
                    failed += batch.len();
                    continue;
                }
                Err(_) => return,
            };
            let mut scanner = crate::protocol::ReplyScanner::new();
            let mut at = 0;
            for c in batch {
                let len = match scanner.scan(&replies[at..]) {
                    Ok(Some(s)) => s.len,
                    _ => break,
                };
                let reply = &replies[at..at + len];
                at += len;
                if merge::wrote(reply) {
                    created += 1;
                    for more in &c.rest {
                        let _ = conn.send(more.clone(), 1).await.await;
                    }
                } else if reply.first() == Some(&b'-') {
                    failed += 1;
                    warn!(key = %String::from_utf8_lossy(&c.key), reply = %String::from_utf8_lossy(reply).trim_end(), "could not merge a local key into the upstream");
                } else {
                    existed += 1;
                }
            }
        }
        info!(
            created,
            existed,
            failed,
            "local keys merged into the upstream (existing keys left as they were)"
        );
    }
}

/// A freshly accepted client, TCP or unix, as a non-blocking std socket not yet registered.
pub(crate) struct Accepted {
    pub stream: session::ClientStream,
    pub peer: String,
    pub local: String,
}

async fn accept_tcp(l: Option<&Acceptor<std::net::TcpListener>>) -> std::io::Result<Accepted> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let (s, peer) = l.accept(|l| l.accept()).await?;
    s.set_nonblocking(true)?;
    let _ = s.set_nodelay(true);
    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    Ok(Accepted {
        stream: session::ClientStream::Tcp(s),
        peer: peer.to_string(),
        local,
    })
}

async fn accept_unix(
    l: Option<&Acceptor<std::os::unix::net::UnixListener>>,
) -> std::io::Result<Accepted> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let (s, _) = l.accept(|l| l.accept()).await?;
    s.set_nonblocking(true)?;
    let local = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default();
    Ok(Accepted {
        stream: session::ClientStream::Unix(s),
        peer: format!("{local}:0"),
        local: format!("{local}:0"),
    })
}

//! The admin HTTP port: `/metrics` for Prometheus, `/healthz` (the process lives), `/readyz`
//! (traffic should come: not draining, and the upstream reachable or local-only mode serving),
//! `/stats` as JSON, and `POST /reload` (re-read the configuration, see [`crate::reload`]).
//!
//! # Invariants
//! The read-only endpoints are open to whoever reaches the port (Prometheus, the kubelet);
//! `POST /reload`, the one control endpoint, is served only on a loopback listener or with the
//! token of `admin.reload_token_file` (compared in constant time), so exposing the port for
//! scraping never exposes control.
//!
//! It reads state; it never changes how the proxy serves clients. Gauges of state that other parts
//! keep (local-only mode, the engine's size, the probe's round trip) are read at scrape time here
//! rather than pushed from the data path.
mod process;

use crate::engine::Engine;
use crate::upstream::Upstream;
use crate::upstream::health::State as Health;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the endpoints read.
#[derive(Clone)]
pub struct State {
    pub upstream: Option<Arc<Upstream>>,
    pub draining: CancellationToken,
    /// `local_only.enabled`: whether a down upstream still leaves respite serving.
    pub local_only: bool,
    /// `local_only.serve_before_first_contact`: whether an upstream never reached is served
    /// locally too.
    pub before_first_contact: bool,
    pub engine: Option<Arc<Engine>>,
    pub cache: Option<Arc<crate::cache::NearCache>>,
    pub live: Arc<crate::reload::Live>,
    /// Who may `POST /reload` on this listener.
    pub control: Control,
}

/// The gate in front of `POST /reload`.
#[derive(Clone, Debug)]
pub struct Control {
    /// The listener is bound to a loopback address: only this host (or pod) reaches it.
    pub loopback: bool,
    /// `admin.reload_token_file`: when set, the token is required on any listener.
    pub token_file: Option<std::path::PathBuf>,
}

impl Control {
    /// `Ok(())` when the request may reload; otherwise the status and why.
    fn admit(&self, headers: &axum::http::HeaderMap) -> Result<(), (StatusCode, String)> {
        let Some(path) = &self.token_file else {
            return if self.loopback {
                Ok(())
            } else {
                Err((
                    StatusCode::FORBIDDEN,
                    "POST /reload is served only on a loopback admin.listen, or with \
                     admin.reload_token_file; reload with SIGHUP instead\n"
                        .into(),
                ))
            };
        };
        // Read at each request, so a rotated token applies at once; an unreadable file admits
        // nobody.
        let token = std::fs::read_to_string(path).unwrap_or_default();
        let token = token.trim();
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        if !token.is_empty() && bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                "POST /reload needs `Authorization: Bearer <token>` with the token in \
                 admin.reload_token_file\n"
                    .into(),
            ))
        }
    }
}

/// Install the Prometheus recorder once per process (tests run many proxies in one process).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 65536.0,
            ])
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                crate::metrics::LATENCY_BUCKETS,
            )
            .expect("static buckets are valid")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        // Each part describes its own metrics; metrics.rs names only the proxy-wide ones.
        crate::metrics::describe();
        process::mark_start();
        crate::cache::describe();
        crate::policy::metrics::describe();
        handle
    })
}

pub async fn serve(listener: TcpListener, state: State, stop: CancellationToken) {
    recorder();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/reload", post(reload))
        .with_state(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}

/// The exposition text: the registry, after the scrape-time gauges are set, then the process's.
async fn metrics(Extract(state): Extract<State>) -> impl IntoResponse {
    use crate::metrics as m;
    m::publish();
    if let Some(u) = &state.upstream {
        let h = u.health().snapshot();
        let local = serving_locally(&state, u);
        metrics::gauge!(m::LOCAL_ONLY).set(if local { 1.0 } else { 0.0 });
        if let Some(c) = u.cluster() {
            c.publish_metrics(local);
        }
        // NaN while the latest probe failed (or none answered yet): a comparison with it is
        // false, so a latency alert neither fires nor holds on a value from before an outage.
        metrics::gauge!(m::UPSTREAM_PROBE_RTT_SECONDS)
            .set(h.last_probe_rtt.map_or(f64::NAN, |rtt| rtt.as_secs_f64()));
    }
    if let Some(e) = &state.engine {
        metrics::gauge!(m::LOCAL_ENGINE_KEYS).set(e.len() as f64);
        metrics::gauge!(m::LOCAL_ENGINE_BYTES).set(e.used_memory() as f64);
    }
    let mut text = recorder().render();
    process::render(&mut text);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `POST /reload`: 200 with what waits for a restart, or 400 with why nothing changed.
async fn reload(
    Extract(state): Extract<State>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    if let Err(refused) = state.control.admit(&headers) {
        crate::metrics::reload_refused();
        return refused;
    }
    match state.live.reload().await {
        Ok(a) if a.needs_restart.is_empty() => (StatusCode::OK, "reloaded\n".to_string()),
        Ok(a) => (
            StatusCode::OK,
            format!(
                "reloaded; changes to these sections need a restart and were not applied: {}\n",
                a.needs_restart.join(", ")
            ),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("reload failed, the running configuration stays: {e}\n"),
        ),
    }
}

async fn readyz(Extract(state): Extract<State>) -> impl IntoResponse {
    // Never answered since start: not ready, and why. (A refusal of respite's settings says so
    // itself below, more precisely.)
    if let Some(u) = &state.upstream
        && !state.draining.is_cancelled()
        && !u.health().contacted()
        && !u.health().rejected()
        && !(state.local_only && state.before_first_contact)
    {
        let why = u
            .health()
            .snapshot()
            .last_error
            .unwrap_or_else(|| "no answer yet".into());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "upstream {} not reached since start: {why}\n",
                u.config().url.addr
            ),
        );
    }
    let (status, text) = readiness(&state);
    let text = match &state.upstream {
        // A TLS failure will not pass by itself: say which (the certificate's verification).
        Some(u) if status != StatusCode::OK && u.health().failing_tls() => {
            match u.health().snapshot().last_error {
                Some(why) => format!("{}: {why}\n", text.trim_end()),
                None => text.to_string(),
            }
        }
        _ => text.to_string(),
    };
    (status, text)
}

/// Whether local-only mode serves now (as [`crate::local_only::answerer`] decides).
fn serving_locally(state: &State, u: &Upstream) -> bool {
    state.local_only && crate::local_only::serves_given(u.health(), state.before_first_contact)
}

fn readiness(state: &State) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let Some(u) = &state.upstream else {
        return (StatusCode::OK, "ready\n");
    };
    // A misconfiguration is not served locally (see `Health::rejected`): not ready, and why.
    if u.health().rejected() && u.health().failing_tls() {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream TLS fails\n");
    }
    if u.health().rejected() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream refuses respite's configuration (credentials or database; see /stats)\n",
        );
    }
    // Local-only mode serves every client: a sidecar that said "not ready" now would take its
    // application out of service for want of a cache, the very outage local-only mode absorbs.
    match u.health().state() {
        Health::Down | Health::Recovering if state.local_only => {
            (StatusCode::OK, "ready: local-only mode (upstream down)\n")
        }
        Health::Down | Health::Recovering => (StatusCode::SERVICE_UNAVAILABLE, "upstream down\n"),
        _ if u.live_connections() == 0 => {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
        }
        Health::Degraded => (StatusCode::OK, "ready: upstream degraded\n"),
        Health::Healthy => (StatusCode::OK, "ready\n"),
    }
}

async fn stats(Extract(state): Extract<State>) -> impl IntoResponse {
    let upstream = state.upstream.as_ref().map(|u| {
        let h = u.health().snapshot();
        serde_json::json!({
            "address": u.config().url.addr.to_string(),
            "live_connections": u.live_connections(),
            "server": u.server_info().map(|i| serde_json::json!({"server": i.server, "version": i.version})),
            "health": {
                "state": h.state.as_str(),
                "since_ms": h.since.as_millis() as u64,
                "transitions": h.transitions,
                "last_error": h.last_error,
                "last_probe_rtt_us": h.last_probe_rtt.map(|d| d.as_micros() as u64),
                "refuses_configuration": u.health().rejected(),
            },
            "local_only": serving_locally(&state, u),
        })
    });
    let local = state
        .engine
        .as_ref()
        .map(|e| serde_json::json!({"keys": e.len(), "used_memory_bytes": e.used_memory()}));
    axum::Json(serde_json::json!({
        "draining": state.draining.is_cancelled(),
        "upstream": upstream,
        "local_engine": local,
        "near_cache": state.cache.as_ref().map(|c| c.stats()),
    }))
}

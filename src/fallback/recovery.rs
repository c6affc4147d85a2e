//! The end of an outage: the engine's data dropped, or merged into the upstream, per
//! `local_only.on_recovery`.
use crate::config::OnRecovery;
use crate::engine::Engine;
use crate::upstream::Upstream;
use crate::upstream::health;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the engine goes through on health transitions (run before the new state is visible).
///
/// On recovery (`recovering` → `healthy`/`degraded`) its data is dropped: it missed every write and
/// invalidation made upstream meanwhile. It is also dropped on entering `down` from a forwarding
/// state: it should be empty then, but a session that read `recovering` just before recovery
/// completed may have written to it a moment after it was flushed.
pub(crate) fn on_transition(
    engine: Option<Arc<Engine>>,
    on_recovery: OnRecovery,
    merges: tokio::sync::mpsc::UnboundedSender<Vec<crate::engine::merge::Call>>,
) -> Box<dyn Fn(health::State, health::State) + Send + Sync> {
    Box::new(move |from, to| {
        let Some(engine) = &engine else { return };
        if from.is_local() == to.is_local() {
            return;
        }
        match on_recovery {
            OnRecovery::Merge if !to.is_local() => {
                // Taken out before forwarding resumes; written upstream just after.
                let calls = engine.take_for_merge(crate::clock::unix_ms() as u64);
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
pub(crate) async fn merge_task(
    upstream: Arc<Upstream>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<crate::engine::merge::Call>>,
    stop: CancellationToken,
) {
    use crate::engine::merge;
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

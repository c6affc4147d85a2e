//! The end of an outage, per `local_only.on_recovery`: the keys written locally deleted upstream
//! (`invalidate`, behind the outage's fence), or the engine's data merged into the upstream
//! (`merge`) or dropped (`drop`).
use super::Outage;
use crate::config::OnRecovery;
use crate::engine::Engine;
use crate::upstream::Upstream;
use crate::upstream::health;
use bytes::Bytes;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Work for [`recovery_task`], handed over by the transition hook (which cannot wait on the
/// upstream).
pub(crate) enum Recovery {
    /// `merge`: create the keys the upstream lacks; then those written to the engine after
    /// they were taken.
    Merge(Vec<crate::engine::merge::Call>, Arc<Engine>),
    /// `invalidate`: delete these keys upstream, then lift the outage's fence.
    Invalidate(Vec<Bytes>),
}

/// What the engine goes through on health transitions (run before the new state is visible).
///
/// On recovery (`recovering` → `healthy`/`degraded`) its data is dropped: it missed every write and
/// invalidation made upstream meanwhile. With `invalidate`, the keys written locally are taken
/// out at the same moment and the fence is raised, so nothing is forwarded until they are deleted
/// upstream. The data is also dropped on entering `down` from a forwarding state: it should be
/// empty then, but a session that read `recovering` just before recovery completed may have
/// written to it a moment after it was flushed (its keys stay recorded for the next recovery).
pub(crate) fn on_transition(
    engine: Option<Arc<Engine>>,
    on_recovery: OnRecovery,
    outage: Arc<Outage>,
    work: tokio::sync::mpsc::UnboundedSender<Recovery>,
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
                let _ = work.send(Recovery::Merge(calls, engine.clone()));
            }
            OnRecovery::Invalidate if !to.is_local() => {
                let keys = outage.take();
                engine.flush();
                if !keys.is_empty() {
                    // Raised before the forwarding state is visible: no command goes upstream
                    // until the deletes are done.
                    outage.raise();
                    info!(%from, %to, keys = keys.len(), "local-only mode over: deleting upstream the keys written locally before forwarding resumes");
                    if let Err(e) = work.send(Recovery::Invalidate(keys)) {
                        // No task to do it (shutting down): never hold forwarding for nothing.
                        if let Recovery::Invalidate(keys) = e.0 {
                            outage.put_back(keys);
                        }
                        outage.lift();
                    }
                } else {
                    info!(%from, %to, "local-only mode over: nothing was written locally");
                }
            }
            OnRecovery::Drop | OnRecovery::Merge | OnRecovery::Invalidate => {
                let keys = engine.len();
                engine.flush();
                if to.is_local() {
                    info!(%from, %to, "local-only mode: the local engine serves until the upstream is back");
                } else {
                    info!(%from, %to, dropped_keys = keys, "local-only mode over: local data dropped (writes acknowledged locally are lost)");
                }
            }
        }
    })
}

/// Carry out recoveries: merges, and invalidations (which lift the outage's fence when done).
pub(crate) async fn recovery_task(
    upstream: Arc<Upstream>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Recovery>,
    outage: Arc<Outage>,
    cache: Option<Arc<crate::cache::NearCache>>,
    stop: CancellationToken,
) {
    loop {
        let work = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = stop.cancelled() => {
                outage.lift();
                return;
            }
        };
        match work {
            Recovery::Merge(calls, engine) => {
                merge(&upstream, calls).await;
                // Writes acknowledged locally after the data was taken: the hook runs before the
                // forwarding state is visible, so sessions kept answering locally while it took
                // the data and built the calls (measured under load: about 50 writes per client
                // in a debug build), and one that read the state just before the switch may
                // write a moment after. By now forwarding is visible: what is left is all there is.
                let late = engine.take_for_merge(crate::clock::unix_ms() as u64);
                if !late.is_empty() {
                    info!(
                        keys = late.len(),
                        "merging keys written locally during the switch"
                    );
                    merge(&upstream, late).await;
                }
            }
            Recovery::Invalidate(keys) => {
                let mut deleted = invalidate(&upstream, &outage, keys).await;
                // Writes that raced the switch (a session that read `recovering` a moment before
                // it ended) were recorded after the keys were taken: delete them too.
                let late = outage.take();
                if !late.is_empty() {
                    deleted += invalidate(&upstream, &outage, late).await;
                }
                if let Some(cache) = &cache {
                    cache.flush_sent_through();
                }
                outage.lift();
                info!(
                    deleted,
                    "keys written during the outage deleted upstream; forwarding resumes"
                );
            }
        }
    }
}

/// `DEL` the keys upstream, 512 a command. Keys of a batch whose outcome is unknown (the upstream
/// failed again) are put back for the next recovery. Returns how many the upstream deleted.
async fn invalidate(upstream: &Upstream, outage: &Outage, keys: Vec<Bytes>) -> u64 {
    let conn = upstream.conn(crate::protocol::Protocol::Resp2, 0);
    let mut deleted = 0;
    for batch in keys.chunks(512) {
        let mut args = Vec::with_capacity(batch.len() + 1);
        args.push(Bytes::from_static(b"DEL"));
        args.extend(batch.iter().cloned());
        let mut out = bytes::BytesMut::new();
        crate::protocol::encode::command(&mut out, &args);
        match conn.send(out.freeze(), 1).await.await {
            Ok(Ok(reply)) if reply.first() == Some(&b':') => {
                deleted += std::str::from_utf8(&reply[1..reply.len().saturating_sub(2)])
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            Ok(Ok(reply)) => {
                warn!(reply = %String::from_utf8_lossy(&reply).trim_end(), keys = batch.len(), "the upstream refused to delete keys written during the outage: their older copies may be read");
            }
            Ok(Err(partial)) => {
                warn!(error = %partial.error, keys = batch.len(), "deleting keys written during the outage failed; retried at the next recovery");
                outage.put_back(batch.iter().cloned());
            }
            Err(_) => {
                outage.put_back(batch.iter().cloned());
                return deleted;
            }
        }
    }
    deleted
}

/// Write what local-only mode held into the upstream, creating only keys it does not have.
async fn merge(upstream: &Upstream, calls: Vec<crate::engine::merge::Call>) {
    use crate::engine::merge;
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
        existed, failed, "local keys merged into the upstream (existing keys left as they were)"
    );
}

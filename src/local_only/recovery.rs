//! The end of an outage, per `local_only.on_recovery`: the journal of writes acknowledged locally
//! replayed upstream (`replay`, behind the outage's fence), the keys written locally deleted
//! upstream (`invalidate`, behind the fence too), or the engine's data merged into the upstream
//! (`merge`) or dropped (`drop`).
use super::Outage;
use super::journal::{self, Entry, Journal};
use crate::config::OnRecovery;
use crate::engine::Engine;
use crate::metrics;
use crate::upstream::Upstream;
use crate::upstream::health;
use bytes::Bytes;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Work for [`recovery_task`], handed over by the transition hook (which cannot wait on the
/// upstream).
pub(crate) enum Recovery {
    /// `merge`: create the keys the upstream lacks; then those written to the engine after
    /// they were taken.
    Merge(Vec<crate::engine::recovery_merge::Call>, Arc<Engine>),
    /// `invalidate`: delete these keys upstream, then lift the outage's fence.
    Invalidate(Vec<Bytes>),
    /// `replay`: apply the outage's journal upstream, then lift the fence.
    Replay,
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
    serve_before_first_contact: bool,
) -> Box<dyn Fn(health::State, health::State, health::Why) + Send + Sync> {
    Box::new(move |from, to, why| {
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
                let writes = outage.take_acknowledged();
                metrics::recovery_discarded(writes);
                if writes > 0 {
                    warn!(%from, %to, writes, "local-only mode over: the writes acknowledged locally are discarded (their keys deleted upstream; local_only.on_recovery = \"invalidate\")");
                }
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
            OnRecovery::Replay if !to.is_local() => {
                engine.flush();
                outage.take_acknowledged();
                let (writes, bytes) = outage.journal.size();
                if writes == 0 {
                    info!(%from, %to, "local-only mode over: nothing was written locally");
                    return;
                }
                // Raised before the forwarding state is visible: no command goes upstream until
                // the journal is replayed.
                outage.raise();
                info!(%from, %to, writes, bytes, "local-only mode over: replaying the writes acknowledged locally before forwarding resumes");
                if work.send(Recovery::Replay).is_err() {
                    // No task to do it (shutting down): never hold forwarding for nothing.
                    outage.lift();
                }
            }
            OnRecovery::Drop | OnRecovery::Merge | OnRecovery::Invalidate | OnRecovery::Replay => {
                let keys = engine.len();
                engine.flush();
                if to.is_local() {
                    // What `super::answerer` will decide, said once: a misconfiguration or an
                    // upstream never reached is not served locally, whatever the engine could do.
                    if why.rejected {
                        warn!(%from, %to, "local-only mode not entered: the upstream refuses respite's configuration (credentials or database); commands fail with its refusal until it accepts it");
                    } else if !why.contacted && !serve_before_first_contact {
                        warn!(%from, %to, "local-only mode not entered: the upstream has not answered since start (local_only.serve_before_first_contact = false); commands fail naming the cause");
                    } else {
                        info!(%from, %to, "local-only mode: the local engine serves until the upstream is back");
                    }
                } else {
                    let writes = outage.take_acknowledged();
                    metrics::recovery_discarded(writes);
                    if writes > 0 {
                        warn!(%from, %to, dropped_keys = keys, writes, "local-only mode over: local data dropped; the writes acknowledged locally are lost (local_only.on_recovery = \"drop\")");
                    } else {
                        info!(%from, %to, "local-only mode over: nothing was written locally");
                    }
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
            Recovery::Replay => {
                let started = Instant::now();
                let mut done = Replayed::default();
                // Writes that raced the switch (a session that read `recovering` a moment before
                // it ended) were journaled after the first take: later passes replay them, until
                // nothing is left or the upstream fails again.
                for _ in 0..8 {
                    let entries = outage.journal.take();
                    if entries.is_empty()
                        || !replay(&upstream, &outage.journal, entries, &mut done).await
                    {
                        break;
                    }
                }
                if let Some(cache) = &cache {
                    cache.flush_sent_through();
                }
                outage.lift();
                metrics::recovery_replayed(done.replayed, done.conflicts, done.unknown);
                let (left, _) = outage.journal.size();
                let held = started.elapsed();
                if done.unknown > 0 || left > 0 {
                    warn!(
                        replayed = done.replayed,
                        conflicts = done.conflicts,
                        unknown = done.unknown,
                        left,
                        ?held,
                        "replay cut short: the upstream failed again; writes in flight then are not resent (their fate is unknown), the rest are replayed at the next recovery"
                    );
                } else {
                    info!(
                        replayed = done.replayed,
                        conflicts = done.conflicts,
                        ?held,
                        "writes acknowledged during the outage replayed upstream; forwarding resumes"
                    );
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

/// What a replay did.
#[derive(Default)]
struct Replayed {
    replayed: u64,
    conflicts: u64,
    unknown: u64,
}

/// Commands per replayed batch, and bytes: one write and one reply read per batch, and at most
/// one batch whose fate is unknown when the upstream fails mid-replay.
const BATCH: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Send `entries` upstream in order, on one connection, in batches. Returns false when the
/// upstream failed first: entries not sent go back to the front of the journal; those in flight
/// (sent, unanswered) are never resent, since a write may have run (an INCR twice is worse than
/// once lost): they are counted as of unknown fate.
async fn replay(
    upstream: &Upstream,
    journal: &Journal,
    entries: Vec<Entry>,
    done: &mut Replayed,
) -> bool {
    use crate::upstream::NoReply;
    let conn = upstream.conn(crate::protocol::Protocol::Resp2, 0);
    let mut at = 0;
    while at < entries.len() {
        let mut end = at;
        let mut out = bytes::BytesMut::new();
        while end < entries.len() && end - at < BATCH && out.len() < BATCH_BYTES {
            out.extend_from_slice(&entries[end].command);
            end += 1;
        }
        let batch = &entries[at..end];
        let (replies, answered, failure) = match conn.send(out.freeze(), batch.len()).await.await {
            Ok(Ok(r)) => (r, batch.len(), None),
            Ok(Err(p)) => (p.replies, p.count, Some(p.error)),
            // The pool is shutting down: nothing of this batch was answered.
            Err(_) => {
                journal.put_front(entries[at..].to_vec());
                return false;
            }
        };
        compare(&batch[..answered], &replies, done);
        let Some(error) = failure else {
            at = end;
            continue;
        };
        let unsent = match error {
            NoReply::Unavailable(_) | NoReply::NotSent(_) => at + answered,
            NoReply::Lost(_) | NoReply::Overflow { .. } => {
                let unknown = end - (at + answered);
                done.unknown += unknown as u64;
                warn!(%error, unknown, "the upstream failed with replayed writes in flight: they are not resent (each may or may not have run)");
                end
            }
        };
        journal.put_front(entries[unsent..].to_vec());
        return false;
    }
    true
}

/// Count the replies of `batch` (all present in `replies`) and report those whose kind differs
/// from the local reply: a conflict (the upstream's data made the write fail, or answer
/// differently).
fn compare(batch: &[Entry], replies: &[u8], done: &mut Replayed) {
    let mut scanner = crate::protocol::ReplyScanner::new();
    let mut at = 0;
    for e in batch {
        let len = match scanner.scan(&replies[at..]) {
            Ok(Some(s)) => s.len,
            _ => break,
        };
        let reply = &replies[at..at + len];
        at += len;
        done.replayed += 1;
        if journal::kind(reply) != e.local {
            done.conflicts += 1;
            // Bounded: a recovery of a million conflicting writes is not a million log lines.
            if done.conflicts <= 100 {
                warn!(command = %journal::first_key(&e.command), reply = %String::from_utf8_lossy(reply).trim_end(), "replay conflict: the upstream answered a write acknowledged in local-only mode differently");
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
async fn merge(upstream: &Upstream, calls: Vec<crate::engine::recovery_merge::Call>) {
    use crate::engine::recovery_merge;
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
            if recovery_merge::wrote(reply) {
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

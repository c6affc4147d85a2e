//! The health probe: PINGs on a connection of its own, so the upstream's health is judged even
//! when no client sends anything, and a silent upstream (a frozen process, a partition) is told
//! from a busy one by a deadline of its own and what the pool saw meanwhile ([`super::activity`]:
//! replies arriving, a known-slow command ahead; and `-BUSY` answers to the probe itself). It only
//! reports to [`Health`]; the state machine decides.
//!
//! For a cluster the probe speaks for the whole cluster: when the node it probes fails, it tries
//! the next node known (the topology's primaries, then the seeds) at once, and reports a failure
//! only once every one of them failed in a row. So local-only mode takes over only when no node
//! of the cluster answers; one primary down fails only its own slots (see docs/cluster.md).
use super::activity::{self, Verdict};
use super::cluster::Cluster;
use super::error::{Deadline, Kind, ProtocolError, Refusal, UpstreamError};
use super::handshake::{self, BoxRead, BoxWrite, ServerInfo};
use super::health::{Cause, Event, Health, State};
use crate::config::{HealthConfig, UpstreamAddr, UpstreamConfig};
use crate::protocol::Protocol;
use std::sync::{Arc, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The probe: PING on a connection of its own every `health.probe_interval_ms` (sooner when a
/// pool connection fails), until `shutdown`.
///
/// The deadline runs from the latest answer, not from the send: the upstream is declared silent
/// once it has answered nothing for `health.probe_timeout_ms`, so a silent failure is detected
/// within that time of its start, whatever the interval. (At least half the timeout is always
/// given, so a probe task the scheduler ran late does not declare a live upstream dead.)
pub(super) async fn run(
    health: Arc<Health>,
    config: Arc<UpstreamConfig>,
    cluster: Option<Arc<Cluster>>,
    info: Arc<RwLock<Option<ServerInfo>>>,
    shutdown: CancellationToken,
) {
    let HealthConfig {
        probe_interval,
        probe_timeout,
        busy_grace,
        ..
    } = config.health;
    // The probe's own deadline must decide that a silent upstream is silent: a connect or
    // handshake that hangs (a frozen process still completes TCP handshakes from its backlog) is
    // given longer than the deadline, so it ends as "no answer", never as a connect error that
    // would read as a reachable-but-failing upstream.
    let mut config = {
        let mut c = (*config).clone();
        // (The deadline may stretch to four probe deadlines with work ahead: see
        // `activity::allowance`.)
        c.connect_timeout = c.connect_timeout.max(probe_timeout * 5);
        Arc::new(c)
    };
    let mut addr = handshake::addr(&config);
    // Cluster nodes that failed in a row since the last answer.
    let mut missed = 0usize;
    let mut conn: Option<(BoxRead, BoxWrite)> = None;
    let mut last_answer: Option<Instant> = None;
    // When the probe began waiting with no answer since: the start of silence when no sign of
    // life is known at all (respite just started, or the probe failed since, and no pool
    // connection has read a reply yet). Without it such a silence measured exactly
    // `probe_timeout` at every round, so with a known-slow command ahead it stayed "busy" and
    // never reached the busy grace: a `DEBUG SLEEP 6` sent before the probe's first answer was
    // never called down (the busy-grace test's failures in loaded full runs).
    let mut waiting_since: Option<Instant> = None;
    // The busy spell being reported (logged once per spell, not once per probe).
    let mut busy_since: Option<Instant> = None;
    let mut realive = false;
    let mut starved_retry = false;
    loop {
        let start = Instant::now();
        // After a verdict of "alive" the probe goes again at once, with only the rest of the
        // deadline counted from the latest sign of life (a frozen upstream that answered others a
        // moment before it froze is still down `probe_timeout` after that moment, near enough).
        let floor = if realive {
            probe_interval.min(probe_timeout / 2)
        } else {
            probe_timeout / 2
        };
        // The commands the shared connections wait on are ahead of this PING: a server
        // computing their replies answers it after them (see [`activity::allowance`]).
        let ahead = health.activity.ahead();
        let stretched = probe_timeout + activity::allowance(ahead, probe_timeout);
        // With no answer yet (starting, or after a failure) the probe gets its whole deadline.
        let deadline = match last_answer.and(latest_life(last_answer, &health)) {
            Some(t) => (t + stretched).max(start + floor),
            None => start + stretched,
        };
        realive = false;
        waiting_since.get_or_insert(start);
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(deadline, async {
                probe_once(&mut conn, &config, &addr, &health.activity, &info).await?;
                match (&cluster, conn.as_mut()) {
                    (Some(_), Some((r, w))) => serving(r, w, &addr).await,
                    _ => Ok(()),
                }
            }) => r,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(Ok(())) => {
                missed = 0;
                let now = Instant::now();
                last_answer = Some(now);
                waiting_since = None;
                busy_since = None;
                starved_retry = false;
                health.probe_answered(now - start);
                health.report(Event::ProbeOk, None);
            }
            // `-BUSY`: a script runs past its time limit. The upstream answers (SCRIPT KILL can
            // reach it), so this is no outage; its clients get the same `-BUSY` from it.
            Ok(Err(error)) if is_busy(&error) => {
                last_answer = Some(Instant::now());
                waiting_since = None;
                health.activity.saw_refusal(true);
                if busy_since.is_none() {
                    busy_since = Some(Instant::now());
                    info!(upstream = %addr, %error, "upstream busy running a script: still forwarding");
                }
                health.report(Event::ProbeBusy, None);
            }
            // The probe's own connect or handshake deadline passed: silence as well, judged by
            // the same rule (not a failure, which marks the upstream only degraded while pool
            // connections stay up).
            Ok(Err(UpstreamError {
                kind: Kind::TimedOut(_),
                ..
            }))
            | Err(_) => {
                // A late PONG must not be taken for the next probe's: start over.
                conn = None;
                // Silence is measured from the latest sign of life: the probe's answer or reply
                // bytes on any pool connection (a huge reply streaming, others' commands answered).
                let latest = latest_life(last_answer, &health).or(waiting_since);
                let silent_for = latest.map_or(probe_timeout, |t| t.elapsed());
                let slow = health.activity.slow_ahead();
                // Work handed over while this PING waited counts as well as work ahead of it:
                // a pipeline written a moment after the PING still keeps the server from it.
                let ahead = ahead.max(health.activity.ahead());
                let deadline_now = probe_timeout + activity::allowance(ahead, probe_timeout);
                match activity::judge(silent_for, slow, deadline_now, busy_grace) {
                    Verdict::Alive => {
                        realive = true;
                        continue;
                    }
                    Verdict::Busy => {
                        if busy_since.is_none() {
                            busy_since = Some(Instant::now());
                            info!(upstream = %addr, silent_for = ?silent_for, grace = ?busy_grace, "upstream busy with a slow command: still forwarding (down only after the busy grace)");
                        }
                    }
                    // This task woke more than an interval past its deadline: respite itself was
                    // starved of CPU (the pool's readers with it), so the silence it measured may
                    // be its own. Probe once more before calling the upstream down.
                    Verdict::Silent
                        if !starved_retry
                            && Instant::now().saturating_duration_since(deadline)
                                > probe_interval =>
                    {
                        debug!(silent_for = ?silent_for, "probe woke late: probing again before judging");
                        starved_retry = true;
                        realive = true;
                        continue;
                    }
                    Verdict::Silent => {
                        starved_retry = false;
                        last_answer = None;
                        busy_since = None;
                        if let Some(c) = &cluster
                            && next_node(c, &mut config, &mut missed)
                        {
                            addr = handshake::addr(&config);
                            continue;
                        }
                        let silent = Kind::TimedOut(Deadline::Probe(silent_for));
                        health.report(
                            Event::ProbeFailed { silent: true },
                            Some(Cause::Probe(UpstreamError::new(addr.clone(), silent))),
                        );
                    }
                }
            }
            Ok(Err(error)) => {
                debug!(%error, "upstream probe failed");
                if let Some(c) = &cluster
                    && next_node(c, &mut config, &mut missed)
                {
                    conn = None;
                    last_answer = None;
                    addr = handshake::addr(&config);
                    continue;
                }
                health.attempt_failed(&error);
                conn = None;
                last_answer = None;
                health.report(
                    Event::ProbeFailed { silent: false },
                    Some(Cause::Probe(error)),
                );
            }
        }
        let mut kicked = std::pin::pin!(health.kick.notified());
        if health.state() == State::Recovering && kicked.as_mut().enable() {
            // A wake-up heard during this round is stale: the answers that end an outage must be
            // an interval apart, never a moment.
            kicked.set(health.kick.notified());
        }
        tokio::select! {
            _ = tokio::time::sleep(probe_interval) => {}
            _ = kicked => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A cluster's node failed the probe: `config` turns to the next node known after it (the
/// topology's primaries, then the seeds). True while fewer nodes than are known failed in a row
/// (`missed`), so the next is probed at once; false once all did: the failure is reported.
fn next_node(cluster: &Cluster, config: &mut Arc<UpstreamConfig>, missed: &mut usize) -> bool {
    let mut nodes: Vec<String> = cluster
        .current()
        .map(|t| t.primaries().to_vec())
        .unwrap_or_default();
    for s in &config.url.seeds {
        if !nodes.contains(s) {
            nodes.push(s.clone());
        }
    }
    if nodes.is_empty() {
        return false;
    }
    let now = config.url.addr.to_string();
    let next = match nodes.iter().position(|n| *n == now) {
        Some(i) => nodes[(i + 1) % nodes.len()].clone(),
        None => nodes[0].clone(),
    };
    let mut c = (**config).clone();
    c.url.addr = UpstreamAddr::Tcp(next);
    *config = Arc::new(c);
    *missed += 1;
    if *missed < nodes.len() {
        return true;
    }
    *missed = 0;
    false
}

/// A cluster node answers only if it says the cluster serves (`cluster_state:ok`): a cluster
/// that lost a slot's every node refuses every command (CLUSTERDOWN), so it is down as a whole,
/// and what local-only mode journaled is replayed only once it serves every slot again.
async fn serving(r: &mut BoxRead, w: &mut BoxWrite, addr: &Arc<str>) -> Result<(), UpstreamError> {
    let info = handshake::request(
        r,
        w,
        addr,
        "CLUSTER INFO",
        b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n",
    )
    .await?;
    if memchr::memmem::find(&info, b"cluster_state:ok").is_some() {
        return Ok(());
    }
    let kind = Kind::Protocol(ProtocolError::Unexpected {
        command: "CLUSTER INFO",
        reply: "cluster_state is not ok".into(),
    });
    Err(UpstreamError::new(addr.clone(), kind))
}

/// One PING, on the open probe connection if there is one, else on a fresh one.
async fn probe_once(
    conn: &mut Option<(BoxRead, BoxWrite)>,
    config: &UpstreamConfig,
    addr: &Arc<str>,
    activity: &activity::Activity,
    info: &RwLock<Option<ServerInfo>>,
) -> Result<(), UpstreamError> {
    if let Some((r, w)) = conn.as_mut() {
        match ping(r, w, addr, activity).await {
            Ok(()) => return Ok(()),
            // An idle connection may have been closed (the upstream's `timeout`, a restart): only
            // a fresh one can tell whether the upstream is there.
            Err(e) => {
                debug!(cause = %e, "probe connection lost; reconnecting");
                *conn = None;
            }
        }
    }
    let mut opened = handshake::open(config, Protocol::Resp2, "respite-probe").await?;
    // The probe is the first to reach the upstream (readiness waits on it), so what the server
    // says of itself is known from then on, before any pool connection opens: answers that
    // depend on it (Valkey's wording of a queue-time refusal) never see "unknown" once ready.
    if let Ok(mut slot) = info.write() {
        *slot = Some(opened.info.clone());
    }
    ping(&mut opened.read, &mut opened.write, addr, activity).await?;
    *conn = Some((opened.read, opened.write));
    Ok(())
}

/// One PING; what it said of a server refusing every command goes to `activity` (see
/// [`activity::Activity::saw_refusal`]).
async fn ping(
    r: &mut BoxRead,
    w: &mut BoxWrite,
    addr: &Arc<str>,
    activity: &activity::Activity,
) -> Result<(), UpstreamError> {
    let reply = match handshake::request(r, w, addr, "PING", b"*1\r\n$4\r\nPING\r\n").await {
        Ok(reply) => reply,
        // A server busy with a script (or a module command) answers `-BUSY`: it is there and
        // answering, so not an outage (local-only mode must not take over from it).
        Err(UpstreamError {
            kind: Kind::Refused(Refusal::Command { reply, .. }),
            ..
        }) if reply.starts_with("BUSY") => {
            activity.saw_refusal(true);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    activity.saw_refusal(false);
    if &reply[..] == b"+PONG\r\n" {
        return Ok(());
    }
    let reply = String::from_utf8_lossy(&reply).trim_end().into();
    let kind = Kind::Protocol(ProtocolError::Unexpected {
        command: "PING",
        reply,
    });
    Err(UpstreamError::new(addr.clone(), kind))
}

/// Whether the probe's failure is the upstream saying `-BUSY` (to the PING or to the handshake of
/// a fresh probe connection): a script runs past its time limit on a live upstream.
fn is_busy(error: &UpstreamError) -> bool {
    match &error.kind {
        Kind::Protocol(ProtocolError::Unexpected { reply, .. }) => reply.starts_with("-BUSY"),
        Kind::Refused(r) => r.reply().starts_with("BUSY") || r.reply().starts_with("-BUSY"),
        _ => false,
    }
}

/// The latest sign of life: the probe's own answer, or reply bytes on any pool connection.
fn latest_life(last_answer: Option<Instant>, health: &Health) -> Option<Instant> {
    match (last_answer, health.activity.last_reply()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

//! The health probe: PINGs on a connection of its own, so the upstream's health is judged even
//! when no client sends anything, and a silent upstream (a frozen process, a partition) is told
//! from a busy one by a deadline of its own. It only reports to [`Health`]; the state machine
//! decides.
use super::error::{Deadline, Kind, ProtocolError, Refusal, UpstreamError};
use super::handshake::{self, BoxRead, BoxWrite};
use super::health::{Cause, Event, Health, State};
use crate::config::{HealthConfig, UpstreamConfig};
use crate::protocol::Protocol;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

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
    shutdown: CancellationToken,
) {
    let HealthConfig {
        probe_interval,
        probe_timeout,
        ..
    } = config.health;
    // The probe's own deadline must decide that a silent upstream is silent: a connect or
    // handshake that hangs (a frozen process still completes TCP handshakes from its backlog) is
    // given longer than the deadline, so it ends as "no answer", never as a connect error that
    // would read as a reachable-but-failing upstream.
    let config = {
        let mut c = (*config).clone();
        c.connect_timeout = c.connect_timeout.max(probe_timeout * 2);
        Arc::new(c)
    };
    let addr = handshake::addr(&config);
    let mut conn: Option<(BoxRead, BoxWrite)> = None;
    let mut last_answer: Option<Instant> = None;
    loop {
        let start = Instant::now();
        let deadline = match last_answer {
            Some(t) => (t + probe_timeout).max(start + probe_timeout / 2),
            None => start + probe_timeout,
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(deadline, probe_once(&mut conn, &config, &addr)) => r,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(Ok(())) => {
                let now = Instant::now();
                last_answer = Some(now);
                health.probe_answered(now - start);
                health.report(Event::ProbeOk, None);
            }
            Ok(Err(error)) => {
                debug!(%error, "upstream probe failed");
                health.attempt_failed(&error);
                conn = None;
                last_answer = None;
                health.report(
                    Event::ProbeFailed { silent: false },
                    Some(Cause::Probe(error)),
                );
            }
            Err(_) => {
                // A late PONG must not be taken for the next probe's: start over.
                conn = None;
                let silent_for = last_answer.map_or(probe_timeout, |t| t.elapsed());
                last_answer = None;
                let silent = Kind::TimedOut(Deadline::Probe(silent_for));
                health.report(
                    Event::ProbeFailed { silent: true },
                    Some(Cause::Probe(UpstreamError::new(addr.clone(), silent))),
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

/// One PING, on the open probe connection if there is one, else on a fresh one.
async fn probe_once(
    conn: &mut Option<(BoxRead, BoxWrite)>,
    config: &UpstreamConfig,
    addr: &Arc<str>,
) -> Result<(), UpstreamError> {
    if let Some((r, w)) = conn.as_mut() {
        match ping(r, w, addr).await {
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
    ping(&mut opened.read, &mut opened.write, addr).await?;
    *conn = Some((opened.read, opened.write));
    Ok(())
}

async fn ping(r: &mut BoxRead, w: &mut BoxWrite, addr: &Arc<str>) -> Result<(), UpstreamError> {
    let reply = match handshake::request(r, w, addr, "PING", b"*1\r\n$4\r\nPING\r\n").await {
        Ok(reply) => reply,
        // A server busy with a script (or a module command) answers `-BUSY`: it is there and
        // answering, so not an outage (local-only mode must not take over from it).
        Err(UpstreamError {
            kind: Kind::Refused(Refusal::Command { reply, .. }),
            ..
        }) if reply.starts_with("BUSY") => return Ok(()),
        Err(e) => return Err(e),
    };
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

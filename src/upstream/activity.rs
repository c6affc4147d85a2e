//! What the pool's connections see of the upstream between probes, so that a busy upstream is
//! told from a dead one: when reply bytes last arrived on any pool connection, how many
//! known-slow commands (see [`crate::command::known_slow`]) are written and still unanswered, and
//! how many commands of any kind the shared connections have written and not yet seen answered
//! (the work the upstream may be busy with: a pipeline of 600 GETs of 1 MiB keeps Redis silent
//! for a second while it copies the replies out, before it writes any).
//!
//! The connection tasks write it, the probe and the watchdog read it; it decides nothing itself
//! (the probe applies the rule, see [`super::probe`]). Cost on the hot path: one relaxed store per
//! socket read, and two atomic adds per known-slow command.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Milliseconds after `base` (plus one, so 0 means never) of the latest bytes read.
    last_reply: AtomicU64,
    /// Known-slow commands written to a pool connection and not yet answered or failed.
    slow_inflight: AtomicUsize,
    /// Commands written to the shared connections and not yet answered or failed.
    ahead: AtomicUsize,
    /// The latest alignment marker or probe was refused as the server refuses every command for
    /// a while (`-BUSY`, `-LOADING`): a hint, confirmed by asking before it is acted on.
    refusing: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            last_reply: AtomicU64::new(0),
            slow_inflight: AtomicUsize::new(0),
            ahead: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Bytes arrived on a pool connection: the upstream is alive.
    pub(crate) fn replied(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.last_reply.store(ms, Ordering::Relaxed);
    }

    /// When bytes last arrived on a pool connection, if ever.
    pub(crate) fn last_reply(&self) -> Option<Instant> {
        match self.last_reply.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// A known-slow command was written.
    pub(crate) fn slow_started(&self) {
        self.slow_inflight.fetch_add(1, Ordering::Relaxed);
    }

    /// A known-slow command was answered, or failed with its connection.
    pub(crate) fn slow_finished(&self) {
        let _ = self
            .slow_inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// `n` commands were written to a shared connection (one add per job, not per command).
    pub(crate) fn sent(&self, n: usize) {
        self.ahead.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` commands written to a shared connection were answered, or failed with it.
    pub(crate) fn settled(&self, n: usize) {
        let _ = self
            .ahead
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_sub(n))
            });
    }

    /// Commands the shared connections wait on: the work ahead of a probe sent now.
    pub(crate) fn ahead(&self) -> usize {
        self.ahead.load(Ordering::Relaxed)
    }

    /// What the latest marker or probe answer said: refused as every command is (`true`: a
    /// script past its time limit, a dataset loading) or answered.
    pub(crate) fn saw_refusal(&self, refused: bool) {
        if self.refusing.load(Ordering::Relaxed) != refused {
            self.refusing.store(refused, Ordering::Relaxed);
        }
    }

    /// Whether the upstream was, at its latest answer to respite's own commands, refusing every
    /// command (see [`Activity::saw_refusal`]). A hint only: it may have ended since.
    pub(crate) fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Whether a known-slow command is running (or queued) on the upstream right now, on a
    /// connection that is still established: its silence is work, not death.
    pub(crate) fn slow_ahead(&self) -> bool {
        self.slow_inflight.load(Ordering::Relaxed) > 0
    }
}

/// Whether `reply` is a server's refusal of every command for a while: a script past its time
/// limit (`-BUSY`), a dataset loading (`-LOADING`), a replica cut off from its primary
/// (`-MASTERDOWN`). Not `-NOPERM`: that is one user's rule, not the server's state.
pub fn refuses_all(reply: &[u8]) -> bool {
    [&b"-BUSY "[..], b"-LOADING ", b"-MASTERDOWN "]
        .iter()
        .any(|p| reply.starts_with(p))
}

/// How much longer than `probe_timeout` a silence may last with `ahead` commands waiting on the
/// shared connections: [`PER_COMMAND_AHEAD`] each, at most three probe deadlines.
///
/// A server computes a pipeline's replies before it writes any of them, and answers no one
/// meanwhile (the probe's PING waits its turn behind them): 600 GETs of 1 MiB kept Redis 7 from
/// answering a PING for 0.7–1.04 s on this project's 2-core VM (1.7 ms a command). A frozen
/// server with a reader or two in flight is still down within a few milliseconds of the
/// deadline; with hundreds of commands in flight it takes up to four deadlines (4 s by default).
pub(crate) fn allowance(ahead: usize, probe_timeout: Duration) -> Duration {
    PER_COMMAND_AHEAD
        .saturating_mul(ahead.min(u32::MAX as usize) as u32)
        .min(probe_timeout * 3)
}

/// What one command ahead of the probe adds to the silence allowed: three times the 1.7 ms a
/// GET of 1 MiB cost Redis in a 600-deep pipeline (measured above), for a loaded machine.
pub(crate) const PER_COMMAND_AHEAD: Duration = Duration::from_millis(5);

/// The rule the probe applies when its PING went unanswered: is the upstream down?
/// (`probe_timeout` here includes the [`allowance`] for the work ahead.)
///
/// - Silent for less than `probe_timeout` (reply bytes arrived on a pool connection since):
///   alive, answering others; not down.
/// - Silent for `probe_timeout` with a known-slow command ahead: busy; not down until
///   `busy_grace` of silence.
/// - Otherwise silent for `probe_timeout` with nothing known to be running: down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Alive,
    Busy,
    Silent,
}

pub(crate) fn judge(
    silent_for: Duration,
    slow_ahead: bool,
    probe_timeout: Duration,
    busy_grace: Duration,
) -> Verdict {
    if silent_for < probe_timeout {
        Verdict::Alive
    } else if slow_ahead && silent_for < busy_grace {
        Verdict::Busy
    } else {
        Verdict::Silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn busy_only_with_a_slow_command_ahead_and_only_for_the_grace() {
        let g = 30 * S;
        assert_eq!(judge(S / 2, false, S, g), Verdict::Alive);
        assert_eq!(judge(S, false, S, g), Verdict::Silent);
        assert_eq!(judge(S, true, S, g), Verdict::Busy);
        assert_eq!(judge(29 * S, true, S, g), Verdict::Busy);
        assert_eq!(judge(30 * S, true, S, g), Verdict::Silent);
    }

    #[test]
    fn work_ahead_stretches_the_deadline_within_a_bound() {
        assert_eq!(allowance(0, S), Duration::ZERO);
        assert_eq!(allowance(1, S), Duration::from_millis(5));
        assert_eq!(allowance(600, S), 3 * S);
        assert_eq!(allowance(usize::MAX, S), 3 * S);
        let a = Activity::default();
        a.sent(600);
        a.settled(599);
        assert_eq!(a.ahead(), 1);
        a.settled(5); // never below zero
        assert_eq!(a.ahead(), 0);
    }

    #[test]
    fn slow_count_and_reply_clock() {
        let a = Activity::default();
        assert!(a.last_reply().is_none() && !a.slow_ahead());
        a.slow_started();
        a.slow_started();
        a.slow_finished();
        assert!(a.slow_ahead());
        a.slow_finished();
        a.slow_finished(); // never below zero
        assert!(!a.slow_ahead());
        a.replied();
        assert!(a.last_reply().unwrap().elapsed() < S);
    }
}

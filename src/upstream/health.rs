//! The upstream's health: one state per upstream, judged from the pool's connection events and from
//! a probe that PINGs on a connection of its own. The state decides whether respite forwards or
//! serves in local-only mode; it is logged, exported as metrics and reflected in `/readyz`.
//!
//! | state | meaning | commands |
//! |---|---|---|
//! | `healthy` | every pool connection up, probes answered | forwarded |
//! | `degraded` | some errors: a pool connection lost or a probe failed, but the upstream answers | forwarded |
//! | `down` | no answer to probes for `health.probe_timeout_ms` (silent) with nothing known to be running, or for `health.busy_grace_ms` with a known-slow command ahead (see [`super::activity`]); or unreachable (refused, reset, error reply) with no pool connection left | local-only mode |
//! | `recovering` | probes answered again, not yet `health.recover_after` in a row with every pool connection up | local-only mode |
//!
//! Apart from the state, [`Health::rejected`] says the upstream refuses respite's own settings
//! (credentials, database): a misconfiguration, which local-only mode must not hide.
//!
//! The probe itself lives in [`super::probe`]. This module decides and reports. It never touches
//! the local engine or a client: what a state means for commands is the server's business,
//! through [`Options::on_transition`], which runs on every transition *before* the new state is
//! visible to anyone reading [`Health::state`].
use super::error::UpstreamError;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{info, warn};

/// The upstream's health, as [`Health::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Healthy = 0,
    Degraded = 1,
    Down = 2,
    Recovering = 3,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Healthy,
        State::Degraded,
        State::Down,
        State::Recovering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Recovering => "recovering",
        }
    }

    /// Whether commands go to the local engine (when local-only mode is enabled) in this state.
    pub fn is_local(self) -> bool {
        matches!(self, State::Down | State::Recovering)
    }

    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Healthy,
            1 => State::Degraded,
            2 => State::Down,
            _ => State::Recovering,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the state machine hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A pool connection was established (handshake done).
    ConnUp,
    /// A pool connection failed: closed, reset, a protocol error or a command past its deadline.
    ConnDown,
    /// The probe got `+PONG`.
    ProbeOk,
    /// The probe failed: `silent` when nothing answered within the deadline, otherwise the
    /// upstream is unreachable (refused, reset, closed) or answered with an error.
    ProbeFailed { silent: bool },
    /// The probe got `-BUSY` (a script runs past its time limit): the upstream is there and
    /// answering, but serves nothing else. Neither a failure nor a step towards recovery.
    ProbeBusy,
}

/// The state machine, with no clock and no I/O: the probe task owns the timing, so the rules can
/// be tested event by event.
#[derive(Debug)]
pub struct Machine {
    state: State,
    /// Pool connections up now, out of `total`.
    live: usize,
    total: usize,
    /// Probes answered in a row with no error reported since.
    streak: u32,
    /// The latest probe failed.
    probe_failing: bool,
    recover_after: u32,
}

impl Machine {
    /// A machine for a pool of `total` connections. It starts `healthy`, as the pool did before
    /// health was tracked: the first failure corrects it within a probe.
    pub fn new(total: usize, recover_after: u32) -> Machine {
        Machine {
            state: State::Healthy,
            live: 0,
            total,
            streak: 0,
            probe_failing: false,
            recover_after: recover_after.max(1),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// Apply one event; returns the new state when it changed.
    pub fn on(&mut self, ev: Event) -> Option<State> {
        use State::*;
        match ev {
            Event::ConnUp => self.live = (self.live + 1).min(self.total),
            Event::ConnDown => {
                self.live = self.live.saturating_sub(1);
                self.streak = 0;
            }
            Event::ProbeOk => {
                self.streak = self.streak.saturating_add(1);
                self.probe_failing = false;
            }
            Event::ProbeFailed { .. } => {
                self.streak = 0;
                self.probe_failing = true;
            }
            Event::ProbeBusy => {
                self.probe_failing = false;
                return None;
            }
        }
        let recovered = self.streak >= self.recover_after && self.live == self.total;
        let next = match (self.state, ev) {
            // Silent: nothing answered the probe within its deadline.
            (Healthy | Degraded, Event::ProbeFailed { silent: true }) => Down,
            // Hard: unreachable, and no pool connection left to say otherwise. Whichever of the
            // two is heard last decides, so the order the tasks report in does not matter.
            (Healthy | Degraded, Event::ProbeFailed { .. } | Event::ConnDown)
                if self.probe_failing && self.live == 0 =>
            {
                Down
            }
            (Healthy, Event::ProbeFailed { .. } | Event::ConnDown) => Degraded,
            (Degraded, Event::ProbeOk | Event::ConnUp) if recovered => Healthy,
            (Down, Event::ProbeOk) => Recovering,
            (Recovering, Event::ProbeFailed { .. }) => Down,
            (Recovering, Event::ProbeOk | Event::ConnUp) if recovered => Healthy,
            // The upstream answers, but some pool connections will not open (its maxclients, say):
            // forward over the others rather than serve local data indefinitely.
            (Recovering, Event::ProbeOk)
                if self.streak >= self.recover_after.saturating_mul(4) && self.live > 0 =>
            {
                Degraded
            }
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// What a transition's hook is told beside the two states: whether the upstream refuses
/// respite's configuration ([`Health::rejected`]) and whether it ever answered
/// ([`Health::contacted`]), which decide whether local-only mode may serve.
#[derive(Debug, Clone, Copy)]
pub struct Why {
    pub rejected: bool,
    pub contacted: bool,
}

/// What the server asks of health tracking.
pub struct Options {
    /// On entering `down`, fail the pool's connections so the commands in flight on them get an
    /// error now rather than at `upstream.command_timeout_ms` (their clients move on to the local
    /// engine). Set when local-only mode is enabled.
    pub fail_inflight_on_down: bool,
    /// Runs on every transition `(from, to, why)`, before the new state is visible.
    pub on_transition: Box<dyn Fn(State, State, Why) + Send + Sync>,
    /// This health is the upstream's as a whole: it sets `respite_upstream_health` and counts
    /// `respite_upstream_health_transitions_total`. False for a cluster's nodes, each with a
    /// health of its own: sharing one unlabelled gauge, whichever node changed last would
    /// overwrite the others (the cluster's per-node counters tell nodes apart).
    pub publish: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fail_inflight_on_down: false,
            on_transition: Box::new(|_, _, _| {}),
            publish: true,
        }
    }
}

/// A summary for `/stats`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: State,
    /// How long the upstream has been in `state`.
    pub since: Duration,
    pub transitions: u64,
    /// Why the latest failure happened (probe or connection), if any failure was seen.
    pub last_error: Option<String>,
    /// Round trip of the latest successful probe.
    pub last_probe_rtt: Option<Duration>,
}

/// Why a failure the state machine heard happened, kept for `/stats` and the transition's log
/// line (the only places it becomes text).
#[derive(Debug, Clone)]
pub(super) enum Cause {
    /// A pool connection failed.
    Conn(UpstreamError),
    /// The probe failed.
    Probe(UpstreamError),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Conn(e) => write!(f, "{e}"),
            Cause::Probe(e) => write!(f, "probe: {e}"),
        }
    }
}

struct Inner {
    machine: Machine,
    since: Instant,
    transitions: u64,
    last_error: Option<Cause>,
    last_probe_rtt: Option<Duration>,
}

/// One upstream's health, shared by its connection tasks, its probe, the sessions and the admin
/// port. Reading the state costs one relaxed atomic load; events (connections, probes: a few per
/// second) go through a mutex that serialises transitions with their hook.
pub struct Health {
    state: AtomicU8,
    /// The latest connection attempt (probe or pool) ended with the upstream refusing respite's
    /// own settings: its credentials, its database, its protocol. See
    /// [`UpstreamError::is_rejection`].
    rejected: AtomicBool,
    /// The upstream has answered at least once since start (a pool handshake or a probe): until
    /// then an outage cannot be told from a typo in `upstream.url`, so nothing is served locally
    /// (unless `local_only.serve_before_first_contact`) and `/readyz` says not ready.
    contacted: AtomicBool,
    /// Whether the upstream had answered when the current outage began (set at every
    /// transition to down). An outage begun before first contact stays one local-only mode
    /// does not serve, through the recovery that follows the first answer: otherwise the
    /// commands of that recovery (about a second of probes) went to an empty local engine.
    outage_after_contact: AtomicBool,
    inner: Mutex<Inner>,
    /// Wakes the probe early (a pool connection just failed).
    pub(super) kick: Notify,
    published: watch::Sender<State>,
    options: Options,
    addr: Arc<str>,
    /// What the pool's connections see between probes (busy is not down).
    pub(crate) activity: super::activity::Activity,
}

impl Health {
    pub fn new(addr: Arc<str>, total: usize, recover_after: u32, options: Options) -> Health {
        let (published, _) = watch::channel(State::Healthy);
        if options.publish {
            set_gauges(State::Healthy);
        }
        Health {
            state: AtomicU8::new(State::Healthy as u8),
            rejected: AtomicBool::new(false),
            contacted: AtomicBool::new(false),
            outage_after_contact: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                machine: Machine::new(total, recover_after),
                since: Instant::now(),
                transitions: 0,
                last_error: None,
                last_probe_rtt: None,
            }),
            kick: Notify::new(),
            published,
            options,
            addr,
            activity: Default::default(),
        }
    }

    /// The current state: one atomic load, for the hot path. Acquire, paired with the release
    /// in [`Health::report`]: whoever sees the new state sees what the transition's hook did
    /// (the recovery fence of [`crate::local_only`]).
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the upstream is refusing respite's configuration (a wrong password, a database it
    /// does not have). Local-only mode does not serve then: an outage is absorbed, a
    /// misconfiguration must be seen, so commands fail with the upstream's own words.
    pub fn rejected(&self) -> bool {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Whether the upstream has answered once since start (see the field).
    pub fn contacted(&self) -> bool {
        self.contacted.load(Ordering::Acquire)
    }

    /// Whether the upstream had answered since start when the current outage began (see
    /// `outage_after_contact`): only such an outage is served by local-only mode.
    pub fn outage_after_contact(&self) -> bool {
        self.outage_after_contact.load(Ordering::Acquire)
    }

    /// A connection attempt (probe or pool) failed with `error`. A refusal of respite's settings
    /// marks the upstream as rejecting them; any other failure is an outage again. The mark goes
    /// when the upstream is back in service (healthy or degraded), so the recovery that follows a
    /// refusal forwards too instead of serving locally for a few probes.
    pub(super) fn attempt_failed(&self, error: &UpstreamError) {
        let rejected = error.is_rejection();
        if self.rejected.swap(rejected, Ordering::Relaxed) != rejected && rejected {
            warn!(upstream = %self.addr, cause = %error, "the upstream refuses respite's configuration: commands fail with its refusal until it accepts it");
        }
    }

    /// Whether the latest failure was TLS's (a certificate that does not verify, unreadable TLS
    /// files): `/readyz` then says why, since no retry will cure it.
    pub fn failing_tls(&self) -> bool {
        matches!(
            &self.lock().last_error,
            Some(Cause::Conn(e) | Cause::Probe(e)) if matches!(e.kind, super::error::Kind::Tls(_))
        )
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            state: inner.machine.state(),
            since: inner.since.elapsed(),
            transitions: inner.transitions,
            last_error: inner.last_error.as_ref().map(Cause::to_string),
            last_probe_rtt: inner.last_probe_rtt,
        }
    }

    pub(super) fn fail_inflight_on_down(&self) -> bool {
        self.options.fail_inflight_on_down
    }

    /// Transitions as they are published (connection tasks wait on it).
    pub(super) fn subscribe(&self) -> watch::Receiver<State> {
        self.published.subscribe()
    }

    /// The probe's latest round trip, for `/stats`.
    pub(super) fn probe_answered(&self, rtt: Duration) {
        self.lock().last_probe_rtt = Some(rtt);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hear one event; `cause` says why, for failures.
    ///
    /// Pool connection events also wake the probe, so it confirms at once what they suggest: a
    /// connection lost while forwarding (is the upstream gone?), or one established while down
    /// (is it back?).
    pub(super) fn report(&self, ev: Event, cause: Option<Cause>) {
        if matches!(ev, Event::ConnUp | Event::ProbeOk) && !self.contacted() {
            self.contacted.store(true, Ordering::Release);
            info!(upstream = %self.addr, "the upstream answered for the first time since start");
        }
        let mut inner = self.lock();
        if let Some(c) = cause {
            inner.last_error = Some(c);
        }
        // A failed probe has no round trip: the last one measured would say the upstream
        // answers in that time while it does not answer at all.
        if matches!(ev, Event::ProbeFailed { .. }) {
            inner.last_probe_rtt = None;
        }
        let from = inner.machine.state();
        let changed = inner.machine.on(ev);
        let now = inner.machine.state();
        match ev {
            Event::ConnDown if !now.is_local() => self.kick.notify_one(),
            Event::ConnUp if now == State::Down => self.kick.notify_one(),
            _ => {}
        }
        let Some(to) = changed else {
            return;
        };
        if !to.is_local() && self.rejected.swap(false, Ordering::Relaxed) {
            info!(upstream = %self.addr, "the upstream accepts respite's configuration again");
        }
        // Under the lock: transitions and their hook run one at a time, in order.
        let why = Why {
            rejected: self.rejected(),
            contacted: self.contacted(),
        };
        (self.options.on_transition)(from, to, why);
        if to == State::Down {
            // Before the state is published: a command that sees down sees this outage's mark.
            self.outage_after_contact
                .store(self.contacted(), Ordering::Release);
        }
        self.state.store(to as u8, Ordering::Release);
        self.published.send_replace(to);
        if to == State::Down {
            inner.last_probe_rtt = None;
        }
        let was = inner.since.elapsed();
        inner.since = Instant::now();
        inner.transitions += 1;
        if self.options.publish {
            set_gauges(to);
            crate::metrics::upstream_health_transition(to.as_str());
        }
        let live = inner.machine.live();
        let cause = inner
            .last_error
            .as_ref()
            .map(Cause::to_string)
            .unwrap_or_default();
        match to {
            State::Healthy | State::Recovering => {
                info!(upstream = %self.addr, %from, %to, after = ?was, live, "upstream health: {from} -> {to}")
            }
            State::Degraded | State::Down => {
                warn!(upstream = %self.addr, %from, %to, after = ?was, live, cause = cause.as_str(), "upstream health: {from} -> {to}")
            }
        }
    }
}

fn set_gauges(current: State) {
    for s in State::ALL {
        crate::metrics::upstream_health(s.as_str()).set(if s == current { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::Event::*;

    #[test]
    fn the_metrics_label_every_state_by_its_name() {
        assert_eq!(
            super::State::ALL.map(super::State::as_str),
            crate::metrics::HEALTH_STATES
        );
    }
    use super::State::*;
    use super::*;

    const HARD: Event = ProbeFailed { silent: false };
    const SILENT: Event = ProbeFailed { silent: true };

    /// A machine for 4 pool connections, all up, healthy.
    fn up() -> Machine {
        let mut m = Machine::new(4, 2);
        for _ in 0..4 {
            assert_eq!(m.on(ConnUp), None);
        }
        assert_eq!(m.on(ProbeOk), None);
        m
    }

    #[test]
    fn starts_healthy_and_stays_so_while_probes_answer() {
        let mut m = up();
        for _ in 0..10 {
            assert_eq!(m.on(ProbeOk), None);
        }
        assert_eq!((m.state(), m.live()), (Healthy, 4));
    }

    #[test]
    fn a_silent_upstream_is_down_at_the_first_missed_deadline() {
        let mut m = up();
        assert_eq!(m.on(SILENT), Some(Down));
        // Its pool connections failing next changes nothing.
        for _ in 0..4 {
            assert_eq!(m.on(ConnDown), None);
        }
        assert_eq!(m.on(SILENT), None);
    }

    #[test]
    fn a_hard_failure_is_down_once_no_pool_connection_is_left() {
        // Connections first, then the probe: down on the probe.
        let mut m = up();
        assert_eq!(m.on(ConnDown), Some(Degraded));
        for _ in 0..3 {
            assert_eq!(m.on(ConnDown), None);
        }
        assert_eq!(m.on(HARD), Some(Down));
        // The probe first, then the connections: down on the last connection.
        let mut m = up();
        assert_eq!(m.on(HARD), Some(Degraded));
        for _ in 0..3 {
            assert_eq!(m.on(ConnDown), None);
        }
        assert_eq!(m.on(ConnDown), Some(Down));
    }

    #[test]
    fn unreachable_probe_with_live_pool_connections_is_only_degraded() {
        let mut m = up();
        assert_eq!(m.on(HARD), Some(Degraded));
        assert_eq!(m.on(HARD), None);
        // Two answers in a row with every connection up: healthy again.
        assert_eq!(m.on(ProbeOk), None);
        assert_eq!(m.on(ProbeOk), Some(Healthy));
    }

    #[test]
    fn degraded_heals_only_with_every_connection_up_and_no_error_in_between() {
        let mut m = up();
        assert_eq!(m.on(ConnDown), Some(Degraded));
        assert_eq!(m.on(ProbeOk), None);
        assert_eq!(m.on(ProbeOk), None, "a connection is still down");
        assert_eq!(m.on(ConnUp), Some(Healthy));
        assert_eq!(m.on(ConnDown), Some(Degraded));
        assert_eq!(m.on(ConnUp), None);
        assert_eq!(m.on(ProbeOk), None);
        assert_eq!(m.on(ConnDown), None, "an error restarts the count");
        assert_eq!(m.on(ConnUp), None);
        assert_eq!(m.on(ProbeOk), None);
        assert_eq!(m.on(ProbeOk), Some(Healthy));
    }

    #[test]
    fn recovery_takes_recover_after_answers_and_every_connection() {
        let mut m = up();
        assert_eq!(m.on(SILENT), Some(Down));
        for _ in 0..4 {
            m.on(ConnDown);
        }
        assert_eq!(m.on(ProbeOk), Some(Recovering));
        // The pool reconnects (woken by the transition); the second answer completes recovery.
        for _ in 0..4 {
            assert_eq!(m.on(ConnUp), None);
        }
        assert_eq!(m.on(ProbeOk), Some(Healthy));
    }

    #[test]
    fn recovery_completes_on_the_last_connection_when_probes_were_quicker() {
        let mut m = up();
        m.on(SILENT);
        for _ in 0..4 {
            m.on(ConnDown);
        }
        m.on(ProbeOk);
        m.on(ProbeOk);
        m.on(ProbeOk);
        assert_eq!(m.state(), Recovering);
        for _ in 0..3 {
            assert_eq!(m.on(ConnUp), None);
        }
        assert_eq!(m.on(ConnUp), Some(Healthy));
    }

    #[test]
    fn a_failure_while_recovering_goes_back_down() {
        let mut m = up();
        m.on(HARD);
        for _ in 0..4 {
            m.on(ConnDown);
        }
        assert_eq!(m.state(), Down);
        assert_eq!(m.on(ProbeOk), Some(Recovering));
        assert_eq!(m.on(HARD), Some(Down));
        assert_eq!(m.on(ProbeOk), Some(Recovering));
        assert_eq!(m.on(SILENT), Some(Down));
    }

    #[test]
    fn recovering_with_some_connections_refused_ends_degraded() {
        let mut m = up();
        m.on(SILENT);
        for _ in 0..4 {
            m.on(ConnDown);
        }
        m.on(ConnUp);
        assert_eq!(m.on(ProbeOk), Some(Recovering));
        for _ in 0..6 {
            assert_eq!(m.on(ProbeOk), None);
        }
        assert_eq!(
            m.on(ProbeOk),
            Some(Degraded),
            "8 answers, 1 of 4 connections"
        );
        // With no connection at all it stays local: forwarding could only fail.
        let mut m = up();
        m.on(SILENT);
        for _ in 0..4 {
            m.on(ConnDown);
        }
        for _ in 0..20 {
            m.on(ProbeOk);
        }
        assert_eq!(m.state(), Recovering);
    }

    #[test]
    fn down_at_startup_when_the_upstream_is_unreachable() {
        let mut m = Machine::new(4, 2);
        assert_eq!(m.on(HARD), Some(Down));
        let mut m = Machine::new(4, 2);
        assert_eq!(m.on(SILENT), Some(Down));
    }

    #[test]
    fn a_busy_answer_changes_nothing_and_does_not_count_towards_recovery() {
        let mut m = up();
        assert_eq!(m.on(ProbeBusy), None);
        assert_eq!(m.state(), Healthy);
        m.on(SILENT);
        for _ in 0..4 {
            m.on(ConnDown);
        }
        assert_eq!(m.on(ProbeBusy), None);
        assert_eq!(m.state(), Down);
        assert_eq!(m.on(ProbeOk), Some(Recovering));
    }

    #[test]
    fn states_round_trip_through_the_atomic() {
        for s in State::ALL {
            assert_eq!(State::from_u8(s as u8), s);
        }
        assert!(Down.is_local() && Recovering.is_local());
        assert!(!Healthy.is_local() && !Degraded.is_local());
    }
}

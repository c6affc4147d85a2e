//! Local-only mode: who answers instead of the upstream, what an outage leaves to undo, and what
//! happens to what was answered locally once the upstream is back.
//!
//! With no upstream configured (standalone mode) the [`crate::engine`] answers everything. With
//! an upstream and `local_only.enabled`, the engine answers while [`crate::upstream::health`] says
//! the upstream is down (and once it has answered since start); the health machine judges, this
//! module only acts on its verdict. It never decides health and never forwards a client's command
//! itself: [`recovery`] is the one place that writes to the upstream, after an outage, per
//! `local_only.on_recovery`; [`outage`] keeps what the writes answered locally leave to do (the
//! [`journal`] to replay, or the keys to invalidate), recorded here around the engine's calls,
//! never inside the engine. [`conditional`] says which writes are never guessed.
mod conditional;
mod journal;
mod outage;
mod recovery;

pub(crate) use outage::Outage;
pub(crate) use recovery::{on_transition, recovery_task};

use crate::command::{self, AclCategories, CommandSpec, Flags};
use crate::config::{LocalOnlyConfig, LocalWrites, OnRecovery};
use crate::engine::Engine;
use crate::metrics;
use crate::protocol::Protocol;
use crate::pubsub::Hub;
use crate::upstream::health::Health;
use bytes::Bytes;

/// Who answers a command instead of the upstream.
pub(crate) enum Answerer<'a> {
    /// The local engine.
    Engine(Local<'a>),
    /// Nobody: a write in local-only mode under `local_only.writes = "refuse"` (or a rule); the
    /// error it gets.
    Refused(&'static str),
}

/// The local engine, as local-only mode uses it: writes are journaled (or their keys recorded)
/// for the recovery. Pub/Sub commands go to the hub instead, which delivers within the process.
pub(crate) struct Local<'a> {
    engine: &'a Engine,
    pubsub: Option<&'a Hub>,
    /// `None` in standalone mode.
    outage: Option<&'a Outage>,
    on_recovery: OnRecovery,
}

impl Local<'_> {
    /// Run one command on the engine. A write is journaled (`replay`) or its keys recorded
    /// (`invalidate`) before its reply exists, as the engine sees it: a tenant's keys are
    /// prefixed, so they are the upstream's.
    pub fn execute(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        proto: Protocol,
        now: u64,
    ) -> Bytes {
        let Some(outage) = self.outage.filter(|_| may_write(spec)) else {
            return self.run(spec, args, proto, now);
        };
        let reply = match self.on_recovery {
            OnRecovery::Replay => match outage
                .journal
                .run(args, || self.run(spec, args, proto, now))
            {
                Some(reply) => reply,
                None => return refusal(JOURNAL_FULL),
            },
            OnRecovery::Invalidate => {
                if let Ok(keys) = command::keys(spec, args) {
                    outage.record(keys.positions().filter_map(|i| args.get(i)));
                }
                self.run(spec, args, proto, now)
            }
            OnRecovery::Drop | OnRecovery::Merge => self.run(spec, args, proto, now),
        };
        if reply.first() != Some(&b'-') {
            outage.acknowledged();
        }
        reply
    }

    fn run(&self, spec: &'static CommandSpec, args: &[Bytes], proto: Protocol, now: u64) -> Bytes {
        if let Some(hub) = self.pubsub
            && let Some(reply) = crate::pubsub::answer(hub, spec, args, proto)
        {
            return reply;
        }
        self.engine.execute(spec, args, proto, now)
    }
}

/// What a write gets when the replay journal is full: refused before it runs, so nothing
/// acknowledged is ever dropped.
pub(crate) const JOURNAL_FULL: &str = "TRYAGAIN upstream is down and local-only mode's journal of writes to replay is full (local_only.journal_max_bytes); this write was not applied";

fn refusal(msg: &str) -> Bytes {
    metrics::error(metrics::ErrorKind::LocalOnly);
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode::error(&mut out, msg);
    out.freeze()
}

/// What a refused write gets. TRYAGAIN: the same command may succeed once the upstream is back.
pub(crate) const LOCAL_ONLY_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes (local_only.writes = \"refuse\")";

/// What SCAN and KEYS get in local-only mode: the engine does not hold the upstream's keys.
pub(crate) const PARTIAL_KEYSPACE: &str = "TRYAGAIN upstream is down and respite is in local-only mode, whose keys are only those written during the outage: a listing of them would be partial (a pattern delete would miss the upstream's keys)";

/// The commands that list the keyspace (a tenant's FLUSHDB, which lists its namespace, is
/// refused by the session for the same reason).
pub(crate) fn partial_keyspace(spec: &CommandSpec) -> bool {
    matches!(spec.name, "scan" | "keys")
}

/// What a write refused by a `[[local_only.rule]]` gets.
pub(crate) const LOCAL_ONLY_RULE_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes to this key (local_only.rule)";

impl Answerer<'_> {
    /// The reply: `run` on the engine, or the refusal.
    pub fn run(self, run: impl FnOnce(&Local<'_>) -> Bytes) -> Bytes {
        match self {
            Answerer::Engine(local) => run(&local),
            Answerer::Refused(msg) => refusal(msg),
        }
    }
}

/// Who answers `spec` (called with `args`, the client's own, unprefixed) instead of the upstream,
/// or `None` to forward it. `engine` is `None` with an upstream and local-only mode off; `health`
/// is `None` in standalone mode. Hot path: with an upstream and local-only mode enabled this is
/// one atomic load.
pub(crate) fn answerer<'a>(
    engine: Option<&'a Engine>,
    health: Option<&Health>,
    config: &LocalOnlyConfig,
    outage: Option<&'a Outage>,
    pubsub: Option<&'a Hub>,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Option<Answerer<'a>> {
    let engine = engine?;
    let Some(health) = health else {
        return Some(Answerer::Engine(Local {
            engine,
            pubsub,
            outage: None,
            on_recovery: config.on_recovery,
        })); // standalone
    };
    if !serves(health, config) {
        return None;
    }
    // Killing a runaway script is for the upstream, whatever the engine could say: if it can be
    // reached at all, SCRIPT KILL reaches it (otherwise it fails fast, naming the outage).
    if matches!(spec.name, "script|kill" | "function|kill") {
        return None;
    }
    // A listing of the keyspace from an engine that holds only the outage's writes would be
    // silently partial: a pattern delete (SCAN + DEL) would delete none of the upstream's keys
    // and report success.
    if partial_keyspace(spec) {
        return Some(Answerer::Refused(PARTIAL_KEYSPACE));
    }
    // Reads the near cache held when the upstream went away may be answered from it (see the
    // session's stale reads), before the engine.
    if may_write(spec) {
        match writes_for(config, spec, args) {
            (LocalWrites::Refuse, false) => return Some(Answerer::Refused(LOCAL_ONLY_REFUSED)),
            (LocalWrites::Refuse, true) => return Some(Answerer::Refused(LOCAL_ONLY_RULE_REFUSED)),
            // Allowed by a rule naming its key: the operator said the guess is acceptable.
            (LocalWrites::Apply, true) => {}
            (LocalWrites::Apply, false) if conditional::conditional(spec, args) => {
                return Some(Answerer::Refused(conditional::REFUSED));
            }
            (LocalWrites::Apply, false) => {}
        }
    }
    Some(Answerer::Engine(Local {
        engine,
        pubsub,
        outage,
        on_recovery: config.on_recovery,
    }))
}

/// Whether local-only mode serves now, given an engine: the upstream is down or recovering, and
/// not misconfigured. A misconfiguration, or an upstream never reached (a typo in the URL looks
/// like an outage), is forwarded: the client gets the upstream's own refusal or the connection's
/// failure, naming the upstream and the cause, rather than writes acknowledged into nowhere.
/// The test is of the outage as it began: when the upstream first answers, the recovery that
/// follows an outage begun before first contact forwards too (local-only mode never took over,
/// so there is nothing to replay and the local engine holds nothing of the upstream's).
pub(crate) fn serves(health: &Health, config: &LocalOnlyConfig) -> bool {
    serves_given(health, config.serve_before_first_contact)
}

/// [`serves`], for a caller that holds only `local_only.serve_before_first_contact` (`/readyz`).
pub(crate) fn serves_given(health: &Health, serve_before_first_contact: bool) -> bool {
    health.state().is_local()
        && !health.rejected()
        && (health.outage_after_contact() || serve_before_first_contact)
}

/// A write, or a script that may write (its keys are its `KEYS`).
fn may_write(spec: &CommandSpec) -> bool {
    spec.flags.contains(Flags::WRITE)
        || (spec.acl.contains(AclCategories::SCRIPTING) && !spec.flags.contains(Flags::READONLY))
}

/// What a write (or a script: it may write its keys) gets while down: the first
/// `[[local_only.rule]]` matching any of its keys (and true), else `local_only.writes`. A command whose keys cannot be found gets the
/// default.
fn writes_for(config: &LocalOnlyConfig, spec: &CommandSpec, args: &[Bytes]) -> (LocalWrites, bool) {
    if config.rules.is_empty() {
        return (config.writes, false);
    }
    let Ok(keys) = command::keys(spec, args) else {
        return (config.writes, false);
    };
    for rule in &config.rules {
        if keys
            .positions()
            .filter_map(|i| args.get(i))
            .any(|k| crate::policy::glob::matches(&rule.pattern, k))
        {
            return (rule.writes, true);
        }
    }
    (config.writes, false)
}

//! Local-only mode: who answers instead of the upstream, what an outage leaves to undo, and what
//! happens to what was answered locally once the upstream is back.
//!
//! With no upstream configured (standalone mode) the [`crate::engine`] answers everything. With
//! an upstream and `local_only.enabled`, the engine answers while [`crate::upstream::health`] says
//! the upstream is down; the health machine judges, this module only acts on its verdict. It never
//! decides health and never forwards a client's command itself: [`recovery`] is the one place that
//! writes to the upstream, after an outage, per `local_only.on_recovery`; [`outage`] keeps the
//! keys written locally (recorded here, around the engine's calls, never inside the engine).
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

/// The local engine, as local-only mode uses it: writes record their keys for the recovery.
/// Pub/Sub commands go to the hub instead, which delivers within the process.
pub(crate) struct Local<'a> {
    engine: &'a Engine,
    pubsub: Option<&'a Hub>,
    /// `None` in standalone mode and when the recovery does not invalidate.
    outage: Option<&'a Outage>,
}

impl Local<'_> {
    /// Run one command on the engine. A write's keys (as the engine sees them: a tenant's are
    /// prefixed, so they are the upstream's) are recorded before it runs, so every acknowledged
    /// local write is invalidated upstream at recovery.
    pub fn execute(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        proto: Protocol,
        now: u64,
    ) -> Bytes {
        if let Some(outage) = self.outage
            && may_write(spec)
            && let Ok(keys) = command::keys(spec, args)
        {
            outage.record(keys.positions().filter_map(|i| args.get(i)));
        }
        if let Some(hub) = self.pubsub
            && let Some(reply) = crate::pubsub::answer(hub, spec, args, proto)
        {
            return reply;
        }
        self.engine.execute(spec, args, proto, now)
    }
}

/// What a refused write gets. TRYAGAIN: the same command may succeed once the upstream is back.
pub(crate) const LOCAL_ONLY_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes (local_only.writes = \"refuse\")";

/// What a write refused by a `[[local_only.rule]]` gets.
pub(crate) const LOCAL_ONLY_RULE_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes to this key (local_only.rule)";

impl Answerer<'_> {
    /// The reply: `run` on the engine, or the refusal.
    pub fn run(self, run: impl FnOnce(&Local<'_>) -> Bytes) -> Bytes {
        match self {
            Answerer::Engine(local) => run(&local),
            Answerer::Refused(msg) => {
                metrics::error(metrics::ErrorKind::LocalOnly);
                let mut out = bytes::BytesMut::new();
                crate::protocol::encode::error(&mut out, msg);
                out.freeze()
            }
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
        })); // standalone
    };
    if !health.state().is_local() || health.rejected() {
        return None;
    }
    // Killing a runaway script is for the upstream, whatever the engine could say: if it can be
    // reached at all, SCRIPT KILL reaches it (otherwise it fails fast, naming the outage).
    if matches!(spec.name, "script|kill" | "function|kill") {
        return None;
    }
    // Reads the near cache held when the upstream went away may be answered from it (see the
    // session's stale reads), before the engine.
    if may_write(spec) {
        match writes_for(config, spec, args) {
            (LocalWrites::Refuse, false) => return Some(Answerer::Refused(LOCAL_ONLY_REFUSED)),
            (LocalWrites::Refuse, true) => return Some(Answerer::Refused(LOCAL_ONLY_RULE_REFUSED)),
            (LocalWrites::Apply, _) => {}
        }
    }
    let outage = outage.filter(|_| config.on_recovery == OnRecovery::Invalidate);
    Some(Answerer::Engine(Local {
        engine,
        pubsub,
        outage,
    }))
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

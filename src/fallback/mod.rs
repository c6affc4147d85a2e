//! Local-only mode: who answers instead of the upstream, and what happens to what was answered
//! locally once the upstream is back.
//!
//! With no upstream configured (standalone mode) the [`crate::engine`] answers everything. With
//! an upstream and `local_only.enabled`, the engine answers while [`crate::upstream::health`] says
//! the upstream is down; the health machine judges, this module only acts on its verdict. It never
//! decides health and never forwards a client's command itself: [`recovery`] is the one place that
//! writes to the upstream, after an outage, per `local_only.on_recovery`.
mod recovery;

pub(crate) use recovery::{merge_task, on_transition};

use crate::command::{CommandSpec, Flags};
use crate::config::LocalWrites;
use crate::engine::Engine;
use crate::metrics;
use crate::upstream::health::Health;
use bytes::Bytes;

/// Who answers a command instead of the upstream.
pub(crate) enum Answerer<'a> {
    /// The local engine.
    Engine(&'a Engine),
    /// Nobody: a write in local-only mode under `local_only.writes = "refuse"`.
    Refused,
}

/// What a refused write gets. TRYAGAIN: the same command may succeed once the upstream is back.
pub(crate) const LOCAL_ONLY_REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes (local_only.writes = \"refuse\")";

impl Answerer<'_> {
    /// The reply: `run` on the engine, or the refusal.
    pub fn run(self, run: impl FnOnce(&Engine) -> Bytes) -> Bytes {
        match self {
            Answerer::Engine(engine) => run(engine),
            Answerer::Refused => {
                metrics::error(metrics::ErrorKind::LocalOnly);
                let mut out = bytes::BytesMut::new();
                crate::protocol::encode::error(&mut out, LOCAL_ONLY_REFUSED);
                out.freeze()
            }
        }
    }
}

/// Who answers `spec` instead of the upstream, or `None` to forward it. `engine` is `None` with
/// an upstream and local-only mode off; `health` is `None` in standalone mode. Hot path: with an
/// upstream and local-only mode enabled this is one relaxed atomic load.
pub(crate) fn answerer<'a>(
    engine: Option<&'a Engine>,
    health: Option<&Health>,
    writes: LocalWrites,
    spec: &CommandSpec,
) -> Option<Answerer<'a>> {
    let engine = engine?;
    let Some(health) = health else {
        return Some(Answerer::Engine(engine)); // standalone
    };
    if !health.state().is_local() || health.rejected() {
        return None;
    }
    // Reads the near cache held when the upstream went away may be answered from it (see the
    // session's stale reads), before the engine.
    if spec.flags.contains(Flags::WRITE) && writes == LocalWrites::Refuse {
        return Some(Answerer::Refused);
    }
    Some(Answerer::Engine(engine))
}

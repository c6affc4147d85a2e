//! Which of the scripts respite has sent the upstream may be the one it runs, and whose they
//! are, so a tenant's SCRIPT KILL or FUNCTION KILL ends only its own (see
//! `server::session::commands::script_kill`).
//!
//! A job holding EVAL-family or FCALL-family commands is sent with a [`ScriptTag`] naming its
//! client's tenant; the tag lives in the job's slot and leaves this register when the slot goes
//! (its replies delivered, or the connection failed). The connection's loops ([`super::pipe`])
//! mark a tag [`at head`](ScriptTag::at_head) when its slot becomes the oldest unanswered one
//! on its connection. The server reads one connection's commands in order and runs one script
//! at a time, so:
//!
//! # Invariants
//! - A script respite sent can be running only if its job is at the head of its connection.
//!   A job behind another on the same connection (every client's scripts share the slow lane)
//!   is never taken for the running one.
//! - A job at the head may still be waiting (another connection's script, or one sent by a
//!   client outside respite, runs): once the server's time limit has passed it answers every
//!   waiting command with `-BUSY`, which takes the job off the head. The kill decision waits
//!   for that to settle; nothing here decides.
//!
//! Jobs on a client's pinned connection (inside MULTI … EXEC, while WATCHing) carry no tag: their
//! scripts are never taken for anyone's, so a tenant cannot kill them with SCRIPT KILL.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Whose scripts a job holds, and of which kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptMark {
    /// The client's tenant by name (`None`: a client without one).
    pub owner: Option<Arc<str>>,
    /// It holds EVAL, EVALSHA or their `_RO` forms.
    pub eval: bool,
    /// It holds FCALL or FCALL_RO.
    pub function: bool,
}

struct Run {
    mark: ScriptMark,
    head: AtomicBool,
}

/// The scripts in flight on one upstream's connections.
#[derive(Default)]
pub struct Scripts {
    next: AtomicU64,
    runs: Mutex<HashMap<u64, Arc<Run>>>,
}

/// One job's entry in [`Scripts`]; dropped with the job's slot.
pub struct ScriptTag {
    id: u64,
    run: Arc<Run>,
    scripts: Arc<Scripts>,
}

impl ScriptTag {
    /// Its slot is now the oldest unanswered one on its connection.
    pub(super) fn at_head(&self) {
        self.run.head.store(true, Ordering::Release);
    }
}

impl Drop for ScriptTag {
    fn drop(&mut self) {
        self.scripts.lock().remove(&self.id);
    }
}

impl Scripts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a job about to be sent.
    pub fn tag(self: &Arc<Self>, mark: ScriptMark) -> ScriptTag {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let run = Arc::new(Run {
            mark,
            head: AtomicBool::new(false),
        });
        self.lock().insert(id, run.clone());
        ScriptTag {
            id,
            run,
            scripts: self.clone(),
        }
    }

    /// The marks of the jobs now at the head of their connections: the only ones that may be
    /// running.
    pub fn heads(&self) -> Vec<ScriptMark> {
        self.lock()
            .values()
            .filter(|r| r.head.load(Ordering::Acquire))
            .map(|r| r.mark.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_counts_once_at_the_head_and_leaves_when_dropped() {
        let scripts = Arc::new(Scripts::default());
        let mark = ScriptMark {
            owner: Some("a".into()),
            eval: true,
            function: false,
        };
        let first = scripts.tag(mark.clone());
        let second = scripts.tag(ScriptMark::default());
        assert!(scripts.heads().is_empty(), "queued, not at the head");
        first.at_head();
        assert_eq!(scripts.heads(), vec![mark]);
        drop(first);
        second.at_head();
        assert_eq!(scripts.heads(), vec![ScriptMark::default()]);
        drop(second);
        assert!(scripts.lock().is_empty());
    }
}

//! CLIENT PAUSE … WRITE as respite forwarded it: whether a pause is in force now, and which
//! commands it holds. While one is, those commands go upstream on a pinned connection of the
//! client's own (see `session::commands::pause`), so the upstream holds each on its own
//! connection, as it holds a direct client's, and no shared connection carries one: a paused
//! write there held every client multiplexed behind it (a CLIENT UNPAUSE included) until
//! respite's command deadline.
//!
//! Only pauses respite forwarded are known (a pause set by a client connected straight to the
//! upstream is not), and only WRITE pauses are tracked: a pause of ALL holds every command
//! (respite's own among them, as it holds every client's on one server).
use crate::command::{CommandSpec, Flags};
use std::sync::Mutex;
use tokio::time::Instant;

#[derive(Default)]
pub(crate) struct Pause {
    /// When the WRITE pause in force ends (`None`: none in force).
    until: Mutex<Option<Instant>>,
}

impl Pause {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream accepted `CLIENT PAUSE <ms> WRITE`: in force for `ms` from now (a later
    /// pause replaces an earlier one, as on one server).
    pub fn write_paused(&self, ms: u64) {
        *self.lock() = Some(Instant::now() + std::time::Duration::from_millis(ms));
    }

    /// The upstream accepted `CLIENT UNPAUSE`, or a pause of ALL replaced the WRITE pause.
    pub fn unpaused(&self) {
        *self.lock() = None;
    }

    /// Whether a WRITE pause respite forwarded holds `spec` now.
    pub fn holds(&self, spec: &CommandSpec) -> bool {
        held_by_write_pause(spec) && self.lock().is_some_and(|until| Instant::now() < until)
    }
}

/// What a WRITE pause holds on Redis 7.0: commands flagged `write` or `may_replicate` (EVAL,
/// EVALSHA, FCALL, PUBLISH, SPUBLISH, PFCOUNT; Redis 7.0's `COMMAND` does not list that flag).
/// A script declared `no-writes` is not held by the upstream; sent the same way, its reply just
/// comes at once.
pub(crate) fn held_by_write_pause(spec: &CommandSpec) -> bool {
    spec.flags.contains(Flags::WRITE)
        || matches!(
            spec.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount"
        )
}

/// The pause a `CLIENT PAUSE timeout [WRITE|ALL]` sets: its milliseconds, and whether it is a
/// WRITE pause; `None` for arguments the upstream would refuse.
pub(crate) fn parse(args: &[bytes::Bytes]) -> Option<(u64, bool)> {
    let ms = std::str::from_utf8(args.get(2)?)
        .ok()?
        .parse::<u64>()
        .ok()?;
    let write = match args.get(3) {
        None => false,
        Some(m) if m.eq_ignore_ascii_case(b"write") => true,
        Some(m) if m.eq_ignore_ascii_case(b"all") => false,
        Some(_) => return None,
    };
    (args.len() <= 4).then_some((ms, write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn held_while_in_force() {
        let p = Pause::default();
        let set = crate::command::lookup("set").unwrap();
        let get = crate::command::lookup("get").unwrap();
        let eval = crate::command::lookup("eval").unwrap();
        assert!(!p.holds(set));
        p.write_paused(60_000);
        assert!(p.holds(set) && p.holds(eval) && !p.holds(get));
        p.write_paused(0);
        assert!(!p.holds(set), "expired");
        p.write_paused(1000);
        p.unpaused();
        assert!(!p.holds(set));
        assert_eq!(parse(&args("CLIENT PAUSE 100 write")), Some((100, true)));
        assert_eq!(parse(&args("CLIENT PAUSE 100")), Some((100, false)));
        assert_eq!(parse(&args("CLIENT PAUSE 100 ALL")), Some((100, false)));
        assert_eq!(parse(&args("CLIENT PAUSE x")), None);
        assert_eq!(parse(&args("CLIENT PAUSE 1 WRITE y")), None);
    }
}

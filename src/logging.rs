//! Log output: where lines go and how they look (`log.level`, `log.format`), and [`Repeats`],
//! which keeps a warning that repeats during an outage from flooding the log.
//!
//! Lines go to stderr, as text or as one JSON object per line; colour codes only when stderr is a
//! terminal, so files and journals get plain text. Nothing here may log a secret. The startup
//! summary is the server's (`server::Listeners::log_summary`): logging imports no part it logs for.
use crate::config::Config;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::config::{LogFormat as Format, UnknownFormat};

/// Install the process's log subscriber (once, from `main`).
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        Format::Text => builder.init(),
        // The span list says nothing here (respite logs events, not spans).
        Format::Json => builder.json().with_span_list(false).init(),
    }
}

/// A limit on how often one warning is logged: at most once per window, with the number of
/// repeats left out since the last line. One `static` per call site, so different warnings never
/// hide each other.
///
/// ```ignore
/// static REPEATS: Repeats = Repeats::new(Duration::from_secs(30));
/// if let Some(suppressed) = REPEATS.check() { warn!(suppressed, "…") }
/// ```
pub struct Repeats {
    window_ms: u64,
    /// Milliseconds since [`epoch`] of the last line logged, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Repeats {
    pub const fn new(window: Duration) -> Repeats {
        Repeats {
            window_ms: window.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(repeats left out since the last line)` when this one should be logged, else `None`
    /// (and it is counted).
    pub fn check(&self) -> Option<u64> {
        self.check_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    fn check_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.window_ms;
        // Of racing callers one wins the exchange and logs; the others count as repeats.
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_log_once_per_window_and_count_the_rest() {
        let r = Repeats::new(Duration::from_secs(10));
        assert_eq!(r.check_at(1), Some(0));
        assert_eq!(r.check_at(2), None);
        assert_eq!(r.check_at(9_000), None);
        assert_eq!(r.check_at(10_001), Some(2));
        assert_eq!(r.check_at(10_002), None);
        assert_eq!(r.check_at(30_000), Some(1));
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("TEXT".parse::<Format>().unwrap(), Format::Text);
        assert!("yaml".parse::<Format>().is_err());
    }
}

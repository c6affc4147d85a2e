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
        Format::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .init(),
    }
}

/// One JSON object per event, in tracing-subscriber's layout (`timestamp`, `level`, `fields`,
/// `target`, and `span` with the current span's fields and name), except that a field logged as
/// a list (`needs_restart = ?sections`) is a JSON array, where tracing-subscriber's own JSON
/// writes every `Debug` value as a string holding it.
struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        use tracing_subscriber::fmt::time::FormatTime;
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(
            &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
        )?;
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("fields".into(), Value::Object(fields));
        line.insert("target".into(), meta.target().into());
        if let Some(span) = ctx.lookup_current() {
            let ext = span.extensions();
            let mut fields: Map<String, Value> = ext
                .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                .and_then(|f| serde_json::from_str(f).ok())
                .unwrap_or_default();
            fields.insert("name".into(), span.name().into());
            line.insert("span".into(), Value::Object(fields));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        // A list's `Debug` (`["listen", "upstream"]`) is a JSON array when its items are plain
        // strings or numbers; anything else stays a string. The message never is a list.
        let value = match field.name() {
            "message" => text.into(),
            _ if text.starts_with('[') => match serde_json::from_str(&text) {
                Ok(array @ serde_json::Value::Array(_)) => array,
                _ => text.into(),
            },
            _ => text.into(),
        };
        self.0.insert(field.name().into(), value);
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

    /// A JSON line: the layout tracing-subscriber writes, lists as arrays, span fields kept.
    #[test]
    fn json_lines_write_lists_as_arrays() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let sections = vec!["listen", "upstream"];
            let _span = tracing::info_span!("client", id = 7).entered();
            tracing::info!(needs_restart = ?sections, n = 2, odd = ?"[x", "reloaded");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "reloaded");
        assert_eq!(
            line["fields"]["needs_restart"],
            serde_json::json!(["listen", "upstream"])
        );
        assert_eq!(line["fields"]["n"], 2);
        assert_eq!(line["fields"]["odd"], "\"[x\"");
        assert_eq!(line["span"], serde_json::json!({"id": 7, "name": "client"}));
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("TEXT".parse::<Format>().unwrap(), Format::Text);
        assert!("yaml".parse::<Format>().is_err());
    }
}

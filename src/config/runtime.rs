//! `[log]` and `[runtime]`: the log filter and the tokio runtime's shape and drain time.
use super::{Check, ConfigError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    level: String,
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl RawLog {
    /// The level or filter, lower-cased, once tracing's filter syntax accepts it.
    pub(super) fn validate(&self, c: &Check) -> Result<String, ConfigError> {
        let level = self.level.to_ascii_lowercase();
        // tracing reads a bare word it does not know (`verbose`) as a target name and then logs
        // nothing: every directive must end in a level.
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let directives_ok = level.split(',').map(str::trim).all(|d| {
            let lvl = d.rsplit_once('=').map_or(d, |(_, l)| l);
            d.is_empty() || levels.contains(&lvl)
        });
        if !directives_ok || tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(c.invalid(
                "log.level",
                format!(
                    "`{level}` is not a level (off, error, warn, info, debug, trace) or a \
                     filter of target=level directives"
                ),
            ));
        }
        Ok(level)
    }

    pub(super) fn format(&self, c: &Check) -> Result<LogFormat, ConfigError> {
        self.format
            .parse()
            .map_err(|e: UnknownFormat| c.invalid("log.format", e.to_string()))
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (tracing's default layout).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// An unknown `log.format`, as the configuration reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a log format (text or json)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<LogFormat, UnknownFormat> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownFormat(s.into())),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRuntime {
    worker_threads: i64,
    pub(super) shutdown_grace_ms: i64,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            worker_threads: 1,
            shutdown_grace_ms: 5000,
        }
    }
}

impl RawRuntime {
    pub(super) fn worker_threads(&self, c: &Check) -> Result<usize, ConfigError> {
        if self.worker_threads < 0 {
            return Err(c.invalid(
                "runtime.worker_threads",
                "must be 0 (one per core) or more".into(),
            ));
        }
        Ok(self.worker_threads as usize)
    }
}

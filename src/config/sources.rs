//! Where each key came from: the file, the environment or a flag, layered in that order into one
//! TOML table, and which of them (and which line) an error should blame.
//!
//! Owns the `RESPITE_<SECTION>_<KEY>` naming and the light line scans that put a line number on
//! an error; it must never validate a value (the sections do that).
use super::ConfigError;

/// Overrides from the command line or the environment: `(dotted key, value)` pairs, applied
/// after the file. Values are TOML literals when they parse as one, strings otherwise.
pub type Overrides = Vec<(String, String)>;

/// Sections whose keys may be overridden by `RESPITE_<SECTION>_<KEY>` environment variables.
/// A section that is a prefix of another (`local`, `local_only`) comes after it: the longest wins.
const SECTIONS: &[&str] = &[
    "listen",
    "limits",
    "upstream",
    "admin",
    "log",
    "runtime",
    "local_only",
    "local",
    "health",
    "near_cache",
];

/// Environment overrides: `RESPITE_UPSTREAM_URL=…` sets `upstream.url`; `REDIS_URL` sets
/// `upstream.url` too, with lower precedence than `RESPITE_UPSTREAM_URL`.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Overrides {
    let mut redis_url = None;
    let mut out = Vec::new();
    for (name, value) in vars {
        if name == "REDIS_URL" {
            redis_url = Some(value);
            continue;
        }
        let Some(rest) = name.strip_prefix("RESPITE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        for section in SECTIONS {
            if let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
                out.push((format!("{section}.{key}"), value.clone()));
                break;
            }
        }
    }
    if let Some(url) = redis_url {
        out.insert(0, ("upstream.url".into(), url));
    }
    out
}

/// Set `key` (`section.field`) in `table` to `value`; `origin` names the override in errors.
pub(super) fn apply_override(
    table: &mut toml::Table,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let Some((section, field)) = key.split_once('.') else {
        return Err(ConfigError::Parse {
            origin: origin.into(),
            message: format!("override `{key}` must be of the form section.key"),
        });
    };
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(field.to_string(), parsed);
            Ok(())
        }
        _ => Err(ConfigError::Parse {
            origin: origin.into(),
            message: format!("`{section}` is not a table"),
        }),
    }
}

/// The field serde's "unknown field" message names, if it is one.
pub(super) fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

/// The 1-based line of `section.key` in a TOML text, found by a light scan of table headers.
pub(super) fn line_of(source: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let mut current = String::new();
    for (i, line) in source.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
        } else if current == section
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return Some(i + 1);
        }
    }
    None
}

/// The 1-based line of the first `field = …` among `lines` for which `ok(line index)` holds.
pub(super) fn line_of_field<'a>(
    mut lines: impl Iterator<Item = (usize, &'a str)>,
    field: &str,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    lines.find_map(|(n, line)| {
        let (k, _) = line.split_once('=')?;
        (k.trim() == field && ok(n)).then_some(n + 1)
    })
}

//! Where each key came from: the file, the environment or a flag, layered in that order into one
//! TOML table, and which of them (and which line) an error should blame.
//!
//! Owns the `RESPITE_<SECTION>_<KEY>` naming and the light line scans that put a line number on
//! an error; it must never validate a value (the sections do that).
use super::ConfigError;

/// Overrides from the command line or the environment: `(dotted key, value)` pairs, applied
/// after the file. Values are TOML literals when they parse as one, strings otherwise.
pub type Overrides = Vec<(String, String)>;

/// One override of a key (`upstream.url`) and the source an error about it should name: the
/// environment variable or the command-line flag. No `Debug`: values may be secrets.
#[derive(Clone)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub origin: String,
}

impl Setting {
    pub fn new(key: &str, value: &str, origin: &str) -> Setting {
        Setting {
            key: key.to_string(),
            value: value.to_string(),
            origin: origin.to_string(),
        }
    }
}

/// Variables that start with `RESPITE_` and are not settings: the command line's own.
const NOT_SETTINGS: &[&str] = &["RESPITE_CONFIG"];

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
/// `upstream.url` too, with lower precedence than `RESPITE_UPSTREAM_URL`. Each names its
/// variable for errors; a `RESPITE_*` variable that names no section is an error.
pub fn env_settings(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Setting>, ConfigError> {
    let mut redis_url = None;
    let mut out = Vec::new();
    for (name, value) in vars {
        if name == "REDIS_URL" {
            redis_url = Some(Setting::new(
                "upstream.url",
                &value,
                "environment variable REDIS_URL",
            ));
            continue;
        }
        let Some(rest) = name.strip_prefix("RESPITE_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let key = SECTIONS.iter().find_map(|section| {
            let key = rest.strip_prefix(section)?.strip_prefix('_')?;
            (!key.is_empty()).then(|| format!("{section}.{key}"))
        });
        match key {
            Some(key) => out.push(Setting::new(
                &key,
                &value,
                &format!("environment variable {name}"),
            )),
            None => {
                return Err(ConfigError::UnknownVariable {
                    name,
                    sections: SECTIONS.join(", "),
                });
            }
        }
    }
    if let Some(url) = redis_url {
        out.insert(0, url);
    }
    Ok(out)
}

/// [`env_settings`] as bare `(key, value)` pairs, leaving out variables that name no setting.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Overrides {
    let known = vars
        .into_iter()
        .filter(|(name, _)| env_settings([(name.clone(), String::new())]).is_ok());
    env_settings(known)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.key, s.value))
        .collect()
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

/// The 1-based line of byte offset `at` in `source`.
pub(super) fn line_at(source: &str, at: usize) -> usize {
    source.as_bytes()[..at.min(source.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
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

/// The 1-based line where `key` (`limits.max_args`, `tenant[1].allow[3]`) is written, by toml's
/// own spans: found however the file spells it (dotted keys, inline tables). When the key itself
/// is not written, the line of the nearest enclosing one that is (a rule's table).
pub(super) fn key_line(source: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(source).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    'segments: for segment in key.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next()?;
        let Some((k, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            break;
        };
        found = Some(k.span().start);
        for index in parts {
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            let DeValue::Array(items) = value.get_ref() else {
                break 'segments;
            };
            let Some(item) = items.get(index) else {
                break 'segments;
            };
            found = Some(item.span().start);
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| line_at(source, at))
}

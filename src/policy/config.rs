//! The `[[tenant]]` section of proxy.toml: raw serde structs and their validation into [`Tenants`].
//!
//! Follows `config/mod.rs`: unknown fields are errors, and every error names its key
//! (`tenant[1].prefix`) and, through the caller's `where_is`, where it was set. The lead wires this
//! into `RawConfig` as two fields, `default_tenant` and `tenant`; nothing here reads files.
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::acl::AllowSet;
use super::auth::{Credentials, Tenant, Tenants};
use super::sha256;
use super::ttl::{OnExcess, TtlRule};
use crate::config::ConfigError;

/// The tenant part of proxy.toml, for callers (and tests) that parse it on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTenants {
    pub default_tenant: Option<String>,
    pub tenant: Vec<RawTenant>,
}

/// One `[[tenant]]` entry as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTenant {
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// 64 hex digits: the SHA-256 of the password, so the file need not hold it in clear.
    pub password_sha256: Option<String>,
    pub prefix: String,
    /// ACL-style rules applied in order: `@category`, `+@category`, `-@category`, `command`,
    /// `-command`, `parent|sub`, `@all`/`allcommands`. Nothing is allowed until a rule allows it.
    pub allow: Vec<String>,
    pub scripts: bool,
    pub sort_patterns: bool,
    pub max_value_bytes: Option<i64>,
    pub ttl: Vec<RawTtlRule>,
}

/// One `[[tenant.ttl]]` rule as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTtlRule {
    /// A Redis glob over the client's key name (without the tenant prefix).
    pub pattern: String,
    pub max_ms: Option<i64>,
    pub default_ms: Option<i64>,
    /// `cap` (the default) or `refuse`.
    pub on_excess: Option<String>,
}

/// Parse a TOML text holding only `default_tenant` and `[[tenant]]` entries (tests, tools).
pub fn from_toml(source: &str, origin: &str) -> Result<Tenants, ConfigError> {
    let raw: RawTenants = toml::from_str(source).map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    validate(
        raw.default_tenant.as_deref(),
        &raw.tenant,
        &|key| match tenant_key_line(source, key) {
            Some(line) => format!("{origin} line {line}"),
            None => origin.to_string(),
        },
    )
}

/// Validate the tenant section. `where_is` turns a key such as `tenant[1].prefix` into an origin
/// for the error (see [`tenant_key_line`] for finding its line in the file).
pub fn validate(
    default_tenant: Option<&str>,
    raw: &[RawTenant],
    where_is: &dyn Fn(&str) -> String,
) -> Result<Tenants, ConfigError> {
    let invalid = |key: String, message: String| ConfigError::Invalid {
        origin: where_is(&key),
        key,
        message,
    };
    let mut tenants = Vec::with_capacity(raw.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut usernames: HashMap<&str, usize> = HashMap::new();
    for (i, t) in raw.iter().enumerate() {
        let key = |field: &str| format!("tenant[{i}].{field}");
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            // Names become metric labels and appear in error texts: keep them plain.
            return Err(invalid(
                key("name"),
                format!(
                    "`{}` must be 1 to 64 of A-Z a-z 0-9 _ - .",
                    t.name.escape_debug()
                ),
            ));
        }
        if let Some(j) = names.insert(&t.name, i) {
            return Err(invalid(
                key("name"),
                format!("`{}` is also the name of tenant[{j}]", t.name),
            ));
        }
        let credentials = match (&t.username, &t.password, &t.password_sha256) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(invalid(
                    key("username"),
                    format!("tenant `{}` has a password but no username", t.name),
                ));
            }
            (Some(u), pw, sha) => {
                if u.is_empty()
                    || u.bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    return Err(invalid(
                        key("username"),
                        format!("`{}` must be non-empty, without spaces", u.escape_debug()),
                    ));
                }
                if let Some(j) = usernames.insert(u, i) {
                    return Err(invalid(
                        key("username"),
                        format!("`{u}` is also the username of tenant[{j}]"),
                    ));
                }
                let digest = match (pw, sha) {
                    (Some(pw), None) => sha256::digest(pw.as_bytes()),
                    (None, Some(hex)) => sha256::from_hex(hex).ok_or_else(|| {
                        invalid(
                            key("password_sha256"),
                            "must be 64 hex digits (the SHA-256 of the password)".into(),
                        )
                    })?,
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            key("password"),
                            "set password or password_sha256, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            key("password"),
                            format!("user `{u}` needs password or password_sha256"),
                        ));
                    }
                };
                Some(Credentials {
                    username: u.clone(),
                    digest,
                })
            }
        };
        if t.prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(invalid(
                key("prefix"),
                "must not contain control characters".into(),
            ));
        }
        if t.sort_patterns && (t.prefix.contains('*') || t.prefix.contains("->")) {
            // SORT patterns substitute at the first `*` and read a hash field after `->`: a
            // prefix holding either would change what the prefixed pattern means.
            return Err(invalid(
                key("sort_patterns"),
                format!(
                    "cannot be used with prefix `{}`, which contains `*` or `->`",
                    t.prefix
                ),
            ));
        }
        let allowed = AllowSet::parse(&t.allow)
            .map_err(|(n, msg)| invalid(format!("tenant[{i}].allow[{n}]"), msg))?;
        let max_value_bytes = match t.max_value_bytes {
            None => None,
            Some(v) if v > 0 => Some(v as usize),
            Some(v) => {
                return Err(invalid(
                    key("max_value_bytes"),
                    format!("must be a positive integer, got {v}"),
                ));
            }
        };
        let mut ttl = Vec::with_capacity(t.ttl.len());
        for (r, rule) in t.ttl.iter().enumerate() {
            let key = |field: &str| format!("tenant[{i}].ttl[{r}].{field}");
            if rule.pattern.is_empty() {
                return Err(invalid(
                    key("pattern"),
                    "must not be empty (use \"*\")".into(),
                ));
            }
            let positive = |field: &str, v: Option<i64>| match v {
                Some(v) if v <= 0 => Err(invalid(
                    key(field),
                    format!("must be a positive number of milliseconds, got {v}"),
                )),
                v => Ok(v),
            };
            let max_ms = positive("max_ms", rule.max_ms)?;
            let default_ms = positive("default_ms", rule.default_ms)?;
            let default_ms = match (max_ms, default_ms) {
                (None, None) => {
                    return Err(invalid(
                        key("max_ms"),
                        "a TTL rule needs max_ms, default_ms or both".into(),
                    ));
                }
                (Some(max), Some(d)) if d > max => {
                    return Err(invalid(
                        key("default_ms"),
                        format!("{d} is over max_ms ({max})"),
                    ));
                }
                // Without a default, keys written without a TTL would outlive the cap.
                (Some(max), None) => Some(max),
                (_, d) => d,
            };
            let on_excess = match rule.on_excess.as_deref() {
                None | Some("cap") => OnExcess::Cap,
                Some("refuse") => OnExcess::Refuse,
                Some(other) => {
                    return Err(invalid(
                        key("on_excess"),
                        format!("`{other}` is not `cap` or `refuse`"),
                    ));
                }
            };
            ttl.push(TtlRule {
                pattern: Bytes::copy_from_slice(rule.pattern.as_bytes()),
                max_ms,
                default_ms,
                on_excess,
            });
        }
        tenants.push(Tenant::new(
            t.name.clone(),
            credentials,
            Bytes::copy_from_slice(t.prefix.as_bytes()),
            allowed,
            t.scripts,
            t.sort_patterns,
            max_value_bytes,
            ttl,
        ));
    }
    // A key belongs to one namespace only if no prefix starts another: with `a:` and `a:b:`, the
    // key `b:x` of the first is the key `x` of the second.
    for (i, a) in raw.iter().enumerate() {
        for (j, b) in raw.iter().enumerate() {
            if i == j {
                continue;
            }
            if a.prefix.is_empty() {
                return Err(invalid(
                    format!("tenant[{i}].prefix"),
                    format!(
                        "tenant `{}` has no prefix, which is allowed only when it is the only tenant",
                        a.name
                    ),
                ));
            }
            if b.prefix.starts_with(&a.prefix) {
                return Err(invalid(
                    format!("tenant[{j}].prefix"),
                    format!(
                        "`{}` of tenant `{}` starts with `{}`, the prefix of tenant `{}`",
                        b.prefix, b.name, a.prefix, a.name
                    ),
                ));
            }
        }
    }
    let default = match default_tenant {
        None | Some("") => None,
        Some(name) => match names.get(name) {
            Some(&i) => Some(i),
            None => {
                return Err(invalid(
                    "default_tenant".into(),
                    format!("no tenant is named `{name}`"),
                ));
            }
        },
    };
    for (i, t) in tenants.iter().enumerate() {
        if t.username().is_none() && default != Some(i) {
            return Err(invalid(
                format!("tenant[{i}].username"),
                format!(
                    "tenant `{}` has no username and is not the default_tenant, so no client can reach it",
                    t.name
                ),
            ));
        }
    }
    Ok(Tenants::new(
        tenants.into_iter().map(Arc::new).collect(),
        default,
    ))
}

/// The 1-based line of a key such as `tenant[1].prefix` or `tenant[1].ttl[0].max_ms` in a TOML
/// text that writes tenants as `[[tenant]]` / `[[tenant.ttl]]` tables, by a light scan of headers.
pub fn tenant_key_line(source: &str, key: &str) -> Option<usize> {
    if key == "default_tenant" {
        return line_of_field(source.lines().enumerate(), "default_tenant", |_| true);
    }
    let rest = key.strip_prefix("tenant[")?;
    let (index, rest) = rest.split_once("].")?;
    let index: usize = index.parse().ok()?;
    let (rule, field) = match rest.strip_prefix("ttl[") {
        Some(r) => {
            let (n, f) = r.split_once("].")?;
            (Some(n.parse::<usize>().ok()?), f)
        }
        None => (None, rest),
    };
    // Strip `allow[3]` to `allow`: the whole list is on one line or starts on it.
    let field = field.split('[').next()?;
    let (mut tenant, mut ttl) = (None::<usize>, None::<usize>);
    let mut section = "";
    for (n, line) in source.lines().enumerate() {
        let t = line.trim();
        if t == "[[tenant]]" {
            tenant = Some(tenant.map_or(0, |x| x + 1));
            ttl = None;
            section = "tenant";
        } else if t == "[[tenant.ttl]]" {
            ttl = Some(ttl.map_or(0, |x| x + 1));
            section = "ttl";
        } else if t.starts_with('[') {
            section = "";
        } else if tenant == Some(index)
            && ((rule.is_none() && section == "tenant") || (section == "ttl" && ttl == rule))
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == field
        {
            return Some(n + 1);
        }
    }
    None
}

fn line_of_field<'a>(
    mut lines: impl Iterator<Item = (usize, &'a str)>,
    field: &str,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    lines.find_map(|(n, line)| {
        let (k, _) = line.split_once('=')?;
        (k.trim() == field && ok(n)).then_some(n + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Tenants, String> {
        from_toml(src, "proxy.toml").map_err(|e| e.to_string())
    }

    const TWO: &str = r#"
default_tenant = "anon"

[[tenant]]
name = "anon"
prefix = "anon:"
allow = ["@read"]

[[tenant]]
name = "a"
username = "alice"
password = "pw"
prefix = "a:"
allow = ["@read", "@write", "-@dangerous", "flushdb"]
max_value_bytes = 1024

[[tenant.ttl]]
pattern = "session:*"
max_ms = 60000
default_ms = 1000

[[tenant.ttl]]
pattern = "*"
max_ms = 3600000
on_excess = "refuse"
"#;

    #[test]
    fn valid_config() {
        let t = parse(TWO).unwrap();
        assert_eq!(t.default_tenant().unwrap().name, "anon");
        let a = t.authenticate(b"alice", b"pw").unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(&a.prefix[..], b"a:");
        assert_eq!(a.max_value_bytes, Some(1024));
        assert_eq!(a.ttl_rules().len(), 2);
        assert_eq!(a.ttl_rules()[1].default_ms, Some(3_600_000));
        assert_eq!(a.ttl_rules()[1].on_excess, OnExcess::Refuse);
    }

    #[test]
    fn errors_name_key_and_line() {
        let bad = TWO.replace("prefix = \"a:\"", "prefix = \"anon:x\"");
        let err = parse(&bad).unwrap_err();
        assert!(err.contains("tenant[1].prefix"), "{err}");
        assert!(err.contains("starts with `anon:`"), "{err}");
        assert!(err.contains("line 13"), "{err}");

        let bad = TWO.replace("default_ms = 1000", "default_ms = 70000");
        let err = parse(&bad).unwrap_err();
        assert!(
            err.contains("tenant[1].ttl[0].default_ms") && err.contains("line 20"),
            "{err}"
        );

        let bad = TWO.replace("\"flushdb\"", "\"flushdbx\"");
        let err = parse(&bad).unwrap_err();
        assert!(
            err.contains("tenant[1].allow[3]") && err.contains("flushdbx"),
            "{err}"
        );

        let bad = TWO.replace("\"-@dangerous\"", "\"-@dangerus\"");
        let err = parse(&bad).unwrap_err();
        assert!(err.contains("@dangerus"), "{err}");

        let bad = TWO.replace("on_excess = \"refuse\"", "on_excess = \"drop\"");
        assert!(parse(&bad).unwrap_err().contains("`drop`"));

        let bad = TWO.replace("max_value_bytes", "max_value_byte");
        assert!(parse(&bad).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn uniqueness_and_reachability() {
        let dup = TWO.replace("name = \"a\"", "name = \"anon\"");
        assert!(parse(&dup).unwrap_err().contains("also the name"));
        let unreachable = TWO.replace("default_tenant = \"anon\"", "");
        assert!(
            parse(&unreachable)
                .unwrap_err()
                .contains("no client can reach it")
        );
        let missing = TWO.replace("default_tenant = \"anon\"", "default_tenant = \"b\"");
        assert!(parse(&missing).unwrap_err().contains("default_tenant"));
        let no_pw = TWO.replace("password = \"pw\"", "");
        assert!(parse(&no_pw).unwrap_err().contains("needs password"));
        let dup_user = r#"
[[tenant]]
name = "a"
username = "u"
password = "x"
prefix = "a:"
[[tenant]]
name = "b"
username = "u"
password = "y"
prefix = "b:"
"#;
        assert!(parse(dup_user).unwrap_err().contains("also the username"));
    }

    #[test]
    fn prefixes() {
        let one = "[[tenant]]\nname = \"only\"\nusername = \"u\"\npassword = \"p\"\n";
        assert!(
            parse(one).is_ok(),
            "an empty prefix is fine for a lone tenant"
        );
        let two = format!(
            "{one}[[tenant]]\nname = \"b\"\nusername = \"v\"\npassword = \"p\"\nprefix = \"b:\"\n"
        );
        assert!(parse(&two).unwrap_err().contains("no prefix"));
        let same = TWO.replace("prefix = \"a:\"", "prefix = \"anon:\"");
        assert!(parse(&same).unwrap_err().contains("starts with"));
        let star = TWO.replace("prefix = \"a:\"", "prefix = \"a*\"\nsort_patterns = true");
        assert!(parse(&star).unwrap_err().contains("sort_patterns"));
    }

    #[test]
    fn password_sha256() {
        let hex: String = sha256::digest(b"pw")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let src = TWO.replace("password = \"pw\"", &format!("password_sha256 = \"{hex}\""));
        let t = parse(&src).unwrap();
        assert!(t.authenticate(b"alice", b"pw").is_ok());
        let bad = TWO.replace("password = \"pw\"", "password_sha256 = \"xyz\"");
        assert!(parse(&bad).unwrap_err().contains("64 hex digits"));
    }
}

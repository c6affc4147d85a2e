//! The runtime tenants, built from the validated `[[tenant]]` section ([`TenantsConfig`]).
//!
//! Configuration validates (names, prefixes, allow rules, TTL rules); this only turns what it
//! validated into [`Tenant`]s, hashing clear-text passwords so they are never kept.
use std::sync::Arc;

use super::auth::{Credentials, Tenant, Tenants};
use super::keyspace::Events;
use super::sha256;
use super::ttl_rule::{OnExcess, TtlRule};
use crate::config::{ConfigError, ExcessTtl, TenantSecret, TenantsConfig};

impl Tenants {
    /// `self`, after a reload, keeping what `old`'s tenants of the same name changed at run time:
    /// their CONFIG SET notify-keyspace-events (one setting, which sessions and subscriptions
    /// share), unless the file's `notify_keyspace_events` for the tenant changed.
    pub fn carry_over(mut self, old: &Tenants) -> Tenants {
        for t in self.all.iter_mut() {
            let Some(mine) = Arc::get_mut(t) else {
                continue;
            };
            if let Some(was) = old.all.iter().find(|o| o.name == mine.name)
                && was.events_configured == mine.events_configured
            {
                mine.events = was.events.clone();
            }
        }
        self
    }

    /// Every configured tenant, ready for sessions to authenticate against.
    pub fn from_config(config: &TenantsConfig) -> Tenants {
        let all = config
            .tenants
            .iter()
            .map(|t| {
                let credentials = t
                    .credentials
                    .as_ref()
                    .map(|(username, secret)| Credentials {
                        username: username.clone(),
                        digest: match secret {
                            TenantSecret::Password(pw) => sha256::digest(pw.expose().as_bytes()),
                            TenantSecret::Sha256(d) => *d,
                        },
                    });
                let ttl = t
                    .ttl
                    .iter()
                    .map(|r| TtlRule {
                        pattern: r.pattern.clone(),
                        max_ms: r.max_ms,
                        default_ms: r.default_ms,
                        on_excess: match r.on_excess {
                            ExcessTtl::Cap => OnExcess::Cap,
                            ExcessTtl::Refuse => OnExcess::Refuse,
                        },
                    })
                    .collect();
                let mut tenant = Tenant::new(
                    t.name.clone(),
                    credentials,
                    t.prefix.clone(),
                    t.allowed.clone(),
                    t.scripts,
                    t.sort_patterns,
                    t.max_value_bytes,
                    ttl,
                );
                tenant.db = t.db;
                tenant.server_config = t.server_config.clone();
                tenant.events = Arc::new(Events::new(t.notify_keyspace_events));
                tenant.events_configured = t.notify_keyspace_events;
                Arc::new(tenant)
            })
            .collect();
        Tenants::new(all, config.default)
    }
}

/// Parse and build a TOML text holding only `default_tenant` and `[[tenant]]` entries (tests,
/// tools).
pub fn from_toml(source: &str, origin: &str) -> Result<Tenants, ConfigError> {
    crate::config::tenants::from_toml(source, origin).map(|c| Tenants::from_config(&c))
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
    fn notify_keyspace_events_is_checked_and_survives_a_reload() {
        let bad = TWO.replace("max_value_bytes = 1024", "notify_keyspace_events = \"KQ\"");
        let err = parse(&bad).unwrap_err();
        assert!(
            err.contains("tenant[1].notify_keyspace_events") && err.contains("Ag$lshzxeKEtmdn"),
            "{err}"
        );
        let src = TWO.replace("max_value_bytes = 1024", "notify_keyspace_events = \"Ex\"");
        let old = parse(&src).unwrap();
        let a = old.authenticate(b"alice", b"pw").unwrap();
        assert_eq!(super::super::keyspace::render(a.events.get()), "xE");
        // The tenant's CONFIG SET, then a reload of the same file: the setting stays, shared.
        a.events.set(0);
        let same = parse(&src).unwrap().carry_over(&old);
        let again = same.authenticate(b"alice", b"pw").unwrap();
        assert!(Arc::ptr_eq(&again.events, &a.events));
        // The file's value changed: it applies.
        let changed = src.replace("\"Ex\"", "\"KA\"");
        let new = parse(&changed).unwrap().carry_over(&old);
        let a2 = new.authenticate(b"alice", b"pw").unwrap();
        assert_eq!(super::super::keyspace::render(a2.events.get()), "AK");
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

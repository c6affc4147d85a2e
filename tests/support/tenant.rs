//! `[[tenant]]` tables for a test's proxy.toml: every test that runs respite with tenants builds
//! them here, so a change to the tenant keys is made once. Only the tests of the configuration's
//! own refusals (`config_errors.rs`, `policy_adversarial.rs`) write tenant TOML by hand.

/// One `[[tenant]]` table of a proxy.toml: name, login (clear or hashed password), prefix,
/// allowed commands, value cap, scripts, database, TTL rules.
pub struct TenantToml {
    name: String,
    prefix: String,
    password: Option<Password>,
    allow: Vec<String>,
    max_value_bytes: Option<u64>,
    scripts: bool,
    db: Option<u32>,
    notify: Option<String>,
    ttl: Vec<(String, Option<u64>, u64)>,
}

enum Password {
    Clear(String),
    Sha256(String),
}

impl TenantToml {
    pub fn new(name: &str, prefix: &str) -> TenantToml {
        TenantToml {
            name: name.into(),
            prefix: prefix.into(),
            password: None,
            allow: Vec::new(),
            max_value_bytes: None,
            scripts: false,
            db: None,
            notify: None,
            ttl: Vec::new(),
        }
    }

    /// Clients log in as the tenant's name with this password.
    pub fn login(mut self, password: &str) -> TenantToml {
        self.password = Some(Password::Clear(password.into()));
        self
    }

    /// Clients log in as the tenant's name with the password whose SHA-256 is `hex`.
    pub fn login_sha256(mut self, hex: &str) -> TenantToml {
        self.password = Some(Password::Sha256(hex.into()));
        self
    }

    pub fn allow(mut self, commands: &[&str]) -> TenantToml {
        self.allow = commands.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn max_value_bytes(mut self, bytes: u64) -> TenantToml {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// Trusted with scripts (EVAL, FCALL, SCRIPT KILL, …).
    pub fn scripts(mut self) -> TenantToml {
        self.scripts = true;
        self
    }

    /// A database of its own on the upstream (`tenant.db`).
    pub fn db(mut self, db: u32) -> TenantToml {
        self.db = Some(db);
        self
    }

    /// Its `notify-keyspace-events` at start (`tenant.notify_keyspace_events`).
    pub fn notify(mut self, classes: &str) -> TenantToml {
        self.notify = Some(classes.into());
        self
    }

    /// A `[[tenant.ttl]]` rule: keys matching `pattern` live at most `max_ms` (if any) and
    /// `default_ms` when the client gives no TTL.
    pub fn ttl(mut self, pattern: &str, max_ms: Option<u64>, default_ms: u64) -> TenantToml {
        self.ttl.push((pattern.into(), max_ms, default_ms));
        self
    }
}

impl std::fmt::Display for TenantToml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "[[tenant]]\nname = {:?}", self.name)?;
        match &self.password {
            Some(Password::Clear(p)) => {
                writeln!(f, "username = {:?}\npassword = {p:?}", self.name)?
            }
            Some(Password::Sha256(h)) => {
                writeln!(f, "username = {:?}\npassword_sha256 = {h:?}", self.name)?
            }
            None => {}
        }
        writeln!(f, "prefix = {:?}\nallow = {:?}", self.prefix, self.allow)?;
        if let Some(bytes) = self.max_value_bytes {
            writeln!(f, "max_value_bytes = {bytes}")?;
        }
        if self.scripts {
            writeln!(f, "scripts = true")?;
        }
        if let Some(db) = self.db {
            writeln!(f, "db = {db}")?;
        }
        if let Some(n) = &self.notify {
            writeln!(f, "notify_keyspace_events = {n:?}")?;
        }
        // The rules come last: every key after `[[tenant.ttl]]` belongs to the rule.
        for (pattern, max_ms, default_ms) in &self.ttl {
            writeln!(f, "[[tenant.ttl]]\npattern = {pattern:?}")?;
            if let Some(max_ms) = max_ms {
                writeln!(f, "max_ms = {max_ms}")?;
            }
            writeln!(f, "default_ms = {default_ms}")?;
        }
        Ok(())
    }
}

/// Tenants `a` (prefix `a:`, password `pa`) and `b` (`b:`, `pb`), each allowed every command
/// and scripts: the pair the script and function confinement tests set against each other.
pub fn script_tenants_a_and_b() -> String {
    tenants(&[
        TenantToml::new("a", "a:")
            .login("pa")
            .allow(&["@all"])
            .scripts(),
        TenantToml::new("b", "b:")
            .login("pb")
            .allow(&["@all"])
            .scripts(),
    ])
}

/// The `[[tenant]]` tables of a proxy.toml.
pub fn tenants(tenants: &[TenantToml]) -> String {
    tenants.iter().map(|t| t.to_string()).collect()
}

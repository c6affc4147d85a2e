//! `[[tenant]]` tables for a test's proxy.toml, built from the few keys the tests vary. It must not
//! grow a key only one test uses: such a tenant is written out as TOML where it is used.

/// One `[[tenant]]` table of a proxy.toml, for the tests whose tenants differ only in these keys
/// (name, login, prefix, allowed commands, value cap, TTL rules). Tenants with other keys (hashed
/// passwords, say) are written out as TOML where they are used.
pub struct TenantToml {
    name: String,
    prefix: String,
    password: Option<String>,
    allow: Vec<String>,
    max_value_bytes: Option<u64>,
    ttl: Vec<(String, Option<u64>, u64)>,
}

impl TenantToml {
    pub fn new(name: &str, prefix: &str) -> TenantToml {
        TenantToml {
            name: name.into(),
            prefix: prefix.into(),
            password: None,
            allow: Vec::new(),
            max_value_bytes: None,
            ttl: Vec::new(),
        }
    }

    /// Clients log in as the tenant's name with this password.
    pub fn login(mut self, password: &str) -> TenantToml {
        self.password = Some(password.into());
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
        if let Some(password) = &self.password {
            writeln!(f, "username = {:?}\npassword = {password:?}", self.name)?;
        }
        writeln!(f, "prefix = {:?}\nallow = {:?}", self.prefix, self.allow)?;
        if let Some(bytes) = self.max_value_bytes {
            writeln!(f, "max_value_bytes = {bytes}")?;
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

/// The `[[tenant]]` tables of a proxy.toml.
pub fn tenants(tenants: &[TenantToml]) -> String {
    tenants.iter().map(|t| t.to_string()).collect()
}

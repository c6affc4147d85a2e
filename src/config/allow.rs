//! Which commands a tenant may run: ACL-style allow rules compiled to one flag per table entry.
//!
//! Deny by default: a command runs only if a rule allowed it and no later rule took it away, as
//! Redis's `ACL SETUSER` applies `+`/`-` rules in order. Compiled once at configuration time so a
//! request costs one index by the spec's dense id.
use crate::command::{AclCategories, CommandSpec, all, lookup};

/// One allow flag per command and subcommand, indexed by `CommandSpec::id`; and the rules that
/// apply to a command read from the upstream's own table (not in the built-in one): `@all` and
/// the ACL categories, in order, since a rule naming a command can only name a built-in one.
#[derive(Clone)]
pub struct AllowSet(Box<[bool]>, Vec<(bool, Option<AclCategories>)>);

impl std::fmt::Debug for AllowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = all()
            .iter()
            .filter(|s| self.permits(s))
            .map(|s| s.name)
            .collect();
        f.debug_tuple("AllowSet").field(&names).finish()
    }
}

impl AllowSet {
    /// Nothing allowed.
    pub fn none() -> Self {
        AllowSet(vec![false; all().len()].into_boxed_slice(), Vec::new())
    }

    /// Compile `rules` in order. On error, the index of the bad rule and why.
    pub fn parse(rules: &[String]) -> Result<Self, (usize, String)> {
        let mut set = Self::none();
        for (n, rule) in rules.iter().enumerate() {
            let rule = rule.trim();
            let (allow, body) = match rule.as_bytes().first() {
                Some(b'+') => (true, &rule[1..]),
                Some(b'-') => (false, &rule[1..]),
                _ => (true, rule),
            };
            if body.eq_ignore_ascii_case("@all") || body.eq_ignore_ascii_case("allcommands") {
                set.0.fill(allow);
                set.1.push((allow, None));
            } else if let Some(cat) = body.strip_prefix('@') {
                let bit = AclCategories::from_name(cat).ok_or_else(|| {
                    let known: Vec<String> = AclCategories::ALL
                        .names()
                        .map(|c| format!("@{c}"))
                        .collect();
                    (
                        n,
                        format!(
                            "unknown ACL category `@{cat}` (known: @all, {})",
                            known.join(", ")
                        ),
                    )
                })?;
                set.1.push((allow, Some(bit)));
                for spec in all() {
                    if spec.acl.contains(bit) {
                        set.0[spec.id as usize] = allow;
                    }
                }
            } else {
                let spec = lookup(&body.to_ascii_lowercase()).ok_or_else(|| {
                    (
                        n,
                        format!("unknown command `{body}`: not in respite's command table"),
                    )
                })?;
                set.0[spec.id as usize] = allow;
                // Naming a container (`config`) names all of it, as in Redis.
                for sub in spec.subcommands {
                    set.0[sub.id as usize] = allow;
                }
            }
        }
        Ok(set)
    }

    pub fn permits(&self, spec: &CommandSpec) -> bool {
        if let Some(&allowed) = self.0.get(spec.id as usize) {
            return allowed;
        }
        // Not built in: the last `@all` or category rule that covers it decides.
        self.1
            .iter()
            .rev()
            .find(|(_, cat)| cat.is_none_or(|c| spec.acl.contains(c)))
            .is_some_and(|(allow, _)| *allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[&str]) -> AllowSet {
        AllowSet::parse(&rules.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ok(set: &AllowSet, name: &str) -> bool {
        set.permits(lookup(name).unwrap())
    }

    #[test]
    fn deny_by_default_and_in_order() {
        let s = set(&[]);
        assert!(!ok(&s, "get"));
        let s = set(&["@read", "@write", "-@dangerous", "flushdb"]);
        assert!(ok(&s, "get") && ok(&s, "set") && ok(&s, "flushdb"));
        assert!(
            !ok(&s, "keys"),
            "@dangerous was removed after @read added it"
        );
        assert!(!ok(&s, "flushall"));
        let s = set(&["+@all", "-config", "+config|get"]);
        assert!(ok(&s, "config|get") && !ok(&s, "config|set"));
        let s = set(&["-@all", "+GET"]);
        assert!(ok(&s, "get") && !ok(&s, "set"));
    }

    #[test]
    fn errors_name_the_rule() {
        let bad = |r: &str| AllowSet::parse(&["@read".into(), r.into()]).unwrap_err();
        assert_eq!(bad("@nope").0, 1);
        assert!(bad("@nope").1.contains("@nope"));
        assert!(bad("getx").1.contains("getx"));
        assert!(bad("client|nope").1.contains("client|nope"));
    }
}

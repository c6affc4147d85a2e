//! Which commands are known to keep the upstream busy for long: scripts and functions, admin and
//! dangerous commands (DEBUG SLEEP, KEYS, FLUSHALL, SORT), blocking commands, and set algebra or
//! bit operations over whole values (BITOP, SUNIONSTORE, ZUNIONSTORE, …). The upstream's health
//! takes a silence with one of these in flight for work, not an outage (see
//! `upstream::activity`). A guess from the command alone, never from its arguments: a false
//! "slow" only gives a frozen upstream the busy grace before local-only mode takes over.
use super::{AclCategories, CommandSpec};

/// Whether `spec` is known to be able to run for seconds on the upstream.
pub fn known_slow(spec: &CommandSpec) -> bool {
    const SLOW: AclCategories = AclCategories::of(&[
        AclCategories::SCRIPTING,
        AclCategories::ADMIN,
        AclCategories::DANGEROUS,
        AclCategories::BLOCKING,
    ]);
    spec.acl.intersects(SLOW)
        || matches!(
            spec.name,
            "bitop"
                | "bitcount"
                | "sunion"
                | "sunionstore"
                | "sinter"
                | "sinterstore"
                | "sintercard"
                | "sdiff"
                | "sdiffstore"
                | "zunionstore"
                | "zinterstore"
                | "zdiffstore"
                | "zunion"
                | "zinter"
                | "zdiff"
                | "georadius"
                | "georadiusbymember"
                | "geosearchstore"
                | "pfcount"
                | "pfmerge"
                | "migrate"
                | "restore"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_debug_and_bitop_are_slow_get_and_set_are_not() {
        for name in ["eval", "evalsha", "debug", "bitop", "keys", "flushall"] {
            let spec = crate::command::lookup(name).unwrap_or_else(|| panic!("{name}"));
            assert!(known_slow(spec), "{name}");
        }
        for name in ["get", "set", "incr", "mget", "hset", "zadd", "expire"] {
            assert!(!known_slow(crate::command::lookup(name).unwrap()), "{name}");
        }
    }
}

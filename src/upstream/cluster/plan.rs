//! How one command travels through a cluster: to the node of its keys' slot, split over the
//! nodes of its keys' slots (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH), to every primary (keyless
//! commands whose Redis tip says `all_shards` or `all_nodes`), or refused with the cluster's own
//! CROSSSLOT error (every other command whose keys span slots). Keys are found by
//! [`crate::command::keys`], the same positions that drive a tenant's prefixing.
use super::slot::key_slot;
use crate::command::{self, CommandSpec};
use bytes::Bytes;

/// The cluster's own error for keys in more than one slot.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One node: the slot's (`None`: the command has no key; any primary serves it).
    Single(Option<u16>),
    /// Keys over several slots, split per node and merged.
    Split(Split),
    /// Every primary, replies merged.
    Fanout(Fan),
    /// SCAN, iterated slot by slot (see [`super::scan`]).
    Scan,
    /// Keys over several slots where the command must be atomic.
    CrossSlot,
}

/// How the parts of a split command merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// MGET: values back in the client's key order.
    Mget,
    /// MSET: `+OK` once every part said so.
    Mset,
    /// DEL, UNLINK, EXISTS, TOUCH: the parts' counts added.
    Sum,
}

/// How the replies of every primary merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    Sum,
    Min,
    Max,
    /// The first reply, once none is an error (else the first error).
    AllOk,
    /// The first reply that is not an error.
    OneOk,
    And,
    Or,
    /// Arrays concatenated (KEYS), else as `AllOk`.
    Concat,
    /// RANDOMKEY: the first node's key that is not nil.
    RandomKey,
    /// INFO: the first node's text with the keyspace lines summed over every node.
    Info,
}

impl Split {
    fn of(name: &str) -> Option<Split> {
        Some(match name {
            "mget" => Split::Mget,
            "mset" => Split::Mset,
            "del" | "unlink" | "exists" | "touch" => Split::Sum,
            _ => return None,
        })
    }

    /// Arguments per key: MSET's key and value.
    pub fn step(self) -> usize {
        match self {
            Split::Mset => 2,
            _ => 1,
        }
    }
}

/// The plan for one command (arguments as the upstream gets them, tenant prefix included).
pub fn plan(spec: Option<&CommandSpec>, args: &[Bytes]) -> Plan {
    let Some(spec) = spec else {
        return Plan::Single(None);
    };
    if spec.name == "scan" {
        return Plan::Scan;
    }
    // A shard channel is no key (its key spec says `not_key`), but it has a slot: SPUBLISH
    // goes to that slot's primary, which alone holds its subscribers.
    if spec.name == "spublish" {
        return Plan::Single(args.get(1).map(|c| key_slot(c)));
    }
    let slots = match slot_of(spec, args) {
        Ok(s) => s,
        Err(CrossSlot) => {
            return match Split::of(spec.name) {
                Some(split) => Plan::Split(split),
                None => Plan::CrossSlot,
            };
        }
    };
    if slots.is_none()
        && let Some(fan) = fan_of(spec)
    {
        return Plan::Fanout(fan);
    }
    Plan::Single(slots)
}

/// Keys in more than one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossSlot;

/// The one slot of a command's keys; `None` when it has none (or they cannot be found: the
/// node then answers the malformed call itself).
pub fn slot_of(spec: &CommandSpec, args: &[Bytes]) -> Result<Option<u16>, CrossSlot> {
    let Ok(keys) = command::keys(spec, args) else {
        return Ok(None);
    };
    let mut slot = None;
    for pos in keys.positions() {
        let Some(key) = args.get(pos) else { continue };
        let s = key_slot(key);
        match slot {
            None => slot = Some(s),
            Some(t) if t != s => return Err(CrossSlot),
            _ => {}
        }
    }
    Ok(slot)
}

fn fan_of(spec: &CommandSpec) -> Option<Fan> {
    match spec.name {
        "randomkey" => return Some(Fan::RandomKey),
        "info" => return Some(Fan::Info),
        _ => {}
    }
    let everywhere = spec
        .tips
        .iter()
        .any(|t| *t == "request_policy:all_shards" || *t == "request_policy:all_nodes");
    if !everywhere {
        return None;
    }
    let response = spec
        .tips
        .iter()
        .find_map(|t| t.strip_prefix("response_policy:"));
    Some(match response {
        Some("agg_sum") => Fan::Sum,
        Some("agg_min") => Fan::Min,
        Some("agg_max") => Fan::Max,
        Some("one_succeeded") => Fan::OneOk,
        Some("agg_logical_and") => Fan::And,
        Some("agg_logical_or") => Fan::Or,
        Some(_) => Fan::AllOk,
        None => Fan::Concat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(words: &str) -> Plan {
        let args: Vec<Bytes> = words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        plan(command::resolve(&args).ok(), &args)
    }

    #[test]
    fn commands_route_by_their_keys() {
        assert_eq!(plan_of("GET foo"), Plan::Single(Some(12182)));
        assert_eq!(
            plan_of("MGET {a}1 {a}2"),
            Plan::Single(Some(key_slot(b"a")))
        );
        assert_eq!(plan_of("MGET foo bar"), Plan::Split(Split::Mget));
        assert_eq!(plan_of("MSET foo 1 bar 2"), Plan::Split(Split::Mset));
        assert_eq!(plan_of("DEL foo bar"), Plan::Split(Split::Sum));
        assert_eq!(plan_of("EXISTS foo bar"), Plan::Split(Split::Sum));
        assert_eq!(plan_of("MSETNX foo 1 bar 2"), Plan::CrossSlot);
        assert_eq!(plan_of("RENAME foo bar"), Plan::CrossSlot);
        assert_eq!(plan_of("SMOVE foo bar m"), Plan::CrossSlot);
        assert_eq!(plan_of("SUNIONSTORE foo bar"), Plan::CrossSlot);
        assert_eq!(plan_of("EVAL x 2 foo bar"), Plan::CrossSlot);
        assert_eq!(plan_of("EVAL x 0"), Plan::Single(None));
    }

    #[test]
    fn keyless_commands_fan_out_by_their_tips() {
        assert_eq!(plan_of("DBSIZE"), Plan::Fanout(Fan::Sum));
        assert_eq!(plan_of("KEYS *"), Plan::Fanout(Fan::Concat));
        assert_eq!(plan_of("FLUSHDB"), Plan::Fanout(Fan::AllOk));
        assert_eq!(plan_of("FLUSHALL"), Plan::Fanout(Fan::AllOk));
        assert_eq!(plan_of("RANDOMKEY"), Plan::Fanout(Fan::RandomKey));
        assert_eq!(plan_of("INFO keyspace"), Plan::Fanout(Fan::Info));
        assert_eq!(plan_of("SCRIPT LOAD x"), Plan::Fanout(Fan::AllOk));
        assert_eq!(plan_of("SCAN 0"), Plan::Scan);
        assert_eq!(plan_of("PUBLISH ch m"), Plan::Single(None));
    }
}

//! Which reads the near cache can answer exactly, and how one call is named in the cache.
//!
//! A cached read is a command whose reply depends only on one key's value (plus its own
//! arguments), so a tracking invalidation of that key covers it. Doubles (ZSCORE, WITHSCORES)
//! are formatted by the server the same way in both protocols, so a RESP3 fill re-encodes for
//! RESP2 exactly; WITHSCORES pairs, nested in RESP3, are flattened. MGET is answered from the
//! keys' GET entries (a GET entry is a string or nothing, which is exactly what MGET reports for
//! that key). Random or time-dependent reads (SRANDMEMBER, TTL) are never cacheable.
use crate::command::{self, CommandSpec};
/// The list of cacheable reads is configuration's vocabulary (a rule's `commands`); how each
/// is answered is this module's.
pub use crate::config::ReadKind;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;

impl ReadKind {
    /// The cacheable read a command is, if it is one (a table lookup by command id).
    pub fn of(spec: &CommandSpec) -> Option<ReadKind> {
        static TABLE: OnceLock<Vec<Option<ReadKind>>> = OnceLock::new();
        let table = TABLE.get_or_init(|| {
            let mut t = vec![None; command::all().len()];
            for &kind in ReadKind::ALL {
                let spec = command::lookup(kind.name()).expect("cacheable reads are in the table");
                t[spec.id as usize] = Some(kind);
            }
            t
        });
        table.get(spec.id as usize).copied().flatten()
    }

    /// Reads whose RESP3 reply pairs each member with its score (`WITHSCORES`), where RESP2
    /// has one flat array.
    pub fn scored(self) -> bool {
        matches!(
            self,
            ReadKind::Zrange
                | ReadKind::Zrevrange
                | ReadKind::Zrangebyscore
                | ReadKind::Zrevrangebyscore
        )
    }

    /// Whether this call can be answered from one key's entry: a single-key read (EXISTS with
    /// one key only). MGET is handled key by key.
    pub fn single_key(self, args: &[Bytes]) -> bool {
        match self {
            ReadKind::Mget => false,
            ReadKind::Exists => args.len() == 2,
            _ => args.len() >= 2,
        }
    }
}

/// One call's name in the cache, next to its key: the read and its other arguments.
#[derive(Debug, Clone, Eq)]
pub struct Sig {
    pub kind: ReadKind,
    /// The arguments after the key, each length-prefixed (empty for GET, HGETALL, …).
    pub rest: Bytes,
}

impl PartialEq for Sig {
    fn eq(&self, other: &Sig) -> bool {
        // Most reads have no other arguments: skip the byte comparison (a library call) then.
        self.kind == other.kind
            && self.rest.len() == other.rest.len()
            && (self.rest.is_empty() || self.rest == other.rest)
    }
}

impl Sig {
    pub fn new(kind: ReadKind, args: &[Bytes]) -> Sig {
        let rest = match args.get(2..) {
            Some(rest) if !rest.is_empty() => {
                let mut b = BytesMut::new();
                for a in rest {
                    b.put_u32(a.len() as u32);
                    b.extend_from_slice(a);
                }
                b.freeze()
            }
            _ => Bytes::new(),
        };
        Sig { kind, rest }
    }

    pub fn weight(&self) -> usize {
        self.rest.len()
    }
}

/// The commands that fill one entry: the read itself, on `key` as the upstream knows it, then
/// `PTTL key` so the entry can expire with the key.
pub fn fill_command(args: &[Bytes], upstream_key: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let mut call: Vec<&[u8]> = Vec::with_capacity(args.len());
    call.push(&args[0]);
    call.push(upstream_key);
    call.extend(args[2..].iter().map(|a| &a[..]));
    crate::protocol::encode::command(&mut out, &call);
    crate::protocol::encode::command(&mut out, &[&b"PTTL"[..], upstream_key]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_readonly_command_with_its_key_first() {
        for &kind in ReadKind::ALL {
            let spec = command::lookup(kind.name()).unwrap();
            assert!(
                spec.flags.contains(command::Flags::READONLY),
                "{}",
                spec.name
            );
            assert_eq!(ReadKind::of(spec), Some(kind));
            assert_eq!(ReadKind::by_name(&kind.name().to_uppercase()), Some(kind));
        }
        assert_eq!(ReadKind::of(command::lookup("set").unwrap()), None);
        assert!(ReadKind::ALL.len() <= 64);
    }

    #[test]
    fn signatures_tell_arguments_apart() {
        let a =
            |w: &[&str]| -> Vec<Bytes> { w.iter().map(|s| Bytes::from(s.to_string())).collect() };
        let one = Sig::new(ReadKind::Hmget, &a(&["hmget", "k", "ab", "c"]));
        let two = Sig::new(ReadKind::Hmget, &a(&["hmget", "k", "a", "bc"]));
        assert_ne!(one, two);
        assert_eq!(Sig::new(ReadKind::Get, &a(&["get", "k"])).rest.len(), 0);
    }
}

//! Which writes local-only mode must not guess: those whose effect, or whose acknowledgement,
//! depends on data only the upstream holds. The local engine starts every outage empty, so it
//! would grant a `SET lock NX` the upstream's holder still has (two holders), pop nothing from a
//! queue whose elements are upstream (and a replayed pop would then discard one nobody received),
//! or store an intersection of sets it does not have.
//!
//! Unconditional writes (SET, INCR, RPUSH, ZINCRBY, DEL, EXPIRE without NX/XX/GT/LT, …) are
//! safe: replayed in order they do upstream what they did locally, and the commutative ones add
//! to what the upstream held. Everything here is refused with `TRYAGAIN` in local-only mode
//! unless a `[[local_only.rule]]` with `writes = "apply"` matches one of its keys (see
//! [`super::answerer`]).
use crate::command::{CommandSpec, KeySpecFlags};
use bytes::Bytes;

/// What a conditional write gets in local-only mode when no rule allows it.
pub(crate) const REFUSED: &str = "TRYAGAIN upstream is down and respite is in local-only mode, which cannot know this write's outcome (it depends on data only the upstream holds: NX/XX/GET options, SETNX, pops, scripts, …); a [[local_only.rule]] with writes = \"apply\" allows it for matching keys";

/// Whether `spec` (a write, called with `args`, the name first) depends on upstream state the
/// local engine cannot know.
pub(crate) fn conditional(spec: &CommandSpec, args: &[Bytes]) -> bool {
    match spec.name {
        // Scripts may read anything before they write.
        "eval" | "evalsha" | "fcall" => true,
        // Conditional on existence or on the old value, or returning it.
        "setnx" | "msetnx" | "hsetnx" | "getset" | "renamenx" | "rename" | "copy" | "move"
        | "smove" | "lpushx" | "rpushx" | "lset" | "linsert" | "restore" => true,
        // Consumer groups live upstream.
        "xreadgroup" | "xclaim" | "xautoclaim" | "xack" | "xgroup" => true,
        name if name.starts_with("xgroup|") => true,
        "set" => has_option(args, 3, &[b"nx", b"xx", b"get", b"ifeq", b"ifne"]),
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            has_option(args, 3, &[b"nx", b"xx", b"gt", b"lt"])
        }
        // Options come before the first score, and no score is a word.
        "zadd" => has_option(args, 2, &[b"nx", b"xx", b"gt", b"lt"]),
        "xadd" => has_option(args, 2, &[b"nomkstream"]),
        // Reads its source keys; only STORE makes it a write.
        "sort" | "georadius" | "georadiusbymember" => {
            has_option(args, 2, &[b"store", b"storedist"])
        }
        _ => spec.key_specs.iter().any(|k| {
            // Reads another key (SINTERSTORE's sources, BITOP's, PFMERGE's, …), or returns and
            // removes data (LPOP, SPOP, ZPOPMIN, LMOVE, GETDEL, …).
            k.flags.contains(KeySpecFlags::RO)
                || k.flags.contains(KeySpecFlags::ACCESS) && k.flags.contains(KeySpecFlags::DELETE)
        }),
    }
}

/// Whether any argument from `from` on is one of `words` (lower case).
fn has_option(args: &[Bytes], from: usize, words: &[&[u8]]) -> bool {
    args.iter()
        .skip(from)
        .any(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command;

    fn cond(line: &str) -> bool {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let spec = command::resolve(&args).expect("a known command");
        conditional(spec, &args)
    }

    #[test]
    fn locks_pops_scripts_and_reads_of_other_keys_are_conditional() {
        for line in [
            "SET lock me NX PX 5000",
            "SET k v XX",
            "SET k v GET",
            "SETNX k v",
            "MSETNX a 1 b 2",
            "HSETNX h f v",
            "GETSET k v",
            "GETDEL k",
            "LPOP q",
            "RPOP q 2",
            "SPOP s",
            "ZPOPMIN z",
            "LMOVE a b LEFT RIGHT",
            "RPOPLPUSH a b",
            "SINTERSTORE d a b",
            "ZUNIONSTORE d 2 a b",
            "BITOP AND d a b",
            "PFMERGE d a",
            "EXPIRE k 10 NX",
            "ZADD z GT 1 m",
            "EVAL x 1 k",
            "EVALSHA abc 0",
            "SORT l STORE d",
            "RENAME a b",
            "LPUSHX l v",
        ] {
            assert!(cond(line), "{line}");
        }
    }

    #[test]
    fn unconditional_writes_are_not() {
        for line in [
            "SET k v",
            "SET k nx",
            "SET k v EX 10",
            "INCR n",
            "INCRBY n 5",
            "RPUSH l a b",
            "LPUSH l a",
            "ZINCRBY z 1 m",
            "ZADD z 1 m",
            "HSET h f v",
            "HINCRBY h f 1",
            "SADD s a",
            "DEL a b",
            "EXPIRE k 10",
            "PEXPIRE k 100",
            "MSET a 1 b 2",
            "APPEND k v",
            "XADD s * f v",
            "PFADD h a",
            "SREM s a",
        ] {
            assert!(!cond(line), "{line}");
        }
    }
}

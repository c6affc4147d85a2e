//! `local_only.on_recovery = "merge"`: what the local engine holds when the upstream is back,
//! as commands that create each key upstream only where the upstream has no such key (never
//! overwriting, never merging into an existing value), with its remaining TTL.
//!
//! Strings are `SET key value NX [PXAT t]`. Collections go through a short script that checks
//! and creates in one step; one that is too large for one call is created with its first chunk
//! and extended with the rest only if that first call created it ([`Call::rest`]).
use super::{Entry, Value};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

/// Creates `KEYS[1]` from `ARGV[4..]` with command `ARGV[2]` (HSET, SADD, ZADD, RPUSH) when it
/// does not exist (`ARGV[1]` = "new"), or extends it (`"add"`); `ARGV[3]` is a PEXPIREAT time or
/// "0". Returns 1 when it wrote, 0 when the key already existed.
pub const SCRIPT: &str = "if ARGV[1] == 'new' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
redis.call(ARGV[2], KEYS[1], unpack(ARGV, 4)) \
if ARGV[3] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end \
return 1";

/// Most arguments per script call (Lua's `unpack` stays far from its stack limit).
const CHUNK: usize = 1000;

/// One key to recreate: the first command, and the ones to send after it only if it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub key: Bytes,
    pub first: Bytes,
    pub rest: Vec<Bytes>,
}

/// Whether a reply to [`Call::first`] means the key was written (rather than found existing).
pub fn wrote(reply: &[u8]) -> bool {
    reply == b"+OK\r\n" || reply == b":1\r\n"
}

pub(super) fn calls(map: HashMap<Bytes, Entry>, now_ms: u64) -> Vec<Call> {
    let mut out = Vec::with_capacity(map.len());
    for (key, entry) in map {
        if entry.expire_at.is_some_and(|t| t <= now_ms) {
            continue;
        }
        let at = entry.expire_at.map(|t| t.to_string().into_bytes());
        let (command, items): (&[u8], Vec<Vec<u8>>) = match entry.value {
            Value::Str(v) => {
                let mut args: Vec<&[u8]> = vec![b"SET", &key, &v, b"NX"];
                if let Some(at) = &at {
                    args.extend([&b"PXAT"[..], at]);
                }
                out.push(Call {
                    key: key.clone(),
                    first: encode(&args),
                    rest: Vec::new(),
                });
                continue;
            }
            Value::Hash(h) => (
                b"HSET",
                h.into_iter().flat_map(|(f, v)| [f.to_vec(), v]).collect(),
            ),
            Value::Set(s) => (b"SADD", s.into_iter().map(|m| m.to_vec()).collect()),
            Value::ZSet(z) => (
                b"ZADD",
                z.entries()
                    .flat_map(|(m, score)| [score_text(score), m.to_vec()])
                    .collect(),
            ),
            Value::List(l) => (b"RPUSH", l.into_iter().map(|m| m.to_vec()).collect()),
            // A stream would need one XADD per entry, with IDs that may clash with the
            // upstream's; it is not merged (docs/local-engine.md).
            Value::Stream(_) => continue,
        };
        let at = at.unwrap_or_else(|| b"0".to_vec());
        // Pairs (field value, score member) stay together: chunks are even-sized.
        let mut chunks = items.chunks(CHUNK).map(|chunk| chunk.to_vec());
        let script = |mode: &[u8], chunk: Vec<Vec<u8>>| {
            let mut args: Vec<&[u8]> =
                vec![b"EVAL", SCRIPT.as_bytes(), b"1", &key, mode, command, &at];
            args.extend(chunk.iter().map(|a| &a[..]));
            encode(&args)
        };
        let first = script(b"new", chunks.next().unwrap_or_default());
        let rest = chunks.map(|c| script(b"add", c)).collect();
        out.push(Call {
            key: key.clone(),
            first,
            rest,
        });
    }
    out
}

/// A score as ZADD takes it back exactly (shortest round-trip form; `inf`, `-inf`).
fn score_text(score: f64) -> Vec<u8> {
    if score.is_infinite() {
        return if score > 0.0 {
            b"inf".to_vec()
        } else {
            b"-inf".to_vec()
        };
    }
    format!("{score}").into_bytes()
}

fn encode(args: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    crate::protocol::encode::command(&mut out, args);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip() {
        for s in [
            0.0,
            -1.5,
            1e-300,
            123456789.123,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let text = String::from_utf8(score_text(s)).unwrap();
            let back: f64 = match text.as_str() {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                t => t.parse().unwrap(),
            };
            assert_eq!(back, s, "{text}");
        }
    }
}

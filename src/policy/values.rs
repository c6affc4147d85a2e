//! The value limit (`max_value_bytes`): no write stores an argument, or produces a value, over the
//! tenant's limit.
//!
//! Arguments are measured as they are (values, fields, members, stream entries, payloads). Growth
//! commands are measured by what they would produce: SETRANGE by offset + length, SETBIT by
//! offset / 8 + 1, BITFIELD SET/INCRBY by the last byte their type width reaches at their offset,
//! RESTORE by its payload's decoded strings. Where the result depends on what is stored (APPEND,
//! and INCRBYFLOAT and HINCRBYFLOAT under a limit smaller than the longest number Redis prints), the command is sent
//! as a short script that checks and writes in one step ([`guard`]). Must never let a write
//! through whose stored size it cannot bound.
use bytes::Bytes;

use super::auth::Tenant;
use super::call::{Call, c_str};
use super::error::PolicyError;
use crate::command::{AclCategories, CommandSpec, Flags, Keys};
use crate::protocol::int::parse_i64;

/// Redis's `MAX_LONG_DOUBLE_CHARS` (util.h): INCRBYFLOAT's printed result never exceeds it, so
/// under a limit at least this large it needs no guard.
const MAX_LONG_DOUBLE_CHARS: usize = 5 * 1024;

/// APPEND, checked against the stored length in the same step. `STRLEN` of a key that is not a
/// string fails, and then APPEND gives the same WRONGTYPE error it would have.
const APPEND: &str = "local n = redis.pcall('STRLEN', KEYS[1]) \
if type(n) == 'number' and n + #ARGV[1] > tonumber(ARGV[2]) then \
return redis.error_reply('ERR value of ' .. (n + #ARGV[1]) .. ' bytes is over this tenant\\'s limit of ' .. ARGV[2] .. ' bytes (tenant.max_value_bytes)') end \
return redis.pcall('APPEND', KEYS[1], ARGV[1])";

/// INCRBYFLOAT, undone in the same step if its printed result is over the limit (the sum is a
/// long double on the server, which Lua's doubles cannot predict exactly).
const INCRBYFLOAT: &str = "local old = redis.pcall('GET', KEYS[1]) \
local r = redis.pcall('INCRBYFLOAT', KEYS[1], ARGV[1]) \
if type(r) ~= 'string' or #r <= tonumber(ARGV[2]) then return r end \
if type(old) == 'string' then redis.call('SET', KEYS[1], old, 'KEEPTTL') else redis.call('DEL', KEYS[1]) end \
return redis.error_reply('ERR value of ' .. #r .. ' bytes is over this tenant\\'s limit of ' .. ARGV[2] .. ' bytes (tenant.max_value_bytes)')";

/// HINCRBYFLOAT, undone the same way: the field gets its old value back (or goes, if it had
/// none), and keeps its own TTL (Redis 7.4+ field expiry; HSET would clear it, so it is read and
/// set again — on servers without HPEXPIRETIME the `pcall` fails and there is none to keep).
const HINCRBYFLOAT: &str = "local old = redis.pcall('HGET', KEYS[1], ARGV[1]) \
local r = redis.pcall('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2]) \
if type(r) ~= 'string' or #r <= tonumber(ARGV[3]) then return r end \
local t = redis.pcall('HPEXPIRETIME', KEYS[1], 'FIELDS', 1, ARGV[1]) \
if type(old) == 'string' then redis.call('HSET', KEYS[1], ARGV[1], old) else redis.call('HDEL', KEYS[1], ARGV[1]) end \
if type(old) == 'string' and type(t) == 'table' and type(t[1]) == 'number' and t[1] > 0 then redis.call('HPEXPIREAT', KEYS[1], t[1], 'FIELDS', 1, ARGV[1]) end \
return redis.error_reply('ERR value of ' .. #r .. ' bytes is over this tenant\\'s limit of ' .. ARGV[3] .. ' bytes (tenant.max_value_bytes)')";

fn too_large(len: u64, limit: usize) -> PolicyError {
    PolicyError::ValueTooLarge {
        len: usize::try_from(len).unwrap_or(usize::MAX),
        limit,
    }
}

/// Refuse a write whose arguments, or whose result as far as the arguments decide it, exceed the
/// limit. Every non-key argument of a command that stores data (write or denyoom flag, or a
/// script) counts. A malformed number is let through: the upstream refuses the whole command.
pub(super) fn check(
    t: &Tenant,
    spec: &CommandSpec,
    args: &[Bytes],
    keys: Option<&Keys>,
) -> Result<(), PolicyError> {
    let Some(limit) = t.max_value_bytes else {
        return Ok(());
    };
    if !spec.flags.intersects(Flags::WRITE | Flags::DENYOOM)
        && !spec.acl.contains(AclCategories::SCRIPTING)
    {
        return Ok(());
    }
    for (i, arg) in args.iter().enumerate().skip(1) {
        if arg.len() > limit && !keys.is_some_and(|k| k.positions().any(|p| p == i)) {
            return Err(too_large(arg.len() as u64, limit));
        }
    }
    let produced = match spec.name {
        // SETRANGE with an empty value changes nothing, not even a missing key.
        "setrange" if !args[3].is_empty() => offset(&args[2]).map(|o| o + args[3].len() as u64),
        "setbit" => offset(&args[2]).map(|o| o / 8 + 1),
        "bitfield" => bitfield(args),
        "restore" => Some(restored(&args[3]).ok_or(PolicyError::RestoreUnmeasured)?),
        _ => None,
    };
    match produced {
        Some(len) if len > limit as u64 => Err(too_large(len, limit)),
        _ => Ok(()),
    }
}

/// After the call is rebuilt (key prefixed, TTL applied): APPEND, and INCRBYFLOAT and
/// HINCRBYFLOAT under a small limit, become the script that checks the stored size in the same step.
pub(super) fn guard(t: &Tenant, spec: &CommandSpec, call: &mut Call) {
    let Some(limit) = t.max_value_bytes else {
        return;
    };
    let script = match spec.name {
        "append" => APPEND,
        "incrbyfloat" if limit < MAX_LONG_DOUBLE_CHARS => INCRBYFLOAT,
        "hincrbyfloat" if limit < MAX_LONG_DOUBLE_CHARS => HINCRBYFLOAT,
        _ => return,
    };
    // EVAL script 1 key <the command's other arguments> limit.
    let mut args = vec![
        Bytes::from_static(b"EVAL"),
        Bytes::from_static(script.as_bytes()),
        Bytes::from_static(b"1"),
    ];
    args.extend(call.args[1..].iter().cloned());
    args.push(Bytes::from(limit.to_string()));
    call.args = args;
    call.changed = true;
}

/// A non-negative offset, as Redis reads SETRANGE/SETBIT offsets (`string2ll`).
fn offset(arg: &[u8]) -> Option<u64> {
    parse_i64(arg).and_then(|n| u64::try_from(n).ok())
}

/// The largest size BITFIELD's SET/INCRBY operations would give the string, as `bitfieldGeneric`
/// parses them: `SET|INCRBY type offset value`, type `i1..i64`/`u1..u63`, offset `#n` meaning
/// n × width. GET and OVERFLOW never grow it.
fn bitfield(args: &[Bytes]) -> Option<u64> {
    let mut most = None;
    let mut j = 2;
    while j < args.len() {
        let op = c_str(&args[j]);
        let left = args.len() - j - 1;
        let is = |w: &[u8]| op.eq_ignore_ascii_case(w);
        if (is(b"set") || is(b"incrby")) && left >= 3 {
            if let Some(end) = bit_end(&args[j + 1], &args[j + 2]) {
                most = most.max(Some(end / 8 + 1));
            }
            j += 4;
        } else if is(b"get") && left >= 2 {
            j += 3;
        } else if is(b"overflow") && left >= 1 {
            j += 2;
        } else {
            // bitfieldGeneric refuses the whole command.
            return most;
        }
    }
    most
}

/// The last bit an operation of `ty` at `offset` touches.
fn bit_end(ty: &[u8], offset: &[u8]) -> Option<u64> {
    let (&sign, bits) = ty.split_first()?;
    let bits = u64::try_from(parse_i64(bits)?).ok()?;
    if !matches!(sign, b'i' | b'I' | b'u' | b'U') || bits == 0 || bits > 64 {
        return None;
    }
    let at = match offset.split_first() {
        Some((b'#', n)) => u64::try_from(parse_i64(n)?).ok()?.checked_mul(bits)?,
        _ => u64::try_from(parse_i64(offset)?).ok()?,
    };
    at.checked_add(bits - 1)
}

/// The total decoded length of the strings in a DUMP payload (`type, data, 2-byte RDB version,
/// 8-byte CRC64`), for the types whose data is strings and counts: a string, the single-blob
/// encodings (intset, ziplist, listpack), and sets, lists, hashes and sorted sets stored element by
/// element. `None` for anything else (streams, modules, a type newer than respite), which a
/// limited tenant then may not RESTORE.
fn restored(payload: &[u8]) -> Option<u64> {
    let data = payload.get(..payload.len().checked_sub(10)?)?;
    let (&ty, mut rest) = data.split_first()?;
    let mut total = 0u64;
    let mut string = |rest: &mut &[u8]| -> Option<()> {
        total = total.checked_add(rdb_string(rest)?)?;
        Some(())
    };
    match ty {
        // String; intset, ziplist and listpack encodings of sets, lists, hashes, sorted sets.
        0 | 9..=13 | 16 | 17 | 20 => string(&mut rest)?,
        // Set and list as elements; list as ziplist nodes.
        1 | 2 | 14 => {
            for _ in 0..rdb_len(&mut rest)? {
                string(&mut rest)?;
            }
        }
        // Hash as field, value pairs.
        4 => {
            for _ in 0..rdb_len(&mut rest)?.checked_mul(2)? {
                string(&mut rest)?;
            }
        }
        // Sorted set: member then a binary double.
        5 => {
            for _ in 0..rdb_len(&mut rest)? {
                string(&mut rest)?;
                rest = rest.get(8..)?;
            }
        }
        // Quicklist of listpacks: a container kind before each node.
        18 => {
            for _ in 0..rdb_len(&mut rest)? {
                rdb_len(&mut rest)?;
                string(&mut rest)?;
            }
        }
        _ => return None,
    }
    Some(total)
}

/// `rdbLoadLen`: 6-bit, 14-bit, 32-bit and 64-bit lengths. An encoded-string marker is not a
/// length.
fn rdb_len(rest: &mut &[u8]) -> Option<u64> {
    let (&b, tail) = rest.split_first()?;
    let (len, used) = match b >> 6 {
        0 => (u64::from(b & 0x3f), 1),
        1 => (u64::from(b & 0x3f) << 8 | u64::from(*tail.first()?), 2),
        2 if b == 0x80 => (
            u64::from(u32::from_be_bytes(tail.get(..4)?.try_into().ok()?)),
            5,
        ),
        2 if b == 0x81 => (u64::from_be_bytes(tail.get(..8)?.try_into().ok()?), 9),
        _ => return None,
    };
    *rest = &rest[used..];
    Some(len)
}

/// `rdbGenericLoadStringObject`'s decoded length: plain, integer-encoded (at most 20 digits) or
/// LZF-compressed (the header says the uncompressed length).
fn rdb_string(rest: &mut &[u8]) -> Option<u64> {
    let &b = rest.first()?;
    if b >> 6 != 3 {
        let len = rdb_len(rest)?;
        *rest = rest.get(usize::try_from(len).ok()?..)?;
        return Some(len);
    }
    *rest = &rest[1..];
    match b & 0x3f {
        0 => *rest = rest.get(1..)?,
        1 => *rest = rest.get(2..)?,
        2 => *rest = rest.get(4..)?,
        3 => {
            let compressed = rdb_len(rest)?;
            let len = rdb_len(rest)?;
            *rest = rest.get(usize::try_from(compressed).ok()?..)?;
            return Some(len);
        }
        _ => return None,
    }
    Some(20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn bitfield_ends() {
        let args: Vec<Bytes> = "BITFIELD k GET u8 999999 SET u8 #2 1 INCRBY i16 100 1 OVERFLOW SAT"
            .split(' ')
            .map(b)
            .collect();
        // SET u8 #2 → bits 16..23 (3 bytes); INCRBY i16 100 → bits 100..115 (15 bytes).
        assert_eq!(bitfield(&args), Some(15));
        assert_eq!(bit_end(b"u8", b"-1"), None);
        assert_eq!(bit_end(b"x8", b"1"), None);
        assert_eq!(bit_end(b"i64", b"#9223372036854775807"), None);
        assert_eq!(bit_end(b"i1", b"0"), Some(0));
    }

    #[test]
    fn restore_payloads() {
        let trailer = [0u8; 10];
        let with = |data: &[u8]| [data, &trailer].concat();
        // A plain 5-byte string.
        assert_eq!(restored(&with(b"\x00\x05hello")), Some(5));
        // An LZF string: compressed 3 bytes, 1000 decoded.
        assert_eq!(restored(&with(b"\x00\xc3\x03\x43\xe8abc")), Some(1000));
        // An integer-encoded string.
        assert_eq!(restored(&with(b"\x00\xc0\x07")), Some(20));
        // A set of two members.
        assert_eq!(restored(&with(b"\x02\x02\x01a\x02bc")), Some(3));
        // A stream or a module value cannot be measured; nor can a truncated payload.
        assert_eq!(restored(&with(b"\x0f\x00")), None);
        assert_eq!(restored(&with(b"\x00\x05hel")), None);
        assert_eq!(restored(b"short"), None);
    }
}

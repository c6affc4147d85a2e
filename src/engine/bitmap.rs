//! Bitmap commands on strings: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP (BITFIELD is not
//! served). Bit 0 is the most significant bit of the first byte, as in Redis; argument checks
//! come in Redis 7.0's order (BITCOUNT looks the key up first, BITPOS parses the bit first).
use super::num::parse_i64;
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, eq_ci};

/// Redis's `proto-max-bulk-len` in bits: the largest offset SETBIT may address, plus one.
const MAX_BITS: i64 = 512 * 1024 * 1024 * 8;

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "setbit" => setbit(db, c),
        "getbit" => {
            let Some(off) = offset(c, 2) else { return true };
            match string(db, c, 1) {
                Err(()) => {}
                Ok(s) => {
                    let s = s.unwrap_or(&[]);
                    let byte = s.get(off / 8).copied().unwrap_or(0);
                    c.out.int(i64::from(byte >> (7 - off % 8) & 1));
                }
            }
        }
        "bitcount" => bitcount(db, c),
        "bitpos" => bitpos(db, c),
        "bitop" => bitop(db, c),
        _ => return false,
    }
    true
}

/// The string at args[i]: Ok(None) if missing, Err after replying WRONGTYPE.
fn string<'a>(db: &'a mut Db, c: &mut Call, i: usize) -> Result<Option<&'a [u8]>, ()> {
    match db.get(&c.args[i]).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

fn offset(c: &mut Call, i: usize) -> Option<usize> {
    match parse_i64(&c.args[i]) {
        Some(n) if (0..MAX_BITS).contains(&n) => Some(n as usize),
        _ => {
            c.out
                .err("ERR bit offset is not an integer or out of range");
            None
        }
    }
}

fn setbit(db: &mut Db, c: &mut Call) {
    let Some(off) = offset(c, 2) else { return };
    let on = match parse_i64(&c.args[3]) {
        Some(b @ (0 | 1)) => b == 1,
        _ => return c.out.err("ERR bit is not an integer or out of range"),
    };
    let key = c.args[1].clone();
    match db.get_mut(&key).map(|e| &mut e.value) {
        None => db.set(key.clone(), Value::Str(Vec::new())),
        Some(Value::Str(_)) => {}
        Some(_) => return c.out.err(WRONGTYPE),
    }
    let Some(Value::Str(s)) = db.get_mut(&key).map(|e| &mut e.value) else {
        return;
    };
    if s.len() <= off / 8 {
        s.resize(off / 8 + 1, 0);
    }
    let mask = 1u8 << (7 - off % 8);
    let old = s[off / 8] & mask != 0;
    if on {
        s[off / 8] |= mask;
    } else {
        s[off / 8] &= !mask;
    }
    c.out.bool_int(old);
}

/// A BITCOUNT/BITPOS range over a string of `len` bytes: whole bytes `first..=last` plus the
/// masks of bits outside the range in the first and last byte (BIT unit); None if empty.
struct Span {
    first: usize,
    last: usize,
    first_mask: u8,
    last_mask: u8,
}

/// Redis's range normalisation; `bits` for the BIT unit.
fn span(start: i64, end: i64, len: usize, bits: bool) -> Option<Span> {
    let total = if bits { len as i64 * 8 } else { len as i64 };
    let (mut start, mut end) = (start, end);
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    if start > end || total == 0 {
        return None;
    }
    Some(if bits {
        Span {
            first: (start >> 3) as usize,
            last: (end >> 3) as usize,
            first_mask: !((1u16 << (8 - (start & 7))) - 1) as u8,
            last_mask: ((1u16 << (7 - (end & 7))) - 1) as u8,
        }
    } else {
        Span {
            first: start as usize,
            last: end as usize,
            first_mask: 0,
            last_mask: 0,
        }
    })
}

/// `[start end [BYTE|BIT]]` from `j`: the bounds, the unit, and whether an end was given.
fn range_args(c: &mut Call, j: usize, end_optional: bool) -> Option<(i64, Option<i64>, bool)> {
    let n = c.args.len() - j;
    if n == 0 {
        return Some((0, None, false));
    }
    if n > 3 || (n == 1 && !end_optional) {
        c.out.err(SYNTAX);
        return None;
    }
    let Some(start) = parse_i64(&c.args[j]) else {
        c.out.err(NOT_INT);
        return None;
    };
    // BITCOUNT parses the end before the unit, BITPOS the unit before the end.
    let end_first = !end_optional;
    let parse_end = |c: &mut Call| -> Result<Option<i64>, ()> {
        if n < 2 {
            return Ok(None);
        }
        match parse_i64(&c.args[j + 1]) {
            Some(e) => Ok(Some(e)),
            None => {
                c.out.err(NOT_INT);
                Err(())
            }
        }
    };
    let mut end = None;
    if end_first {
        end = parse_end(c).ok()?;
        // Redis answers an empty negative range before it reads the unit (and before clamping
        // could make it non-empty): 1..0 is empty for any length.
        if let Some(e) = end
            && start < 0
            && e < 0
            && start > e
        {
            return Some((1, Some(0), false));
        }
    }
    let mut bits = false;
    if n == 3 {
        if eq_ci(&c.args[j + 2], "bit") {
            bits = true;
        } else if !eq_ci(&c.args[j + 2], "byte") {
            c.out.err(SYNTAX);
            return None;
        }
    }
    if !end_first {
        end = parse_end(c).ok()?;
    }
    Some((start, end, bits))
}

fn bitcount(db: &mut Db, c: &mut Call) {
    let s = match string(db, c, 1) {
        Err(()) => return,
        Ok(None) => return c.out.int(0),
        Ok(Some(s)) => s.to_vec(),
    };
    let Some((start, end, bits)) = range_args(c, 2, false) else {
        return;
    };
    let Some(sp) = span(start, end.unwrap_or(-1), s.len(), bits) else {
        return c.out.int(0);
    };
    let ones = |b: u8| i64::from(b.count_ones());
    let mut n: i64 = s[sp.first..=sp.last].iter().map(|&b| ones(b)).sum();
    n -= ones(s[sp.first] & sp.first_mask);
    n -= ones(s[sp.last] & sp.last_mask);
    c.out.int(n);
}

fn bitpos(db: &mut Db, c: &mut Call) {
    let bit = match parse_i64(&c.args[2]) {
        Some(b @ (0 | 1)) => b == 1,
        _ => return c.out.err("ERR The bit argument must be 1 or 0."),
    };
    let s = match string(db, c, 1) {
        Err(()) => return,
        Ok(None) => return c.out.int(if bit { -1 } else { 0 }),
        Ok(Some(s)) => s.to_vec(),
    };
    let Some((start, end, bits)) = range_args(c, 3, true) else {
        return;
    };
    let end_given = end.is_some();
    let Some(sp) = span(start, end.unwrap_or(-1), s.len(), bits) else {
        return c.out.int(-1);
    };
    let mut bytes = s[sp.first..=sp.last].to_vec();
    // Bits outside the range are made the opposite of the one sought, as Redis does.
    let last = bytes.len() - 1;
    if bit {
        bytes[0] &= !sp.first_mask;
        bytes[last] &= !sp.last_mask;
    } else {
        bytes[0] |= sp.first_mask;
        bytes[last] |= sp.last_mask;
    }
    let found = bytes.iter().enumerate().find_map(|(i, &b)| {
        let b = if bit { b } else { !b };
        (b != 0).then(|| i * 8 + b.leading_zeros() as usize)
    });
    let pos = match found {
        Some(p) => (p + sp.first * 8) as i64,
        // Past the end a string is all zeros, unless an end was given.
        None if !bit && !end_given => ((sp.last + 1) * 8) as i64,
        None => -1,
    };
    c.out.int(pos);
}

fn bitop(db: &mut Db, c: &mut Call) {
    let op = c.args[1].to_ascii_lowercase();
    if !matches!(&op[..], b"and" | b"or" | b"xor" | b"not") {
        return c.out.err(SYNTAX);
    }
    if op == b"not" && c.args.len() != 4 {
        return c
            .out
            .err("ERR BITOP NOT must be called with a single source key.");
    }
    let mut srcs: Vec<Vec<u8>> = Vec::with_capacity(c.args.len() - 3);
    for i in 3..c.args.len() {
        match string(db, c, i) {
            Err(()) => return,
            Ok(s) => srcs.push(s.map(<[u8]>::to_vec).unwrap_or_default()),
        }
    }
    let len = srcs.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |s: &Vec<u8>, i: usize| s.get(i).copied().unwrap_or(0);
    let out: Vec<u8> = (0..len)
        .map(|i| {
            let mut it = srcs.iter().map(|s| byte(s, i));
            let first = it.next().unwrap_or(0);
            match &op[..] {
                b"and" => it.fold(first, |a, b| a & b),
                b"or" => it.fold(first, |a, b| a | b),
                b"xor" => it.fold(first, |a, b| a ^ b),
                _ => !first,
            }
        })
        .collect();
    let dst = c.args[2].clone();
    db.remove(&dst);
    if len > 0 {
        db.set(dst, Value::Str(out));
    }
    c.out.int(len as i64);
}

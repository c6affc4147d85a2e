//! SCAN, HSCAN, SSCAN and ZSCAN with real cursors.
//!
//! The contract is Redis's: a full iteration (cursor 0 back to 0) returns every element present
//! for the whole iteration at least once; elements added or removed meanwhile may or may not be;
//! COUNT is a hint. The cursor is a point in a fixed hash order (`hash` of the element, then its
//! bytes), which a map's growth never reshuffles, so a scan resumes exactly past the last hash it
//! returned. Elements whose hashes collide with the boundary may come twice, never zero times.
//!
//! - SCAN walks `Db::order`: O(COUNT · log n) a call, as Redis's is O(COUNT).
//! - Containers of at most [`SMALL`] elements answer everything at once with cursor 0, as Redis
//!   does for its listpack/intset encodings. Larger ones sort their elements by hash on each call
//!   (O(m log m)); to bound a whole scan at about 64 such calls, a call returns at least m/64
//!   elements whatever COUNT says.
//! - Cursor numbers are not Redis's (they never are comparable between servers).
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

use super::num::{fmt_g17, parse_i64};
use super::{Call, Db, SYNTAX, Value, WRONGTYPE, eq_ci};
use crate::policy::glob;

/// Containers up to this size answer in one call (Redis's listpack limit for hashes and zsets).
const SMALL: usize = 128;

/// The scan order's hash: fixed for the process (SipHash with zero keys), never 0, since cursor 0
/// means "start" and "done".
pub(crate) fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish().max(1)
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "scan" => scan(db, c),
        "hscan" | "sscan" | "zscan" => scan_container(db, c),
        _ => return false,
    }
    true
}

struct Opts {
    count: usize,
    pattern: Option<Bytes>,
    typ: Option<Bytes>,
}

/// Redis's `parseScanCursorOrReply`: an unsigned decimal.
fn cursor(c: &mut Call, i: usize) -> Option<u64> {
    let v = std::str::from_utf8(&c.args[i])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if v.is_none() {
        c.out.err("ERR invalid cursor");
    }
    v
}

/// MATCH, COUNT and (for SCAN only) TYPE, from `j`.
fn options(c: &mut Call, mut j: usize, allow_type: bool) -> Option<Opts> {
    let mut o = Opts {
        count: 10,
        pattern: None,
        typ: None,
    };
    while j < c.args.len() {
        let more = j + 1 < c.args.len();
        let a = &c.args[j];
        if eq_ci(a, "count") && more {
            match parse_i64(&c.args[j + 1]) {
                None => {
                    c.out.err(super::NOT_INT);
                    return None;
                }
                Some(n) if n < 1 => {
                    c.out.err(SYNTAX);
                    return None;
                }
                Some(n) => o.count = n as usize,
            }
        } else if eq_ci(a, "match") && more {
            o.pattern = Some(c.args[j + 1].clone());
        } else if allow_type && eq_ci(a, "type") && more {
            o.typ = Some(c.args[j + 1].clone());
        } else {
            c.out.err(SYNTAX);
            return None;
        }
        j += 2;
    }
    Some(o)
}

impl Opts {
    fn matches(&self, b: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|p| glob::matches(p, b))
    }
}

fn reply_cursor(c: &mut Call, next: u64, items: &[Bytes]) {
    c.out.array(2);
    c.out.bulk(next.to_string().as_bytes());
    c.out.array(items.len());
    for i in items {
        c.out.bulk(i);
    }
}

fn scan(db: &mut Db, c: &mut Call) {
    let Some(start) = cursor(c, 1) else { return };
    let Some(o) = options(c, 2, true) else { return };
    let mut visited = db.order.range((start, Bytes::new())..);
    let batch: Vec<Bytes> = visited
        .by_ref()
        .take(o.count)
        .map(|(_, k)| k.clone())
        .collect();
    let next = visited.next().map_or(0, |(h, _)| *h);
    let mut keys = Vec::with_capacity(batch.len());
    for k in batch {
        if !o.matches(&k) {
            continue;
        }
        // Expired keys are dropped on the way, as Redis's SCAN does.
        let Some(e) = db.get(&k) else { continue };
        if o.typ.as_ref().is_none_or(|t| eq_ci(t, e.value.type_name())) {
            keys.push(k);
        }
    }
    reply_cursor(c, next, &keys);
}

/// HSCAN/SSCAN/ZSCAN key cursor [MATCH pattern] [COUNT count]: cursor, then the key, then the
/// options, in Redis's order of checks.
fn scan_container(db: &mut Db, c: &mut Call) {
    let Some(start) = cursor(c, 2) else { return };
    // Each element with the values that follow it in the reply (a field's value, a score).
    let elements: Vec<(Bytes, Option<Bytes>)> = match (c.name, db.get(&c.args[1]).map(|e| &e.value))
    {
        (_, None) => return reply_cursor(c, 0, &[]),
        ("hscan", Some(Value::Hash(h))) => pairs(h),
        ("sscan", Some(Value::Set(s))) => s.iter().map(|m| (m.clone(), None)).collect(),
        ("zscan", Some(Value::ZSet(z))) => z
            .entries()
            .map(|(m, s)| (m.clone(), Some(Bytes::from(fmt_g17(s)))))
            .collect(),
        _ => return c.out.err(WRONGTYPE),
    };
    let Some(o) = options(c, 3, false) else {
        return;
    };
    let (next, picked) = if elements.len() <= SMALL {
        (0, elements)
    } else {
        let take = o.count.max(elements.len() / 64);
        let mut ordered: Vec<(u64, Bytes, Option<Bytes>)> = elements
            .into_iter()
            .map(|(m, v)| (hash(&m), m, v))
            .filter(|(h, ..)| *h >= start)
            .collect();
        ordered.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let next = ordered.get(take).map_or(0, |(h, ..)| *h);
        ordered.truncate(take);
        (next, ordered.into_iter().map(|(_, m, v)| (m, v)).collect())
    };
    let mut flat = Vec::with_capacity(picked.len() * 2);
    for (m, v) in picked {
        if o.matches(&m) {
            flat.push(m);
            flat.extend(v);
        }
    }
    reply_cursor(c, next, &flat);
}

fn pairs(h: &HashMap<Bytes, Vec<u8>>) -> Vec<(Bytes, Option<Bytes>)> {
    h.iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v))))
        .collect()
}

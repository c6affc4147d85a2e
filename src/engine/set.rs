//! Set commands: membership, random picks (SPOP, SRANDMEMBER), SMOVE and the algebra (SINTER,
//! SUNION, SDIFF, their STORE forms, SINTERCARD). SSCAN lives with the other cursors in `scan`.
use std::collections::HashSet;

use bytes::Bytes;
use rand::seq::{IndexedRandom, IteratorRandom};

use super::num::parse_i64;
use super::{Call, Db, SYNTAX, Value, WRONGTYPE};

type Set = HashSet<Bytes>;

/// `getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX)`'s reply to LONG_MIN.
pub(super) const RANGE_ERR: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// The set at `key`: Ok(None) if missing, Err after replying WRONGTYPE.
fn read<'a>(db: &'a mut Db, c: &mut Call, key: &[u8]) -> Result<Option<&'a mut Set>, ()> {
    match db.get_mut(key).map(|e| &mut e.value) {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    let args = c.args;
    // Unsupported commands pass through here too, some without any argument.
    let Some(key) = args.get(1).cloned() else {
        return false;
    };
    match c.name {
        "sadd" => {
            match read(db, c, &key) {
                Err(()) => return true,
                Ok(None) => db.set(key.clone(), Value::Set(Set::new())),
                Ok(Some(_)) => {}
            }
            if let Ok(Some(s)) = read(db, c, &key) {
                let n = args[2..].iter().filter(|m| s.insert((*m).clone())).count();
                c.out.int(n as i64);
            }
        }
        "srem" => match read(db, c, &key) {
            Err(()) => {}
            Ok(None) => c.out.int(0),
            Ok(Some(s)) => {
                let n = args[2..].iter().filter(|m| s.remove(*m)).count();
                c.out.int(n as i64);
            }
        },
        "sismember" | "smembers" | "scard" | "smismember" => {
            let Ok(s) = read(db, c, &key) else {
                return true;
            };
            let s = s.map(|s| &*s);
            match c.name {
                "sismember" => c.out.bool_int(s.is_some_and(|s| s.contains(&args[2]))),
                "scard" => c.out.int(s.map_or(0, |s| s.len()) as i64),
                "smismember" => {
                    c.out.array(args.len() - 2);
                    for m in &args[2..] {
                        c.out.bool_int(s.is_some_and(|s| s.contains(m)));
                    }
                }
                _ => reply_set(c, s.into_iter().flatten()),
            }
        }
        "spop" => spop(db, c, key),
        "srandmember" => srandmember(db, c, key),
        "smove" => smove(db, c),
        "sinter" | "sunion" | "sdiff" => {
            if let Some(r) = algebra(db, c, 1) {
                reply_set(c, r.iter());
            }
        }
        "sinterstore" | "sunionstore" | "sdiffstore" => {
            if let Some(r) = algebra(db, c, 2) {
                let n = r.len();
                db.remove(&key);
                if n > 0 {
                    db.set(key, Value::Set(r));
                }
                c.out.int(n as i64);
            }
        }
        "sintercard" => sintercard(db, c),
        _ => return false,
    }
    true
}

fn reply_set<'a>(c: &mut Call, members: impl Iterator<Item = &'a Bytes>) {
    let members: Vec<&Bytes> = members.collect();
    c.out.set(members.len());
    for m in members {
        c.out.bulk(m);
    }
}

fn spop(db: &mut Db, c: &mut Call, key: Bytes) {
    if c.args.len() > 3 {
        return c.out.err(SYNTAX);
    }
    let count = match c.args.get(2) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => return c.out.err("ERR value is out of range, must be positive"),
        },
    };
    let s = match read(db, c, &key) {
        Err(()) => return,
        Ok(None) if count.is_some() => return c.out.set(0),
        Ok(None) => return c.out.null(),
        Ok(Some(s)) => s,
    };
    let picked: Vec<Bytes> = s
        .iter()
        .cloned()
        .choose_multiple(&mut rand::rng(), count.unwrap_or(1));
    for m in &picked {
        s.remove(m);
    }
    match count {
        None => match picked.first() {
            Some(m) => c.out.bulk(m),
            None => c.out.null(),
        },
        Some(_) => reply_set(c, picked.iter()),
    }
}

/// Redis's `srandmemberWithCountCommand`: a positive count gives distinct members, a negative
/// one |count| picks that may repeat.
fn srandmember(db: &mut Db, c: &mut Call, key: Bytes) {
    if c.args.len() > 3 {
        return c.out.err(SYNTAX);
    }
    let count = match c.args.get(2) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n != i64::MIN => Some(n),
            Some(_) => return c.out.err(RANGE_ERR),
            None => return c.out.err(super::NOT_INT),
        },
    };
    let s = match read(db, c, &key) {
        Err(()) => return,
        Ok(None) if count.is_some() => return c.out.array(0),
        Ok(None) => return c.out.null(),
        Ok(Some(s)) => &*s,
    };
    let mut rng = rand::rng();
    let picked: Vec<Bytes> = match count {
        None => s.iter().cloned().choose_multiple(&mut rng, 1),
        Some(n) if n >= 0 => s.iter().cloned().choose_multiple(&mut rng, n as usize),
        Some(n) => {
            let all: Vec<&Bytes> = s.iter().collect();
            (0..n.unsigned_abs())
                .filter_map(|_| all.choose(&mut rng).map(|m| (*m).clone()))
                .collect()
        }
    };
    if count.is_none() {
        return match picked.first() {
            Some(m) => c.out.bulk(m),
            None => c.out.null(),
        };
    }
    c.out.array(picked.len());
    for m in picked {
        c.out.bulk(&m);
    }
}

fn smove(db: &mut Db, c: &mut Call) {
    let (src, dst, m) = (c.args[1].clone(), c.args[2].clone(), c.args[3].clone());
    // Redis answers 0 for a missing source before it type-checks the destination.
    match read(db, c, &src) {
        Err(()) => return,
        Ok(None) => return c.out.int(0),
        Ok(Some(_)) => {}
    }
    if read(db, c, &dst).is_err() {
        return;
    }
    if src == dst {
        let Ok(Some(s)) = read(db, c, &src) else {
            return;
        };
        let found = s.contains(&m);
        return c.out.bool_int(found);
    }
    let Ok(Some(s)) = read(db, c, &src) else {
        return;
    };
    if !s.remove(&m) {
        return c.out.int(0);
    }
    db.account(&src);
    if !db.contains(&dst) {
        db.set(dst.clone(), Value::Set(Set::new()));
    }
    if let Ok(Some(d)) = read(db, c, &dst) {
        d.insert(m);
    }
    db.account(&dst);
    c.out.int(1);
}

/// SINTER/SUNION/SDIFF over `c.args[first..]`; every key is type-checked first, as Redis does.
/// A missing key is an empty set. None after replying an error.
fn algebra(db: &mut Db, c: &mut Call, first: usize) -> Option<Set> {
    let inter = c.name.starts_with("sinter");
    let diff = c.name.starts_with("sdiff");
    let keys: Vec<Bytes> = c.args[first..].to_vec();
    let mut sets: Vec<Option<Set>> = Vec::with_capacity(keys.len());
    for k in &keys {
        match read(db, c, k) {
            Err(()) => return None,
            Ok(s) => sets.push(s.map(|s| s.clone())),
        }
    }
    if inter && sets.iter().any(Option::is_none) {
        return Some(Set::new());
    }
    let mut it = sets.into_iter();
    let mut acc = it.next().flatten().unwrap_or_default();
    for s in it {
        match (inter, diff, s) {
            (true, _, Some(s)) => acc.retain(|m| s.contains(m)),
            (_, true, Some(s)) => acc.retain(|m| !s.contains(m)),
            (false, false, Some(s)) => acc.extend(s),
            (_, _, None) => {}
        }
    }
    Some(acc)
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit].
fn sintercard(db: &mut Db, c: &mut Call) {
    let numkeys = match parse_i64(&c.args[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return c.out.err("ERR numkeys should be greater than 0"),
    };
    if numkeys > c.args.len() - 2 {
        return c
            .out
            .err("ERR Number of keys can't be greater than number of args");
    }
    let Some(limit) = card_limit(c, 2 + numkeys) else {
        return;
    };
    let mut sets = Vec::with_capacity(numkeys);
    for i in 2..2 + numkeys {
        let k = c.args[i].clone();
        match read(db, c, &k) {
            Err(()) => return,
            Ok(None) => sets.push(Set::new()),
            Ok(Some(s)) => sets.push(s.clone()),
        }
    }
    sets.sort_by_key(|s| s.len());
    let (first, rest) = sets.split_first().expect("numkeys > 0");
    let n = first
        .iter()
        .filter(|m| rest.iter().all(|s| s.contains(*m)))
        .take(limit)
        .count();
    c.out.int(n as i64);
}

/// The `[LIMIT limit]` tail of SINTERCARD and ZINTERCARD, from `j`; 0 means no limit.
pub(super) fn card_limit(c: &mut Call, mut j: usize) -> Option<usize> {
    let mut limit = usize::MAX;
    while j < c.args.len() {
        if super::eq_ci(&c.args[j], "limit") && j + 1 < c.args.len() {
            match parse_i64(&c.args[j + 1]) {
                Some(0) => limit = usize::MAX,
                Some(n) if n > 0 => limit = n as usize,
                _ => {
                    c.out.err("ERR LIMIT can't be negative");
                    return None;
                }
            }
            j += 2;
        } else {
            c.out.err(SYNTAX);
            return None;
        }
    }
    Some(limit)
}

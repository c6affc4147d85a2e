//! List commands, the non-blocking ones: pushes, pops, ranges, LINSERT/LSET/LREM/LTRIM/LPOS and
//! the moves (LMOVE, RPOPLPUSH, LMPOP). The blocking forms (BLPOP, BLMOVE, …) are not served:
//! the engine has no way to park a client.
use std::collections::VecDeque;

use bytes::Bytes;

use super::num::parse_i64;
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, arg_i64, eq_ci};

type List = VecDeque<Bytes>;

/// The list at `key` for reading: Ok(None) if missing, Err after replying WRONGTYPE.
fn read<'a>(db: &'a mut Db, c: &mut Call, key: &[u8]) -> Result<Option<&'a mut List>, ()> {
    match db.get_mut(key).map(|e| &mut e.value) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// Redis's `getPositiveLongFromObjectOrReply` with its default message.
fn positive(c: &mut Call, i: usize) -> Option<i64> {
    match parse_i64(&c.args[i]) {
        Some(n) if n >= 0 => Some(n),
        _ => {
            c.out.err("ERR value is out of range, must be positive");
            None
        }
    }
}

/// `LEFT` (true) or `RIGHT` (false).
fn side(a: &[u8]) -> Option<bool> {
    if eq_ci(a, "left") {
        Some(true)
    } else if eq_ci(a, "right") {
        Some(false)
    } else {
        None
    }
}

fn pop(l: &mut List, left: bool) -> Option<Bytes> {
    if left { l.pop_front() } else { l.pop_back() }
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    // Unsupported commands pass through here too, some without any argument.
    let Some(key) = c.args.get(1).cloned() else {
        return false;
    };
    match c.name {
        "lpush" | "rpush" | "lpushx" | "rpushx" => push(db, c, key),
        "lpop" | "rpop" => pop_cmd(db, c, key),
        "llen" => {
            if let Ok(l) = read(db, c, &key) {
                let n = l.map_or(0, |l| l.len());
                c.out.int(n as i64);
            }
        }
        "lrange" => {
            let (Some(start), Some(end)) = (arg_i64(c, 2), arg_i64(c, 3)) else {
                return true;
            };
            let Ok(l) = read(db, c, &key) else {
                return true;
            };
            let l = l.map(|l| &*l);
            let (a, b) = l.map_or((0, 0), |l| clamp(start, end, l.len()));
            c.out.array(b - a);
            for v in l.into_iter().flat_map(|l| l.range(a..b)) {
                c.out.bulk(v);
            }
        }
        "lindex" => {
            // Redis looks the key up before it parses the index.
            match read(db, c, &key) {
                Err(()) => {}
                Ok(None) => c.out.null(),
                Ok(Some(l)) => {
                    let Some(i) = parse_i64(&c.args[2]) else {
                        c.out.err(NOT_INT);
                        return true;
                    };
                    let i = if i < 0 { l.len() as i64 + i } else { i };
                    match usize::try_from(i).ok().and_then(|i| l.get(i)) {
                        Some(v) => {
                            let v = v.clone();
                            c.out.bulk(&v)
                        }
                        None => c.out.null(),
                    }
                }
            }
        }
        "lset" => lset(db, c, key),
        "linsert" => linsert(db, c, key),
        "lrem" => lrem(db, c, key),
        "ltrim" => ltrim(db, c, key),
        "lpos" => lpos(db, c, key),
        "lmove" | "rpoplpush" => lmove(db, c),
        "lmpop" => lmpop(db, c),
        _ => return false,
    }
    true
}

/// Redis's rank range rules (LRANGE, LTRIM, ZRANGE): negative counts from the end; the result is
/// a half-open `a..b`, empty when the range misses the list.
pub(super) fn clamp(start: i64, end: i64, len: usize) -> (usize, usize) {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { len + end } else { end };
    if start > end || start >= len {
        return (0, 0);
    }
    (start as usize, (end.min(len - 1) + 1) as usize)
}

fn push(db: &mut Db, c: &mut Call, key: Bytes) {
    let only_existing = c.name.ends_with('x');
    match read(db, c, &key) {
        Err(()) => return,
        Ok(None) if only_existing => return c.out.int(0),
        Ok(None) => db.set(key.clone(), Value::List(List::new())),
        Ok(Some(_)) => {}
    }
    let Ok(Some(l)) = read(db, c, &key) else {
        return;
    };
    let left = c.name.starts_with('l');
    for v in &c.args[2..] {
        if left {
            l.push_front(v.clone());
        } else {
            l.push_back(v.clone());
        }
    }
    let n = l.len();
    c.out.int(n as i64);
}

fn pop_cmd(db: &mut Db, c: &mut Call, key: Bytes) {
    if c.args.len() > 3 {
        return c.arity_err();
    }
    let count = if c.args.len() == 3 {
        match positive(c, 2) {
            Some(n) => Some(n as usize),
            None => return,
        }
    } else {
        None
    };
    let left = c.name == "lpop";
    match read(db, c, &key) {
        Err(()) => {}
        Ok(None) if count.is_some() => c.out.null_array(),
        Ok(None) => c.out.null(),
        Ok(Some(l)) => match count {
            None => match pop(l, left) {
                Some(v) => c.out.bulk(&v),
                None => c.out.null(),
            },
            Some(n) => {
                let n = n.min(l.len());
                let vals: Vec<Bytes> = (0..n).filter_map(|_| pop(l, left)).collect();
                c.out.array(vals.len());
                for v in vals {
                    c.out.bulk(&v);
                }
            }
        },
    }
}

/// Redis's `lsetCommand` looks the key up before it parses the index.
fn lset(db: &mut Db, c: &mut Call, key: Bytes) {
    let val = c.args[3].clone();
    match read(db, c, &key) {
        Err(()) => {}
        Ok(None) => c.out.err("ERR no such key"),
        Ok(Some(l)) => {
            let Some(i) = parse_i64(&c.args[2]) else {
                return c.out.err(NOT_INT);
            };
            let i = if i < 0 { l.len() as i64 + i } else { i };
            match usize::try_from(i).ok().and_then(|i| l.get_mut(i)) {
                Some(slot) => {
                    *slot = val;
                    c.out.ok();
                }
                None => c.out.err("ERR index out of range"),
            }
        }
    }
}

fn linsert(db: &mut Db, c: &mut Call, key: Bytes) {
    let after = if eq_ci(&c.args[2], "after") {
        true
    } else if eq_ci(&c.args[2], "before") {
        false
    } else {
        return c.out.err(SYNTAX);
    };
    let (pivot, val) = (c.args[3].clone(), c.args[4].clone());
    match read(db, c, &key) {
        Err(()) => {}
        Ok(None) => c.out.int(0),
        Ok(Some(l)) => match l.iter().position(|v| *v == pivot) {
            None => c.out.int(-1),
            Some(i) => {
                l.insert(if after { i + 1 } else { i }, val);
                let n = l.len();
                c.out.int(n as i64);
            }
        },
    }
}

fn lrem(db: &mut Db, c: &mut Call, key: Bytes) {
    let Some(count) = arg_i64(c, 2) else { return };
    let val = c.args[3].clone();
    let l = match read(db, c, &key) {
        Err(()) => return,
        Ok(None) => return c.out.int(0),
        Ok(Some(l)) => l,
    };
    let limit = if count == 0 {
        usize::MAX
    } else {
        count.unsigned_abs() as usize
    };
    let mut removed = 0;
    if count >= 0 {
        let mut i = 0;
        while i < l.len() && removed < limit {
            if l[i] == val {
                l.remove(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
    } else {
        let mut i = l.len();
        while i > 0 && removed < limit {
            i -= 1;
            if l[i] == val {
                l.remove(i);
                removed += 1;
            }
        }
    }
    c.out.int(removed as i64);
}

fn ltrim(db: &mut Db, c: &mut Call, key: Bytes) {
    let (Some(start), Some(end)) = (arg_i64(c, 2), arg_i64(c, 3)) else {
        return;
    };
    match read(db, c, &key) {
        Err(()) => {}
        Ok(None) => c.out.ok(),
        Ok(Some(l)) => {
            let (a, b) = clamp(start, end, l.len());
            l.truncate(b);
            l.drain(..a);
            c.out.ok();
        }
    }
}

/// Redis's `lposCommand`: options first, then the key.
fn lpos(db: &mut Db, c: &mut Call, key: Bytes) {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0i64);
    let mut j = 3;
    while j < c.args.len() {
        let more = j + 1 < c.args.len();
        let opt = c.args[j].clone();
        if eq_ci(&opt, "rank") && more {
            let Some(r) = arg_i64(c, j + 1) else { return };
            if r == 0 {
                return c.out.err(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                );
            }
            rank = r;
        } else if eq_ci(&opt, "count") && more {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n >= 0 => count = Some(n),
                _ => return c.out.err("ERR COUNT can't be negative"),
            }
        } else if eq_ci(&opt, "maxlen") && more {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n >= 0 => maxlen = n,
                _ => return c.out.err("ERR MAXLEN can't be negative"),
            }
        } else {
            return c.out.err(SYNTAX);
        }
        j += 2;
    }
    let val = c.args[2].clone();
    let l = match read(db, c, &key) {
        Err(()) => return,
        Ok(None) if count.is_some() => return c.out.array(0),
        Ok(None) => return c.out.null(),
        Ok(Some(l)) => l,
    };
    let len = l.len();
    let scan = if maxlen == 0 {
        len
    } else {
        len.min(maxlen as usize)
    };
    let idx = |n: usize| if rank > 0 { n } else { len - 1 - n };
    let mut skip = rank.unsigned_abs() - 1;
    let want = match count {
        Some(0) => usize::MAX,
        Some(n) => n as usize,
        None => 1,
    };
    let mut found = Vec::new();
    for n in 0..scan {
        if found.len() >= want {
            break;
        }
        let i = idx(n);
        if l[i] == val {
            if skip > 0 {
                skip -= 1;
            } else {
                found.push(i as i64);
            }
        }
    }
    match count {
        Some(_) => {
            c.out.array(found.len());
            for i in found {
                c.out.int(i);
            }
        }
        None => match found.first() {
            Some(&i) => c.out.int(i),
            None => c.out.null(),
        },
    }
}

/// LMOVE src dst LEFT|RIGHT LEFT|RIGHT, and RPOPLPUSH as LMOVE RIGHT LEFT.
fn lmove(db: &mut Db, c: &mut Call) {
    let (from, to) = if c.name == "rpoplpush" {
        (false, true)
    } else {
        match (side(&c.args[3]), side(&c.args[4])) {
            (Some(f), Some(t)) => (f, t),
            _ => return c.out.err(SYNTAX),
        }
    };
    let (src, dst) = (c.args[1].clone(), c.args[2].clone());
    match read(db, c, &src) {
        Err(()) => return,
        Ok(None) => return c.out.null(),
        Ok(Some(_)) => {}
    }
    if read(db, c, &dst).is_err() {
        return;
    }
    let Ok(Some(l)) = read(db, c, &src) else {
        return;
    };
    let Some(v) = pop(l, from) else {
        return c.out.null();
    };
    db.account(&src);
    if !db.contains(&dst) {
        db.set(dst.clone(), Value::List(List::new()));
    }
    if let Ok(Some(d)) = read(db, c, &dst) {
        if to {
            d.push_front(v.clone());
        } else {
            d.push_back(v.clone());
        }
    }
    db.account(&dst);
    c.out.bulk(&v);
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count].
fn lmpop(db: &mut Db, c: &mut Call) {
    let Some(keys) = super::numkeys(c, 1) else {
        return;
    };
    let mut j = 2 + keys;
    let Some(left) = c.args.get(j).and_then(|a| side(a)) else {
        return c.out.err(SYNTAX);
    };
    j += 1;
    let mut count = 1usize;
    let mut seen_count = false;
    while j < c.args.len() {
        if eq_ci(&c.args[j], "count") && j + 1 < c.args.len() && !seen_count {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n > 0 => count = n as usize,
                _ => return c.out.err("ERR count should be greater than 0"),
            }
            seen_count = true;
            j += 2;
        } else {
            return c.out.err(SYNTAX);
        }
    }
    for i in 2..2 + keys {
        let key = c.args[i].clone();
        let l = match read(db, c, &key) {
            Err(()) => return,
            Ok(None) => continue,
            Ok(Some(l)) => l,
        };
        let n = count.min(l.len());
        let vals: Vec<Bytes> = (0..n).filter_map(|_| pop(l, left)).collect();
        db.account(&key);
        c.out.array(2);
        c.out.bulk(&key);
        c.out.array(vals.len());
        for v in vals {
            c.out.bulk(&v);
        }
        return;
    }
    c.out.null_array();
}

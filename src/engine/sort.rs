//! SORT and SORT_RO over lists, sets and sorted sets, after Redis 7.0's `sortCommandGeneric`:
//! BY patterns (with `->field` for hashes; one without `*` means "don't sort"), LIMIT, GET
//! patterns and `#`, ASC/DESC, ALPHA and STORE.
//!
//! Deviation: ALPHA compares bytes, as Redis does under the C locale; Redis under another
//! `LC_COLLATE` uses `strcoll`. A set sorted `BY` a constant comes out in hash order, which is
//! the engine's own, as with SMEMBERS.
use std::cmp::Ordering;

use bytes::Bytes;

use super::num::{parse_f64, parse_i64};
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, eq_ci};

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    if c.name != "sort" && c.name != "sort_ro" {
        return false;
    }
    sort(db, c);
    true
}

/// Redis's `lookupKeyByPattern`: `#` is the element itself; otherwise the first `*` is replaced
/// by it, and a `->field` after the `*` reads a hash field.
fn by_pattern(db: &mut Db, pattern: &[u8], elem: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(elem.to_vec());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    let field = pattern[star + 1..]
        .windows(2)
        .position(|w| w == b"->")
        .map(|p| star + 1 + p)
        .filter(|&p| p + 2 < pattern.len());
    let key_end = field.unwrap_or(pattern.len());
    let mut key = pattern[..star].to_vec();
    key.extend_from_slice(elem);
    key.extend_from_slice(&pattern[star + 1..key_end]);
    match (db.get(&key).map(|e| &e.value), field) {
        (Some(Value::Hash(h)), Some(f)) => h.get(&pattern[f + 2..]).cloned(),
        (Some(Value::Str(s)), None) => Some(s.clone()),
        _ => None,
    }
}

/// `strtod` as SORT uses it: leading spaces allowed, the whole rest must be a number, and an
/// empty string is 0. None is Redis's "can't be converted".
fn sort_score(v: &[u8]) -> Option<f64> {
    let t = v.trim_ascii_start();
    if t.is_empty() {
        return if v.is_empty() { Some(0.0) } else { None };
    }
    parse_f64(t)
}

struct Item {
    elem: Bytes,
    score: f64,
    /// ALPHA BY: the value sorted by (None when the pattern's key is missing).
    by: Option<Vec<u8>>,
}

fn sort(db: &mut Db, c: &mut Call) {
    let readonly = c.name == "sort_ro";
    let (mut desc, mut alpha, mut dontsort) = (false, false, false);
    let (mut limit_start, mut limit_count) = (0i64, -1i64);
    let (mut store, mut sortby, mut gets) = (None, None, Vec::new());
    let mut j = 2;
    while j < c.args.len() {
        let left = c.args.len() - j - 1;
        let a = &c.args[j];
        if eq_ci(a, "asc") {
            desc = false;
        } else if eq_ci(a, "desc") {
            desc = true;
        } else if eq_ci(a, "alpha") {
            alpha = true;
        } else if eq_ci(a, "limit") && left >= 2 {
            match (parse_i64(&c.args[j + 1]), parse_i64(&c.args[j + 2])) {
                (Some(s), Some(n)) => (limit_start, limit_count) = (s, n),
                _ => return c.out.err(NOT_INT),
            }
            j += 2;
        } else if !readonly && eq_ci(a, "store") && left >= 1 {
            store = Some(c.args[j + 1].clone());
            j += 1;
        } else if eq_ci(a, "by") && left >= 1 {
            let p = c.args[j + 1].clone();
            dontsort = !p.contains(&b'*');
            sortby = Some(p);
            j += 1;
        } else if eq_ci(a, "get") && left >= 1 {
            gets.push(c.args[j + 1].clone());
            j += 1;
        } else {
            return c.out.err(SYNTAX);
        }
        j += 1;
    }
    let (elems, is_set): (Vec<Bytes>, bool) = match db.get(&c.args[1]).map(|e| &e.value) {
        None => (Vec::new(), false),
        Some(Value::List(l)) => (l.iter().cloned().collect(), false),
        Some(Value::Set(s)) => (s.iter().cloned().collect(), true),
        Some(Value::ZSet(z)) => (z.ordered().into_iter().map(|(_, m)| m).collect(), false),
        Some(_) => return c.out.err(WRONGTYPE),
    };
    // A set stored unsorted would depend on hash order: Redis sorts it then (ALPHA, no BY).
    if dontsort && is_set && store.is_some() {
        (dontsort, alpha, sortby) = (false, true, None);
    }
    let len = elems.len() as i64;
    let start = limit_start.max(0);
    let mut end = if limit_count < 0 {
        len - 1
    } else {
        start + limit_count - 1
    };
    let (start, end) = if start >= len {
        (len - 1, len - 2)
    } else {
        end = end.min(len - 1);
        (start, end)
    };
    let mut items: Vec<Item> = elems
        .into_iter()
        .map(|elem| Item {
            elem,
            score: 0.0,
            by: None,
        })
        .collect();
    if dontsort {
        if desc {
            items.reverse();
        }
    } else {
        let mut bad = false;
        for it in &mut items {
            let byval = match &sortby {
                Some(p) => match by_pattern(db, p, &it.elem) {
                    Some(v) => v,
                    None => continue,
                },
                None => it.elem.to_vec(),
            };
            if alpha {
                if sortby.is_some() {
                    it.by = Some(byval);
                }
            } else {
                match sort_score(&byval) {
                    Some(s) => it.score = s,
                    None => bad = true,
                }
            }
        }
        if bad {
            return c
                .out
                .err("ERR One or more scores can't be converted into double");
        }
        let by_pattern = sortby.is_some();
        items.sort_by(|a, b| {
            let cmp = if !alpha {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| a.elem.cmp(&b.elem))
            } else if by_pattern {
                a.by.cmp(&b.by)
            } else {
                a.elem.cmp(&b.elem)
            };
            if desc { cmp.reverse() } else { cmp }
        });
    }
    let picked: &[Item] = if start <= end && end >= 0 {
        &items[start as usize..=end as usize]
    } else {
        &[]
    };
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    for it in picked {
        if gets.is_empty() {
            out.push(Some(it.elem.to_vec()));
        }
        for g in &gets {
            out.push(by_pattern(db, g, &it.elem));
        }
    }
    match store {
        None => {
            c.out.array(out.len());
            for v in out {
                match v {
                    Some(v) => c.out.bulk(&v),
                    None => c.out.null(),
                }
            }
        }
        Some(dst) => {
            let n = out.len();
            db.remove(&dst);
            if n > 0 {
                let list = out
                    .into_iter()
                    .map(|v| Bytes::from(v.unwrap_or_default()))
                    .collect();
                db.set(dst, Value::List(list));
            }
            c.out.int(n as i64);
        }
    }
}

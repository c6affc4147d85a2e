//! Sorted sets: ZADD and friends, ranges by rank, score and lex, ordered as Redis orders them
//! (score, then member bytes).
use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;

use super::num;
mod ops;
mod range;
mod setops;

use range::{Kind, Range, ScoreRange};

use super::{Call, Db, NOT_INT, SYNTAX, ScoreIndex, Value, WRONGTYPE, eq_ci};

/// A score that is never NaN, ordered by value (so -0 equals 0, as C's `<` and `==` see them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score(pub(crate) f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ZSet {
    scores: HashMap<Bytes, f64>,
    index: ScoreIndex,
}

impl ZSet {
    /// Every member with its score, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Bytes, f64)> {
        self.scores.iter().map(|(m, s)| (m, *s))
    }

    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }

    /// Approximate bytes (member stored twice, score, two nodes), from a sample as in `Value::size`.
    pub(crate) fn size(&self) -> usize {
        let sample: Vec<usize> = self.scores.keys().take(16).map(|m| m.len()).collect();
        if sample.is_empty() {
            return 0;
        }
        let avg = sample.iter().sum::<usize>() / sample.len();
        self.len() * (2 * avg + 64)
    }

    fn insert(&mut self, member: Bytes, score: f64) {
        // Redis's listpack stores scores as text that drops the sign of -0 (`d2string` prints
        // integral values with `ll2string`), so a stored -0 reads back as 0.
        let score = if score == 0.0 { 0.0 } else { score };
        if let Some(old) = self.scores.insert(member.clone(), score) {
            self.index.remove(&(Score(old), member.clone()));
        }
        self.index.insert((Score(score), member));
    }

    fn remove(&mut self, member: &Bytes) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.index.remove(&(Score(old), member.clone()));
                true
            }
            None => false,
        }
    }

    /// Every (score, member), in Redis's order.
    pub(crate) fn ordered(&self) -> Vec<(f64, Bytes)> {
        self.index.iter().map(|(s, m)| (s.0, m.clone())).collect()
    }
}

/// The zset at args[1] for reading: Ok(None) if missing, Err after replying WRONGTYPE.
fn read<'a>(db: &'a mut Db, c: &mut Call) -> Result<Option<&'a ZSet>, ()> {
    read_at(db, c, 1)
}

/// The zset at args[i] for reading: Ok(None) if missing, Err after replying WRONGTYPE.
fn read_at<'a>(db: &'a mut Db, c: &mut Call, i: usize) -> Result<Option<&'a ZSet>, ()> {
    match db.get(&c.args[i]).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "zadd" => zadd(db, c, false),
        "zincrby" => zadd(db, c, true),
        "zscore" => {
            if let Ok(z) = read(db, c) {
                match z.and_then(|z| z.scores.get(&c.args[2])).copied() {
                    Some(s) => c.out.double(s),
                    None => c.out.null(),
                }
            }
        }
        "zrank" | "zrevrank" => {
            if let Ok(z) = read(db, c) {
                let rank = z.and_then(|z| {
                    let s = *z.scores.get(&c.args[2])?;
                    let r = z.index.range(..(Score(s), c.args[2].clone())).count();
                    Some(if c.name == "zrank" {
                        r
                    } else {
                        z.len() - 1 - r
                    })
                });
                match rank {
                    Some(r) => c.out.int(r as i64),
                    None => c.out.null(),
                }
            }
        }
        "zcard" => {
            if let Ok(z) = read(db, c) {
                let n = z.map_or(0, |z| z.len());
                c.out.int(n as i64);
            }
        }
        "zrem" => {
            let args = c.args;
            match db.get_mut(&args[1]).map(|e| &mut e.value) {
                None => c.out.int(0),
                Some(Value::ZSet(z)) => {
                    let n = args[2..].iter().filter(|m| z.remove(m)).count();
                    c.out.int(n as i64);
                }
                Some(_) => c.out.err(WRONGTYPE),
            }
        }
        "zcount" => {
            let Some(range) = ScoreRange::parse(&c.args[2], &c.args[3]) else {
                c.out.err("ERR min or max is not a float");
                return true;
            };
            if let Ok(z) = read(db, c) {
                let n = z.map_or(0, |z| {
                    z.index.iter().filter(|(s, _)| range.contains(s.0)).count()
                });
                c.out.int(n as i64);
            }
        }
        "zrange" => zrange(db, c, None, false),
        "zrevrange" => zrange(db, c, Some(Kind::Rank), true),
        "zrangebyscore" => zrange(db, c, Some(Kind::Score), false),
        "zrevrangebyscore" => zrange(db, c, Some(Kind::Score), true),
        "zrangebylex" => zrange(db, c, Some(Kind::Lex), false),
        "zrevrangebylex" => zrange(db, c, Some(Kind::Lex), true),
        "zrangestore" => zrange(db, c, None, false),
        _ => return ops::dispatch(db, c),
    }
    true
}

/// Redis's `zaddGenericCommand` (ZINCRBY is ZADD with INCR and no options).
fn zadd(db: &mut Db, c: &mut Call, zincrby: bool) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, zincrby);
    let mut idx = 2;
    while idx < c.args.len() {
        let o = &c.args[idx];
        if eq_ci(o, "nx") {
            nx = true;
        } else if eq_ci(o, "xx") {
            xx = true;
        } else if eq_ci(o, "ch") {
            ch = true;
        } else if eq_ci(o, "incr") {
            incr = true;
        } else if eq_ci(o, "gt") {
            gt = true;
        } else if eq_ci(o, "lt") {
            lt = true;
        } else {
            break;
        }
        idx += 1;
    }
    let rest = c.args.len() - idx;
    if rest % 2 == 1 || rest == 0 {
        return c.out.err(SYNTAX);
    }
    if xx && nx {
        return c
            .out
            .err("ERR XX and NX options at the same time are not compatible");
    }
    if ((gt || lt) && nx) || (gt && lt) {
        return c
            .out
            .err("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && rest > 2 {
        return c
            .out
            .err("ERR INCR option supports a single increment-element pair");
    }
    let mut pairs = Vec::with_capacity(rest / 2);
    for p in c.args[idx..].chunks(2) {
        match num::parse_f64(&p[0]) {
            Some(s) => pairs.push((s, p[1].clone())),
            None => return c.out.err("ERR value is not a valid float"),
        }
    }
    let key = c.args[1].clone();
    match db.get(&key).map(|e| &e.value) {
        Some(Value::ZSet(_)) => {}
        Some(_) => return c.out.err(WRONGTYPE),
        None if xx => {
            return if incr { c.out.null() } else { c.out.int(0) };
        }
        None => db.set(key.clone(), Value::ZSet(ZSet::default())),
    }
    let Some(Value::ZSet(z)) = db.get_mut(&key).map(|e| &mut e.value) else {
        return;
    };
    let (mut added, mut updated, mut processed) = (0, 0, 0);
    let mut last = 0.0;
    for (mut score, member) in pairs {
        match z.scores.get(&member).copied() {
            Some(cur) => {
                if nx {
                    continue;
                }
                if incr {
                    score += cur;
                    if score.is_nan() {
                        return c.out.err("ERR resulting score is not a number (NaN)");
                    }
                }
                if (lt && score >= cur) || (gt && score <= cur) {
                    continue;
                }
                last = score;
                if score != cur {
                    z.insert(member, score);
                    updated += 1;
                }
                processed += 1;
            }
            None if !xx => {
                z.insert(member, score);
                last = score;
                added += 1;
                processed += 1;
            }
            None => {}
        }
    }
    if incr {
        if processed > 0 {
            c.out.double(last);
        } else {
            c.out.null();
        }
    } else {
        c.out.int(if ch { added + updated } else { added });
    }
}

/// Redis's `zrangeGenericCommand` for ZRANGE, ZRANGESTORE (`store`) and the legacy range
/// commands (`fixed` kind).
fn zrange(db: &mut Db, c: &mut Call, fixed: Option<Kind>, fixed_rev: bool) {
    let store = c.name == "zrangestore";
    let src = if store { 2 } else { 1 };
    let mut kind = fixed;
    let mut rev = if fixed.is_some() {
        Some(fixed_rev)
    } else {
        None
    };
    let (mut withscores, mut offset, mut limit) = (false, 0i64, -1i64);
    let mut j = src + 3;
    while j < c.args.len() {
        let left = c.args.len() - j - 1;
        let a = &c.args[j];
        if !store && eq_ci(a, "withscores") {
            withscores = true;
        } else if eq_ci(a, "limit") && left >= 2 {
            let (Some(o), Some(l)) = (
                num::parse_i64(&c.args[j + 1]),
                num::parse_i64(&c.args[j + 2]),
            ) else {
                return c.out.err(NOT_INT);
            };
            offset = o;
            limit = l;
            j += 2;
        } else if rev.is_none() && eq_ci(a, "rev") {
            rev = Some(true);
        } else if kind.is_none() && eq_ci(a, "bylex") {
            kind = Some(Kind::Lex);
        } else if kind.is_none() && eq_ci(a, "byscore") {
            kind = Some(Kind::Score);
        } else {
            return c.out.err(SYNTAX);
        }
        j += 1;
    }
    let rev = rev.unwrap_or(false);
    let kind = kind.unwrap_or(Kind::Rank);
    if limit != -1 && kind == Kind::Rank {
        return c.out.err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if withscores && kind == Kind::Lex {
        return c
            .out
            .err("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    let (mut lo, mut hi) = (src + 1, src + 2);
    if rev && kind != Kind::Rank {
        std::mem::swap(&mut lo, &mut hi);
    }
    let range = match Range::parse(kind, &c.args[lo], &c.args[hi]) {
        Ok(r) => r,
        Err(e) => return c.out.err(e),
    };
    let Ok(z) = read_at(db, c, src) else { return };
    let items = match z {
        None => Vec::new(),
        Some(z) if kind == Kind::Rank => range.pick(z, rev),
        Some(z) => apply_limit(range.pick(z, rev).into_iter(), offset, limit, z.len()),
    };
    store_or_reply(db, c, items, store, withscores);
}

/// The end of a range or set operation: with `store`, the result replaces the destination key
/// (`args[1]`; an empty result deletes it) and the reply is its size; otherwise the members.
pub(super) fn store_or_reply(
    db: &mut Db,
    c: &mut Call,
    items: Vec<(f64, Bytes)>,
    store: bool,
    withscores: bool,
) {
    if store {
        let dst = c.args[1].clone();
        let n = items.len();
        db.remove(&dst);
        if n > 0 {
            let mut z = ZSet::default();
            for (s, m) in items {
                z.insert(m, s);
            }
            db.set(dst, Value::ZSet(z));
        }
        return c.out.int(n as i64);
    }
    reply_scored(c, &items, withscores);
}

/// A range reply: members, with their scores if asked (pairs in RESP3, flat in RESP2).
pub(super) fn reply_scored(c: &mut Call, items: &[(f64, Bytes)], withscores: bool) {
    let resp3 = c.out.proto == crate::protocol::Protocol::Resp3;
    let n = if withscores && !resp3 {
        items.len() * 2
    } else {
        items.len()
    };
    c.out.array(n);
    for (s, m) in items {
        if withscores && resp3 {
            c.out.array(2);
        }
        c.out.bulk(m);
        if withscores {
            c.out.double(*s);
        }
    }
}

/// LIMIT as Redis applies it: a negative offset or one past the end gives nothing; a negative
/// count means all.
fn apply_limit(
    it: impl Iterator<Item = (f64, Bytes)>,
    offset: i64,
    limit: i64,
    len: usize,
) -> Vec<(f64, Bytes)> {
    if offset < 0 || (offset > 0 && offset as usize >= len) {
        return Vec::new();
    }
    let it = it.skip(offset as usize);
    if limit < 0 {
        it.collect()
    } else {
        it.take(limit as usize).collect()
    }
}

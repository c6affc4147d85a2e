//! Sorted-set commands that remove or pick: ZREMRANGEBY{SCORE,RANK,LEX}, ZPOPMIN/ZPOPMAX, ZMPOP,
//! ZRANDMEMBER, plus the small readers ZMSCORE and ZLEXCOUNT.
use bytes::Bytes;

use super::super::num::parse_i64;
use super::super::{Call, Db, SYNTAX, Value, WRONGTYPE, eq_ci, numkeys, random};
use super::{Kind, Range, ZSet, read, reply_scored};

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "zremrangebyscore" => remrange(db, c, Kind::Score),
        "zremrangebyrank" => remrange(db, c, Kind::Rank),
        "zremrangebylex" => remrange(db, c, Kind::Lex),
        "zpopmin" | "zpopmax" => zpop(db, c),
        "zmpop" => zmpop(db, c),
        "zrandmember" => {
            let Some(pick) = random::parse(c, "withscores") else {
                return true;
            };
            let Ok(z) = read(db, c) else { return true };
            let all: Vec<(&Bytes, f64)> = z.into_iter().flat_map(|z| z.entries()).collect();
            let picked = pick.choose(&all);
            pick.reply(c, picked, |c, s| c.out.double(s));
        }
        "zmscore" => {
            let Ok(z) = read(db, c) else { return true };
            let scores: Vec<Option<f64>> = c.args[2..]
                .iter()
                .map(|m| z.and_then(|z| z.scores.get(m).copied()))
                .collect();
            c.out.array(scores.len());
            for s in scores {
                match s {
                    Some(s) => c.out.double(s),
                    None => c.out.null(),
                }
            }
        }
        "zlexcount" => {
            let range = match Range::parse(Kind::Lex, &c.args[2], &c.args[3]) {
                Ok(r) => r,
                Err(e) => {
                    c.out.err(e);
                    return true;
                }
            };
            if let Ok(z) = read(db, c) {
                let n = z.map_or(0, |z| range.pick(z, false).len());
                c.out.int(n as i64);
            }
        }
        "zunion" | "zinter" | "zdiff" | "zunionstore" | "zinterstore" | "zdiffstore"
        | "zintercard" => super::setops::run(db, c),
        _ => return false,
    }
    true
}

/// The zset at `key` for writing: Ok(None) if missing, Err after replying WRONGTYPE.
fn write<'a>(db: &'a mut Db, c: &mut Call, key: &[u8]) -> Result<Option<&'a mut ZSet>, ()> {
    match db.get_mut(key).map(|e| &mut e.value) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// Redis's `zremrangeGenericCommand`: the range is parsed before the key is looked up.
fn remrange(db: &mut Db, c: &mut Call, kind: Kind) {
    let range = match Range::parse(kind, &c.args[2], &c.args[3]) {
        Ok(r) => r,
        Err(e) => return c.out.err(e),
    };
    let key = c.args[1].clone();
    match write(db, c, &key) {
        Err(()) => {}
        Ok(None) => c.out.int(0),
        Ok(Some(z)) => {
            let gone = range.pick(z, false);
            for (_, m) in &gone {
                z.remove(m);
            }
            c.out.int(gone.len() as i64);
        }
    }
}

/// Pop up to `count` members from the low (`min`) or high end.
fn pop_n(z: &mut ZSet, min: bool, count: usize) -> Vec<(f64, Bytes)> {
    let mut out = Vec::with_capacity(count.min(z.len()));
    while out.len() < count {
        let first = if min { z.index.first() } else { z.index.last() };
        let Some((s, m)) = first.cloned() else { break };
        z.remove(&m);
        out.push((s.0, m));
    }
    out
}

/// ZPOPMIN/ZPOPMAX key [count]: a flat member, score list; in RESP3 with a count, pairs.
fn zpop(db: &mut Db, c: &mut Call) {
    if c.args.len() > 3 {
        return c.out.err(SYNTAX);
    }
    let count = match c.args.get(2) {
        None => 1,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => n as usize,
            _ => return c.out.err("ERR value is out of range, must be positive"),
        },
    };
    let key = c.args[1].clone();
    let min = c.name == "zpopmin";
    let popped = match write(db, c, &key) {
        Err(()) => return,
        Ok(None) => Vec::new(),
        Ok(Some(z)) => pop_n(z, min, count),
    };
    let nested = c.args.len() == 3 && c.out.proto == crate::protocol::Protocol::Resp3;
    if nested {
        reply_scored(c, &popped, true);
    } else {
        c.out.array(popped.len() * 2);
        for (s, m) in &popped {
            c.out.bulk(m);
            c.out.double(*s);
        }
    }
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]: from the first non-empty key.
fn zmpop(db: &mut Db, c: &mut Call) {
    let Some(keys) = numkeys(c, 1) else { return };
    let mut j = 2 + keys;
    let min = match c.args.get(j) {
        Some(a) if eq_ci(a, "min") => true,
        Some(a) if eq_ci(a, "max") => false,
        _ => return c.out.err(SYNTAX),
    };
    j += 1;
    let (mut count, mut seen) = (1usize, false);
    while j < c.args.len() {
        if eq_ci(&c.args[j], "count") && j + 1 < c.args.len() && !seen {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n > 0 => count = n as usize,
                _ => return c.out.err("ERR count should be greater than 0"),
            }
            seen = true;
            j += 2;
        } else {
            return c.out.err(SYNTAX);
        }
    }
    for i in 2..2 + keys {
        let key = c.args[i].clone();
        let popped = match write(db, c, &key) {
            Err(()) => return,
            Ok(None) => continue,
            Ok(Some(z)) => pop_n(z, min, count),
        };
        db.account(&key);
        c.out.array(2);
        c.out.bulk(&key);
        reply_scored_nested(c, &popped);
        return;
    }
    c.out.null_array();
}

/// ZMPOP's member list: always [member, score] pairs, in RESP2 too.
fn reply_scored_nested(c: &mut Call, items: &[(f64, Bytes)]) {
    c.out.array(items.len());
    for (s, m) in items {
        c.out.array(2);
        c.out.bulk(m);
        c.out.double(*s);
    }
}

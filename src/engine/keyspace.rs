//! Keyspace commands: DEL, EXISTS, TYPE, the EXPIRE/TTL family, RENAME, KEYS, SCAN, FLUSH*.
use bytes::Bytes;

use super::strings::expire_err;
use super::{Call, Db, SYNTAX, arg_i64, eq_ci};
use crate::policy::glob;

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "del" | "unlink" => {
            let n = c.args[1..]
                .iter()
                .filter(|k| {
                    db.expire_if_needed(k);
                    db.remove(k).is_some()
                })
                .count();
            c.out.int(n as i64);
        }
        "exists" => {
            let n = c.args[1..].iter().filter(|k| db.contains(k)).count();
            c.out.int(n as i64);
        }
        "touch" => {
            let n = c.args[1..].iter().filter(|k| db.contains(k)).count();
            c.out.int(n as i64);
        }
        "copy" => copy(db, c),
        "type" => {
            let t = db.get(&c.args[1]).map_or("none", |e| e.value.type_name());
            c.out.simple(t);
        }
        "expire" => expire(db, c, 1000, false),
        "pexpire" => expire(db, c, 1, false),
        "expireat" => expire(db, c, 1000, true),
        "pexpireat" => expire(db, c, 1, true),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => ttl(db, c),
        "persist" => {
            let removed = db
                .get_mut(&c.args[1])
                .is_some_and(|e| e.expire_at.take().is_some());
            c.out.bool_int(removed);
        }
        "rename" | "renamenx" => rename(db, c),
        "dbsize" => {
            let n = db.live_keys().count();
            c.out.int(n as i64);
        }
        "flushdb" | "flushall" => {
            if c.args.len() > 2
                || (c.args.len() == 2 && !eq_ci(&c.args[1], "sync") && !eq_ci(&c.args[1], "async"))
            {
                return {
                    c.out.err(SYNTAX);
                    true
                };
            }
            db.clear();
            c.out.ok();
        }
        "keys" => {
            let pat = c.args[1].clone();
            let keys: Vec<Bytes> = db
                .live_keys()
                .filter(|(k, _)| glob::matches(&pat, k))
                .map(|(k, _)| k.clone())
                .collect();
            c.out.array(keys.len());
            for k in keys {
                c.out.bulk(&k);
            }
        }
        "randomkey" => {
            db.sweep();
            match db.random_key() {
                Some(k) => c.out.bulk(&k),
                None => c.out.null(),
            }
        }
        _ => return false,
    }
    true
}

/// Redis's `expireGenericCommand` with `parseExtendedExpireArgumentsOrReply`.
fn expire(db: &mut Db, c: &mut Call, unit: i64, absolute: bool) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &c.args[3..] {
        if eq_ci(opt, "nx") {
            nx = true;
        } else if eq_ci(opt, "xx") {
            xx = true;
        } else if eq_ci(opt, "gt") {
            gt = true;
        } else if eq_ci(opt, "lt") {
            lt = true;
        } else {
            let msg = format!("ERR Unsupported option {}", String::from_utf8_lossy(opt));
            return c.out.err(&msg);
        }
    }
    if nx && (xx || gt || lt) {
        return c
            .out
            .err("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return c
            .out
            .err("ERR GT and LT options at the same time are not compatible");
    }
    let Some(mut when) = arg_i64(c, 2) else {
        return;
    };
    if unit == 1000 {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return expire_err(c);
        }
        when *= 1000;
    }
    let base = if absolute { 0 } else { db.now as i64 };
    if when > i64::MAX - base {
        return expire_err(c);
    }
    when += base;
    let now = db.now as i64;
    let Some(e) = db.get_mut(&c.args[1]) else {
        return c.out.int(0);
    };
    let current = e.expire_at.map(|t| t as i64);
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|cur| when <= cur))
        || (lt && current.is_some_and(|cur| when >= cur));
    if refused {
        return c.out.int(0);
    }
    if when <= now {
        db.remove(&c.args[1]);
    } else {
        e.expire_at = Some(when as u64);
    }
    c.out.int(1);
}

fn ttl(db: &mut Db, c: &mut Call) {
    let now = db.now;
    let Some(e) = db.get(&c.args[1]) else {
        return c.out.int(-2);
    };
    let Some(at) = e.expire_at else {
        return c.out.int(-1);
    };
    let left = at.saturating_sub(now) as i64;
    let n = match c.name {
        "ttl" => (left + 500) / 1000,
        "pttl" => left,
        "expiretime" => at as i64 / 1000,
        _ => at as i64,
    };
    c.out.int(n);
}

/// COPY source destination [DB 0] [REPLACE]: the engine has one database.
fn copy(db: &mut Db, c: &mut Call) {
    let mut replace = false;
    let mut j = 3;
    while j < c.args.len() {
        if eq_ci(&c.args[j], "replace") {
            replace = true;
        } else if eq_ci(&c.args[j], "db") && j + 1 < c.args.len() {
            match arg_i64(c, j + 1) {
                None => return,
                Some(0) => {}
                Some(_) => return c.out.err("ERR DB index is out of range"),
            }
            j += 1;
        } else {
            return c.out.err(SYNTAX);
        }
        j += 1;
    }
    if c.args[1] == c.args[2] {
        return c.out.err("ERR source and destination objects are the same");
    }
    let Some(src) = db.get(&c.args[1]) else {
        return c.out.int(0);
    };
    let (value, expire) = (src.value.clone(), src.expire_at);
    if db.contains(&c.args[2]) && !replace {
        return c.out.int(0);
    }
    db.insert(c.args[2].clone(), value, expire);
    c.out.int(1);
}

fn rename(db: &mut Db, c: &mut Call) {
    let nx = c.name == "renamenx";
    if !db.contains(&c.args[1]) {
        return c.out.err("ERR no such key");
    }
    if c.args[1] == c.args[2] {
        return if nx { c.out.int(0) } else { c.out.ok() };
    }
    if nx && db.contains(&c.args[2]) {
        return c.out.int(0);
    }
    let e = db.remove(&c.args[1]).expect("checked above");
    db.insert(c.args[2].clone(), e.value, e.expire_at);
    if nx { c.out.int(1) } else { c.out.ok() }
}

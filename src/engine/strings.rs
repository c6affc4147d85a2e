//! String commands: GET/SET and friends, counters, ranges. Owns no state of its own.
use bytes::Bytes;

use super::num::{self, FloatError};
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, arg_i64, eq_ci};

/// Redis's `proto-max-bulk-len` default: the largest string SETRANGE/APPEND may build.
const MAX_STRING: i64 = 512 * 1024 * 1024;

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "get" => {
            get_reply(db, c, 1);
        }
        "set" => set(db, c),
        "setnx" => set_generic(db, c, Opts::nx(), 1, 2, None, Reply::OneZero),
        "setex" | "psetex" => {
            let unit = if c.name == "setex" { 1000 } else { 1 };
            let opts = Opts {
                relative: true,
                ..Opts::default()
            };
            set_generic(db, c, opts, 1, 3, Some((2, unit)), Reply::Ok);
        }
        "getset" => {
            if get_reply(db, c, 1) {
                db.set(c.args[1].clone(), Value::Str(c.args[2].to_vec()));
            }
        }
        "getdel" => {
            if get_reply(db, c, 1) {
                db.remove(&c.args[1]);
            }
        }
        "getex" => getex(db, c),
        "mget" => {
            c.out.array(c.args.len() - 1);
            for k in &c.args[1..] {
                match db.get(k).map(|e| &e.value) {
                    Some(Value::Str(s)) => c.out.bulk(s),
                    _ => c.out.null(),
                }
            }
        }
        "mset" | "msetnx" => mset(db, c),
        "append" => append(db, c),
        "strlen" => match db.get(&c.args[1]).map(|e| &e.value) {
            None => c.out.int(0),
            Some(Value::Str(s)) => c.out.int(s.len() as i64),
            Some(_) => c.out.err(WRONGTYPE),
        },
        "incr" => incr_by(db, c, 1),
        "decr" => incr_by(db, c, -1),
        "incrby" => {
            if let Some(n) = arg_i64(c, 2) {
                incr_by(db, c, n);
            }
        }
        "decrby" => {
            if let Some(n) = arg_i64(c, 2) {
                if n == i64::MIN {
                    c.out.err("ERR decrement would overflow");
                } else {
                    incr_by(db, c, -n);
                }
            }
        }
        "incrbyfloat" => incr_by_float(db, c),
        "getrange" | "substr" => getrange(db, c),
        "setrange" => setrange(db, c),
        _ => return false,
    }
    true
}

/// Redis's `getGenericCommand`: reply with the string or null; false (after replying) on WRONGTYPE.
fn get_reply(db: &mut Db, c: &mut Call, key: usize) -> bool {
    match db.get(&c.args[key]).map(|e| &e.value) {
        None => c.out.null(),
        Some(Value::Str(s)) => c.out.bulk(s),
        Some(_) => {
            c.out.err(WRONGTYPE);
            return false;
        }
    }
    true
}

#[derive(Default, Clone, Copy)]
struct Opts {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// EX/PX: relative to now rather than absolute (EXAT/PXAT).
    relative: bool,
}

impl Opts {
    fn nx() -> Self {
        Opts {
            nx: true,
            ..Opts::default()
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Reply {
    Ok,
    OneZero,
}

/// Redis's `parseExtendedStringArgumentsOrReply`: for SET (`is_set`) or GETEX, from `start`.
/// Returns the options and the expire argument (index, milliseconds per unit).
fn parse_ext(c: &mut Call, start: usize, is_set: bool) -> Option<(Opts, Option<(usize, i64)>)> {
    let mut o = Opts::default();
    // Which of EX, PX, EXAT, PXAT was given; they exclude each other (but repeat).
    let mut ex_kind: Option<&str> = None;
    let mut expire = None;
    let mut j = start;
    while j < c.args.len() {
        let opt = &c.args[j];
        let has_next = j + 1 < c.args.len();
        let no_other_ex = |k: &str| ex_kind.is_none() || ex_kind == Some(k);
        if is_set && eq_ci(opt, "nx") && !o.xx {
            o.nx = true;
        } else if is_set && eq_ci(opt, "xx") && !o.nx {
            o.xx = true;
        } else if is_set && eq_ci(opt, "get") {
            o.get = true;
        } else if is_set && eq_ci(opt, "keepttl") && !o.persist && ex_kind.is_none() {
            o.keepttl = true;
        } else if !is_set && eq_ci(opt, "persist") && ex_kind.is_none() && !o.keepttl {
            o.persist = true;
        } else if let Some((kind, unit, rel)) = [
            ("ex", 1000, true),
            ("px", 1, true),
            ("exat", 1000, false),
            ("pxat", 1, false),
        ]
        .into_iter()
        .find(|(k, ..)| eq_ci(opt, k))
        .filter(|(k, ..)| !o.keepttl && !o.persist && no_other_ex(k) && has_next)
        {
            ex_kind = Some(kind);
            o.relative = rel;
            expire = Some((j + 1, unit));
            j += 1;
        } else {
            c.out.err(SYNTAX);
            return None;
        }
        j += 1;
    }
    Some((o, expire))
}

/// Redis's `getExpireMillisecondsOrReply`: the absolute expiry in ms.
fn expire_ms(c: &mut Call, db: &Db, idx: usize, unit: i64, relative: bool) -> Option<u64> {
    let mut ms = arg_i64(c, idx)?;
    if ms <= 0 || (unit == 1000 && ms > i64::MAX / 1000) {
        expire_err(c);
        return None;
    }
    ms *= unit;
    if relative {
        ms = ms.saturating_add(db.now as i64);
    }
    Some(ms as u64)
}

pub(super) fn expire_err(c: &mut Call) {
    let msg = format!("ERR invalid expire time in '{}' command", c.name);
    c.out.err(&msg);
}

fn set(db: &mut Db, c: &mut Call) {
    let Some((opts, expire)) = parse_ext(c, 3, true) else {
        return;
    };
    set_generic(db, c, opts, 1, 2, expire, Reply::Ok);
}

/// Redis's `setGenericCommand`.
fn set_generic(
    db: &mut Db,
    c: &mut Call,
    opts: Opts,
    key: usize,
    val: usize,
    expire: Option<(usize, i64)>,
    reply: Reply,
) {
    let when = match expire {
        Some((idx, unit)) => match expire_ms(c, db, idx, unit, opts.relative) {
            Some(w) => Some(w),
            None => return,
        },
        None => None,
    };
    if opts.get && !get_reply(db, c, key) {
        return;
    }
    let found = db.contains(&c.args[key]);
    if (opts.nx && found) || (opts.xx && !found) {
        if !opts.get {
            match reply {
                Reply::Ok => c.out.null(),
                Reply::OneZero => c.out.int(0),
            }
        }
        return;
    }
    let keep = if opts.keepttl {
        db.get(&c.args[key]).and_then(|e| e.expire_at)
    } else {
        None
    };
    db.insert(
        c.args[key].clone(),
        Value::Str(c.args[val].to_vec()),
        when.or(keep),
    );
    if !opts.get {
        match reply {
            Reply::Ok => c.out.ok(),
            Reply::OneZero => c.out.int(1),
        }
    }
}

fn getex(db: &mut Db, c: &mut Call) {
    let Some((opts, expire)) = parse_ext(c, 2, false) else {
        return;
    };
    match db.get(&c.args[1]).map(|e| &e.value) {
        None => return c.out.null(),
        Some(Value::Str(_)) => {}
        Some(_) => return c.out.err(WRONGTYPE),
    }
    let when = match expire {
        Some((idx, unit)) => match expire_ms(c, db, idx, unit, opts.relative) {
            Some(w) => Some(w),
            None => return,
        },
        None => None,
    };
    get_reply(db, c, 1);
    let now = db.now;
    if let Some(w) = when {
        if w <= now {
            db.remove(&c.args[1]);
        } else if let Some(e) = db.get_mut(&c.args[1]) {
            e.expire_at = Some(w);
        }
    } else if opts.persist
        && let Some(e) = db.get_mut(&c.args[1])
    {
        e.expire_at = None;
    }
}

fn mset(db: &mut Db, c: &mut Call) {
    if c.args.len().is_multiple_of(2) {
        return c.arity_err();
    }
    let nx = c.name == "msetnx";
    if nx && c.args[1..].chunks(2).any(|kv| db.contains(&kv[0])) {
        return c.out.int(0);
    }
    for kv in c.args[1..].chunks(2) {
        db.set(kv[0].clone(), Value::Str(kv[1].to_vec()));
    }
    if nx { c.out.int(1) } else { c.out.ok() }
}

fn append(db: &mut Db, c: &mut Call) {
    let key = c.args[1].clone();
    match db.get_mut(&key).map(|e| &mut e.value) {
        None => {
            let len = c.args[2].len();
            db.set(key, Value::Str(c.args[2].to_vec()));
            c.out.int(len as i64);
        }
        Some(Value::Str(s)) => {
            if (s.len() + c.args[2].len()) as i64 > MAX_STRING {
                return c
                    .out
                    .err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            }
            s.extend_from_slice(&c.args[2]);
            let len = s.len();
            c.out.int(len as i64);
        }
        Some(_) => c.out.err(WRONGTYPE),
    }
}

fn incr_by(db: &mut Db, c: &mut Call, by: i64) {
    let key = c.args[1].clone();
    let (cur, expire) = match db.get(&key) {
        None => (0, None),
        Some(e) => match &e.value {
            Value::Str(s) => match num::parse_i64(s) {
                Some(n) => (n, e.expire_at),
                None => return c.out.err(NOT_INT),
            },
            _ => return c.out.err(WRONGTYPE),
        },
    };
    let Some(n) = cur.checked_add(by) else {
        return c.out.err("ERR increment or decrement would overflow");
    };
    db.insert(key, Value::Str(n.to_string().into_bytes()), expire);
    c.out.int(n);
}

fn incr_by_float(db: &mut Db, c: &mut Call) {
    let key = c.args[1].clone();
    let (cur, expire) = match db.get(&key) {
        None => (b"0".to_vec(), None),
        Some(e) => match &e.value {
            Value::Str(s) => (s.clone(), e.expire_at),
            _ => return c.out.err(WRONGTYPE),
        },
    };
    match num::incr_float(&cur, &c.args[2]) {
        Ok(s) => {
            c.out.bulk(s.as_bytes());
            db.insert(key, Value::Str(s.into_bytes()), expire);
        }
        Err(FloatError::NotFloat) => c.out.err("ERR value is not a valid float"),
        Err(FloatError::NanOrInf) => c.out.err("ERR increment would produce NaN or Infinity"),
    }
}

fn getrange(db: &mut Db, c: &mut Call) {
    let Some(mut start) = arg_i64(c, 2) else {
        return;
    };
    let Some(mut end) = arg_i64(c, 3) else {
        return;
    };
    let s = match db.get(&c.args[1]).map(|e| &e.value) {
        None => return c.out.bulk(b""),
        Some(Value::Str(s)) => s,
        Some(_) => return c.out.err(WRONGTYPE),
    };
    if start < 0 && end < 0 && start > end {
        return c.out.bulk(b"");
    }
    let len = s.len() as i64;
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        c.out.bulk(b"");
    } else {
        let part = s[start as usize..=end as usize].to_vec();
        c.out.bulk(&part);
    }
}

fn setrange(db: &mut Db, c: &mut Call) {
    let Some(offset) = arg_i64(c, 2) else {
        return;
    };
    if offset < 0 {
        return c.out.err("ERR offset is out of range");
    }
    let value: Bytes = c.args[3].clone();
    let too_big = offset.saturating_add(value.len() as i64) > MAX_STRING;
    let key = c.args[1].clone();
    match db.get_mut(&key).map(|e| &mut e.value) {
        None => {
            if value.is_empty() {
                return c.out.int(0);
            }
            if too_big {
                return c
                    .out
                    .err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            }
            let mut s = vec![0u8; offset as usize];
            s.extend_from_slice(&value);
            let len = s.len();
            db.set(key, Value::Str(s));
            c.out.int(len as i64);
        }
        Some(Value::Str(s)) => {
            if value.is_empty() {
                let len = s.len();
                return c.out.int(len as i64);
            }
            if too_big {
                return c
                    .out
                    .err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            }
            let off = offset as usize;
            if s.len() < off + value.len() {
                s.resize(off + value.len(), 0);
            }
            s[off..off + value.len()].copy_from_slice(&value);
            let len = s.len();
            c.out.int(len as i64);
        }
        Some(_) => c.out.err(WRONGTYPE),
    }
}

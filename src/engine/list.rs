//! List commands (non-blocking ones only).
use std::collections::VecDeque;

use super::{Call, Db, Value, WRONGTYPE, arg_i64};

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    let args = c.args;
    // Unsupported commands pass through here too, some without any argument.
    let Some(key) = args.get(1).cloned() else {
        return false;
    };
    match c.name {
        "lpush" | "rpush" => {
            match db.get(&key).map(|e| &e.value) {
                None => db.set(key.clone(), Value::List(VecDeque::new())),
                Some(Value::List(_)) => {}
                Some(_) => {
                    c.out.err(WRONGTYPE);
                    return true;
                }
            }
            if let Some(Value::List(l)) = db.get_mut(&key).map(|e| &mut e.value) {
                for v in &args[2..] {
                    if c.name == "lpush" {
                        l.push_front(v.clone());
                    } else {
                        l.push_back(v.clone());
                    }
                }
                c.out.int(l.len() as i64);
            }
        }
        "lpop" | "rpop" => {
            if args.len() > 3 {
                c.arity_err();
                return true;
            }
            let count = if args.len() == 3 {
                match crate::engine::num::parse_i64(&args[2]) {
                    Some(n) if n >= 0 => Some(n as usize),
                    _ => {
                        c.out.err("ERR value is out of range, must be positive");
                        return true;
                    }
                }
            } else {
                None
            };
            let l = match db.get_mut(&key).map(|e| &mut e.value) {
                None => {
                    if count.is_some() {
                        c.out.null_array();
                    } else {
                        c.out.null();
                    }
                    return true;
                }
                Some(Value::List(l)) => l,
                Some(_) => {
                    c.out.err(WRONGTYPE);
                    return true;
                }
            };
            let front = c.name == "lpop";
            match count {
                None => {
                    let v = if front { l.pop_front() } else { l.pop_back() };
                    match v {
                        Some(v) => c.out.bulk(&v),
                        None => c.out.null(),
                    }
                }
                Some(n) => {
                    let n = n.min(l.len());
                    c.out.array(n);
                    for _ in 0..n {
                        let v = if front { l.pop_front() } else { l.pop_back() };
                        if let Some(v) = v {
                            c.out.bulk(&v);
                        }
                    }
                }
            }
        }
        "llen" => match db.get(&key).map(|e| &e.value) {
            None => c.out.int(0),
            Some(Value::List(l)) => c.out.int(l.len() as i64),
            Some(_) => c.out.err(WRONGTYPE),
        },
        "lrange" => {
            let Some(start) = arg_i64(c, 2) else {
                return true;
            };
            let Some(end) = arg_i64(c, 3) else {
                return true;
            };
            let l = match db.get(&key).map(|e| &e.value) {
                None => {
                    c.out.array(0);
                    return true;
                }
                Some(Value::List(l)) => l,
                Some(_) => {
                    c.out.err(WRONGTYPE);
                    return true;
                }
            };
            let len = l.len() as i64;
            let start = if start < 0 {
                (len + start).max(0)
            } else {
                start
            };
            let end = if end < 0 { len + end } else { end };
            if start > end || start >= len {
                c.out.array(0);
                return true;
            }
            let end = end.min(len - 1);
            c.out.array((end - start + 1) as usize);
            for v in l.range(start as usize..=end as usize) {
                c.out.bulk(v);
            }
        }
        "lindex" => {
            // Redis looks the key up before it parses the index.
            match db.get(&key).map(|e| &e.value) {
                None => c.out.null(),
                Some(Value::List(l)) => {
                    let Some(i) = crate::engine::num::parse_i64(&args[2]) else {
                        c.out.err(crate::engine::NOT_INT);
                        return true;
                    };
                    let i = if i < 0 { l.len() as i64 + i } else { i };
                    match usize::try_from(i).ok().and_then(|i| l.get(i)) {
                        Some(v) => c.out.bulk(v),
                        None => c.out.null(),
                    }
                }
                Some(_) => c.out.err(WRONGTYPE),
            }
        }
        _ => return false,
    }
    true
}

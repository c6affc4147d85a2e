//! Hash commands.
use std::collections::HashMap;

use bytes::Bytes;

use super::num::{self, FloatError};
use super::{Call, Db, Value, WRONGTYPE, arg_i64};

type Hash = HashMap<Bytes, Vec<u8>>;

/// The hash at `key` for reading: Ok(None) if missing, Err after replying WRONGTYPE.
fn read<'a>(db: &'a mut Db, c: &mut Call) -> Result<Option<&'a Hash>, ()> {
    match db.get(&c.args[1]).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// The hash at `key` for writing, created if missing; None after replying WRONGTYPE.
fn write<'a>(db: &'a mut Db, c: &mut Call) -> Option<&'a mut Hash> {
    let key = c.args[1].clone();
    match db.get(&key).map(|e| &e.value) {
        None => db.set(key.clone(), Value::Hash(Hash::new())),
        Some(Value::Hash(_)) => {}
        Some(_) => {
            c.out.err(WRONGTYPE);
            return None;
        }
    }
    match db.get_mut(&key).map(|e| &mut e.value) {
        Some(Value::Hash(h)) => Some(h),
        _ => None,
    }
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "hset" | "hmset" => {
            if c.args.len() % 2 == 1 {
                return {
                    c.arity_err();
                    true
                };
            }
            let args = c.args;
            let Some(h) = write(db, c) else { return true };
            let added = args[2..]
                .chunks(2)
                .filter(|fv| h.insert(fv[0].clone(), fv[1].to_vec()).is_none())
                .count();
            if c.name == "hset" {
                c.out.int(added as i64);
            } else {
                c.out.ok();
            }
        }
        "hsetnx" => {
            let args = c.args;
            let Some(h) = write(db, c) else { return true };
            let added = !h.contains_key(&args[2]);
            if added {
                h.insert(args[2].clone(), args[3].to_vec());
            }
            c.out.bool_int(added);
        }
        "hget" => {
            if let Ok(h) = read(db, c) {
                match h.and_then(|h| h.get(&c.args[2])) {
                    Some(v) => {
                        let v = v.clone();
                        c.out.bulk(&v)
                    }
                    None => c.out.null(),
                }
            }
        }
        "hmget" => {
            if let Ok(h) = read(db, c) {
                let vals: Vec<Option<Vec<u8>>> = c.args[2..]
                    .iter()
                    .map(|f| h.and_then(|h| h.get(f)).cloned())
                    .collect();
                c.out.array(vals.len());
                for v in vals {
                    match v {
                        Some(v) => c.out.bulk(&v),
                        None => c.out.null(),
                    }
                }
            }
        }
        "hgetall" | "hkeys" | "hvals" => {
            if let Ok(h) = read(db, c) {
                let pairs: Vec<(Bytes, Vec<u8>)> = h
                    .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                match c.name {
                    "hgetall" => {
                        c.out.map(pairs.len());
                        for (k, v) in pairs {
                            c.out.bulk(&k);
                            c.out.bulk(&v);
                        }
                    }
                    "hkeys" => {
                        c.out.array(pairs.len());
                        for (k, _) in pairs {
                            c.out.bulk(&k);
                        }
                    }
                    _ => {
                        c.out.array(pairs.len());
                        for (_, v) in pairs {
                            c.out.bulk(&v);
                        }
                    }
                }
            }
        }
        "hdel" => {
            let args = c.args;
            let key = args[1].clone();
            match db.get_mut(&key).map(|e| &mut e.value) {
                None => c.out.int(0),
                Some(Value::Hash(h)) => {
                    let n = args[2..].iter().filter(|f| h.remove(*f).is_some()).count();
                    c.out.int(n as i64);
                }
                Some(_) => c.out.err(WRONGTYPE),
            }
        }
        "hlen" => {
            if let Ok(h) = read(db, c) {
                let n = h.map_or(0, |h| h.len());
                c.out.int(n as i64);
            }
        }
        "hexists" => {
            if let Ok(h) = read(db, c) {
                let b = h.is_some_and(|h| h.contains_key(&c.args[2]));
                c.out.bool_int(b);
            }
        }
        "hstrlen" => {
            if let Ok(h) = read(db, c) {
                let n = h.and_then(|h| h.get(&c.args[2])).map_or(0, |v| v.len());
                c.out.int(n as i64);
            }
        }
        "hincrby" => {
            let Some(by) = arg_i64(c, 3) else { return true };
            let field = c.args[2].clone();
            let Some(h) = write(db, c) else { return true };
            let cur = match h.get(&field) {
                None => 0,
                Some(v) => match num::parse_i64(v) {
                    Some(n) => n,
                    None => {
                        c.out.err("ERR hash value is not an integer");
                        return true;
                    }
                },
            };
            match cur.checked_add(by) {
                Some(n) => {
                    h.insert(field, n.to_string().into_bytes());
                    c.out.int(n);
                }
                None => c.out.err("ERR increment or decrement would overflow"),
            }
        }
        "hincrbyfloat" => {
            let incr = c.args[3].clone();
            if num::incr_float(b"0", &incr) == Err(FloatError::NotFloat) {
                c.out.err("ERR value is not a valid float");
                return true;
            }
            let field = c.args[2].clone();
            let Some(h) = write(db, c) else { return true };
            let cur = h.get(&field).cloned().unwrap_or_else(|| b"0".to_vec());
            match num::incr_float(&cur, &incr) {
                Ok(s) => {
                    c.out.bulk(s.as_bytes());
                    h.insert(field, s.into_bytes());
                }
                Err(FloatError::NotFloat) => c.out.err("ERR hash value is not a float"),
                Err(FloatError::NanOrInf) => {
                    c.out.err("ERR increment would produce NaN or Infinity")
                }
            }
        }
        "hrandfield" => hrandfield(db, c),
        _ => return false,
    }
    true
}

/// HRANDFIELD key [count [WITHVALUES]]: a positive count gives distinct fields, a negative one
/// |count| picks that may repeat (Redis's `hrandfieldWithCountCommand`).
fn hrandfield(db: &mut Db, c: &mut Call) {
    let Some(pick) = super::random::parse(c, "withvalues") else {
        return;
    };
    let Ok(h) = read(db, c) else { return };
    let pairs: Vec<(&Bytes, &[u8])> = h
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.as_slice()))
        .collect();
    let picked = pick.choose(&pairs);
    pick.reply(c, picked, |c, v| c.out.bulk(v));
}

//! Set commands.
use std::collections::HashSet;

use bytes::Bytes;

use super::{Call, Db, Value, WRONGTYPE};

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    let args = c.args;
    // Unsupported commands pass through here too, some without any argument.
    let Some(key) = args.get(1).cloned() else {
        return false;
    };
    match c.name {
        "sadd" => {
            match db.get(&key).map(|e| &e.value) {
                None => db.set(key.clone(), Value::Set(HashSet::new())),
                Some(Value::Set(_)) => {}
                Some(_) => {
                    c.out.err(WRONGTYPE);
                    return true;
                }
            }
            if let Some(Value::Set(s)) = db.get_mut(&key).map(|e| &mut e.value) {
                let n = args[2..].iter().filter(|m| s.insert((*m).clone())).count();
                c.out.int(n as i64);
            }
        }
        "srem" => match db.get_mut(&key).map(|e| &mut e.value) {
            None => c.out.int(0),
            Some(Value::Set(s)) => {
                let n = args[2..].iter().filter(|m| s.remove(*m)).count();
                c.out.int(n as i64);
            }
            Some(_) => c.out.err(WRONGTYPE),
        },
        "sismember" | "smembers" | "scard" => match db.get(&key).map(|e| &e.value) {
            None => match c.name {
                "smembers" => c.out.set(0),
                _ => c.out.int(0),
            },
            Some(Value::Set(s)) => match c.name {
                "sismember" => c.out.bool_int(s.contains(&args[2])),
                "scard" => c.out.int(s.len() as i64),
                _ => {
                    let members: Vec<Bytes> = s.iter().cloned().collect();
                    c.out.set(members.len());
                    for m in members {
                        c.out.bulk(&m);
                    }
                }
            },
            Some(_) => c.out.err(WRONGTYPE),
        },
        _ => return false,
    }
    true
}

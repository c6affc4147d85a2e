//! Stream consumer groups, the part job queues use: XGROUP CREATE/DESTROY, XREADGROUP (without
//! waiting), XACK and the summary form of XPENDING. Not served: XCLAIM, XAUTOCLAIM, XPENDING's
//! extended form, XGROUP SETID/CREATECONSUMER/DELCONSUMER, XINFO.
use std::collections::BTreeMap;

use bytes::Bytes;

use super::num::parse_i64;
use super::stream_data::{Group, Id, Stream, fmt_id, next, parse_id, reply_entry};
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, eq_ci};

const NO_KEY: &str = "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE \
                      you may want to use the MKSTREAM option to create an empty stream automatically.";

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "xgroup|create" => create(db, c),
        "xgroup|destroy" => match stream_at(db, c, 2) {
            Err(()) => {}
            Ok(None) => c.out.err(NO_KEY),
            Ok(Some(s)) => {
                let gone = s.groups.remove(&c.args[3]).is_some();
                c.out.bool_int(gone);
            }
        },
        "xack" => {
            // Redis answers 0 for a missing key or group before it parses the IDs.
            let ids: Vec<Option<Id>> = c.args[3..].iter().map(|a| parse_id(a, 0)).collect();
            match stream_at(db, c, 1) {
                Err(()) => {}
                Ok(s) => match s.and_then(|s| s.groups.get_mut(&c.args[2])) {
                    None => c.out.int(0),
                    Some(_) if ids.iter().any(Option::is_none) => c.out.err(INVALID_ID),
                    Some(g) => {
                        let n = ids
                            .iter()
                            .flatten()
                            .filter(|id| g.pending.remove(id).is_some())
                            .count();
                        c.out.int(n as i64);
                    }
                },
            }
        }
        "xpending" => xpending(db, c),
        "xreadgroup" => xreadgroup(db, c),
        _ => return false,
    }
    true
}

/// An entry as XREADGROUP delivers it: its fields, or None if it was deleted since.
type Delivered = (Id, Option<Vec<Bytes>>);

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

fn stream_at<'a>(db: &'a mut Db, c: &mut Call, i: usize) -> Result<Option<&'a mut Stream>, ()> {
    match db.get_mut(&c.args[i]).map(|e| &mut e.value) {
        None => Ok(None),
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// XGROUP CREATE key group id|$ [MKSTREAM] [ENTRIESREAD n].
fn create(db: &mut Db, c: &mut Call) {
    let mut mkstream = false;
    let mut j = 5;
    while j < c.args.len() {
        if eq_ci(&c.args[j], "mkstream") {
            mkstream = true;
        } else if eq_ci(&c.args[j], "entriesread") && j + 1 < c.args.len() {
            if parse_i64(&c.args[j + 1]).is_none() {
                return c.out.err(NOT_INT);
            }
            j += 1;
        } else {
            let msg = format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
                String::from_utf8_lossy(&c.args[1])
            );
            return c.out.err(&msg);
        }
        j += 1;
    }
    let key = c.args[2].clone();
    let exists = match stream_at(db, c, 2) {
        Err(()) => return,
        Ok(s) => s.is_some(),
    };
    if !exists && !mkstream {
        return c.out.err(NO_KEY);
    }
    let id = if c.args[4][..] == *b"$" {
        None
    } else {
        match parse_id(&c.args[4], 0) {
            Some(id) => Some(id),
            None => return c.out.err(INVALID_ID),
        }
    };
    if !exists {
        db.set(key, Value::Stream(Stream::default()));
    }
    let Ok(Some(s)) = stream_at(db, c, 2) else {
        return;
    };
    if s.groups.contains_key(&c.args[3]) {
        return c.out.err("BUSYGROUP Consumer Group name already exists");
    }
    let last_delivered = id.unwrap_or(s.last);
    s.groups.insert(
        c.args[3].clone(),
        Group {
            last_delivered,
            ..Group::default()
        },
    );
    c.out.ok();
}

/// XPENDING key group: [count, smallest ID, largest ID, [[consumer, count], ...]].
fn xpending(db: &mut Db, c: &mut Call) {
    if c.args.len() > 3 {
        return c
            .out
            .err("ERR XPENDING's extended form is not supported by respite's local engine");
    }
    let (key, group) = (c.args[1].clone(), c.args[2].clone());
    let g = match stream_at(db, c, 1) {
        Err(()) => return,
        Ok(s) => s.and_then(|s| s.groups.get(&group)),
    };
    let Some(g) = g else {
        let msg = format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(&key),
            String::from_utf8_lossy(&group)
        );
        return c.out.err(&msg);
    };
    let g = g.clone();
    c.out.array(4);
    c.out.int(g.pending.len() as i64);
    match (g.pending.keys().next(), g.pending.keys().next_back()) {
        (Some(lo), Some(hi)) => {
            c.out.bulk(fmt_id(*lo).as_bytes());
            c.out.bulk(fmt_id(*hi).as_bytes());
            let mut per: BTreeMap<&Bytes, usize> = BTreeMap::new();
            for who in g.pending.values() {
                *per.entry(who).or_default() += 1;
            }
            c.out.array(per.len());
            for (who, n) in per {
                c.out.array(2);
                c.out.bulk(who);
                c.out.bulk(n.to_string().as_bytes());
            }
        }
        _ => {
            c.out.null();
            c.out.null();
            c.out.null_array();
        }
    }
}

/// XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...
fn xreadgroup(db: &mut Db, c: &mut Call) {
    if !eq_ci(&c.args[1], "group") {
        return c.out.err(SYNTAX);
    }
    let (group, consumer) = (c.args[2].clone(), c.args[3].clone());
    let (mut count, mut block, mut noack, mut j) = (usize::MAX, false, false, 4);
    while j < c.args.len() && !eq_ci(&c.args[j], "streams") {
        let a = &c.args[j];
        if eq_ci(a, "count") && j + 1 < c.args.len() {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n > 0 => count = n as usize,
                Some(_) => {}
                None => return c.out.err(NOT_INT),
            }
            j += 1;
        } else if eq_ci(a, "block") && j + 1 < c.args.len() {
            block = true;
            j += 1;
        } else if eq_ci(a, "noack") {
            noack = true;
        } else {
            return c.out.err(SYNTAX);
        }
        j += 1;
    }
    let rest = c.args.len().saturating_sub(j + 1);
    if j >= c.args.len() || rest == 0 || rest % 2 == 1 {
        return c.out.err(
            "ERR Unbalanced 'xreadgroup' list of streams: for each stream key an ID or '>' must be specified.",
        );
    }
    let n = rest / 2;
    // Every key and group is checked before anything is delivered, as Redis does.
    let mut starts: Vec<Option<Id>> = Vec::with_capacity(n);
    for i in 0..n {
        let (k, idarg) = (j + 1 + i, j + 1 + n + i);
        let has = match stream_at(db, c, k) {
            Err(()) => return,
            Ok(s) => s.is_some_and(|s| s.groups.contains_key(&group)),
        };
        if !has {
            let msg = format!(
                "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                String::from_utf8_lossy(&c.args[k]),
                String::from_utf8_lossy(&group)
            );
            return c.out.err(&msg);
        }
        let start = if c.args[idarg][..] == *b">" {
            None
        } else {
            match parse_id(&c.args[idarg], 0) {
                Some(id) => Some(id),
                None => return c.out.err(INVALID_ID),
            }
        };
        starts.push(start);
    }
    let mut found: Vec<(Bytes, Vec<Delivered>)> = Vec::new();
    for (i, start) in starts.into_iter().enumerate() {
        let key = c.args[j + 1 + i].clone();
        let Ok(Some(s)) = stream_at(db, c, j + 1 + i) else {
            continue;
        };
        let entries = &s.entries;
        let g = s.groups.get_mut(&group).expect("checked above");
        g.consumers.insert(consumer.clone(), ());
        match start {
            None => {
                let Some(from) = next(g.last_delivered) else {
                    continue;
                };
                let new: Vec<Delivered> = entries
                    .range(from..)
                    .take(count)
                    .map(|(id, f)| (*id, Some(f.clone())))
                    .collect();
                if let Some((last, _)) = new.last() {
                    g.last_delivered = *last;
                }
                if !noack {
                    for (id, _) in &new {
                        g.pending.insert(*id, consumer.clone());
                    }
                }
                if !new.is_empty() {
                    found.push((key, new));
                }
            }
            Some(id) => {
                // This consumer's history: its pending entries after `id`; deleted ones as nil.
                let from = next(id).unwrap_or(id);
                let mine: Vec<Delivered> = g
                    .pending
                    .range(from..)
                    .filter(|(_, who)| **who == consumer)
                    .take(count)
                    .map(|(id, _)| (*id, entries.get(id).cloned()))
                    .collect();
                found.push((key, mine));
            }
        }
    }
    if found.is_empty() {
        if block {
            return c
                .out
                .err("ERR XREADGROUP BLOCK would wait, and respite's local engine cannot block");
        }
        return c.out.null_array();
    }
    let resp3 = c.out.proto == crate::protocol::Protocol::Resp3;
    if resp3 {
        c.out.map(found.len());
    } else {
        c.out.array(found.len());
    }
    for (key, entries) in found {
        if !resp3 {
            c.out.array(2);
        }
        c.out.bulk(&key);
        c.out.array(entries.len());
        for (id, f) in entries {
            match f {
                Some(f) => reply_entry(c, id, &f),
                None => {
                    c.out.array(2);
                    c.out.bulk(fmt_id(id).as_bytes());
                    c.out.null_array();
                }
            }
        }
    }
}

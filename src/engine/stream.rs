//! Streams without consumer groups: XADD, XRANGE, XREVRANGE, XLEN, XDEL, XTRIM, and XREAD
//! when it need not block.
//!
//! Deviations: `~` (approximate) trimming removes only whole blocks of 100 entries (Redis
//! removes whole listpack nodes, whose sizes also depend on bytes); XREAD with BLOCK is answered
//! at once when there is data and refused when it would have to wait, since the engine cannot
//! park a client; XINFO and XSETID are not served. Consumer groups are in `stream_group`.

use bytes::Bytes;

use super::num::parse_i64;
use super::stream_data::{Id, Stream, fmt_id, next, parse_id, reply_entry};
use super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, eq_ci};

/// An entry with its field-value list, as replies carry it.
type Entry = (Id, Vec<Bytes>);

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";
/// Entries Redis keeps per listpack node (`stream-node-max-entries`): `~` trims in such blocks.
const NODE: usize = 100;

/// A range bound: `-`, `+`, an ID, or `(` an ID (exclusive). `start` picks the missing seq.
fn parse_bound(b: &[u8], start: bool) -> Option<Id> {
    match b {
        b"-" => Some((0, 0)),
        b"+" => Some((u64::MAX, u64::MAX)),
        _ => match b.strip_prefix(b"(") {
            Some(rest) => {
                let id = parse_id(rest, if start { 0 } else { u64::MAX })?;
                if start { next(id) } else { prev(id) }
            }
            None => parse_id(b, if start { 0 } else { u64::MAX }),
        },
    }
}

fn prev(id: Id) -> Option<Id> {
    match id.1.checked_sub(1) {
        Some(s) => Some((id.0, s)),
        None => Some((id.0.checked_sub(1)?, u64::MAX)),
    }
}

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "xadd" => xadd(db, c),
        "xlen" => {
            if let Ok(s) = read(db, c, 1) {
                c.out.int(s.map_or(0, |s| s.entries.len()) as i64);
            }
        }
        "xrange" => xrange(db, c, false),
        "xrevrange" => xrange(db, c, true),
        "xdel" => {
            // Redis looks the key up before it parses the IDs.
            let ids: Vec<Option<Id>> = c.args[2..].iter().map(|a| parse_id(a, 0)).collect();
            match write(db, c) {
                Err(()) => {}
                Ok(None) => c.out.int(0),
                Ok(Some(_)) if ids.iter().any(Option::is_none) => c.out.err(INVALID_ID),
                Ok(Some(s)) => {
                    let n = ids
                        .iter()
                        .flatten()
                        .filter(|id| s.entries.remove(id).is_some())
                        .count();
                    c.out.int(n as i64);
                }
            }
        }
        "xtrim" => {
            let Some((trim, _)) = parse_trim(c, 2, true) else {
                return true;
            };
            match write(db, c) {
                Err(()) => {}
                Ok(None) => c.out.int(0),
                Ok(Some(s)) => {
                    let n = trim.apply(s);
                    c.out.int(n as i64);
                }
            }
        }
        "xread" => xread(db, c),
        _ => return false,
    }
    true
}

fn read<'a>(db: &'a mut Db, c: &mut Call, i: usize) -> Result<Option<&'a Stream>, ()> {
    match db.get(&c.args[i]).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

fn write<'a>(db: &'a mut Db, c: &mut Call) -> Result<Option<&'a mut Stream>, ()> {
    match db.get_mut(&c.args[1]).map(|e| &mut e.value) {
        None => Ok(None),
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// MAXLEN or MINID trimming, exact (`=` or nothing) or approximate (`~`).
struct Trim {
    maxlen: Option<usize>,
    minid: Option<Id>,
    approx: bool,
}

impl Trim {
    /// Remove what the rule says; the number removed.
    fn apply(&self, s: &mut Stream) -> usize {
        let mut excess = match (self.maxlen, self.minid) {
            (Some(max), _) => s.entries.len().saturating_sub(max),
            (_, Some(min)) => s.entries.range(..min).count(),
            _ => 0,
        };
        if self.approx {
            excess -= excess % NODE;
        }
        for _ in 0..excess {
            s.entries.pop_first();
        }
        excess
    }
}

/// `MAXLEN|MINID [=|~] threshold [LIMIT count]` at `j` (XTRIM: the whole rest), and where it
/// ended; None after replying an error.
fn parse_trim(c: &mut Call, j: usize, required: bool) -> Option<(Trim, usize)> {
    let mut t = Trim {
        maxlen: None,
        minid: None,
        approx: false,
    };
    let mut i = j;
    let maxlen = eq_ci(&c.args[i], "maxlen");
    if !maxlen && !eq_ci(&c.args[i], "minid") {
        if required {
            c.out.err(SYNTAX);
        }
        return None;
    }
    i += 1;
    if let Some(m) = c.args.get(i)
        && (m[..] == *b"=" || m[..] == *b"~")
    {
        t.approx = m[..] == *b"~";
        i += 1;
    }
    let Some(v) = c.args.get(i) else {
        c.out.err(SYNTAX);
        return None;
    };
    if maxlen {
        match parse_i64(v) {
            Some(n) if n >= 0 => t.maxlen = Some(n as usize),
            Some(_) => {
                c.out.err("ERR The MAXLEN argument must be >= 0.");
                return None;
            }
            None => {
                c.out.err(NOT_INT);
                return None;
            }
        }
    } else {
        match parse_id(v, 0) {
            Some(id) => t.minid = Some(id),
            None => {
                c.out.err(INVALID_ID);
                return None;
            }
        }
    }
    i += 1;
    if c.args.get(i).is_some_and(|a| eq_ci(a, "limit")) {
        if !t.approx {
            c.out
                .err("ERR syntax error, LIMIT cannot be used without the special ~ option");
            return None;
        }
        if parse_i64(c.args.get(i + 1).map_or(&b""[..], |a| a)).is_none_or(|n| n < 0) {
            c.out.err(NOT_INT);
            return None;
        }
        i += 2;
    }
    if required && i != c.args.len() {
        c.out.err(SYNTAX);
        return None;
    }
    Some((t, i))
}

fn xadd(db: &mut Db, c: &mut Call) {
    let mut j = 2;
    let (mut nomk, mut trim) = (false, None);
    while let Some(a) = c.args.get(j) {
        if eq_ci(a, "nomkstream") {
            nomk = true;
            j += 1;
        } else if eq_ci(a, "maxlen") || eq_ci(a, "minid") {
            let Some((t, end)) = parse_trim(c, j, false) else {
                return;
            };
            trim = Some(t);
            j = end;
        } else {
            break;
        }
    }
    let Some(id_arg) = c.args.get(j).cloned() else {
        return c.arity_err();
    };
    // `*`, `ms-*` or an explicit ID; checked before the key, as Redis does.
    let explicit = match &id_arg[..] {
        b"*" => None,
        a => match a.strip_suffix(b"-*") {
            Some(ms) => match parse_id(ms, 0) {
                Some((ms, _)) => Some((ms, None)),
                None => return c.out.err(INVALID_ID),
            },
            None => match parse_id(a, 0) {
                Some(id) => Some((id.0, Some(id.1))),
                None => return c.out.err(INVALID_ID),
            },
        },
    };
    // Field pairs are counted after the ID is parsed, as Redis does.
    let fields = c.args.len() - j - 1;
    if fields == 0 || fields % 2 == 1 {
        return c.arity_err();
    }
    if explicit == Some((0, Some(0))) {
        return c
            .out
            .err("ERR The ID specified in XADD must be greater than 0-0");
    }
    let now = db.now;
    let key = c.args[1].clone();
    match write(db, c) {
        Err(()) => return,
        Ok(None) if nomk => return c.out.null(),
        Ok(None) => db.set(key.clone(), Value::Stream(Stream::default())),
        Ok(Some(_)) => {}
    }
    let Ok(Some(s)) = write(db, c) else { return };
    let last = s.last;
    let id =
        match explicit {
            None if now > last.0 => (now, 0),
            None => match next(last) {
                Some(id) => id,
                None => return c.out.err(
                    "ERR The stream has exhausted the last possible ID, unable to add more items",
                ),
            },
            Some((ms, None)) if ms == last.0 => match last.1.checked_add(1) {
                Some(q) => (ms, q),
                None => return c.out.err(SMALLER),
            },
            Some((ms, None)) if ms > last.0 => (ms, 0),
            Some((ms, Some(seq))) if (ms, seq) > last => (ms, seq),
            Some(_) => return c.out.err(SMALLER),
        };
    s.entries.insert(id, c.args[j + 1..].to_vec());
    s.last = id;
    if let Some(t) = trim {
        t.apply(s);
    }
    c.out.bulk(fmt_id(id).as_bytes());
}

const SMALLER: &str =
    "ERR The ID specified in XADD is equal or smaller than the target stream top item";

fn xrange(db: &mut Db, c: &mut Call, rev: bool) {
    let (lo, hi) = if rev { (3, 2) } else { (2, 3) };
    let (Some(start), Some(end)) = (
        parse_bound(&c.args[lo], true),
        parse_bound(&c.args[hi], false),
    ) else {
        return c.out.err(INVALID_ID);
    };
    let mut count = None;
    if c.args.len() > 4 {
        if c.args.len() != 6 || !eq_ci(&c.args[4], "count") {
            return c.out.err(SYNTAX);
        }
        match parse_i64(&c.args[5]) {
            Some(n) => count = Some(n.max(0) as usize),
            None => return c.out.err(NOT_INT),
        }
    }
    let Ok(s) = read(db, c, 1) else { return };
    let Some(s) = s else { return c.out.array(0) };
    if count == Some(0) {
        return c.out.null_array();
    }
    if start > end {
        return c.out.array(0);
    }
    let s = Some(s);
    let picked: Vec<Entry> = match s {
        None => Vec::new(),
        Some(s) => {
            let it = s.entries.range(start..=end).map(|(k, v)| (*k, v.clone()));
            let n = count.unwrap_or(usize::MAX);
            if rev {
                it.rev().take(n).collect()
            } else {
                it.take(n).collect()
            }
        }
    };
    c.out.array(picked.len());
    for (id, f) in picked {
        reply_entry(c, id, &f);
    }
}

/// XREAD [COUNT n] [BLOCK ms] STREAMS key... id...: entries after each ID.
fn xread(db: &mut Db, c: &mut Call) {
    let (mut count, mut block, mut j) = (usize::MAX, false, 1);
    while j < c.args.len() {
        let a = &c.args[j];
        if eq_ci(a, "streams") {
            break;
        } else if eq_ci(a, "count") && j + 1 < c.args.len() {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n > 0 => count = n as usize,
                Some(_) => {}
                None => return c.out.err(NOT_INT),
            }
            j += 2;
        } else if eq_ci(a, "block") && j + 1 < c.args.len() {
            match parse_i64(&c.args[j + 1]) {
                Some(n) if n >= 0 => block = true,
                Some(_) => return c.out.err("ERR timeout is negative"),
                None => return c.out.err("ERR timeout is not an integer or out of range"),
            }
            j += 2;
        } else {
            return c.out.err(SYNTAX);
        }
    }
    let rest = c.args.len().saturating_sub(j + 1);
    if j >= c.args.len() || rest == 0 || rest % 2 == 1 {
        let msg = "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.";
        return c.out.err(if j >= c.args.len() { SYNTAX } else { msg });
    }
    let n = rest / 2;
    let mut after = Vec::with_capacity(n);
    for i in 0..n {
        let (k, idarg) = (j + 1 + i, j + 1 + n + i);
        let last = match read(db, c, k) {
            Err(()) => return,
            Ok(s) => s.map_or((0, 0), |s| s.last),
        };
        let id = if c.args[idarg][..] == *b"$" {
            last
        } else {
            match parse_id(&c.args[idarg], 0) {
                Some(id) => id,
                None => return c.out.err(INVALID_ID),
            }
        };
        after.push(id);
    }
    let mut found: Vec<(Bytes, Vec<Entry>)> = Vec::new();
    for (i, id) in after.into_iter().enumerate() {
        let key = c.args[j + 1 + i].clone();
        let Ok(Some(s)) = read(db, c, j + 1 + i) else {
            continue;
        };
        let Some(from) = next(id) else { continue };
        let entries: Vec<Entry> = s
            .entries
            .range(from..)
            .take(count)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        if !entries.is_empty() {
            found.push((key, entries));
        }
    }
    if found.is_empty() {
        if block {
            return c
                .out
                .err("ERR XREAD BLOCK would wait, and respite's local engine cannot block");
        }
        return c.out.null_array();
    }
    if c.out.proto == crate::protocol::Protocol::Resp3 {
        c.out.map(found.len());
    } else {
        c.out.array(found.len());
    }
    for (key, entries) in found {
        if c.out.proto == crate::protocol::Protocol::Resp2 {
            c.out.array(2);
        }
        c.out.bulk(&key);
        c.out.array(entries.len());
        for (id, f) in entries {
            reply_entry(c, id, &f);
        }
    }
}

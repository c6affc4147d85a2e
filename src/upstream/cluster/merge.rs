//! Replies of a cluster's nodes cut apart and put back together: a node's batch of replies
//! into one per command, the parts of a split command into the one reply the client expects
//! (MGET's values in its key order, counts added), and the replies of every primary into one
//! (DBSIZE summed, KEYS concatenated, INFO's keyspace summed). Not the hot path: only split and
//! fanned-out commands are parsed.
use super::plan::Fan;
use crate::protocol::{Protocol, ReplyScanner, encode};
use bytes::{Bytes, BytesMut};

/// Cut `bytes` into its complete replies; a tail that is not one is dropped (it cannot
/// happen: a connection hands over whole replies only).
pub fn split(bytes: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut scanner = ReplyScanner::new();
        match scanner.scan(&bytes[at..]) {
            Ok(Some(found)) => {
                out.push(bytes.slice(at..at + found.len));
                at += found.len;
            }
            _ => break,
        }
    }
    out
}

/// Whether a reply is an error (`-` or RESP3 `!`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// A null of any shape, or the `false` a Lua script turns a nil into.
fn is_null(reply: &[u8]) -> bool {
    matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n" | b"#f\r\n")
}

/// An aggregate's type byte and its elements, each one whole reply.
pub fn elements(reply: &Bytes) -> Option<(u8, Vec<Bytes>)> {
    let kind = *reply.first()?;
    if !matches!(kind, b'*' | b'~' | b'%') {
        return None;
    }
    let eol = memchr::memchr(b'\n', reply)?;
    let n: i64 = std::str::from_utf8(&reply[1..eol - 1]).ok()?.parse().ok()?;
    let body = reply.slice(eol + 1..);
    let items = split(&body);
    let want = if kind == b'%' { 2 * n } else { n };
    (items.len() as i64 == want.max(0)).then_some((kind, items))
}

/// An integer reply's value.
pub fn integer(reply: &[u8]) -> Option<i64> {
    let text = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The error reply for a reply that does not have the shape its command promises.
pub fn unexpected(what: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(
        &mut out,
        &format!("ERR respite could not merge the cluster's replies to {what}"),
    );
    out.freeze()
}

/// MGET's parts back in the client's key order: `parts` holds, per part, the client's key
/// indices it asked for and its reply. The first error among the parts is the reply.
pub fn mget(parts: &[(Vec<usize>, Bytes)], keys: usize, proto: Protocol) -> Bytes {
    let mut values: Vec<Option<Bytes>> = vec![None; keys];
    for (indices, reply) in parts {
        if is_error(reply) {
            return reply.clone();
        }
        let Some((_, items)) = elements(reply) else {
            return unexpected("MGET");
        };
        if items.len() != indices.len() {
            return unexpected("MGET");
        }
        for (&i, item) in indices.iter().zip(items) {
            values[i] = Some(item);
        }
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, keys);
    for v in values {
        match v {
            Some(v) if !is_null(&v) => out.extend_from_slice(&v),
            _ => encode::null(&mut out, proto),
        }
    }
    out.freeze()
}

/// Counts added (DEL, UNLINK, EXISTS, TOUCH, DBSIZE), a script part's array of per-key
/// counts included; the first error is the reply.
pub fn sum(replies: &[Bytes]) -> Bytes {
    let mut total = 0i64;
    for r in replies {
        if is_error(r) {
            return r.clone();
        }
        match integer(r) {
            Some(n) => total += n,
            None => match elements(r) {
                Some((_, items)) => {
                    for item in items {
                        match integer(&item) {
                            Some(n) => total += n,
                            None => return unexpected("a counting command"),
                        }
                    }
                }
                None => return unexpected("a counting command"),
            },
        }
    }
    let mut out = BytesMut::new();
    encode::integer(&mut out, total);
    out.freeze()
}

/// The first reply once none is an error; else the first error.
pub fn all_ok(replies: &[Bytes]) -> Bytes {
    replies
        .iter()
        .find(|r| is_error(r))
        .or(replies.first())
        .cloned()
        .unwrap_or_else(|| unexpected("a command sent to no node"))
}

/// The replies of every primary as one.
pub fn fan(fan: Fan, replies: &[Bytes], proto: Protocol) -> Bytes {
    if replies.is_empty() {
        return unexpected("a command sent to no node");
    }
    match fan {
        Fan::Sum => sum(replies),
        Fan::Min | Fan::Max => {
            if let Some(e) = replies.iter().find(|r| is_error(r)) {
                return e.clone();
            }
            let ints: Option<Vec<i64>> = replies.iter().map(|r| integer(r)).collect();
            let Some(ints) = ints else {
                return all_ok(replies);
            };
            let v = if fan == Fan::Min {
                ints.iter().min()
            } else {
                ints.iter().max()
            };
            let mut out = BytesMut::new();
            encode::integer(&mut out, *v.unwrap_or(&0));
            out.freeze()
        }
        Fan::OneOk => replies
            .iter()
            .find(|r| !is_error(r))
            .unwrap_or(&replies[0])
            .clone(),
        Fan::And | Fan::Or => logical(fan == Fan::And, replies),
        Fan::AllOk => all_ok(replies),
        Fan::Concat => {
            if let Some(e) = replies.iter().find(|r| is_error(r)) {
                return e.clone();
            }
            let mut kind = b'*';
            let mut all = Vec::new();
            for r in replies {
                let Some((k, items)) = elements(r) else {
                    return all_ok(replies);
                };
                kind = k;
                all.extend(items);
            }
            let mut out = BytesMut::new();
            let n = if kind == b'%' {
                all.len() / 2
            } else {
                all.len()
            };
            out.extend_from_slice(format!("{}{n}\r\n", kind as char).as_bytes());
            for item in all {
                out.extend_from_slice(&item);
            }
            out.freeze()
        }
        Fan::RandomKey => {
            if let Some(e) = replies.iter().find(|r| is_error(r)) {
                return e.clone();
            }
            // Start at a different node each time, so every node's keys come up.
            let start = fastrand_index(replies.len());
            (0..replies.len())
                .map(|i| &replies[(start + i) % replies.len()])
                .find(|r| !is_null(r))
                .unwrap_or(&replies[0])
                .clone()
        }
        Fan::Info => info(replies, proto),
    }
}

fn fastrand_index(n: usize) -> usize {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    nanos % n.max(1)
}

/// AND or OR of integer replies, element by element for arrays of them (SCRIPT EXISTS).
fn logical(and: bool, replies: &[Bytes]) -> Bytes {
    if let Some(e) = replies.iter().find(|r| is_error(r)) {
        return e.clone();
    }
    let combine = |a: i64, b: i64| {
        if and {
            (a != 0 && b != 0) as i64
        } else {
            (a != 0 || b != 0) as i64
        }
    };
    if let Some(first) = integer(&replies[0]) {
        let mut v = first;
        for r in &replies[1..] {
            v = combine(v, integer(r).unwrap_or(0));
        }
        let mut out = BytesMut::new();
        encode::integer(&mut out, v);
        return out.freeze();
    }
    let Some((_, first)) = elements(&replies[0]) else {
        return all_ok(replies);
    };
    let mut acc: Vec<i64> = first.iter().map(|i| integer(i).unwrap_or(0)).collect();
    for r in &replies[1..] {
        let Some((_, items)) = elements(r) else {
            return all_ok(replies);
        };
        for (a, item) in acc.iter_mut().zip(items) {
            *a = combine(*a, integer(&item).unwrap_or(0));
        }
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, acc.len());
    for a in acc {
        encode::integer(&mut out, a);
    }
    out.freeze()
}

/// INFO: the first node's text, its `dbN:keys=…,expires=…,avg_ttl=…` lines summed over every
/// node (a database only another node holds keys in is added).
fn info(replies: &[Bytes], proto: Protocol) -> Bytes {
    if let Some(e) = replies.iter().find(|r| is_error(r)) {
        return e.clone();
    }
    let texts: Vec<String> = replies.iter().filter_map(info_text).collect();
    if texts.len() != replies.len() {
        return all_ok(replies);
    }
    // db name → (keys, expires, avg_ttl of the first node that has it)
    let mut dbs: Vec<(String, i64, i64, i64)> = Vec::new();
    for text in &texts {
        for line in text.lines() {
            let Some((db, rest)) = line.split_once(':') else {
                continue;
            };
            if !db.starts_with("db") || db[2..].parse::<u32>().is_err() {
                continue;
            }
            let field = |name: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let (keys, expires, ttl) = (field("keys"), field("expires"), field("avg_ttl"));
            match dbs.iter_mut().find(|d| d.0 == db) {
                Some(d) => {
                    d.1 += keys;
                    d.2 += expires;
                }
                None => dbs.push((db.to_string(), keys, expires, ttl)),
            }
        }
    }
    let mut merged = String::new();
    let mut in_keyspace = false;
    let mut wrote = false;
    for line in texts[0].split("\r\n") {
        if line.starts_with('#') {
            in_keyspace = line.trim() == "# Keyspace";
        }
        let is_db = line
            .split_once(':')
            .is_some_and(|(db, _)| db.starts_with("db") && db[2..].parse::<u32>().is_ok());
        if is_db {
            continue;
        }
        merged.push_str(line);
        merged.push_str("\r\n");
        if in_keyspace && !wrote && line.starts_with('#') {
            for (db, keys, expires, ttl) in &dbs {
                merged.push_str(&format!(
                    "{db}:keys={keys},expires={expires},avg_ttl={ttl}\r\n"
                ));
            }
            wrote = true;
        }
    }
    // The text ended with CRLF: the split left one empty piece, written back as an extra CRLF.
    if merged.ends_with("\r\n\r\n") && !texts[0].ends_with("\r\n\r\n") {
        merged.truncate(merged.len() - 2);
    }
    let mut out = BytesMut::new();
    if replies[0].first() == Some(&b'=') {
        encode::verbatim(&mut out, proto, "txt", merged.as_bytes());
    } else {
        encode::bulk(&mut out, merged.as_bytes());
    }
    out.freeze()
}

/// The text of a bulk or verbatim string reply.
fn info_text(reply: &Bytes) -> Option<String> {
    let eol = memchr::memchr(b'\n', reply)?;
    let body = reply.get(eol + 1..reply.len().checked_sub(2)?)?;
    let body = match reply.first()? {
        b'$' => body,
        b'=' => body.get(4..)?,
        _ => return None,
    };
    Some(String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn mget_parts_merge_in_key_order_with_nulls_in_the_clients_protocol() {
        let parts = vec![
            (vec![0, 2], b("*2\r\n$1\r\na\r\n$-1\r\n")),
            (vec![1], b("*1\r\n#f\r\n")),
        ];
        assert_eq!(
            &mget(&parts, 3, Protocol::Resp2)[..],
            b"*3\r\n$1\r\na\r\n$-1\r\n$-1\r\n"
        );
        assert_eq!(
            &mget(&parts, 3, Protocol::Resp3)[..],
            b"*3\r\n$1\r\na\r\n_\r\n_\r\n"
        );
    }

    #[test]
    fn a_failed_part_fails_the_whole_command() {
        let parts = vec![
            (vec![0], b("*1\r\n$1\r\na\r\n")),
            (vec![1], b("-ERR upstream down\r\n")),
        ];
        assert_eq!(
            &mget(&parts, 2, Protocol::Resp2)[..],
            b"-ERR upstream down\r\n"
        );
        assert_eq!(&sum(&[b(":1\r\n"), b("-ERR x\r\n")])[..], b"-ERR x\r\n");
    }

    #[test]
    fn counts_add_and_arrays_concatenate() {
        assert_eq!(&sum(&[b(":1\r\n"), b(":2\r\n")])[..], b":3\r\n");
        assert_eq!(&sum(&[b(":1\r\n"), b("*2\r\n:1\r\n:0\r\n")])[..], b":2\r\n");
        let keys = fan(
            Fan::Concat,
            &[b("*1\r\n$1\r\na\r\n"), b("*0\r\n"), b("*1\r\n$1\r\nb\r\n")],
            Protocol::Resp2,
        );
        assert_eq!(&keys[..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert_eq!(
            &fan(
                Fan::And,
                &[b("*2\r\n:1\r\n:0\r\n"), b("*2\r\n:1\r\n:1\r\n")],
                Protocol::Resp2
            )[..],
            b"*2\r\n:1\r\n:0\r\n"
        );
    }

    #[test]
    fn info_keyspace_is_summed() {
        let one =
            "# Server\r\nredis_version:7.0\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=5\r\n";
        let two =
            "# Server\r\nredis_version:7.0\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n";
        let enc = |s: &str| b(&format!("${}\r\n{s}\r\n", s.len()));
        let merged = fan(Fan::Info, &[enc(one), enc(two)], Protocol::Resp2);
        let text = info_text(&merged).unwrap();
        assert!(
            text.contains("db0:keys=5,expires=1,avg_ttl=5\r\n"),
            "{text}"
        );
        assert!(
            text.starts_with("# Server\r\nredis_version:7.0\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("db0").count(), 1);
    }

    #[test]
    fn replies_split_whole() {
        let r = split(&b("+OK\r\n*2\r\n$1\r\na\r\n:1\r\n-ERR x\r\n"));
        assert_eq!(r.len(), 3);
        assert_eq!(&r[1][..], b"*2\r\n$1\r\na\r\n:1\r\n");
    }
}

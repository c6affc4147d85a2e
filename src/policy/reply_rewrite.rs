//! Rewriting replies that name keys or channels, so a prefixed tenant sees its own names.
//!
//! Only the replies a [`ReplyRewrite`] asks for are parsed, with the protocol's reply reader
//! ([`crate::protocol::value`]), which keeps every element's bytes; this module changes names in
//! the tree and re-encodes it, and everything else passes through untouched. It never reads RESP
//! itself. Error replies of a prefixed tenant's keyed commands are rewritten too, because some
//! name the key (`-NOGROUP No such key 'a:s' …`).
use bytes::{Bytes, BytesMut};

use crate::protocol::Protocol;
pub(super) use crate::protocol::value::Value;
use crate::protocol::value::{self, Blob, Malformed, encode};

/// How to rewrite the reply of one forwarded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyRewrite {
    /// Forward as is.
    #[default]
    None,
    /// Only error texts, where `'<prefix>key'` becomes `'key'`.
    Errors,
    /// KEYS: an array of key names.
    Keys,
    /// SCAN: `[cursor, [keys…]]`.
    Scan,
    /// RANDOMKEY (from a local op): one key or null.
    Key,
    /// BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, LMPOP, BLMPOP, ZMPOP, BZMPOP: an array whose first
    /// element is the key, or null.
    FirstKey,
    /// XREAD, XREADGROUP: `[[stream, entries]…]` in RESP2, `{stream: entries}` in RESP3, or null.
    Streams,
    /// PUBSUB CHANNELS / SHARDCHANNELS: an array of channel names.
    Channels,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[channel, count, …]`.
    NumSub,
    /// FUNCTION LOAD, LIST and DELETE: library and function names, and code, out of the
    /// tenant's function namespace ([`super::functions`]).
    Functions,
    /// FUNCTION STATS: the running function only if it is the tenant's.
    FunctionStats,
    /// (S|P)SUBSCRIBE / UNSUBSCRIBE confirmations and pushed messages (`message`, `pmessage`,
    /// `smessage`): every channel or pattern name in them. Use [`rewrite_push`] for pushes.
    PubSub,
}

/// The upstream sent something that is not one well-formed RESP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream protocol error: malformed reply to a rewritten command")]
pub struct ReplyError;

impl From<Malformed> for ReplyError {
    fn from(_: Malformed) -> Self {
        ReplyError
    }
}

/// Parse exactly one reply filling `buf` (see [`crate::protocol::value`]).
pub(super) fn parse(buf: &[u8]) -> Result<Value<'_>, ReplyError> {
    Ok(value::parse(buf)?)
}

/// Strip `prefix` from a bulk/simple string; false if it was not there.
fn strip(v: &mut Value, prefix: &[u8]) -> bool {
    match v {
        Value::Blob(_, b) if b.bytes().starts_with(prefix) => {
            let rest = Bytes::copy_from_slice(&b.bytes()[prefix.len()..]);
            *b = Blob::Owned(rest);
            true
        }
        Value::Line(b'+', s) if s.starts_with(prefix) => {
            *s = &s[prefix.len()..];
            true
        }
        _ => false,
    }
}

/// Rewrite one complete reply (`reply` is exactly one RESP value, as the scanner cut it) for a
/// tenant with `prefix`. Replies that need no change are returned as the same `Bytes`.
/// `proto` is the protocol the reply is in; RESP3 maps and RESP2 arrays are both handled, so it
/// only documents intent today.
pub fn rewrite_reply(
    rewrite: ReplyRewrite,
    prefix: &[u8],
    reply: &Bytes,
    proto: Protocol,
) -> Result<Bytes, ReplyError> {
    let _ = proto;
    if rewrite == ReplyRewrite::None || prefix.is_empty() || reply.is_empty() {
        return Ok(reply.clone());
    }
    if rewrite == ReplyRewrite::Functions {
        return super::functions::rewrite_reply(prefix, reply);
    }
    if rewrite == ReplyRewrite::FunctionStats {
        return super::functions::rewrite_stats(prefix, reply);
    }
    if matches!(reply[0], b'-' | b'!') {
        return Ok(rewrite_error(prefix, reply));
    }
    if rewrite == ReplyRewrite::Errors {
        return Ok(reply.clone());
    }
    // An attribute (`|`) would come before the reply it annotates; Redis never sends one to a
    // plain command, so such a reply fails to parse as a single value and is refused, not misread.
    let mut v = parse(reply)?;
    rewrite_value(rewrite, prefix, &mut v);
    let mut out = BytesMut::with_capacity(reply.len());
    encode(&v, &mut out);
    Ok(out.freeze())
}

fn rewrite_value(rewrite: ReplyRewrite, prefix: &[u8], v: &mut Value) {
    if v.is_null() {
        return;
    }
    match rewrite {
        ReplyRewrite::None
        | ReplyRewrite::Errors
        | ReplyRewrite::Functions
        | ReplyRewrite::FunctionStats => {}
        ReplyRewrite::Keys | ReplyRewrite::Channels => {
            if let Value::Agg(_, items) = v {
                // Every name should carry the prefix (the pattern was confined); one that does not
                // belongs to nobody the client may see.
                items.retain_mut(|item| strip(item, prefix));
            }
        }
        ReplyRewrite::Scan => {
            if let Value::Agg(_, items) = v
                && let Some(Value::Agg(_, keys)) = items.get_mut(1)
            {
                keys.retain_mut(|item| strip(item, prefix));
            }
            // The cursor would show the upstream's keyspace size (see policy::cursor).
            if let Value::Agg(_, items) = v
                && let Some(Value::Blob(_, cursor)) = items.first_mut()
            {
                *cursor = Blob::Owned(super::cursor::seal(prefix, cursor.bytes()));
            }
        }
        ReplyRewrite::Key => {
            strip(v, prefix);
        }
        ReplyRewrite::FirstKey => {
            if let Value::Agg(_, items) = v
                && let Some(first) = items.first_mut()
            {
                strip(first, prefix);
            }
        }
        ReplyRewrite::Streams => match v {
            Value::Agg(b'%', items) => {
                for key in items.iter_mut().step_by(2) {
                    strip(key, prefix);
                }
            }
            Value::Agg(_, streams) => {
                for s in streams {
                    if let Value::Agg(_, pair) = s
                        && let Some(name) = pair.first_mut()
                    {
                        strip(name, prefix);
                    }
                }
            }
            _ => {}
        },
        ReplyRewrite::NumSub => {
            // An array in both protocols (Redis 7 replies to NUMSUB with a flat array).
            if let Value::Agg(_, items) = v {
                for name in items.iter_mut().step_by(2) {
                    strip(name, prefix);
                }
            }
        }
        ReplyRewrite::PubSub => pubsub_message(prefix, v),
    }
}

/// `[kind, name, …]` or `[pmessage, pattern, channel, payload]`: strip the names. A pattern was
/// confined with the escaped prefix, so that is what comes off it.
fn pubsub_message(prefix: &[u8], v: &mut Value) {
    let Value::Agg(_, items) = v else {
        return;
    };
    let kind = items
        .first()
        .and_then(|k| k.bulk())
        .map(<[u8]>::to_ascii_lowercase);
    let escaped = super::glob::escape(prefix);
    match kind.as_deref() {
        Some(b"pmessage") => {
            if let Some(p) = items.get_mut(1) {
                strip(p, &escaped);
            }
            if let Some(c) = items.get_mut(2) {
                strip(c, prefix);
            }
        }
        Some(b"psubscribe" | b"punsubscribe") => {
            if let Some(p) = items.get_mut(1) {
                strip(p, &escaped);
            }
        }
        Some(_) => {
            if let Some(c) = items.get_mut(1) {
                strip(c, prefix);
            }
        }
        None => {}
    }
}

/// Rewrite a pushed Pub/Sub frame (RESP3 `>` or a RESP2 array on a subscribed connection).
pub fn rewrite_push(prefix: &[u8], push: &Bytes) -> Result<Bytes, ReplyError> {
    rewrite_reply(ReplyRewrite::PubSub, prefix, push, Protocol::Resp3)
}

/// `'<prefix>name'` → `'name'` inside an error text (simple `-` or RESP3 blob `!`).
fn rewrite_error(prefix: &[u8], reply: &Bytes) -> Bytes {
    let mut needle = Vec::with_capacity(prefix.len() + 1);
    needle.push(b'\'');
    needle.extend_from_slice(prefix);
    if memchr::memmem::find(reply, &needle).is_none() {
        return reply.clone();
    }
    let replace = |text: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = memchr::memmem::find(rest, &needle) {
            out.extend_from_slice(&rest[..=i]);
            rest = &rest[i + needle.len()..];
        }
        out.extend_from_slice(rest);
        out
    };
    match parse(reply) {
        Ok(Value::Line(b'-', text)) => {
            let mut out = BytesMut::new();
            encode(&Value::Line(b'-', &replace(text)), &mut out);
            out.freeze()
        }
        Ok(Value::Blob(b'!', b)) => {
            let mut out = BytesMut::new();
            encode(
                &Value::Blob(b'!', Blob::Owned(replace(b.bytes()).into())),
                &mut out,
            );
            out.freeze()
        }
        _ => reply.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(rewrite: ReplyRewrite, reply: &[u8]) -> Vec<u8> {
        rewrite_reply(
            rewrite,
            b"t:",
            &Bytes::copy_from_slice(reply),
            Protocol::Resp2,
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn keys_and_scan() {
        assert_eq!(
            rw(ReplyRewrite::Keys, b"*2\r\n$3\r\nt:a\r\n$4\r\nt:bc\r\n"),
            b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
        assert_eq!(rw(ReplyRewrite::Keys, b"*0\r\n"), b"*0\r\n");
        // The cursor is sealed (policy::cursor); 0 stays 0.
        let sealed = super::super::cursor::seal(b"t:", b"17");
        let mut want = format!("*2\r\n${}\r\n", sealed.len()).into_bytes();
        want.extend_from_slice(&sealed);
        want.extend_from_slice(b"\r\n*1\r\n$1\r\na\r\n");
        assert_eq!(
            rw(ReplyRewrite::Scan, b"*2\r\n$2\r\n17\r\n*1\r\n$3\r\nt:a\r\n"),
            want
        );
        assert_eq!(
            rw(ReplyRewrite::Scan, b"*2\r\n$1\r\n0\r\n*0\r\n"),
            b"*2\r\n$1\r\n0\r\n*0\r\n"
        );
        // A name outside the namespace is never shown.
        assert_eq!(rw(ReplyRewrite::Keys, b"*1\r\n$3\r\nu:a\r\n"), b"*0\r\n");
    }

    #[test]
    fn pops_and_streams() {
        assert_eq!(
            rw(ReplyRewrite::FirstKey, b"*2\r\n$3\r\nt:l\r\n$1\r\nx\r\n"),
            b"*2\r\n$1\r\nl\r\n$1\r\nx\r\n"
        );
        assert_eq!(rw(ReplyRewrite::FirstKey, b"*-1\r\n"), b"*-1\r\n");
        assert_eq!(rw(ReplyRewrite::FirstKey, b"_\r\n"), b"_\r\n");
        let resp3 = b"%1\r\n$3\r\nt:s\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        let want = b"%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        assert_eq!(rw(ReplyRewrite::Streams, resp3), want);
        let resp2 = b"*1\r\n*2\r\n$3\r\nt:s\r\n*0\r\n";
        assert_eq!(
            rw(ReplyRewrite::Streams, resp2),
            b"*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"
        );
    }

    #[test]
    fn errors_and_passthrough() {
        assert_eq!(
            rw(
                ReplyRewrite::Errors,
                b"-NOGROUP No such key 't:s' or consumer group 'g' in XREADGROUP with GROUP option\r\n"
            ),
            b"-NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option\r\n"
        );
        assert_eq!(rw(ReplyRewrite::Errors, b"$3\r\nt:x\r\n"), b"$3\r\nt:x\r\n");
        assert_eq!(rw(ReplyRewrite::Keys, b"-ERR x\r\n"), b"-ERR x\r\n");
        assert!(
            rewrite_reply(
                ReplyRewrite::Keys,
                b"t:",
                &Bytes::from_static(b"*2\r\n$1\r\n"),
                Protocol::Resp2
            )
            .is_err()
        );
    }

    #[test]
    fn pubsub() {
        assert_eq!(
            rw(
                ReplyRewrite::PubSub,
                b">3\r\n$7\r\nmessage\r\n$4\r\nt:ch\r\n$2\r\nhi\r\n"
            ),
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            rw(
                ReplyRewrite::PubSub,
                b"*4\r\n$8\r\npmessage\r\n$3\r\nt:*\r\n$4\r\nt:ch\r\n$2\r\nhi\r\n"
            ),
            b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            rw(
                ReplyRewrite::NumSub,
                b"*4\r\n$3\r\nt:a\r\n:1\r\n$3\r\nt:b\r\n:0\r\n"
            ),
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n"
        );
    }
}

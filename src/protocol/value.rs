//! Reading one whole reply into a small tree, for the few replies respite must look inside:
//! key names to un-prefix, a SCAN cursor, the upstream's HELLO, a handshake's error text.
//!
//! Strings borrow from the reply and every element keeps its type byte, so a reply re-encodes
//! ([`encode`]) in the shape it arrived in, RESP2 or RESP3, with only what a caller changed made
//! anew. Not for the hot path: forwarded replies are cut by the [`super::ReplyScanner`] and never
//! parsed. This module reads and writes RESP; what a reply means is its caller's business.
use bytes::{BufMut, Bytes, BytesMut};

/// The bytes are not exactly one well-formed RESP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed RESP reply")]
pub struct Malformed;

/// Aggregates nest at most this deep: deeper replies are refused, not read on the stack.
const MAX_DEPTH: usize = 64;

/// One parsed element. Strings borrow from the reply; aggregates keep their type byte so RESP2
/// and RESP3 come back in the shape they arrived in.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `+ - : _ , # (` lines, and null aggregates/bulks (`*-1`, `$-1`): type byte and text.
    Line(u8, &'a [u8]),
    /// `$ ! =` with their data; an owned replacement once rewritten.
    Blob(u8, Blob<'a>),
    /// `* ~ > %` (a map holds keys and values alternately) and `|` attributes.
    Agg(u8, Vec<Value<'a>>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Blob<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl Blob<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Blob::Borrowed(b) => b,
            Blob::Owned(b) => b,
        }
    }
}

impl<'a> Value<'a> {
    /// The text of a bulk or simple string.
    pub fn bulk(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b'$', b) => Some(b.bytes()),
            Value::Line(b'+', s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array, set, push or map (keys and values alternately).
    pub fn items(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Agg(b'|', _) => None,
            Value::Agg(_, items) => Some(items),
            _ => None,
        }
    }

    /// The text of an error reply (`-` or a RESP3 blob error `!`).
    pub fn error(&self) -> Option<&[u8]> {
        match self {
            Value::Line(b'-', text) => Some(text),
            Value::Blob(b'!', b) => Some(b.bytes()),
            _ => None,
        }
    }

    /// A null of either protocol: `_`, `$-1`, `*-1`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Line(b'_', _)) || matches!(self, Value::Line(_, b"-1"))
    }
}

/// Parse exactly one reply filling `buf`.
pub fn parse(buf: &[u8]) -> Result<Value<'_>, Malformed> {
    let (v, used) = parse_at(buf, 0, 0)?;
    if used != buf.len() {
        return Err(Malformed);
    }
    Ok(v)
}

/// Parse one reply starting at `at`, `depth` aggregates deep; returns it and where it ended.
pub fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<(Value<'_>, usize), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let kind = *buf.get(at).ok_or(Malformed)?;
    let eol = memchr::memmem::find(&buf[at..], b"\r\n").ok_or(Malformed)? + at;
    let line = &buf[at + 1..eol];
    let next = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok((Value::Line(kind, line), next)),
        b'$' | b'!' | b'=' => {
            if line == b"-1" {
                return Ok((Value::Line(kind, line), next));
            }
            let len = parse_len(line)?;
            let end = next.checked_add(len).ok_or(Malformed)?;
            if buf.get(end..end + 2) != Some(b"\r\n") {
                return Err(Malformed);
            }
            Ok((Value::Blob(kind, Blob::Borrowed(&buf[next..end])), end + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            if line == b"-1" {
                return Ok((Value::Line(kind, line), next));
            }
            let n = parse_len(line)?;
            let n = if matches!(kind, b'%' | b'|') {
                n.checked_mul(2).ok_or(Malformed)?
            } else {
                n
            };
            // A count is only a claim until its elements arrive: reserve what a sane reply has.
            let mut items = Vec::with_capacity(n.min(1024));
            let mut pos = next;
            for _ in 0..n {
                let (v, p) = parse_at(buf, pos, depth + 1)?;
                items.push(v);
                pos = p;
            }
            Ok((Value::Agg(kind, items), pos))
        }
        _ => Err(Malformed),
    }
}

/// `*N\r\n` at the start of `reply`: N and where the elements begin (not a null array, nor
/// anything but an array). For a reply whose elements are spliced one by one ([`super::ReplyScanner`]
/// finds where each ends) rather than read into a tree.
pub fn array_header(reply: &[u8]) -> Option<(usize, usize)> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let end = memchr::memmem::find(reply, b"\r\n")?;
    let n = parse_len(&reply[1..end]).ok()?;
    Some((n, end + 2))
}

fn parse_len(line: &[u8]) -> Result<usize, Malformed> {
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(Malformed);
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

/// Write `v` back in RESP, in the protocol and shape it was read in.
pub fn encode(v: &Value, out: &mut BytesMut) {
    match v {
        Value::Line(kind, text) => {
            out.put_u8(*kind);
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Value::Blob(kind, b) => {
            let b = b.bytes();
            out.put_u8(*kind);
            out.put_slice(b.len().to_string().as_bytes());
            out.put_slice(b"\r\n");
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Value::Agg(kind, items) => {
            let n = if matches!(kind, b'%' | b'|') {
                items.len() / 2
            } else {
                items.len()
            };
            out.put_u8(*kind);
            out.put_slice(n.to_string().as_bytes());
            out.put_slice(b"\r\n");
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_headers_of_arrays_only() {
        assert_eq!(array_header(b"*2\r\n+PONG\r\n:1\r\n"), Some((2, 4)));
        assert_eq!(array_header(b"*-1\r\n"), None);
        assert_eq!(array_header(b"_\r\n"), None);
        assert_eq!(array_header(b"-EXECABORT x\r\n"), None);
    }

    #[test]
    fn reads_and_rewrites_every_shape_unchanged() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-ERR x\r\n",
            b":-12\r\n",
            b"_\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"$0\r\n\r\n",
            b"!5\r\nERR x\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"%1\r\n$1\r\nk\r\n*2\r\n:1\r\n#t\r\n",
            b">2\r\n$10\r\ninvalidate\r\n~1\r\n$1\r\na\r\n",
        ] {
            let v = parse(reply).unwrap();
            let mut out = BytesMut::new();
            encode(&v, &mut out);
            assert_eq!(&out[..], reply, "{}", String::from_utf8_lossy(reply));
        }
    }

    #[test]
    fn refuses_what_is_not_exactly_one_reply() {
        for bad in [
            &b""[..],
            b"+OK",
            b"+OK\r\n+OK\r\n",
            b"$3\r\nab\r\n",
            b"*2\r\n$1\r\na\r\n",
            b"*x\r\n",
            b"?\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = [b"*1\r\n".repeat(MAX_DEPTH + 1), b":1\r\n".to_vec()].concat();
        assert_eq!(parse(&deep), Err(Malformed));
        let deepest = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert!(parse(&deepest).is_ok());
    }

    #[test]
    fn accessors() {
        let v = parse(b"*3\r\n$1\r\na\r\n+b\r\n_\r\n").unwrap();
        let items = v.items().unwrap();
        assert_eq!(items[0].bulk(), Some(&b"a"[..]));
        assert_eq!(items[1].bulk(), Some(&b"b"[..]));
        assert!(items[2].is_null());
        assert_eq!(
            parse(b"-NOAUTH x\r\n").unwrap().error(),
            Some(&b"NOAUTH x"[..])
        );
        assert_eq!(parse(b"!3\r\nERR\r\n").unwrap().error(), Some(&b"ERR"[..]));
        assert_eq!(parse(b"+OK\r\n").unwrap().error(), None);
    }
}

//! RESP3 replies read for the near cache, whose connections speak RESP3 for every client:
//! re-encoding a reply the way Redis writes it to a RESP2 client ([`to_resp2`]), the integer of a
//! `PTTL` reply, and what an `invalidate` push names ([`push`]).
//!
//! Frames arrive complete (the reader's [`super::ReplyScanner`] found their boundaries), so this
//! walks them in one pass without resuming and without building a tree: fills are converted on
//! the tracking connection's reader task. It knows the wire, not the cache.
use bytes::{BufMut, Bytes, BytesMut};

/// Re-encode a complete RESP3 reply the way Redis writes the same reply to a RESP2 client:
/// null → `$-1`, map → flat array, set → array, boolean → integer, double / big number /
/// verbatim → bulk string, blob error → simple error. `None` for anything it cannot carry over
/// exactly (attributes, pushes, malformed input): such a reply is answered but never cached.
pub fn to_resp2(frame: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(frame.len() + 8);
    let used = convert(frame, &mut out, 0)?;
    (used == frame.len()).then(|| out.freeze())
}

/// [`to_resp2`] for a reply whose RESP3 form nests `[member, score]` pairs in an array (ZRANGE
/// … WITHSCORES): RESP2 has them in one flat array. Other shapes convert as usual.
pub fn to_resp2_flattening_pairs(frame: &[u8]) -> Option<Bytes> {
    let (head, mut at) = line(frame)?;
    if frame[0] != b'*' {
        return to_resp2(frame);
    }
    let n = usize::try_from(number(head)?).ok()?;
    let mut body = BytesMut::with_capacity(frame.len() + 8);
    let mut items = 0;
    for _ in 0..n {
        let rest = frame.get(at..)?;
        match rest.first() {
            Some(b'*') => {
                let (h, after) = line(rest)?;
                let m = usize::try_from(number(h)?).ok()?;
                let mut used = after;
                for _ in 0..m {
                    used += convert(&rest[used..], &mut body, 1)?;
                }
                items += m;
                at += used;
            }
            _ => {
                at += convert(rest, &mut body, 1)?;
                items += 1;
            }
        }
    }
    if at != frame.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 16);
    out.put_u8(b'*');
    out.extend_from_slice(items.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Some(out.freeze())
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr::memchr(b'\r', buf)?;
    // `get`: a line that is only its CRLF has no type byte before it.
    let body = buf.get(1..end)?;
    (buf.get(end + 1) == Some(&b'\n')).then_some((body, end + 2))
}

fn number(digits: &[u8]) -> Option<i64> {
    super::int::parse_i64(digits)
}

fn bulk_header(out: &mut BytesMut, len: usize) {
    out.put_u8(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Convert one frame at the front of `buf`; returns how many bytes it took.
fn convert(buf: &[u8], out: &mut BytesMut, depth: usize) -> Option<usize> {
    if depth > 64 {
        return None;
    }
    let (head, after) = line(buf)?;
    match buf[0] {
        b'+' | b'-' | b':' => {
            out.extend_from_slice(&buf[..after]);
            Some(after)
        }
        b'_' => {
            out.extend_from_slice(b"$-1\r\n");
            Some(after)
        }
        b'#' => {
            out.extend_from_slice(if head == b"t" { b":1\r\n" } else { b":0\r\n" });
            Some(after)
        }
        b',' | b'(' => {
            bulk_header(out, head.len());
            out.extend_from_slice(head);
            out.extend_from_slice(b"\r\n");
            Some(after)
        }
        b'$' | b'=' | b'!' => {
            let len = number(head)?;
            if len < 0 {
                out.extend_from_slice(&buf[..after]);
                return Some(after);
            }
            let end = after + len as usize;
            if buf.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            let body = &buf[after..end];
            match buf[0] {
                b'$' => out.extend_from_slice(&buf[..end + 2]),
                // Verbatim strings lose their `txt:` format tag in RESP2.
                b'=' => {
                    let text = body.get(4..)?;
                    bulk_header(out, text.len());
                    out.extend_from_slice(text);
                    out.extend_from_slice(b"\r\n");
                }
                _ => {
                    if body.contains(&b'\r') || body.contains(&b'\n') {
                        return None;
                    }
                    out.put_u8(b'-');
                    out.extend_from_slice(body);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Some(end + 2)
        }
        b'*' | b'~' | b'%' => {
            let n = number(head)?;
            if n < 0 {
                out.extend_from_slice(b"*-1\r\n");
                return Some(after);
            }
            let items = if buf[0] == b'%' { n * 2 } else { n } as usize;
            out.put_u8(b'*');
            out.extend_from_slice(items.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            let mut at = after;
            for _ in 0..items {
                at += convert(&buf[at..], out, depth + 1)?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The integer of a `:n` reply.
pub fn integer(frame: &[u8]) -> Option<i64> {
    match frame.first() {
        Some(b':') => line(frame).and_then(|(digits, _)| number(digits)),
        _ => None,
    }
}

/// Whether a reply is an error (`-…` or `!…`).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// What a push frame asks of the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// `invalidate` with these keys.
    Keys(Vec<Bytes>),
    /// `invalidate` with a null: the whole keyspace (FLUSHALL, FLUSHDB, SWAPDB).
    All,
    /// Any other push: not ours.
    Other,
}

/// Read a complete push frame (`>2 $10 invalidate <keys|null>`).
pub fn push(frame: &Bytes) -> Push {
    parse_push(frame).unwrap_or(Push::Other)
}

fn parse_push(frame: &Bytes) -> Option<Push> {
    let (head, mut at) = line(frame)?;
    if frame[0] != b'>' || number(head)? != 2 {
        return None;
    }
    let (name, used) = bulk(frame, at)?;
    if !name.eq_ignore_ascii_case(b"invalidate") {
        return None;
    }
    at += used;
    let rest = frame.get(at..)?;
    let (head, after) = line(rest)?;
    match rest[0] {
        b'_' => Some(Push::All),
        // Redis writes a flush's null in the protocol of the client that tracks, not of the
        // connection it redirects to: a RESP2 client's `$-1` inside a RESP3 push (FLUSHALL).
        b'*' | b'$' if head == b"-1" => Some(Push::All),
        b'*' => {
            let n = number(head)?;
            let mut at = at + after;
            let mut keys = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let (key, used) = bulk(frame, at)?;
                keys.push(frame.slice_ref(key));
                at += used;
            }
            Some(Push::Keys(keys))
        }
        _ => None,
    }
}

/// A bulk string at `at`: its contents and the bytes the frame took.
fn bulk(frame: &Bytes, at: usize) -> Option<(&[u8], usize)> {
    let rest = frame.get(at..)?;
    if rest.first() != Some(&b'$') {
        return None;
    }
    let (head, after) = line(rest)?;
    let len = usize::try_from(number(head)?).ok()?;
    let body = rest.get(after..after + len)?;
    (rest.get(after + len..after + len + 2)? == b"\r\n").then_some((body, after + len + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_resp3_shapes_to_resp2() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"$3\r\nabc\r\n", b"$3\r\nabc\r\n"),
            (b"_\r\n", b"$-1\r\n"),
            (b":12\r\n", b":12\r\n"),
            (b"+OK\r\n", b"+OK\r\n"),
            (
                b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n_\r\n",
                b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$-1\r\n",
            ),
            (b"~1\r\n$1\r\nx\r\n", b"*1\r\n$1\r\nx\r\n"),
            (b"*2\r\n_\r\n$0\r\n\r\n", b"*2\r\n$-1\r\n$0\r\n\r\n"),
            (b",1.5\r\n", b"$3\r\n1.5\r\n"),
            (b"#t\r\n", b":1\r\n"),
            (b"=8\r\ntxt:abcd\r\n", b"$4\r\nabcd\r\n"),
            (b"!5\r\nERR x\r\n", b"-ERR x\r\n"),
        ];
        for (resp3, resp2) in cases {
            assert_eq!(
                to_resp2(resp3).as_deref(),
                Some(*resp2),
                "{}",
                String::from_utf8_lossy(resp3)
            );
        }
        assert_eq!(to_resp2(b"|1\r\n+a\r\n+b\r\n:1\r\n"), None);
        assert_eq!(to_resp2(b"$3\r\nab"), None);
        assert_eq!(to_resp2(b"$1\r\nab\r\n"), None);
    }

    /// A random RESP3 reply of the shapes fills can bring: blobs, nulls, integers, simple
    /// strings and errors, doubles, booleans, and arrays, sets and maps of them.
    fn frame(depth: u32) -> proptest::prelude::BoxedStrategy<Vec<u8>> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let mut out = format!("${}\r\n", b.len()).into_bytes();
                out.extend(b);
                out.extend(b"\r\n");
                out
            }),
            Just(b"_\r\n".to_vec()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            "[a-zA-Z0-9 ]{0,20}".prop_map(|t| format!("+{t}\r\n").into_bytes()),
            "[a-zA-Z0-9 ]{0,20}".prop_map(|t| format!("-ERR {t}\r\n").into_bytes()),
            any::<f64>().prop_map(|d| format!(",{d}\r\n").into_bytes()),
            any::<bool>().prop_map(|b| if b {
                b"#t\r\n".to_vec()
            } else {
                b"#f\r\n".to_vec()
            }),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        let inner = frame(depth - 1);
        prop_oneof![
            3 => leaf,
            1 => (prop::sample::select(vec![b'*', b'~', b'%']), proptest::collection::vec(inner, 0..4))
                .prop_map(|(kind, items)| {
                    let items: Vec<Vec<u8>> = if kind == b'%' && items.len() % 2 == 1 {
                        items[..items.len() - 1].to_vec()
                    } else {
                        items
                    };
                    let n = if kind == b'%' { items.len() / 2 } else { items.len() };
                    let mut out = format!("{}{n}\r\n", kind as char).into_bytes();
                    for i in items {
                        out.extend(i);
                    }
                    out
                }),
        ]
        .boxed()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// Every RESP3 reply converts to one complete RESP2 reply that redis-protocol's RESP2
        /// decoder reads whole.
        #[test]
        fn conversions_are_complete_resp2(f in frame(3)) {
            let out = to_resp2(&f).expect("convertible");
            let (_, used) = redis_protocol::resp2::decode::decode(&out)
                .expect("valid RESP2")
                .expect("complete");
            proptest::prop_assert_eq!(used, out.len());
        }

        /// Arbitrary bytes never panic, and anything accepted is valid RESP2.
        #[test]
        fn arbitrary_input_is_rejected_or_valid(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Some(out) = to_resp2(&b) {
                let decoded = redis_protocol::resp2::decode::decode(&out);
                proptest::prop_assert!(matches!(decoded, Ok(Some((_, n))) if n == out.len()));
            }
            let _ = push(&Bytes::from(b));
        }
    }

    #[test]
    fn reads_invalidation_pushes() {
        let keys = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n");
        assert_eq!(
            push(&keys),
            Push::Keys(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")])
        );
        let all = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert_eq!(push(&all), Push::All);
        // FLUSHALL's, redirected for a RESP2 client: the null in that client's protocol.
        let all2 = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n$-1\r\n");
        assert_eq!(push(&all2), Push::All);
        let other = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
        assert_eq!(push(&other), Push::Other);
        assert_eq!(integer(b":-2\r\n"), Some(-2));
        assert_eq!(integer(b"$1\r\n1\r\n"), None);
    }
}

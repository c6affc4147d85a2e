//! Reply boundary scanner: finds where each upstream reply ends, without building frames.
//!
//! Contract:
//! - Handles every RESP2 and RESP3 type: `+ - : $ * _ , # ( ! = % ~ > |` (an attribute `|` and the
//!   reply it annotates count as one reply), nested to any depth: the scanner never recurses, it
//!   keeps one small count per open aggregate on an explicit stack. Each level costs at least four
//!   bytes of reply (`*1\r\n`) already in the caller's buffer and 16 bytes of stack, so the stack
//!   is bounded by the reply itself; a Lua script can nest about 8,000 tables before Redis stops it
//!   ("reached lua stack limit"), and a module can go deeper. A caller that wants a limit sets one
//!   with [`ReplyScanner::with_max_depth`]; the shared connections do not, so a deep reply is
//!   relayed like any other.
//! - Resumable: when the buffer holds only part of a reply, `scan` returns `Ok(None)` and keeps its
//!   position and the stack of outstanding element counts, so the next call (with the same bytes plus
//!   more appended) resumes where it stopped. Feeding a 16 MB reply in 4 KB chunks is O(n), not O(n²).
//! - After `Ok(Some(..))` the caller splits that many bytes off the front; the scanner has reset itself.
//!
//! Only boundaries are checked, not contents: lengths and counts must be valid (`-1`, a RESP2 null,
//! is accepted for every length-prefixed type, any other negative is not), and a bulk must be followed
//! by CRLF, but the text of a `+`, `:` or `,` line is not parsed. RESP3 streamed strings and aggregates
//! (`$?`, `*?`) are not supported: Redis never sends them.
use super::int::{parse_i64, quick_header};
#[cfg(test)]
use bytes::BytesMut;
use memchr::memchr;

/// No limit on aggregate nesting by default (see the module's contract): a limit Redis does not
/// have would fail a legitimate reply, and with it the connection it arrived on.
pub const DEFAULT_MAX_DEPTH: usize = usize::MAX;

/// A complete reply found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Length in bytes of the whole reply (attribute included).
    pub len: usize,
    /// True for a RESP3 push (`>`): out-of-band, not the answer to any request.
    pub push: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("upstream protocol error: unexpected type byte {0:#04x}")]
    BadType(u8),
    /// A length or count that is not a number, is negative other than -1, or does not match the
    /// bytes that follow (a bulk not followed by CRLF).
    #[error("upstream protocol error: invalid length")]
    BadLength,
    #[error("upstream protocol error: nesting deeper than {0}")]
    TooDeep(usize),
}

/// How a reply type is laid out on the wire.
enum Shape {
    /// Everything up to CRLF: `+ - : _ , # (`.
    Line,
    /// A length line, then that many bytes and CRLF: `$ ! =`.
    Blob,
    /// A count line, then that many replies (twice that for maps and attributes): `* ~ > % |`.
    Aggregate { pairs: bool, attribute: bool },
}

impl Shape {
    fn of(kind: u8) -> Result<Shape, ScanError> {
        Ok(match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Shape::Line,
            b'$' | b'!' | b'=' => Shape::Blob,
            b'*' | b'~' | b'>' => Shape::Aggregate {
                pairs: false,
                attribute: false,
            },
            b'%' => Shape::Aggregate {
                pairs: true,
                attribute: false,
            },
            b'|' => Shape::Aggregate {
                pairs: true,
                attribute: true,
            },
            other => return Err(ScanError::BadType(other)),
        })
    }
}

/// An aggregate whose elements are still arriving.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Elements still to come (both halves of each pair, for maps and attributes).
    left: u64,
    /// An attribute does not count as an element of its parent: the reply it annotates does.
    attribute: bool,
}

#[derive(Debug)]
pub struct ReplyScanner {
    max_depth: usize,
    /// Offset of the first byte of the current reply not yet accounted for.
    pos: usize,
    /// Offset up to which the current line has been searched for its CRLF without finding it.
    scanned: usize,
    /// Buffer length at which the bulk being waited for (CRLF included) will be complete.
    bulk_end: Option<usize>,
    stack: Vec<Level>,
    push: bool,
}

impl Default for ReplyScanner {
    fn default() -> Self {
        Self::with_max_depth(DEFAULT_MAX_DEPTH)
    }
}

impl ReplyScanner {
    pub fn new() -> Self {
        ReplyScanner::default()
    }

    /// A scanner that refuses replies nested deeper than `max_depth` aggregates (attributes count).
    pub fn with_max_depth(max_depth: usize) -> Self {
        ReplyScanner {
            max_depth,
            pos: 0,
            scanned: 0,
            bulk_end: None,
            stack: Vec::new(),
            push: false,
        }
    }

    /// Find the end of the reply at the front of `buf`.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<Scanned>, ScanError> {
        let buf: &[u8] = buf;
        loop {
            if let Some(end) = self.bulk_end {
                if buf.len() < end {
                    return Ok(None);
                }
                if buf[end - 2..end] != *b"\r\n" {
                    return Err(ScanError::BadLength);
                }
                self.bulk_end = None;
                self.pos = end;
                if self.element_done() {
                    return Ok(Some(self.finish()));
                }
            }
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            // Checked before waiting for the line, so garbage is reported as soon as it is seen.
            let shape = Shape::of(kind)?;
            let quick = match shape {
                Shape::Line => None,
                _ => quick_header(buf, self.pos),
            };
            let len = match quick {
                Some((n, next)) => {
                    self.pos = next;
                    Some(n)
                }
                _ => {
                    let Some(cr) = self.line_end(buf) else {
                        return Ok(None);
                    };
                    let line = &buf[self.pos + 1..cr];
                    self.pos = cr + 2;
                    match shape {
                        Shape::Line => None,
                        _ => length(line)?,
                    }
                }
            };
            let complete = match shape {
                Shape::Line => self.element_done(),
                Shape::Blob => match len {
                    None => self.element_done(),
                    Some(n) => {
                        self.bulk_end = Some(
                            usize::try_from(n)
                                .ok()
                                .and_then(|n| self.pos.checked_add(n)?.checked_add(2))
                                .ok_or(ScanError::BadLength)?,
                        );
                        false
                    }
                },
                Shape::Aggregate { pairs, attribute } => {
                    if kind == b'>' && self.stack.is_empty() {
                        self.push = true;
                    }
                    let count = match len {
                        None => 0,
                        Some(n) if pairs => n.checked_mul(2).ok_or(ScanError::BadLength)?,
                        Some(n) => n,
                    };
                    if count > 0 {
                        if self.stack.len() >= self.max_depth {
                            return Err(ScanError::TooDeep(self.max_depth));
                        }
                        self.stack.push(Level {
                            left: count,
                            attribute,
                        });
                        false
                    } else {
                        // An empty attribute annotates the reply that follows; that is the element.
                        !attribute && self.element_done()
                    }
                }
            };
            if complete {
                return Ok(Some(self.finish()));
            }
        }
    }

    /// The `\r` of the CRLF ending the line that starts at `pos`. A lone `\r` inside the line does not
    /// end it. Where the search stops short it records how far it got, so a long line arriving in
    /// pieces is searched once.
    fn line_end(&mut self, buf: &[u8]) -> Option<usize> {
        let mut from = self.scanned.max(self.pos + 1);
        loop {
            let Some(i) = memchr(b'\r', &buf[from..]) else {
                self.scanned = buf.len();
                return None;
            };
            let cr = from + i;
            match buf.get(cr + 1) {
                Some(b'\n') => return Some(cr),
                Some(_) => from = cr + 1,
                None => {
                    self.scanned = cr;
                    return None;
                }
            }
        }
    }

    /// Accounts for one finished element; true when that finished the whole reply.
    fn element_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            top.left -= 1;
            if top.left > 0 {
                return false;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                return false;
            }
        }
        true
    }

    fn finish(&mut self) -> Scanned {
        let found = Scanned {
            len: self.pos,
            push: self.push,
        };
        self.pos = 0;
        self.scanned = 0;
        self.bulk_end = None;
        self.stack.clear();
        self.push = false;
        found
    }
}

/// A length or count: `None` for the null `-1`.
fn length(line: &[u8]) -> Result<Option<u64>, ScanError> {
    match parse_i64(line) {
        Some(-1) => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(ScanError::BadLength),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scans `input` delivered `chunk` bytes at a time, splitting off each reply as a caller would.
    fn scan_chunked(input: &[u8], chunk: usize) -> Result<Vec<Scanned>, ScanError> {
        let mut s = ReplyScanner::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(found) = s.scan(&buf)? {
                let _ = buf.split_to(found.len);
                out.push(found);
            }
        }
        Ok(out)
    }

    fn lens(input: &[u8]) -> Vec<usize> {
        let whole = scan_chunked(input, input.len()).unwrap();
        for chunk in [1, 2, 5] {
            assert_eq!(scan_chunked(input, chunk).unwrap(), whole, "chunk {chunk}");
        }
        whole.iter().map(|s| s.len).collect()
    }

    fn single(input: &[u8]) -> Scanned {
        let mut s = ReplyScanner::new();
        let found = s.scan(&BytesMut::from(input)).unwrap().unwrap();
        assert_eq!(
            found.len,
            input.len(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        found
    }

    fn scan_err(input: &[u8]) -> ScanError {
        match scan_chunked(input, input.len()) {
            Ok(found) => panic!("{:?} scanned as {found:?}", String::from_utf8_lossy(input)),
            Err(e) => e,
        }
    }

    #[test]
    fn every_type_alone() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-ERR no\r\n",
            b":-12\r\n",
            b"$5\r\nvalue\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"$4\r\na\r\nb\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"_\r\n",
            b",3.14\r\n",
            b",-inf\r\n",
            b"#t\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
            b"%0\r\n",
            b"~3\r\n+a\r\n+b\r\n#f\r\n",
            b"+a\rb\r\n",
        ] {
            assert!(!single(reply).push);
        }
    }

    #[test]
    fn push_is_flagged_only_at_top_level() {
        assert!(single(b">2\r\n+message\r\n+hi\r\n").push);
        assert!(!single(b"*1\r\n>1\r\n+x\r\n").push);
        assert!(single(b"|1\r\n+k\r\n+v\r\n>1\r\n+x\r\n").push);
        assert!(!single(b"|1\r\n+k\r\n>1\r\n+v\r\n:1\r\n").push);
    }

    #[test]
    fn attributes_belong_to_the_reply_they_annotate() {
        assert_eq!(
            lens(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n+next\r\n"),
            [63, 7]
        );
        assert_eq!(lens(b"|0\r\n:1\r\n:2\r\n"), [8, 4]);
        // Inside an aggregate the attribute is not one of its elements.
        assert_eq!(
            lens(b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n+next\r\n"),
            [24, 7]
        );
        // An attribute annotating a reply nested inside another attribute.
        assert_eq!(lens(b"|1\r\n|1\r\n+a\r\n+b\r\n+k\r\n+v\r\n:1\r\n"), [28]);
    }

    #[test]
    fn pipeline_one_at_a_time() {
        let mut s = ReplyScanner::new();
        let mut buf = BytesMut::from(&b"+OK\r\n$3\r\nfoo\r\n:1"[..]);
        assert_eq!(
            s.scan(&buf),
            Ok(Some(Scanned {
                len: 5,
                push: false
            }))
        );
        let _ = buf.split_to(5);
        assert_eq!(
            s.scan(&buf),
            Ok(Some(Scanned {
                len: 9,
                push: false
            }))
        );
        let _ = buf.split_to(9);
        assert_eq!(s.scan(&buf), Ok(None));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            s.scan(&buf),
            Ok(Some(Scanned {
                len: 4,
                push: false
            }))
        );
    }

    #[test]
    fn every_prefix_waits() {
        let reply =
            b"|1\r\n+a\r\n+b\r\n*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n~1\r\n_\r\n>1\r\n=7\r\ntxt:abc\r\n";
        for cut in 0..reply.len() {
            let mut s = ReplyScanner::new();
            let mut buf = BytesMut::from(&reply[..cut]);
            assert_eq!(s.scan(&buf), Ok(None), "cut at {cut}");
            buf.extend_from_slice(&reply[cut..]);
            assert_eq!(s.scan(&buf).unwrap().unwrap().len, reply.len());
        }
    }

    #[test]
    fn large_bulk_in_chunks() {
        let mut reply = b"$1048576\r\n".to_vec();
        reply.extend(std::iter::repeat_n(b'\r', 1 << 20));
        reply.extend_from_slice(b"\r\n");
        assert_eq!(scan_chunked(&reply, 4096).unwrap()[0].len, reply.len());
    }

    #[test]
    fn malformed_replies() {
        assert_eq!(scan_err(b"x\r\n"), ScanError::BadType(b'x'));
        assert_eq!(scan_err(b"*1\r\n\r\n"), ScanError::BadType(b'\r'));
        for bad in [
            &b"$-2\r\n"[..],
            b"$x\r\n",
            b"$\r\n",
            b"$01\r\n",
            b"*-2\r\n",
            b"%-5\r\n",
            b"$3\r\nfoobar\r\n",
            b"$?\r\n",
            b"$9223372036854775808\r\n",
        ] {
            assert_eq!(
                scan_err(bad),
                ScanError::BadLength,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nesting_limit() {
        let mut s = ReplyScanner::with_max_depth(3);
        assert!(
            s.scan(&BytesMut::from(&b"*1\r\n*1\r\n*1\r\n:1\r\n"[..]))
                .unwrap()
                .is_some()
        );
        let deep = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert_eq!(
            ReplyScanner::with_max_depth(3).scan(&deep),
            Err(ScanError::TooDeep(3))
        );
    }

    /// Deeper than any Lua script can nest (about 8,000) and far past the old 512 limit: found
    /// whole, fed at once and in pieces, with no recursion to overflow the test thread's stack.
    #[test]
    fn any_depth_is_scanned() {
        for depth in [513, 1_000, 100_000, 1_000_000] {
            let mut deep = b"*1\r\n".repeat(depth);
            deep.extend_from_slice(b"$1\r\nx\r\n:1\r\n");
            let mut s = ReplyScanner::new();
            let found = s.scan(&deep).unwrap().unwrap();
            assert_eq!(found.len, deep.len() - 4, "depth {depth}");
            let mut s = ReplyScanner::new();
            let mut fed = 0;
            let mut got = None;
            for piece in deep.chunks(4093) {
                fed += piece.len();
                if let Some(f) = s.scan(&deep[..fed]).unwrap() {
                    got = Some(f);
                    break;
                }
            }
            assert_eq!(got.map(|f| f.len), Some(deep.len() - 4));
        }
    }

    mod oracle {
        use super::*;
        use redis_protocol::resp2::types::{OwnedFrame as Frame2, Resp2Frame};
        use redis_protocol::resp3::types::{
            FrameMap, FrameSet, OwnedFrame as Frame3, Resp3Frame, VerbatimStringFormat,
        };

        fn text() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(prop::sample::select(&b"abcXYZ019 _:-+$*"[..]), 0..12)
        }

        fn blob() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..24),
                proptest::collection::vec(prop::sample::select(&b"\r\n$*"[..]), 0..6),
                proptest::collection::vec(any::<u8>(), 0..2000),
            ]
        }

        fn resp2() -> impl Strategy<Value = Frame2> {
            let leaf = prop_oneof![
                text().prop_map(Frame2::SimpleString),
                text().prop_map(|t| Frame2::Error(String::from_utf8(t).unwrap())),
                any::<i64>().prop_map(Frame2::Integer),
                blob().prop_map(Frame2::BulkString),
                Just(Frame2::Null),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                proptest::collection::vec(inner, 0..6).prop_map(Frame2::Array)
            })
        }

        /// Frames that can be map keys, set members and attribute contents (they must hash).
        fn key3() -> impl Strategy<Value = Frame3> {
            prop_oneof![
                text().prop_map(|data| Frame3::SimpleString {
                    data,
                    attributes: None
                }),
                blob().prop_map(|data| Frame3::BlobString {
                    data,
                    attributes: None
                }),
                any::<i64>().prop_map(|data| Frame3::Number {
                    data,
                    attributes: None
                }),
                any::<bool>().prop_map(|data| Frame3::Boolean {
                    data,
                    attributes: None
                }),
            ]
        }

        fn attributes() -> impl Strategy<Value = Option<FrameMap<Frame3, Frame3>>> {
            prop_oneof![
                3 => Just(None),
                1 => proptest::collection::vec((key3(), key3()), 0..3)
                    .prop_map(|kv| Some(kv.into_iter().collect())),
            ]
        }

        fn resp3() -> impl Strategy<Value = Frame3> {
            let leaf = prop_oneof![
                (text(), attributes())
                    .prop_map(|(data, attributes)| Frame3::SimpleString { data, attributes }),
                (text(), attributes()).prop_map(|(t, attributes)| Frame3::SimpleError {
                    data: String::from_utf8(t).unwrap(),
                    attributes
                }),
                (blob(), attributes())
                    .prop_map(|(data, attributes)| Frame3::BlobString { data, attributes }),
                (blob(), attributes())
                    .prop_map(|(data, attributes)| Frame3::BlobError { data, attributes }),
                (any::<i64>(), attributes())
                    .prop_map(|(data, attributes)| Frame3::Number { data, attributes }),
                (any::<f64>(), attributes())
                    .prop_map(|(data, attributes)| Frame3::Double { data, attributes }),
                (any::<bool>(), attributes())
                    .prop_map(|(data, attributes)| Frame3::Boolean { data, attributes }),
                (
                    proptest::collection::vec(prop::sample::select(&b"0123456789"[..]), 1..40),
                    attributes()
                )
                    .prop_map(|(data, attributes)| Frame3::BigNumber { data, attributes }),
                (blob(), any::<bool>(), attributes()).prop_map(|(data, md, attributes)| {
                    Frame3::VerbatimString {
                        data,
                        format: if md {
                            VerbatimStringFormat::Markdown
                        } else {
                            VerbatimStringFormat::Text
                        },
                        attributes,
                    }
                }),
                Just(Frame3::Null),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    (proptest::collection::vec(inner.clone(), 0..6), attributes())
                        .prop_map(|(data, attributes)| Frame3::Array { data, attributes }),
                    (proptest::collection::vec(inner.clone(), 0..6), attributes())
                        .prop_map(|(data, attributes)| Frame3::Push { data, attributes }),
                    (
                        proptest::collection::vec((key3(), inner), 0..4),
                        attributes()
                    )
                        .prop_map(|(kv, attributes)| Frame3::Map {
                            data: kv.into_iter().collect(),
                            attributes
                        }),
                    (proptest::collection::vec(key3(), 0..4), attributes()).prop_map(
                        |(members, attributes)| {
                            Frame3::Set {
                                data: members.into_iter().collect::<FrameSet<_>>(),
                                attributes,
                            }
                        }
                    ),
                ]
            })
        }

        fn encode2(frame: &Frame2) -> Vec<u8> {
            let mut out = vec![0; frame.encode_len(false)];
            let n = redis_protocol::resp2::encode::encode(&mut out, frame, false).unwrap();
            out.truncate(n);
            out
        }

        fn encode3(frame: &Frame3) -> Vec<u8> {
            let mut out = vec![0; frame.encode_len(false)];
            let n =
                redis_protocol::resp3::encode::complete::encode(&mut out, frame, false).unwrap();
            out.truncate(n);
            out
        }

        fn cut_points(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
            cuts.push(len);
            cuts.sort_unstable();
            cuts
        }

        /// Feeds `stream` cut at `cuts`, returning every reply as the caller would have split it off.
        fn scan_at(stream: &[u8], cuts: &[usize]) -> Vec<(Scanned, BytesMut)> {
            let mut s = ReplyScanner::new();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut fed = 0;
            for &cut in cuts {
                buf.extend_from_slice(&stream[fed..cut]);
                fed = cut;
                while let Some(found) = s.scan(&buf).unwrap() {
                    out.push((found, buf.split_to(found.len)));
                }
            }
            assert!(
                buf.is_empty(),
                "{} bytes never completed a reply",
                buf.len()
            );
            out
        }

        /// Replies nested up to 1,500 deep (past the old 512 limit, and what a script's nested
        /// tables produce), with siblings along the chain: cut where the encoder cut them. The
        /// oracle's encoder and the frames' drop recurse, so the cases run on a thread with a
        /// large stack; the scanner itself needs none.
        #[test]
        fn deep_replies_match_the_encoder() {
            use proptest::test_runner::{Config, TestRunner};
            let run = || {
                let strategy = (
                    1usize..1500,
                    resp2(),
                    proptest::collection::vec(resp2(), 0..3),
                    1usize..200,
                    proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
                );
                let mut runner = TestRunner::new(Config {
                    cases: 64,
                    ..Config::default()
                });
                runner
                    .run(&strategy, |(depth, leaf, siblings, every, cuts)| {
                        let mut frame = leaf;
                        for level in 0..depth {
                            let mut items = vec![frame];
                            if level % every == 0 {
                                items.extend(siblings.iter().cloned());
                            }
                            frame = Frame2::Array(items);
                        }
                        let encoded = encode2(&frame);
                        let mut stream = encoded.clone();
                        stream.extend_from_slice(b"+next\r\n");
                        let got = scan_at(&stream, &cut_points(&cuts, stream.len()));
                        prop_assert_eq!(got.len(), 2);
                        prop_assert_eq!(&got[0].1[..], &encoded[..]);
                        prop_assert_eq!(&got[1].1[..], &b"+next\r\n"[..]);
                        Ok(())
                    })
                    .unwrap();
            };
            std::thread::Builder::new()
                .stack_size(512 << 20)
                .spawn(run)
                .unwrap()
                .join()
                .unwrap();
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            #[test]
            fn resp2_boundaries_match_the_encoder(
                frames in proptest::collection::vec(resp2(), 1..6),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            ) {
                let encoded: Vec<Vec<u8>> = frames.iter().map(encode2).collect();
                let stream = encoded.concat();
                let got = scan_at(&stream, &cut_points(&cuts, stream.len()));
                prop_assert_eq!(got.len(), frames.len());
                for ((found, bytes), want) in got.iter().zip(&encoded) {
                    prop_assert_eq!(&bytes[..], &want[..]);
                    prop_assert!(!found.push);
                    let decoded = redis_protocol::resp2::decode::decode(bytes).unwrap().unwrap();
                    prop_assert_eq!(decoded.1, bytes.len());
                }
            }

            #[test]
            fn resp3_boundaries_match_the_encoder(
                frames in proptest::collection::vec(resp3(), 1..6),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            ) {
                let encoded: Vec<Vec<u8>> = frames.iter().map(encode3).collect();
                let stream = encoded.concat();
                let got = scan_at(&stream, &cut_points(&cuts, stream.len()));
                prop_assert_eq!(got.len(), frames.len());
                for (((found, bytes), want), frame) in got.iter().zip(&encoded).zip(&frames) {
                    prop_assert_eq!(&bytes[..], &want[..]);
                    prop_assert_eq!(found.push, matches!(frame, Frame3::Push { .. }));
                    let decoded =
                        redis_protocol::resp3::decode::complete::decode(bytes).unwrap().unwrap();
                    prop_assert_eq!(decoded.1, bytes.len());
                }
            }

            /// Whatever the bytes, scanning in chunks finds what scanning all at once finds.
            #[test]
            fn arbitrary_bytes_chunked_like_whole(
                input in proptest::collection::vec(
                    prop_oneof![
                        3 => any::<u8>(),
                        2 => prop::sample::select(&b"*$%|>~:+_\r\n0123-"[..]),
                    ],
                    0..200,
                ),
                chunk in 1usize..17,
            ) {
                prop_assert_eq!(scan_chunked(&input, chunk), scan_chunked(&input, input.len()));
            }
        }
    }
}

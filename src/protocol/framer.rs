//! Request framer: a client's read buffer → [`Request`]s.
//!
//! Contract:
//! - Resumable: `next` may be called with a buffer that holds part of a request; it returns
//!   `Ok(None)` and remembers how far it got, so feeding a large request in small chunks is O(n).
//!   Between calls the caller only appends to the buffer; the framer alone removes bytes from it.
//! - Zero-copy: a complete request is split off the front of the buffer (`split_to(..).freeze()`), and
//!   its arguments are `Bytes` slices of that allocation.
//! - Accepts RESP arrays of bulk strings and inline commands (space-separated, with Redis's quoting
//!   rules from `sdssplitargs`). Empty arrays (`*0`, `*-1`) and empty inline lines are skipped, as Redis does.
//! - Limits: a request over `max_args` or with a bulk over `max_bulk_len` is a *recoverable* error: the
//!   framer returns the error once and then silently discards the rest of that request (its bulk
//!   lengths are known), so the next call yields the next request. Malformed framing (bad type byte,
//!   non-numeric length, inline line over `max_inline_len`, unbalanced quotes) is *fatal*: the stream
//!   cannot be resynchronised and the caller closes the connection after replying. After a fatal
//!   error every further call returns the same error. A count or length past Redis's hard limits
//!   (1024*1024 arguments, 512 MiB), or past the configured limit where that is higher, is malformed
//!   rather than over a limit, and fatal, as in Redis.
//!
//! Error texts are Redis's own (`networking.c`) wherever Redis has the error. Where this framer is
//! stricter than Redis it says so at the check: Redis skips the two bytes after a length or a bulk
//! without looking at them, but our raw bytes are forwarded over upstream connections shared by many
//! clients, to servers that may not be Redis, so anything but CRLF there is refused.
use super::int::{parse_i64, quick_header};
use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

/// Framing limits. Defaults are Redis's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one request (Redis: 1024*1024 multibulk elements).
    pub max_args: usize,
    /// Largest single bulk argument in bytes (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Longest inline command line, and longest `*`/`$` header line (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes buffered for one client's unfinished request (Redis `client-query-buffer-limit`, 1 GiB).
    pub max_query_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args: HARD_MAX_ARGS,
            max_bulk_len: HARD_MAX_BULK_LEN,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// Past these a length is not an over-limit request but garbage (fatal), unless the configured limit is
/// higher still. They are Redis's hard limits, so a client that works against Redis works here.
const HARD_MAX_ARGS: usize = 1024 * 1024;
const HARD_MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// A request with more arguments than this gives its range table back afterwards, so one huge request
/// does not pin memory for the life of the connection.
const RANGES_KEEP: usize = 1024;

/// Argument vectors up to this capacity are reused from one request to the next.
const RECYCLE_MAX_ARGS: usize = 16;

/// One complete client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The arguments; `args[0]` is the command name as the client spelled it. Never empty.
    pub args: Vec<Bytes>,
    /// The exact bytes of the request when it came as a RESP array (forwardable as is); `None` for
    /// inline requests, which must be re-encoded before forwarding.
    pub raw: Option<Bytes>,
}

/// Why a request could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The text after `-ERR `, e.g. `Protocol error: invalid multibulk length`.
    pub message: String,
    /// True when the stream cannot be resynchronised: reply, then close the connection.
    pub fatal: bool,
}

impl FrameError {
    fn fatal(message: impl Into<String>) -> Self {
        FrameError {
            message: message.into(),
            fatal: true,
        }
    }

    fn limit(message: String) -> Self {
        FrameError {
            message,
            fatal: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Between requests: the first byte decides between RESP and inline.
    Start,
    /// Inside a RESP array whose header has been read.
    Array,
    /// Waiting for the newline that ends an inline request.
    Inline,
    /// Throwing away the rest of an over-limit array as it arrives.
    Discard,
    /// A fatal error was reported; nothing more can be framed.
    Failed(FrameError),
}

/// What one step of framing achieved.
enum Step {
    Done(Request),
    /// A request that Redis ignores (`*0`, empty inline line) was consumed; look at what follows.
    Skipped,
    NeedMore,
}

/// Resumable request framer; one per client connection.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    mode: Mode,
    /// In `Array` mode: offset in the buffer of the first byte of the current request not yet parsed.
    pos: usize,
    /// Offset up to which a line search has already looked without finding the line's end.
    scanned: usize,
    /// Bulks still expected in the current array (also while discarding).
    left: usize,
    /// Length of the bulk whose header has been read and whose body is awaited. While discarding, the
    /// number of body bytes still to drop.
    bulk: Option<usize>,
    /// Argument ranges of the array being framed, relative to the start of the request.
    ranges: Vec<(usize, usize)>,
    /// An emptied argument vector handed back by [`Framer::recycle`], for the next request.
    spare: Vec<Bytes>,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            mode: Mode::Start,
            pos: 0,
            scanned: 0,
            left: 0,
            bulk: None,
            ranges: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Hand back a request's argument vector once it is done with, so the next request reuses
    /// its allocation (a small one is kept; a huge one goes).
    pub fn recycle(&mut self, mut args: Vec<Bytes>) {
        if args.capacity() <= RECYCLE_MAX_ARGS {
            args.clear();
            self.spare = args;
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Apply `limits` from the next request on (the session lifts Redis's small limits for
    /// clients that have not authenticated once they have).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The buffer length at which the bulk argument being waited for will be complete, when the
    /// framer is waiting for one. A reader can reserve that much at once for a large argument, as
    /// Redis does, instead of growing the buffer step by step.
    pub fn needed_len(&self) -> Option<usize> {
        match (&self.mode, self.bulk) {
            (Mode::Array, Some(len)) => Some(self.pos.saturating_add(len).saturating_add(2)),
            _ => None,
        }
    }

    /// Frame the next request at the front of `buf`. `Ok(Some)` consumed it from `buf`; `Ok(None)`
    /// needs more bytes (bytes already examined are not re-examined next time); `Err` reports a limit
    /// or protocol error (see the module doc for which are fatal).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, FrameError> {
        loop {
            let step = match self.mode {
                Mode::Start => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => self.array_header(buf)?,
                    Some(_) => {
                        self.mode = Mode::Inline;
                        self.scanned = 0;
                        self.inline(buf)?
                    }
                },
                Mode::Array => self.array_body(buf)?,
                Mode::Inline => self.inline(buf)?,
                Mode::Discard => self.discard(buf)?,
                Mode::Failed(ref e) => return Err(e.clone()),
            };
            match step {
                Step::Done(req) => return Ok(Some(req)),
                Step::Skipped => continue,
                Step::NeedMore => return Ok(None),
            }
        }
    }

    fn fail(&mut self, message: impl Into<String>) -> FrameError {
        let e = FrameError::fatal(message);
        self.mode = Mode::Failed(e.clone());
        e
    }

    fn reset(&mut self) {
        self.mode = Mode::Start;
        self.pos = 0;
        self.scanned = 0;
        self.left = 0;
        self.bulk = None;
    }

    /// Finds the `\r` ending the header line that starts at `start`, as Redis does: the first `\r`
    /// anywhere after it, provided one more byte (the `\n`) has arrived. With no `\r` in sight, a
    /// line already longer than `max_inline_len` is reported as `Err(())`.
    fn header_line(&mut self, buf: &[u8], start: usize) -> Result<Option<usize>, ()> {
        if start >= buf.len() {
            return Ok(None);
        }
        let from = self.scanned.max(start + 1);
        match memchr(b'\r', &buf[from..]) {
            Some(i) => {
                let cr = from + i;
                if cr + 1 < buf.len() {
                    Ok(Some(cr))
                } else {
                    self.scanned = cr;
                    Ok(None)
                }
            }
            None => {
                self.scanned = buf.len();
                if buf.len() - start > self.limits.max_inline_len {
                    Err(())
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn array_header(&mut self, buf: &mut BytesMut) -> Result<Step, FrameError> {
        if let Some((n, body)) = quick_header(buf, 0)
            && n > 0
            && n <= self.limits.max_args as u64
        {
            self.scanned = 0;
            return self.array_start(buf, n as usize, body);
        }
        let cr = match self.header_line(buf, 0) {
            Ok(Some(cr)) => cr,
            Ok(None) => return Ok(Step::NeedMore),
            Err(()) => return Err(self.fail("Protocol error: too big mbulk count string")),
        };
        self.scanned = 0;
        // Stricter than Redis, which does not look at the byte after '\r' (see the module doc).
        let n = match parse_i64(&buf[1..cr]) {
            Some(n) if buf[cr + 1] == b'\n' => n,
            _ => return Err(self.fail("Protocol error: invalid multibulk length")),
        };
        if n <= 0 {
            buf.advance(cr + 2);
            return Ok(Step::Skipped);
        }
        let n = n as u64;
        if n > self.limits.max_args.max(HARD_MAX_ARGS) as u64 {
            return Err(self.fail("Protocol error: invalid multibulk length"));
        }
        let n = n as usize;
        if n > self.limits.max_args {
            buf.advance(cr + 2);
            self.mode = Mode::Discard;
            self.left = n;
            self.bulk = None;
            self.scanned = 0;
            return Err(FrameError::limit(format!(
                "request has {n} arguments, over the limit of {} (limits.max_args)",
                self.limits.max_args
            )));
        }
        self.array_start(buf, n, cr + 2)
    }

    fn array_start(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        first: usize,
    ) -> Result<Step, FrameError> {
        self.mode = Mode::Array;
        self.pos = first;
        self.left = n;
        self.bulk = None;
        self.ranges.clear();
        self.array_body(buf)
    }

    /// Reads the `$<len>\r\n` header starting at `start`: `Some((len, offset of the body))`. The
    /// general path, for what `quick_header` does not answer; `len` is not yet checked against
    /// `max_bulk_len`.
    #[inline(never)]
    fn bulk_header(
        &mut self,
        buf: &[u8],
        start: usize,
    ) -> Result<Option<(usize, usize)>, FrameError> {
        let cr = match self.header_line(buf, start) {
            Ok(Some(cr)) => cr,
            Ok(None) => return Ok(None),
            Err(()) => return Err(self.fail("Protocol error: too big bulk count string")),
        };
        self.scanned = 0;
        if buf[start] != b'$' {
            // Redis prints the byte with %c; bytes past ASCII come out as their Latin-1 character.
            let got = char::from(buf[start]);
            return Err(self.fail(format!("Protocol error: expected '$', got '{got}'")));
        }
        let hard = self.limits.max_bulk_len.max(HARD_MAX_BULK_LEN) as u64;
        // Stricter than Redis about the byte after '\r' (see the module doc).
        match parse_i64(&buf[start + 1..cr]) {
            Some(len) if len >= 0 && len as u64 <= hard && buf[cr + 1] == b'\n' => {
                Ok(Some((len as usize, cr + 2)))
            }
            _ => Err(self.fail("Protocol error: invalid bulk length")),
        }
    }

    fn array_body(&mut self, buf: &mut BytesMut) -> Result<Step, FrameError> {
        // Progress lives in locals on this path and is written back only when more bytes are needed.
        let mut pos = self.pos;
        let mut left = self.left;
        let mut pending = self.bulk.take();
        loop {
            let len = match pending.take() {
                Some(len) => len,
                None => {
                    let quick = match buf.get(pos) {
                        Some(b'$') => quick_header(buf, pos)
                            .filter(|&(len, _)| len <= self.limits.max_bulk_len as u64),
                        _ => None,
                    };
                    let (len, body) = match quick {
                        Some((len, body)) => (len as usize, body),
                        None => match self.bulk_header(buf, pos)? {
                            Some(header) => header,
                            None => {
                                self.pos = pos;
                                self.left = left;
                                return Ok(Step::NeedMore);
                            }
                        },
                    };
                    if len > self.limits.max_bulk_len {
                        // The current bulk is discarded along with the ones after it.
                        buf.advance(body);
                        self.mode = Mode::Discard;
                        self.left = left;
                        self.bulk = Some(len);
                        self.pos = 0;
                        self.scanned = 0;
                        return Err(FrameError::limit(format!(
                            "argument of {len} bytes is over the limit of {} (limits.max_bulk_len)",
                            self.limits.max_bulk_len
                        )));
                    }
                    pos = body;
                    len
                }
            };
            let end = pos.saturating_add(len);
            if buf.len() < end.saturating_add(2) {
                self.pos = pos;
                self.left = left;
                self.bulk = Some(len);
                return Ok(Step::NeedMore);
            }
            // Redis skips these two bytes unread; we refuse anything but CRLF (see the module doc).
            if buf[end..end + 2] != *b"\r\n" {
                return Err(self.fail("Protocol error: bulk argument not followed by CRLF"));
            }
            self.ranges.push((pos, end));
            pos = end + 2;
            left -= 1;
            if left == 0 {
                break;
            }
        }
        let raw = buf.split_to(pos).freeze();
        let mut args = std::mem::take(&mut self.spare);
        args.extend(self.ranges.iter().map(|&(s, e)| raw.slice(s..e)));
        if self.ranges.capacity() > RANGES_KEEP {
            self.ranges = Vec::new();
        }
        self.reset();
        Ok(Step::Done(Request {
            args,
            raw: Some(raw),
        }))
    }

    /// Drops the rest of an over-limit array as it arrives, holding none of it. Only the framing is
    /// still checked, since a malformed tail means the stream is lost all the same.
    fn discard(&mut self, buf: &mut BytesMut) -> Result<Step, FrameError> {
        loop {
            if let Some(rest) = self.bulk {
                let take = rest.min(buf.len());
                buf.advance(take);
                let rest = rest - take;
                self.bulk = Some(rest);
                if rest > 0 || buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if buf[..2] != *b"\r\n" {
                    return Err(self.fail("Protocol error: bulk argument not followed by CRLF"));
                }
                buf.advance(2);
                self.bulk = None;
                self.left -= 1;
                if self.left == 0 {
                    self.reset();
                    return Ok(Step::Skipped);
                }
            }
            let Some((len, body)) = self.bulk_header(buf, 0)? else {
                return Ok(Step::NeedMore);
            };
            buf.advance(body);
            self.bulk = Some(len);
        }
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Step, FrameError> {
        // Like Redis, a line is complete at its '\n' however long it is; only an unfinished line is
        // held to max_inline_len.
        let nl = match memchr(b'\n', &buf[self.scanned..]) {
            Some(i) => self.scanned + i,
            None => {
                self.scanned = buf.len();
                if buf.len() > self.limits.max_inline_len {
                    return Err(self.fail("Protocol error: too big inline request"));
                }
                return Ok(Step::NeedMore);
            }
        };
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let Some(tokens) = split_args(&buf[..end]) else {
            return Err(self.fail("Protocol error: unbalanced quotes in request"));
        };
        let line = buf.split_to(nl + 1).freeze();
        self.reset();
        if tokens.is_empty() {
            return Ok(Step::Skipped);
        }
        let args = tokens
            .into_iter()
            .map(|t| match t {
                Token::Slice(s, e) => line.slice(s..e),
                Token::Owned(v) => Bytes::from(v),
            })
            .collect();
        Ok(Step::Done(Request { args, raw: None }))
    }
}

/// An inline argument: a plain word is a slice of the line; a quoted one had to be rebuilt.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Slice(usize, usize),
    Owned(Vec<u8>),
}

/// C's `isspace` in the "C" locale, which `sdssplitargs` uses to skip blanks and to check what follows
/// a closing quote.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Redis's `sdssplitargs`, byte for byte, except that a NUL byte is an ordinary character here
/// (in C it ends the string; Redis never reaches that case since its newline search stops at NUL
/// too). `None` is its "unbalanced quotes" failure.
fn split_args(line: &[u8]) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_c_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(tokens);
        }
        let start = i;
        let mut owned = None;
        // Only these four end an unquoted word, while the blanks skipped between words also include
        // \v and \f; that asymmetry is Redis's.
        while let Some(&c) = line.get(i) {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => break,
                b'"' | b'\'' => {
                    // A quote inside a word continues the same argument, and ends it.
                    let mut cur = line[start..i].to_vec();
                    i = if c == b'"' {
                        double_quoted(line, i + 1, &mut cur)?
                    } else {
                        single_quoted(line, i + 1, &mut cur)?
                    };
                    owned = Some(cur);
                    break;
                }
                _ => i += 1,
            }
        }
        tokens.push(match owned {
            Some(cur) => Token::Owned(cur),
            None => Token::Slice(start, i),
        });
    }
}

/// A closing quote must be followed by a blank or the end of the line.
fn closing_quote_ok(line: &[u8], after: usize) -> bool {
    line.get(after).is_none_or(|&b| is_c_space(b))
}

/// The body of a "double quoted" word starting at `i`; returns the offset just past the closing quote.
fn double_quoted(line: &[u8], mut i: usize, cur: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if line.get(i + 1) == Some(&b'x') => {
                let hex = line
                    .get(i + 2)
                    .and_then(|&h| hex_value(h))
                    .zip(line.get(i + 3).and_then(|&l| hex_value(l)));
                match hex {
                    Some((h, l)) => {
                        cur.push(h * 16 + l);
                        i += 4;
                    }
                    None => {
                        cur.push(b'x');
                        i += 2;
                    }
                }
            }
            b'\\' if i + 1 < line.len() => {
                cur.push(match line[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => b'\x08',
                    b'a' => b'\x07',
                    other => other,
                });
                i += 2;
            }
            b'"' => return closing_quote_ok(line, i + 1).then_some(i + 1),
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
}

/// The body of a 'single quoted' word starting at `i`, where only `\'` is an escape.
fn single_quoted(line: &[u8], mut i: usize, cur: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if line.get(i + 1) == Some(&b'\'') => {
                cur.push(b'\'');
                i += 2;
            }
            b'\'' => return closing_quote_ok(line, i + 1).then_some(i + 1),
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framer() -> Framer {
        Framer::new(Limits::default())
    }

    fn small_limits() -> Limits {
        Limits {
            max_args: 4,
            max_bulk_len: 8,
            max_inline_len: 32,
            ..Limits::default()
        }
    }

    fn args(req: &Request) -> Vec<&[u8]> {
        req.args.iter().map(|a| &a[..]).collect()
    }

    /// Frames everything in `input` delivered in one piece; errors end the run.
    fn frame_all(limits: Limits, input: &[u8]) -> (Vec<Result<Request, FrameError>>, BytesMut) {
        let mut f = Framer::new(limits);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match f.next(&mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.fatal;
                    out.push(Err(e));
                    if fatal {
                        break;
                    }
                }
            }
        }
        (out, buf)
    }

    /// Frames `input` delivered `chunk` bytes at a time, as a connection would.
    fn frame_chunked(
        limits: Limits,
        input: &[u8],
        chunk: usize,
    ) -> Vec<Result<Request, FrameError>> {
        let mut f = Framer::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match f.next(&mut buf) {
                    Ok(Some(r)) => out.push(Ok(r)),
                    Ok(None) => break,
                    Err(e) => {
                        let fatal = e.fatal;
                        out.push(Err(e));
                        if fatal {
                            return out;
                        }
                    }
                }
            }
        }
        out
    }

    fn one(input: &[u8]) -> Request {
        let (mut out, rest) = frame_all(Limits::default(), input);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(rest.is_empty(), "left over: {rest:?}");
        out.remove(0).unwrap()
    }

    fn inline(line: &str) -> Vec<Vec<u8>> {
        one(line.as_bytes())
            .args
            .iter()
            .map(|a| a.to_vec())
            .collect()
    }

    fn error(limits: Limits, input: &[u8]) -> FrameError {
        let (out, _) = frame_all(limits, input);
        match out.into_iter().find_map(|r| r.err()) {
            Some(e) => e,
            None => panic!("no error framing {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn fatal(input: &[u8]) -> String {
        let e = error(Limits::default(), input);
        assert!(e.fatal, "{e:?}");
        e.message
    }

    #[test]
    fn recycled_argument_vectors_start_empty() {
        let mut f = framer();
        let mut buf = BytesMut::from(
            &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..],
        );
        let first = f.next(&mut buf).unwrap().unwrap();
        let capacity = first.args.capacity();
        f.recycle(first.args);
        let second = f.next(&mut buf).unwrap().unwrap();
        assert_eq!(args(&second), [&b"GET"[..], b"k"]);
        assert_eq!(second.args.capacity(), capacity, "the vector was reused");
        // A huge vector is not kept for the life of the connection.
        f.recycle(Vec::with_capacity(RECYCLE_MAX_ARGS + 1));
        assert_eq!(f.spare.capacity(), 0);
    }

    #[test]
    fn frames_a_set_without_copying() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let req = one(input);
        assert_eq!(args(&req), [&b"SET"[..], b"key", b"value"]);
        let raw = req.raw.clone().unwrap();
        assert_eq!(&raw[..], input);
        let span = raw.as_ptr_range();
        for a in &req.args {
            assert!(
                span.contains(&a.as_ptr()),
                "argument copied out of the request"
            );
        }
    }

    #[test]
    fn pipeline_leaves_the_partial_tail() {
        let mut f = framer();
        let mut buf = BytesMut::from(
            &b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET"[..],
        );
        assert_eq!(args(&f.next(&mut buf).unwrap().unwrap()), [&b"PING"[..]]);
        assert_eq!(
            args(&f.next(&mut buf).unwrap().unwrap()),
            [&b"GET"[..], b"a"]
        );
        assert_eq!(f.next(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"*2\r\n$3\r\nGET");
        buf.extend_from_slice(b"\r\n$1\r\nb\r\n");
        assert_eq!(
            args(&f.next(&mut buf).unwrap().unwrap()),
            [&b"GET"[..], b"b"]
        );
        assert!(buf.is_empty());
        assert_eq!(f.next(&mut buf), Ok(None));
    }

    #[test]
    fn binary_and_empty_arguments() {
        let req = one(b"*4\r\n$3\r\nSET\r\n$0\r\n\r\n$6\r\na\r\n\0\nb\r\n$2\r\n\r\n\r\n");
        assert_eq!(args(&req), [&b"SET"[..], b"", b"a\r\n\0\nb", b"\r\n"]);
    }

    #[test]
    fn every_prefix_waits_and_nothing_is_consumed() {
        let input = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
        for cut in 0..input.len() {
            let mut f = framer();
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(f.next(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&input[cut..]);
            assert_eq!(
                args(&f.next(&mut buf).unwrap().unwrap()),
                [&b"GET"[..], b"0123456789"]
            );
        }
    }

    #[test]
    fn empty_requests_are_skipped() {
        let (out, rest) = frame_all(
            Limits::default(),
            b"*0\r\n*-1\r\n*-7\r\n\r\n\n   \t \r\n*1\r\n$4\r\nPING\r\n",
        );
        assert!(rest.is_empty());
        assert_eq!(out.len(), 1);
        assert_eq!(args(out[0].as_ref().unwrap()), [&b"PING"[..]]);
    }

    #[test]
    fn byte_at_a_time_matches_one_shot() {
        let input: &[u8] = b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n\
            PING\r\n\
            set \"a b\" 'c d' e\n\
            *0\r\n\
            *3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n\r\n\r\n\r\n\
            \r\n\
            *1\r\n$4\r\nQUIT\r\n";
        let (whole, rest) = frame_all(Limits::default(), input);
        assert!(rest.is_empty());
        assert_eq!(whole.len(), 5);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                frame_chunked(Limits::default(), input, chunk),
                whole,
                "chunk {chunk}"
            );
        }
        let inline = whole[2].as_ref().unwrap();
        assert_eq!(inline.raw, None);
        assert_eq!(args(inline), [&b"set"[..], b"a b", b"c d", b"e"]);
    }

    #[test]
    fn large_bulk_in_chunks_is_not_rescanned() {
        let body = vec![b'x'; 1 << 20];
        let mut input = b"*2\r\n$3\r\nSET\r\n$1048576\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n");
        let mut f = framer();
        let mut buf = BytesMut::new();
        let mut got = None;
        for piece in input.chunks(4096) {
            buf.extend_from_slice(piece);
            if let Some(r) = f.next(&mut buf).unwrap() {
                got = Some(r);
            } else if buf.len() > 30 {
                assert_eq!(f.needed_len(), Some(input.len()));
            }
        }
        let req = got.unwrap();
        assert_eq!(req.args[1].len(), body.len());
        assert_eq!(f.needed_len(), None);
    }

    #[test]
    fn fatal_multibulk_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"* 1\r\n",
            b"*-0\r\n",
            b"*1 \r\n",
            b"*1048577\r\n",
            b"*99999999999999999999\r\n",
            b"*1\rx$4\r\nPING\r\n",
        ] {
            assert_eq!(
                fatal(bad),
                "Protocol error: invalid multibulk length",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fatal_bulk_errors() {
        assert_eq!(
            fatal(b"*1\r\n+PING\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            fatal(b"*2\r\n$1\r\na\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        for bad in [
            &b"*1\r\n$x\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$4\rxPING\r\n",
        ] {
            assert_eq!(fatal(bad), "Protocol error: invalid bulk length", "{bad:?}");
        }
        // Exactly Redis's hard limit is a valid header.
        let mut f = framer();
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
        assert_eq!(f.next(&mut buf), Ok(None));
        assert_eq!(
            fatal(b"*1\r\n$4\r\nPINGxx"),
            "Protocol error: bulk argument not followed by CRLF"
        );
    }

    #[test]
    fn too_long_header_lines() {
        let limits = small_limits();
        let mut long = b"*".to_vec();
        long.extend_from_slice(&[b'1'; 32]);
        let e = error(limits, &long);
        assert_eq!(e.message, "Protocol error: too big mbulk count string");
        assert!(e.fatal);
        // At the limit it still waits for the CR, as Redis does.
        assert_eq!(frame_all(limits, &long[..32]).0, []);

        let mut long = b"*1\r\n$".to_vec();
        long.extend_from_slice(&[b'1'; 32]);
        assert_eq!(
            error(limits, &long).message,
            "Protocol error: too big bulk count string"
        );
        assert_eq!(frame_all(limits, &long[..4 + 32]).0, []);
    }

    #[test]
    fn too_long_inline_request() {
        let limits = small_limits();
        let e = error(limits, &[b'a'; 33]);
        assert_eq!(e.message, "Protocol error: too big inline request");
        assert!(e.fatal);
        assert_eq!(frame_all(limits, &[b'a'; 32]).0, []);
        // A complete line is taken however long, as Redis does.
        let mut line = vec![b'a'; 100];
        line.push(b'\n');
        let (out, _) = frame_all(limits, &line);
        assert_eq!(out[0].as_ref().unwrap().args[0].len(), 100);
    }

    #[test]
    fn fatal_errors_stick() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"*x\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let e = f.next(&mut buf).unwrap_err();
        assert!(e.fatal);
        assert_eq!(f.next(&mut buf), Err(e));
    }

    #[test]
    fn too_many_arguments_is_recoverable() {
        let limits = small_limits();
        let mut f = Framer::new(limits);
        let mut buf = BytesMut::from(&b"*5\r\n"[..]);
        let e = f.next(&mut buf).unwrap_err();
        assert_eq!(
            e,
            FrameError {
                message: "request has 5 arguments, over the limit of 4 (limits.max_args)".into(),
                fatal: false,
            }
        );
        assert!(buf.is_empty());
        let rest = b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n*1\r\n$4\r\nPING\r\n";
        let mut got = Vec::new();
        for &b in rest {
            buf.extend_from_slice(&[b]);
            if let Some(r) = f.next(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(args(&got[0]), [&b"PING"[..]]);
        assert_eq!(got[0].raw.as_deref(), Some(&b"*1\r\n$4\r\nPING\r\n"[..]));
    }

    #[test]
    fn oversized_bulk_is_refused_before_it_arrives_and_never_buffered() {
        let limits = small_limits();
        let mut f = Framer::new(limits);
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$9\r\n"[..]);
        let e = f.next(&mut buf).unwrap_err();
        assert_eq!(
            e.message,
            "argument of 9 bytes is over the limit of 8 (limits.max_bulk_len)"
        );
        assert!(!e.fatal);
        assert!(buf.is_empty());
        for piece in [
            &b"1234"[..],
            b"56789",
            b"\r",
            b"\n$2\r",
            b"\nab",
            b"\r\n*1\r\n$4\r\nPING\r\n",
        ] {
            buf.extend_from_slice(piece);
            match f.next(&mut buf).unwrap() {
                None => assert!(buf.len() <= 4, "{buf:?} held while discarding"),
                Some(r) => {
                    assert_eq!(args(&r), [&b"PING"[..]]);
                    assert!(buf.is_empty());
                }
            }
        }
    }

    #[test]
    fn limits_at_the_boundary_are_accepted() {
        let (out, _) = frame_all(
            small_limits(),
            b"*4\r\n$8\r\n12345678\r\n$0\r\n\r\n$1\r\na\r\n$1\r\nb\r\n",
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
    }

    #[test]
    fn malformed_tail_while_discarding_is_fatal() {
        let (out, _) = frame_all(small_limits(), b"*5\r\n$1\r\na\r\n+oops\r\n");
        assert!(!out[0].as_ref().unwrap_err().fatal);
        assert_eq!(
            out[1].as_ref().unwrap_err().message,
            "Protocol error: expected '$', got '+'"
        );
        let (out, _) = frame_all(small_limits(), b"*1\r\n$9\r\n123456789xx");
        assert_eq!(
            out[1].as_ref().unwrap_err().message,
            "Protocol error: bulk argument not followed by CRLF"
        );
        assert!(out[1].as_ref().unwrap_err().fatal);
    }

    #[test]
    fn over_redis_hard_limits_is_fatal_even_with_lower_configured_limits() {
        let e = error(small_limits(), b"*1048577\r\n");
        assert!(e.fatal);
        assert_eq!(e.message, "Protocol error: invalid multibulk length");
        let e = error(small_limits(), b"*1\r\n$536870913\r\n");
        assert!(e.fatal);
        assert_eq!(e.message, "Protocol error: invalid bulk length");
    }

    #[test]
    fn configured_limits_above_redis_hard_limits_are_honoured() {
        let limits = Limits {
            max_args: 2 * 1024 * 1024,
            ..Limits::default()
        };
        let mut f = Framer::new(limits);
        let mut buf = BytesMut::from(&b"*1048577\r\n"[..]);
        assert_eq!(f.next(&mut buf), Ok(None));
    }

    #[test]
    fn inline_words() {
        assert_eq!(inline("PING\r\n"), [b"PING".to_vec()]);
        assert_eq!(
            inline("  set   a\tb  \n"),
            [b"set".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        // \v and \f separate words only as leading blanks: inside a word they are part of it.
        assert_eq!(
            inline("\x0bget a\x0bb\x0c\r\n"),
            [b"get".to_vec(), b"a\x0bb\x0c".to_vec()]
        );
        // A CR inside the line ends a word; only the one before the LF is the line ending.
        assert_eq!(
            inline("get a\rb\r\r\n"),
            [b"get".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(inline("get a\0b\n"), [b"get".to_vec(), b"a\0b".to_vec()]);
    }

    #[test]
    fn inline_quoting_like_sdssplitargs() {
        assert_eq!(
            inline("set \"a b\" c\n"),
            [b"set".to_vec(), b"a b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            inline("\"\\x41\\x4a\\x4b\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n"),
            [b"AJK\n\r\t\x08\x07\\\"q".to_vec()]
        );
        // An invalid hex escape is an escaped 'x' followed by the rest as it is.
        assert_eq!(
            inline("\"\\xZZ\" \"\\x4\"\n"),
            [b"xZZ".to_vec(), b"x4".to_vec()]
        );
        assert_eq!(
            inline("'it\\'s' 'a\\nb' '\\\\a'\n"),
            [b"it's".to_vec(), b"a\\nb".to_vec(), b"\\\\a".to_vec()]
        );
        assert_eq!(inline("\"\" ''\n"), [b"".to_vec(), b"".to_vec()]);
        // A quote inside a word continues that word, and its closing quote ends it.
        assert_eq!(
            inline("foo\"bar baz\" x\n"),
            [b"foobar baz".to_vec(), b"x".to_vec()]
        );
        assert_eq!(inline("a'b c'\n"), [b"ab c".to_vec()]);
        // A closing quote followed by \v or \f is fine: isspace() accepts them.
        assert_eq!(inline("\"a\"\x0bb\n"), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(inline("\"a\"\r\n"), [b"a".to_vec()]);
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for bad in [
            &b"set \"a\n"[..],
            b"set \"a\"b\n",
            b"set 'a'b\n",
            b"set 'a\n",
            b"\"\\\"\n",
            b"'\\'\n",
            b"\"a\\\n",
            b"\"a\"\"b\"\n",
        ] {
            assert_eq!(
                fatal(bad),
                "Protocol error: unbalanced quotes in request",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn inline_plain_words_are_slices_of_the_line() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"GET key\r\n"[..]);
        let req = f.next(&mut buf).unwrap().unwrap();
        assert_eq!(args(&req), [&b"GET"[..], b"key"]);
        assert!(buf.is_empty());
    }

    fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
        use redis_protocol::resp2::{
            encode::encode,
            types::{OwnedFrame, Resp2Frame},
        };
        let frame = OwnedFrame::Array(args.iter().cloned().map(OwnedFrame::BulkString).collect());
        let mut out = vec![0; frame.encode_len(false)];
        let n = encode(&mut out, &frame, false).unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn binary() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$'), Just(b'*')],
                0..8
            ),
            proptest::collection::vec(any::<u8>(), 0..3000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// redis-protocol's encoder is the oracle: whatever it encodes, split anywhere, frames back to
        /// the same arguments with the same raw bytes.
        #[test]
        fn encoded_requests_frame_back_in_any_chunking(
            requests in proptest::collection::vec(proptest::collection::vec(binary(), 1..8), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let encoded: Vec<Vec<u8>> = requests.iter().map(|r| encode_request(r)).collect();
            let stream = encoded.concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();

            let mut f = framer();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&stream[fed..cut]);
                fed = cut;
                while let Some(r) = f.next(&mut buf).unwrap() {
                    got.push(r);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got.len(), requests.len());
            for ((req, want), raw) in got.iter().zip(&requests).zip(&encoded) {
                prop_assert_eq!(&req.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), want);
                prop_assert_eq!(req.raw.as_deref(), Some(&raw[..]));
            }
        }

        /// Whatever the bytes, chunked and one-shot framing agree, and nothing panics. (Lines are
        /// allowed to be longer than the input: how long an unfinished line may get before it is
        /// refused depends on how much of it has arrived, in Redis as here.)
        #[test]
        fn arbitrary_bytes_chunked_like_whole(
            input in proptest::collection::vec(
                prop_oneof![
                    4 => any::<u8>(),
                    1 => prop::sample::select(&b"*$\r\n0123456789-\"' "[..]),
                ],
                0..200,
            ),
            chunk in 1usize..17,
        ) {
            let limits = Limits { max_inline_len: 1000, ..small_limits() };
            let (whole, _) = frame_all(limits, &input);
            prop_assert_eq!(frame_chunked(limits, &input, chunk), whole);
        }
    }
}

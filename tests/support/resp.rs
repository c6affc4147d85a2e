//! A blocking raw RESP connection and the byte helpers around it, and replies decoded
//! ([`Value`]) for the tests that look inside them. Replies are framed by
//! redis-protocol, the independent oracle, never by respite's own protocol code, so a framing bug
//! in respite cannot hide in its tests.
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A blocking raw RESP connection: send bytes, read back whole replies as the exact bytes sent.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn connect_unix(path: &Path) -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::connect(path).unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Send one command as a RESP array.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply().expect("a reply")
    }

    /// The next whole reply, as raw bytes (decoded by redis-protocol, the independent oracle).
    /// `None` when the peer closed the connection.
    pub fn reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(len) = frame_len(&self.buf) {
                return Some(self.buf.split_to(len).to_vec());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    /// The next whole reply if one comes within `limit`; `None` if none does (or the peer
    /// closed). The connection's usual read timeout is restored after.
    pub fn reply_within(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + limit;
        let result = loop {
            if let Some(len) = frame_len(&self.buf) {
                break Some(self.buf.split_to(len).to_vec());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break None,
                Err(e) => panic!("reading a reply: {e}"),
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        result
    }

    /// Exactly `out.len()` bytes, buffered ones first, unframed: for replies the oracle cannot
    /// frame (it recurses, so a reply nested thousands deep overflows a test thread's stack).
    pub fn read_exact_raw(&mut self, out: &mut [u8]) {
        let from_buf = self.buf.len().min(out.len());
        out[..from_buf].copy_from_slice(&self.buf.split_to(from_buf));
        self.stream.read_exact(&mut out[from_buf..]).unwrap();
    }

    /// True when the peer has closed the connection (after any replies still buffered).
    pub fn closed(&mut self) -> bool {
        self.reply().is_none()
    }
}

/// The length of the complete reply at the front of `buf`, by redis-protocol's decoders (RESP3's,
/// then RESP2's for the `$-1`/`*-1` nulls RESP3's decoder does not take). Panics on garbage.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.is_empty() {
        return None;
    }
    match redis_protocol::resp3::decode::complete::decode(buf) {
        Ok(r) => r.map(|(_, len)| len),
        Err(e3) => match redis_protocol::resp2::decode::decode(buf) {
            Ok(r) => r.map(|(_, len)| len),
            Err(e2) => panic!(
                "malformed reply {:?}: {e3:?} / {e2:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ),
        },
    }
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A bulk string reply holding `v`, as the bytes on the wire.
pub fn bulk(v: impl AsRef<[u8]>) -> Vec<u8> {
    let v = v.as_ref();
    [format!("${}\r\n", v.len()).as_bytes(), v, b"\r\n"].concat()
}

/// A reply as text, whole (lossy UTF-8), for assertions and messages.
pub fn text(reply: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(reply.as_ref()).into_owned()
}

/// A RESP2 reply decoded, for the tests that look inside one rather than compare its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Simple(String),
    Err(String),
    Arr(Vec<Value>),
}

impl Value {
    /// `reply`, one whole RESP2 reply (as [`Raw::reply`] returns), decoded by redis-protocol,
    /// the oracle. Panics on anything else.
    pub fn decode(reply: &[u8]) -> Value {
        use redis_protocol::resp2::types::OwnedFrame as F;
        fn value(f: F) -> Value {
            match f {
                F::Null => Value::Nil,
                F::Integer(i) => Value::Int(i),
                F::BulkString(b) => Value::Bulk(b),
                F::SimpleString(s) => Value::Simple(String::from_utf8_lossy(&s).into_owned()),
                F::Error(e) => Value::Err(e),
                F::Array(items) => Value::Arr(items.into_iter().map(value).collect()),
            }
        }
        match redis_protocol::resp2::decode::decode(reply) {
            Ok(Some((f, len))) if len == reply.len() => value(f),
            r => panic!("not one whole RESP2 reply ({r:?}): {:?}", text(reply)),
        }
    }
}

/// Split a command line on spaces (for readable test tables; no quoting).
pub fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.as_bytes())
        .collect()
}

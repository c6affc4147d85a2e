//! Encoders for the replies respite writes itself, in the client's protocol.
//!
//! Forwarded replies never pass through here: they are copied as the upstream sent them. These
//! helpers append to an output buffer so a session can batch many replies into one write.
use super::Protocol;
use bytes::{BufMut, BytesMut};

pub fn simple(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 3);
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// An error reply; `msg` carries its own code (`ERR …`, `NOAUTH …`, `WRONGPASS …`).
/// CR and LF inside the message would break framing, so they become spaces.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    for &b in msg.as_bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, n: i64) {
    let mut digits = [0u8; 20];
    out.put_u8(kind);
    out.put_slice(decimal(n, &mut digits));
    out.put_slice(b"\r\n");
}

pub fn integer(out: &mut BytesMut, n: i64) {
    header(out, b':', n);
}

pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    header(out, b'$', data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A verbatim string (`=`) in RESP3, a plain bulk string in RESP2, as Redis's `addReplyVerbatim`.
pub fn verbatim(out: &mut BytesMut, proto: Protocol, format: &str, data: &[u8]) {
    match proto {
        Protocol::Resp2 => bulk(out, data),
        Protocol::Resp3 => {
            header(out, b'=', (data.len() + 4) as i64);
            out.put_slice(format.as_bytes());
            out.put_u8(b':');
            out.put_slice(data);
            out.put_slice(b"\r\n");
        }
    }
}

/// The null reply: `$-1` in RESP2, `_` in RESP3.
pub fn null(out: &mut BytesMut, proto: Protocol) {
    match proto {
        Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
        Protocol::Resp3 => out.put_slice(b"_\r\n"),
    }
}

pub fn array_header(out: &mut BytesMut, n: usize) {
    header(out, b'*', n as i64);
}

/// A map header: `%n` in RESP3, an array of 2n elements in RESP2.
pub fn map_header(out: &mut BytesMut, proto: Protocol, pairs: usize) {
    match proto {
        Protocol::Resp2 => header(out, b'*', 2 * pairs as i64),
        Protocol::Resp3 => header(out, b'%', pairs as i64),
    }
}

/// Encode a command as a RESP array of bulk strings, for forwarding inline requests.
pub fn command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    array_header(out, args.len());
    for a in args {
        bulk(out, a.as_ref());
    }
}

/// Format `n` in decimal into `buf` (avoids `format!` on the reply path).
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut u = n.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_bulks() {
        let mut out = BytesMut::new();
        integer(&mut out, -42);
        integer(&mut out, i64::MIN);
        bulk(&mut out, b"a\r\nb");
        null(&mut out, Protocol::Resp2);
        null(&mut out, Protocol::Resp3);
        assert_eq!(
            &out[..],
            b":-42\r\n:-9223372036854775808\r\n$4\r\na\r\nb\r\n$-1\r\n_\r\n"
        );
    }

    #[test]
    fn error_cannot_break_framing() {
        let mut out = BytesMut::new();
        error(&mut out, "ERR bad\r\nthing");
        assert_eq!(&out[..], b"-ERR bad  thing\r\n");
    }

    #[test]
    fn verbatim_and_maps_follow_protocol() {
        let mut out = BytesMut::new();
        verbatim(&mut out, Protocol::Resp3, "txt", b"hi");
        map_header(&mut out, Protocol::Resp2, 2);
        map_header(&mut out, Protocol::Resp3, 2);
        assert_eq!(&out[..], b"=6\r\ntxt:hi\r\n*4\r\n%2\r\n");
    }
}

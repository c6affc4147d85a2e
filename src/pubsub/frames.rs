//! The frames a subscriber gets, encoded for its protocol: pushes (`>`) in RESP3, arrays in
//! RESP2, exactly as Redis sends them. Encoding only; who gets what is the hub's business.
use crate::protocol::{Protocol, encode};
use bytes::{Bytes, BytesMut};

fn header(out: &mut BytesMut, proto: Protocol, n: usize) {
    match proto {
        Protocol::Resp2 => encode::array_header(out, n),
        Protocol::Resp3 => {
            out.extend_from_slice(format!(">{n}\r\n").as_bytes());
        }
    }
}

/// `message`/`smessage` (channel, payload) or `pmessage` (pattern, channel, payload).
pub(crate) fn message(proto: Protocol, kind: &[u8], names: &[&[u8]], payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + kind.len() + payload.len() + names.len() * 16);
    header(&mut out, proto, 2 + names.len());
    encode::bulk(&mut out, kind);
    for n in names {
        encode::bulk(&mut out, n);
    }
    encode::bulk(&mut out, payload);
    out.freeze()
}

/// A (un)subscribe confirmation: kind, name (null for an UNSUBSCRIBE of nothing), count.
pub(crate) fn confirmation(
    proto: Protocol,
    kind: &str,
    name: Option<&[u8]>,
    count: usize,
) -> Bytes {
    let mut out = BytesMut::new();
    header(&mut out, proto, 3);
    encode::bulk(&mut out, kind.as_bytes());
    match name {
        Some(n) => encode::bulk(&mut out, n),
        None => encode::null(&mut out, proto),
    }
    encode::integer(&mut out, count as i64);
    out.freeze()
}

/// PING's reply in RESP2 subscribed mode: `["pong", message]`.
pub(crate) fn pong(message: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, b"pong");
    encode::bulk(&mut out, message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_redis_sends_them() {
        assert_eq!(
            &confirmation(Protocol::Resp2, "subscribe", Some(b"ch"), 1)[..],
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        );
        assert_eq!(
            &confirmation(Protocol::Resp3, "unsubscribe", None, 0)[..],
            b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"
        );
        assert_eq!(
            &message(Protocol::Resp2, b"pmessage", &[b"c*", b"ch"], b"hi")[..],
            b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert_eq!(&pong(b"")[..], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    }
}

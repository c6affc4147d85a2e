//! Alignment markers: proof, per batch, that the replies read from a shared connection still pair
//! with the commands written to it.
//!
//! One extra reply from the upstream (a bug, a proxy in between, a stray `CLIENT REPLY`) would
//! shift every later reply onto the wrong request, and on a connection shared by many clients that
//! hands one client another's data. So the connection's writer ends each batch with
//! `PING <nonce><seq>`, and its reader holds the batch's replies until that marker's own echo comes
//! back exactly where it is due; anything else means the pairing is in doubt, and the connection is
//! failed with no held reply delivered. The nonce is random per connection so no client can
//! forge the echo by storing it as a value; the sequence number catches a reply lost or repeated
//! between two batches.
//!
//! It costs one small command per batch (not per command), and the upstream answers it without
//! touching the keyspace. This module must never decide what happens to the replies it vouches
//! for; the connection's reader does.
use bytes::BytesMut;

/// The marker's argument: a 16-digit hex nonce, then a 16-digit hex sequence number.
const ARG_LEN: usize = 32;

/// Both ends of one connection's markers: the writer's next marker and the reader's next
/// expected echo, each counting from 0 on a new connection.
#[derive(Clone, Copy)]
pub(super) struct Markers {
    nonce: u64,
    seq: u64,
}

impl Markers {
    /// A fresh series for a new connection.
    pub fn new() -> Markers {
        Markers {
            nonce: rand::random(),
            seq: 0,
        }
    }

    fn arg(&self) -> [u8; ARG_LEN] {
        let mut arg = [0u8; ARG_LEN];
        hex(&mut arg[..16], self.nonce);
        hex(&mut arg[16..], self.seq);
        arg
    }

    /// Append the next marker command to a batch.
    pub fn append(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b"*2\r\n$4\r\nPING\r\n$32\r\n");
        out.extend_from_slice(&self.arg());
        out.extend_from_slice(b"\r\n");
        self.seq += 1;
    }

    /// Whether `reply` (one whole reply) is the next marker's echo, or the refusal the server
    /// gives every command for a while (a script running, a dataset loading, a replica cut off
    /// from its primary; or an ACL that does not allow PING): the commands around it got the
    /// same, and no echo can be had then. The series moves on either way.
    pub fn check(&mut self, reply: &[u8]) -> bool {
        const REFUSE_ALL: &[&[u8]] = &[b"-BUSY ", b"-LOADING ", b"-MASTERDOWN ", b"-NOPERM "];
        let arg = self.arg();
        self.seq += 1;
        if REFUSE_ALL.iter().any(|p| reply.starts_with(p)) {
            return true;
        }
        reply.len() == ARG_LEN + 7
            && reply.starts_with(b"$32\r\n")
            && reply[5..5 + ARG_LEN] == arg
            && reply.ends_with(b"\r\n")
    }
}

fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_pass_in_order_and_nothing_else_does() {
        let mut w = Markers::new();
        let mut r = w;
        let mut out = BytesMut::new();
        w.append(&mut out);
        w.append(&mut out);
        // The upstream's echo of a PING with an argument is that argument as a bulk string.
        let first = &out[..out.len() / 2];
        let arg = &first[first.len() - 34..first.len() - 2];
        let echo = |arg: &[u8]| [b"$32\r\n", arg, b"\r\n"].concat();
        assert!(r.check(&echo(arg)));
        // The second marker's echo is not the first's: a repeated reply fails.
        assert!(!r.check(&echo(arg)));
        // Another connection's series never matches.
        let mut other = Markers::new();
        other.nonce = r.nonce.wrapping_add(1);
        assert!(!other.check(&echo(&w.arg())));
        assert!(!r.check(b"+OK\r\n"));
        assert!(!r.check(b"-ERR wrong\r\n"));
        // A server refusing every command answers the marker so too.
        assert!(r.check(b"-BUSY Redis is busy running a script.\r\n"));
    }

    #[test]
    fn the_marker_is_a_well_formed_ping() {
        let mut m = Markers::new();
        m.nonce = 0x0123_4567_89ab_cdef;
        let mut out = BytesMut::new();
        m.append(&mut out);
        assert_eq!(
            &out[..],
            b"*2\r\n$4\r\nPING\r\n$32\r\n0123456789abcdef0000000000000000\r\n"
        );
    }
}

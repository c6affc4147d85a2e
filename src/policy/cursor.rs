//! SCAN cursors as a prefixed tenant sees them: the upstream's cursor under a keyed permutation of
//! the 64-bit numbers, so the cursor no longer shows the position in (hence the size of) the
//! upstream's hash table, which holds every tenant's keys.
//!
//! A four-round Feistel network over two 32-bit halves, its round function SHA-256 of a key drawn
//! at start-up, the tenant's prefix, the round and the half: a bijection, so every cursor respite
//! hands out maps back to exactly the upstream's. `0` (start and end of an iteration) stays `0`;
//! the one other number the network would send to `0` takes `0`'s image instead. Must never be
//! read as confidentiality of the keys themselves: it hides a number, and the number of calls a
//! full iteration takes still grows with the upstream's keyspace. Cursors do not survive a
//! restart of respite, nor pass between two respite processes (the key is per process).
use std::sync::OnceLock;

use super::sha256;

const ROUNDS: u8 = 4;

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn round(prefix: &[u8], i: u8, half: u32) -> u32 {
    let mut input = Vec::with_capacity(32 + prefix.len() + 5);
    input.extend_from_slice(key());
    input.extend_from_slice(prefix);
    input.push(i);
    input.extend_from_slice(&half.to_le_bytes());
    let d = sha256::digest(&input);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

fn forward(prefix: &[u8], x: u64) -> u64 {
    let (mut l, mut r) = ((x >> 32) as u32, x as u32);
    for i in 0..ROUNDS {
        (l, r) = (r, l ^ round(prefix, i, r));
    }
    u64::from(l) << 32 | u64::from(r)
}

fn backward(prefix: &[u8], y: u64) -> u64 {
    let (mut l, mut r) = ((y >> 32) as u32, y as u32);
    for i in (0..ROUNDS).rev() {
        (l, r) = (r ^ round(prefix, i, l), l);
    }
    u64::from(l) << 32 | u64::from(r)
}

/// The cursor to show the tenant for the upstream's `cursor`.
fn seal_u64(prefix: &[u8], cursor: u64) -> u64 {
    if cursor == 0 {
        return 0;
    }
    match forward(prefix, cursor) {
        0 => forward(prefix, 0),
        y => y,
    }
}

/// The upstream's cursor for the tenant's `cursor`; inverse of [`seal_u64`].
fn open_u64(prefix: &[u8], cursor: u64) -> u64 {
    if cursor == 0 {
        return 0;
    }
    if cursor == forward(prefix, 0) {
        return backward(prefix, 0);
    }
    backward(prefix, cursor)
}

fn map(text: &[u8], f: impl Fn(u64) -> u64) -> Option<bytes::Bytes> {
    let n: u64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some(bytes::Bytes::from(f(n).to_string()))
}

/// The upstream's cursor in a SCAN reply, as the tenant will see it. Text that is not a cursor is
/// kept as it is.
pub(super) fn seal(prefix: &[u8], cursor: &[u8]) -> bytes::Bytes {
    map(cursor, |n| seal_u64(prefix, n)).unwrap_or_else(|| bytes::Bytes::copy_from_slice(cursor))
}

/// The tenant's SCAN cursor, as the upstream must see it. Text that is not a cursor is passed on
/// for the upstream to refuse in its own words.
pub(super) fn open(prefix: &[u8], cursor: &bytes::Bytes) -> bytes::Bytes {
    map(cursor, |n| open_u64(prefix, n)).unwrap_or_else(|| cursor.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bijection_that_keeps_zero() {
        let p = b"t:";
        assert_eq!(seal_u64(p, 0), 0);
        let zero_from = backward(p, 0);
        assert_eq!(seal_u64(p, zero_from), forward(p, 0));
        assert_eq!(open_u64(p, forward(p, 0)), zero_from);
        for x in (1..2000u64).chain([u64::MAX, 1 << 40, zero_from]) {
            let y = seal_u64(p, x);
            assert_ne!(y, 0);
            assert_eq!(open_u64(p, y), x, "{x}");
        }
        // Small upstream cursors do not come out small, and tenants' cursors differ.
        assert!(seal_u64(p, 17) > 1 << 20 || seal_u64(p, 17) != 17);
        assert_ne!(seal_u64(p, 17), seal_u64(b"u:", 17));
        assert_eq!(&seal(p, b"0")[..], b"0");
        assert_eq!(&open(p, &seal(p, b"17"))[..], b"17");
        assert_eq!(&open(p, &bytes::Bytes::from_static(b"x1"))[..], b"x1");
    }
}

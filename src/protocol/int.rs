//! Integers on the wire: the length and count lines of RESP, and integer arguments.
//!
//! One parser with Redis's own rules (`string2ll`) for the framer, the reply scanner, the reply
//! reader and every command argument that must be a number, so respite accepts exactly the
//! integers Redis accepts. Nothing here allocates.

/// The common case of a length line, `<type><digits>\r\n` with 1 to 18 digits and no leading zero,
/// read in one pass: `(value, offset just past the CRLF)`. Everything else (`None`), including lines
/// not complete yet, takes the general path, which agrees with this one wherever this one answers.
#[inline]
pub(crate) fn quick_header(buf: &[u8], start: usize) -> Option<(u64, usize)> {
    let digits = buf.get(start + 1..)?;
    let (&first, _) = digits.split_first()?;
    if !first.is_ascii_digit() {
        return None;
    }
    let mut v = u64::from(first - b'0');
    // 18 digits cannot overflow; a leading zero is only valid as the whole number.
    let most = if first == b'0' { 1 } else { 18 };
    for (i, &c) in digits.iter().enumerate().skip(1).take(most) {
        match c {
            b'0'..=b'9' => v = v * 10 + u64::from(c - b'0'),
            b'\r' if digits.get(i + 1) == Some(&b'\n') => return Some((v, start + i + 3)),
            _ => return None,
        }
    }
    None
}

/// Redis's `string2ll`: optional '-', no '+', no leading zeros, no blanks, fewer than 21 bytes, and
/// within `i64`. Hand-rolled because it runs on every header of every request and reply; inline
/// because it left the framer's module (and so, maybe, its codegen unit) for this one.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (&first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &c in rest {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memchr::memchr;
    use proptest::prelude::*;

    #[test]
    fn string2ll_rules() {
        for (s, v) in [
            (&b"0"[..], Some(0)),
            (b"7", Some(7)),
            (b"-7", Some(-7)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"", None),
            (b"-", None),
            (b"-0", None),
            (b"00", None),
            (b"01", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1a", None),
            (b"18446744073709551616", None),
            (b"000000000000000000001", None),
        ] {
            assert_eq!(parse_i64(s), v, "{:?}", String::from_utf8_lossy(s));
        }
    }

    proptest! {
        /// The one-pass header reader answers only where the general path would, and the same.
        #[test]
        fn quick_header_agrees_with_string2ll(
            line in proptest::collection::vec(prop::sample::select(&b"0123456789-\r\nx"[..]), 0..24),
        ) {
            let mut buf = b"$".to_vec();
            buf.extend_from_slice(&line);
            if let Some((v, next)) = quick_header(&buf, 0) {
                let cr = memchr(b'\r', &buf).unwrap();
                prop_assert_eq!(next, cr + 2);
                prop_assert_eq!(&buf[cr..next], b"\r\n");
                prop_assert_eq!(parse_i64(&buf[1..cr]), Some(v as i64));
            }
        }
    }
}

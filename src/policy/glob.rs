//! Redis glob patterns: matching (for TTL rules) and escaping (for a prefix entering a pattern).
//!
//! The matcher is a port of Redis 7.0's `stringmatchlen` (util.c), quirks included, so a TTL rule
//! selects exactly the keys `KEYS <pattern>` would list. Escaping is what confines KEYS, SCAN and
//! PSUBSCRIBE patterns: every byte that is special anywhere in a pattern gets a backslash, so the
//! escaped prefix matches only itself and the client's part of the pattern cannot reach back into it.
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes with a meaning somewhere in a Redis glob. `^` and `-` only mean something inside `[...]`,
/// which an escaped `[` can never open, but escaping them too costs nothing and survives changes.
fn special(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-')
}

/// `prefix` as a pattern that matches exactly `prefix`.
pub fn escape(prefix: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() * 2);
    escape_into(&mut out, prefix);
    out.freeze()
}

pub fn escape_into(out: &mut BytesMut, prefix: &[u8]) {
    for &b in prefix {
        if special(b) {
            out.put_u8(b'\\');
        }
        out.put_u8(b);
    }
}

/// The pattern that matches `prefix` followed by whatever `pattern` matches.
pub fn confine(prefix: &[u8], pattern: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() * 2 + pattern.len());
    escape_into(&mut out, prefix);
    out.put_slice(pattern);
    out.freeze()
}

/// True if `string` matches the Redis glob `pattern` (case-sensitive).
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, &mut skip_longer, 0)
}

/// Redis compares bytes as C `char`, which is signed on the platforms it runs on; ranges like
/// `[a-\xff]` therefore behave as Redis's do only if compared the same way.
fn signed(b: u8) -> i32 {
    i32::from(b as i8)
}

fn match_impl(pat: &[u8], s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    // Redis gives up on deeply nested stars rather than recursing without bound.
    if nesting > 1000 {
        return false;
    }
    let (mut p, mut i) = (0usize, 0usize);
    while p < pat.len() && i < s.len() {
        match pat[p] {
            b'*' => {
                while p + 1 < pat.len() && pat[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pat.len() {
                    return true;
                }
                while i < s.len() {
                    if match_impl(&pat[p + 1..], &s[i..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    i += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => i += 1,
            b'[' => {
                p += 1;
                let not = pat.get(p) == Some(&b'^');
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let rest = pat.len().saturating_sub(p);
                    if rest >= 2 && pat[p] == b'\\' {
                        p += 1;
                        if pat[p] == s[i] {
                            matched = true;
                        }
                    } else if rest == 0 {
                        // An unterminated class: Redis steps back so the outer loop ends on it.
                        p -= 1;
                        break;
                    } else if pat[p] == b']' {
                        break;
                    } else if rest >= 3 && pat[p + 1] == b'-' {
                        let (mut start, mut end) = (signed(pat[p]), signed(pat[p + 2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        let c = signed(s[i]);
                        p += 2;
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if pat[p] == s[i] {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                i += 1;
            }
            b'\\' if pat.len() - p >= 2 => {
                p += 1;
                if pat[p] != s[i] {
                    return false;
                }
                i += 1;
            }
            c => {
                if c != s[i] {
                    return false;
                }
                i += 1;
            }
        }
        p += 1;
        if i == s.len() {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pat.len() && i == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob() {
        let yes = [
            ("*", "abc"),
            ("a*", "abc"),
            ("a?c", "abc"),
            ("a[bx]c", "abc"),
            ("a[^x]c", "abc"),
            ("a[a-c]c", "abc"),
            ("a[c-a]c", "abc"),
            ("a\\*c", "a*c"),
            ("session:*", "session:1"),
            ("a\\", "a\\"),
            ("*b*", "abc"),
            ("a**", "a"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no = [
            ("a*", "b"),
            ("a?c", "ac"),
            ("a[^b]c", "abc"),
            ("a\\*c", "abc"),
            ("", "a"),
            ("a", ""),
            ("abc", "ab"),
            // Redis's matcher never matches an empty string against `*`; KEYS special-cases `*`.
            ("*", ""),
        ];
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
        assert!(matches(b"", b""));
        // An unterminated class does not panic and matches what Redis matches.
        assert!(matches(b"a[b", b"ab"));
    }

    #[test]
    fn escaped_prefix_matches_only_itself() {
        for prefix in ["t:", "a*b", "x?[y]\\", "^-"] {
            let pat = confine(prefix.as_bytes(), b"*");
            assert!(matches(&pat, format!("{prefix}key").as_bytes()), "{prefix}");
            assert!(matches(&pat, prefix.as_bytes()));
            assert!(!matches(&pat, b"other"));
            // Same length, one byte different: never matches.
            let mut near = prefix.as_bytes().to_vec();
            near[0] ^= 1;
            assert!(!matches(&pat, &near));
        }
        assert_eq!(&escape(b"a*[\\")[..], b"a\\*\\[\\\\");
        // The client's pattern cannot reach back: a leading `]` or `\` stays in its own part.
        let pat = confine(b"p[", b"]*");
        assert!(matches(&pat, b"p[]x"));
        assert!(!matches(&pat, b"q]x"));
    }
}

//! Key finders that read a command's options the way the command itself reads them.
//!
//! Where Redis's key specs (or its `getkeys_proc`) and the command's own option parser disagree,
//! the parser is what the server executes, so it is what respite ports (from Redis 7.0's geo.c,
//! t_stream.c and sort.c; Valkey's are the same): GEORADIUS's key specs find the first STORE
//! while `georadiusGeneric` writes the last; XREAD's find the first STREAMS even where it is the
//! value of COUNT or a consumer name, where `xreadCommand` skips option values; `sortGetKeys`
//! does not skip STORE's argument, `sortCommandGeneric` does. Whatever prefixes, caps TTLs,
//! limits values or invalidates the near cache reads this one answer through [`super::keys`].
//!
//! A call the command would reject is an error here too, so a prefixed tenant's malformed call is
//! refused instead of guessed at. Must never rewrite anything: it only names argument positions.
use bytes::Bytes;

use super::KeySpecFlags;
use super::key_list::{KeyError, KeyRef, Keys, c_eq_ignore_case};
use crate::protocol::int::parse_i64;

fn is_any(arg: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| c_eq_ignore_case(arg, w))
}

/// GEORADIUS (options from argument 6) and GEORADIUSBYMEMBER (from 5), as `georadiusGeneric`:
/// STORE and STOREDIST each take the next argument as the destination, the last one wins; COUNT
/// takes one argument; anything else but the flag words is a syntax error.
pub(super) fn georadius(args: &[Bytes], base: usize, out: &mut Keys) -> Result<(), KeyError> {
    if args.len() < base {
        return Err(KeyError::Invalid);
    }
    out.push(KeyRef {
        pos: 1,
        flags: KeySpecFlags::RO | KeySpecFlags::ACCESS,
    });
    let mut store = None;
    let mut i = base;
    while i < args.len() {
        let more = args.len() - i - 1;
        let arg = &args[i];
        if is_any(
            arg,
            &["withdist", "withhash", "withcoord", "any", "asc", "desc"],
        ) {
        } else if c_eq_ignore_case(arg, "count") && more >= 1 {
            i += 1;
        } else if is_any(arg, &["store", "storedist"]) && more >= 1 {
            store = Some(i + 1);
            i += 1;
        } else {
            return Err(KeyError::Invalid);
        }
        i += 1;
    }
    if let Some(pos) = store {
        out.push(KeyRef {
            pos,
            flags: KeySpecFlags::OW | KeySpecFlags::UPDATE,
        });
    }
    Ok(())
}

/// XREAD/XREADGROUP, as `xreadCommand`: BLOCK and COUNT take one argument, GROUP two (XREADGROUP
/// only), NOACK none (XREADGROUP only); the first STREAMS with something after it ends the
/// options, and its remaining arguments are keys then IDs, half each.
pub(super) fn xread(args: &[Bytes], group: bool, out: &mut Keys) -> Result<(), KeyError> {
    let argc = args.len();
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        let arg = &args[i];
        if is_any(arg, &["block", "count"]) && more >= 1 {
            i += 1;
        } else if c_eq_ignore_case(arg, "streams") && more >= 1 {
            let first = i + 1;
            if !more.is_multiple_of(2) {
                return Err(KeyError::Invalid);
            }
            for pos in first..first + more / 2 {
                out.push(KeyRef {
                    pos,
                    flags: KeySpecFlags::RO | KeySpecFlags::ACCESS,
                });
            }
            return Ok(());
        } else if group && c_eq_ignore_case(arg, "group") && more >= 2 {
            i += 2;
        } else if group && c_eq_ignore_case(arg, "noack") {
        } else {
            return Err(KeyError::Invalid);
        }
        i += 1;
    }
    Err(KeyError::Invalid)
}

/// SORT's options as `sortCommandGeneric` reads them: where it stores, and which arguments are
/// BY/GET patterns (keys named through the data, which policy decides about).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortOptions {
    /// The argument SORT stores into: the last STORE's, as the command keeps the last.
    pub store: Option<usize>,
    /// The arguments of BY and GET, in order.
    pub patterns: Vec<usize>,
}

/// Parse SORT (`readonly` false) or SORT_RO options from argument 2 on. STORE is a syntax error
/// for SORT_RO, as in Redis; LIMIT's two numbers must be integers.
pub fn sort_options(args: &[Bytes], readonly: bool) -> Result<SortOptions, KeyError> {
    let mut out = SortOptions::default();
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let arg = &args[j];
        if is_any(arg, &["asc", "desc", "alpha"]) {
        } else if c_eq_ignore_case(arg, "limit") && left >= 2 {
            if parse_i64(&args[j + 1]).is_none() || parse_i64(&args[j + 2]).is_none() {
                return Err(KeyError::NotInteger);
            }
            j += 2;
        } else if !readonly && c_eq_ignore_case(arg, "store") && left >= 1 {
            out.store = Some(j + 1);
            j += 1;
        } else if is_any(arg, &["by", "get"]) && left >= 1 {
            out.patterns.push(j + 1);
            j += 1;
        } else {
            return Err(KeyError::Syntax);
        }
        j += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{keys, resolve, test_args as args};
    use super::*;

    fn names(line: &str) -> Result<Vec<String>, KeyError> {
        let a = args(line);
        let spec = resolve(&a).expect(line);
        keys(spec, &a).map(|k| {
            k.positions()
                .map(|p| String::from_utf8_lossy(&a[p]).into_owned())
                .collect()
        })
    }

    #[test]
    fn georadius_takes_the_last_destination() {
        let ok = |line: &str, want: &[&str]| {
            assert_eq!(
                names(line),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{line}"
            )
        };
        ok("GEORADIUS k 0 0 1 km STORE d1 STORE other", &["k", "other"]);
        ok(
            "GEORADIUS k 0 0 1 km STOREDIST d1 STORE other",
            &["k", "other"],
        );
        ok(
            "GEORADIUS k 0 0 1 km STORE d1 storedist other",
            &["k", "other"],
        );
        ok(
            "GEORADIUSBYMEMBER k m 1 km STORE d1 STOREDIST other ASC",
            &["k", "other"],
        );
        ok("GEORADIUSBYMEMBER k STORE 1 km STOREDIST d", &["k", "d"]);
        // STORE as a destination name, and COUNT's value spelled STORE, are arguments, not options.
        ok("GEORADIUS k 0 0 1 km STORE STORE", &["k", "STORE"]);
        ok("GEORADIUS k 0 0 1 km COUNT STORE STORE d", &["k", "d"]);
        ok("GEORADIUS k 0 0 1 km", &["k"]);
        assert_eq!(
            names("GEORADIUS k 0 0 1 km STORE d STORE"),
            Err(KeyError::Invalid)
        );
        assert_eq!(
            names("GEORADIUS k 0 0 1 km FOO STORE d"),
            Err(KeyError::Invalid)
        );
    }

    #[test]
    fn xread_skips_option_values() {
        let ok = |line: &str, want: &[&str]| {
            assert_eq!(
                names(line),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{line}"
            )
        };
        ok("XREADGROUP COUNT 1 GROUP g STREAMS STREAMS s 0", &["s"]);
        ok(
            "XREADGROUP GROUP streams STREAMS NOACK STREAMS a b > >",
            &["a", "b"],
        );
        ok("XREAD COUNT 1 STREAMS streams 0", &["streams"]);
        ok("XREAD BLOCK 0 STREAMS a 0", &["a"]);
        assert_eq!(names("XREAD STREAMS a b 0"), Err(KeyError::Invalid));
        assert_eq!(names("XREAD GROUP g c STREAMS a 0"), Err(KeyError::Invalid));
        assert_eq!(names("XREAD NOACK STREAMS a 0"), Err(KeyError::Invalid));
        assert_eq!(
            names("XREAD COUNT 1 FOO STREAMS a 0"),
            Err(KeyError::Invalid)
        );
    }

    #[test]
    fn sort_skips_store_values() {
        let ok = |line: &str, want: &[&str]| {
            assert_eq!(
                names(line),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{line}"
            )
        };
        // sortGetKeys would say `by`; SORT stores into d.
        ok("SORT k STORE by STORE d", &["k", "d"]);
        ok("SORT k STORE get STORE d", &["k", "d"]);
        ok("SORT k STORE a STORE b", &["k", "b"]);
        ok("SORT k GET store BY store", &["k"]);
        ok("SORT k LIMIT 0 1 STORE d ALPHA DESC", &["k", "d"]);
        assert_eq!(names("SORT k STORE store d"), Err(KeyError::Syntax));
        assert_eq!(names("SORT k LIMIT 0 x STORE d"), Err(KeyError::NotInteger));
        assert_eq!(names("SORT_RO k STORE d"), Err(KeyError::Syntax));
        let a = args("SORT k BY w_* GET # GET o_* STORE d");
        assert_eq!(
            sort_options(&a, false),
            Ok(SortOptions {
                store: Some(9),
                patterns: vec![3, 5, 7]
            })
        );
    }
}

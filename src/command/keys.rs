//! Which arguments of a call are keys, and how each is used: the one answer that prefixing, TTL
//! follow-ups, value limits and near-cache invalidation all read.
//!
//! A port of Redis 7.0's `getKeysFromCommandWithSpecs` (db.c), so that respite prefixes what
//! Redis's `COMMAND GETKEYS` would report. Where Redis falls back to a command's `getkeys_proc`
//! because the key specs could not be applied, the procs for well-formed calls are ported too
//! ([`KeysProc`]); where the key specs or proc name an argument the command does not use (the
//! first of several STOREs, a STREAMS that is an option's value), the command's own option parser
//! is ported instead ([`super::options`]): what the server executes, not what GETKEYS says. A
//! malformed key count is an error here rather than Redis's lenient `atoi` guess, so a caller can
//! refuse the call instead of prefixing the wrong arguments.
use bytes::Bytes;

use super::key_list::c_eq_ignore_case;
use super::key_list::{KeyError, KeyRef, Keys};
use super::{BeginSearch, CommandSpec, FindKeys, Flags, KeySpecFlags, KeysProc, options};
// Redis's `string2ll`, shared with the framer.
use crate::protocol::int::parse_i64;

/// The key arguments of `args` (a whole request, command name first) for `spec`, which should come
/// from [`super::resolve`] for the same `args`.
///
/// Agrees with Redis 7.0's `COMMAND GETKEYSANDFLAGS` on every call it accepts: same positions,
/// same order, same flags. Where GETKEYS fails with "Invalid arguments specified for command",
/// this fails too (with a more specific error for a bad key count), with one exception: an
/// open-ended key range with nothing in it (`PFMERGE dest`, a valid call) gives the other keys.
/// Where Redis guesses from a malformed key count (`EVAL s 1x k`, which the command itself then
/// rejects), this fails. A command without keys, or a script call with `numkeys` 0, gives an
/// empty list.
pub fn keys(spec: &CommandSpec, args: &[Bytes]) -> Result<Keys, KeyError> {
    let mut out = Keys::new();
    match spec.keys_proc {
        KeysProc::Specs => from_specs(spec, args, &mut out)?,
        KeysProc::Sort => sort(args, true, &mut out)?,
        KeysProc::SortRo => sort(args, false, &mut out)?,
        KeysProc::Set => set(args, &mut out)?,
        KeysProc::Bitfield => bitfield(args, &mut out)?,
        KeysProc::Georadius => options::georadius(args, 6, &mut out)?,
        KeysProc::GeoradiusByMember => options::georadius(args, 5, &mut out)?,
        KeysProc::Xread => options::xread(args, false, &mut out)?,
        KeysProc::Xreadgroup => options::xread(args, true, &mut out)?,
    }
    // A command that takes keys but found none here is malformed (say, XREAD without STREAMS);
    // Redis's GETKEYS refuses it the same way unless keys are optional for the command.
    if out.is_empty() && spec.has_keys() && !spec.flags.contains(Flags::NO_MANDATORY_KEYS) {
        return Err(KeyError::Invalid);
    }
    Ok(out)
}

/// Redis's `getKeysUsingKeySpecs`, with index arithmetic in i64 so no input can overflow.
fn from_specs(spec: &CommandSpec, args: &[Bytes], out: &mut Keys) -> Result<(), KeyError> {
    let argc = args.len() as i64;
    for ks in spec.key_specs {
        if ks.flags.contains(KeySpecFlags::NOT_KEY) {
            continue;
        }
        let mut first = match ks.begin_search {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => match find_keyword(args, keyword, i64::from(start_from)) {
                Some(i) => i + 1,
                // An optional keyword (GEORADIUS ... STORE) that is absent: no keys from it.
                None => continue,
            },
            BeginSearch::Unknown => return Err(KeyError::Invalid),
        };
        let (last, step) = match ks.find_keys {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let (last_key, limit) = (i64::from(last_key), i64::from(limit));
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit == 0 {
                    argc + last_key
                } else {
                    first + ((argc - first) / limit + last_key)
                };
                // "The rest of the arguments" with none left, as in `PFMERGE dest`: Redis calls
                // this a syntax error, but the command is valid and simply has no keys here.
                if last_key == -1 && limit == 0 && first == argc {
                    continue;
                }
                (last, i64::from(key_step))
            }
            FindKeys::Keynum {
                keynum_idx,
                first_key,
                key_step,
            } => {
                let idx = first + i64::from(keynum_idx);
                let Some(count) = usize::try_from(idx).ok().and_then(|i| args.get(i)) else {
                    return Err(KeyError::Invalid);
                };
                let numkeys = parse_i64(count).ok_or(KeyError::NumkeysNotInteger)?;
                if numkeys < 0 {
                    return Err(KeyError::NumkeysNegative);
                }
                first += i64::from(first_key);
                if numkeys == 0 {
                    // Redis treats this spec as failed and falls back to the command's proc, which
                    // finds no keys: fine for scripts, an error for everything else.
                    if spec.flags.contains(Flags::NO_MANDATORY_KEYS) {
                        continue;
                    }
                    return Err(KeyError::NumkeysZero);
                }
                let last = first.saturating_add(numkeys - 1);
                if last >= argc {
                    return Err(KeyError::NumkeysTooLarge);
                }
                (last, i64::from(key_step))
            }
            FindKeys::Unknown => return Err(KeyError::Invalid),
        };
        if last >= argc || last < first || first >= argc || step < 1 {
            return Err(KeyError::Invalid);
        }
        let mut i = first;
        while i <= last {
            out.push(KeyRef {
                pos: i as usize,
                flags: ks.flags,
            });
            i += step;
        }
        if ks.flags.contains(KeySpecFlags::INCOMPLETE) {
            return Err(KeyError::Invalid);
        }
    }
    Ok(())
}

/// The keyword search of `getKeysUsingKeySpecs`, quirks included: it walks from `start_from` to
/// (but not onto) the last argument, or backwards from `argc + start_from` to (not onto) index 1.
fn find_keyword(args: &[Bytes], keyword: &str, start_from: i64) -> Option<i64> {
    let argc = args.len() as i64;
    let (start, end) = if start_from > 0 {
        (start_from, argc - 1)
    } else {
        (argc + start_from, 1)
    };
    let dir = if start <= end { 1 } else { -1 };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        if c_eq_ignore_case(&args[i as usize], keyword) {
            return Some(i);
        }
        i += dir;
    }
    None
}

/// SORT/SORT_RO: the sorted key is argument 1; SORT may also STORE, into the argument
/// `sortCommandGeneric` takes (the last STORE, whose argument is skipped, unlike `sortGetKeys`).
fn sort(args: &[Bytes], with_store: bool, out: &mut Keys) -> Result<(), KeyError> {
    if args.len() < 2 {
        return Err(KeyError::Invalid);
    }
    out.push(KeyRef {
        pos: 1,
        flags: KeySpecFlags::RO | KeySpecFlags::ACCESS,
    });
    if let Some(pos) = super::sort_options(args, !with_store)?.store {
        out.push(KeyRef {
            pos,
            flags: KeySpecFlags::OW | KeySpecFlags::UPDATE,
        });
    }
    Ok(())
}

/// Redis's `setGetKeys`: the key is read too when the GET option is present.
fn set(args: &[Bytes], out: &mut Keys) -> Result<(), KeyError> {
    if args.len() < 2 {
        return Err(KeyError::Invalid);
    }
    let get = args.iter().skip(3).any(|a| c_eq_ignore_case(a, "get"));
    let flags = if get {
        KeySpecFlags::RW | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE
    } else {
        KeySpecFlags::OW | KeySpecFlags::UPDATE
    };
    out.push(KeyRef { pos: 1, flags });
    Ok(())
}

/// Redis's `bitfieldGetKeys`: read-only while every operation is a GET (or OVERFLOW); anything
/// else, including a malformed operation, counts as a write.
fn bitfield(args: &[Bytes], out: &mut Keys) -> Result<(), KeyError> {
    if args.len() < 2 {
        return Err(KeyError::Invalid);
    }
    let argc = args.len();
    let mut readonly = true;
    let mut i = 2;
    while i < argc {
        let remaining = argc - i - 1;
        let arg = &args[i];
        if c_eq_ignore_case(arg, "get") && remaining >= 2 {
            i += 2;
        } else if (c_eq_ignore_case(arg, "set") || c_eq_ignore_case(arg, "incrby"))
            && remaining >= 3
        {
            readonly = false;
            break;
        } else if c_eq_ignore_case(arg, "overflow") && remaining >= 1 {
            i += 1;
        } else {
            readonly = false;
            break;
        }
        i += 1;
    }
    let flags = if readonly {
        KeySpecFlags::RO | KeySpecFlags::ACCESS
    } else {
        KeySpecFlags::RW | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE
    };
    out.push(KeyRef { pos: 1, flags });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{resolve, test_args as args};
    use super::*;

    fn positions(line: &str) -> Result<Vec<usize>, KeyError> {
        let a = args(line);
        let spec = resolve(&a).expect(line);
        keys(spec, &a).map(|k| k.positions().collect())
    }

    #[test]
    fn fixed_positions() {
        assert_eq!(positions("GET k"), Ok(vec![1]));
        assert_eq!(positions("MSET a 1 b 2 c 3"), Ok(vec![1, 3, 5]));
        assert_eq!(positions("MGET a b c d e f"), Ok(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(positions("SMOVE src dst m"), Ok(vec![1, 2]));
        assert_eq!(positions("SINTERSTORE d a b"), Ok(vec![1, 2, 3]));
        assert_eq!(positions("PFMERGE d"), Ok(vec![1]));
        assert_eq!(positions("PFMERGE d a b"), Ok(vec![1, 2, 3]));
        assert_eq!(positions("PING"), Ok(vec![]));
        assert_eq!(positions("XINFO STREAM s FULL"), Ok(vec![2]));
        assert_eq!(positions("MEMORY USAGE k"), Ok(vec![2]));
    }

    #[test]
    fn numkeys() {
        assert_eq!(positions("EVAL s 2 a b x"), Ok(vec![3, 4]));
        assert_eq!(positions("EVAL s 0 x y"), Ok(vec![]));
        assert_eq!(positions("EVALSHA s 3 a b c"), Ok(vec![3, 4, 5]));
        assert_eq!(
            positions("ZUNIONSTORE d 2 a b WEIGHTS 1 2"),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(positions("ZINTERCARD 2 a b LIMIT 3"), Ok(vec![2, 3]));
        assert_eq!(positions("LMPOP 2 a b LEFT"), Ok(vec![2, 3]));
        assert_eq!(positions("BLMPOP 0 2 a b LEFT"), Ok(vec![3, 4]));
        assert_eq!(positions("BZMPOP 1.5 1 a MIN COUNT 2"), Ok(vec![3]));
        assert_eq!(positions("EVAL s -1 a"), Err(KeyError::NumkeysNegative));
        assert_eq!(positions("EVAL s 3 a"), Err(KeyError::NumkeysTooLarge));
        assert_eq!(positions("EVAL s 1x a"), Err(KeyError::NumkeysNotInteger));
        assert_eq!(positions("EVAL s +1 a"), Err(KeyError::NumkeysNotInteger));
        assert_eq!(positions("EVAL s 01 a"), Err(KeyError::NumkeysNotInteger));
        assert_eq!(
            positions("EVAL s 99999999999999999999 a"),
            Err(KeyError::NumkeysNotInteger)
        );
        assert_eq!(
            positions("EVAL s 9223372036854775807 a"),
            Err(KeyError::NumkeysTooLarge)
        );
        assert_eq!(positions("ZUNIONSTORE d 0 a"), Err(KeyError::NumkeysZero));
        assert_eq!(positions("SINTERCARD 0 a"), Err(KeyError::NumkeysZero));
        assert_eq!(positions("ZDIFF 5 a b"), Err(KeyError::NumkeysTooLarge));
    }

    #[test]
    fn streams() {
        assert_eq!(positions("XREAD STREAMS a b 0 0"), Ok(vec![2, 3]));
        assert_eq!(
            positions("XREAD COUNT 5 BLOCK 10 STREAMS a b c 0 0 0"),
            Ok(vec![6, 7, 8])
        );
        assert_eq!(
            positions("XREADGROUP GROUP streams c STREAMS s 0"),
            Ok(vec![5])
        );
        assert_eq!(positions("XREAD COUNT 1 STREAMS"), Err(KeyError::Invalid));
        assert_eq!(positions("XREAD COUNT 1 BLOCK 2"), Err(KeyError::Invalid));
    }

    #[test]
    fn sort_and_geo_destinations() {
        assert_eq!(positions("SORT k"), Ok(vec![1]));
        assert_eq!(
            positions("SORT k BY w_* GET o_* LIMIT 0 5 STORE dst"),
            Ok(vec![1, 10])
        );
        // BY/GET take patterns, not keys, even when the pattern is spelled STORE.
        assert_eq!(positions("SORT k GET store BY store"), Ok(vec![1]));
        assert_eq!(positions("SORT k STORE a STORE b"), Ok(vec![1, 5]));
        assert_eq!(positions("SORT k STORE by STORE d"), Ok(vec![1, 5]));
        assert_eq!(positions("SORT_RO k BY w_* GET #"), Ok(vec![1]));
        assert_eq!(positions("GEORADIUS k 0 0 1 km"), Ok(vec![1]));
        assert_eq!(
            positions("GEORADIUS k 0 0 1 km COUNT 3 STORE d"),
            Ok(vec![1, 9])
        );
        assert_eq!(
            positions("GEORADIUSBYMEMBER k m 1 km STOREDIST d ASC"),
            Ok(vec![1, 6])
        );
    }

    #[test]
    fn flags_per_key() {
        let a = args("SET k v GET");
        let k = keys(resolve(&a).unwrap(), &a).unwrap();
        assert_eq!(
            k[0].flags,
            KeySpecFlags::RW | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE
        );
        let a = args("SET k v EX 10");
        let k = keys(resolve(&a).unwrap(), &a).unwrap();
        assert_eq!(k[0].flags, KeySpecFlags::OW | KeySpecFlags::UPDATE);
        let a = args("BITFIELD k GET u8 0 OVERFLOW SAT");
        let k = keys(resolve(&a).unwrap(), &a).unwrap();
        assert_eq!(k[0].flags, KeySpecFlags::RO | KeySpecFlags::ACCESS);
        let a = args("BITFIELD k GET u8 0 INCRBY u8 0 1");
        let k = keys(resolve(&a).unwrap(), &a).unwrap();
        assert!(k[0].flags.is_write());
        let a = args("LMOVE src dst LEFT RIGHT");
        let k = keys(resolve(&a).unwrap(), &a).unwrap();
        assert!(k[0].flags.contains(KeySpecFlags::DELETE));
        assert!(k[1].flags.contains(KeySpecFlags::INSERT));
    }

    #[test]
    fn many_keys_spill_to_the_heap() {
        let line = format!(
            "DEL {}",
            (0..50).map(|i| format!("k{i} ")).collect::<String>()
        );
        assert_eq!(positions(&line), Ok((1..=50).collect()));
    }

    #[test]
    fn never_panics_on_short_or_odd_args() {
        // keys() may be handed arguments resolve() would reject; it must answer, not panic.
        for spec in super::super::all() {
            for n in 0..6 {
                let mut a = vec![Bytes::from_static(b"x"); n];
                if let Some(first) = a.first_mut() {
                    *first = Bytes::from_static(spec.name.as_bytes());
                }
                let _ = keys(spec, &a);
                let _ = keys(spec, &args("x -5 -5 -5 0 0 0 STREAMS STORE"));
            }
        }
    }

    #[test]
    fn string2ll() {
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("12", Some(12)),
            ("-0", None),
        ] {
            assert_eq!(parse_i64(s.as_bytes()), v, "{s}");
        }
        for s in ["", "-", "+1", " 1", "1 ", "00", "1a", "9223372036854775808"] {
            assert_eq!(parse_i64(s.as_bytes()), None, "{s}");
        }
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    }
}

//! The upstream's own command table, read from its `COMMAND` reply: the commands (and
//! subcommands) the built-in table lacks, and the built-in commands the upstream gives a wider
//! arity (ZRANK … WITHSCORE in Redis 7.2). It only ever adds: a command in the built-in table
//! keeps its built-in facts, which drive respite's own routing, caching and policy decisions.
//!
//! Consulted only when the built-in table misses ([`UpstreamCommands::resolve_miss`]), so the
//! hot path stays one static lookup. Specs read here are leaked to `&'static` once, when the
//! table is read (a few hundred small entries per upstream, read once per proxy), so a request
//! holds them like any built-in spec. Their `id` is [`NOT_BUILT_IN`]: side tables indexed by id
//! cover the built-in table only, and treat such a spec by its facts (route by flags, allow
//! lists by ACL category).
//!
//! Keys are found from the specs the upstream states, with the same finder as built-in
//! commands ([`super::keys`]): index or keyword begin-search with range or keynum find-keys are
//! certain; an `unknown` spec or one flagged `incomplete` makes the finder fail, so a prefixed
//! tenant is refused such a command. An upstream without key specs (Dragonfly's `COMMAND` has
//! none) is read by its legacy first/last/step, and a `movablekeys` command there gets an
//! `incomplete` spec, so it is refused to a prefixed tenant too.
use super::{
    AclCategories, BeginSearch, CommandError, CommandSpec, FindKeys, Flags, KeySpec, KeySpecFlags,
    KeysProc,
};
use crate::protocol::value::{self, Value};
use bytes::Bytes;
use std::collections::HashMap;

/// The `id` of a spec read from the upstream: it has no slot in the built-in side tables.
pub const NOT_BUILT_IN: u16 = u16::MAX;

/// Longest command name looked up on a miss; longer arguments cannot name a command.
const MAX_NAME: usize = 128;

/// What the upstream serves beyond the built-in table.
#[derive(Debug, Default)]
pub struct UpstreamCommands {
    /// Commands and subcommands the built-in table lacks, by full lower-case name
    /// (`hexpire`, `client|capa`).
    extra: HashMap<String, &'static CommandSpec>,
    /// Built-in commands whose upstream arity differs, by name: the upstream's arity.
    arity: HashMap<&'static str, i32>,
    /// How many top-level commands the upstream listed.
    pub listed: usize,
}

/// The `COMMAND` reply could not be read as a command table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("COMMAND reply is not one well-formed RESP reply")]
    Malformed,
    #[error("COMMAND reply entry {0} is not a command entry")]
    Entry(usize),
}

/// One entry as read, before it is leaked.
struct Entry {
    name: String,
    arity: i32,
    flags: Flags,
    acl: AclCategories,
    key_specs: Vec<KeySpec>,
    subcommands: Vec<Entry>,
}

impl UpstreamCommands {
    /// Read a `COMMAND` reply (RESP2 or RESP3).
    pub fn parse(reply: &[u8]) -> Result<UpstreamCommands, TableError> {
        let v = value::parse(reply).map_err(|_| TableError::Malformed)?;
        let items = v.items().ok_or(TableError::Malformed)?;
        let mut table = UpstreamCommands {
            listed: items.len(),
            ..Default::default()
        };
        for (i, item) in items.iter().enumerate() {
            let entry = entry(item).ok_or(TableError::Entry(i))?;
            table.add(entry);
        }
        Ok(table)
    }

    fn add(&mut self, e: Entry) {
        let Some(builtin) = super::lookup(&e.name) else {
            let spec = leak(e);
            self.extra.insert(spec.name.to_owned(), spec);
            for sub in spec.subcommands {
                self.extra.insert(sub.name.to_owned(), sub);
            }
            return;
        };
        if builtin.arity != e.arity {
            self.arity.insert(builtin.name, e.arity);
        }
        for sub in e.subcommands {
            match super::lookup(&sub.name) {
                Some(b) if b.arity != sub.arity => {
                    self.arity.insert(b.name, sub.arity);
                }
                Some(_) => {}
                None => {
                    let spec = leak(sub);
                    self.extra.insert(spec.name.to_owned(), spec);
                }
            }
        }
    }

    /// A command or subcommand the built-in table lacks, by full name.
    pub fn get(&self, name: &str) -> Option<&'static CommandSpec> {
        self.extra.get(name).copied()
    }

    /// How many commands and subcommands this adds to the built-in table.
    pub fn extra(&self) -> usize {
        self.extra.len()
    }

    /// Resolve a request the built-in table refused with `err`, as [`super::resolve`] would
    /// with the upstream's entries added: a command or subcommand only the upstream has, or a
    /// built-in command called with an arity only the upstream accepts (the built-in spec is
    /// returned then: its facts still hold for the arguments it knows). Otherwise `err`.
    pub fn resolve_miss(
        &self,
        args: &[Bytes],
        err: CommandError,
    ) -> Result<&'static CommandSpec, CommandError> {
        let lower = |a: &Bytes| -> Option<String> {
            (a.len() <= MAX_NAME && !a.contains(&b'|'))
                .then(|| String::from_utf8_lossy(a).to_ascii_lowercase())
        };
        let spec = match &err {
            CommandError::Unknown { .. } => {
                let Some(cmd) = args.first().and_then(lower).and_then(|n| self.get(&n)) else {
                    return Err(err);
                };
                match args.get(1) {
                    Some(sub) if cmd.is_container() => lower(sub)
                        .and_then(|s| self.get(&format!("{}|{s}", cmd.name)))
                        .ok_or_else(|| CommandError::unknown_subcommand(args))?,
                    _ => cmd,
                }
            }
            CommandError::UnknownSubcommand { .. } => {
                let name = match (args.first().and_then(lower), args.get(1).and_then(lower)) {
                    (Some(parent), Some(sub)) => format!("{parent}|{sub}"),
                    _ => return Err(err),
                };
                self.get(&name).ok_or(err)?
            }
            CommandError::Arity(name) => {
                return match (self.arity.get(name.as_str()), super::lookup(name)) {
                    (Some(&arity), Some(spec)) if arity_ok(arity, args.len()) => Ok(spec),
                    _ => Err(err),
                };
            }
        };
        if !arity_ok(spec.arity, args.len()) {
            return Err(CommandError::Arity(spec.name.to_owned()));
        }
        Ok(spec)
    }
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    let n = arity.unsigned_abs() as usize;
    if arity >= 0 { argc == n } else { argc >= n }
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Make `e` (and its subcommands, sorted by name) `&'static`.
fn leak(e: Entry) -> &'static CommandSpec {
    let mut subs: Vec<CommandSpec> = e.subcommands.into_iter().map(spec_of).collect();
    subs.sort_by(|a, b| a.name.cmp(b.name));
    let mut spec = spec_of(Entry {
        subcommands: Vec::new(),
        ..e
    });
    spec.subcommands = Box::leak(subs.into_boxed_slice());
    Box::leak(Box::new(spec))
}

fn spec_of(e: Entry) -> CommandSpec {
    CommandSpec {
        name: leak_str(&e.name),
        arity: e.arity,
        flags: e.flags,
        acl: e.acl,
        key_specs: Box::leak(e.key_specs.into_boxed_slice()),
        keys_proc: KeysProc::Specs,
        tips: &[],
        subcommands: &[],
        id: NOT_BUILT_IN,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Line(b':', text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    v.bulk().map(|t| String::from_utf8_lossy(t).into_owned())
}

/// The names in an array (or RESP3 set) of strings.
fn names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::items)
        .map(|items| items.iter().filter_map(text).collect())
        .unwrap_or_default()
}

/// `[name, arity, flags, first, last, step, acl, tips, key specs, subcommands]` as Redis 7
/// lists them; only the first six (and the ACL categories) from an upstream with no key specs.
fn entry(v: &Value) -> Option<Entry> {
    let items = v.items()?;
    let name = text(items.first()?)?.to_ascii_lowercase();
    let arity = i32::try_from(int(items.get(1)?)?).ok()?;
    let mut flags = Flags::EMPTY;
    for f in names(items.get(2)) {
        // Flags respite has no name for (a newer server's) change nothing it decides.
        if let Some(bit) = Flags::from_name(&f) {
            flags = flags | bit;
        }
    }
    let mut acl = AclCategories::EMPTY;
    for c in names(items.get(6)) {
        if let Some(bit) = AclCategories::from_name(&c) {
            acl = acl | bit;
        }
    }
    let key_specs = match items.get(8) {
        Some(specs) => specs
            .items()?
            .iter()
            .map(key_spec)
            .collect::<Option<Vec<_>>>()?,
        None => legacy_keys(
            int(items.get(3)?)?,
            int(items.get(4)?)?,
            int(items.get(5)?)?,
            flags,
        ),
    };
    let subcommands = match items.get(9) {
        Some(subs) => subs
            .items()?
            .iter()
            .map(entry)
            .collect::<Option<Vec<_>>>()?,
        None => Vec::new(),
    };
    Some(Entry {
        name,
        arity,
        flags,
        acl,
        key_specs,
        subcommands,
    })
}

/// A key spec from Redis 2's first/last/step, for an upstream that states no key specs: the
/// keys run from `first` to `last` (negative: from the end) every `step`. A command with movable
/// keys may have keys elsewhere, so its spec is `incomplete`.
fn legacy_keys(first: i64, last: i64, step: i64, flags: Flags) -> Vec<KeySpec> {
    if first <= 0 {
        return Vec::new();
    }
    let mut spec_flags = if flags.contains(Flags::READONLY) {
        KeySpecFlags::RO | KeySpecFlags::ACCESS
    } else {
        KeySpecFlags::RW | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE
    };
    if flags.contains(Flags::MOVABLEKEYS) {
        spec_flags = spec_flags | KeySpecFlags::INCOMPLETE;
    }
    let last_key = if last < 0 { last } else { last - first };
    vec![KeySpec {
        flags: spec_flags,
        begin_search: BeginSearch::Index(first as i32),
        find_keys: FindKeys::Range {
            last_key: last_key as i32,
            key_step: step.max(1) as i32,
            limit: 0,
        },
    }]
}

/// A field of a RESP2 flat key/value array or a RESP3 map.
fn field<'v, 'a>(kv: &'v Value<'a>, name: &str) -> Option<&'v Value<'a>> {
    kv.items()?
        .chunks(2)
        .find(|pair| {
            pair[0]
                .bulk()
                .is_some_and(|k| k.eq_ignore_ascii_case(name.as_bytes()))
        })
        .and_then(|pair| pair.get(1))
}

fn field_int(kv: &Value, name: &str) -> Option<i32> {
    i32::try_from(int(field(kv, name)?)?).ok()
}

fn key_spec(v: &Value) -> Option<KeySpec> {
    let mut flags = KeySpecFlags::EMPTY;
    for f in names(field(v, "flags")) {
        match KeySpecFlags::from_name(&f) {
            Some(bit) => flags = flags | bit,
            // A key-spec flag respite does not know could change what the key means: treat
            // the spec as not certain.
            None => flags = flags | KeySpecFlags::INCOMPLETE,
        }
    }
    let begin = field(v, "begin_search")?;
    let bspec = field(begin, "spec")?;
    let begin_search = match text(field(begin, "type")?)?.as_str() {
        "index" => BeginSearch::Index(field_int(bspec, "index")?),
        "keyword" => BeginSearch::Keyword {
            keyword: leak_str(&text(field(bspec, "keyword")?)?),
            start_from: field_int(bspec, "startfrom")?,
        },
        _ => BeginSearch::Unknown,
    };
    let find = field(v, "find_keys")?;
    let fspec = field(find, "spec")?;
    let find_keys = match text(field(find, "type")?)?.as_str() {
        "range" => FindKeys::Range {
            last_key: field_int(fspec, "lastkey")?,
            key_step: field_int(fspec, "keystep")?,
            limit: field_int(fspec, "limit")?,
        },
        "keynum" => FindKeys::Keynum {
            keynum_idx: field_int(fspec, "keynumidx")?,
            first_key: field_int(fspec, "firstkey")?,
            key_step: field_int(fspec, "keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Some(KeySpec {
        flags,
        begin_search,
        find_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{keys, resolve};

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn arr(items: &[String]) -> String {
        format!("*{}\r\n{}", items.len(), items.concat())
    }

    fn status(items: &[&str]) -> String {
        arr(&items
            .iter()
            .map(|s| format!("+{s}\r\n"))
            .collect::<Vec<_>>())
    }

    fn int(n: i64) -> String {
        format!(":{n}\r\n")
    }

    /// An entry as Redis 7 writes it in RESP2.
    fn entry(name: &str, arity: i64, flags: &[&str], acl: &[&str], specs: &[String]) -> String {
        arr(&[
            bulk(name),
            int(arity),
            status(flags),
            int(0),
            int(0),
            int(0),
            status(acl),
            arr(&[]),
            arr(specs),
            arr(&[]),
        ])
    }

    fn spec(flags: &[&str], begin: (&str, String), find: (&str, String)) -> String {
        arr(&[
            bulk("flags"),
            status(flags),
            bulk("begin_search"),
            arr(&[bulk("type"), bulk(begin.0), bulk("spec"), begin.1]),
            bulk("find_keys"),
            arr(&[bulk("type"), bulk(find.0), bulk("spec"), find.1]),
        ])
    }

    fn table() -> UpstreamCommands {
        let hexpire = entry(
            "hexpire",
            -6,
            &["write", "fast"],
            &["@write", "@hash", "@fast"],
            &[spec(
                &["RW", "update"],
                ("index", arr(&[bulk("index"), int(1)])),
                (
                    "range",
                    arr(&[
                        bulk("lastkey"),
                        int(0),
                        bulk("keystep"),
                        int(1),
                        bulk("limit"),
                        int(0),
                    ]),
                ),
            )],
        );
        let fcall = entry(
            "fcall",
            -3,
            &["noscript", "movablekeys"],
            &["@slow", "@scripting"],
            &[spec(
                &["RW", "access", "update"],
                ("index", arr(&[bulk("index"), int(2)])),
                (
                    "keynum",
                    arr(&[
                        bulk("keynumidx"),
                        int(0),
                        bulk("firstkey"),
                        int(1),
                        bulk("keystep"),
                        int(1),
                    ]),
                ),
            )],
        );
        let mystery = entry(
            "mystery",
            -2,
            &["write"],
            &["@write"],
            &[spec(&["RW"], ("unknown", arr(&[])), ("unknown", arr(&[])))],
        );
        let zrank = entry("zrank", -3, &["readonly"], &["@read"], &[]);
        // Dragonfly: six elements and the categories, no key specs.
        let dfly = arr(&[
            bulk("dfly.only"),
            int(-3),
            status(&["write"]),
            int(1),
            int(-1),
            int(2),
            status(&["@write"]),
        ]);
        let reply = arr(&[hexpire, fcall, mystery, zrank, dfly]);
        UpstreamCommands::parse(reply.as_bytes()).unwrap()
    }

    #[test]
    fn adds_what_the_built_in_table_lacks() {
        let t = table();
        assert_eq!(t.listed, 5);
        let miss = |words: &[&str]| {
            let a = args(words);
            let err = resolve(&a).unwrap_err();
            t.resolve_miss(&a, err)
        };
        let hexpire = miss(&["HEXPIRE", "h", "10", "FIELDS", "1", "f"]).unwrap();
        assert_eq!(hexpire.name, "hexpire");
        assert_eq!(hexpire.id, NOT_BUILT_IN);
        assert!(hexpire.flags.contains(Flags::WRITE));
        assert!(hexpire.acl.contains(AclCategories::HASH));
        let a = args(&["HEXPIRE", "h", "10", "FIELDS", "1", "f"]);
        assert_eq!(
            keys(hexpire, &a).unwrap().positions().collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(
            miss(&["hexpire", "h"]).unwrap_err().to_string(),
            "wrong number of arguments for 'hexpire' command"
        );
        // FCALL: keys by keynum, as EVAL's.
        let fcall = miss(&["FCALL", "f", "2", "a", "b", "arg"]).unwrap();
        let a = args(&["FCALL", "f", "2", "a", "b", "arg"]);
        assert_eq!(
            keys(fcall, &a).unwrap().positions().collect::<Vec<_>>(),
            [3, 4]
        );
        // An unknown spec cannot find keys: the finder fails, so a prefixed tenant is refused.
        let mystery = miss(&["mystery", "x"]).unwrap();
        assert!(keys(mystery, &args(&["mystery", "x"])).is_err());
        // Dragonfly's legacy first/last/step.
        let d = miss(&["dfly.only", "k1", "v", "k2", "v"]).unwrap();
        let a = args(&["dfly.only", "k1", "v", "k2", "v"]);
        assert_eq!(keys(d, &a).unwrap().positions().collect::<Vec<_>>(), [1, 3]);
        // Still unknown.
        assert!(matches!(
            miss(&["nope"]).unwrap_err(),
            CommandError::Unknown { .. }
        ));
    }

    #[test]
    fn built_in_commands_take_the_upstreams_arity() {
        let t = table();
        let a = args(&["ZRANK", "z", "m", "WITHSCORE"]);
        let err = resolve(&a).unwrap_err();
        let spec = t.resolve_miss(&a, err).unwrap();
        assert!(std::ptr::eq(spec, crate::command::lookup("zrank").unwrap()));
        // Built-in entries are never replaced.
        assert!(t.get("get").is_none() && t.get("zrank").is_none());
    }

    #[test]
    fn redis_command_reply_is_read() {
        // A real entry from redis-server 7.0 (LCS), subcommands of OBJECT included.
        let lcs = "*10\r\n$3\r\nlcs\r\n:-3\r\n*1\r\n+readonly\r\n:1\r\n:2\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@slow\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
        let t = UpstreamCommands::parse(format!("*1\r\n{lcs}").as_bytes()).unwrap();
        let spec = t.get("lcs").unwrap();
        let a = args(&["LCS", "a", "b"]);
        assert_eq!(
            keys(spec, &a).unwrap().positions().collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(UpstreamCommands::parse(b"+OK\r\n").is_err());
    }
}

//! The command table: what respite knows of each command, and the one place that knows it.
//!
//! Every command Redis 7.0, Valkey and Dragonfly share, with arity, flags, ACL categories and key
//! specs as Redis 7.0's `COMMAND INFO` reports them (generated into `table.rs` by
//! `scripts/gen-commands.py`, which also lists what was left out and why), plus respite's own
//! [`Route`] for each. Prefixing, TTL policy, caching and routing are driven from here. The
//! upstream's own table ([`UpstreamCommands`], read from its `COMMAND`) adds what the upstream
//! serves beyond it, consulted only on a built-in miss; a command in neither is refused and never
//! forwarded.
//!
//! - [`resolve`] finds a request's command or subcommand and checks its arity, failing with Redis's
//!   own error texts.
//! - [`keys`] finds the key arguments (and how each is used) the way Redis's `COMMAND GETKEYS` does.
//! - [`route`] says whether respite forwards, answers or (for now) refuses the call.
use bytes::Bytes;

mod bits;
mod key_list;
mod keys;
mod lookup;
mod options;
mod route;
mod slow;
mod table;
mod upstream_table;

pub use bits::{AclCategories, Flags, KeySpecFlags};
pub use key_list::{KeyError, KeyRef, Keys};
pub use keys::keys;
pub use options::{SortOptions, sort_options};
pub use route::route;
pub use slow::known_slow;
pub use upstream_table::{NOT_BUILT_IN, TableError, UpstreamCommands};

/// Where a command goes. Decided by respite, not by the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Stateless with respect to the connection: safe on a shared, multiplexed upstream connection.
    Forward,
    /// Answered by respite itself (PING, ECHO, HELLO, QUIT, RESET, CLIENT SETNAME/GETNAME/ID/INFO/SETINFO,
    /// AUTH, SELECT, …): the session handles it and never forwards it.
    Proxy,
    /// MULTI, EXEC, DISCARD and UNWATCH: the session queues a transaction itself and sends it
    /// upstream whole at EXEC, so it needs no connection of its own (WATCH does, and is refused).
    Transaction,
    /// Changes or depends on per-connection state on the upstream (WATCH, SUBSCRIBE family,
    /// MONITOR, blocking commands, CLIENT REPLY/TRACKING/CACHING/NO-EVICT…): refused until pinned
    /// connections exist. The text says why, e.g. "blocking command".
    Stateful(&'static str),
}

/// Static facts about one command (or one subcommand, named `parent|sub`).
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; `client|setname` for subcommands.
    pub name: &'static str,
    /// Redis arity: N exact, -N at least N (the name counts).
    pub arity: i32,
    pub flags: Flags,
    pub acl: AclCategories,
    /// Where the keys are, in Redis 7.0's key-spec language; read them with [`keys`].
    pub key_specs: &'static [KeySpec],
    /// Whether [`keys`] must parse the arguments itself because the specs alone are not enough.
    pub keys_proc: KeysProc,
    /// Redis's command tips (`nondeterministic_output`, `request_policy:all_shards`, …).
    pub tips: &'static [&'static str],
    /// For a container command (CLIENT, CONFIG, …): its subcommands, sorted by name.
    pub subcommands: &'static [CommandSpec],
    /// Dense index over every built-in command and subcommand, for side tables (see [`all`]);
    /// [`NOT_BUILT_IN`] for a spec read from the upstream.
    pub id: u16,
}

impl CommandSpec {
    /// True for a container (CLIENT, CONFIG, XINFO, …) whose real commands are its subcommands.
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// True if the command can take key arguments at all.
    pub fn has_keys(&self) -> bool {
        self.key_specs
            .iter()
            .any(|s| !s.flags.contains(KeySpecFlags::NOT_KEY))
    }

    /// True if `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == arity
        } else {
            argc >= arity
        }
    }
}

/// One Redis key spec: where to start looking, then how to find the keys from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub flags: KeySpecFlags,
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// The search starts at this argument index.
    Index(i32),
    /// The search starts just after `keyword` (ASCII case-insensitive), looked for from
    /// `start_from` towards the end, or from `argc + start_from` towards the start if negative.
    Keyword {
        keyword: &'static str,
        start_from: i32,
    },
    /// Only hand-written parsing can find these keys (see [`KeysProc`]).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the start to `last_key` (relative to the start; negative counts from the end, or
    /// with `limit` > 0 means "1/limit of the remaining arguments"), every `key_step`.
    Range {
        last_key: i32,
        key_step: i32,
        limit: i32,
    },
    /// The argument `keynum_idx` after the start holds the key count; keys begin `first_key`
    /// after the start, every `key_step`.
    Keynum {
        keynum_idx: i32,
        first_key: i32,
        key_step: i32,
    },
    /// Only hand-written parsing can find these keys (see [`KeysProc`]).
    Unknown,
}

/// The commands whose keys (or key flags) need parsing beyond the key specs, mirroring Redis 7.0's
/// `getkeys_proc` where it changes the answer for a well-formed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysProc {
    /// The key specs say it all.
    Specs,
    /// SORT: the STORE destination is found by scanning the options.
    Sort,
    /// SORT_RO: only the sorted key (BY/GET patterns are not keys).
    SortRo,
    /// SET: RW/access with the GET option, OW otherwise.
    Set,
    /// BITFIELD: read-only unless a SET/INCRBY (or anything unparsable) appears.
    Bitfield,
    /// GEORADIUS: the destination is the last STORE/STOREDIST, as `georadiusGeneric` reads the
    /// options (the key specs find the first).
    Georadius,
    /// GEORADIUSBYMEMBER: as [`KeysProc::Georadius`], options starting one argument earlier.
    GeoradiusByMember,
    /// XREAD: the keys follow the first STREAMS that is not an option's value, as `xreadCommand`
    /// reads the options (the key specs take the first STREAMS anywhere).
    Xread,
    /// XREADGROUP: as [`KeysProc::Xread`], with GROUP and NOACK.
    Xreadgroup,
}

/// Why a request did not resolve to a command; `Display` is the text after `-ERR `, as Redis words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command '{name}', with args beginning with: {args}")]
    Unknown { name: String, args: String },
    #[error("unknown subcommand '{sub}'. Try {parent} HELP.")]
    UnknownSubcommand { parent: String, sub: String },
    #[error("wrong number of arguments for '{0}' command")]
    Arity(String),
}

/// Redis prints at most this many bytes of a user-supplied name or argument list in an error.
const ERR_ARG_LIMIT: usize = 128;

impl CommandError {
    /// The error for a command name that is not in the table, formatted byte for byte as Redis's
    /// `commandCheckExistence` does: the name cut to 128 bytes, then quoted arguments until the
    /// list reaches 128 bytes (the last one cut to fit), each followed by a space.
    pub fn unknown(args: &[Bytes]) -> Self {
        let name = args.first().map(|a| c_str(a)).unwrap_or_default();
        let mut list = Vec::new();
        for arg in args.iter().skip(1) {
            if list.len() >= ERR_ARG_LIMIT {
                break;
            }
            let room = ERR_ARG_LIMIT - list.len();
            let arg = c_str(arg);
            list.push(b'\'');
            list.extend_from_slice(&arg[..arg.len().min(room)]);
            list.extend_from_slice(b"' ");
        }
        CommandError::Unknown {
            name: error_text(&name[..name.len().min(ERR_ARG_LIMIT)]),
            args: error_text(&list),
        }
    }

    /// The error for a container command (`args[0]`) whose subcommand `args[1]` is unknown.
    pub fn unknown_subcommand(args: &[Bytes]) -> Self {
        let parent = args.first().map(|a| c_str(a)).unwrap_or_default();
        let sub = args.get(1).map(|a| c_str(a)).unwrap_or_default();
        CommandError::UnknownSubcommand {
            parent: error_text(&parent.to_ascii_uppercase()),
            sub: error_text(&sub[..sub.len().min(ERR_ARG_LIMIT)]),
        }
    }
}

/// Redis formats arguments with `%s`, which stops at the first NUL byte.
fn c_str(arg: &[u8]) -> &[u8] {
    match memchr::memchr(0, arg) {
        Some(end) => &arg[..end],
        None => arg,
    }
}

/// Redis replaces CR and LF in error texts so the reply stays one line; bytes that are not UTF-8
/// become U+FFFD because the error is carried as a `String`.
fn error_text(bytes: &[u8]) -> String {
    let mapped: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&mapped).into_owned()
}

/// Resolve a request's arguments to its command (or subcommand) and check arity.
///
/// Mirrors Redis's `processCommand`: names are ASCII case-insensitive; a container command with
/// at least one argument resolves to its subcommand (so `CLIENT` alone is an arity error of
/// `client`, and `COMMAND` alone is the COMMAND command); arity is checked against the subcommand.
pub fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, CommandError> {
    let Some(cmd) = args.first().and_then(|name| lookup::command(name)) else {
        return Err(CommandError::unknown(args));
    };
    let spec = match args.get(1) {
        Some(sub) if cmd.is_container() => {
            lookup::subcommand(cmd, sub).ok_or_else(|| CommandError::unknown_subcommand(args))?
        }
        _ => cmd,
    };
    if !spec.arity_ok(args.len()) {
        return Err(CommandError::Arity(spec.name.to_owned()));
    }
    Ok(spec)
}

/// Look a command up by name (`get`, `CLIENT|SETNAME`), without arity checks. For configuration
/// and policy code that names commands; requests go through [`resolve`].
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    match name.split_once('|') {
        None => lookup::command(name.as_bytes()),
        Some((parent, sub)) => {
            lookup::subcommand(lookup::command(parent.as_bytes())?, sub.as_bytes())
        }
    }
}

/// The top-level commands, sorted by name.
pub fn commands() -> &'static [CommandSpec] {
    &table::COMMANDS
}

/// Every command and subcommand; `all()[spec.id as usize]` is `spec`.
pub fn all() -> &'static [&'static CommandSpec] {
    &table::ALL
}

/// A command line split on white space into its arguments: for unit tests across the crate.
#[cfg(test)]
pub(crate) fn test_args(line: &str) -> Vec<Bytes> {
    line.split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn resolve_words(words: &[&str]) -> Result<&'static CommandSpec, CommandError> {
        resolve(&args(words))
    }

    #[test]
    fn table_is_sorted_and_ids_are_dense() {
        for pair in table::COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} !< {}",
                pair[0].name,
                pair[1].name
            );
        }
        for (i, spec) in all().iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{}", spec.name);
            assert!(spec.name.len() <= lookup::MAX_NAME);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            for pair in spec.subcommands.windows(2) {
                assert!(pair[0].name < pair[1].name);
            }
            for sub in spec.subcommands {
                assert!(sub.name.starts_with(&format!("{}|", spec.name)));
                assert!(!sub.is_container());
            }
        }
    }

    #[test]
    fn resolve_is_case_insensitive() {
        for name in ["get", "GET", "Get", "gEt"] {
            assert_eq!(resolve_words(&[name, "k"]).unwrap().name, "get");
        }
        assert_eq!(
            resolve_words(&["ClIeNt", "SetName", "x"]).unwrap().name,
            "client|setname"
        );
        assert_eq!(
            resolve_words(&["georadiusbymember_ro", "k", "m", "1", "km"])
                .unwrap()
                .name,
            "georadiusbymember_ro"
        );
    }

    #[test]
    fn resolve_subcommands() {
        assert_eq!(
            resolve_words(&["config", "get", "maxmemory"]).unwrap().name,
            "config|get"
        );
        assert_eq!(
            resolve_words(&["XINFO", "STREAM", "s"]).unwrap().name,
            "xinfo|stream"
        );
        assert_eq!(
            resolve_words(&["client", "setinfo", "lib-name", "x"])
                .unwrap()
                .name,
            "client|setinfo"
        );
        // A container with no subcommand resolves to itself, so its own arity decides.
        assert_eq!(resolve_words(&["COMMAND"]).unwrap().name, "command");
        assert_eq!(
            resolve_words(&["CLIENT"]).unwrap_err(),
            CommandError::Arity("client".into())
        );
        assert_eq!(
            resolve_words(&["command", "count"]).unwrap().name,
            "command|count"
        );
    }

    #[test]
    fn unknown_subcommand_text() {
        let err = resolve_words(&["client", "foo"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown subcommand 'foo'. Try CLIENT HELP."
        );
        // The parent is echoed upper-cased as sent; the subcommand is cut to 128 bytes.
        let long = "x".repeat(200);
        let err = resolve_words(&["Config", &long, "a"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unknown subcommand '{}'. Try CONFIG HELP.", "x".repeat(128))
        );
        let err = resolve_words(&["object", "encoding", "k"]).unwrap_err();
        assert!(
            matches!(err, CommandError::Unknown { .. }),
            "OBJECT is not in the table"
        );
    }

    #[test]
    fn arity_errors_name_the_subcommand() {
        assert_eq!(
            resolve_words(&["get"]).unwrap_err().to_string(),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(
            resolve_words(&["GET", "a", "b"]).unwrap_err().to_string(),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(
            resolve_words(&["CLIENT", "SETNAME"])
                .unwrap_err()
                .to_string(),
            "wrong number of arguments for 'client|setname' command"
        );
        assert!(resolve_words(&["mset", "a", "b", "c", "d"]).is_ok());
        assert!(resolve_words(&["mset", "a"]).is_err());
    }

    #[test]
    fn unknown_command_text() {
        assert_eq!(
            resolve_words(&["foo", "a", "b"]).unwrap_err().to_string(),
            "unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            resolve_words(&["foo"]).unwrap_err().to_string(),
            "unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            resolve(&[]).unwrap_err().to_string(),
            "unknown command '', with args beginning with: "
        );
        // The list stops once it reaches 128 bytes, the argument that crosses it cut to fit.
        let long = "x".repeat(200);
        assert_eq!(
            resolve_words(&["foo", &long, "b"]).unwrap_err().to_string(),
            format!(
                "unknown command 'foo', with args beginning with: '{}' ",
                "x".repeat(128)
            )
        );
        let a = "a".repeat(100);
        assert_eq!(
            resolve_words(&["foo", &a, "bcdefghijklmnopqrstuvwxyz0123456789", "c"])
                .unwrap_err()
                .to_string(),
            format!(
                "unknown command 'foo', with args beginning with: '{a}' 'bcdefghijklmnopqrstuvwxyz' "
            )
        );
        // Names are cut to 128 bytes; CR/LF become spaces; `%s` stops at NUL.
        let name = "n".repeat(130);
        assert_eq!(
            resolve_words(&[&name]).unwrap_err().to_string(),
            format!(
                "unknown command '{}', with args beginning with: ",
                "n".repeat(128)
            )
        );
        assert_eq!(
            resolve_words(&["fo\r\no", "a\nb", "c\0d"])
                .unwrap_err()
                .to_string(),
            "unknown command 'fo  o', with args beginning with: 'a b' 'c' "
        );
    }

    #[test]
    fn lookup_by_name() {
        assert_eq!(lookup("GET").unwrap().name, "get");
        assert_eq!(lookup("client|KILL").unwrap().name, "client|kill");
        assert!(lookup("client|nope").is_none());
        assert!(lookup("nope").is_none());
        assert!(lookup("get|x").is_none());
    }

    #[test]
    fn shared_commands_only() {
        for name in ["lcs", "object", "fcall", "swapdb", "migrate", "asking"] {
            assert!(lookup(name).is_none(), "{name} should be excluded");
        }
        for name in ["get", "xread", "eval", "sort_ro", "client|setinfo", "hello"] {
            assert!(lookup(name).is_some(), "{name} should be present");
        }
    }

    #[test]
    fn resolve_is_fast() {
        // Nothing in resolve() allocates on success (a stack buffer, a static index); this guards
        // the time. The best of several batches is kept so a descheduled batch on a shared
        // machine does not fail the test; the bound is loose (debug builds are slow) and only
        // catches gross regressions of the < 50 ns release-build target.
        let get = args(&["GET", "key"]);
        let lower = args(&["get", "key"]);
        let batch = 20_000u32;
        let best = (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(resolve(std::hint::black_box(&get)).unwrap());
                    std::hint::black_box(resolve(std::hint::black_box(&lower)).unwrap());
                }
                start.elapsed() / (2 * batch)
            })
            .min()
            .unwrap();
        let budget = if cfg!(debug_assertions) {
            std::time::Duration::from_micros(1)
        } else {
            std::time::Duration::from_nanos(50)
        };
        eprintln!("resolve: {best:?} per call");
        assert!(best < budget, "resolve took {best:?} per call");
    }
}

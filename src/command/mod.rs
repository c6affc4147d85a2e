//! The command table: what respite knows of each command, and the one place that knows it.
//!
//! OWNED BY THE COMMAND-TABLE WORK (stub). Every command Redis 7.x, Valkey and Dragonfly share, with
//! arity, flags, ACL categories and key specs as the upstream's `COMMAND INFO` reports them, plus
//! respite's own [`Route`] for it. Prefixing, TTL policy, caching and routing are driven from here; a
//! command that is not in the table is refused and never forwarded.
use bytes::Bytes;

/// Where a command goes. Decided by respite, not by the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Stateless with respect to the connection: safe on a shared, multiplexed upstream connection.
    Forward,
    /// Answered by respite itself (PING, ECHO, HELLO, QUIT, RESET, CLIENT SETNAME/GETNAME/ID/INFO/SETINFO,
    /// AUTH, SELECT, …): the session handles it and never forwards it.
    Proxy,
    /// Changes or depends on per-connection state on the upstream (MULTI/EXEC/WATCH, SUBSCRIBE family,
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

/// Resolve a request's arguments to its command (or subcommand) and check arity.
pub fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, CommandError> {
    let _ = args;
    todo!("command table")
}

/// Where this invocation goes (some commands are stateful only with certain arguments, e.g. XREAD BLOCK).
pub fn route(spec: &CommandSpec, args: &[Bytes]) -> Route {
    let _ = (spec, args);
    todo!("command table")
}

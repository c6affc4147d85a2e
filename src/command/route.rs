//! respite's routing policy: which commands it answers itself, which it forwards on a shared
//! upstream connection, which make a transaction the session queues, and which it refuses
//! because they would tie an upstream connection to one client.
use std::sync::LazyLock;

use bytes::Bytes;

use super::{CommandSpec, Flags, Route, all};

// Reasons are shown as "-ERR <command> is not supported yet: <reason>", so short noun phrases.
// WATCH needs the upstream connection across round trips; the rest of a transaction does not.
const WATCH: Route = Route::Stateful("transaction");
const SUBSCRIBER: Route = Route::Stateful("subscriber mode");
const MONITOR: Route = Route::Stateful("monitor mode");
const BLOCKING: Route = Route::Stateful("blocking command");
const CONNECTION: Route = Route::Stateful("connection state");
const REPLICATION: Route = Route::Stateful("replication");
const SCRIPT_DEBUG: Route = Route::Stateful("script debugging");

#[derive(Clone, Copy)]
enum Policy {
    Fixed(Route),
    /// XREAD/XREADGROUP block only with a BLOCK option.
    Xread,
}

/// The policy of every spec, by `CommandSpec::id`, so routing costs one index per request.
static POLICIES: LazyLock<Box<[Policy]>> =
    LazyLock::new(|| all().iter().map(|s| policy(s)).collect());

/// Where this invocation goes (some commands are stateful only with certain arguments, e.g. XREAD BLOCK).
pub fn route(spec: &CommandSpec, args: &[Bytes]) -> Route {
    match POLICIES.get(spec.id as usize) {
        Some(Policy::Fixed(route)) => *route,
        Some(Policy::Xread) if xread_blocks(args) => BLOCKING,
        Some(Policy::Xread) => Route::Forward,
        // Read from the upstream's own table: by its name and flags, as a built-in entry would
        // be, and any CLIENT subcommand respite does not know is per-connection state.
        None if spec.name.starts_with("client|") => CONNECTION,
        None => match policy(spec) {
            Policy::Fixed(route) => route,
            Policy::Xread => CONNECTION,
        },
    }
}

fn policy(spec: &CommandSpec) -> Policy {
    let route = match spec.name {
        // Connection-level commands respite answers from its own session state.
        "ping" | "echo" | "hello" | "quit" | "reset" | "auth" | "select" | "client|setname"
        | "client|getname" | "client|id" | "client|info" | "client|setinfo" => Route::Proxy,

        // Queued by the session and sent upstream as one job at EXEC.
        "multi" | "exec" | "discard" | "unwatch" => Route::Transaction,
        "watch" => WATCH,
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
        | "sunsubscribe" => SUBSCRIBER,
        "monitor" => MONITOR,
        "xread" | "xreadgroup" => return Policy::Xread,
        // WAIT and WAITAOF are listed by name: Redis 7.0 does not flag WAIT as blocking.
        "blpop" | "brpop" | "blmove" | "brpoplpush" | "blmpop" | "bzpopmin" | "bzpopmax"
        | "bzmpop" | "wait" | "waitaof" => BLOCKING,
        // Per-connection modes on the upstream side, or other clients' connections, which on a
        // shared upstream connection would be respite's own.
        "client|reply"
        | "client|tracking"
        | "client|caching"
        | "client|no-evict"
        | "client|no-touch"
        | "client|unblock"
        | "client|kill"
        | "client|pause"
        | "client|unpause"
        | "client|list"
        | "client|getredir"
        | "client|trackinginfo"
        | "readonly"
        | "readwrite"
        | "asking" => CONNECTION,
        // Turns the connection into a replication link.
        "replconf" | "sync" | "psync" => REPLICATION,
        // SCRIPT DEBUG YES/SYNC puts this connection into the Lua debugger.
        "script|debug" => SCRIPT_DEBUG,
        // Anything blocking that a newer table adds still never lands on a shared connection.
        _ if spec.flags.contains(Flags::BLOCKING) => BLOCKING,
        _ => Route::Forward,
    };
    Policy::Fixed(route)
}

/// True if XREAD/XREADGROUP carries a BLOCK option, parsed like Redis's `xreadCommand` (t_stream.c):
/// options are read left to right up to STREAMS, and the first malformed one ends the parse with
/// an error before anything could block.
fn xread_blocks(args: &[Bytes]) -> bool {
    let group = args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"xreadgroup"));
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        let opt = &args[i];
        let is = |word: &str| c_str(opt).eq_ignore_ascii_case(word.as_bytes());
        if is("block") && more >= 1 {
            return true;
        } else if is("count") && more >= 1 {
            i += 1;
        } else if is("streams") && more >= 1 {
            return false;
        } else if is("group") && more >= 2 && group {
            i += 2;
        } else if is("noack") && group {
        } else {
            return false;
        }
        i += 1;
    }
    false
}

/// Redis compares options with `strcasecmp`, which stops at a NUL byte.
fn c_str(arg: &[u8]) -> &[u8] {
    memchr::memchr(0, arg).map_or(arg, |end| &arg[..end])
}

#[cfg(test)]
mod tests {
    use super::super::{lookup, resolve};
    use super::*;

    fn route_of(line: &str) -> Route {
        let args: Vec<Bytes> = line
            .split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        route(resolve(&args).expect(line), &args)
    }

    #[test]
    fn proxied() {
        for line in [
            "PING",
            "ping hi",
            "ECHO x",
            "HELLO 3",
            "QUIT",
            "RESET",
            "AUTH pw",
            "AUTH user pw",
            "SELECT 1",
            "CLIENT SETNAME n",
            "CLIENT GETNAME",
            "CLIENT ID",
            "CLIENT INFO",
            "CLIENT SETINFO LIB-NAME redis-py",
        ] {
            assert_eq!(route_of(line), Route::Proxy, "{line}");
        }
    }

    #[test]
    fn transaction() {
        for line in ["MULTI", "EXEC", "DISCARD", "UNWATCH", "unwatch"] {
            assert_eq!(route_of(line), Route::Transaction, "{line}");
        }
    }

    #[test]
    fn stateful() {
        for (line, reason) in [
            ("WATCH a b", "transaction"),
            ("SUBSCRIBE c", "subscriber mode"),
            ("PSUBSCRIBE c*", "subscriber mode"),
            ("SSUBSCRIBE c", "subscriber mode"),
            ("UNSUBSCRIBE", "subscriber mode"),
            ("PUNSUBSCRIBE", "subscriber mode"),
            ("SUNSUBSCRIBE", "subscriber mode"),
            ("MONITOR", "monitor mode"),
            ("BLPOP a 0", "blocking command"),
            ("BRPOP a 0", "blocking command"),
            ("BLMOVE a b LEFT RIGHT 0", "blocking command"),
            ("BRPOPLPUSH a b 0", "blocking command"),
            ("BLMPOP 0 1 a LEFT", "blocking command"),
            ("BZPOPMIN a 0", "blocking command"),
            ("BZPOPMAX a 0", "blocking command"),
            ("BZMPOP 0 1 a MIN", "blocking command"),
            ("WAIT 1 0", "blocking command"),
            ("XREAD BLOCK 0 STREAMS s $", "blocking command"),
            ("XREAD COUNT 1 block 100 STREAMS s 0", "blocking command"),
            (
                "XREADGROUP GROUP g c BLOCK 0 STREAMS s >",
                "blocking command",
            ),
            (
                "XREADGROUP GROUP g c NOACK BLOCK 0 STREAMS s >",
                "blocking command",
            ),
            ("CLIENT REPLY OFF", "connection state"),
            ("CLIENT TRACKING ON", "connection state"),
            ("CLIENT CACHING YES", "connection state"),
            ("CLIENT NO-EVICT ON", "connection state"),
            ("CLIENT UNBLOCK 5", "connection state"),
            ("CLIENT KILL ID 5", "connection state"),
            ("CLIENT PAUSE 10", "connection state"),
            ("CLIENT UNPAUSE", "connection state"),
            ("CLIENT LIST", "connection state"),
            ("CLIENT GETREDIR", "connection state"),
            ("CLIENT TRACKINGINFO", "connection state"),
            ("READONLY", "connection state"),
            ("READWRITE", "connection state"),
            ("REPLCONF listening-port 1", "replication"),
            ("SCRIPT DEBUG YES", "script debugging"),
        ] {
            assert_eq!(route_of(line), Route::Stateful(reason), "{line}");
        }
    }

    #[test]
    fn forwarded() {
        for line in [
            "GET k",
            "SET k v",
            "COMMAND",
            "COMMAND COUNT",
            "COMMAND INFO get",
            "CLIENT HELP",
            "PUBLISH c m",
            "SPUBLISH c m",
            "PUBSUB CHANNELS",
            "EVAL s 0",
            "SCRIPT LOAD s",
            "CONFIG GET maxmemory",
            "XREAD STREAMS s 0",
            "XREAD COUNT 10 STREAMS block 0",
            "XREADGROUP GROUP g c STREAMS s >",
            // Malformed before BLOCK: Redis replies with an error without blocking.
            "XREAD NOACK BLOCK 0 STREAMS s 0",
            "XREAD GROUP g c BLOCK 0 STREAMS s 0",
            "XREAD FOO BLOCK 0 STREAMS s 0",
            // BLOCK as the last argument is not the option.
            "XREAD COUNT 1 STREAMS BLOCK",
        ] {
            assert_eq!(route_of(line), Route::Forward, "{line}");
        }
    }

    #[test]
    fn every_entry_has_a_route() {
        for spec in all() {
            let _ = route(spec, &[]);
        }
        // Names the policy refers to must be real entries (or, for the few newer than Redis 7.0,
        // deliberately absent), so a typo cannot silently turn into Forward.
        let absent_on_purpose = ["waitaof", "client|no-touch", "asking", "sync", "psync"];
        for name in [
            "ping",
            "echo",
            "hello",
            "quit",
            "reset",
            "auth",
            "select",
            "client|setname",
            "client|getname",
            "client|id",
            "client|info",
            "client|setinfo",
            "multi",
            "monitor",
            "replconf",
            "script|debug",
            "client|trackinginfo",
            "readwrite",
        ] {
            assert!(lookup(name).is_some(), "{name}");
        }
        for name in absent_on_purpose {
            assert!(lookup(name).is_none(), "{name}");
        }
    }
}

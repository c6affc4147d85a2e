//! Commands respite answers itself, and byte-exact forwarding of ordinary commands.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, words};

/// Run `script` (one command per line) on `conn`, returning each raw reply.
pub fn run_script(conn: &mut Raw, script: &str) -> Vec<Vec<u8>> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let reply = conn.cmd(&words(l));
            if l.to_ascii_uppercase().starts_with("SCAN ") {
                sorted_scan(&reply)
            } else {
                reply
            }
        })
        .collect()
}

/// A one-batch SCAN reply (`*2`, cursor, `*N`, N bulk strings) with its keys sorted: the order
/// depends on the server's hash table (its seed, how far a rehash got), not on respite.
fn sorted_scan(reply: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply);
    let lines: Vec<&str> = text.split("\r\n").collect();
    if lines.len() < 5 || !lines[3].starts_with('*') {
        return reply.to_vec();
    }
    let mut keys: Vec<(&str, &str)> = lines[4..lines.len() - 1]
        .chunks(2)
        .map(|c| (c[0], c.get(1).copied().unwrap_or("")))
        .collect();
    keys.sort_by(|a, b| a.1.cmp(b.1));
    let mut out = lines[..4].join("\r\n") + "\r\n";
    for (len, key) in keys {
        out.push_str(&format!("{len}\r\n{key}\r\n"));
    }
    out.into_bytes()
}

/// A workload over every common data type; explicit stream IDs and long TTLs keep replies
/// deterministic between two runs on the same server.
pub const WORKLOAD: &str = "
SET s1 hello
GET s1
APPEND s1 world
STRLEN s1
GETRANGE s1 2 6
SET s2 v EX 1000
TTL s2
SET s2 x NX
SET s3 y XX
GET nosuch
MSET a 1 b 2 c 3
MGET a b c nosuch
INCR counter
INCRBY counter 41
DECR counter
INCRBYFLOAT f 1.5
INCR s1
HSET h f1 v1 f2 v2 f3 v3
HGET h f1
HGETALL h
HINCRBY h n 5
HDEL h f2
HLEN h
HSCAN h 0
RPUSH l a b c d
LPUSH l z
LRANGE l 0 -1
LPOP l
RPOP l 2
LLEN l
LINDEX l 1
SADD set a b c
SISMEMBER set b
SMEMBERS set
SCARD set
SREM set a
ZADD z 1 one 2 two 3 three
ZRANGE z 0 -1 WITHSCORES
ZSCORE z two
ZINCRBY z 2.5 one
ZREVRANGE z 0 1
ZRANK z three
ZRANGEBYSCORE z 2 +inf
ZPOPMIN z
XADD st 1-1 f v
XADD st 1-2 g w
XLEN st
XRANGE st - +
XREAD COUNT 10 STREAMS st 0
EXPIRE l 500
PERSIST l
TTL l
TYPE z
EXISTS s1 s2 nosuch
DEL s1 nosuch
SCAN 0 COUNT 1000
DBSIZE
HSTRLEN h f1
GET
WRONGTYPE_TEST
LPUSH s2 x
";

both!(workload_matches_direct, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let direct = run_script(&mut server.raw(), WORKLOAD);
    server.raw().cmd(&words("FLUSHALL"));
    let proxied = run_script(&mut proxy.raw(), WORKLOAD);
    for (i, (d, p)) in direct.iter().zip(&proxied).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(d),
            "reply {i} differs"
        );
    }
    assert_eq!(direct.len(), proxied.len());
});

both!(resp3_workload_matches_direct, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut d = server.raw();
    let mut p = proxy.raw();
    let hello_d = d.cmd(&words("HELLO 3"));
    let hello_p = p.cmd(&words("HELLO 3"));
    assert!(
        hello_p.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello_p)
    );
    assert_eq!(hello_d[..4], hello_p[..4]);
    let direct = run_script(&mut d, WORKLOAD);
    server.raw().cmd(&words("FLUSHALL"));
    let proxied = run_script(&mut p, WORKLOAD);
    assert_eq!(
        proxied
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>(),
        direct
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>(),
    );
});

both!(local_commands_answer_like_redis, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("PING")), b"+PONG\r\n");
    assert_eq!(p.cmd(&words("PING hi")), b"$2\r\nhi\r\n");
    assert_eq!(p.cmd(&words("ECHO x")), b"$1\r\nx\r\n");
    assert_eq!(p.cmd(&words("CLIENT GETNAME")), b"$-1\r\n");
    assert_eq!(p.cmd(&words("CLIENT SETNAME app-1")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("CLIENT GETNAME")), b"$5\r\napp-1\r\n");
    assert!(
        p.cmd(&[b"CLIENT", b"SETNAME", b"a b"])
            .starts_with(b"-ERR Client names cannot contain spaces")
    );
    let id = p.cmd(&words("CLIENT ID"));
    assert!(id.starts_with(b":"), "{id:?}");
    let info = String::from_utf8(p.cmd(&words("CLIENT INFO"))).unwrap();
    let want_id = std::str::from_utf8(&id[1..id.len() - 2]).unwrap();
    assert!(
        info.contains(&format!("id={want_id} ")) && info.contains("name=app-1 "),
        "{info}"
    );
    assert!(info.contains("resp=2"), "{info}");
    assert_eq!(p.cmd(&words("CLIENT SETINFO LIB-NAME mylib")), b"+OK\r\n");
    // HELLO switches the protocol; nulls and maps follow it.
    let hello = p.cmd(&words("HELLO 3 SETNAME other"));
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(p.cmd(&words("GET nosuch")), b"_\r\n");
    assert_eq!(p.cmd(&words("CLIENT GETNAME")), b"$5\r\nother\r\n");
    assert_eq!(
        p.cmd(&words("HELLO 4")),
        b"-NOPROTO unsupported protocol version\r\n"
    );
    assert!(
        p.cmd(&words("HELLO 3 AUTH nobody pw"))
            .starts_with(b"-WRONGPASS")
    );
    assert_eq!(p.cmd(&words("HELLO 3 AUTH default pw"))[..4], *b"%7\r\n");
    assert_eq!(p.cmd(&words("RESET")), b"+RESET\r\n");
    assert_eq!(p.cmd(&words("GET nosuch")), b"$-1\r\n");
    assert_eq!(p.cmd(&words("CLIENT GETNAME")), b"$-1\r\n");
    assert_eq!(p.cmd(&words("SELECT 0")), b"+OK\r\n");
    // Another database: the upstream's (see pinned.rs).
    assert_eq!(p.cmd(&words("SELECT 1")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("SELECT 0")), b"+OK\r\n");
    assert!(
        p.cmd(&words("AUTH pw"))
            .starts_with(b"-ERR AUTH <password> called without")
    );
    assert_eq!(p.cmd(&words("QUIT")), b"+OK\r\n");
    assert!(p.closed());
});

both!(unknown_and_stateful_commands_are_refused, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    let mut d = server.raw();
    // Unknown commands: the same text as Redis, and nothing reaches the upstream.
    assert_eq!(
        p.cmd(&words("NOSUCHCMD a b")),
        d.cmd(&words("NOSUCHCMD a b"))
    );
    assert_eq!(p.cmd(&words("GET")), d.cmd(&words("GET")));
    // (MULTI is queued by respite itself: see transactions.rs.)
    // (WATCH, blocking commands and MONITOR run on pinned connections: see pinned.rs and
    // client_commands.rs; Pub/Sub is served: see pubsub.rs; CLIENT TRACKING: see tracking.rs.)
    // XREAD without BLOCK is an ordinary read and is forwarded.
    assert_eq!(p.cmd(&words("XREAD STREAMS s 0")), b"*-1\r\n");
    assert_eq!(p.cmd(&words("PING")), b"+PONG\r\n");
});

both!(inline_commands_work_like_redis, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    p.send(b"SET k \"a b\\r\\n\"\r\nGET k\r\n\r\nPING\n");
    assert_eq!(p.reply().unwrap(), b"+OK\r\n");
    assert_eq!(p.reply().unwrap(), b"$5\r\na b\r\n\r\n");
    assert_eq!(p.reply().unwrap(), b"+PONG\r\n");
    p.send(b"SET k 'unbalanced\r\n");
    let r = p.reply().unwrap();
    assert!(
        r.starts_with(b"-ERR Protocol error: unbalanced"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert!(p.closed());
    let _ = encode(&[]);
});

both!(unix_socket_clients_are_served, |kind: Kind| {
    use std::io::{Read, Write};
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut s = Raw::connect_unix(proxy.unix.as_ref().expect("unix listener"));
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nu\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\nu\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 64];
    while got.len() < 12 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, b"+OK\r\n$1\r\n1\r\n");
});

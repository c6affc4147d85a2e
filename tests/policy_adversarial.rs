//! Two tenants on one upstream. Tenant A tries every way it can think of to read, write, list,
//! count, delete, expire, rename into or observe tenant B's keys and channels; each attempt must be
//! refused or confined to A's own namespace. Afterwards B's keys are exactly as B left them and no
//! key exists outside the two namespaces.
mod policy_support;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use policy_support::{Conn, decode_bulks, now_ms, show};
use respite::policy::{OnExcess, Tenant, TtlRule};
use support::{KINDS, Server};

const SECRET: &str = "SECRET-B";

fn tenants() -> (Tenant, Tenant) {
    let a = Tenant::builder("a")
        .credentials("alice", "pa")
        .prefix("a:")
        .allow(&["@all"])
        .ttl(TtlRule::new("*", Some(600_000), None, OnExcess::Cap))
        .build();
    let b = Tenant::builder("b")
        .credentials("bob", "pb")
        .prefix("b:")
        .allow(&["@all"])
        .build();
    (a, b)
}

/// B's keys as stored upstream: name → (DUMP, has TTL).
fn snapshot(c: &mut Conn) -> BTreeMap<Bytes, (Bytes, bool)> {
    let keys = decode_bulks(&c.line("KEYS b:*")).unwrap();
    keys.into_iter()
        .map(|k| {
            let dump = c.call(&[&b"DUMP"[..], &k]);
            let ttl = c.call(&[&b"PTTL"[..], &k]);
            (k, (dump, &ttl[..] != b":-1\r\n"))
        })
        .collect()
}

#[test]
fn tenant_a_cannot_reach_tenant_b() {
    let (a, b) = tenants();
    for kind in KINDS {
        let server = Server::start(kind);
        let mut c = Conn::to(&server);
        for line in [
            format!("SET x {SECRET}"),
            format!("RPUSH list {SECRET}"),
            format!("HSET h f {SECRET}"),
            format!("ZADD z 1 {SECRET}"),
            format!("SADD set {SECRET}"),
            format!("XADD s 1-1 f {SECRET}"),
            "SET counter 1".to_string(),
        ] {
            let r = c.via_line(&b, &line);
            assert!(!r.starts_with(b"-"), "{}", show(&r));
        }
        let before = snapshot(&mut c);
        assert_eq!(before.len(), 7);

        // A subscriber on B's channel, straight on the upstream (as B's session would be).
        let mut sub = Conn::to(&server);
        sub.line("SUBSCRIBE b:news");

        let attacks = [
            // Reading B's keys by their upstream names, or by any spelling.
            "GET b:x",
            "GET x",
            "MGET b:x x b:counter",
            "HGETALL b:h",
            "LRANGE b:list 0 -1",
            "ZRANGE b:z 0 -1",
            "SMEMBERS b:set",
            "XRANGE b:s - +",
            "XREAD STREAMS b:s 0",
            "DUMP b:x",
            "EXISTS b:x b:list",
            "TYPE b:x",
            "STRLEN b:x",
            "MEMORY USAGE b:x",
            "SORT b:list ALPHA",
            "SORT b:list ALPHA GET b:x",
            "SORT_RO b:list BY nosort GET #",
            "SUNION b:set set",
            "ZUNION 2 b:z z",
            "SINTERCARD 1 b:set",
            // Patterns and listings.
            "KEYS *",
            "KEYS b:*",
            "KEYS *b*",
            "KEYS \\*",
            "KEYS [b]:*",
            "KEYS ?:*",
            "SCAN 0 COUNT 1000",
            "SCAN 0 MATCH b:* COUNT 1000",
            "SCAN 0 MATCH * TYPE string COUNT 1000",
            "RANDOMKEY",
            "DBSIZE",
            // Writes, deletes, expiry and renames aimed at B.
            "SET b:x pwned",
            "DEL b:x b:list x",
            "UNLINK b:h",
            "GETDEL b:x",
            "EXPIRE b:x 1",
            "PEXPIRE b:counter 1",
            "PERSIST b:x",
            "RENAME b:x mine",
            "RENAMENX b:x mine",
            "COPY b:x mine",
            "LMOVE b:list mine LEFT LEFT",
            "SMOVE b:set mine m",
            "RPOPLPUSH b:list mine",
            "SUNIONSTORE b:set b:set",
            "ZUNIONSTORE b:z 1 b:z",
            "SORT b:list ALPHA STORE b:list",
            "BITOP OR b:x b:x",
            "INCR b:counter",
            "XGROUP CREATE b:s g 0",
            "XADD b:s * f v",
            "APPEND b:x more",
            "SETRANGE b:x 0 zz",
            "RESTORE b:x 0 payload REPLACE",
            "GEORADIUS b:z 0 0 1 km STORE b:z",
            "BLPOP b:list 0.01",
            "LMPOP 1 b:list LEFT",
            "ZMPOP 1 b:z MIN",
            "BZPOPMIN b:z 0.01",
            "SPOP b:set",
            "XTRIM b:s MAXLEN 0",
            "XDEL b:s 1-1",
            "HDEL b:h f",
            "FLUSHDB",
            "FLUSHDB ASYNC",
            // Keyspace-wide and server-wide commands.
            "FLUSHALL",
            "MOVE x 1",
            "COPY x y DB 1",
            "SWAPDB 0 1",
            "INFO keyspace",
            "DEBUG OBJECT b:x",
            "CONFIG SET maxmemory 1",
            "CLIENT LIST",
            "CLIENT KILL TYPE normal",
            "MONITOR",
            "SLOWLOG GET",
            "OBJECT ENCODING b:x",
            "MIGRATE 127.0.0.1 1 b:x 0 1",
            "LASTSAVE",
            "SCRIPT FLUSH",
            "FUNCTION FLUSH",
            "MEMORY DOCTOR",
            "LATENCY LATEST",
            "ACL LIST",
            "CLUSTER GETKEYSINSLOT 0 10",
            "PUBSUB NUMPAT",
            "SELECT 1",
            "HELLO 3",
            // Scripts and patterns that could name B's keys.
            "EVAL return_redis.call('GET','b:x') 0",
            "EVAL x 1 b:x",
            "EVALSHA 0000000000000000000000000000000000000000 0",
            "SORT b:list BY b:* ALPHA",
            "SORT list GET b:*",
            "SCRIPT LOAD x",
            // Pub/Sub.
            "PUBLISH b:news hi",
            "PUBLISH news hi",
            "SPUBLISH b:news hi",
            "PUBSUB CHANNELS *",
            "PUBSUB NUMSUB b:news news",
        ];
        for line in attacks {
            let reply = c.via_line(&a, line);
            assert!(
                !String::from_utf8_lossy(&reply).contains(SECRET),
                "{kind:?}: `{line}` leaked B's data: {}",
                show(&reply)
            );
            if line.starts_with("PUBLISH") || line.starts_with("SPUBLISH") {
                assert_eq!(
                    &reply[..],
                    b":0\r\n",
                    "{kind:?}: `{line}` reached B's subscriber"
                );
            }
            if line.starts_with("PUBSUB NUMSUB") {
                assert!(
                    !show(&reply).contains(":1"),
                    "{kind:?}: `{line}` counted B's subscriber"
                );
            }
        }
        // Inline-looking bytes inside an argument stay one argument of one command.
        let smuggle = vec![
            Bytes::from_static(b"GET"),
            Bytes::from_static(b"x\r\n*2\r\n$3\r\nDEL\r\n$3\r\nb:x\r\n"),
        ];
        c.via(&a, &smuggle, now_ms());

        // FLUSHALL is A's whole server: its namespace, never B's keys (judged by the snapshot
        // below).
        assert_eq!(show(&c.via_line(&a, "FLUSHALL")), "+OK ", "{kind:?}");
        // Refusals say why.
        for (line, start) in [
            ("MOVE x 1", "-ERR 'move' is not available"),
            ("EVAL x 0", "-ERR 'eval' is not available"),
            ("SORT list BY w_*", "-ERR 'sort' is not available"),
            ("OBJECT ENCODING x", "-ERR unknown command 'OBJECT'"),
        ] {
            let reply = show(&c.via_line(&a, line));
            assert!(reply.starts_with(start), "{kind:?}: `{line}` → {reply}");
        }

        let after = snapshot(&mut c);
        assert_eq!(before, after, "{kind:?}: B's keys changed");
        // Nothing A did created a key outside the two namespaces.
        let all = decode_bulks(&c.line("KEYS *")).unwrap();
        for key in &all {
            assert!(
                key.starts_with(b"a:") || key.starts_with(b"b:"),
                "{kind:?}: key {key:?} outside every namespace"
            );
        }
        // And B still sees its own world, unchanged.
        assert_eq!(show(&c.via_line(&b, "DBSIZE")), ":7 ");
        assert_eq!(show(&c.via_line(&b, "GET x")), format!("$8 {SECRET} "));
        drop(sub);
    }
}

#[test]
fn credentials() {
    let src = r#"
[[tenant]]
name = "a"
username = "alice"
password = "pa"
prefix = "a:"
allow = ["@read"]
"#;
    let tenants = respite::policy::config::from_toml(src, "t.toml").unwrap();
    assert!(tenants.default_tenant().is_none());
    assert!(tenants.authenticate(b"alice", b"pa").is_ok());
    assert_eq!(
        tenants
            .authenticate(b"alice", b"pb")
            .unwrap_err()
            .to_string(),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(respite::policy::NOAUTH, "NOAUTH Authentication required.");
}

//! Standalone mode: no upstream configured, the local engine answers, with Redis's replies.
use crate::basics::run_script;
use crate::support::{Kind, Proxy, Server, TenantToml, tenants, words};

const SCRIPT: &str = "
SET user:1 ada
GET user:1
SET lock:job owner NX PX 100000
SET lock:job other NX PX 100000
INCR rate:ip
EXPIRE rate:ip 60
TTL rate:ip
INCRBYFLOAT f 0.1
HSET h name ada lang en
HGET h name
HINCRBY h visits 3
ZADD board 30 alice 20 bob 25 carol
ZINCRBY board 15 bob
ZREVRANGE board 0 -1 WITHSCORES
ZRANK board bob
ZSCORE board bob
RPUSH q a b c
LPOP q
LRANGE q 0 -1
SADD s x
SISMEMBER s x
GET h
DEL user:1 nosuch
EXISTS user:1 h
DBSIZE
NOSUCHCOMMAND
";

#[test]
fn standalone_replies_match_redis() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start("none");
    for hello in [None, Some("HELLO 3")] {
        let mut d = server.raw();
        let mut p = proxy.raw();
        if let Some(h) = hello {
            d.cmd(&words(h));
            p.cmd(&words(h));
        }
        let direct = run_script(&mut d, SCRIPT);
        let local = run_script(&mut p, SCRIPT);
        let show = |v: &Vec<Vec<u8>>| {
            v.iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&local), show(&direct), "{hello:?}");
        d.cmd(&words("FLUSHALL"));
        p.cmd(&words("FLUSHALL"));
    }
    let (status, _) = proxy.admin_get("/readyz");
    assert_eq!(status, 200);
}

#[test]
fn standalone_tenants_stay_in_their_namespace() {
    let allow = ["@all", "-@dangerous", "keys", "dbsize"];
    let toml = tenants(&[
        TenantToml::new("a", "a:").login("pa").allow(&allow),
        TenantToml::new("b", "b:").login("pb").allow(&allow),
    ]);
    let proxy = Proxy::start_with_config("none", &toml, &[]);
    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    assert_eq!(a.cmd(&words("SET k from-a")), b"+OK\r\n");
    assert_eq!(b.cmd(&words("SET k from-b")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("GET k")), b"$6\r\nfrom-a\r\n");
    assert_eq!(b.cmd(&words("GET k")), b"$6\r\nfrom-b\r\n");
    assert_eq!(a.cmd(&words("KEYS *")), b"*1\r\n$1\r\nk\r\n");
    assert_eq!(a.cmd(&words("DBSIZE")), b":1\r\n");
}

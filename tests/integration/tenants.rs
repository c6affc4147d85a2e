//! Tenants through the proxy: authentication, key namespaces, refusals, namespace-local answers
//! and default TTLs, end to end with real servers.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, encode, tenants, words};

fn tenant_config() -> String {
    tenants(&[
        TenantToml::new("alpha", "a:")
            .login("alpha-pw")
            .allow(&[
                "@all",
                "-@dangerous",
                "flushdb",
                "dbsize",
                "keys",
                "randomkey",
            ])
            .max_value_bytes(1024)
            .ttl("*", Some(3600000), 600000),
        TenantToml::new("beta", "b:")
            .login_sha256("81a80357fd6a9d82c592a32b33e1ecc2a15032504f442d7a4ca9fbc29326d4e0")
            .allow(&["@read", "@write", "@connection", "@keyspace"]),
    ])
}

both!(tenants_are_confined_to_their_namespace, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut anon = proxy.raw();
    // No default tenant: nothing runs before AUTH; wrong credentials get Redis's answer.
    assert_eq!(
        anon.cmd(&words("GET k")),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert!(
        anon.cmd(&words("AUTH alpha nope"))
            .starts_with(b"-WRONGPASS")
    );
    assert!(
        anon.cmd(&words("AUTH nobody nope"))
            .starts_with(b"-WRONGPASS")
    );
    let mut a = proxy.login("alpha", "alpha-pw");
    let mut d = server.raw();
    d.cmd(&words("SET b:secret 42"));
    // Keys are prefixed on the way in and unprefixed on the way out.
    assert_eq!(a.cmd(&words("SET k1 v1")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("MSET k2 v2 k3 v3")), b"+OK\r\n");
    assert_eq!(d.cmd(&words("GET a:k1")), b"$2\r\nv1\r\n");
    assert_eq!(a.cmd(&words("GET secret")), b"$-1\r\n");
    assert_eq!(a.cmd(&words("EXISTS b:secret")), b":0\r\n");
    let mut keys = String::from_utf8(a.cmd(&words("KEYS *"))).unwrap();
    keys = keys.replace("\r\n", " ");
    assert!(
        keys.starts_with("*3 ")
            && keys.contains("k1")
            && !keys.contains("a:")
            && !keys.contains("secret"),
        "{keys}"
    );
    let scan = String::from_utf8(a.cmd(&words("SCAN 0 COUNT 1000"))).unwrap();
    assert!(!scan.contains("secret") && !scan.contains("a:k"), "{scan}");
    assert_eq!(a.cmd(&words("DBSIZE")), b":3\r\n");
    // Default TTL: a key written without one gets the rule's default, capped ones are capped.
    let pttl = String::from_utf8(d.cmd(&words("PTTL a:k1"))).unwrap();
    let pttl: i64 = pttl[1..pttl.len() - 2].parse().unwrap();
    assert!(pttl > 0 && pttl <= 600_000, "PTTL a:k1 = {pttl}");
    assert_eq!(a.cmd(&words("SET long v EX 999999")), b"+OK\r\n");
    let pttl = String::from_utf8(d.cmd(&words("PTTL a:long"))).unwrap();
    let pttl: i64 = pttl[1..pttl.len() - 2].parse().unwrap();
    assert!(pttl > 0 && pttl <= 3_600_000, "PTTL a:long = {pttl}");
    // Value limit and refusals.
    let big = vec![b'x'; 2000];
    let r = String::from_utf8(a.cmd(&[b"SET", b"big", &big])).unwrap();
    assert!(
        r.starts_with("-ERR") && r.contains("max_value_bytes"),
        "{r}"
    );
    let r = String::from_utf8(a.cmd(&words("CONFIG GET maxmemory"))).unwrap();
    assert!(r.starts_with("-NOPERM") || r.starts_with("-ERR"), "{r}");
    let r = String::from_utf8(a.cmd(&words("FLUSHALL"))).unwrap();
    assert!(r.starts_with("-NOPERM") || r.starts_with("-ERR"), "{r}");
    // FLUSHDB empties only this tenant's namespace.
    assert_eq!(a.cmd(&words("FLUSHDB")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("DBSIZE")), b":0\r\n");
    assert_eq!(d.cmd(&words("GET b:secret")), b"$2\r\n42\r\n");
    // The other tenant sees its own key under its own name, and not alpha's commands.
    let mut b = proxy.login("beta", "beta-pw");
    assert_eq!(b.cmd(&words("GET secret")), b"$2\r\n42\r\n");
    assert_eq!(b.cmd(&words("GET k1")), b"$-1\r\n");
    // RESET drops the tenant again.
    assert_eq!(a.cmd(&words("RESET")), b"+RESET\r\n");
    assert_eq!(
        a.cmd(&words("GET k1")),
        b"-NOAUTH Authentication required.\r\n"
    );
    // HELLO without AUTH is refused as Redis refuses it; HELLO AUTH authenticates.
    assert!(
        a.cmd(&words("HELLO 3"))
            .starts_with(b"-NOAUTH HELLO must be called with the client already authenticated")
    );
    let hello = a.cmd(&words("HELLO 3 AUTH alpha alpha-pw"));
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(a.cmd(&words("SET again 1")), b"+OK\r\n");
    assert_eq!(d.cmd(&words("EXISTS a:again")), b":1\r\n");
});

#[test]
fn a_default_tenant_serves_clients_that_never_auth() {
    let server = Server::start(Kind::Redis);
    let toml = format!("default_tenant = \"alpha\"\n{}", tenant_config());
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&words("SET k v")), b"+OK\r\n");
    assert_eq!(server.raw().cmd(&words("GET a:k")), b"$1\r\nv\r\n");
}

/// B's keys as stored upstream: name → (DUMP, PTTL > 0).
fn snapshot(d: &mut Raw) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        d.send(&encode(&[
            b"SCAN", &cursor, b"MATCH", b"b:*", b"COUNT", b"1000",
        ]));
        let r = d.reply().unwrap();
        let text = r
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect::<Vec<_>>();
        // *2 / $n / cursor / *k / ($n / key)*
        cursor = text[2].clone();
        keys.extend(
            text[4..]
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| c[1].clone()),
        );
        if cursor == b"0" {
            break;
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let dump = d.cmd(&[b"DUMP", &k]);
            let ttl = d.cmd(&[b"PTTL", &k]);
            (k, dump, ttl != b":-1\r\n")
        })
        .collect()
}

both!(
    tenant_a_cannot_reach_tenant_b_through_the_proxy,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut b = proxy.login("beta", "beta-pw");
        for line in [
            "SET x SECRET",
            "RPUSH list SECRET",
            "HSET h f SECRET",
            "ZADD z 1 SECRET",
            "SADD set SECRET",
            "XADD s 1-1 f SECRET",
        ] {
            assert!(!b.cmd(&words(line)).starts_with(b"-"), "{line}");
        }
        let mut d = server.raw();
        let before = snapshot(&mut d);
        assert_eq!(before.len(), 6);
        let mut a = proxy.login("alpha", "alpha-pw");
        let attacks: &[&str] = &[
            "GET b:x",
            "GET x",
            "MGET b:x x",
            "HGETALL b:h",
            "LRANGE b:list 0 -1",
            "DUMP b:x",
            "TYPE b:x",
            "KEYS b:*",
            "KEYS *",
            "SCAN 0 MATCH b:* COUNT 1000",
            "SCAN 0 MATCH * TYPE string",
            "DEL b:x x",
            "UNLINK b:list",
            "EXPIRE b:x 1",
            "PEXPIREAT b:h 1",
            "PERSIST b:x",
            "RENAME b:x mine",
            "RENAME mine b:x",
            "COPY b:x mine",
            "SET mine 1",
            "RENAME mine b:x",
            "MOVE b:x 1",
            "SWAPDB 0 1",
            "FLUSHALL",
            "FLUSHDB",
            "SELECT 1",
            "MIGRATE 127.0.0.1 1 b:x 0 10",
            "SUNIONSTORE b:set b:set mine",
            "ZUNIONSTORE b:z 1 b:z",
            "ZUNIONSTORE out 2 b:z",
            "ZUNIONSTORE out -1 b:z",
            "ZUNIONSTORE out 99 b:z",
            "LMPOP 1 b:list LEFT",
            "LMPOP 2 b:list LEFT",
            "SINTERCARD 1 b:set",
            "XREAD STREAMS b:s 0",
            "XREAD COUNT 1 STREAMS b:s s 0 0",
            "SORT b:list",
            "SORT list BY b:* GET b:*",
            "SORT mine STORE b:x",
            "EVAL \"return redis.call('get','b:x')\" 0",
            "EVALSHA abc 0",
            "SCRIPT FLUSH",
            "OBJECT ENCODING b:x",
            "CONFIG SET dir /tmp",
            "DEBUG SLEEP 0",
            "CLIENT LIST",
            "CLIENT KILL TYPE normal",
            "CLIENT NO-EVICT on",
            "MONITOR",
            "SUBSCRIBE b:news",
            "PUBLISH b:news hi",
            "INFO keyspace",
            "DBSIZE",
            "RANDOMKEY",
            "BITOP OR b:x b:x mine",
            "GEOADD b:g 1 1 m",
            "GEORADIUS mine 0 0 1 km STORE b:x",
            "PFMERGE b:x mine",
            "SMOVE b:set mine SECRET",
            "LMOVE b:list mine LEFT LEFT",
            "RESTORE b:x 0 x REPLACE",
            "HELLO 3 AUTH beta wrong",
            "AUTH beta wrong",
            "SET b:x stolen",
            "APPEND x stolen",
        ];
        for line in attacks {
            let _ = a.cmd(&words(line));
        }
        // Inline bytes smuggled inside an argument stay one argument.
        let _ = a.cmd(&[b"GET", b"x\r\n*2\r\n$3\r\nDEL\r\n$3\r\nb:x\r\n"]);
        assert_eq!(snapshot(&mut d), before, "B's keys changed");
        let all = String::from_utf8_lossy(&d.cmd(&words("KEYS *"))).replace("\r\n", " ");
        for key in all
            .split(' ')
            .filter(|w| !w.is_empty() && !w.starts_with('*') && !w.starts_with('$'))
        {
            assert!(
                key.starts_with("a:") || key.starts_with("b:"),
                "key {key} outside every namespace"
            );
        }
        assert_eq!(b.cmd(&words("GET x")), b"$6\r\nSECRET\r\n");
        assert_eq!(b.cmd(&words("DBSIZE")), b":6\r\n");
    }
);

both!(
    info_for_a_prefixed_tenant_tells_nothing_of_the_keyspace,
    |kind: Kind| {
        // Clients check INFO on connecting (ioredis's ready check reads `loading`): a prefixed tenant
        // gets respite's own INFO, with the upstream's version and no keyspace counts.
        let server = Server::start(kind);
        server.raw().cmd(&words("SET b:secret 1"));
        let gamma = TenantToml::new("gamma", "g:")
            .login("gamma-pw")
            .allow(&["@all"]);
        let toml = format!("{}{gamma}", tenant_config());
        let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
        let mut a = proxy.login("gamma", "gamma-pw");
        // Forwarded: the upstream connections are up, and respite knows the upstream's version.
        assert_eq!(a.cmd(&words("GET nothing")), b"$-1\r\n");
        let info = String::from_utf8(a.cmd(&words("INFO"))).unwrap();
        assert!(info.starts_with('$'), "{info}");
        assert!(info.contains("\r\nloading:0\r\n"), "{info}");
        assert!(info.contains("\r\nrole:master\r\n"), "{info}");
        // The version is the one the upstream gave in its HELLO (as respite's own HELLO says).
        let hello = String::from_utf8(server.raw().cmd(&words("HELLO 2"))).unwrap();
        let lines: Vec<&str> = hello.split("\r\n").collect();
        let at = lines.iter().position(|l| *l == "version").unwrap();
        let version = lines[at + 2].to_string();
        assert!(
            info.contains(&format!("redis_version:{version}\r\n")),
            "{version}: {info}"
        );
        // A keyspace line, not the letters anywhere (respite's random run_id may hold "db0").
        assert!(!info.contains("\r\ndb0:"), "no keyspace: {info}");
        let only = String::from_utf8(a.cmd(&words("INFO persistence"))).unwrap();
        assert!(
            only.contains("loading:0") && !only.contains("redis_version"),
            "{only}"
        );
        // RESP3: a verbatim string, as Redis sends INFO.
        assert!(a.cmd(&words("HELLO 3")).starts_with(b"%"));
        assert!(a.cmd(&words("INFO")).starts_with(b"="));
        // alpha's allow list leaves INFO out (-@dangerous): NOPERM, which ioredis's ready check
        // also accepts (it skips the check).
        let mut alpha = proxy.login("alpha", "alpha-pw");
        assert!(alpha.cmd(&words("INFO")).starts_with(b"-NOPERM"));
    }
);

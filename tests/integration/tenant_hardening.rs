//! Issue 12's findings as regressions, judged by the upstream's own state (keys, types, TTLs,
//! lengths) read on a direct connection, never by respite's reply alone.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, tenants, text, words};

/// A prefixed tenant allowed everything but @dangerous, with a TTL cap and a value limit.
fn tenant_config() -> String {
    tenants(&[
        TenantToml::new("a", "a:")
            .login("pa")
            .allow(&["@all", "-@dangerous", "sort", "restore"])
            .max_value_bytes(1024)
            .ttl("*", Some(600000), 300000),
        TenantToml::new("b", "b:")
            .login("pb")
            .allow(&["@all", "-@dangerous"]),
    ])
}

pub(crate) fn login(p: &Proxy, user: &str, pw: &str) -> Raw {
    let mut c = p.raw();
    assert_eq!(
        c.cmd(&[b"AUTH", user.as_bytes(), pw.as_bytes()]),
        b"+OK\r\n"
    );
    c
}

fn int(reply: &[u8]) -> i64 {
    let s = std::str::from_utf8(reply).unwrap();
    assert!(s.starts_with(':'), "not an integer: {s:?}");
    s[1..s.len() - 2].parse().unwrap()
}

/// The key exists upstream with a TTL within the tenant's cap.
fn capped(d: &mut Raw, key: &str) {
    let pttl = int(&d.cmd(&[b"PTTL", key.as_bytes()]));
    assert!(pttl > 0 && pttl <= 600_000, "PTTL {key} = {pttl}");
}

both!(
    georadius_stores_into_the_last_destination_only,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut a = login(&proxy, "a", "pa");
        let mut d = server.raw();
        d.cmd(&words("SET other victim"));
        d.cmd(&words("SET b:other victim"));
        assert_eq!(a.cmd(&words("GEOADD g 0 0 m1 0.1 0.1 m2")), b":2\r\n");
        for line in [
            "GEORADIUS g 0 0 500 km STORE d1 STORE other",
            "GEORADIUS g 0 0 500 km STOREDIST d1 STORE other",
            "GEORADIUSBYMEMBER g m1 500 km STORE d1 STOREDIST other",
            // A missing source deletes the destination: that too must stay in the namespace.
            "GEORADIUS nosuch 0 0 500 km STORE d1 STORE other",
        ] {
            let r = text(a.cmd(&words(line)));
            assert!(r.starts_with(':'), "{line}: {r}");
            assert_eq!(d.cmd(&words("GET other")), b"$6\r\nvictim\r\n", "{line}");
            assert_eq!(d.cmd(&words("GET b:other")), b"$6\r\nvictim\r\n", "{line}");
            assert_eq!(d.cmd(&words("EXISTS a:d1")), b":0\r\n", "{line}");
        }
        // The same inside MULTI.
        assert_eq!(a.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(
            a.cmd(&words("GEORADIUS g 0 0 500 km STORE d1 STORE other")),
            b"+QUEUED\r\n"
        );
        assert!(text(a.cmd(&words("EXEC"))).starts_with("*1\r\n:2"));
        assert_eq!(d.cmd(&words("GET other")), b"$6\r\nvictim\r\n");
        assert_eq!(d.cmd(&words("TYPE a:other")), b"+zset\r\n");
        capped(&mut d, "a:other");
    }
);

both!(sort_stores_into_the_last_store_with_a_ttl, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut a = login(&proxy, "a", "pa");
    let mut d = server.raw();
    assert_eq!(a.cmd(&words("RPUSH l 3 1 2")), b":3\r\n");
    for (line, dest) in [
        ("SORT l STORE by STORE d1", "a:d1"),
        ("SORT l STORE get STORE d2", "a:d2"),
        ("SORT l STORE limit STORE d3 ALPHA", "a:d3"),
        ("SORT l STORE x STORE d4", "a:d4"),
    ] {
        assert_eq!(a.cmd(&words(line)), b":3\r\n", "{line}");
        assert_eq!(d.cmd(&words(&format!("LLEN {dest}"))), b":3\r\n", "{line}");
        capped(&mut d, dest);
    }
    for stray in ["by", "a:by", "get", "a:get", "limit", "a:limit", "x", "a:x"] {
        assert_eq!(
            d.cmd(&words(&format!("EXISTS {stray}"))),
            b":0\r\n",
            "{stray}"
        );
    }
    // A SORT respite cannot place is refused, and nothing is written.
    let r = text(a.cmd(&words("SORT l STORE store d5")));
    assert!(r.starts_with("-ERR"), "{r}");
    assert_eq!(d.cmd(&words("EXISTS d5 a:d5 store a:store")), b":0\r\n");
});

both!(xreadgroup_reads_only_the_tenants_streams, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut a = login(&proxy, "a", "pa");
    let mut d = server.raw();
    // Another party's stream `s` with group `g`; the tenant has its own.
    d.cmd(&words("XGROUP CREATE s g $ MKSTREAM"));
    d.cmd(&words("XADD s * secret 1"));
    assert_eq!(a.cmd(&words("XGROUP CREATE s g $ MKSTREAM")), b"+OK\r\n");
    a.cmd(&words("XADD s * mine 1"));
    // The consumer is named STREAMS: the key is `s`, after the real STREAMS option. (The key
    // spec took the consumer name for the option and prefixed the real one, so this valid call
    // failed with a syntax error; it never reached `s`.)
    let r = text(a.cmd(&words("XREADGROUP COUNT 5 GROUP g STREAMS STREAMS s >")));
    assert!(r.contains("mine") && !r.contains("secret"), "{r}");
    assert_eq!(
        d.cmd(&words("XPENDING s g")),
        b"*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"
    );
    assert_eq!(int(&d.cmd(&words("XLEN a:s"))), 1);
    assert_eq!(d.cmd(&words("EXISTS STREAMS a:STREAMS")), b":0\r\n");
});

both!(
    growth_commands_are_bounded_by_what_they_store,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut a = login(&proxy, "a", "pa");
        let mut d = server.raw();
        for line in [
            "SETRANGE big 536870000 x",
            "SETRANGE big 1020 xxxxx",
            "SETBIT big 8192 1",
            "SETBIT big 4294967295 1",
            "BITFIELD big SET u8 8192 1",
            "BITFIELD big INCRBY i64 #1000 1",
            "BITFIELD big GET u8 0 SET u8 #1024 1",
        ] {
            let r = text(a.cmd(&words(line)));
            assert!(r.contains("tenant.max_value_bytes"), "{line}: {r}");
            assert_eq!(d.cmd(&words("EXISTS a:big")), b":0\r\n", "{line}");
        }
        // Right at the limit is fine: 1024 bytes.
        assert_eq!(a.cmd(&words("SETRANGE ok 1023 x")), b":1024\r\n");
        assert_eq!(a.cmd(&words("SETBIT bits 8191 1")), b":0\r\n");
        assert_eq!(int(&d.cmd(&words("STRLEN a:bits"))), 1024);
        // APPEND is checked against what is stored, in the same step.
        let chunk = vec![b'x'; 600];
        assert_eq!(a.cmd(&[b"APPEND", b"ap", &chunk]), b":600\r\n");
        let r = text(a.cmd(&[b"APPEND", b"ap", &chunk]));
        assert!(
            r.starts_with("-ERR") && r.contains("max_value_bytes"),
            "{r}"
        );
        assert_eq!(int(&d.cmd(&words("STRLEN a:ap"))), 600);
        capped(&mut d, "a:ap");
        assert_eq!(a.cmd(&words("APPEND new x")), b":1\r\n");
        a.cmd(&words("RPUSH lst x"));
        let r = text(a.cmd(&words("APPEND lst x")));
        assert!(r.starts_with("-WRONGTYPE"), "{r}");
        // INCRBYFLOAT: a 6-byte value whose sum prints as 1100 digits is undone and refused.
        assert_eq!(a.cmd(&words("SET f 1e1100")), b"+OK\r\n");
        let r = text(a.cmd(&words("INCRBYFLOAT f 1")));
        assert!(
            r.starts_with("-ERR") && r.contains("max_value_bytes"),
            "{r}"
        );
        assert_eq!(d.cmd(&words("GET a:f")), b"$6\r\n1e1100\r\n");
        capped(&mut d, "a:f");
        assert_eq!(a.cmd(&words("INCRBYFLOAT n 1.5")), b"$3\r\n1.5\r\n");
        let r = text(a.cmd(&words("INCRBYFLOAT n 1e2000")));
        assert!(r.starts_with("-ERR"), "{r}");
        assert_eq!(a.cmd(&words("INCRBYFLOAT n 1")), b"$3\r\n2.5\r\n");
        // HINCRBYFLOAT likewise: the field keeps its old value (a new field goes, and with it a
        // key it created), and a field's own TTL survives the undo where the server has them.
        assert_eq!(a.cmd(&words("HSET h f 1e1100 g 1")), b":2\r\n");
        let field_ttl = d.cmd(&words("HPEXPIRE a:h 500000 FIELDS 1 f")) == b"*1\r\n:1\r\n";
        let r = text(a.cmd(&words("HINCRBYFLOAT h f 1")));
        assert!(
            r.starts_with("-ERR") && r.contains("max_value_bytes"),
            "{r}"
        );
        assert_eq!(d.cmd(&words("HGET a:h f")), b"$6\r\n1e1100\r\n");
        if field_ttl {
            // The field's TTL is kept, not renewed nor dropped: at most the 500 s set above
            // (exactly that when all of this ran within the server's millisecond).
            let t = text(d.cmd(&words("HPTTL a:h FIELDS 1 f")));
            let ms: u64 = t
                .strip_prefix("*1\r\n:")
                .and_then(|n| n.trim_end().parse().ok())
                .unwrap_or(0);
            assert!((400_000..=500_000).contains(&ms), "{t}");
        }
        let r = text(a.cmd(&words("HINCRBYFLOAT h new 1e2000")));
        assert!(r.contains("max_value_bytes"), "{r}");
        assert_eq!(d.cmd(&words("HEXISTS a:h new")), b":0\r\n");
        let r = text(a.cmd(&words("HINCRBYFLOAT fresh x 1e4880")));
        assert!(r.contains("max_value_bytes"), "{r}");
        assert_eq!(d.cmd(&words("EXISTS a:fresh")), b":0\r\n");
        assert_eq!(a.cmd(&words("HINCRBYFLOAT h g 1.5")), b"$3\r\n2.5\r\n");
        let r = text(a.cmd(&words("HINCRBYFLOAT lst x 1")));
        assert!(r.starts_with("-WRONGTYPE"), "{r}");
        // RESTORE: a small payload that decodes to 20000 bytes.
        let big = vec![b'a'; 20_000];
        d.cmd(&[b"SET", b"src", &big]);
        let mut dump = d.cmd(&words("DUMP src"));
        let start = dump.iter().position(|&c| c == b'\n').unwrap() + 1;
        dump.truncate(dump.len() - 2);
        let payload = dump.split_off(start);
        assert!(payload.len() < 1024, "{} bytes", payload.len());
        let r = text(a.cmd(&[b"RESTORE", b"r", b"0", &payload]));
        assert!(r.contains("max_value_bytes"), "{r}");
        assert_eq!(d.cmd(&words("EXISTS a:r")), b":0\r\n");
        d.cmd(&words("SET src small"));
        let mut dump = d.cmd(&words("DUMP src"));
        let start = dump.iter().position(|&c| c == b'\n').unwrap() + 1;
        dump.truncate(dump.len() - 2);
        let payload = dump.split_off(start);
        assert_eq!(a.cmd(&[b"RESTORE", b"r", b"0", &payload]), b"+OK\r\n");
        assert_eq!(d.cmd(&words("GET a:r")), b"$5\r\nsmall\r\n");
        capped(&mut d, "a:r");
    }
);

both!(auth_guesses_stay_slow_between_own_logins, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut c = proxy.raw();
    // Finding 4: guesses at b's password, each followed by a's own successful login, pipelined.
    let rounds = 6;
    let mut batch = Vec::new();
    for _ in 0..rounds {
        batch.extend(crate::support::encode(&words("AUTH b guess")));
        batch.extend(crate::support::encode(&words("AUTH a pa")));
    }
    let start = std::time::Instant::now();
    c.send(&batch);
    for _ in 0..rounds {
        assert!(c.reply().unwrap().starts_with(b"-WRONGPASS"));
        assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    }
    // Two free failures, then 25 + 50 + 100 + 200 ms for the third to the sixth.
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(375), "{took:?}");
});

both!(password_only_auth_picks_the_tenant, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut d = server.raw();
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&words("AUTH pb")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("SET k from-b")), b"+OK\r\n");
    assert_eq!(d.cmd(&words("GET b:k")), b"$6\r\nfrom-b\r\n");
    assert_eq!(c.cmd(&words("AUTH pa")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("SET k from-a")), b"+OK\r\n");
    assert_eq!(d.cmd(&words("GET a:k")), b"$6\r\nfrom-a\r\n");
    assert!(c.cmd(&words("AUTH nope")).starts_with(b"-WRONGPASS"));
    assert_eq!(d.cmd(&words("EXISTS k")), b":0\r\n");
});

/// The cursor and the keys of one SCAN reply.
fn scan_reply(reply: Vec<u8>) -> (String, Vec<String>) {
    let lines: Vec<String> = text(reply).split("\r\n").map(str::to_owned).collect();
    // *2, $n, cursor, *k, then $len/name pairs.
    let keys = lines[4..]
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    (lines[2].clone(), keys)
}

both!(
    scan_cursors_do_not_show_the_upstreams_keyspace,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut a = login(&proxy, "a", "pa");
        let mut d = server.raw();
        // Another party's 3000 keys; the tenant has 3.
        let mut batch = Vec::new();
        for i in 0..3000 {
            batch.extend(crate::support::encode(&[
                b"SET",
                format!("other:{i}").as_bytes(),
                b"x",
            ]));
        }
        d.send(&batch);
        for _ in 0..3000 {
            d.reply().unwrap();
        }
        for k in ["k1", "k2", "k3"] {
            assert_eq!(a.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
        }
        let (upstream_cursor, _) = scan_reply(d.cmd(&words("SCAN 0 MATCH a:* COUNT 10")));
        let (first, _) = scan_reply(a.cmd(&words("SCAN 0 COUNT 10")));
        assert_ne!(first, "0");
        assert_ne!(
            first, upstream_cursor,
            "the upstream's own cursor reached the tenant"
        );
        // A whole iteration through sealed cursors still finds every key of the tenant's, once.
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        let mut calls = 0;
        for _ in 0..10_000 {
            let (next, keys) = scan_reply(a.cmd(&[b"SCAN", cursor.as_bytes(), b"COUNT", b"100"]));
            calls += 1;
            seen.extend(keys);
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(cursor, "0");
        // Each call examined at least 1,000 of the upstream's 4,096 slots (not the client's 100):
        // a handful of calls, not the 40-odd COUNT 100 takes over 3,003 keys.
        assert!(calls <= 8, "{calls} calls");
        seen.sort();
        assert_eq!(seen, ["k1", "k2", "k3"]);
    }
);

both!(clients_before_auth_get_redis_small_limits, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut d = server.raw();
    let big = vec![b'x'; 20_000];
    // A large argument before AUTH: Redis's limit, then the connection is closed.
    let mut c = proxy.raw();
    let r = text(c.cmd(&[b"SET", b"k", &big]));
    assert!(r.contains("unauthenticated"), "{r}");
    assert!(c.closed());
    // So are many arguments.
    let mut c = proxy.raw();
    let r = text(c.cmd(&words("DEL a b c d e f g h i j k")));
    assert!(r.contains("unauthenticated"), "{r}");
    assert!(c.closed());
    // After AUTH the configured limits apply again.
    let mut b = login(&proxy, "b", "pb");
    assert_eq!(b.cmd(&[b"SET", b"k", &big]), b"+OK\r\n");
    assert_eq!(int(&d.cmd(&words("STRLEN b:k"))), 20_000);
    assert_eq!(b.cmd(&words("DEL a b c d e f g h i j k")), b":1\r\n");
});

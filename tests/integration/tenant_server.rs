//! A tenant sees a whole Redis of its own: FLUSHALL and FLUSHDB empty its namespace only, and a
//! tenant with a database of its own (`tenant.db`) gets DBSIZE, FLUSHDB, RANDOMKEY, SCAN and KEYS
//! from the upstream in that database — on shared and pinned connections alike. The judge is the
//! upstream's own state, read directly in each database.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, encode, tenants, text, words};

fn tenant_config() -> String {
    tenants(&[
        TenantToml::new("a", "a:")
            .login("pa")
            .allow(&["@all"])
            .db(3),
        TenantToml::new("b", "b:").login("pb").allow(&["@all"]),
        TenantToml::new("c", "c:")
            .login("pc")
            .allow(&["@all"])
            .db(4),
    ])
}

/// A direct connection in database `db`.
fn direct(server: &Server, db: u32) -> Raw {
    let mut d = server.raw();
    assert_eq!(d.cmd(&words(&format!("SELECT {db}"))), b"+OK\r\n");
    d
}

/// Every key a full SCAN returns through `c`, in the order seen.
fn scan_all(c: &mut Raw) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        c.send(&encode(&[b"SCAN", &cursor, b"COUNT", b"7"]));
        let r = text(c.reply().unwrap());
        let lines: Vec<&str> = r.split("\r\n").collect();
        // *2, $n, cursor, *k, then $n name pairs.
        cursor = lines[2].as_bytes().to_vec();
        keys.extend(lines[4..].iter().skip(1).step_by(2).map(|s| s.to_string()));
        keys.retain(|k| !k.is_empty());
        if cursor == b"0" {
            return keys;
        }
    }
}

both!(
    a_tenant_database_answers_for_the_namespace_alone,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut d0 = direct(&server, 0);
        let mut d3 = direct(&server, 3);
        let mut d4 = direct(&server, 4);
        // Others' keys: direct clients in the URL's database and in c's, tenant b's.
        let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..500 {
            mset.push(format!("other:{i}").into_bytes());
            mset.push(b"x".to_vec());
        }
        let mset: Vec<&[u8]> = mset.iter().map(|w| &w[..]).collect();
        assert_eq!(d0.cmd(&mset), b"+OK\r\n");
        let mut a = proxy.login("a", "pa");
        let mut b = proxy.login("b", "pb");
        let mut c = proxy.login("c", "pc");
        for i in 0..20 {
            assert_eq!(a.cmd(&words(&format!("SET k{i} v{i}"))), b"+OK\r\n");
        }
        assert_eq!(b.cmd(&words("SET kb 1")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SET kc 1")), b"+OK\r\n");
        // a's keys live in database 3, under its prefix, and nowhere else.
        assert_eq!(d3.cmd(&words("DBSIZE")), b":20\r\n");
        assert_eq!(d3.cmd(&words("GET a:k7")), b"$2\r\nv7\r\n");
        assert_eq!(d0.cmd(&words("EXISTS a:k7")), b":0\r\n");
        assert_eq!(d0.cmd(&words("DBSIZE")), b":501\r\n");
        assert_eq!(d4.cmd(&words("GET c:kc")), b"$1\r\n1\r\n");
        // The upstream's answers, unprefixed.
        assert_eq!(a.cmd(&words("DBSIZE")), b":20\r\n");
        let r = text(a.cmd(&words("RANDOMKEY")));
        assert!(r.starts_with("$2\r\nk") || r.starts_with("$3\r\nk"), "{r}");
        let keys = text(a.cmd(&words("KEYS *")));
        assert!(
            keys.starts_with("*20\r\n") && !keys.contains("a:"),
            "{keys}"
        );
        let mut seen = scan_all(&mut a);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 20, "{seen:?}");
        assert!(seen.iter().all(|k| k.starts_with('k')), "{seen:?}");
        // A pinned connection (a transaction under WATCH, a blocking pop) is in a's database
        // too; given back, it is reset for the next client, who is in its own.
        assert_eq!(a.cmd(&words("WATCH k1")), b"+OK\r\n");
        assert_eq!(a.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(a.cmd(&words("SET k1 watched")), b"+QUEUED\r\n");
        assert_eq!(a.cmd(&words("EXEC")), b"*1\r\n+OK\r\n");
        assert_eq!(d3.cmd(&words("GET a:k1")), b"$7\r\nwatched\r\n");
        assert_eq!(a.cmd(&words("RPUSH q x")), b":1\r\n");
        assert_eq!(a.cmd(&words("BLPOP q 1")), b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
        assert_eq!(b.cmd(&words("WATCH kb")), b"+OK\r\n");
        assert_eq!(b.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(b.cmd(&words("SET kb watched")), b"+QUEUED\r\n");
        assert_eq!(b.cmd(&words("EXEC")), b"*1\r\n+OK\r\n");
        assert_eq!(d0.cmd(&words("GET b:kb")), b"$7\r\nwatched\r\n");
        assert_eq!(d3.cmd(&words("EXISTS b:kb")), b":0\r\n");
        // Another database stays out of reach.
        assert!(text(a.cmd(&words("SELECT 4"))).starts_with("-ERR"));
        assert!(text(a.cmd(&words("MOVE k1 4"))).starts_with("-ERR"));
        assert_eq!(d4.cmd(&words("EXISTS c:k1 a:k1 k1")), b":0\r\n");
        // FLUSHALL is a's FLUSHDB: database 3 only.
        assert_eq!(a.cmd(&words("FLUSHALL ASYNC")), b"+OK\r\n");
        assert_eq!(a.cmd(&words("DBSIZE")), b":0\r\n");
        assert_eq!(d3.cmd(&words("DBSIZE")), b":0\r\n");
        assert_eq!(d0.cmd(&words("DBSIZE")), b":501\r\n");
        assert_eq!(d4.cmd(&words("DBSIZE")), b":1\r\n");
        assert_eq!(a.cmd(&words("RANDOMKEY")), b"$-1\r\n");
        assert_eq!(a.cmd(&words("SET k1 again")), b"+OK\r\n");
        assert_eq!(a.cmd(&words("FLUSHDB SYNC")), b"+OK\r\n");
        assert_eq!(d3.cmd(&words("DBSIZE")), b":0\r\n");
        assert_eq!(a.cmd(&words("FLUSHALL NOW")), b"-ERR syntax error\r\n");
        // A tenant in the shared database: FLUSHALL empties its namespace, nothing else.
        assert_eq!(b.cmd(&words("SET kb2 1")), b"+OK\r\n");
        assert_eq!(b.cmd(&words("FLUSHALL SYNC")), b"+OK\r\n");
        assert_eq!(d0.cmd(&words("EXISTS b:kb b:kb2")), b":0\r\n");
        assert_eq!(d0.cmd(&words("DBSIZE")), b":500\r\n");
        assert_eq!(d4.cmd(&words("GET c:kc")), b"$1\r\n1\r\n");
        assert_eq!(c.cmd(&words("DBSIZE")), b":1\r\n");
    }
);

/// What holds one database only: the near cache (the URL's) and the local engine (its recovery
/// writes into the URL's) never serve a tenant with a database of its own.
#[test]
fn a_tenant_database_is_neither_cached_nor_served_locally() {
    let mut server = Server::start(Kind::Redis);
    let toml = format!(
        "[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = \"*\"\n{}",
        tenant_config()
    );
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    let mut d3 = direct(&server, 3);
    assert_eq!(a.cmd(&words("SET k v1")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("GET k")), b"$2\r\nv1\r\n");
    assert_eq!(a.cmd(&words("GET k")), b"$2\r\nv1\r\n");
    // Written behind respite's back in database 3: a cached entry would still say v1.
    assert_eq!(d3.cmd(&words("SET a:k v2")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("GET k")), b"$2\r\nv2\r\n");
    server.kill();
    let refused = crate::support::wait_until(std::time::Duration::from_secs(10), || {
        text(a.cmd(&words("SET k local"))).starts_with("-TRYAGAIN")
    });
    assert!(refused.is_some(), "a was never refused in local-only mode");
    let r = text(a.cmd(&words("GET k")));
    assert!(r.contains("tenant.db"), "{r}");
    // A tenant in the URL's database is served locally as before.
    assert_eq!(b.cmd(&words("SET k local")), b"+OK\r\n");
}

both!(info_is_the_tenants_own_view, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut d0 = direct(&server, 0);
    assert_eq!(
        d0.cmd(&words("CONFIG SET maxmemory-policy allkeys-lru")),
        b"+OK\r\n"
    );
    d0.cmd(&words("SET other:1 x"));
    let mut a = proxy.login("a", "pa");
    let _a2 = proxy.login("a", "pa");
    let _b = [
        proxy.login("b", "pb"),
        proxy.login("b", "pb"),
        proxy.login("b", "pb"),
    ];
    for i in 0..5 {
        a.cmd(&words(&format!("SET k{i} v")));
    }
    a.cmd(&words("SET t1 v EX 1000"));
    a.cmd(&words("SET t2 v EX 1000"));
    let info = text(a.cmd(&words("INFO")));
    for want in [
        "\r\narch_bits:64\r\n".to_string(),
        format!("\r\nprocess_id:{}\r\n", std::process::id()),
        format!("\r\ntcp_port:{}\r\n", proxy.port()),
        "\r\nconnected_clients:2\r\n".to_string(),
        "\r\nmaxmemory_policy:allkeys-lru\r\n".to_string(),
        "\r\nrole:master\r\n".to_string(),
        "\r\nuptime_in_seconds:".to_string(),
        "# Keyspace\r\ndb0:keys=7,expires=2,".to_string(),
    ] {
        assert!(info.contains(&want), "{want:?} in {info}");
    }
    // Nothing of the upstream's or another tenant's: its port, its process, its other databases.
    let server_pid = server.pid().unwrap().to_string();
    for never in [
        format!(":{}\r\n", server.url().rsplit(':').next().unwrap()),
        format!("process_id:{server_pid}\r\n"),
        "db3".to_string(),
        "db1:".to_string(),
        "used_memory:".to_string(),
    ] {
        assert!(!info.contains(&never), "{never:?} in {info}");
    }
    let stats = text(a.cmd(&words("INFO stats")));
    let n: u64 = stats
        .split("total_commands_processed:")
        .nth(1)
        .and_then(|s| s.split("\r\n").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stats}"));
    assert!((9..100).contains(&n), "{stats}");
    // b, in the shared database, has no keyspace line of its own (DBSIZE is its count).
    let mut b = proxy.login("b", "pb");
    b.cmd(&words("SET kb 1"));
    let ks = text(b.cmd(&words("INFO keyspace")));
    assert!(ks.ends_with("# Keyspace\r\n\r\n"), "{ks}");
    let clients = text(b.cmd(&words("INFO clients")));
    assert!(clients.contains("connected_clients:4\r\n"), "{clients}");
});

// CONFIG GET shows a prefixed tenant a safe subset with the values that hold for it; CONFIG SET
// of anything but its own notify-keyspace-events is refused, and nothing changes the upstream's
// configuration (the upstream is the judge).
both!(
    a_tenant_reads_a_safe_subset_of_the_configuration,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        let mut d = server.raw();
        assert_eq!(
            d.cmd(&words("CONFIG SET maxmemory-policy allkeys-lru")),
            b"+OK\r\n"
        );
        let mut b = proxy.login("b", "pb");
        let all = text(b.cmd(&words("CONFIG GET *")));
        for want in [
            "$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n",
            "$9\r\ndatabases\r\n$1\r\n1\r\n",
            "$10\r\nappendonly\r\n$2\r\nno\r\n",
            "$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n",
        ] {
            assert!(all.contains(want), "{want:?} in {all}");
        }
        // Nothing that names the upstream, its files or its users.
        let port = server.url().rsplit(':').next().unwrap().to_string();
        for never in ["requirepass", "dir", "port", "bind", "dbfilename", &port] {
            assert!(!all.contains(never), "{never:?} in {all}");
        }
        assert_eq!(b.cmd(&words("CONFIG GET requirepass dir")), b"*0\r\n");
        // Patterns match case-insensitively, as Redis's do.
        assert_eq!(
            text(b.cmd(&words("CONFIG GET MAXMEMORY-P*"))),
            "*2\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n"
        );
        // RESP3: a map.
        let mut b3 = proxy.login("b", "pb");
        assert!(text(b3.cmd(&words("HELLO 3"))).starts_with('%'));
        assert_eq!(
            text(b3.cmd(&words("CONFIG GET databases"))),
            "%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        );
        for set in [
            "CONFIG SET maxmemory-policy noeviction",
            "CONFIG SET maxmemory 1",
            "CONFIG RESETSTAT",
        ] {
            let r = text(b.cmd(&words(set)));
            assert!(
                r.starts_with("-ERR") || r.starts_with("-NOPERM"),
                "{set}: {r}"
            );
        }
        assert_eq!(
            text(d.cmd(&words("CONFIG GET maxmemory-policy"))),
            "*2\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n"
        );
        // The tenant's own notify-keyspace-events is respite's, never the upstream's.
        assert_eq!(
            b.cmd(&words("CONFIG SET notify-keyspace-events KEA")),
            b"+OK\r\n"
        );
        assert_eq!(
            text(d.cmd(&words("CONFIG GET notify-keyspace-events"))),
            "*2\r\n$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n"
        );
        assert_eq!(
            text(d.cmd(&words("CONFIG GET maxmemory"))),
            "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
        );
    }
);

// Inside a transaction a prefixed tenant's INFO and CONFIG GET are respite's too, answered in
// their place in EXEC's array (redis-py's pipelines send them so), never the upstream's.
both!(a_tenant_reads_info_and_config_inside_multi, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut b = proxy.login("b", "pb");
    for (cmd, reply) in [
        ("MULTI", "+OK\r\n"),
        ("SET k v", "+QUEUED\r\n"),
        ("INFO server", "+QUEUED\r\n"),
        ("CONFIG GET databases", "+QUEUED\r\n"),
        ("GET k", "+QUEUED\r\n"),
    ] {
        assert_eq!(text(b.cmd(&words(cmd))), reply, "{cmd}");
    }
    let exec = text(b.cmd(&words("EXEC")));
    assert!(exec.starts_with("*4\r\n+OK\r\n"), "{exec}");
    assert!(
        exec.contains("# Server\r\n") && exec.contains("respite_mode:proxy"),
        "{exec}"
    );
    let port = server.url().rsplit(':').next().unwrap().to_string();
    assert!(
        !exec.contains(&format!("tcp_port:{port}")),
        "the upstream's INFO: {exec}"
    );
    assert!(
        exec.ends_with("*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n$1\r\nv\r\n"),
        "{exec}"
    );
    assert_eq!(text(server.raw().cmd(&words("GET b:k"))), "$1\r\nv\r\n");
});

both!(server_parameters_a_tenant_may_set, |kind: Kind| {
    // `tenant.server_config` lets a trusted tenant read and set the server parameters it names,
    // upstream; never files, passwords, addresses or replication, whatever it names; a tenant
    // without it sets nothing. The upstream's own CONFIG GET is the judge.
    let server = Server::start(kind);
    let a = TenantToml::new("a", "a:").login("pa").allow(&["@all"]);
    let b = TenantToml::new("b", "b:").login("pb").allow(&["@all"]);
    let c = TenantToml::new("c", "c:").login("pc").allow(&["@all"]);
    let config = format!(
        "{a}server_config = [\"list-max-*\", \"HASH-max-listpack-entries\"]\n{b}{c}server_config = [\"*\"]\n"
    );
    let proxy = Proxy::start_with_config(&server.url(), &config, &[]);
    let mut direct = server.raw();
    let upstream =
        |direct: &mut Raw, name: &str| text(direct.cmd(&[b"CONFIG", b"GET", name.as_bytes()]));
    let (mut a, mut b, mut c) = (
        proxy.login("a", "pa"),
        proxy.login("b", "pb"),
        proxy.login("c", "pc"),
    );
    assert_eq!(
        a.cmd(&words(
            "CONFIG SET list-max-listpack-size 7 hash-max-listpack-entries 33"
        )),
        b"+OK\r\n"
    );
    assert!(upstream(&mut direct, "list-max-listpack-size").ends_with("$1\r\n7\r\n"));
    assert!(upstream(&mut direct, "hash-max-listpack-entries").ends_with("$2\r\n33\r\n"));
    let got = text(a.cmd(&words("CONFIG GET list-max-listpack-size")));
    assert_eq!(got, "*2\r\n$22\r\nlist-max-listpack-size\r\n$1\r\n7\r\n");
    // Its own subset and the allowed parameters together; nothing else of the server's.
    let all = text(a.cmd(&words("CONFIG GET *")));
    assert!(all.contains("$9\r\ndatabases\r\n$1\r\n1\r\n"), "{all}");
    assert!(all.contains("hash-max-listpack-entries"), "{all}");
    for never in ["zset-max", "dir", "port", "\r\nsave\r\n"] {
        assert!(!all.contains(never), "{never} in {all}");
    }
    // Outside its patterns, or mixed with one outside them: refused, nothing changed.
    for cmd in [
        "CONFIG SET zset-max-listpack-entries 5",
        "CONFIG SET list-max-listpack-size 9 zset-max-listpack-entries 5",
    ] {
        let r = text(a.cmd(&words(cmd)));
        assert!(
            r.starts_with("-ERR 'config|set' is not available"),
            "{cmd}: {r}"
        );
    }
    assert!(upstream(&mut direct, "list-max-listpack-size").ends_with("$1\r\n7\r\n"));
    let r = text(b.cmd(&words("CONFIG SET list-max-listpack-size 9")));
    assert!(r.starts_with("-ERR 'config|set' is not available"), "{r}");
    assert!(!text(b.cmd(&words("CONFIG GET list-max-*"))).contains("list-max"));
    // `*` still never reaches files, passwords, replication or addresses.
    let dir = upstream(&mut direct, "dir");
    for cmd in [
        "CONFIG SET dir /tmp",
        "CONFIG SET dbfilename x.rdb",
        "CONFIG SET requirepass x",
        "CONFIG SET masterauth x",
        "CONFIG SET appenddirname d",
        "CONFIG SET logfile /tmp/x.log",
        "CONFIG SET port 1",
    ] {
        let r = text(c.cmd(&words(cmd)));
        assert!(
            r.starts_with("-ERR 'config|set' is not available"),
            "{cmd}: {r}"
        );
    }
    assert_eq!(upstream(&mut direct, "dir"), dir);
    assert!(upstream(&mut direct, "requirepass").ends_with("$0\r\n\r\n"));
    let all = text(c.cmd(&words("CONFIG GET *")));
    for never in [
        "dir",
        "dbfilename",
        "requirepass",
        "port",
        "bind",
        "logfile",
    ] {
        assert!(
            !all.contains(&format!("\r\n{never}\r\n")),
            "{never} in {all}"
        );
    }
    assert!(all.contains("list-max-listpack-size"), "{all}");
    assert_eq!(
        c.cmd(&words("CONFIG SET zset-max-listpack-entries 5")),
        b"+OK\r\n"
    );
    assert!(upstream(&mut direct, "zset-max-listpack-entries").ends_with("$1\r\n5\r\n"));
});

/// A tenant's `blocked_clients` (what Redis's own tests and job queues wait on before pushing)
/// counts its own clients blocked on the upstream, and never another tenant's or a direct
/// client's; it falls back once the upstream has answered the blocked client.
fn blocked_of(c: &mut Raw) -> Option<u64> {
    let clients = text(c.cmd(&words("INFO clients")));
    clients
        .split("blocked_clients:")
        .nth(1)?
        .split("\r\n")
        .next()?
        .parse()
        .ok()
}

both!(blocked_clients_counts_the_tenants_own, |kind: Kind| {
    use crate::support::wait_until;
    use std::time::Duration;
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    assert_eq!(blocked_of(&mut a), Some(0));
    // Others blocked: b's client, and a direct client in a's own database.
    let mut b_blocked = proxy.login("b", "pb");
    b_blocked.send(&encode(&words("BLPOP q 0")));
    let mut d3 = direct(&server, 3);
    d3.send(&encode(&words("BLPOP a:elsewhere 0")));
    let mut watcher = server.raw();
    let upstream_blocked = |w: &mut Raw| {
        let t = text(w.cmd(&words("INFO clients")));
        t.contains("\r\nblocked_clients:2\r\n")
    };
    assert!(
        wait_until(Duration::from_secs(10), || upstream_blocked(&mut watcher)).is_some(),
        "the upstream never showed both blocked"
    );
    assert_eq!(
        blocked_of(&mut a),
        Some(0),
        "a sees others' blocked clients"
    );
    // a's own.
    let mut a_blocked = proxy.login("a", "pa");
    a_blocked.send(&encode(&words("BLPOP q 0")));
    assert!(
        wait_until(Duration::from_secs(10), || blocked_of(&mut a) == Some(1)).is_some(),
        "a's blocked client never counted: {:?}",
        blocked_of(&mut a)
    );
    assert_eq!(blocked_of(&mut b), Some(1), "b counts only its own");
    // Answered: a's count falls back, b's stays.
    assert_eq!(a.cmd(&words("RPUSH q x")), b":1\r\n");
    assert!(a_blocked.reply().is_some());
    assert!(
        wait_until(Duration::from_secs(10), || blocked_of(&mut a) == Some(0)).is_some(),
        "a's count stayed after the BLPOP was answered"
    );
    assert_eq!(blocked_of(&mut b), Some(1));
    // Release the others.
    assert_eq!(watcher.cmd(&words("RPUSH b:q y")), b":1\r\n");
    assert!(b_blocked.reply().is_some());
    let mut w3 = direct(&server, 3);
    assert_eq!(w3.cmd(&words("RPUSH a:elsewhere z")), b":1\r\n");
    assert!(d3.reply().is_some());
});

// Inside MULTI, a prefixed tenant's commands whose replies name keys (BLPOP, LMPOP, ZMPOP,
// XREAD) run in the upstream's transaction and their elements of EXEC's array name the keys as
// the tenant knows them, as outside MULTI (they were refused, which left Redis's own list tests
// with a transaction open). The upstream's keys are the judge of what ran.
both!(
    key_naming_replies_inside_multi_are_the_tenants_own,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
        for (user, password, db) in [("b", "pb", 0), ("a", "pa", 3)] {
            let mut c = proxy.login(user, password);
            assert_eq!(c.cmd(&words("RPUSH l x y z")), b":3\r\n");
            assert_eq!(c.cmd(&words("ZADD z 1 m")), b":1\r\n");
            assert!(text(c.cmd(&words("XADD s 1-1 f v"))).contains("1-1"));
            assert_eq!(c.cmd(&words("MULTI")), b"+OK\r\n");
            for cmd in [
                "BLPOP l 0",
                "LMPOP 1 l RIGHT",
                "ZMPOP 1 z MIN",
                "XREAD STREAMS s 0",
                "BLPOP nothing 1",
                "GET l",
            ] {
                assert_eq!(c.cmd(&words(cmd)), b"+QUEUED\r\n", "{cmd}");
            }
            let exec = text(c.cmd(&words("EXEC")));
            let want = "*6\r\n\
             *2\r\n$1\r\nl\r\n$1\r\nx\r\n\
             *2\r\n$1\r\nl\r\n*1\r\n$1\r\nz\r\n\
             *2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n\
             *1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n\
             *-1\r\n";
            assert!(exec.starts_with(want), "{user}: {exec}");
            let prefix = format!("{user}:");
            assert!(!exec.contains(&prefix), "{user}: the prefix shows: {exec}");
            assert!(
                exec.ends_with(
                    "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
                ),
                "{exec}"
            );
            // What ran upstream: in the tenant's namespace (and database), nowhere else.
            let mut d = direct(&server, db);
            assert_eq!(
                d.cmd(&words(&format!("LRANGE {prefix}l 0 -1"))),
                b"*1\r\n$1\r\ny\r\n"
            );
            assert_eq!(d.cmd(&words(&format!("EXISTS {prefix}z l z s"))), b":0\r\n");
        }
    }
);

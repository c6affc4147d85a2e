//! A Redis Cluster and a Valkey Cluster behind respite (`redis+cluster://`), driven by plain
//! non-cluster clients (raw RESP, redis-py's plain `Redis`). One cluster per kind, shared by the
//! scenarios of one test in turn (a cluster takes seconds to form): the seed-style workload
//! compared with one plain server's replies, MGET of 100 keys as one command per node judged by
//! the nodes' own commandstats, a tenant's hash-tagged keys co-located and used in MULTI, and
//! resharding under a bounded load with no client error or wrong reply.
use crate::support::{Cluster, Kind, Proxy, Raw, Server, TenantToml, encode, python, tenants};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn args(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

fn run(c: &mut Raw, line: &str) -> Vec<u8> {
    let a = args(line);
    let refs: Vec<&[u8]> = a.iter().map(|v| &v[..]).collect();
    c.cmd(&refs)
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bulk strings of a flat array reply, sorted.
fn sorted_items(reply: &[u8]) -> Vec<String> {
    let text = s(reply);
    let mut lines = text.split("\r\n").skip(1);
    let mut out = Vec::new();
    while let Some(h) = lines.next() {
        if h.starts_with('$') {
            out.push(lines.next().unwrap_or_default().to_string());
        }
    }
    out.sort();
    out
}

/// Every key through a full SCAN iteration with `COUNT 7`.
fn scan_all(c: &mut Raw, pattern: &str) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    for _ in 0..10_000 {
        let r = s(&run(c, &format!("SCAN {cursor} MATCH {pattern} COUNT 7")));
        let mut lines = r.split("\r\n");
        assert_eq!(lines.next(), Some("*2"), "{r}");
        lines.next();
        cursor = lines.next().unwrap().to_string();
        let rest: Vec<&str> = lines.collect();
        keys.extend(sorted_items(rest.join("\r\n").as_bytes()));
        if cursor == "0" {
            keys.sort();
            return keys;
        }
    }
    panic!("SCAN did not finish");
}

/// The seed-style workload; each reply as respite or the server gave it.
fn workload(c: &mut Raw) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut step = |c: &mut Raw, line: String| {
        let r = run(c, &line);
        out.push((line, r));
    };
    for i in 0..40 {
        step(c, format!("SET app:user:{i} name{i} EX 1000"));
    }
    for i in 0..30 {
        step(c, format!("INCR app:counter:{}", i % 7));
        step(c, format!("INCRBY app:counter:{} 5", i % 3));
    }
    for i in 0..20 {
        step(c, format!("ZADD app:board {} player{i}", (i * 37) % 101));
    }
    step(c, "ZREVRANGE app:board 0 4 WITHSCORES".into());
    step(c, "ZINCRBY app:board 50 player3".into());
    step(c, "ZRANK app:board player3".into());
    step(c, "SET app:lock:a owner1 NX PX 10000".into());
    step(c, "SET app:lock:a owner2 NX PX 10000".into());
    step(c, "GET app:lock:a".into());
    let mset: Vec<String> = (0..25).map(|i| format!("app:k{i} v{i}")).collect();
    step(c, format!("MSET {}", mset.join(" ")));
    let keys: Vec<String> = (0..30).map(|i| format!("app:k{i}")).collect();
    step(c, format!("MGET {}", keys.join(" ")));
    step(c, format!("EXISTS {}", keys.join(" ")));
    step(c, format!("TOUCH {}", keys[..10].join(" ")));
    step(c, format!("DEL {}", keys[..10].join(" ")));
    step(c, format!("UNLINK {}", keys[5..15].join(" ")));
    step(c, format!("MGET {}", keys.join(" ")));
    step(c, "DBSIZE".into());
    step(c, "HSET app:h f1 v1 f2 v2".into());
    step(c, "HGETALL app:h".into());
    step(c, "LPUSH app:list a b c".into());
    step(c, "LRANGE app:list 0 -1".into());
    step(c, "EXPIRE app:k20 1000".into());
    step(c, "MGET app:k20 app:nope".into());
    out
}

fn scenarios(kind: Kind) {
    let cluster = Cluster::start(kind);
    let proxy = Proxy::start(&cluster.url());
    let mut c = proxy.raw();

    // The seed-style workload: the same replies as one plain server's.
    let single = Server::start(kind);
    let direct_proxy = Proxy::start(&single.url());
    let mut d = direct_proxy.raw();
    let through = workload(&mut c);
    let direct = workload(&mut d);
    for ((line, got), (_, want)) in through.iter().zip(&direct) {
        assert_eq!(s(got), s(want), "{line}");
    }
    let ttl = s(&run(&mut c, "TTL app:user:7"));
    assert!(ttl == ":1000\r\n" || ttl == ":999\r\n", "{ttl}");
    assert_eq!(
        sorted_items(&run(&mut c, "KEYS app:*")),
        sorted_items(&run(&mut d, "KEYS app:*"))
    );
    let keys = scan_all(&mut c, "app:*");
    assert_eq!(keys, sorted_items(&run(&mut d, "KEYS app:*")));
    assert_eq!(keys.len(), 40 + 7 + 1 + 1 + 10 + 2, "{keys:?}");
    let info = s(&run(&mut c, "INFO keyspace"));
    assert!(
        info.contains(&format!("db0:keys={},", keys.len())),
        "{info}"
    );
    assert!(run(&mut c, "RANDOMKEY").starts_with(b"$"));
    // Cross-slot commands that must be atomic are refused with the cluster's own error.
    for line in [
        "MSETNX app:x 1 app:y 2",
        "RENAME app:k20 app:k21",
        "SMOVE app:a app:b m",
    ] {
        assert_eq!(
            s(&run(&mut c, line)),
            "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            "{line}"
        );
    }
    // Each key is held by its slot's primary only: respite routed, it did not broadcast.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let held: usize = primaries
        .iter()
        .map(|&p| {
            let r = s(&cluster.node(p).cmd(&[b"DBSIZE"]));
            r.trim_start_matches(':').trim().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(held, keys.len());

    // MGET of 100 keys over 3 nodes: one upstream command per node.
    let many: Vec<String> = (0..100).map(|i| format!("many:{i}")).collect();
    let pairs: Vec<String> = many.iter().map(|k| format!("{k} {k}v")).collect();
    assert_eq!(
        run(&mut c, &format!("MSET {}", pairs.join(" "))),
        b"+OK\r\n"
    );
    cluster.reset_stats();
    let got = run(&mut c, &format!("MGET {}", many.join(" ")));
    let mut want = format!("*{}\r\n", many.len());
    for k in &many {
        want.push_str(&format!("${}\r\n{k}v\r\n", k.len() + 1));
    }
    assert_eq!(s(&got), want);
    // One script per node (its GETs run inside it, one round trip), no per-key commands.
    for &p in &primaries {
        assert_eq!(cluster.calls(p, "eval"), 1, "EVAL calls on node {p}");
        assert_eq!(cluster.calls(p, "mget"), 0, "MGET calls on node {p}");
    }

    // Commands counted per node, one series per primary.
    let (_, metrics) = proxy.admin_get("/metrics");
    for &p in &primaries {
        assert!(
            metrics.contains(&format!(
                "respite_cluster_node_commands_total{{node=\"127.0.0.1:{p}\"}}"
            )),
            "node {p} in /metrics"
        );
    }

    // redis-py's plain client, unaware of the cluster.
    let py = python(&[
        "-c",
        &format!(
            "import redis; r = redis.Redis(port={}); r.mset({{'py:a': 1, 'py:b': 2, 'py:c': 3}}); \
             print(r.mget(['py:a', 'py:b', 'py:c', 'py:d']), r.delete('py:a', 'py:b', 'py:c'))",
            proxy.port()
        ),
    ]);
    assert_eq!(py.trim(), "[b'1', b'2', b'3', None] 3");

    tenant_tags(&cluster);
    pinned_on_the_keys_node(&cluster, &proxy);
    reshard_under_load(&cluster, &proxy);
    node_metrics(&cluster, &proxy);

    // FLUSHALL reaches every primary.
    assert_eq!(run(&mut c, "FLUSHALL"), b"+OK\r\n");
    for &p in &cluster.primaries() {
        assert_eq!(cluster.node(p).cmd(&[b"DBSIZE"]), b":0\r\n", "node {p}");
    }
    one_primary_down(cluster, &proxy);
}

/// With one primary killed, the other primaries' slots are served; its own fail with an error
/// until the cluster promotes its replica, which respite then follows.
fn one_primary_down(mut cluster: Cluster, proxy: &Proxy) {
    let primaries = cluster.primaries();
    let victim = primaries[2];
    let mut c = proxy.raw();
    // One key per primary, found by asking the cluster which node holds each slot.
    let mut key_on = std::collections::HashMap::new();
    for i in 0..200 {
        let key = format!("down:{i}");
        assert_eq!(run(&mut c, &format!("SET {key} v")), b"+OK\r\n");
        for &p in &primaries {
            if cluster.node(p).cmd(&[b"EXISTS", key.as_bytes()]) == b":1\r\n" {
                key_on.entry(p).or_insert(key.clone());
            }
        }
    }
    assert_eq!(key_on.len(), 3);
    // Replication is asynchronous: a SIGKILL right after the SETs may lose them on the promoted
    // replica (the cluster's contract, not respite's), so each primary's replica has them first.
    cluster.wait_replicas_online();
    for &p in &primaries {
        assert_eq!(
            cluster.node(p).cmd(&[b"WAIT", b"1", b"10000"]),
            b":1\r\n",
            "primary {p}'s replica acknowledged the writes"
        );
    }
    let node = cluster.nodes.iter_mut().find(|n| n.port == victim).unwrap();
    node.kill();
    let mut errors = 0;
    for (&p, key) in &key_on {
        let r = run(&mut c, &format!("GET {key}"));
        if p == victim {
            errors += r.starts_with(b"-") as usize;
        } else {
            assert_eq!(s(&r), "$1\r\nv\r\n", "a key of a live primary ({p})");
        }
    }
    assert_eq!(
        errors, 1,
        "the dead primary's key fails (before any failover)"
    );
    // The cluster promotes the replica (cluster-node-timeout 2 s); respite follows it.
    let killed = std::time::Instant::now();
    let key = key_on[&victim].clone();
    let mut last = Vec::new();
    let followed = crate::support::wait_until(std::time::Duration::from_secs(30), || {
        last = run(&mut c, &format!("GET {key}"));
        last == b"$1\r\nv\r\n"
    });
    let live = primaries.iter().find(|&&p| p != victim).unwrap();
    assert!(
        followed.is_some(),
        "the failover was not followed: GET {key} = {}; the cluster says:\n{}",
        s(&last),
        s(&cluster.node(*live).cmd(&[b"CLUSTER", b"NODES"]))
    );
    eprintln!("failover followed {:?} after the kill", killed.elapsed());
}

/// The per-node series: each primary's slots (summing to every slot), its commands in flight
/// (none once every reply is in), the MOVED answers respite followed during the reshard, and
/// no slot served locally.
fn node_metrics(cluster: &Cluster, proxy: &Proxy) {
    let (_, metrics) = proxy.admin_get("/metrics");
    let value = |series: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let mut slots = 0.0;
    let mut moved = 0.0;
    for p in cluster.primaries() {
        let node = format!("node=\"127.0.0.1:{p}\"");
        slots += value(&format!("respite_cluster_node_slots{{{node}}}")).unwrap_or(0.0);
        assert_eq!(
            value(&format!("respite_cluster_node_inflight{{{node}}}")),
            Some(0.0),
            "{node} in flight"
        );
        moved += value(&format!(
            "respite_cluster_node_redirects_total{{{node},kind=\"moved\"}}"
        ))
        .unwrap_or_else(|| panic!("{node} redirects in /metrics"));
        assert!(
            value(&format!("respite_cluster_node_failures_total{{{node}}}")).is_some(),
            "{node} failures in /metrics"
        );
    }
    assert_eq!(slots, 16384.0, "every slot on a primary");
    assert!(moved > 0.0, "MOVED answers followed during the reshard");
    assert_eq!(value("respite_cluster_slots_local"), Some(0.0));
}

/// A tenant's keys that share a hash tag share a slot after prefixing, and MULTI on them runs.
fn tenant_tags(cluster: &Cluster) {
    let toml = tenants(&[TenantToml::new("t1", "t1:").login("p1").allow(&["@all"])]);
    let proxy = Proxy::start_with_config(&cluster.url(), &toml, &[]);
    let mut c = proxy.login("t1", "p1");
    assert_eq!(
        run(&mut c, "MSET {cart9}:items 3 {cart9}:total 42"),
        b"+OK\r\n"
    );
    c.send(&encode(&[b"MULTI"]));
    c.send(&encode(&[b"INCR", b"{cart9}:items"]));
    c.send(&encode(&[b"INCRBY", b"{cart9}:total", b"8"]));
    c.send(&encode(&[b"EXEC"]));
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.reply().unwrap(), b"+QUEUED\r\n");
    assert_eq!(c.reply().unwrap(), b"+QUEUED\r\n");
    assert_eq!(s(&c.reply().unwrap()), "*2\r\n:4\r\n:50\r\n");
    // Judged by the cluster: both prefixed keys in one slot, on that slot's primary.
    let mut n = cluster.node(cluster.primaries()[0]);
    let slot_a = s(&n.cmd(&[b"CLUSTER", b"KEYSLOT", b"t1:{cart9}:items"]));
    let slot_b = s(&n.cmd(&[b"CLUSTER", b"KEYSLOT", b"t1:{cart9}:total"]));
    assert_eq!(slot_a, slot_b);
    let holders: Vec<u16> = cluster
        .primaries()
        .into_iter()
        .filter(|&p| {
            let mut n = cluster.node(p);
            n.cmd(&[b"EXISTS", b"t1:{cart9}:items", b"t1:{cart9}:total"]) == b":2\r\n"
        })
        .collect();
    assert_eq!(holders.len(), 1, "both keys on one primary");
    // A transaction over two slots is refused as the cluster refuses it.
    c.send(&encode(&[b"MULTI"]));
    c.send(&encode(&[b"SET", b"a", b"1"]));
    c.send(&encode(&[b"SET", b"b", b"1"]));
    c.send(&encode(&[b"EXEC"]));
    for _ in 0..3 {
        c.reply().unwrap();
    }
    assert!(s(&c.reply().unwrap()).starts_with("-CROSSSLOT"));
}

/// Blocking commands and WATCH take a connection of the client's own to their key's node,
/// whichever primary that is.
fn pinned_on_the_keys_node(cluster: &Cluster, proxy: &Proxy) {
    let port = proxy.port();
    let mut holders = std::collections::BTreeSet::new();
    for i in 0..6 {
        let key = format!("queue:{i}");
        let waiter = {
            let key = key.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
                c.cmd(&[b"BLPOP", key.as_bytes(), b"10"])
            })
        };
        let mut c = proxy.raw();
        // Pushed once the waiter is blocked on its node (seen by the node, not by respite).
        let holder = cluster
            .primaries()
            .into_iter()
            .find(|&p| {
                let r = s(&cluster.node(p).cmd(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()]));
                let slot: u16 = r.trim_start_matches(':').trim().parse().unwrap();
                let r = s(&cluster.node(p).cmd(&[b"CLUSTER", b"COUNTKEYSINSLOT", slot.to_string().as_bytes()]));
                r.starts_with(':') && {
                    let nodes = s(&cluster.node(p).cmd(&[b"CLUSTER", b"NODES"]));
                    nodes.lines().any(|l| {
                        l.contains("myself")
                            && l.split(' ').skip(8).any(|range| {
                                let (a, b) = range.split_once('-').unwrap_or((range, range));
                                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                            })
                    })
                }
            })
            .unwrap();
        holders.insert(holder);
        let blocked = crate::support::wait_until(std::time::Duration::from_secs(5), || {
            s(&cluster.node(holder).cmd(&[b"INFO", b"clients"])).contains("blocked_clients:1")
        });
        assert!(
            blocked.is_some(),
            "BLPOP {key} blocked on its node {holder}"
        );
        assert_eq!(run(&mut c, &format!("RPUSH {key} job{i}")), b":1\r\n");
        let got = s(&waiter.join().unwrap());
        assert_eq!(
            got,
            format!("*2\r\n${}\r\n{key}\r\n$4\r\njob{i}\r\n", key.len())
        );
        // WATCH, MULTI, EXEC on the same key's node.
        for line in [
            format!("WATCH {key}"),
            "MULTI".into(),
            format!("SET {key} done"),
        ] {
            let r = run(&mut c, &line);
            assert!(r == b"+OK\r\n" || r == b"+QUEUED\r\n", "{line}: {}", s(&r));
        }
        assert_eq!(s(&run(&mut c, "EXEC")), "*1\r\n+OK\r\n");
        assert_eq!(
            s(&cluster.node(holder).cmd(&[b"GET", key.as_bytes()])),
            "$4\r\ndone\r\n"
        );
    }
    assert!(
        holders.len() >= 2,
        "the keys were on more than one primary: {holders:?}"
    );
}

/// Counters incremented through respite while slots move: every reply is the value expected,
/// none an error.
fn reshard_under_load(cluster: &Cluster, proxy: &Proxy) {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let port = proxy.port();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let stop = stop.clone();
            let failures = failures.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
                let mut expected = vec![0i64; 200];
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds < 2 {
                    for (i, e) in expected.iter_mut().enumerate() {
                        let key = format!("load:{w}:{i}");
                        *e += 1;
                        let r = c.cmd(&[b"INCR", key.as_bytes()]);
                        if r != format!(":{e}\r\n").as_bytes() {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("INCR {key}: {}", s(&r)));
                        }
                    }
                    let keys: Vec<String> = (0..200).map(|i| format!("load:{w}:{i}")).collect();
                    let mut mget: Vec<&[u8]> = vec![b"MGET"];
                    mget.extend(keys.iter().map(|k| k.as_bytes()));
                    let r = s(&c.cmd(&mget));
                    let values: Vec<String> = sorted_items(r.as_bytes());
                    let mut want: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
                    want.sort();
                    if values != want {
                        failures.lock().unwrap().push(format!("MGET: {r:.200}"));
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let primaries = cluster.primaries();
    cluster.reshard(primaries[0], primaries[1], 300);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() >= 2);
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

crate::both!(cluster_behind_one_endpoint, scenarios);

//! The near cache end to end: real servers, the real proxy, the fault relay between them.
//!
//! Each race the design names has its own test. The relay identifies respite's tracking
//! connection as the one that carries a cacheable read's fill (respite's pool connections stay
//! idle while only cached reads are sent).
use crate::both;
use crate::relay::{Direction, Relay};
use crate::support::{
    Binary, Kind, Proxy, Raw, Server, TenantToml, bulk, encode, rss_kib_of, tenants, wait_until,
    words,
};
use std::time::{Duration, Instant};

const CACHE_ALL: &str = r#"
[near_cache]
enabled = true
[[near_cache.rule]]
pattern = "*"
"#;

/// For tests that freeze the upstream (SIGSTOP) for a moment: local-only mode would take over
/// after the probe deadline and answer from the local engine instead.
const NO_LOCAL_ONLY: &[(&str, &str)] = &[("local_only.enabled", "false")];

fn cached_proxy(url: &str, settings: &[(&str, &str)]) -> Proxy {
    let proxy = Proxy::start_with_config(url, CACHE_ALL, settings);
    wait_tracking(&proxy);
    proxy
}

fn stats(p: &Proxy) -> serde_json::Value {
    let (status, body) = p.admin_get("/stats");
    assert_eq!(status, 200);
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["near_cache"].clone()
}

fn stat(p: &Proxy, name: &str) -> u64 {
    stats(p)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stat {name}"))
}

/// Every tracking connection is acknowledged.
fn wait_tracking(p: &Proxy) {
    wait_until(Duration::from_secs(10), || {
        let s = stats(p);
        s["tracking"].as_u64() == Some(2) || s["enabled"] == false
    })
    .expect("tracking connections come up");
}

/// Calls of one command on the upstream so far (`INFO commandstats`).
fn calls(server: &Server, command: &str) -> u64 {
    let info = server.raw().cmd(&words("INFO commandstats"));
    let text = String::from_utf8_lossy(&info);
    let needle = format!("cmdstat_{command}:calls=");
    text.split(&needle)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

fn resp3(mut c: Raw) -> Raw {
    let hello = c.cmd(&words("HELLO 3"));
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    c
}

/// The relay connection that carries fills: the one whose upstream-bound bytes grow when a
/// cacheable read misses.
fn tracking_conn(relay: &Relay, proxy: &Proxy, key: &str) -> usize {
    let before = relay.connections();
    let mut c = proxy.raw();
    c.cmd(&[b"GET", key.as_bytes()]);
    let after = relay.connections();
    let grew: Vec<usize> = after
        .iter()
        .filter(|a| {
            before
                .iter()
                .find(|b| b.id == a.id)
                // More than the heartbeat PINGs (14 bytes each, one per 100 ms) that may go out
                // meanwhile; a fill is at least 41.
                .is_none_or(|b| a.to_upstream > b.to_upstream + 28)
        })
        .map(|a| a.id)
        .collect();
    assert_eq!(
        grew.len(),
        1,
        "exactly one connection carried the fill: {after:?}"
    );
    grew[0]
}

both!(
    cached_replies_are_byte_identical_in_both_protocols,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), &[]);
        let mut d = server.raw();
        for c in [
            "SET s hello",
            "SET n 12",
            "HSET h f1 v1 f2 v2 f3 333",
            "SADD set a b c 1 2",
            "RPUSH l x y z x",
            "ZADD z 1 a 2 b",
            "ZADD board 1.5 alice 2.25 bob -3 carol 100 dave",
            "XADD st 1-1 k v",
            "XADD st 2-1 k w f x",
            "SETBIT bits 3 1",
            "SET e ''",
        ] {
            d.cmd(&words(c));
        }
        d.cmd(&[b"SET", b"bin", b"a\r\nb\0c"]);
        let reads = [
            "GET s",
            "GET missing",
            "GET h",
            "GET bin",
            "MGET s n missing",
            "MGET s n",
            "STRLEN s",
            "STRLEN missing",
            "GETRANGE s 1 3",
            "GETRANGE s -2 -1",
            "EXISTS s",
            "EXISTS missing",
            "TYPE h",
            "TYPE missing",
            "HGET h f1",
            "HGET h nope",
            "HGET s f1",
            "HMGET h f1 nope f3",
            "HGETALL h",
            "HGETALL missing",
            "HEXISTS h f2",
            "HLEN h",
            "HSTRLEN h f3",
            "HKEYS h",
            "HVALS h",
            "SCARD set",
            "SISMEMBER set b",
            "SISMEMBER set q",
            "SMISMEMBER set a q 1",
            "SMEMBERS set",
            "SMEMBERS missing",
            "LLEN l",
            "LINDEX l 1",
            "LINDEX l 99",
            "LRANGE l 0 -1",
            "LRANGE l 1 2",
            "ZCARD z",
            "LLEN s",
            "ZSCORE board bob",
            "ZSCORE board nobody",
            "ZMSCORE board alice nobody carol",
            "ZRANK board bob",
            "ZREVRANK board bob",
            "ZCOUNT board 0 +inf",
            "ZLEXCOUNT z - +",
            "ZRANGE board 0 -1",
            "ZRANGE board 0 -1 WITHSCORES",
            "ZREVRANGE board 0 1 WITHSCORES",
            "ZRANGEBYSCORE board -inf +inf WITHSCORES",
            "ZREVRANGEBYSCORE board +inf 2 WITHSCORES",
            "ZRANGE board 0 10 BYSCORE LIMIT 1 2 WITHSCORES",
            "ZRANGEBYLEX z - +",
            "ZREVRANGEBYLEX z + -",
            "XLEN st",
            "XRANGE st - +",
            "XREVRANGE st + - COUNT 1",
            "GETBIT bits 3",
            "BITCOUNT bits",
            "LPOS l x",
            "LPOS l x COUNT 0",
            "ZSCORE s x",
        ];
        for proto in [2, 3] {
            let (mut direct, mut through) = match proto {
                2 => (server.raw(), proxy.raw()),
                _ => (resp3(server.raw()), resp3(proxy.raw())),
            };
            for r in reads {
                let want = direct.cmd(&words(r));
                let hits = stat(&proxy, "hits");
                for round in ["miss", "hit"] {
                    assert_eq!(
                        String::from_utf8_lossy(&through.cmd(&words(r))),
                        String::from_utf8_lossy(&want),
                        "RESP{proto} {r} ({round})"
                    );
                }
                // Every successful reply is cached: at least the second call was a hit. (MGET's
                // missing keys are filled in the background, so it may take another call.)
                if !want.starts_with(b"-") {
                    wait_until(Duration::from_secs(2), || {
                        stat(&proxy, "hits") > hits || {
                            assert_eq!(through.cmd(&words(r)), want, "RESP{proto} {r}");
                            false
                        }
                    })
                    .unwrap_or_else(|| panic!("RESP{proto} {r} was never a hit"));
                }
            }
        }
    }
);

both!(hits_spare_the_upstream, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = cached_proxy(&server.url(), &[]);
    server.raw().cmd(&words("SET k v"));
    let before = calls(&server, "get");
    let mut c = proxy.raw();
    for _ in 0..200 {
        assert_eq!(c.cmd(&words("GET k")), bulk("v"));
    }
    // A pipeline of hits, too.
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend(encode(&words("GET k")));
    }
    c.send(&batch);
    for _ in 0..100 {
        assert_eq!(c.reply().unwrap(), bulk("v"));
    }
    assert_eq!(calls(&server, "get") - before, 1, "one fill, then hits");
    assert_eq!(stat(&proxy, "hits"), 299);
});

both!(
    writes_elsewhere_reach_the_cache_by_invalidation,
    |kind: Kind| {
        let server = Server::start(kind);
        // The key changes far more often than the cool-down allows by default.
        let proxy = cached_proxy(&server.url(), &[("near_cache.cooldown_after", "1000")]);
        let mut d = server.raw();
        let mut c = proxy.raw();
        let mut delays = Vec::new();
        for i in 0..20 {
            d.cmd(&[b"SET", b"k", format!("v{i}").as_bytes()]);
            // Cache it (once the previous round's invalidation is in), then change it behind
            // respite's back.
            wait_until(Duration::from_secs(2), || {
                c.cmd(&words("GET k")) == bulk(format!("v{i}"))
            })
            .unwrap();
            assert_eq!(c.cmd(&words("GET k")), bulk(format!("v{i}")));
            d.cmd(&[b"SET", b"k", format!("w{i}").as_bytes()]);
            let changed = Instant::now();
            wait_until(Duration::from_secs(2), || {
                c.cmd(&words("GET k")) == bulk(format!("w{i}"))
            })
            .expect("the invalidation arrives");
            delays.push(changed.elapsed());
        }
        delays.sort();
        eprintln!(
            "{kind:?}: a write on the upstream stopped being served stale after: median {:?}, max {:?}",
            delays[delays.len() / 2],
            delays[delays.len() - 1]
        );
        assert!(stat(&proxy, "invalidations_pushed") >= 20);
    }
);

both!(a_client_reads_its_own_writes, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = cached_proxy(&server.url(), &[]);
    let mut c = proxy.raw();
    let mut other = proxy.raw();
    for i in 0..200 {
        // Another client keeps the key cached between the writes.
        other.cmd(&words("GET k"));
        let v = format!("v{i}");
        if i % 2 == 0 {
            assert_eq!(c.cmd(&[b"SET", b"k", v.as_bytes()]), b"+OK\r\n");
            assert_eq!(c.cmd(&words("GET k")), bulk(&v));
        } else {
            // Pipelined right behind the write: answered after it, never from the cache.
            let mut batch = encode(&[b"SET", b"k", v.as_bytes()]);
            batch.extend(encode(&words("GET k")));
            c.send(&batch);
            assert_eq!(c.reply().unwrap(), b"+OK\r\n");
            assert_eq!(c.reply().unwrap(), bulk(&v));
        }
        assert_eq!(
            other.cmd(&words("GET k")),
            bulk(&v),
            "after the ack, everyone"
        );
    }
});

both!(
    a_write_acknowledged_while_its_invalidation_is_delayed,
    |kind: Kind| {
        let server = Server::start(kind);
        let relay = Relay::to(&server);
        let proxy = cached_proxy(&relay.url(), &[]);
        server.raw().cmd(&words("SET k old"));
        let t = tracking_conn(&relay, &proxy, "k");
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("GET k")), bulk("old"));
        // Pushes to respite crawl; the write's own connection does not.
        relay
            .conn(t)
            .delay(Direction::ToClient, Duration::from_millis(500));
        assert_eq!(c.cmd(&words("SET k new")), b"+OK\r\n");
        let mut other = proxy.raw();
        assert_eq!(other.cmd(&words("GET k")), bulk("new"));
        assert_eq!(c.cmd(&words("GET k")), bulk("new"));
        relay.conn(t).heal();
    }
);

both!(an_invalidation_that_overtakes_a_fill, |kind: Kind| {
    // The fill is held before it reaches the upstream; a write through respite passes it.
    let server = Server::start(kind);
    let relay = Relay::to(&server);
    let proxy = cached_proxy(&relay.url(), &[]);
    server.raw().cmd(&words("SET k old"));
    let t = tracking_conn(&relay, &proxy, "warmup");
    relay.conn(t).pause(Direction::ToUpstream);
    let mut reader = proxy.raw();
    reader.send(&encode(&words("GET k")));
    wait_until(Duration::from_secs(5), || stat(&proxy, "misses") >= 2).unwrap();
    let mut writer = proxy.raw();
    assert_eq!(writer.cmd(&words("SET k new")), b"+OK\r\n");
    relay.conn(t).resume(Direction::ToUpstream);
    assert_eq!(reader.reply().unwrap(), bulk("new"));
    assert_eq!(stat(&proxy, "fills_discarded"), 1, "{}", stats(&proxy));
    assert_eq!(reader.cmd(&words("GET k")), bulk("new"));
});

both!(
    a_fill_whose_reply_arrives_after_a_local_write,
    |kind: Kind| {
        // The fill reads the old value, but its reply is held until a write through respite has
        // been acknowledged: it must not be cached.
        let server = Server::start(kind);
        let relay = Relay::to(&server);
        let proxy = cached_proxy(&relay.url(), &[]);
        server.raw().cmd(&words("SET k old"));
        let t = tracking_conn(&relay, &proxy, "warmup");
        relay.conn(t).pause(Direction::ToClient);
        let mut reader = proxy.raw();
        let before = calls(&server, "pttl");
        reader.send(&encode(&words("GET k")));
        // The fill ran on the upstream (its reply is held in the relay).
        wait_until(Duration::from_secs(5), || calls(&server, "pttl") > before).unwrap();
        let mut writer = proxy.raw();
        assert_eq!(writer.cmd(&words("SET k new")), b"+OK\r\n");
        relay.conn(t).resume(Direction::ToClient);
        assert_eq!(reader.reply().unwrap(), bulk("old"), "answered as read");
        assert_eq!(reader.cmd(&words("GET k")), bulk("new"), "but never cached");
        assert_eq!(writer.cmd(&words("GET k")), bulk("new"));
        assert!(stat(&proxy, "fills_discarded") >= 1);
    }
);

both!(a_write_between_the_read_and_its_pttl, |kind: Kind| {
    // The fill's GET runs; a direct write lands before its PTTL does. The invalidation arrives
    // between the two replies, so the entry is dropped.
    let server = Server::start(kind);
    let relay = Relay::to(&server);
    let proxy = cached_proxy(&relay.url(), &[]);
    server.raw().cmd(&words("SET k old"));
    let t = tracking_conn(&relay, &proxy, "warmup");
    let get = encode(&words("GET k"));
    relay
        .conn(t)
        .pause_after(Direction::ToUpstream, get.len() as u64);
    let before = calls(&server, "get");
    let mut reader = proxy.raw();
    reader.send(&get);
    wait_until(Duration::from_secs(5), || calls(&server, "get") > before).unwrap();
    server.raw().cmd(&words("SET k new PX 100000"));
    relay.conn(t).resume(Direction::ToUpstream);
    assert_eq!(reader.reply().unwrap(), bulk("old"));
    assert_eq!(reader.cmd(&words("GET k")), bulk("new"));
    assert_eq!(stat(&proxy, "fills_discarded"), 1, "{}", stats(&proxy));
});

both!(flushes_empty_the_cache_even_during_fills, |kind: Kind| {
    let server = Server::start(kind);
    let relay = Relay::to(&server);
    let proxy = cached_proxy(&relay.url(), &[]);
    let mut d = server.raw();
    let mut c = proxy.raw();
    let t = tracking_conn(&relay, &proxy, "warmup");
    // Not SWAPDB: neither Redis 7.0 nor Valkey 9 tells tracking clients about it (docs/near-cache.md).
    for flush in ["FLUSHALL", "FLUSHDB"] {
        for cmd in [
            "SELECT 1",
            "FLUSHDB",
            "SELECT 0",
            "SET k cached",
            "SET j cached",
        ] {
            d.cmd(&words(cmd));
        }
        // Writes elsewhere reach respite one invalidation's delivery later.
        wait_until(Duration::from_secs(2), || {
            c.cmd(&words("GET k")) == bulk("cached")
        })
        .unwrap();
        assert_eq!(c.cmd(&words("GET k")), bulk("cached"));
        // A fill in flight when the flush happens.
        relay.conn(t).pause(Direction::ToClient);
        wait_until(Duration::from_secs(2), || stats(&proxy)["entries"] != 0)
            .unwrap_or_else(|| panic!("{flush}: {}", stats(&proxy)));
        let pttl = calls(&server, "pttl");
        c.send(&encode(&words("GET j")));
        wait_until(Duration::from_secs(5), || calls(&server, "pttl") > pttl).unwrap();
        d.cmd(&words(flush));
        relay.conn(t).resume(Direction::ToClient);
        assert_eq!(
            c.reply().unwrap(),
            bulk("cached"),
            "{flush}: {}",
            stats(&proxy)
        );
        wait_until(Duration::from_secs(2), || {
            c.cmd(&words("GET k")) == b"$-1\r\n" && c.cmd(&words("GET j")) == b"$-1\r\n"
        })
        .unwrap_or_else(|| panic!("{flush} emptied the cache"));
    }
    // Through respite too.
    d.cmd(&words("SET k again"));
    wait_until(Duration::from_secs(2), || {
        c.cmd(&words("GET k")) == bulk("again")
    })
    .unwrap();
    assert_eq!(c.cmd(&words("FLUSHALL")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("GET k")), b"$-1\r\n");
    assert!(stat(&proxy, "flushes") >= 4, "{}", stats(&proxy));
});

both!(
    a_lost_tracking_connection_empties_the_cache,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), &[]);
        let mut d = server.raw();
        let mut c = proxy.raw();
        d.cmd(&words("SET k one"));
        assert_eq!(c.cmd(&words("GET k")), bulk("one"));
        let flushes = stat(&proxy, "flushes");
        // Kill every tracking connection (flag `t` in CLIENT LIST).
        let list = String::from_utf8_lossy(&d.cmd(&words("CLIENT LIST"))).into_owned();
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('t'))
            })
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .collect();
        assert_eq!(ids.len(), 2, "{list}");
        for id in ids {
            d.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
        }
        // Changed while nobody was tracking it for respite.
        d.cmd(&words("SET k two"));
        wait_until(Duration::from_secs(5), || stat(&proxy, "flushes") > flushes).unwrap();
        assert_eq!(c.cmd(&words("GET k")), bulk("two"));
        wait_tracking(&proxy);
        assert_eq!(c.cmd(&words("GET k")), bulk("two"));
    }
);

both!(
    a_silent_tracking_connection_empties_the_cache,
    |kind: Kind| {
        let server = Server::start(kind);
        let relay = Relay::to(&server);
        let settings = [
            ("near_cache.heartbeat_ms", "200"),
            ("near_cache.heartbeat_timeout_ms", "600"),
        ];
        let proxy = cached_proxy(&relay.url(), &settings);
        let mut d = server.raw();
        d.cmd(&words("SET k one"));
        let t = tracking_conn(&relay, &proxy, "k");
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("GET k")), bulk("one"));
        // The partition swallows the invalidation of this write.
        relay.conn(t).blackhole();
        d.cmd(&words("SET k two"));
        let silent = Instant::now();
        wait_until(Duration::from_secs(5), || {
            c.cmd(&words("GET k")) == bulk("two")
        })
        .expect("respite notices the silence and stops serving the stale entry");
        eprintln!(
            "{kind:?}: stale for {:?} behind a silent tracking connection (deadline 600 ms, hits stop after max_silence_ms, 500)",
            silent.elapsed()
        );
        // Hits stopped at the silence bound; the heartbeat deadline then calls it lost.
        wait_until(Duration::from_secs(5), || stat(&proxy, "flushes") >= 1)
            .expect("the silent connection is given up and the cache emptied");
        wait_tracking(&proxy);
    }
);

both!(
    a_frozen_upstream_stops_hits_within_the_silence_bound,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), NO_LOCAL_ONLY);
        server.raw().cmd(&words("SET k v"));
        let mut c = proxy.raw();
        let mut other = proxy.raw();
        assert_eq!(c.cmd(&words("GET k")), bulk("v"));
        let hits = stat(&proxy, "hits");
        assert_eq!(c.cmd(&words("GET k")), bulk("v"));
        let mget = [b"*1\r\n".as_slice(), &bulk("v")].concat();
        assert_eq!(other.cmd(&words("MGET k")), mget);
        assert_eq!(stat(&proxy, "hits"), hits + 2, "both reads were hits");
        let (fills, flushes) = (stat(&proxy, "fills"), stat(&proxy, "flushes"));
        server.signal("STOP");
        let frozen = Instant::now();
        // The frozen server answers nothing: every reply now is a hit, until the first read
        // that goes upstream instead (no reply while the server is stopped). The heartbeat
        // sent last before the freeze bounds them: the hit path trusts a tracking connection
        // for max_silence_ms (500) after the send of the last heartbeat it had answered.
        let mut last_hit = Duration::ZERO;
        let stopped = wait_until(Duration::from_secs(10), || {
            let sent = frozen.elapsed();
            c.send(&encode(&words("GET k")));
            match c.reply_within(Duration::from_millis(200)) {
                Some(r) => {
                    assert_eq!(r, bulk("v"));
                    last_hit = sent;
                    false
                }
                None => true,
            }
        });
        // An MGET of the same key is no longer answered from the cache either.
        other.send(&encode(&words("MGET k")));
        let mget_hit = other.reply_within(Duration::from_millis(200));
        server.signal("CONT");
        eprintln!("{kind:?}: last hit for a read sent {last_hit:?} after the freeze");
        stopped.expect("hits stop while the upstream is frozen");
        assert!(
            last_hit <= Duration::from_millis(600),
            "a hit for a read sent {last_hit:?} after the freeze (bound: 500 ms + 100 ms margin)"
        );
        assert_eq!(mget_hit, None, "an MGET was answered from the cache");
        // Thawed: the reads that went upstream are answered, and the entry, never emptied (the
        // heartbeat deadline, 3 s, was not reached), is served again once a heartbeat is.
        assert_eq!(c.reply().unwrap(), bulk("v"));
        assert_eq!(other.reply().unwrap(), mget);
        let hits = stat(&proxy, "hits");
        wait_until(Duration::from_secs(5), || {
            assert_eq!(c.cmd(&words("GET k")), bulk("v"));
            stat(&proxy, "hits") > hits
        })
        .expect("hits resume once the connection answers again");
        assert_eq!(stat(&proxy, "flushes"), flushes);
        assert_eq!(stat(&proxy, "fills"), fills, "served from the entry kept");
    }
);

both!(
    an_upstream_restarted_empty_never_leaves_a_cached_value,
    |kind: Kind| {
        let mut server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), &[]);
        server.raw().cmd(&words("SET k survivor"));
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("GET k")), bulk("survivor"));
        assert_eq!(c.cmd(&words("GET k")), bulk("survivor"));
        server.restart();
        // Every answer from now on is the empty upstream's (or an error while respite reconnects).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut nil = 0;
        while Instant::now() < deadline && nil < 20 {
            let r = c.cmd(&words("GET k"));
            assert_ne!(r, bulk("survivor"), "a cached value survived the restart");
            if r == b"$-1\r\n" {
                nil += 1;
            }
        }
        assert_eq!(nil, 20);
        wait_tracking(&proxy);
        assert_eq!(c.cmd(&words("GET k")), b"$-1\r\n");
    }
);

both!(
    a_thousand_concurrent_misses_make_one_upstream_read,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), NO_LOCAL_ONLY);
        server.raw().cmd(&words("SET hot value"));
        let before = calls(&server, "get");
        // Hold the upstream so every miss arrives while the first fill is in flight.
        server.signal("STOP");
        let mut clients: Vec<Raw> = (0..50).map(|_| proxy.raw()).collect();
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.extend(encode(&words("GET hot")));
        }
        for c in &mut clients {
            c.send(&batch);
        }
        let arrived = wait_until(Duration::from_secs(2), || stat(&proxy, "misses") >= 1000);
        server.signal("CONT");
        arrived.expect("all 1000 reads reach respite");
        for c in &mut clients {
            for _ in 0..20 {
                assert_eq!(c.reply().unwrap(), bulk("value"));
            }
        }
        assert_eq!(calls(&server, "get") - before, 1, "{}", stats(&proxy));
    }
);

both!(the_client_that_started_a_fill_may_leave, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = cached_proxy(&server.url(), NO_LOCAL_ONLY);
    server.raw().cmd(&words("SET k v"));
    server.signal("STOP");
    let mut first = proxy.raw();
    first.send(&encode(&words("GET k")));
    let started = wait_until(Duration::from_secs(2), || stat(&proxy, "misses") >= 1);
    drop(first);
    let mut second = proxy.raw();
    second.send(&encode(&words("GET k")));
    let joined = wait_until(Duration::from_secs(2), || stat(&proxy, "misses") >= 2);
    server.signal("CONT");
    started.and(joined).expect("both reads reach respite");
    assert_eq!(second.reply().unwrap(), bulk("v"));
    let hits = stat(&proxy, "hits");
    assert_eq!(second.cmd(&words("GET k")), bulk("v"));
    assert_eq!(stat(&proxy, "hits"), hits + 1, "the fill was cached");
});

both!(
    an_upstream_that_refuses_tracking_turns_the_cache_off,
    |kind: Kind| {
        let server = Server::start(kind);
        server.raw().cmd(&words(
            "ACL SETUSER app on >pw ~* &* +@all -client|tracking",
        ));
        let url = format!("redis://app:pw@127.0.0.1:{}", server.port);
        let proxy = Proxy::start_with_config(&url, CACHE_ALL, &[]);
        wait_until(Duration::from_secs(5), || stats(&proxy)["enabled"] == false)
            .expect("the cache turns itself off");
        // The gauge, from a process of its own: in this one the registry is shared with the
        // tests running alongside, whose caches set it to 1.
        let mut binary = Binary::start(CACHE_ALL, &["--upstream", &url, "--log-level", "error"]);
        wait_until(Duration::from_secs(10), || {
            binary
                .admin_get("/metrics")
                .1
                .contains("respite_near_cache_enabled 0")
        })
        .expect("respite_near_cache_enabled 0");
        binary.kill();
        let mut c = proxy.raw();
        server.raw().cmd(&words("SET k v"));
        for _ in 0..3 {
            assert_eq!(c.cmd(&words("GET k")), bulk("v"));
        }
        assert_eq!(stat(&proxy, "hits"), 0);
    }
);

both!(rules_pick_tenants_and_patterns, |kind: Kind| {
    let server = Server::start(kind);
    let toml = tenants(&[
        TenantToml::new("alpha", "a:").login("pw").allow(&["@all"]),
        TenantToml::new("beta", "b:").login("pw").allow(&["@all"]),
    ]) + r#"
[near_cache]
enabled = true
[[near_cache.rule]]
tenant = "alpha"
pattern = "user:*"
commands = ["GET", "HGETALL"]
"#;
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    wait_tracking(&proxy);
    let mut d = server.raw();
    d.cmd(&words("SET a:user:1 alpha-user"));
    d.cmd(&words("SET b:user:1 beta-user"));
    d.cmd(&words("SET a:other alpha-other"));
    let (mut a, mut b) = (proxy.login("alpha", "pw"), proxy.login("beta", "pw"));
    for _ in 0..3 {
        assert_eq!(a.cmd(&words("GET user:1")), bulk("alpha-user"));
        assert_eq!(b.cmd(&words("GET user:1")), bulk("beta-user"));
        assert_eq!(a.cmd(&words("GET other")), bulk("alpha-other"));
        assert_eq!(a.cmd(&words("STRLEN user:1")), b":10\r\n");
    }
    // Only alpha's GETs of user:* were cached: one miss, two hits.
    let s = stats(&proxy);
    assert_eq!(
        (s["misses"].as_u64(), s["hits"].as_u64()),
        (Some(1), Some(2)),
        "{s}"
    );
    // Published once a second. (The registry is the test process's: other tests add to the
    // same series.)
    let alpha_hits = || -> u64 {
        let (_, metrics) = proxy.admin_get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("respite_near_cache_hits_total{tenant=\"alpha\"} "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(5), || alpha_hits() >= 2).expect("alpha's hits are exported");
    // A write through alpha invalidates alpha's entry under its prefixed name.
    assert_eq!(a.cmd(&words("SET user:1 changed")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("GET user:1")), bulk("changed"));
    assert_eq!(b.cmd(&words("GET user:1")), bulk("beta-user"));
    // Read-your-writes for a prefixed tenant, with another alpha client keeping the key cached.
    let mut other = proxy.login("alpha", "pw");
    for i in 0..50 {
        other.cmd(&words("GET user:1"));
        let v = format!("v{i}");
        let mut batch = encode(&[b"SET", b"user:1", v.as_bytes()]);
        batch.extend(encode(&words("GET user:1")));
        a.send(&batch);
        assert_eq!(a.reply().unwrap(), b"+OK\r\n");
        assert_eq!(a.reply().unwrap(), bulk(&v));
        assert_eq!(other.cmd(&words("GET user:1")), bulk(&v));
    }
});

#[test]
fn memory_stays_within_the_bound() {
    // A workload ten times the byte bound, against the real binary so its RSS is its own.
    let server = Server::start(Kind::Redis);
    let bound = 4 << 20;
    let binary = Binary::start(
        &format!(
            r#"
[log]
level = "warn"
[near_cache]
enabled = true
max_memory_bytes = {bound}
[[near_cache.rule]]
pattern = "*"
"#
        ),
        &["--upstream", &server.url()],
    );
    let pid = binary.pid();
    let rss = || rss_kib_of(&pid.to_string()) * 1024;
    let addr = binary.addr;
    // 10,000 values of 4 KiB: 40 MiB, ten times the bound.
    let value = vec![b'x'; 4096];
    let mut d = server.raw();
    let mut batch = Vec::new();
    for i in 0..10_000 {
        batch.extend(encode(&[b"SET", format!("key:{i}").as_bytes(), &value]));
    }
    d.send(&batch);
    for _ in 0..10_000 {
        d.reply().unwrap();
    }
    let mut c = Raw::connect(addr);
    let baseline = rss();
    for round in 0..2 {
        for chunk in 0..100 {
            let mut batch = Vec::new();
            for i in chunk * 100..(chunk + 1) * 100 {
                batch.extend(encode(&[b"GET", format!("key:{i}").as_bytes()]));
            }
            c.send(&batch);
            for _ in 0..100 {
                assert_eq!(c.reply().unwrap().len(), 4096 + 9, "round {round}");
            }
        }
    }
    let stats = {
        let (status, body) = binary.admin_get("/stats");
        assert_eq!(status, 200);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["near_cache"].clone()
    };
    let bytes = stats["bytes"].as_u64().unwrap();
    let grown = rss().saturating_sub(baseline);
    eprintln!(
        "near cache: bound {bound} B, holds {bytes} B in {} entries after 20,000 reads of 40 MiB; RSS {} MiB (+{} MiB over the first read)",
        stats["entries"],
        rss() >> 20,
        grown >> 20
    );
    assert!(bytes <= bound as u64, "{stats}");
    assert!(stats["evictions"].as_u64().unwrap() > 5000, "{stats}");
    // The bound plus allocator slack and buffers; far below the 40 MiB that went through.
    assert!(
        rss() < (bound as u64) * 3 + (24 << 20),
        "RSS {} MiB",
        rss() >> 20
    );
    drop(binary);
}

/// Monotonic time since the test began, so threads can compare when things happened.
fn since(start: Instant) -> Duration {
    start.elapsed()
}

fn int_reply(r: &[u8]) -> i64 {
    match r {
        b"$-1\r\n" => 0,
        _ if r.starts_with(b":") => std::str::from_utf8(&r[1..r.len() - 2])
            .unwrap()
            .parse()
            .unwrap(),
        _ if r.starts_with(b"$") => {
            let body = &r[r.iter().position(|&b| b == b'\n').unwrap() + 1..r.len() - 2];
            std::str::from_utf8(body).unwrap().parse().unwrap()
        }
        _ => panic!("not a counter: {}", String::from_utf8_lossy(r)),
    }
}

both!(
    randomized_checker_two_instances_and_direct_writers,
    |kind: Kind| {
        // Counters written with INCR (so values are ordered by the upstream) through instance A,
        // instance B and directly; readers GET them through A and B. A read through an instance
        // must never return a value older than a write acknowledged through that same instance
        // before the read was sent. How long writes made elsewhere stay invisible is measured.
        use std::sync::{Arc, Mutex};
        let server = Server::start(kind);
        let settings = [("near_cache.cooldown_after", "1000000")];
        let a = cached_proxy(&server.url(), &settings);
        let b = cached_proxy(&server.url(), &settings);
        const KEYS: usize = 4;
        let run = Duration::from_millis(2500);
        let start = Instant::now();
        // (instance, key, value, acked at)
        type Ack = (usize, usize, i64, Duration);
        // (instance, key, value, sent at, answered at)
        type Read = (usize, usize, i64, Duration, Duration);
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
        let addrs = [
            a.addr,
            b.addr,
            std::net::SocketAddr::from(([127, 0, 0, 1], server.port)),
        ];
        std::thread::scope(|scope| {
            for (w, &addr) in addrs.iter().enumerate() {
                let acks = acks.clone();
                scope.spawn(move || {
                    let mut c = Raw::connect(addr);
                    let mut i = 0usize;
                    while since(start) < run {
                        let key = format!("ctr:{}", (i * 7 + w) % KEYS);
                        let v = int_reply(&c.cmd(&[b"INCR", key.as_bytes()]));
                        let at = since(start);
                        acks.lock().unwrap().push((w, (i * 7 + w) % KEYS, v, at));
                        if w < 2 {
                            // Read your own write, on the same connection, at once.
                            let r = int_reply(&c.cmd(&[b"GET", key.as_bytes()]));
                            assert!(r >= v, "instance {w}: wrote {v} to {key}, read back {r}");
                        }
                        i += 1;
                        std::thread::sleep(Duration::from_micros(500));
                    }
                });
            }
            for r in 0..4 {
                let reads = reads.clone();
                let addr = addrs[r % 2];
                scope.spawn(move || {
                    let mut c = Raw::connect(addr);
                    let mut i = 0usize;
                    while since(start) < run {
                        let k = i % KEYS;
                        let sent = since(start);
                        let v = int_reply(&c.cmd(&[b"GET", format!("ctr:{k}").as_bytes()]));
                        reads
                            .lock()
                            .unwrap()
                            .push((r % 2, k, v, sent, since(start)));
                        i += 1;
                    }
                });
            }
        });
        let acks = acks.lock().unwrap();
        let reads = reads.lock().unwrap();
        // Own writes: for each read, the newest write acked through the same instance before it was
        // sent.
        let mut checked = 0;
        for &(inst, key, value, sent, _) in reads.iter() {
            let newest_own = acks
                .iter()
                .filter(|&&(w, k, _, at)| w == inst && k == key && at < sent)
                .map(|&(_, _, v, _)| v)
                .max()
                .unwrap_or(0);
            assert!(
                value >= newest_own,
                "read through instance {inst} returned {value} for ctr:{key} after {newest_own} was acked through it"
            );
            checked += 1;
        }
        // Writes made elsewhere: from the ack until a read through the instance (sent after the
        // ack) shows that value or a newer one.
        let mut lags = Vec::new();
        for &(w, key, v, at) in acks.iter() {
            for inst in 0..2 {
                if w == inst {
                    continue;
                }
                if let Some(&(_, _, _, _, seen)) = reads
                    .iter()
                    .filter(|&&(i, k, val, sent, _)| {
                        i == inst && k == key && sent >= at && val >= v
                    })
                    .min_by_key(|r| r.4)
                {
                    lags.push(seen.saturating_sub(at));
                }
            }
        }
        lags.sort();
        let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
        let (sa, sb) = (stats(&a), stats(&b));
        eprintln!(
            "{kind:?} checker: {} writes, {checked} reads checked; hits A {} / misses A {}, hits B {} / misses B {}; \
         a write made elsewhere became visible after p50 {:?}, p99 {:?}, max {:?} ({} samples)",
            acks.len(),
            sa["hits"],
            sa["misses"],
            sb["hits"],
            sb["misses"],
            pct(0.5),
            pct(0.99),
            pct(1.0),
            lags.len()
        );
        assert!(checked > 1000, "the readers ran");
        assert!(
            sa["hits"].as_u64().unwrap() > 100,
            "the cache was in play: {sa}"
        );
    }
);

both!(
    a_write_in_flight_bypasses_only_its_own_keys,
    |kind: Kind| {
        // While a client's write of k is unanswered, its read of k goes upstream behind it, and its
        // read of another key j is still a hit.
        let server = Server::start(kind);
        let proxy = cached_proxy(&server.url(), &[]);
        let mut d = server.raw();
        d.cmd(&words("SET j jv"));
        d.cmd(&words("SET k old"));
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("GET j")), bulk("jv"));
        assert_eq!(c.cmd(&words("GET k")), bulk("old"));
        // Writes stall on the upstream; reads do not.
        assert_eq!(d.cmd(&words("CLIENT PAUSE 3000 WRITE")), b"+OK\r\n");
        let hits = stat(&proxy, "hits");
        let mut batch = encode(&words("SET k new"));
        batch.extend(encode(&words("GET j")));
        batch.extend(encode(&words("GET k")));
        c.send(&batch);
        wait_until(Duration::from_secs(2), || stat(&proxy, "hits") > hits)
            .expect("GET j is a hit while the write of k is in flight");
        assert_eq!(d.cmd(&words("CLIENT UNPAUSE")), b"+OK\r\n");
        assert_eq!(c.reply().unwrap(), b"+OK\r\n");
        assert_eq!(c.reply().unwrap(), bulk("jv"));
        assert_eq!(
            c.reply().unwrap(),
            bulk("new"),
            "its own write, never the cached value"
        );
        assert_eq!(stat(&proxy, "hits"), hits + 1);
    }
);

// A fill on the wire when its tracking connection is lost is sent again on the next one: the
// client that waits for it gets the value, not an error (a read can be repeated; nothing is
// cached from it, since the loss emptied the cache).
both!(
    a_fill_cut_off_with_its_tracking_connection_is_sent_again,
    |kind: Kind| {
        let server = Server::start(kind);
        let relay = Relay::to(&server);
        let proxy = cached_proxy(&relay.url(), &[]);
        let mut d = server.raw();
        d.cmd(&words("SET k one"));
        let t = tracking_conn(&relay, &proxy, "k");
        // Written directly: the invalidation empties k's entry, so the next read fills again.
        let invalidations = stat(&proxy, "invalidations");
        d.cmd(&words("SET k two"));
        wait_until(Duration::from_secs(5), || {
            stat(&proxy, "invalidations") > invalidations
        })
        .unwrap();
        relay.conn(t).pause(Direction::ToClient);
        let mut reader = proxy.raw();
        let before = calls(&server, "pttl");
        reader.send(&encode(&words("GET k")));
        // The fill ran on the upstream; its reply is held in the relay when the connection dies.
        wait_until(Duration::from_secs(5), || calls(&server, "pttl") > before).unwrap();
        relay.conn(t).cut();
        assert_eq!(reader.reply().unwrap(), bulk("two"));
        wait_tracking(&proxy);
        assert_eq!(reader.cmd(&words("GET k")), bulk("two"));
    }
);

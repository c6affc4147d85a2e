//! Unit tests of the engine through its public entry point.
use bytes::Bytes;

use super::Engine;
use crate::command::resolve;
use crate::protocol::Protocol;

fn run(e: &Engine, proto: Protocol, now: u64, words: &[&str]) -> String {
    let args: Vec<Bytes> = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let spec = resolve(&args).expect("resolves");
    String::from_utf8_lossy(&e.execute(spec, &args, proto, now)).into_owned()
}

const R2: Protocol = Protocol::Resp2;
const R3: Protocol = Protocol::Resp3;

#[test]
fn strings_and_ttl() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 1000, &["set", "k", "v", "px", "500"]),
        "+OK\r\n"
    );
    assert_eq!(run(&e, R2, 1000, &["pttl", "k"]), ":500\r\n");
    assert_eq!(run(&e, R2, 1499, &["get", "k"]), "$1\r\nv\r\n");
    assert_eq!(run(&e, R2, 1500, &["get", "k"]), "$-1\r\n");
    assert_eq!(run(&e, R3, 1500, &["get", "k"]), "_\r\n");
    assert_eq!(
        run(&e, R2, 0, &["set", "k", "v", "nx", "xx"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["set", "k", "v", "ex", "0"]),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["incrbyfloat", "f", "1.1"]),
        "$3\r\n1.1\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["incr", "f"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["lpush", "l", "a"]), ":1\r\n");
    assert_eq!(
        run(&e, R2, 0, &["get", "l"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
}

#[test]
fn expiry_is_swept() {
    let e = Engine::new(0);
    run(&e, R2, 0, &["set", "a", "1", "px", "10"]);
    run(&e, R2, 0, &["set", "b", "1"]);
    e.sweep(10);
    assert_eq!(run(&e, R2, 10, &["dbsize"]), ":1\r\n");
    assert_eq!(
        run(&e, R2, 10, &["scan", "0"]),
        "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n"
    );
}

#[test]
fn zset_doubles_follow_protocol() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["zadd", "z", "1.1", "a", "2", "b"]),
        ":2\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["zscore", "z", "a"]),
        "$18\r\n1.1000000000000001\r\n"
    );
    assert_eq!(run(&e, R3, 0, &["zscore", "z", "b"]), ",2\r\n");
    assert_eq!(
        run(&e, R3, 0, &["zrange", "z", "0", "-1", "withscores"]),
        "*2\r\n*2\r\n$1\r\na\r\n,1.1000000000000001\r\n*2\r\n$1\r\nb\r\n,2\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["zrevrank", "z", "a"]), ":1\r\n");
}

#[test]
fn memory_bound_evicts() {
    let e = Engine::new(10_000);
    for i in 0..1000 {
        let k = format!("key{i}");
        assert_eq!(run(&e, R2, 0, &["set", &k, &"x".repeat(100)]), "+OK\r\n");
    }
    assert!(e.used_memory() <= 10_000);
    let big = "x".repeat(20_000);
    assert!(run(&e, R2, 0, &["set", "big", &big]).starts_with("-OOM"));
}

#[test]
fn unsupported_is_named() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["bitfield", "b", "get", "u8", "0"]),
        "-ERR 'bitfield' is not supported by respite's local engine\r\n"
    );
}

#[test]
fn unsupported_without_arguments_does_not_panic() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["lastsave"]),
        "-ERR 'lastsave' is not supported by respite's local engine\r\n"
    );
}

#[test]
fn engine_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn keys_and_scan_use_redis_globs() {
    let e = Engine::new(0);
    run(&e, R2, 0, &["mset", "a1", "x", "b1", "y", "a[", "z"]);
    assert_eq!(run(&e, R2, 0, &["keys", "a\\["]), "*1\r\n$2\r\na[\r\n");
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "match", "b*", "count", "5"]),
        "*2\r\n$1\r\n0\r\n*1\r\n$2\r\nb1\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "type", "hash"]),
        "*2\r\n$1\r\n0\r\n*0\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["scan", "x"]), "-ERR invalid cursor\r\n");
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "count", "0"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn randomkey_and_flush() {
    let e = Engine::new(0);
    assert_eq!(run(&e, R3, 0, &["randomkey"]), "_\r\n");
    run(&e, R2, 0, &["set", "only", "1"]);
    assert_eq!(run(&e, R2, 0, &["randomkey"]), "$4\r\nonly\r\n");
    assert_eq!(run(&e, R2, 0, &["flushall", "async"]), "+OK\r\n");
    assert_eq!(
        run(&e, R2, 0, &["flushall", "now"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["dbsize"]), ":0\r\n");
    assert_eq!(e.used_memory(), 0);
}

/// Parse a SCAN-family RESP2 reply into (next cursor, elements).
fn scan_reply(r: &str) -> (u64, Vec<String>) {
    let lines: Vec<&str> = r.split("\r\n").collect();
    let cursor = lines[2].parse().expect("cursor");
    let items = lines[4..]
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| p[1].to_string())
        .collect();
    (cursor, items)
}

/// Redis's SCAN guarantee: every key present for the whole scan is returned, while other keys
/// are added and removed between calls (enough of them to make the map grow and rehash).
#[test]
fn scan_returns_every_key_present_throughout() {
    let e = Engine::new(0);
    for i in 0..500 {
        run(&e, R2, 0, &["set", &format!("stay:{i}"), "v"]);
        run(&e, R2, 0, &["set", &format!("go:{i}"), "v"]);
    }
    let mut seen = std::collections::HashSet::new();
    let (mut cursor, mut calls, mut added) = (0u64, 0, 0);
    loop {
        let r = run(&e, R2, 0, &["scan", &cursor.to_string(), "count", "7"]);
        let (next, keys) = scan_reply(&r);
        assert!(keys.len() <= 7, "COUNT bounds a call: {}", keys.len());
        seen.extend(keys);
        for _ in 0..20 {
            run(&e, R2, 0, &["set", &format!("new:{added}"), "v"]);
            run(&e, R2, 0, &["del", &format!("go:{}", added % 500)]);
            added += 1;
        }
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 10_000, "the scan ends");
    }
    for i in 0..500 {
        assert!(seen.contains(&format!("stay:{i}")), "stay:{i} was missed");
    }
    // MATCH and TYPE filter what a call returns.
    run(&e, R2, 0, &["hset", "stay:h", "f", "v"]);
    let r = run(&e, R2, 0, &["scan", "0", "count", "100000", "type", "hash"]);
    assert_eq!(scan_reply(&r), (0, vec!["stay:h".to_string()]));
    let r = run(
        &e,
        R2,
        0,
        &["scan", "0", "count", "100000", "match", "stay:1?"],
    );
    assert_eq!(scan_reply(&r).1.len(), 10);
}

#[test]
fn hscan_sscan_zscan_cover_large_containers() {
    let e = Engine::new(0);
    for i in 0..1000 {
        let m = format!("m{i}");
        run(&e, R2, 0, &["hset", "h", &m, "v"]);
        run(&e, R2, 0, &["sadd", "s", &m]);
        run(&e, R2, 0, &["zadd", "z", &i.to_string(), &m]);
    }
    for (cmd, step) in [("hscan", 2), ("sscan", 1), ("zscan", 2)] {
        let key = &cmd[..1];
        let mut seen = std::collections::HashSet::new();
        let (mut cursor, mut calls) = (0u64, 0);
        loop {
            let r = run(&e, R2, 0, &[cmd, key, &cursor.to_string()]);
            let (next, items) = scan_reply(&r);
            seen.extend(items.iter().step_by(step).cloned());
            if cmd == "hscan" {
                // Remove what was seen: removals during a scan lose nothing else.
                for f in items.iter().step_by(2) {
                    run(&e, R2, 0, &["hdel", "h", f]);
                }
            }
            calls += 1;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 1000, "{cmd} missed members");
        // At least m/64 a call bounds a scan of a container that does not shrink.
        assert!(cmd == "hscan" || calls <= 70, "{cmd} took {calls} calls");
    }
    // A small container answers at once, as Redis's listpack does.
    run(&e, R2, 0, &["hset", "small", "a", "1", "b", "2"]);
    let r = run(&e, R2, 0, &["hscan", "small", "0", "count", "1"]);
    assert_eq!(scan_reply(&r).0, 0);
    assert_eq!(scan_reply(&r).1.len(), 4);
}

#[test]
fn a_runaway_script_is_stopped_and_the_engine_goes_on() {
    let e = Engine::new(0);
    let started = std::time::Instant::now();
    let r = run(&e, R2, 0, &["eval", "while true do end", "0"]);
    assert!(
        r.starts_with("-ERR script exceeded the local engine's instruction budget"),
        "{r}"
    );
    let r = run(
        &e,
        R2,
        0,
        &[
            "eval",
            "while true do pcall(function() while true do end end) end",
            "0",
        ],
    );
    assert!(r.starts_with("-ERR"), "{r}");
    eprintln!("two runaway scripts stopped in {:?}", started.elapsed());
    assert_eq!(run(&e, R2, 0, &["set", "k", "v"]), "+OK\r\n");
    for lib in ["os", "io", "require", "loadfile", "dofile", "package"] {
        let r = run(&e, R2, 0, &["eval", &format!("return type({lib})"), "0"]);
        assert!(r.contains("nonexistent global variable"), "{lib}: {r}");
    }
}

/// Fill a bounded engine past its bound while reading a hot tenth of the keys between writes.
fn churn(policy: super::Eviction) -> (Engine, usize) {
    let e = Engine::with_eviction(100_000, policy);
    let mut now = 0;
    for i in 0..5000 {
        now += 10;
        let k = format!("k{i}");
        run(&e, R2, now, &["set", &k, "0123456789"]);
        for h in 0..5 {
            run(&e, R2, now, &["get", &format!("hot{h}")]);
        }
        if i < 5 {
            run(&e, R2, now, &["set", &format!("hot{i}"), "v"]);
        }
    }
    let hot = (0..5)
        .filter(|h| run(&e, R2, now, &["exists", &format!("hot{h}")]) == ":1\r\n")
        .count();
    (e, hot)
}

#[test]
fn lru_and_lfu_keep_the_keys_in_use() {
    for policy in [super::Eviction::AllKeysLru, super::Eviction::AllKeysLfu] {
        let (e, hot) = churn(policy);
        assert_eq!(hot, 5, "{policy:?} evicted keys read before every write");
        assert!(e.used_memory() <= 100_000 + 200);
        assert!(e.len() < 5000, "{policy:?} evicted nothing");
    }
}

#[test]
fn volatile_policies_evict_only_keys_with_an_expiry() {
    let e = Engine::with_eviction(100_000, super::Eviction::VolatileLru);
    let mut kept = Vec::new();
    for i in 0..3000 {
        let k = format!("k{i}");
        let r = if i % 4 == 0 {
            run(&e, R2, i, &["set", &k, "0123456789"])
        } else {
            run(&e, R2, i, &["set", &k, "0123456789", "px", "100000000"])
        };
        if i % 4 == 0 && r == "+OK\r\n" {
            kept.push(k);
        }
    }
    assert!(e.len() < 3000, "nothing was evicted");
    // Every key without an expiry that was written is still there; keys with one made room.
    for k in &kept {
        assert_eq!(run(&e, R2, 3000, &["exists", k]), ":1\r\n", "{k}");
    }
    // Nothing left that the policy may evict: writes get Redis's OOM error.
    let e = Engine::with_eviction(2_000, super::Eviction::VolatileLru);
    for i in 0..100 {
        run(&e, R2, 0, &["set", &format!("p{i}"), "0123456789"]);
    }
    assert!(run(&e, R2, 0, &["set", "x", "y"]).starts_with("-OOM"));
    assert_eq!(run(&e, R2, 0, &["get", "p0"]), "$10\r\n0123456789\r\n");
}

#[test]
fn noeviction_refuses_writes_past_the_bound() {
    let e = Engine::with_eviction(2_000, super::Eviction::NoEviction);
    let mut refused = 0;
    for i in 0..100 {
        if run(&e, R2, 0, &["set", &format!("k{i}"), "0123456789"]).starts_with("-OOM") {
            refused += 1;
        }
    }
    assert!(refused > 50, "{refused}");
    assert_eq!(run(&e, R2, 0, &["get", "k0"]), "$10\r\n0123456789\r\n");
    assert_eq!(
        run(&e, R2, 0, &["del", "k0"]),
        ":1\r\n",
        "reads and deletes go on"
    );
}

#[test]
fn stream_ids_from_the_clock_and_xread_that_would_block() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 1000, &["xadd", "s", "*", "f", "v"]),
        "$6\r\n1000-0\r\n"
    );
    assert_eq!(
        run(&e, R2, 1000, &["xadd", "s", "*", "f", "v"]),
        "$6\r\n1000-1\r\n"
    );
    // A clock that went back never makes an ID go back.
    assert_eq!(
        run(&e, R2, 900, &["xadd", "s", "*", "f", "v"]),
        "$6\r\n1000-2\r\n"
    );
    assert_eq!(
        run(&e, R2, 2000, &["xadd", "s", "*", "f", "v"]),
        "$6\r\n2000-0\r\n"
    );
    let r = run(
        &e,
        R2,
        2000,
        &["xread", "block", "0", "streams", "s", "1000-2"],
    );
    assert!(r.starts_with("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n"), "{r}");
    let r = run(
        &e,
        R2,
        2000,
        &["xread", "block", "100", "streams", "s", "$"],
    );
    assert!(r.starts_with("-ERR XREAD BLOCK would wait"), "{r}");
    assert_eq!(run(&e, R2, 2000, &["xtrim", "s", "maxlen", "0"]), ":4\r\n");
    assert_eq!(
        run(&e, R2, 2000, &["type", "s"]),
        "+stream\r\n",
        "an emptied stream stays"
    );
}

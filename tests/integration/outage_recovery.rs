//! Local-only mode you can trust (issue 14): after an outage no read returns a value older than
//! the last write acknowledged to that key (`on_recovery = "invalidate"`), a lock
//! refused while down never has two holders, INFO answers while down (ioredis's ready check), and
//! an application's whole cache workload rides a killed and restarted upstream. Judged by the
//! upstream's own keys where it matters.
use super::busy_not_down::{health, wait_healthy};
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, Value, encode, wait_until, words};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wait_state(proxy: &Proxy, state: &str) {
    wait_until(Duration::from_secs(15), || health(proxy).0 == state)
        .unwrap_or_else(|| panic!("never {state}: {:?}", health(proxy)));
}

fn cmd(c: &mut Raw, line: &str) -> Value {
    Value::decode(&c.cmd(&words(line)))
}

/// Send `cmds` as one pipeline; their replies.
fn pipeline(c: &mut Raw, cmds: &[Vec<String>]) -> Vec<Value> {
    let mut out = Vec::new();
    for a in cmds {
        let args: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
        out.extend(encode(&args));
    }
    c.send(&out);
    cmds.iter()
        .map(|_| Value::decode(&c.reply().expect("a reply")))
        .collect()
}

fn argv(s: &str) -> Vec<String> {
    s.split(' ').map(String::from).collect()
}

/// INFO as ioredis's ready check reads it: `loading:0` present.
fn ready_check(c: &mut Raw) -> Result<(), String> {
    match cmd(c, "INFO") {
        Value::Bulk(b) if String::from_utf8_lossy(&b).contains("loading:0") => Ok(()),
        other => Err(format!("INFO: {other:?}")),
    }
}

both!(
    after_recovery_no_read_is_older_than_the_last_acknowledged_write,
    |kind: Kind| {
        let server = Server::start(kind);
        // `invalidate`'s contract (the default, `replay`, is tested in outage_replay.rs).
        let proxy = Proxy::start_with(&server.url(), &[("local_only.on_recovery", "invalidate")]);
        let mut p = proxy.raw();
        assert_eq!(cmd(&mut p, "SET k before"), Value::Simple("OK".into()));
        assert_eq!(
            cmd(&mut p, "SET h:untouched upstream"),
            Value::Simple("OK".into())
        );
        assert_eq!(cmd(&mut p, "HSET h f before"), Value::Int(1));
        wait_healthy(&proxy);

        // Silent, with nothing running: down after the probe deadline, its data kept.
        server.signal("STOP");
        wait_state(&proxy, "down");
        assert_eq!(cmd(&mut p, "SET k during"), Value::Simple("OK".into()));
        assert_eq!(cmd(&mut p, "HSET h f during"), Value::Int(1));
        assert_eq!(cmd(&mut p, "SET new:1 during"), Value::Simple("OK".into()));
        assert_eq!(cmd(&mut p, "GET k"), Value::Bulk(b"during".to_vec()));
        // INFO is answered as standalone answers it, for a client connecting now too.
        let mut fresh = proxy.raw();
        ready_check(&mut fresh).unwrap();
        let Value::Bulk(info) = cmd(&mut fresh, "INFO server") else {
            panic!("INFO")
        };
        let info = String::from_utf8(info).unwrap();
        assert!(info.contains("respite_mode:local-only"), "{info}");
        let Value::Bulk(info) = cmd(&mut fresh, "INFO replication") else {
            panic!("INFO")
        };
        assert!(String::from_utf8_lossy(&info).contains("role:master"));
        // SCRIPT KILL is for the upstream, never answered by the engine.
        match cmd(&mut fresh, "SCRIPT KILL") {
            Value::Err(e) => assert!(!e.contains("local engine"), "{e}"),
            other => panic!("{other:?}"),
        }

        // A reader all through the recovery: never the value from before the outage.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let (stop, seen) = (stop.clone(), seen.clone());
            let mut c = proxy.raw();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (k, h) = (cmd(&mut c, "GET k"), cmd(&mut c, "HGET h f"));
                    seen.lock().unwrap().push((k, h));
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        server.signal("CONT");
        wait_state(&proxy, "healthy");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let seen = seen.lock().unwrap();
        let old = seen
            .iter()
            .filter(|(k, h)| {
                *k == Value::Bulk(b"before".to_vec()) || *h == Value::Bulk(b"before".to_vec())
            })
            .count();
        eprintln!(
            "[{kind:?}] {} reads across the recovery, {old} older than the last acknowledged write; last {:?}",
            seen.len(),
            seen.last()
        );
        assert_eq!(old, 0);
        assert_eq!(
            seen.last(),
            Some(&(Value::Nil, Value::Nil)),
            "refilled from the source of truth"
        );
        // The upstream's own state: the keys written during the outage are gone, others kept.
        let mut u = server.raw();
        assert_eq!(cmd(&mut u, "EXISTS k h new:1"), Value::Int(0));
        assert_eq!(
            cmd(&mut u, "GET h:untouched"),
            Value::Bulk(b"upstream".to_vec())
        );
    }
);

/// One lock contender: SET lock NX PX, a short critical section, release by compare-and-delete.
/// `holders` counts who is inside; a second one inside at once is a violation.
fn contend(
    mut c: Raw,
    me: String,
    holders: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, u64) {
    let release = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
    let (mut acquired, mut refused, mut violations) = (0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        let r = c.cmd(&[b"SET", b"lock:job", me.as_bytes(), b"NX", b"PX", b"5000"]);
        if r == b"+OK\r\n" {
            acquired += 1;
            if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                violations += 1;
            }
            // Long enough that two holders would overlap, short next to a restart and recovery
            // (hundreds of milliseconds), so a lock lost with a killed upstream is no false alarm.
            std::thread::sleep(Duration::from_millis(30));
            holders.fetch_sub(1, Ordering::SeqCst);
            // The release may fail while down (EVAL then waits for the upstream or is refused);
            // the lock then expires upstream, or went with the killed upstream.
            let _ = c.cmd(&[
                b"EVAL",
                release.as_bytes(),
                b"1",
                b"lock:job",
                me.as_bytes(),
            ]);
        } else if r.starts_with(b"-TRYAGAIN") {
            refused += 1;
            std::thread::sleep(Duration::from_millis(2));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (acquired, refused, violations)
}

both!(
    locks_refused_while_down_never_have_two_holders,
    |kind: Kind| {
        let rule = "[[local_only.rule]]\npattern = \"lock:*\"\nwrites = \"refuse\"\n";
        never_two_holders(kind, rule)
    }
);

// With no configuration at all: SET NX is a conditional write, refused while down (issue 20).
both!(locks_never_have_two_holders_by_default, |kind: Kind| {
    never_two_holders(kind, "")
});

/// Four lock contenders on two sidecars with `rule` as their configuration, across a killed and
/// restarted upstream: never two holders at once.
fn never_two_holders(kind: Kind, rule: &str) {
    let mut server = Server::start(kind);
    // Two sidecars: each would have its own local lock if locks were applied locally.
    let proxies = [
        Proxy::start_with_config(&server.url(), rule, &[]),
        Proxy::start_with_config(&server.url(), rule, &[]),
    ];
    for p in &proxies {
        wait_healthy(p);
    }
    let holders = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let c = proxies[i % 2].raw();
            let (h, s) = (holders.clone(), stop.clone());
            std::thread::spawn(move || contend(c, format!("c{i}"), h, s))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    for p in &proxies {
        wait_state(p, "down");
    }
    // While down a plain write still lands locally; only lock:* is refused.
    assert_eq!(
        cmd(&mut proxies[0].raw(), "SET plain x"),
        Value::Simple("OK".into())
    );
    let r = cmd(&mut proxies[0].raw(), "SET lock:other x NX");
    assert!(
        matches!(&r, Value::Err(e) if e.starts_with("TRYAGAIN")),
        "{r:?}"
    );
    std::thread::sleep(Duration::from_millis(800));
    server.restart();
    for p in &proxies {
        wait_healthy(p);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut acquired, mut refused, mut violations) = (0, 0, 0);
    for t in threads {
        let (a, r, v) = t.join().unwrap();
        acquired += a;
        refused += r;
        violations += v;
    }
    eprintln!(
        "[{kind:?}] locks: {acquired} acquired, {refused} refused while down, {violations} times two holders"
    );
    assert_eq!(violations, 0);
    assert!(acquired > 0 && refused > 0, "{acquired} {refused}");
}

/// What one app worker saw: errors (with when), reads older than the last acknowledged write.
#[derive(Default)]
struct Seen {
    errors: Vec<(Instant, String)>,
    stale: Vec<String>,
    ops: u64,
    /// Pattern deletes refused with TRYAGAIN in local-only mode.
    refused: u64,
}

/// A key's last acknowledged value, and values whose SET failed since.
type Written = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// The app-style workload of one worker, until `stop`: JSON values with TTL (read back, checked
/// against the last acknowledged write), INCR+EXPIRE rate limits, a sliding window, a
/// leaderboard, SCAN-based pattern delete and INFO health checks.
fn app_worker(mut c: Raw, w: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    // Per key: the value of the last acknowledged SET, and values whose SET failed since (their
    // fate is unknown: they may have run).
    let mut last: HashMap<String, Written> = HashMap::new();
    let mut i = 0u64;
    let err = |seen: &mut Seen, what: String| seen.errors.push((Instant::now(), what));
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        seen.ops += 1;
        let key = format!("cache:{w}:{}", i % 5);
        let value = format!("{{\"worker\":{w},\"n\":{i}}}").into_bytes();
        let r = c.cmd(&[b"SET", key.as_bytes(), &value, b"EX", b"60"]);
        let entry = last.entry(key.clone()).or_default();
        if r == b"+OK\r\n" {
            *entry = (Some(value), Vec::new());
        } else {
            entry.1.push(value);
            err(&mut seen, format!("SET: {}", String::from_utf8_lossy(&r)));
        }
        let read = format!("cache:{w}:{}", (i + 2) % 5);
        match cmd(&mut c, &format!("GET {read}")) {
            Value::Nil => {}
            Value::Bulk(b) => {
                let (acked, unknown) = last.get(&read).cloned().unwrap_or_default();
                if acked.as_ref() != Some(&b) && !unknown.contains(&b) {
                    seen.stale.push(format!(
                        "{read}: read {} after {:?} was acknowledged",
                        String::from_utf8_lossy(&b),
                        acked.map(|a| String::from_utf8_lossy(&a).into_owned())
                    ));
                }
            }
            other => err(&mut seen, format!("GET: {other:?}")),
        }
        // Rate limit.
        let rl = format!("rl:{w}");
        for r in pipeline(
            &mut c,
            &[
                argv(&format!("INCR {rl}")),
                argv(&format!("EXPIRE {rl} 60")),
            ],
        ) {
            if !matches!(r, Value::Int(_)) {
                err(&mut seen, format!("rate limit: {r:?}"));
            }
        }
        // Sliding window.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let sw = format!("sw:{w}");
        let replies = pipeline(
            &mut c,
            &[
                argv(&format!("ZREMRANGEBYSCORE {sw} 0 {}", now - 1000)),
                argv(&format!("ZADD {sw} {now} m{i}")),
                argv(&format!("ZCARD {sw}")),
                argv(&format!("EXPIRE {sw} 60")),
            ],
        );
        for r in replies {
            match r {
                Value::Int(_) => {}
                other => err(&mut seen, format!("sliding window: {other:?}")),
            }
        }
        // Leaderboard.
        let lb = pipeline(
            &mut c,
            &[
                argv(&format!("ZINCRBY lb 1 w{w}")),
                argv("ZREVRANGE lb 0 9 WITHSCORES"),
            ],
        );
        if !matches!(lb[0], Value::Bulk(_)) || !matches!(lb[1], Value::Arr(_)) {
            err(&mut seen, format!("leaderboard: {lb:?}"));
        }
        if i.is_multiple_of(10) {
            // SCAN-based pattern delete.
            for t in ["a", "b"] {
                cmd(&mut c, &format!("SET tmp:{w}:{t} 1"));
            }
            let mut cursor = "0".to_string();
            loop {
                match cmd(&mut c, &format!("SCAN {cursor} MATCH tmp:{w}:* COUNT 1000")) {
                    Value::Arr(v) if v.len() == 2 => {
                        let (Value::Bulk(next), Value::Arr(keys)) = (&v[0], &v[1]) else {
                            err(&mut seen, format!("SCAN: {v:?}"));
                            break;
                        };
                        for k in keys {
                            if let Value::Bulk(k) = k {
                                c.cmd(&[b"DEL", k]);
                            }
                        }
                        cursor = String::from_utf8(next.clone()).unwrap();
                        if cursor == "0" {
                            break;
                        }
                    }
                    // Refused in local-only mode (the engine's keyspace is partial): the
                    // application knows its pattern delete did not happen.
                    Value::Err(e) if e.starts_with("TRYAGAIN") => {
                        seen.refused += 1;
                        break;
                    }
                    other => {
                        err(&mut seen, format!("SCAN: {other:?}"));
                        break;
                    }
                }
            }
            // Health check.
            if let Err(e) = ready_check(&mut c) {
                err(&mut seen, e);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    seen
}

both!(
    app_workload_rides_a_killed_and_restarted_upstream,
    |kind: Kind| {
        let mut server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        wait_healthy(&proxy);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let c = proxy.raw();
                let s = stop.clone();
                std::thread::spawn(move || app_worker(c, w, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let killed = Instant::now();
        server.kill();
        wait_state(&proxy, "down");
        let down = Instant::now();
        // New clients connect during the outage: an ioredis-style ready check, then work.
        let late: Vec<_> = (3..5)
            .map(|w| {
                let mut c = proxy.raw();
                ready_check(&mut c).expect("ready while down");
                let s = stop.clone();
                std::thread::spawn(move || app_worker(c, w, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1000));
        server.restart();
        let restarted = Instant::now();
        wait_healthy(&proxy);
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for (n, t) in workers.into_iter().chain(late).enumerate() {
            let seen = t.join().unwrap();
            total += seen.ops;
            // At most the commands in flight when the upstream died (and those sent in the
            // milliseconds before it was declared down) fail; none after.
            let late_errors: Vec<_> = seen
                .errors
                .iter()
                .filter(|(at, _)| *at > down + Duration::from_millis(50))
                .collect();
            eprintln!(
                "[{kind:?}] worker {n}: {} ops, {} errors at the kill, {} after, {} stale reads, {} pattern deletes refused while down",
                seen.ops,
                seen.errors.len() - late_errors.len(),
                late_errors.len(),
                seen.stale.len(),
                seen.refused
            );
            assert!(late_errors.is_empty(), "worker {n}: {late_errors:?}");
            assert!(
                seen.errors.iter().all(|(at, _)| *at >= killed),
                "worker {n}: errors before the kill: {:?}",
                seen.errors
            );
            assert!(seen.stale.is_empty(), "worker {n}: {:?}", seen.stale);
        }
        eprintln!(
            "[{kind:?}] {total} ops; down {:?} after the kill, healthy {:?} after the restart",
            down - killed,
            restarted.elapsed()
        );
        assert!(total > 0);
    }
);

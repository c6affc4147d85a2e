//! The replay fence for every connection (issue 20): after an outage, the writes local-only mode
//! acknowledged reach the upstream before any later command of any client does — on a pinned
//! connection (WATCH, MULTI … EXEC, a blocking pop, a SELECT-ed session), in a queued
//! transaction, or a PUBLISH; and a pattern delete (SCAN + DEL) during an outage is refused
//! rather than silently partial. Judged by the upstream's own state: counters, list order,
//! keyspace notifications, keys left.
use super::busy_not_down::wait_healthy;
use super::outage_replay::wait_state;
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, Value, encode, words};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn cmd(c: &mut Raw, line: &str) -> Value {
    Value::decode(&c.cmd(&words(line)))
}

fn is_tryagain(v: &Value) -> bool {
    matches!(v, Value::Err(e) if e.starts_with("TRYAGAIN"))
}

/// Send `line` until it is not refused with TRYAGAIN (local-only mode refuses it; forwarding
/// does not), every millisecond, for at most 20 s: the first reply that is not a refusal.
fn first_forwarded(c: &mut Raw, line: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let v = cmd(c, line);
        if !is_tryagain(&v) || Instant::now() > until {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The INCR results in an EXEC reply (`None`: not run, or aborted).
fn exec_incr(v: &Value) -> Option<i64> {
    match v {
        Value::Arr(items) => match items.first() {
            Some(Value::Int(n)) => Some(*n),
            other => panic!("EXEC's INCR: {other:?}"),
        },
        _ => None,
    }
}

/// The scenario, across an outage made by `outage` and ended by `recover`: the upstream holds
/// `n = 10` and the list `q = [pre]`; a client WATCHes `n` and another SELECTs database 1 before
/// the outage; during it five INCR n and RPUSH q j1 are acknowledged locally (with 20,000 more
/// writes, so that the replay takes a while); clients spinning on commands local-only mode
/// refuses (WATCH, BRPOP, SET NX) run a transaction the moment forwarding resumes.
fn clients_after_the_replay(kind: Kind, frozen: bool) {
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let server = std::cell::RefCell::new(Server::start_with(kind, &durable));
    let proxy = Proxy::start(&server.borrow().url());
    wait_healthy(&proxy);
    let mut u = server.borrow().raw();
    assert_eq!(cmd(&mut u, "SET n 10"), Value::Simple("OK".into()));
    assert_eq!(cmd(&mut u, "RPUSH q pre"), Value::Int(1));
    // The upstream's own account of the order it ran things in: its keyspace notifications
    // for q and PUBLISH's channel, on one connection (a frozen upstream keeps it; a killed one
    // does not, so only then).
    let mut events = frozen.then(|| {
        assert_eq!(
            cmd(&mut u, "CONFIG SET notify-keyspace-events Kl"),
            Value::Simple("OK".into())
        );
        let mut s = server.borrow().raw();
        s.send(&encode(&[b"SUBSCRIBE", b"__keyspace@0__:q", b"pub"]));
        for _ in 0..2 {
            s.reply().expect("subscribed");
        }
        s
    });
    let mut watcher = proxy.raw();
    assert_eq!(cmd(&mut watcher, "WATCH n"), Value::Simple("OK".into()));
    let mut selected = proxy.raw();
    assert_eq!(cmd(&mut selected, "SELECT 1"), Value::Simple("OK".into()));
    assert_eq!(cmd(&mut selected, "SET s v1"), Value::Simple("OK".into()));

    if frozen {
        server.borrow().signal("STOP");
    } else {
        server.borrow_mut().kill();
    }
    wait_state(&proxy, "down");
    let mut j = proxy.raw();
    for i in 1..=5 {
        assert_eq!(cmd(&mut j, "INCR n"), Value::Int(i));
    }
    assert_eq!(cmd(&mut j, "RPUSH q j1"), Value::Int(1));
    let value = [b'x'; 64];
    for chunk in 0..20 {
        // Pipelined a thousand at a time: respite stops reading a client owed more replies
        // than limits.max_inflight_per_client.
        let mut filler = Vec::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            filler.extend(encode(&[b"SET", format!("f:{i}").as_bytes(), &value]));
        }
        j.send(&filler);
        for _ in 0..1000 {
            assert_eq!(j.reply().expect("a reply"), b"+OK\r\n");
        }
    }
    // A SELECT-ed session is not served from the engine, which knows the URL's database only
    // (its write would be replayed there).
    let r = cmd(&mut selected, "SET s v2");
    assert!(
        matches!(&r, Value::Err(e) if e.starts_with("TRYAGAIN") && e.contains("database")),
        "{r:?}"
    );
    // The WATCHer's transaction, sent during the outage on its pinned connection (which a
    // frozen upstream keeps): never written there, where it would run before the replay.
    watcher.send(
        &[
            encode(&words("MULTI")),
            encode(&words("INCR n")),
            encode(&words("EXEC")),
        ]
        .concat(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (mut c, stop) = (proxy.raw(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // (One sent as the state changes may fail; its fate is not what is judged.)
                c.cmd(&[b"PUBLISH", b"pub", i.to_string().as_bytes()]);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // WATCH (pinned), then a read and a transaction on that connection.
    let x = {
        let mut c = proxy.raw();
        std::thread::spawn(move || {
            let w = first_forwarded(&mut c, "WATCH n");
            assert_eq!(w, Value::Simple("OK".into()));
            let n = cmd(&mut c, "GET n");
            c.send(
                &[
                    encode(&words("MULTI")),
                    encode(&words("INCR n")),
                    encode(&words("EXEC")),
                ]
                .concat(),
            );
            let replies: Vec<Value> = (0..3)
                .map(|_| Value::decode(&c.reply().expect("a reply")))
                .collect();
            (n, replies)
        })
    };
    // A blocking pop (pinned): before the replay it would pop `pre`, after it `j1`.
    let br = {
        let mut c = proxy.raw();
        std::thread::spawn(move || first_forwarded(&mut c, "BRPOP q 1"))
    };
    // A queued transaction right behind the first forwarded command.
    let t = {
        let mut c = proxy.raw();
        std::thread::spawn(move || {
            let gate = first_forwarded(&mut c, "SET tgate 1 NX");
            assert_eq!(gate, Value::Simple("OK".into()));
            c.send(
                &[
                    encode(&words("MULTI")),
                    encode(&words("INCR n")),
                    encode(&words("EXEC")),
                ]
                .concat(),
            );
            (0..3)
                .map(|_| Value::decode(&c.reply().expect("a reply")))
                .collect::<Vec<Value>>()
        })
    };
    if frozen {
        server.borrow().signal("CONT");
    } else {
        server.borrow_mut().restart();
    }
    let (x_read, x_replies) = x.join().unwrap();
    let popped = br.join().unwrap();
    let t_replies = t.join().unwrap();
    wait_healthy(&proxy);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let w_replies: Vec<Value> = (0..3)
        .map(|_| Value::decode(&watcher.reply().expect("a reply")))
        .collect();
    eprintln!(
        "[{kind:?}] watcher during the outage: {w_replies:?}; after: read {x_read:?}, {x_replies:?}; queued: {t_replies:?}; popped {popped:?}"
    );

    // Every later command ran after the five INCRs and the RPUSH acknowledged locally.
    match x_read {
        Value::Bulk(b) => assert!(
            String::from_utf8(b).unwrap().parse::<i64>().unwrap() >= 15,
            "WATCHer read n before the replay"
        ),
        other => panic!("GET n: {other:?}"),
    }
    assert_eq!(
        popped,
        Value::Arr(vec![
            Value::Bulk(b"q".to_vec()),
            Value::Bulk(b"j1".to_vec())
        ]),
        "the blocking pop ran before the replayed RPUSH"
    );
    let mut incrs = 0;
    for (who, replies) in [
        ("watcher", &w_replies),
        ("WATCH after", &x_replies),
        ("queued", &t_replies),
    ] {
        if let Some(v) = exec_incr(&replies[2]) {
            assert!(
                v >= 16,
                "{who}: the transaction's INCR ran before the replay: {v}"
            );
            incrs += 1;
        }
    }
    // The queued transaction after a forwarded command always runs.
    assert!(exec_incr(&t_replies[2]).is_some(), "{t_replies:?}");
    let mut u = server.borrow().raw();
    assert_eq!(
        cmd(&mut u, "GET n"),
        Value::Bulk((15 + incrs).to_string().into_bytes())
    );
    assert_eq!(
        cmd(&mut u, "LRANGE q 0 -1"),
        Value::Arr(vec![Value::Bulk(b"pre".to_vec())])
    );
    assert_eq!(cmd(&mut u, "EXISTS f:0 f:19999 s"), Value::Int(2));
    assert_eq!(cmd(&mut u, "SELECT 1"), Value::Simple("OK".into()));
    assert_eq!(cmd(&mut u, "GET s"), Value::Bulk(b"v1".to_vec()));
    // PUBLISH: no message forwarded after the outage reached the upstream before the replayed
    // RPUSH (the publisher started during the outage, so every message it saw is from after).
    if let Some(s) = events.as_mut() {
        let mut seen = Vec::new();
        loop {
            let Value::Arr(m) = Value::decode(&s.reply().expect("a message")) else {
                panic!("not a message")
            };
            let (Value::Bulk(channel), Value::Bulk(payload)) = (&m[1], &m[2]) else {
                panic!("{m:?}")
            };
            let what = format!(
                "{} {}",
                String::from_utf8_lossy(channel),
                String::from_utf8_lossy(payload)
            );
            let replayed = what == "__keyspace@0__:q rpush";
            seen.push(what);
            if replayed {
                break;
            }
            assert!(
                !seen.last().unwrap().starts_with("pub "),
                "a PUBLISH reached the upstream before the replay: {seen:?}"
            );
        }
    }
}

both!(
    pinned_and_queued_clients_come_after_the_replay_frozen,
    |kind: Kind| { clients_after_the_replay(kind, true) }
);

both!(
    pinned_and_queued_clients_come_after_the_replay_restarted,
    |kind: Kind| { clients_after_the_replay(kind, false) }
);

/// SCAN + DEL of `pattern` through `c`, as an application's cache-clearing job does it: the keys
/// DEL said it deleted, and whether the scan went through to cursor 0 with no error (what the
/// application takes for "all deleted").
fn pattern_delete(c: &mut Raw, pattern: &str) -> (Vec<Vec<u8>>, bool) {
    let mut deleted = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let r = c.cmd(&[
            b"SCAN",
            &cursor,
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            b"100",
        ]);
        let Value::Arr(v) = Value::decode(&r) else {
            eprintln!(
                "pattern delete of {pattern}: SCAN {}",
                crate::support::text(&r)
            );
            return (deleted, false);
        };
        let (Value::Bulk(next), Value::Arr(keys)) = (&v[0], &v[1]) else {
            panic!("SCAN: {v:?}")
        };
        for k in keys {
            let Value::Bulk(k) = k else {
                panic!("SCAN: {v:?}")
            };
            match Value::decode(&c.cmd(&[b"DEL", k])) {
                Value::Int(1) => deleted.push(k.clone()),
                Value::Int(0) => {}
                other => {
                    eprintln!("pattern delete of {pattern}: DEL {other:?}");
                    return (deleted, false);
                }
            }
        }
        if next == b"0" {
            return (deleted, true);
        }
        cursor = next.clone();
    }
}

/// The keys matching `pattern` on the upstream itself.
fn upstream_keys(u: &mut Raw, pattern: &str) -> usize {
    match Value::decode(&u.cmd(&[b"KEYS", pattern.as_bytes()])) {
        Value::Arr(keys) => keys.len(),
        other => panic!("KEYS: {other:?}"),
    }
}

both!(
    pattern_deletes_across_a_restart_are_complete_or_refused,
    |kind: Kind| {
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        let mut server = Server::start_with(kind, &durable);
        let proxy = Proxy::start(&server.url());
        wait_healthy(&proxy);
        let mut u = server.raw();
        for prefix in ["old", "keep"] {
            let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
            for i in 0..300 {
                args.push(format!("{prefix}:{i}").into_bytes());
                args.push(b"v".to_vec());
            }
            let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
            assert_eq!(u.cmd(&args), b"+OK\r\n");
        }
        // An application's job: write ten keys of a round, then clear them by pattern.
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let worker = {
            let (mut c, stop, completed) = (proxy.raw(), stop.clone(), completed.clone());
            std::thread::spawn(move || {
                let mut rounds = Vec::new();
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..10 {
                        c.cmd(&[b"SET", format!("tmp:{r}:{i}").as_bytes(), b"v"]);
                    }
                    let round = pattern_delete(&mut c, &format!("tmp:{r}:*"));
                    if round.1 {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    rounds.push(round);
                    r += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                rounds
            })
        };
        let done = |n| {
            crate::support::wait_until(Duration::from_secs(15), || {
                completed.load(Ordering::Relaxed) >= n
            })
            .expect("pattern deletes go through")
        };
        done(5);
        server.kill();
        wait_state(&proxy, "down");
        let mut p = proxy.raw();
        // The local engine holds none of the upstream's keys: a listing is refused, not empty.
        for line in ["SCAN 0 MATCH old:* COUNT 100", "KEYS old:*"] {
            let r = cmd(&mut p, line);
            assert!(
                matches!(&r, Value::Err(e) if e.starts_with("TRYAGAIN") && e.contains("partial")),
                "{line}: {r:?}"
            );
        }
        assert_eq!(pattern_delete(&mut p, "old:*"), (Vec::new(), false));
        // A DEL of a named key is journaled and replayed (its local reply is the engine's: 0).
        assert_eq!(cmd(&mut p, "DEL old:0 old:1"), Value::Int(0));
        std::thread::sleep(Duration::from_millis(700));
        let before = completed.load(Ordering::Relaxed);
        server.restart();
        wait_healthy(&proxy);
        done(before + 5);
        stop.store(true, Ordering::Relaxed);
        let rounds = worker.join().unwrap();
        let mut u = server.raw();
        assert_eq!(cmd(&mut u, "EXISTS old:0 old:1 old:2"), Value::Int(1));
        let (mut complete, mut refused) = (0, 0);
        for (r, (deleted, done)) in rounds.iter().enumerate() {
            for k in deleted {
                assert_eq!(
                    Value::decode(&u.cmd(&[b"EXISTS", k])),
                    Value::Int(0),
                    "round {r}: {} was deleted, and is still upstream",
                    String::from_utf8_lossy(k)
                );
            }
            if *done {
                complete += 1;
                assert_eq!(
                    upstream_keys(&mut u, &format!("tmp:{r}:*")),
                    0,
                    "round {r}: the pattern delete went through, and left keys upstream"
                );
            } else {
                refused += 1;
            }
        }
        eprintln!(
            "[{kind:?}] {complete} pattern deletes complete, {refused} refused (an error the application saw)"
        );
        assert!(complete >= 10 && refused > 0, "{complete} {refused}");
        // After the outage the same job deletes the upstream's keys.
        let (deleted, done) = pattern_delete(&mut p, "old:*");
        assert!(done && deleted.len() == 298, "{} {done}", deleted.len());
        assert_eq!(upstream_keys(&mut u, "old:*"), 0);
        assert_eq!(upstream_keys(&mut u, "keep:*"), 300);
    }
);

//! Outages that lose nothing (issue 20): writes local-only mode cannot judge are refused, not
//! guessed. Judged by the upstream's own keys.
use super::busy_not_down::{health, wait_healthy};
use crate::both;
use crate::support::{Kind, Proxy, Server, text, wait_until, words};
use std::time::Duration;

pub(crate) fn wait_state(proxy: &Proxy, state: &str) {
    wait_until(Duration::from_secs(15), || health(proxy).0 == state)
        .unwrap_or_else(|| panic!("never {state}: {:?}", health(proxy)));
}

/// A reply as text without its final CRLF, to compare with a literal.
fn trimmed(r: &[u8]) -> String {
    text(r).trim_end().to_string()
}

both!(
    conditional_writes_are_refused_unless_a_rule_allows_them,
    |kind: Kind| {
        let server = Server::start(kind);
        let rules = "[[local_only.rule]]\npattern = \"mine:*\"\nwrites = \"apply\"\n";
        let proxy = Proxy::start_with_config(&server.url(), rules, &[]);
        let mut p = proxy.raw();
        // A lock held upstream when the outage begins, and a queue with an element in it.
        assert_eq!(p.cmd(&words("SET lock:job holder PX 60000")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("RPUSH q first")), b":1\r\n");
        wait_healthy(&proxy);
        server.signal("STOP");
        wait_state(&proxy, "down");
        for line in [
            "SET lock:job me NX PX 5000",
            "SET lock:job me XX",
            "SET lock:job me GET",
            "SETNX lock:job me",
            "MSETNX lock:job me other 1",
            "HSETNX h f v",
            "GETSET lock:job me",
            "GETDEL lock:job",
            "LPOP q",
            "LMOVE q q2 LEFT RIGHT",
            "SINTERSTORE d a b",
            "EXPIRE lock:job 1 NX",
            "EVAL return 1 1 lock:job",
        ] {
            let r = trimmed(&p.cmd(&words(line)));
            assert!(
                r.starts_with("-TRYAGAIN") && r.contains("cannot know"),
                "{line}: {r}"
            );
        }
        // A rule naming the key allows them; unconditional writes are applied as before.
        assert_eq!(p.cmd(&words("SET mine:lock me NX")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("SET plain v")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("INCR n")), b":1\r\n");
        server.signal("CONT");
        wait_healthy(&proxy);
        // The upstream's own state: the lock still has its one holder, the queue its element.
        let mut u = server.raw();
        assert_eq!(trimmed(&u.cmd(&words("GET lock:job"))), "$6\r\nholder");
        assert_eq!(
            trimmed(&u.cmd(&words("LRANGE q 0 -1"))),
            "*1\r\n$5\r\nfirst"
        );
        // Through respite again: the lock is refused to a second holder.
        assert_eq!(p.cmd(&words("SET lock:job me NX")), b"$-1\r\n");
    }
);

/// What a client and `/readyz` see in front of an upstream that never answered: (status,
/// body, the reply to a SET, the reply to the GET after it).
fn never_reached(url: &str, settings: &[(&str, &str)]) -> (u16, String, String, String) {
    let proxy = Proxy::start_with(url, settings);
    // Wait for the first failure to be known, so the reasons are in place.
    wait_until(Duration::from_secs(10), || {
        let (status, body) = proxy.admin_get("/readyz");
        status != 503 || !body.contains("no answer yet")
    })
    .expect("a first attempt");
    let (status, body) = proxy.admin_get("/readyz");
    let mut p = proxy.raw();
    let set = trimmed(&p.cmd(&words("SET typo:k v")));
    let get = trimmed(&p.cmd(&words("GET typo:k")));
    (status, body, set, get)
}

#[test]
fn an_upstream_never_reached_is_not_ready_and_not_served_locally() {
    let refused = format!("127.0.0.1:{}", crate::support::free_port());
    for (url, names) in [
        (format!("redis://{refused}"), refused.as_str()),
        (
            "redis://no-such-host.invalid:6379".to_string(),
            "no-such-host.invalid",
        ),
    ] {
        let (status, body, set, get) = never_reached(&url, &[]);
        eprintln!("{url}: /readyz {status} {body:?}; SET: {set}; GET: {get}");
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("not reached since start") && body.contains(names),
            "{body}"
        );
        assert!(
            set.starts_with("-ERR upstream") && set.contains(names),
            "{set}"
        );
        assert!(get.starts_with("-ERR upstream"), "{get}");
    }
    // Opted in: served locally, and ready as local-only mode.
    let url = format!("redis://{refused}");
    let opt_in = [("local_only.serve_before_first_contact", "true")];
    let (status, body, set, get) = never_reached(&url, &opt_in);
    assert_eq!(
        (status, set.as_str(), get.as_str()),
        (200, "+OK", "$1\r\nv"),
        "{body}"
    );
}

both!(
    the_first_answer_is_not_followed_by_local_answers,
    |kind: Kind| {
        // An upstream down from start comes up: local-only mode never took over, so the
        // recovery after its first answer forwards. (It used to serve the recovery's ~250 ms
        // from the empty local engine: SETs acknowledged there reached the upstream only at the
        // replay, and reads of the upstream's keys answered nil.) The upstream is the judge:
        // every SET acknowledged through respite is on it at once.
        let mut server = Server::start(kind);
        server.kill();
        let proxy = Proxy::start(&server.url());
        wait_until(Duration::from_secs(10), || {
            let (_, body) = proxy.admin_get("/readyz");
            body.contains("not reached since start") && !body.contains("no answer yet")
        })
        .expect("a first failed attempt");
        server.restart();
        let mut p = proxy.raw();
        let mut direct = server.raw();
        let mut first_ok = None;
        let mut acknowledged = 0;
        for i in 0..20_000 {
            if first_ok
                .is_some_and(|t: std::time::Instant| t.elapsed() > Duration::from_millis(1500))
            {
                break;
            }
            let key = format!("first:{i}");
            let r = p.cmd(&words(&format!("SET {key} v")));
            if r != b"+OK\r\n" {
                // An error is honest (a pool connection still in its reconnect backoff says
                // so); only an acknowledgement the upstream does not hold is wrong.
                assert!(r.starts_with(b"-ERR upstream"), "{}", text(r));
                continue;
            }
            first_ok.get_or_insert_with(std::time::Instant::now);
            acknowledged += 1;
            assert_eq!(
                direct.cmd(&words(&format!("GET {key}"))),
                b"$1\r\nv\r\n",
                "[{kind:?}] SET {key} acknowledged through respite is on the upstream"
            );
        }
        assert!(
            acknowledged > 0,
            "respite never forwarded after the upstream came up"
        );
    }
);

both!(
    a_misconfigured_upstream_is_not_ready_and_not_served_locally,
    |kind: Kind| {
        let server = Server::start_with(kind, &["--requirepass", "right-pw"]);
        for (url, why) in [
            (
                format!("redis://:wrong-pw@127.0.0.1:{}", server.port),
                "WRONGPASS",
            ),
            (
                format!("redis://:right-pw@127.0.0.1:{}/99", server.port),
                "DB",
            ),
        ] {
            let (status, body, set, get) = never_reached(&url, &[]);
            eprintln!("[{kind:?}] {url}: /readyz {status} {body:?}; SET: {set}; GET: {get}");
            assert_eq!(status, 503, "{body}");
            assert!(set.starts_with('-') && set.contains(why), "{set}");
            assert!(get.starts_with('-'), "{get}");
        }
        // The upstream's own state: nothing was written anywhere.
        let mut u = server.raw();
        assert_eq!(u.cmd(&words("AUTH right-pw")), b"+OK\r\n");
        assert_eq!(u.cmd(&words("DBSIZE")), b":0\r\n");
    }
);

/// The integers in an array of bulk strings.
fn ints_of_bulks(reply: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(reply);
    let mut lines = text.split("\r\n").skip(1);
    let mut out = Vec::new();
    while let (Some(_len), Some(v)) = (lines.next(), lines.next()) {
        out.push(v.parse().expect("an id"));
    }
    out
}

/// One writer's record: per id, whether its RPUSH and its INCR were acknowledged.
#[derive(Default)]
struct Record {
    /// (id, RPUSH acknowledged) in the order sent.
    pushes: Vec<(u64, bool)>,
    incrs_acked: u64,
    incrs_failed: u64,
}

/// A writer doing `RPUSH log:{w} id` + `INCR n:{w}` for ids 0, 1, 2, … until `stop`, `depth`
/// commands pairs per round trip (1: unpipelined).
fn writer(
    mut c: crate::support::Raw,
    w: usize,
    depth: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Record {
    let mut r = Record::default();
    let mut id = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut out = Vec::new();
        for k in 0..depth as u64 {
            let (log, n, v) = (format!("log:{w}"), format!("n:{w}"), (id + k).to_string());
            out.extend(crate::support::encode(&[
                b"RPUSH",
                log.as_bytes(),
                v.as_bytes(),
            ]));
            out.extend(crate::support::encode(&[b"INCR", n.as_bytes()]));
        }
        c.send(&out);
        for _ in 0..depth {
            let push = c.reply().expect("a reply");
            r.pushes.push((id, push.first() == Some(&b':')));
            let incr = c.reply().expect("a reply");
            match incr.first() {
                Some(b':') => r.incrs_acked += 1,
                _ => r.incrs_failed += 1,
            }
            id += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    r
}

/// Writers through `proxy` while `outage` (then `recover`) runs; then the upstream's own lists
/// and counters against what each writer was told.
fn writes_survive(
    upstream: impl Fn() -> crate::support::Raw,
    proxy: &Proxy,
    outage: impl FnOnce(),
    recover: impl FnOnce(),
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    // The load: 20 writers, half of them pipelining.
    let writers: Vec<_> = (0..20)
        .map(|w| {
            let (c, stop) = (proxy.raw(), stop.clone());
            let depth = if w % 2 == 0 { 1 } else { 8 };
            std::thread::spawn(move || writer(c, w, depth, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    outage();
    wait_state(proxy, "down");
    std::thread::sleep(Duration::from_millis(500));
    recover();
    wait_healthy(proxy);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let records: Vec<Record> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut u = upstream();
    let (mut acked, mut errors) = (0, 0);
    for (w, r) in records.iter().enumerate() {
        let list = u.cmd(&[b"LRANGE", format!("log:{w}").as_bytes(), b"0", b"-1"]);
        let ids = ints_of_bulks(&list);
        // Exactly once, in the order sent.
        assert!(
            ids.windows(2).all(|p| p[0] < p[1]),
            "writer {w}: out of order or twice"
        );
        let held: std::collections::HashSet<u64> = ids.iter().copied().collect();
        for &(id, ok) in &r.pushes {
            if ok {
                acked += 1;
                assert!(
                    held.contains(&id),
                    "writer {w}: acknowledged id {id} missing upstream"
                );
            } else {
                errors += 1;
            }
        }
        let n = trimmed(&u.cmd(&[b"GET", format!("n:{w}").as_bytes()]));
        let n: u64 = n.rsplit("\r\n").next().unwrap().parse().unwrap();
        assert!(
            (r.incrs_acked..=r.incrs_acked + r.incrs_failed).contains(&n),
            "writer {w}: counter {n}, {} acknowledged, {} failed",
            r.incrs_acked,
            r.incrs_failed
        );
    }
    eprintln!("{acked} acknowledged pushes all upstream once, in order; {errors} got an error");
    assert!(acked > 1000, "{acked}");
}

both!(
    acknowledged_writes_survive_a_frozen_upstream,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        wait_healthy(&proxy);
        writes_survive(
            || server.raw(),
            &proxy,
            || server.signal("STOP"),
            || {
                std::thread::sleep(Duration::from_millis(1000));
                server.signal("CONT")
            },
        );
    }
);

both!(
    acknowledged_writes_survive_a_killed_upstream,
    |kind: Kind| {
        // Every write the upstream acknowledged is on disk before its reply: nothing from before the
        // kill may be missing afterwards.
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        let server = std::cell::RefCell::new(Server::start_with(kind, &durable));
        let proxy = Proxy::start(&server.borrow().url());
        wait_healthy(&proxy);
        writes_survive(
            || server.borrow().raw(),
            &proxy,
            || server.borrow_mut().kill(),
            || server.borrow_mut().restart(),
        );
    }
);

both!(acknowledged_writes_survive_a_cut_mid_reply, |kind: Kind| {
    use crate::relay::{Direction, Relay};
    let server = Server::start(kind);
    let relay = Relay::to(&server);
    let proxy = Proxy::start(&relay.url());
    wait_healthy(&proxy);
    writes_survive(
        || server.raw(),
        &proxy,
        || {
            relay.refuse_new(true);
            // The busy connections are cut in the middle of a reply; the idle ones (no reply
            // flowing to cut) a moment later.
            relay.cut_after(Direction::ToClient, 7);
            std::thread::sleep(Duration::from_millis(50));
            relay.cut();
        },
        || {
            relay.heal();
            relay.refuse_new(false);
        },
    );
});

both!(
    past_the_journal_bound_writes_are_refused_and_the_acknowledged_ones_replayed,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("local_only.journal_max_bytes", "4096")]);
        wait_healthy(&proxy);
        server.signal("STOP");
        wait_state(&proxy, "down");
        let mut p = proxy.raw();
        let (mut acked, mut refused) = (Vec::new(), 0);
        for i in 0..200 {
            let r = trimmed(&p.cmd(&[b"SET", format!("j:{i}").as_bytes(), b"v"]));
            match r.as_str() {
                "+OK" if refused == 0 => acked.push(i),
                r if r.starts_with("-TRYAGAIN") && r.contains("journal") => refused += 1,
                r => panic!(
                    "write {i} after {refused} refusals: {r} {}",
                    proxy.admin_get("/stats").1
                ),
            }
        }
        eprintln!("{} writes journaled, {refused} refused", acked.len());
        assert!(acked.len() > 50 && refused > 50);
        server.signal("CONT");
        wait_healthy(&proxy);
        let mut u = server.raw();
        assert_eq!(
            trimmed(&u.cmd(&words("DBSIZE"))),
            format!(":{}", acked.len())
        );
        for i in acked {
            assert_eq!(
                u.cmd(&[b"GET", format!("j:{i}").as_bytes()]),
                b"$1\r\nv\r\n"
            );
        }
    }
);

both!(
    an_application_rides_a_killed_and_restarted_upstream,
    |kind: Kind| {
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        let mut server = Server::start_with(kind, &durable);
        let proxy = Proxy::start(&server.url());
        let mut p = proxy.raw();
        for line in [
            "ZINCRBY lb 100 alice",
            "SET sess:old data EX 600",
            "INCR rl:ip",
            "EXPIRE rl:ip 60",
            "SET lock:a holder NX PX 30000",
        ] {
            assert!(!p.cmd(&words(line)).starts_with(b"-"), "{line}");
        }
        wait_healthy(&proxy);
        server.kill();
        wait_state(&proxy, "down");
        for (line, want) in [
            ("ZINCRBY lb 5 alice", "$1\r\n5"),
            ("ZINCRBY lb 3 bob", "$1\r\n3"),
            ("SET sess:new data EX 600", "+OK"),
            ("GET sess:new", "$4\r\ndata"),
            ("INCR rl:ip", ":1"),
            ("EXPIRE rl:ip 60", ":1"),
        ] {
            assert_eq!(trimmed(&p.cmd(&words(line))), want, "{line}");
        }
        let lock = trimmed(&p.cmd(&words("SET lock:a me NX PX 30000")));
        assert!(lock.starts_with("-TRYAGAIN"), "{lock}");
        server.restart();
        wait_healthy(&proxy);
        // Through respite and on the upstream alike: the pre-outage data plus the outage's writes.
        let mut u = server.raw();
        for c in [&mut p, &mut u] {
            assert_eq!(trimmed(&c.cmd(&words("ZSCORE lb alice"))), "$3\r\n105");
            assert_eq!(trimmed(&c.cmd(&words("ZSCORE lb bob"))), "$1\r\n3");
            assert_eq!(trimmed(&c.cmd(&words("GET sess:new"))), "$4\r\ndata");
            assert_eq!(trimmed(&c.cmd(&words("GET sess:old"))), "$4\r\ndata");
            assert_eq!(trimmed(&c.cmd(&words("GET rl:ip"))), "$1\r\n2");
            assert_eq!(trimmed(&c.cmd(&words("GET lock:a"))), "$6\r\nholder");
        }
        let ttl = trimmed(&u.cmd(&words("TTL rl:ip")));
        assert!(
            ttl.starts_with(':') && ttl[1..].parse::<i64>().unwrap() > 0,
            "{ttl}"
        );
        assert!(
            crate::support::metric(&proxy, "respite_recovery_replayed_total") >= 6.0,
            "replayed writes are counted"
        );
    }
);

/// A sample of the binary's /metrics, 0 when absent.
fn sample(b: &crate::support::Binary, series: &str) -> f64 {
    let (_, text) = b.admin_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

// The journal's gauges say what waits to be replayed, and go back to 0 once it is (the binary:
// the metrics registry is the process's, shared by the in-process proxies of other tests).
#[test]
fn the_journals_gauges_show_what_waits_to_be_replayed() {
    let server = Server::start(Kind::Redis);
    let b = crate::support::Binary::start("", &["--upstream", &server.url()]);
    let stats = |b: &crate::support::Binary| {
        let (_, body) = b.admin_get("/stats");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["upstream"]["health"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Answered once, not only healthy (its state before the first contact): see `wait_healthy`.
    let answered = |b: &crate::support::Binary| {
        let (_, body) = b.admin_get("/stats");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["upstream"]["health"]["last_probe_rtt_us"].is_u64()
    };
    wait_until(Duration::from_secs(10), || {
        stats(&b) == "healthy" && answered(&b)
    })
    .expect("healthy");
    server.signal("STOP");
    wait_until(Duration::from_secs(10), || stats(&b) == "down").expect("down");
    let mut c = crate::support::Raw::connect(b.addr);
    for i in 0..10 {
        assert_eq!(
            c.cmd(&[b"SET", format!("j:{i}").as_bytes(), b"v"]),
            b"+OK\r\n"
        );
    }
    let entries = sample(&b, "respite_local_only_journal_entries");
    let bytes = sample(&b, "respite_local_only_journal_bytes");
    // `*3\r\n$3\r\nSET\r\n$3\r\nj:0\r\n$1\r\nv\r\n` is 29 bytes, plus 16 of bookkeeping.
    assert_eq!((entries, bytes), (10.0, 450.0));
    server.signal("CONT");
    wait_until(Duration::from_secs(10), || stats(&b) == "healthy").expect("healthy again");
    assert_eq!(sample(&b, "respite_local_only_journal_entries"), 0.0);
    assert_eq!(sample(&b, "respite_local_only_journal_bytes"), 0.0);
    // The upstream's own state: the ten writes are there.
    let mut u = server.raw();
    assert_eq!(
        u.cmd(&words("EXISTS j:0 j:1 j:2 j:3 j:4 j:5 j:6 j:7 j:8 j:9")),
        b":10\r\n"
    );
}

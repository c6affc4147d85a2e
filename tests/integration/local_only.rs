//! Upstream health and local-only mode: a killed, frozen or restarted upstream, with the time each
//! transition took and the errors a client saw meanwhile (printed: run with --nocapture).
//!
//! Transition times are read from `/stats` (`since_ms` dates the transition exactly, whenever the
//! poll sees it) and from a client that keeps reading a marker key, one request per millisecond.
use crate::both;
use crate::support::{Kind, Proxy, Server, TenantToml, encode, metric, tenants, wait_until, words};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The upstream's health state in `/stats`, and when it was entered.
fn health(proxy: &Proxy) -> (String, Instant) {
    let (_, body) = proxy.admin_get("/stats");
    let now = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    let h = &v["upstream"]["health"];
    let since = Duration::from_millis(h["since_ms"].as_u64().expect("since_ms"));
    (h["state"].as_str().expect("state").to_string(), now - since)
}

/// Wait until `/stats` says `state`; returns when the transition happened.
fn wait_for(proxy: &Proxy, state: &str, limit: Duration) -> Instant {
    let mut at = None;
    wait_until(limit, || {
        let (s, since) = health(proxy);
        if s == state {
            at = Some(since);
        }
        s == state
    })
    .unwrap_or_else(|| panic!("health never became {state}: {:?}", health(proxy).0));
    at.unwrap()
}

/// What one read of the marker got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The upstream's value: forwarded.
    Upstream,
    /// Anything else that is not an error: the local engine.
    Local,
    Error(String),
}

/// A client that reads `key` in a loop (one request per millisecond) and records what it got.
struct Watcher {
    log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(proxy: &Proxy, key: &'static str, upstream_value: &'static str) -> Watcher {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut raw = proxy.raw();
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let expect = format!("${}\r\n{upstream_value}\r\n", upstream_value.len()).into_bytes();
            while !s.load(Ordering::Relaxed) {
                let r = raw.cmd(&[b"GET", key.as_bytes()]);
                let seen = if r == expect {
                    Seen::Upstream
                } else if r.first() == Some(&b'-') {
                    Seen::Error(String::from_utf8_lossy(&r).trim_end().to_string())
                } else {
                    Seen::Local
                };
                l.lock().unwrap().push((Instant::now(), seen));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Watcher {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Wait until a reply of `kind` arrives after `from`; returns when it did.
    fn first_after(&self, from: Instant, kind: &Seen, limit: Duration) -> Instant {
        let mut at = None;
        wait_until(limit, || {
            at = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|(t, s)| *t >= from && s == kind)
                .map(|(t, _)| *t);
            at.is_some()
        })
        .unwrap_or_else(|| panic!("no {kind:?} reply within {limit:?}"));
        at.unwrap()
    }

    /// The errors the client got in [from, to).
    fn errors(&self, from: Instant, to: Instant) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .filter_map(|(_, s)| match s {
                Seen::Error(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The machine is shared and noisy: asserts allow this much, the printed numbers are the real ones.
const SLACK: Duration = Duration::from_secs(3);

both!(
    killed_upstream_local_only_then_back_on_restart,
    |kind: Kind| {
        let mut server = Server::start(kind);
        let a = Proxy::start(&server.url());
        let b = Proxy::start(&server.url());
        let (mut pa, mut pb) = (a.raw(), b.raw());
        assert_eq!(pa.cmd(&words("SET marker up")), b"+OK\r\n");
        wait_for(&a, "healthy", SLACK);
        wait_for(&b, "healthy", SLACK);
        let watcher = Watcher::start(&a, "marker", "up");
        watcher.first_after(Instant::now(), &Seen::Upstream, SLACK);

        // Hard failure: the process dies, its sockets are reset, connects are refused.
        let killed = Instant::now();
        server.kill();
        let down = wait_for(&a, "down", SLACK);
        let local = watcher.first_after(killed, &Seen::Local, SLACK);
        let errors = watcher.errors(killed, local);
        eprintln!(
            "[{kind:?} kill] down after {}, first local reply after {}, {} errors meanwhile: {:?}",
            ms(down.saturating_duration_since(killed)),
            ms(local - killed),
            errors.len(),
            errors.iter().take(3).collect::<Vec<_>>()
        );
        assert!(down.saturating_duration_since(killed) < SLACK);
        wait_for(&b, "down", SLACK);
        let (status, body) = a.admin_get("/readyz");
        assert_eq!(
            (status, body.as_str()),
            (200, "ready: local-only mode (upstream down)\n")
        );
        assert!(a.admin_get("/stats").1.contains("\"local_only\":true"));

        // Local-only: the engine answers reads and writes; the upstream's data is not there.
        assert_eq!(pa.cmd(&words("GET marker")), b"$-1\r\n");
        assert_eq!(pa.cmd(&words("SET k local")), b"+OK\r\n");
        assert_eq!(pa.cmd(&words("GET k")), b"$5\r\nlocal\r\n");
        // Rate limiting (INCR + EXPIRE) works, per node: each proxy counts on its own.
        assert_eq!(pa.cmd(&words("INCR rl:ip")), b":1\r\n");
        assert_eq!(pa.cmd(&words("EXPIRE rl:ip 60")), b":1\r\n");
        assert_eq!(pa.cmd(&words("INCR rl:ip")), b":2\r\n");
        assert_eq!(pa.cmd(&words("TTL rl:ip")), b":60\r\n");
        assert_eq!(pb.cmd(&words("INCR rl:ip")), b":1\r\n");
        // Locks (SET NX PX) are refused: the upstream may have a holder the engine cannot see.
        let r = String::from_utf8(pa.cmd(&words("SET lock:job a NX PX 30000"))).unwrap();
        assert!(r.starts_with("-TRYAGAIN"), "{r}");
        // What the engine does not implement says so.
        let r = String::from_utf8(pa.cmd(&words("BITFIELD b GET u8 0"))).unwrap();
        assert!(r.contains("not supported by respite's local engine"), "{r}");

        // The upstream returns (empty): back to forwarding, the local writes replayed into it.
        server.restart();
        let answering = Instant::now();
        assert_eq!(server.raw().cmd(&words("SET marker up")), b"+OK\r\n");
        let healthy = wait_for(&a, "healthy", SLACK);
        let forwarded = watcher.first_after(answering, &Seen::Upstream, SLACK);
        let errors = watcher.errors(answering, forwarded + Duration::from_millis(100));
        eprintln!(
            "[{kind:?} restart] healthy {} after the upstream answered, first forwarded reply after {}, {} errors: {:?}",
            ms(healthy.saturating_duration_since(answering)),
            ms(forwarded - answering),
            errors.len(),
            errors
        );
        assert!(forwarded - answering < SLACK);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(server.raw().cmd(&words("GET k")), b"$5\r\nlocal\r\n");
        assert_eq!(pa.cmd(&words("GET k")), b"$5\r\nlocal\r\n");
        assert_eq!(a.admin_get("/readyz"), (200, "ready\n".into()));
        assert!(
            a.admin_get("/stats")
                .1
                .contains("\"local_engine\":{\"keys\":0")
        );
    }
);

both!(
    frozen_upstream_local_only_within_the_probe_deadline_and_local_data_dropped_on_recovery,
    |kind: Kind| {
        let server = Server::start(kind);
        // `drop`'s contract: local writes are lost and the upstream's older copy shows again
        // (the default, `invalidate`, is tested in outage_recovery.rs).
        let proxy = Proxy::start_with(&server.url(), &[("local_only.on_recovery", "drop")]);
        let mut p = proxy.raw();
        assert_eq!(p.cmd(&words("SET k upstream-value")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("SET marker up")), b"+OK\r\n");
        wait_for(&proxy, "healthy", SLACK);
        let watcher = Watcher::start(&proxy, "marker", "up");
        watcher.first_after(Instant::now(), &Seen::Upstream, SLACK);

        // Silent failure: the process stops answering, its sockets stay open.
        let stopped = Instant::now();
        server.signal("STOP");
        // A command sent now is stuck upstream; it fails when local-only mode takes over, not at
        // the 5 s command deadline.
        let mut stuck = proxy.raw();
        let r = String::from_utf8(stuck.cmd(&words("INCR n"))).unwrap();
        let failed = stopped.elapsed();
        assert!(
            r.starts_with("-ERR upstream connection lost") && r.contains("local-only"),
            "{r}"
        );
        let down = wait_for(&proxy, "down", SLACK);
        let local = watcher.first_after(stopped, &Seen::Local, SLACK);
        let errors = watcher.errors(stopped, local);
        eprintln!(
            "[{kind:?} SIGSTOP] down after {} (probe deadline 1000 ms), in-flight command failed after {}, first local reply after {}, {} errors meanwhile: {:?}",
            ms(down.saturating_duration_since(stopped)),
            ms(failed),
            ms(local - stopped),
            errors.len(),
            errors
        );
        assert!(down.saturating_duration_since(stopped) < SLACK);
        assert!(failed < SLACK, "{failed:?}");

        // Local-only: a write lands locally.
        assert_eq!(p.cmd(&words("GET k")), b"$-1\r\n");
        assert_eq!(p.cmd(&words("SET k local-value")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("GET k")), b"$11\r\nlocal-value\r\n");

        // The upstream answers again: normal mode, the local write is gone and the upstream's
        // value is visible again.
        let resumed = Instant::now();
        server.signal("CONT");
        let healthy = wait_for(&proxy, "healthy", SLACK);
        let forwarded = watcher.first_after(resumed, &Seen::Upstream, SLACK);
        let errors = watcher.errors(resumed, forwarded + Duration::from_millis(100));
        eprintln!(
            "[{kind:?} SIGCONT] healthy after {}, first forwarded reply after {}, {} errors: {:?}",
            ms(healthy.saturating_duration_since(resumed)),
            ms(forwarded - resumed),
            errors.len(),
            errors
        );
        assert!(forwarded - resumed < SLACK);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.cmd(&words("GET k")), b"$14\r\nupstream-value\r\n");
        // The stuck INCR's fate was unknown: it may have run when the upstream resumed.
        let n = p.cmd(&words("GET n"));
        assert!(n == b"$1\r\n1\r\n" || n == b"$-1\r\n", "{n:?}");
    }
);

#[test]
fn writes_refused_in_local_only_mode_when_configured() {
    let mut server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with(&server.url(), &[("local_only.writes", "refuse")]);
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("SET k v")), b"+OK\r\n");
    server.kill();
    wait_for(&proxy, "down", SLACK);
    let refused = "-TRYAGAIN upstream is down and respite is in local-only mode, which refuses writes (local_only.writes = \"refuse\")\r\n";
    for cmd in ["SET k w", "INCR n", "DEL k", "EXPIRE k 10", "FLUSHALL"] {
        assert_eq!(
            String::from_utf8(p.cmd(&words(cmd))).unwrap(),
            refused,
            "{cmd}"
        );
    }
    // Reads are answered (by an engine that has nothing).
    assert_eq!(p.cmd(&words("GET k")), b"$-1\r\n");
    assert_eq!(p.cmd(&words("EXISTS k")), b":0\r\n");
    assert_eq!(p.cmd(&words("DBSIZE")), b":0\r\n");
    assert!(metric(&proxy, "respite_errors_total{kind=\"local_only\"}") >= 5.0);
}

#[test]
fn local_only_mode_off_fails_fast_and_is_not_ready() {
    let mut server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with(&server.url(), &[("local_only.enabled", "false")]);
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("SET k v")), b"+OK\r\n");
    server.kill();
    wait_for(&proxy, "down", SLACK);
    let r = String::from_utf8(p.cmd(&words("GET k"))).unwrap();
    assert!(
        r.starts_with("-ERR upstream") && r.contains("unavailable"),
        "{r}"
    );
    assert_eq!(proxy.admin_get("/readyz"), (503, "upstream down\n".into()));
    assert!(
        proxy
            .admin_get("/stats")
            .1
            .contains("\"local_engine\":null")
    );
}

#[test]
fn tenant_rules_hold_in_local_only_mode() {
    let toml = tenants(&[
        TenantToml::new("a", "a:")
            .login("pa")
            .allow(&["@all", "-@dangerous", "keys", "dbsize", "flushdb"])
            .ttl("session:*", Some(10000), 5000),
        TenantToml::new("b", "b:")
            .login("pb")
            .allow(&["@all", "-@dangerous", "keys", "dbsize"])
            .max_value_bytes(8),
    ]);
    let mut server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    server.kill();
    wait_for(&proxy, "down", SLACK);

    // Prefixes: each tenant sees only its own keys, by their unprefixed names.
    assert_eq!(a.cmd(&words("SET k from-a")), b"+OK\r\n");
    assert_eq!(b.cmd(&words("GET k")), b"$-1\r\n");
    assert_eq!(b.cmd(&words("SET k from-b")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("GET k")), b"$6\r\nfrom-a\r\n");
    assert_eq!(b.cmd(&words("DBSIZE")), b":1\r\n");
    // Listings of the keyspace are refused: the engine's would be partial (issue 20).
    let r = String::from_utf8(b.cmd(&words("KEYS *"))).unwrap();
    assert!(r.starts_with("-TRYAGAIN") && r.contains("partial"), "{r}");
    // TTL caps and defaults.
    assert_eq!(a.cmd(&words("SET session:1 x EX 100000")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("TTL session:1")), b":10\r\n");
    assert_eq!(a.cmd(&words("SET session:2 x")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("TTL session:2")), b":5\r\n");
    assert_eq!(a.cmd(&words("PERSIST session:2")), b":1\r\n");
    assert_eq!(a.cmd(&words("TTL session:2")), b":10\r\n");
    // Namespace-local operations count only the tenant's keys. FLUSHDB, a SCAN + DEL of the
    // namespace, would delete only the outage's keys and leave the upstream's: refused.
    assert_eq!(a.cmd(&words("DBSIZE")), b":3\r\n");
    let r = String::from_utf8(a.cmd(&words("FLUSHDB"))).unwrap();
    assert!(r.starts_with("-TRYAGAIN") && r.contains("partial"), "{r}");
    assert_eq!(a.cmd(&words("DBSIZE")), b":3\r\n");
    assert_eq!(b.cmd(&words("GET k")), b"$6\r\nfrom-b\r\n");
    // Refusals: permissions and value sizes.
    let r = String::from_utf8(b.cmd(&words("FLUSHDB"))).unwrap();
    assert!(r.starts_with("-NOPERM"), "{r}");
    let r = String::from_utf8(b.cmd(&words("SET big 123456789"))).unwrap();
    assert!(r.contains("tenant.max_value_bytes"), "{r}");
    let r = String::from_utf8(a.cmd(&words("FLUSHALL"))).unwrap();
    assert!(r.starts_with("-NOPERM"), "{r}");
}

both!(
    near_cache_entries_answer_stale_within_the_window,
    |kind: Kind| {
        // stale-if-error: opt-in, bounded by local_only.stale_reads_ms from the moment coherence was
        // lost; the engine's own keys (written during the outage) win; nothing survives recovery.
        let mut server = Server::start(kind);
        let cache = "[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = \"*\"\n";
        let stale = Proxy::start_with_config(
            &server.url(),
            cache,
            &[("local_only.stale_reads_ms", "1500")],
        );
        let strict = Proxy::start_with_config(&server.url(), cache, &[]);
        let tracking = |p: &Proxy| {
            let (_, body) = p.admin_get("/stats");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["near_cache"]["tracking"].as_u64() == Some(2)
        };
        for p in [&stale, &strict] {
            wait_until(SLACK, || tracking(p)).expect("tracking");
        }
        let mut d = server.raw();
        d.cmd(&words("SET k cached"));
        d.cmd(&words("SET w cached"));
        let (mut s, mut t) = (stale.raw(), strict.raw());
        for c in [&mut s, &mut t] {
            assert_eq!(c.cmd(&words("GET k")), b"$6\r\ncached\r\n");
            assert_eq!(c.cmd(&words("GET w")), b"$6\r\ncached\r\n");
        }
        server.kill();
        let lost = Instant::now();
        wait_for(&stale, "down", SLACK);
        wait_for(&strict, "down", SLACK);
        assert_eq!(
            s.cmd(&words("GET k")),
            b"$6\r\ncached\r\n",
            "stale within the window"
        );
        assert_eq!(
            t.cmd(&words("GET k")),
            b"$-1\r\n",
            "off by default: the engine answers"
        );
        assert_eq!(s.cmd(&words("GET never-cached")), b"$-1\r\n");
        // A write during the outage lands in the engine, which then answers for that key.
        assert_eq!(s.cmd(&words("SET w local")), b"+OK\r\n");
        assert_eq!(s.cmd(&words("GET w")), b"$5\r\nlocal\r\n");
        // The window closes 1.5 s after the tracking connections went.
        wait_until(SLACK * 2, || s.cmd(&words("GET k")) == b"$-1\r\n").expect("the window closes");
        eprintln!(
            "[{kind:?} stale reads] served stale for {:?} after the kill (window 1500 ms)",
            lost.elapsed()
        );
        assert!(lost.elapsed() >= Duration::from_millis(1400));
        server.restart();
        wait_for(&stale, "healthy", SLACK * 2);
        d = server.raw();
        d.cmd(&words("SET k fresh"));
        wait_until(SLACK, || s.cmd(&words("GET k")) == b"$5\r\nfresh\r\n").expect("normal again");
        let (_, body) = stale.admin_get("/stats");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["near_cache"]["stale_hits"].as_u64().unwrap() >= 1, "{v}");
    }
);

both!(
    merge_on_recovery_creates_what_the_upstream_lacks,
    |kind: Kind| {
        // local_only.on_recovery = "merge": keys written during the outage that the upstream does not
        // have are created there with their TTL; keys it has are left exactly as they are.
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("local_only.on_recovery", "merge")]);
        let mut d = server.raw();
        d.cmd(&words("SET kept upstream"));
        d.cmd(&words("HSET kepthash f upstream"));
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("GET kept")), b"$8\r\nupstream\r\n");
        server.signal("STOP");
        wait_for(&proxy, "down", SLACK);
        for cmd in [
            "SET kept local",
            "HSET kepthash f local g local",
            "SET session:1 alice PX 60000",
            "HSET user:1 name alice age 30",
            "SADD tags a b c",
            "ZADD board 1.5 alice -2 bob 100 carol",
            "RPUSH queue x y z x",
            "INCR hits",
        ] {
            let r = c.cmd(&words(cmd));
            assert!(
                !r.starts_with(b"-"),
                "{cmd}: {}",
                String::from_utf8_lossy(&r)
            );
        }
        // A big collection, written in several script calls.
        let mut batch = Vec::new();
        for i in 0..1500 {
            batch.extend(encode(&[b"SADD", b"big", format!("m{i}").as_bytes()]));
        }
        c.send(&batch);
        for _ in 0..1500 {
            assert_eq!(c.reply().unwrap(), b":1\r\n");
        }
        server.signal("CONT");
        wait_for(&proxy, "healthy", SLACK * 2);
        wait_until(SLACK, || d.cmd(&words("EXISTS hits big")) == b":2\r\n").expect("merged");
        wait_until(SLACK, || d.cmd(&words("SCARD big")) == b":1500\r\n").expect("every chunk");
        assert_eq!(
            d.cmd(&words("GET kept")),
            b"$8\r\nupstream\r\n",
            "never overwritten"
        );
        assert_eq!(
            d.cmd(&words("HGETALL kepthash")),
            b"*2\r\n$1\r\nf\r\n$8\r\nupstream\r\n"
        );
        assert_eq!(d.cmd(&words("GET session:1")), b"$5\r\nalice\r\n");
        let pttl: i64 = String::from_utf8(d.cmd(&words("PTTL session:1")))
            .unwrap()
            .trim_start_matches(':')
            .trim_end()
            .parse()
            .unwrap();
        assert!(pttl > 50_000 && pttl <= 60_000, "TTL carried over: {pttl}");
        assert_eq!(d.cmd(&words("HGET user:1 age")), b"$2\r\n30\r\n");
        assert_eq!(d.cmd(&words("SCARD tags")), b":3\r\n");
        assert_eq!(
        d.cmd(&words("ZRANGE board 0 -1 WITHSCORES")),
        b"*6\r\n$3\r\nbob\r\n$2\r\n-2\r\n$5\r\nalice\r\n$3\r\n1.5\r\n$5\r\ncarol\r\n$3\r\n100\r\n"
    );
        assert_eq!(
            d.cmd(&words("LRANGE queue 0 -1")),
            b"*4\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n$1\r\nx\r\n"
        );
        assert_eq!(d.cmd(&words("GET hits")), b"$1\r\n1\r\n");
        // Forwarding again, and the local data is gone from respite.
        assert_eq!(c.cmd(&words("GET kept")), b"$8\r\nupstream\r\n");
    }
);

// A wrong password is a misconfiguration, not an outage: local-only mode must not absorb it (the
// application's writes would land in a local engine and never reach the upstream). Clients get
// the upstream's own refusal, /readyz says why, and a corrected upstream is used at once.
both!(
    a_refused_password_fails_commands_instead_of_going_local,
    |kind: Kind| {
        let server = Server::start_with(kind, &["--requirepass", "right"]);
        let url = format!("redis://:wrong@127.0.0.1:{}", server.port);
        let proxy = Proxy::start_with(
            &url,
            &[
                ("health.probe_interval_ms", "50"),
                ("upstream.backoff_max_ms", "100"),
            ],
        );
        wait_until(Duration::from_secs(5), || {
            let (code, body) = proxy.admin_get("/readyz");
            code == 503 && body.contains("refuses respite's configuration")
        })
        .expect("/readyz names the refusal");
        let (_, stats) = proxy.admin_get("/stats");
        assert!(stats.contains("\"refuses_configuration\":true"), "{stats}");
        assert!(stats.contains("\"local_only\":false"), "{stats}");
        let mut c = proxy.raw();
        for cmd in ["SET k local", "GET k", "INCR n"] {
            let reply = String::from_utf8_lossy(&c.cmd(&words(cmd))).into_owned();
            assert!(
                reply.starts_with("-ERR") && reply.contains("WRONGPASS"),
                "{cmd}: {reply:?}"
            );
        }
        // The upstream now takes the password respite has: commands reach it, none was kept locally.
        let mut admin = server.raw();
        assert_eq!(admin.cmd(&words("AUTH right")), b"+OK\r\n");
        assert_eq!(
            admin.cmd(&words("CONFIG SET requirepass wrong")),
            b"+OK\r\n"
        );
        wait_until(Duration::from_secs(10), || {
            c.cmd(&words("SET k upstream")) == b"+OK\r\n"
        })
        .expect("forwarding once the password is accepted");
        assert_eq!(admin.cmd(&words("GET k")), b"$8\r\nupstream\r\n");
        assert_eq!(admin.cmd(&words("EXISTS n")), b":0\r\n");
        wait_until(Duration::from_secs(5), || {
            proxy.admin_get("/readyz").0 == 200
        })
        .expect("ready again");
        let (_, stats) = proxy.admin_get("/stats");
        assert!(stats.contains("\"refuses_configuration\":false"), "{stats}");
    }
);

// The log says what happens to a refused password once, and truly: not served locally (it said
// both "local-only mode does not serve a misconfiguration" and "the local engine serves").
#[test]
fn a_refused_password_is_logged_as_not_served_locally() {
    let server = Server::start_with(Kind::Redis, &["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let respite = crate::support::Binary::start_logged(
        "",
        &["--upstream", &url, "--set", "health.probe_interval_ms=50"],
        &[],
    );
    wait_until(Duration::from_secs(10), || {
        respite.log().contains("local-only mode not entered")
    })
    .unwrap_or_else(|| panic!("the refusal is logged:\n{}", respite.log()));
    let log = respite.log();
    assert!(
        log.contains("the upstream refuses respite's configuration"),
        "{log}"
    );
    assert!(!log.contains("the local engine serves"), "{log}");
    // And so it is: a command gets the upstream's refusal, not a local answer.
    let reply = crate::support::Raw::connect(respite.addr).cmd(&words("SET k v"));
    assert!(
        String::from_utf8_lossy(&reply).contains("WRONGPASS"),
        "{reply:?}"
    );
}

//! Pinned upstream connections end to end: blocking commands, WATCH with MULTI/EXEC, SELECT of
//! another database, long transactions. Judged by the upstream's own state (its lists, keys,
//! blocked clients) and by byte-for-byte comparison with the upstream's own replies.
use crate::both;
use crate::support::{
    Binary, Kind, Proxy, Raw, Server, TenantToml, bulk, encode, python, rss_kib_of, text,
    wait_until, words,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Blocking commands whose data is there already, and ones that time out: the same bytes as
/// the upstream's, in RESP2 and RESP3.
const BLOCKING: &str = "
RPUSH l a b c
BLPOP l 1
BRPOP l 1
BLMOVE l m LEFT RIGHT 1
BRPOPLPUSH m l 1
BLMPOP 1 1 l LEFT COUNT 2
BLPOP nothing 0.05
ZADD z 1 one 2 two 3 three
BZPOPMIN z 1
BZPOPMAX z 1
BZMPOP 1 1 z MIN
XADD s 1-1 f v
XREAD BLOCK 10 STREAMS s 0
XREAD BLOCK 10 STREAMS s $
XGROUP CREATE s g 0
XREADGROUP GROUP g c BLOCK 10 STREAMS s >
WAIT 0 0
GET l
PING
PING a b
";

both!(blocking_commands_match_the_upstream, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for resp3 in [false, true] {
        let run = |c: &mut Raw| -> Vec<String> {
            if resp3 {
                c.cmd(&words("HELLO 3"));
            }
            BLOCKING
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("{l} -> {}", text(c.cmd(&words(l)))))
                .collect()
        };
        server.raw().cmd(&words("FLUSHALL"));
        let direct = run(&mut server.raw());
        server.raw().cmd(&words("FLUSHALL"));
        let proxied = run(&mut proxy.raw());
        assert_eq!(proxied, direct, "resp3: {resp3}");
    }
    // Each pinned connection went back to the pool after its reply, reset: on the upstream,
    // each one's last command is respite's CLIENT INFO (its reset's check).
    wait_until(Duration::from_secs(5), || {
        let list = text(server.raw().cmd(&words("CLIENT LIST")));
        let pinned: Vec<&str> = list
            .lines()
            .filter(|l| l.contains("name=respite-pinned"))
            .collect();
        !pinned.is_empty() && pinned.iter().all(|l| l.contains("cmd=client|info"))
    })
    .expect("every lease given back");
});

both!(a_blocked_client_gets_what_is_pushed_later, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut waiter = proxy.raw();
    waiter.send(&encode(&words("BLPOP jobs 5")));
    wait_until(Duration::from_secs(5), || server.blocked_clients() == 1).expect("blocked upstream");
    // Other clients' commands are not stuck behind it.
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&words("SET x 1")), b"+OK\r\n");
    assert_eq!(other.cmd(&words("LPUSH jobs j1")), b":1\r\n");
    assert_eq!(waiter.reply().unwrap(), b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n");
    // The same client goes on, on the shared connection, in order.
    assert_eq!(waiter.cmd(&words("GET x")), bulk("1"));
});

both!(a_client_killed_in_blpop_loses_nothing, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for _ in 0..3 {
        let mut waiter = proxy.raw();
        waiter.send(&encode(&words("BLPOP jobs 0")));
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
            .expect("blocked upstream");
        drop(waiter);
        // Its upstream connection is closed at once: the upstream stops blocking for it.
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 0).expect("unblocked");
        assert_eq!(proxy.raw().cmd(&words("LPUSH jobs j")), b":1\r\n");
        // Nobody popped it for the dead client.
        assert_eq!(server.raw().cmd(&words("LLEN jobs")), b":1\r\n");
        server.raw().cmd(&words("DEL jobs"));
    }
});

both!(watch_broken_by_a_write_gives_a_null_exec, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for resp3 in [false, true] {
        let mut c = proxy.raw();
        if resp3 {
            c.cmd(&words("HELLO 3"));
        }
        let null = if resp3 {
            &b"_\r\n"[..]
        } else {
            &b"*-1\r\n"[..]
        };
        assert_eq!(c.cmd(&words("SET k 1")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("WATCH k")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("GET k")), bulk("1"));
        server.raw().cmd(&words("SET k 2"));
        assert_eq!(c.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SET k 3")), b"+QUEUED\r\n");
        assert_eq!(c.cmd(&words("EXEC")), null);
        assert_eq!(server.raw().cmd(&words("GET k")), bulk("2"));
        // Not broken: it runs.
        assert_eq!(c.cmd(&words("WATCH k")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SET k 4")), b"+QUEUED\r\n");
        assert_eq!(c.cmd(&words("EXEC")), b"*1\r\n+OK\r\n");
        assert_eq!(server.raw().cmd(&words("GET k")), bulk("4"));
        // UNWATCH and DISCARD end it too.
        assert_eq!(c.cmd(&words("WATCH k")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("UNWATCH")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("WATCH k")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("MULTI")), b"+OK\r\n");
        assert_eq!(
            c.cmd(&words("WATCH k")),
            b"-ERR WATCH inside MULTI is not allowed\r\n"
        );
        assert_eq!(c.cmd(&words("DISCARD")), b"+OK\r\n");
    }
});

both!(
    watch_increments_are_exact_through_two_proxies,
    |kind: Kind| {
        // redis-py's optimistic-locking helper (WATCH, GET, MULTI, SET, EXEC, retry on a null
        // EXEC), from 20 clients split over two respites in front of one upstream.
        let server = Server::start(kind);
        let (a, b) = (Proxy::start(&server.url()), Proxy::start(&server.url()));
        let script = r#"
import redis,sys,threading
ports = [int(sys.argv[1]), int(sys.argv[2])]
retries = [0]
def work(i):
    r = redis.Redis(port=ports[i % 2])
    for _ in range(25):
        with r.pipeline() as p:
            while True:
                try:
                    p.watch('counter')
                    n = int(p.get('counter') or 0)
                    p.multi()
                    p.set('counter', n + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    retries[0] += 1
ts = [threading.Thread(target=work, args=(i,)) for i in range(20)]
[t.start() for t in ts]
[t.join() for t in ts]
print(retries[0])
"#;
        let out = python(&["-c", script, &a.port().to_string(), &b.port().to_string()]);
        assert_eq!(server.raw().cmd(&words("GET counter")), bulk("500"));
        // Contention there was: some WATCHes were broken and retried.
        assert!(out.trim().parse::<u64>().unwrap() > 0, "retries: {out}");
    }
);

both!(no_dirty_connection_goes_back_to_the_pool, |kind: Kind| {
    // One pinned connection in all: whoever comes next gets the same one, or a new one if
    // the last was closed. Either way it must look fresh.
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.max_pinned", "1")]);
    server.raw().cmd(&words("SET k 0"));
    let dirty: [&[&str]; 4] = [
        // Killed inside MULTI, with a WATCH and another database.
        &["SELECT 2", "WATCH k", "MULTI", "SET x 1"],
        // Killed while WATCHing.
        &["WATCH k"],
        // Left cleanly: back to database 0 after a transaction.
        &[
            "SELECT 2", "WATCH k", "MULTI", "SET x 1", "EXEC", "SELECT 0",
        ],
        // Killed inside BLPOP.
        &["SELECT 3", "BLPOP nothing 0"],
    ];
    for steps in dirty {
        let mut c = proxy.raw();
        for s in steps {
            if s.starts_with("BLPOP") {
                c.send(&encode(&words(s)));
                wait_until(Duration::from_secs(5), || server.blocked_clients() == 1).unwrap();
            } else {
                c.cmd(&words(s));
            }
        }
        drop(c);
        if steps.last() == Some(&"SELECT 0") {
            // Left cleanly: the connection is reset and kept for the next client.
            // (Judged on the upstream: its connection stays, reset by respite's HELLO and
            // checked by its CLIENT INFO.)
            wait_until(Duration::from_secs(5), || {
                let list = text(server.raw().cmd(&words("CLIENT LIST")));
                list.lines()
                    .any(|l| l.contains("name=respite-pinned") && l.contains("cmd=client|info"))
            })
            .expect("kept idle");
        }
        // The next client: its WATCH on another key must not be broken by a write to `k`
        // (an inherited WATCH), its MULTI must not be nested, its keys land in database 0.
        let mut n = proxy.raw();
        let r = wait_until(Duration::from_secs(5), || {
            n.cmd(&words("WATCH other")) == b"+OK\r\n"
        });
        r.unwrap_or_else(|| panic!("{steps:?}: the pinned connection came back"));
        server.raw().cmd(&words("INCR k"));
        assert_eq!(n.cmd(&words("MULTI")), b"+OK\r\n", "{steps:?}");
        assert_eq!(n.cmd(&words("SET probe 1")), b"+QUEUED\r\n", "{steps:?}");
        assert_eq!(n.cmd(&words("EXEC")), b"*1\r\n+OK\r\n", "{steps:?}");
        assert_eq!(
            server.raw().cmd(&words("GETDEL probe")),
            bulk("1"),
            "{steps:?}"
        );
        drop(n);
    }
    // The upstream sees one pinned connection at most, named as respite names it.
    let list = text(server.raw().cmd(&words("CLIENT LIST")));
    assert!(list.matches("name=respite-pinned").count() <= 1, "{list}");
});

both!(an_exhausted_pool_says_so, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.max_pinned", "1")]);
    let mut holder = proxy.raw();
    assert_eq!(holder.cmd(&words("WATCH k")), b"+OK\r\n");
    let mut other = proxy.raw();
    assert_eq!(
        text(other.cmd(&words("BLPOP k 1"))),
        "-ERR respite has no pinned upstream connection free: all 1 are in use (upstream.max_pinned)\r\n"
    );
    // Shared-connection commands are unaffected.
    assert_eq!(other.cmd(&words("RPUSH l 1 2 3")), b":3\r\n");
    assert_eq!(holder.cmd(&words("UNWATCH")), b"+OK\r\n");
    wait_until(Duration::from_secs(5), || {
        other.cmd(&words("BLPOP l 1")) == b"*2\r\n$1\r\nl\r\n$1\r\n1\r\n"
    })
    .expect("the lease came back");
});

both!(select_uses_the_upstreams_databases, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let (mut p, mut d) = (proxy.raw(), server.raw());
    for cmd in ["SELECT 1000000", "SELECT -1", "SELECT x", "SELECT 1 2"] {
        assert_eq!(text(p.cmd(&words(cmd))), text(d.cmd(&words(cmd))), "{cmd}");
    }
    assert_eq!(p.cmd(&words("SET k zero")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("SELECT 5")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("GET k")), b"$-1\r\n");
    assert_eq!(p.cmd(&words("SET k five")), b"+OK\r\n");
    assert!(text(p.cmd(&words("CLIENT INFO"))).contains(" db=5 "));
    assert_eq!(p.cmd(&words("SELECT 0")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("GET k")), bulk("zero"));
    assert_eq!(d.cmd(&words("SELECT 5")), b"+OK\r\n");
    assert_eq!(d.cmd(&words("GET k")), bulk("five"));
});

both!(the_near_cache_keeps_databases_apart, |kind: Kind| {
    let server = Server::start(kind);
    let toml = "[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = \"*\"\n";
    let proxy = Proxy::start_with_config(&server.url(), toml, &[]);
    let mut d = server.raw();
    d.cmd(&words("SET k zero"));
    d.cmd(&words("SELECT 1"));
    d.cmd(&words("SET k one"));
    let mut p = proxy.raw();
    for _ in 0..3 {
        assert_eq!(p.cmd(&words("GET k")), bulk("zero"));
    }
    assert_eq!(p.cmd(&words("SELECT 1")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("GET k")), bulk("one"));
    assert_eq!(p.cmd(&words("SET k uno")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("SELECT 0")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("GET k")), bulk("zero"));
});

both!(long_transactions_stream, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.max_inflight", "50")]);
    let mut c = proxy.raw();
    let mut batch = encode(&words("MULTI"));
    for _ in 0..500 {
        batch.extend(encode(&words("INCR n")));
    }
    batch.extend(encode(&words("EXEC")));
    c.send(&batch);
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    for _ in 0..500 {
        assert_eq!(c.reply().unwrap(), b"+QUEUED\r\n");
    }
    let exec = c.reply().unwrap();
    assert!(exec.starts_with(b"*500\r\n:1\r\n:2\r\n"));
    assert!(exec.ends_with(b":500\r\n"));
    assert_eq!(server.raw().cmd(&words("GET n")), bulk("500"));
    // A refused command among them still aborts the whole transaction.
    let mut batch = encode(&words("MULTI"));
    for _ in 0..100 {
        batch.extend(encode(&words("INCR n")));
    }
    batch.extend(encode(&words("SUBSCRIBE c")));
    batch.extend(encode(&words("EXEC")));
    c.send(&batch);
    for _ in 0..101 {
        c.reply().unwrap();
    }
    assert!(c.reply().unwrap().starts_with(b"-ERR"));
    assert!(c.reply().unwrap().starts_with(b"-EXECABORT"));
    assert_eq!(server.raw().cmd(&words("GET n")), bulk("500"));
});

both!(tenants_block_and_watch_in_their_namespace, |kind: Kind| {
    let server = Server::start(kind);
    let app = TenantToml::new("app", "app:").allow(&["@all"]);
    let toml = format!("default_tenant = \"app\"\n{app}");
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut c = proxy.raw();
    server.raw().cmd(&words("RPUSH app:q a"));
    assert_eq!(c.cmd(&words("BLMOVE q done LEFT LEFT 1")), bulk("a"));
    assert_eq!(
        server.raw().cmd(&words("LRANGE app:done 0 -1")),
        b"*1\r\n$1\r\na\r\n"
    );
    assert_eq!(c.cmd(&words("WATCH w")), b"+OK\r\n");
    server.raw().cmd(&words("SET app:w changed"));
    c.cmd(&words("MULTI"));
    c.cmd(&words("SET w mine"));
    assert_eq!(c.cmd(&words("EXEC")), b"*-1\r\n", "the WATCH was on app:w");
    assert!(text(c.cmd(&words("SELECT 1"))).starts_with("-ERR SELECT is not allowed"));
});

/// A small deterministic generator: each worker's kills come at its own pseudo-random moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One worker until `stop`: BLMOVE a job into `processing`, record it done, LREM it. Killed at
/// random (the connection dropped) while blocked or holding a job, and started again.
fn worker(addr: std::net::SocketAddr, seed: u64, stop: &AtomicBool, kills: bool) {
    let mut rng = Rng(seed * 2654435761 + 1);
    let mut c = Raw::connect(addr);
    while !stop.load(Ordering::Relaxed) {
        c.send(&encode(&words("BLMOVE queue processing RIGHT LEFT 0.2")));
        if kills && rng.below(10) == 0 {
            // Killed while blocked (or about to be): whatever it took stays in `processing`.
            c = Raw::connect(addr);
            continue;
        }
        let reply = c.reply().unwrap();
        if reply.starts_with(b"$-1") || reply.starts_with(b"*-1") {
            continue;
        }
        let job = text(reply).lines().nth(1).unwrap().to_string();
        if kills && rng.below(20) == 0 {
            // Killed holding a job: a reaper finds it in `processing`.
            c = Raw::connect(addr);
            continue;
        }
        // :1, or :0 for a job processed before (at least once).
        assert!(c.cmd(&[b"SADD", b"done", job.as_bytes()]).starts_with(b":"));
        assert_eq!(
            c.cmd(&[b"LREM", b"processing", b"1", job.as_bytes()]),
            b":1\r\n"
        );
    }
}

both!(
    a_job_queue_survives_workers_killed_at_random,
    |kind: Kind| {
        const JOBS: usize = 400;
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let addr = proxy.addr;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for w in 0..20 {
                let stop = &stop;
                scope.spawn(move || worker(addr, w, stop, true));
            }
            let mut producer = proxy.raw();
            for i in 0..JOBS {
                let job = format!("job:{i}");
                assert!(
                    producer
                        .cmd(&[b"LPUSH", b"queue", job.as_bytes()])
                        .starts_with(b":")
                );
            }
            wait_until(Duration::from_secs(30), || {
                server.raw().cmd(&words("LLEN queue")) == b":0\r\n"
            })
            .expect("the queue drains");
            stop.store(true, Ordering::Relaxed);
        });
        // None lost: every job is done or still in `processing` (its worker was killed).
        let mut d = server.raw();
        let members = |d: &mut Raw, cmd: &str| -> Vec<String> {
            text(d.cmd(&words(cmd)))
                .lines()
                .filter(|l| l.starts_with("job:"))
                .map(str::to_string)
                .collect()
        };
        let done = members(&mut d, "SMEMBERS done");
        let held = members(&mut d, "LRANGE processing 0 -1");
        let mut all: Vec<String> = done.iter().chain(held.iter()).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), JOBS, "done {} + held {}", done.len(), held.len());
        // The reaper puts held jobs back; one worker, never killed, finishes them.
        while d.cmd(&words("RPOPLPUSH processing queue")) != b"$-1\r\n" {}
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| worker(addr, 99, &stop, false));
            wait_until(Duration::from_secs(30), || {
                server.raw().cmd(&words("LLEN queue")) == b":0\r\n"
                    && server.raw().cmd(&words("LLEN processing")) == b":0\r\n"
            })
            .expect("the reaped jobs are done");
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(text(d.cmd(&words("SCARD done"))), format!(":{JOBS}\r\n"));
    }
);

/// For the closing note: 1,000 clients blocked in BLPOP through the shipped binary cost as many
/// upstream connections (one pinned each), and this much memory. Printed, and checked loosely.
#[test]
#[ignore = "a measurement: cargo test --test integration thousand_blocked -- --ignored --nocapture"]
fn thousand_blocked_clients() {
    let server = Server::start(Kind::Redis);
    let binary = Binary::start("", &["--upstream", &server.url(), "--log-level", "error"]);
    let pid = binary.pid().to_string();
    let before = rss_kib_of(&pid);
    let upstream_before = text(server.raw().cmd(&words("INFO clients")));
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = Raw::connect(binary.addr);
        c.send(&encode(&[b"BLPOP", format!("q{i}").as_bytes(), b"0"]));
        clients.push(c);
    }
    wait_until(Duration::from_secs(60), || server.blocked_clients() == 1000).expect("all blocked");
    let after = rss_kib_of(&pid);
    let connected = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let upstream_after = text(server.raw().cmd(&words("INFO clients")));
    println!(
        "1000 blocked clients: upstream connections {} -> {}, respite RSS {:.1} MiB -> {:.1} MiB",
        connected(&upstream_before),
        connected(&upstream_after),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(clients);
    wait_until(Duration::from_secs(30), || server.blocked_clients() == 0).expect("all unblocked");
}

both!(
    auth_is_checked_by_the_upstream_without_tenants,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut d = server.raw();
        assert_eq!(
            // CLIENT INFO too: respite answers it, but only if the upstream lets alice run it.
            d.cmd(&words(
                "ACL SETUSER alice on >secret ~a:* +get +set +ping +client|info"
            )),
            b"+OK\r\n"
        );
        let mut p = proxy.raw();
        // Without a password on the upstream's default user, the upstream's own answer.
        assert_eq!(
            text(p.cmd(&words("AUTH pw"))),
            text(d.cmd(&words("AUTH pw")))
        );
        assert_eq!(
            text(p.cmd(&words("AUTH alice wrong"))),
            text(server.raw().cmd(&words("AUTH alice wrong")))
        );
        assert_eq!(p.cmd(&words("AUTH alice secret")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("SET a:1 x")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("GET a:1")), bulk("x"));
        // The upstream's ACL applies: alice may not touch b:* nor run DEL.
        assert!(text(p.cmd(&words("SET b:1 x"))).starts_with("-NOPERM"));
        assert!(text(p.cmd(&words("DEL a:1"))).starts_with("-NOPERM"));
        assert_eq!(d.cmd(&words("EXISTS b:1")), b":0\r\n");
        assert!(text(p.cmd(&words("CLIENT INFO"))).contains(" user=alice "));
        // Another client is not alice.
        assert_eq!(proxy.raw().cmd(&words("SET b:1 y")), b"+OK\r\n");
        // RESET makes it the default user again.
        assert_eq!(p.cmd(&words("RESET")), b"+RESET\r\n");
        assert_eq!(p.cmd(&words("DEL a:1")), b":1\r\n");
    }
);

both!(select_inside_multi_is_queued_as_redis_does, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let script = [
        "MULTI",
        "SET k zero",
        "SELECT 2",
        "SET k two",
        "EXEC",
        "GET k",
        "MULTI",
        "SELECT 1000000",
        "EXEC",
        "GET k",
        "SELECT 0",
        "GET k",
    ];
    let run = |c: &mut Raw| -> Vec<String> {
        script
            .iter()
            .map(|l| format!("{l} -> {}", text(c.cmd(&words(l)))))
            .collect()
    };
    let direct = run(&mut server.raw());
    server.raw().cmd(&words("FLUSHALL"));
    assert_eq!(run(&mut proxy.raw()), direct);
    let mut d = server.raw();
    d.cmd(&words("SELECT 2"));
    assert_eq!(d.cmd(&words("GET k")), bulk("two"));
});

both!(
    a_released_connection_keeps_no_state_of_its_client,
    |kind: Kind| {
        // Whatever a client set on its pinned connection is undone by the reset, or the connection
        // is closed: judged by the upstream's own CLIENT LIST after each release. (Redis 7.0's RESET
        // leaves CLIENT NO-EVICT ON in place.)
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("upstream.max_pinned", "2")]);
        let sessions: [&[&str]; 5] = [
            &["WATCH k", "CLIENT NO-EVICT ON", "UNWATCH"],
            &["SELECT 2", "CLIENT NO-EVICT ON", "SELECT 0"],
            &[
                "WATCH k",
                "CLIENT NO-TOUCH ON",
                "CLIENT NO-TOUCH OFF",
                "UNWATCH",
            ],
            &["WATCH k", "MULTI", "SET k 1", "EXEC"],
            &["SELECT 5", "WATCH a b c", "UNWATCH", "SELECT 0"],
        ];
        for steps in sessions {
            let mut c = proxy.raw();
            for s in steps {
                let r = text(c.cmd(&words(s)));
                assert!(!r.starts_with("-ERR respite"), "{s}: {r}");
            }
            // Released: every pinned connection the upstream has looks new.
            let settled = wait_until(Duration::from_secs(5), || {
                let list = text(server.raw().cmd(&words("CLIENT LIST")));
                let pinned: Vec<&str> = list
                    .lines()
                    .filter(|l| l.contains(" name=respite-pinned "))
                    .collect();
                pinned.iter().all(|l| {
                    l.contains(" flags=N ")
                        && l.contains(" db=0 ")
                        && l.contains(" sub=0 psub=0 ")
                        && (!l.contains(" watch=") || l.contains(" watch=0 "))
                        && l.contains("cmd=client|info")
                })
            });
            let list = text(server.raw().cmd(&words("CLIENT LIST")));
            assert!(settled.is_some(), "{steps:?}: {list}");
            c.cmd(&words("QUIT"));
        }
    }
);

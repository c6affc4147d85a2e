//! Clients that never read their replies (issue 13, finding 2): each pipelines GETs of a large
//! value and reads nothing. They must not hold up the shared upstream connection or the replies of
//! a client that reads, and respite's memory must stay within its budgets
//! (`limits.max_reply_bytes` per client, `limits.max_client_memory` for all).
//!
//! What keeps them apart (see `server::session::fairness`): a client whose replies are large or
//! not yet known travels on the bulk lane, one group of at most 16 commands in flight at a time,
//! and a client owed more than its gate sends nothing more until it reads; replies for a client
//! that is over its limit or gone are dropped as they arrive.
use crate::support::{Binary, Kind, Raw, Server, encode, rss_kib_of, wait_until, words};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The 99th percentile of `n` GET round trips of a small value, in microseconds.
fn p99_micros(proxy: SocketAddr, n: usize) -> u128 {
    let mut c = Raw::connect(proxy);
    let mut took: Vec<u128> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(c.cmd(&words("GET small")), b"$2\r\nok\r\n");
            t.elapsed().as_micros()
        })
        .collect();
    took.sort_unstable();
    took[n * 99 / 100]
}

/// respite as its own process, so its memory is its own (the test process runs other tests'
/// proxies beside this one).
fn respite(server: &Server, extra: &[&str]) -> (Binary, SocketAddr, impl Fn() -> u64 + use<>) {
    let url = server.url();
    let mut args = vec![
        "--upstream",
        &url,
        "--log-level",
        "error",
        "--set",
        "local_only.enabled=false",
    ];
    args.extend(extra);
    let binary = Binary::start("", &args);
    let (addr, pid) = (binary.addr, binary.pid().to_string());
    (binary, addr, move || rss_kib_of(&pid))
}

fn server_with_values() -> Server {
    let server = Server::start(Kind::Redis);
    let mut c = server.raw();
    assert_eq!(c.cmd(&[b"SET", b"big", &vec![b'v'; 100_000]]), b"+OK\r\n");
    assert_eq!(c.cmd(&words("SET small ok")), b"+OK\r\n");
    server
}

/// `n` clients, each pipelining 100 GETs of the 100 KB value (10 MB of replies) and reading none.
fn slow_readers(proxy: SocketAddr, n: usize) -> Vec<TcpStream> {
    let batch: Vec<u8> = (0..100).flat_map(|_| encode(&words("GET big"))).collect();
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(proxy).unwrap();
            s.write_all(&batch).unwrap();
            s
        })
        .collect()
}

/// Whether respite has closed `s` by `deadline`: it reads what is there until the end (or a
/// reset), or until the deadline passes with the connection still open.
fn ended(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(wait.max(Duration::from_millis(10))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) if Instant::now() >= deadline => return false,
            Err(_) => continue,
        }
    }
}

#[test]
fn slow_readers_do_not_delay_a_client_that_reads() {
    // As many as run in a few seconds on this 2-core machine in a debug build (the finding used
    // 2,000 on a larger one). Before the bulk lane, 30 were enough for a p99 of 5-436 ms against
    // 0.2-3.4 ms alone: all their 300 MB came back on the shared connection ahead of the reply.
    const SLOW: usize = 100;
    let server = server_with_values();
    let (_respite, proxy, rss_kib) = respite(&server, &["--set", "limits.max_reply_bytes=262144"]);
    // Warm: the client that reads has had its replies weighed (light), as a client that has
    // been working a while has.
    p99_micros(proxy, 50);
    let alone = p99_micros(proxy, 300);
    let rss = rss_kib();
    let slow = slow_readers(proxy, SLOW);
    let crowded = p99_micros(proxy, 300);
    let grew = rss_kib().saturating_sub(rss);
    eprintln!(
        "GET p99 alone {alone} us; beside {SLOW} clients each owed 10 MB unread: {crowded} us; RSS +{} MiB",
        grew / 1024
    );
    // Its replies no longer queue behind theirs, so what is left is sharing two busy cores with
    // the slow readers' first groups (16 replies of 100 KB each, 160 MB for 100, read and dropped):
    // a small factor of its latency alone, plus scheduling slack for a machine that runs other
    // builds and tests beside this one (a time slice of the kernel's scheduler is a few ms; 20
    // ms is a few of them). Before: the first GET waited for every byte ahead of it.
    assert!(
        crowded <= 5 * alone + 20_000,
        "p99 {crowded} us beside the slow readers, {alone} us alone"
    );
    // Each is over its 256 KiB at its first group, whose replies are dropped as they arrive
    // rather than held whole: a few MiB, not the 300 MB they asked for.
    assert!(grew < 64 * 1024, "RSS grew {grew} KiB");
    // Closed for max_reply_bytes: each reads the errors that replaced its replies, then the end.
    // (By their sockets: the connection gauge is the whole test process's.)
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &slow {
        assert!(ended(s, deadline), "a slow reader still open");
    }
    // Their bulk went on a connection of its own kind, not the shared ones.
    let clients = server.raw().cmd(&words("CLIENT LIST"));
    assert!(
        String::from_utf8_lossy(&clients).contains("name=respite-bulk"),
        "no bulk-lane connection: {}",
        String::from_utf8_lossy(&clients)
    );
    drop(slow);
}

#[test]
fn slow_readers_under_the_default_limits_stay_within_the_global_budget() {
    const SLOW: usize = 30;
    let server = server_with_values();
    // The default limits: 32 MiB unread per client, 256 MiB for all clients together.
    let (_respite, proxy, rss_kib) = respite(&server, &[]);
    p99_micros(proxy, 50);
    let alone = p99_micros(proxy, 300);
    let rss = rss_kib();
    let slow = slow_readers(proxy, SLOW);
    let crowded = p99_micros(proxy, 300);
    eprintln!(
        "GET p99 alone {alone} us; beside {SLOW} slow readers (default limits): {crowded} us"
    );
    // They are under their own limit, so they stay connected: each is sent one group at a time,
    // and only while it is owed less than 1 MiB, so each holds what its socket took plus about
    // one group (1.6 MB) here, never the 10 MB it asked for.
    let settled = wait_until(Duration::from_secs(10), || {
        let before = rss_kib();
        std::thread::sleep(Duration::from_millis(300));
        rss_kib() <= before + 1024
    });
    let grew = rss_kib().saturating_sub(rss);
    eprintln!("RSS +{} MiB", grew / 1024);
    assert!(settled.is_some(), "RSS still growing: +{grew} KiB");
    assert!(
        grew < 128 * 1024,
        "RSS grew {grew} KiB beside {SLOW} slow readers"
    );
    // Not growing: a second look a second later.
    std::thread::sleep(Duration::from_secs(1));
    let later = rss_kib().saturating_sub(rss);
    assert!(
        later <= grew + 4 * 1024,
        "RSS grew from +{grew} to +{later} KiB"
    );
    // Served well within the command deadline (before the bulk lane: none within 5 s beside
    // 2,000 of them).
    assert!(crowded < 1_000_000, "p99 {crowded} us, {alone} us alone");
    // Under their limits, they are held, not closed.
    for s in &slow {
        assert!(!ended(s, Instant::now()), "a slow reader was closed");
    }
    drop(slow);
}

/// What the kernel holds on respite's side of its client connections (local port `port`), from
/// /proc/net/tcp: bytes written and not yet taken by the client's kernel, on open connections
/// and on connections respite has closed (an orphaned socket keeps what it was sending until the
/// peer takes it), and how many closed ones still hold bytes.
fn kernel_queued(port: u16) -> (u64, u64, usize) {
    let (mut open, mut closed, mut orphans) = (0, 0, 0);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues)) = (f.get(1), f.get(3), f.get(4)) else {
                continue;
            };
            let local_port = local.rsplit(':').next().map(|p| u16::from_str_radix(p, 16));
            if local_port != Some(Ok(port)) {
                continue;
            }
            let tx = queues
                .split(':')
                .next()
                .and_then(|q| u64::from_str_radix(q, 16).ok())
                .unwrap_or(0);
            match *state {
                "01" => open += tx,
                // FIN-WAIT-1, CLOSING, LAST-ACK: closed by respite with bytes still queued.
                "04" | "0B" | "09" if tx > 0 => {
                    closed += tx;
                    orphans += 1;
                }
                _ => {}
            }
        }
    }
    (open, closed, orphans)
}

/// The highest RSS of `pid` (KiB) while `run` runs, sampled every 10 ms, and the most the kernel
/// held for its clients on `port` meanwhile (bytes, [`kernel_queued`], sampled every 50 ms).
fn peak_rss_while<T>(pid: u32, port: u16, run: impl FnOnce() -> T) -> (u64, u64, T) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak, mut kernel) = (0, 0);
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib_of(&pid.to_string()));
                if n.is_multiple_of(5) {
                    let (open, closed, _) = kernel_queued(port);
                    kernel = kernel.max(open + closed);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, kernel)
        })
    };
    let out = run();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (peak, kernel) = sampler.join().unwrap();
    (peak, kernel, out)
}

#[test]
fn many_slow_readers_stay_within_the_clients_total() {
    // 200 clients, each owed 10 MB it never reads (2 GB in all), against a 64 MiB total: respite
    // holds what the total allows and closes the clients holding the most, one at a time, each
    // one's memory dropped at once. Its RSS is the judge, from /proc, not its own count.
    const SLOW: usize = 200;
    const TOTAL: u64 = 64 << 20;
    let server = server_with_values();
    let total = format!("limits.max_client_memory={TOTAL}");
    let (respite, proxy, rss_kib) = respite(&server, &["--set", &total]);
    p99_micros(proxy, 50);
    let alone = p99_micros(proxy, 300);
    let start = rss_kib();
    let (peak, kernel, (slow, crowded, slowest)) =
        peak_rss_while(respite.pid(), proxy.port(), || {
            let slow = slow_readers(proxy, SLOW);
            // A client that reads keeps getting its answers (each checked by p99_micros)...
            let crowded = p99_micros(proxy, 300);
            // ... until every slow reader's first replies have come and gone through the
            // budget: one GET at a time for 2 s, each answered (the 2,000-reader run on a
            // release build stalled here: the checker's GETs stopped being answered).
            let until = Instant::now() + Duration::from_secs(2);
            let mut c = Raw::connect(proxy);
            let mut slowest = Duration::ZERO;
            while Instant::now() < until {
                let t = Instant::now();
                assert_eq!(c.cmd(&words("GET small")), b"$2\r\nok\r\n");
                slowest = slowest.max(t.elapsed());
            }
            (slow, crowded, slowest)
        });
    let grew = peak.saturating_sub(start);
    let (_, metrics) = respite.admin_get("/metrics");
    let closed = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"respite_clients_closed_for_memory_total{limit="max_client_memory"} "#)
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!(
        "{SLOW} slow readers, max_client_memory {} MiB: RSS {} MiB at start, peak +{} MiB; \
         kernel queued for clients at most {} MiB; {closed} closed for the total; GET p99 alone \
         {alone} us, beside them {crowded} us, slowest GET after {slowest:?}",
        TOTAL >> 20,
        start >> 10,
        grew >> 10,
        kernel >> 20
    );
    // Outside respite's memory, the kernel holds what respite wrote to them: bounded per client
    // (the unsent bytes by io::NOTSENT_LOWAT, 128 KiB, plus one write's overshoot), not left to
    // grow as the send buffer autotunes to megabytes each (before: 1.5 MB per client, and as
    // much again on the sockets of clients closed for the total, until the kernel's TCP memory
    // pressure stalled the 2,000-reader run).
    assert!(
        kernel <= SLOW as u64 * 256 * 1024,
        "the kernel held {kernel} bytes for {SLOW} clients"
    );
    assert!(slowest < Duration::from_secs(1), "a GET took {slowest:?}");
    // The total plus a stated overhead: what is not counted (the upstream connections' read
    // buffers past the job being counted, one 16 KiB read per client past its count, sessions,
    // allocator slack).
    assert!(
        grew <= (TOTAL >> 10) + 64 * 1024,
        "RSS grew {grew} KiB with a total of {} KiB",
        TOTAL >> 10
    );
    assert!(closed >= 1.0, "nobody was closed for the total");
    assert!(crowded < 1_000_000, "p99 {crowded} us, {alone} us alone");
    // Clients closed for the total are reset, so the kernel drops what it held for them too,
    // rather than keep it on an orphaned socket while it probes a peer that never reads.
    let (_, orphaned, orphans) = kernel_queued(proxy.port());
    assert_eq!(
        orphans, 0,
        "{orphans} closed connections still hold {orphaned} bytes"
    );
    // Once they go, so does their memory.
    drop(slow);
    let settled = wait_until(Duration::from_secs(15), || rss_kib() <= start + 32 * 1024);
    let after = rss_kib();
    eprintln!("RSS after they closed: {} MiB", after >> 10);
    assert!(
        settled.is_some(),
        "RSS {after} KiB after they closed, {start} KiB at start"
    );
}

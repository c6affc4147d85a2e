//! Clients that never read their replies (issue 13, finding 2): each pipelines GETs of a large
//! value and reads nothing. They must not hold up the shared upstream connection or the replies of
//! a client that reads, and respite's memory must stay within its budgets
//! (`limits.max_reply_bytes` per client, `limits.max_client_memory` for all).
use crate::support::{Kind, Proxy, Server, encode, metric, rss_kib, wait_until, words};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The 99th percentile of `n` GET round trips of a small value, in microseconds.
fn p99_micros(proxy: &Proxy, n: usize) -> u128 {
    let mut c = proxy.raw();
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

#[test]
fn clients_that_never_read_do_not_starve_the_rest() {
    // The finding used 2,000 clients; this machine runs the suite on 2 shared cores, so 30.
    const HOSTILE: usize = 30;
    let server = Server::start(Kind::Redis);
    let mut c = server.raw();
    assert_eq!(c.cmd(&[b"SET", b"big", &vec![b'v'; 100_000]]), b"+OK\r\n");
    assert_eq!(c.cmd(&words("SET small ok")), b"+OK\r\n");
    // The default limits: 32 MiB unread per client, 256 MiB for all clients together.
    let proxy = Proxy::start_with(&server.url(), &[("local_only.enabled", "false")]);
    let alone = p99_micros(&proxy, 300);
    let rss = rss_kib();
    let batch: Vec<u8> = (0..100).flat_map(|_| encode(&words("GET big"))).collect();
    let hostile: Vec<TcpStream> = (0..HOSTILE)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            s.write_all(&batch).unwrap();
            s
        })
        .collect();
    let crowded = p99_micros(&proxy, 300);
    let grew = rss_kib().saturating_sub(rss);
    eprintln!(
        "GET p99 alone {alone} us; beside {HOSTILE} clients each owed 10 MB unread: {crowded} us; RSS +{} MiB",
        grew / 1024
    );
    // 300 MB owed: bounded by the global budget (256 MiB), plus replies in flight and what the
    // allocator keeps.
    assert!(grew < 512 * 1024, "RSS grew {grew} KiB");
    // Not yet a small factor: replies of commands already sent on the shared connection come
    // back in order, so the well-behaved client waits behind the slow readers' replies in flight
    // (measured: 3.4 ms alone, 0.44 s beside 30 of them, debug build). What this holds is that
    // it is served well within the command deadline (before: none within 5 s).
    assert!(
        crowded < 2_000_000,
        "p99 {crowded} us beside the slow readers, {alone} us alone"
    );
    // The largest holders were closed to keep the budget: the connections go.
    wait_until(Duration::from_secs(30), || {
        metric(&proxy, "respite_client_connections") < HOSTILE as f64
    })
    .expect("slow readers closed for the global budget");
    drop(hostile);
}

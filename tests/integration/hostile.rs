//! Hostile clients (issue 13): clients that pipeline and vanish, never read, declare huge arguments
//! or trickle bytes. None of them may hold resources after it is gone or hurt the clients around it.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, metric, rss_kib, wait_until, words};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How a pipelining client leaves without reading its replies.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// FIN first (half-close), then the close (with replies unread, the kernel resets).
    Fin,
    /// Straight close with replies unread: the kernel sends RST.
    Rst,
}

/// Pipeline `n` GETs of a 1 KiB value without reading, until the proxy stops taking them (its
/// queue for this client is full) or all are sent, then leave.
fn pipeline_and_leave(addr: SocketAddr, n: usize, leave: Leave) {
    let mut s = TcpStream::connect(addr).unwrap();
    // A write that cannot finish within this is blocked by the proxy's back-pressure: the state
    // that used to leak the session.
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let batch: Vec<u8> = (0..n).flat_map(|_| encode(&words("GET v"))).collect();
    let _ = s.write_all(&batch);
    match leave {
        Leave::Fin => {
            let _ = s.shutdown(Shutdown::Write);
            drop(s);
        }
        Leave::Rst => drop(s),
    }
}

both!(sessions_end_when_pipelining_clients_vanish, |kind: Kind| {
    let server = Server::start(kind);
    let mut c = server.raw();
    let value = "x".repeat(1024);
    assert_eq!(c.cmd(&[b"SET", b"v", value.as_bytes()]), b"+OK\r\n");
    let proxy = Proxy::start_with(
        &server.url(),
        &[("listen.max_clients", "6"), ("local_only.enabled", "false")],
    );
    // At the threshold the fault was found at (about 4,000) and well above it, both ways out.
    for n in [4_000, 20_000] {
        for leave in [Leave::Fin, Leave::Rst] {
            // More clients than max_clients over the run: each leaked one would keep its slot.
            for _ in 0..4 {
                let handles: Vec<_> = (0..3)
                    .map(|_| {
                        let addr = proxy.addr;
                        std::thread::spawn(move || pipeline_and_leave(addr, n, leave))
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                wait_until(Duration::from_secs(20), || {
                    metric(&proxy, "respite_client_connections") == 0.0
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{} sessions still open after {n} commands and a {leave:?} close",
                        metric(&proxy, "respite_client_connections")
                    )
                });
            }
        }
    }
    // Every slot is free again: max_clients clients at once, each answered.
    let mut all: Vec<Raw> = (0..6).map(|_| proxy.raw()).collect();
    for c in &mut all {
        assert_eq!(
            c.cmd(&words("GET v")),
            format!("$1024\r\n{value}\r\n").as_bytes()
        );
    }
});

/// Virtual memory of this process in KiB (the proxy runs in-process): what a reservation costs
/// where overcommit is off, even if never touched.
fn vm_size_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn declared_huge_arguments_cost_only_what_arrives() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start(&server.url());
    let mut probe = proxy.raw();
    assert_eq!(probe.cmd(&words("PING")), b"+PONG\r\n");
    let (rss, vm) = (rss_kib(), vm_size_kib());
    // 100 clients each declare a 512 MiB argument (Redis's own limit) and send 1,000 bytes of it.
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n")
                .unwrap();
            s.write_all(&[b'x'; 1000]).unwrap();
            s
        })
        .collect();
    // Every session has read what was sent: a request behind them on a new connection is served,
    // and each of them is still open.
    assert_eq!(probe.cmd(&words("PING")), b"+PONG\r\n");
    wait_until(Duration::from_secs(10), || {
        metric(&proxy, "respite_client_connections") == 101.0
    })
    .expect("all 100 sessions open");
    let (rss_grew, vm_grew) = (
        rss_kib().saturating_sub(rss),
        vm_size_kib().saturating_sub(vm),
    );
    eprintln!("100 declared 512 MiB arguments: RSS +{rss_grew} KiB, virtual +{vm_grew} KiB");
    // Before: 50 GiB of address space reserved. Now at most a 64 KiB chunk each.
    assert!(vm_grew < 1024 * 1024, "virtual memory grew {vm_grew} KiB");
    assert!(rss_grew < 64 * 1024, "RSS grew {rss_grew} KiB");
    held.clear();
}

#[test]
fn unfinished_requests_share_one_budget_and_the_largest_goes_first() {
    let server = Server::start(Kind::Redis);
    // 8 MiB for all clients' unfinished requests and unread replies together.
    let proxy = Proxy::start_with(&server.url(), &[("limits.max_client_memory", "8388608")]);
    // Unfinished requests of 6 MiB, then 1 MiB, then 5 MiB: the third takes the total past 8 MiB
    // while the first holds the most, so the first is closed and the other two fit.
    let read = || metric(&proxy, "respite_client_read_bytes_total");
    let (before, mut sent) = (read(), 0);
    let mut held: Vec<TcpStream> = [6, 1, 5]
        .iter()
        .map(|mib| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16000000\r\n";
            let _ = s.write_all(head);
            // A client being closed may see its write fail: that is the point.
            let _ = s.write_all(&vec![b'x'; mib << 20]);
            // Each is read whole before the next connects, so which one holds the most is the
            // test's choice: under load the first was once still partly in its socket when the
            // third went over the budget, and the third, then the largest, was closed instead.
            sent += head.len() + (mib << 20);
            wait_until(Duration::from_secs(10), || read() - before >= sent as f64)
                .expect("respite read the request so far");
            s
        })
        .collect();
    let open = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 64];
        matches!(std::io::Read::read(s, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    held[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 64];
    assert!(
        match std::io::Read::read(&mut held[0], &mut b) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        },
        "the largest holder is closed"
    );
    assert!(open(&mut held[1]) && open(&mut held[2]), "the others stay");
    let mut probe = proxy.raw();
    assert_eq!(probe.cmd(&words("PING")), b"+PONG\r\n");
}

#[test]
fn idle_clients_are_closed_after_the_timeout() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with(&server.url(), &[("limits.idle_timeout_ms", "400")]);
    let start = std::time::Instant::now();
    let mut idle = proxy.raw();
    assert_eq!(idle.cmd(&words("PING")), b"+PONG\r\n");
    let mut busy = proxy.raw();
    // A client that keeps talking is not idle, however long it stays.
    while start.elapsed() < Duration::from_millis(1200) {
        assert_eq!(busy.cmd(&words("PING")), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(idle.closed(), "the idle client was closed");
    assert_eq!(busy.cmd(&words("PING")), b"+PONG\r\n");
}

#[test]
fn slowloris_requests_are_closed_by_the_request_deadline() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with(&server.url(), &[("limits.request_timeout_ms", "500")]);
    // 50 connections each dribbling one byte of a request every 100 ms (the finding: 500 at one
    // byte a second; fewer and faster to keep the suite quick).
    let request = encode(&words("SET slow value"));
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let start = std::time::Instant::now();
    let mut closed_at = vec![None; conns.len()];
    for byte in request.iter().take(request.len() - 1).cycle() {
        for (c, at) in conns.iter_mut().zip(&mut closed_at) {
            if at.is_none() && c.write_all(&[*byte]).is_err() {
                *at = Some(start.elapsed());
            }
        }
        if closed_at.iter().all(Option::is_some) || start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, at) in closed_at.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("connection {i} still open after 10 s"));
        assert!(
            at >= Duration::from_millis(500),
            "closed after {at:?}, before the deadline"
        );
    }
    // What they got: the error naming the limit.
    let mut got = String::new();
    conns[0]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = std::io::Read::read_to_string(&mut conns[0], &mut got);
    assert!(got.contains("limits.request_timeout_ms"), "{got:?}");
    // A request delivered whole is served as usual.
    assert_eq!(proxy.raw().cmd(&words("PING")), b"+PONG\r\n");
}

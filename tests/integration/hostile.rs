//! Hostile clients (issue 13): clients that pipeline and vanish, never read, declare huge arguments
//! or trickle bytes. None of them may hold resources after it is gone or hurt the clients around it.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, metric, wait_until, words};
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

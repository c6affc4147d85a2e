//! Faults under full load (issue 13): SIGTERM while many clients pipeline writes. Every
//! acknowledged write is applied upstream, every client gets its replies in order and then a clean
//! close, and the process exits within its grace period.
use crate::support::{Binary, Kind, Raw, Server, encode, signal, wait_until, words};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn sigterm_under_full_load_loses_no_acknowledged_write() {
    const CLIENTS: usize = 16;
    let server = Server::start(Kind::Redis);
    let mut binary = Binary::start(
        "[runtime]\nshutdown_grace_ms = 3000\n",
        &["--upstream", &server.url(), "--log-level", "warn"],
    );
    let addr = binary.addr;
    let mut c = Raw::connect(addr);
    wait_until(Duration::from_secs(5), || {
        c.cmd(&words("PING")) == b"+PONG\r\n"
    })
    .expect("serving");
    let started = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let started = started.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let key = format!("load:{i}");
                let batch = encode(&[b"INCR", key.as_bytes()]).repeat(32);
                // Acknowledged INCRs: each reply is the next count, in order, or the stream ends.
                let mut acked = 0i64;
                started.fetch_add(1, Ordering::SeqCst);
                'run: loop {
                    if std::io::Write::write_all(&mut c.stream, &batch).is_err() {
                        break;
                    }
                    for _ in 0..32 {
                        match c.reply() {
                            None => break 'run,
                            Some(r) => {
                                assert_eq!(
                                    r,
                                    format!(":{}\r\n", acked + 1).into_bytes(),
                                    "client {i}"
                                );
                                acked += 1;
                            }
                        }
                    }
                }
                (key, acked)
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), || {
        started.load(Ordering::SeqCst) == CLIENTS
    })
    .unwrap();
    // Full load for a moment, then the signal.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(binary.pid(), "TERM");
    let status = binary.child.wait().unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(2),
        "exit took {took:?}"
    );
    let mut direct = server.raw();
    let mut total = 0;
    for c in clients {
        let (key, acked) = c.join().unwrap();
        let applied = direct.cmd(&[b"GET", key.as_bytes()]);
        let applied: i64 = std::str::from_utf8(&applied)
            .unwrap()
            .lines()
            .nth(1)
            .map_or(0, |v| v.parse().unwrap());
        // Every acknowledged write is applied (and at most the unacknowledged ones in flight more).
        assert!(
            applied >= acked,
            "{key}: {acked} acknowledged, {applied} applied"
        );
        assert!(
            applied - acked <= 32,
            "{key}: {acked} acknowledged, {applied} applied"
        );
        total += acked;
    }
    eprintln!("SIGTERM under load: {total} INCRs acknowledged, exit after {took:?}");
    assert!(total > 0);
}

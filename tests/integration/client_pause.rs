//! CLIENT PAUSE … WRITE through respite (issue 21): the upstream holds each paused write on a
//! connection of its client's own, so the shared connections go on carrying everyone else's
//! reads and the CLIENT UNPAUSE, as on one server (before, a paused write on a shared connection
//! held every client behind it until respite's command deadline). Judged by the upstream's own
//! `blocked_clients` and keys.
use crate::both;
use crate::support::{Kind, Proxy, Server, encode, wait_until, words};
use std::time::{Duration, Instant};

fn blocked(server: &Server) -> u64 {
    let info = String::from_utf8_lossy(&server.raw().cmd(&words("INFO clients"))).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

both!(a_paused_write_holds_only_its_own_client, |kind: Kind| {
    let server = Server::start(kind);
    // One connection per pool: every client shares it.
    let proxy = Proxy::start_with(&server.url(), &[("upstream.connections", "1")]);
    let mut admin = proxy.raw();
    assert_eq!(admin.cmd(&words("CLIENT PAUSE 60000 WRITE")), b"+OK\r\n");
    // A write, a transaction with one, a script and a PUBLISH: each held upstream.
    let mut w = proxy.raw();
    w.send(
        &[
            encode(&words("SET paused:k v")),
            encode(&words("GET paused:k")),
        ]
        .concat(),
    );
    let mut tx = proxy.raw();
    assert_eq!(tx.cmd(&words("MULTI")), b"+OK\r\n");
    assert_eq!(tx.cmd(&words("INCR paused:n")), b"+QUEUED\r\n");
    tx.send(&encode(&words("EXEC")));
    let mut script = proxy.raw();
    script.send(&encode(&[b"EVAL", b"return 1", b"0"]));
    let mut publisher = proxy.raw();
    publisher.send(&encode(&words("PUBLISH paused:ch m")));
    wait_until(Duration::from_secs(10), || blocked(&server) == 4)
        .unwrap_or_else(|| panic!("blocked upstream: {}", blocked(&server)));
    // Reads, and a script that declares it writes nothing, go on meanwhile.
    let mut r = proxy.raw();
    let start = Instant::now();
    assert_eq!(r.cmd(&words("GET paused:k")), b"$-1\r\n");
    assert_eq!(r.cmd(&words("PING")), b"+PONG\r\n");
    assert_eq!(
        r.cmd(&[b"EVAL", b"#!lua flags=no-writes\nreturn 2", b"0"]),
        b":2\r\n"
    );
    assert_eq!(admin.cmd(&words("CLIENT UNPAUSE")), b"+OK\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The held commands run, in their clients' order.
    assert_eq!(w.reply().unwrap(), b"+OK\r\n");
    assert_eq!(w.reply().unwrap(), b"$1\r\nv\r\n");
    assert_eq!(tx.reply().unwrap(), b"*1\r\n:1\r\n");
    assert_eq!(script.reply().unwrap(), b":1\r\n");
    assert_eq!(publisher.reply().unwrap(), b":0\r\n");
    assert_eq!(server.raw().cmd(&words("GET paused:k")), b"$1\r\nv\r\n");
    // Past the pause, writes go on as before.
    assert_eq!(w.cmd(&words("SET after v")), b"+OK\r\n");
    assert_eq!(blocked(&server), 0);
});

both!(a_pause_ends_at_its_timeout, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.connections", "1")]);
    let mut admin = proxy.raw();
    assert_eq!(admin.cmd(&words("CLIENT PAUSE 300 WRITE")), b"+OK\r\n");
    let mut w = proxy.raw();
    let start = Instant::now();
    assert_eq!(w.cmd(&words("SET timed v")), b"+OK\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    // Not held once it has ended.
    let start = Instant::now();
    assert_eq!(w.cmd(&words("SET timed w")), b"+OK\r\n");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
});

both!(
    a_pause_inside_a_transaction_starts_when_exec_runs,
    |kind: Kind| {
        // As in Redis: the transaction's own writes run, later writes are held.
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("upstream.connections", "1")]);
        let mut c = proxy.raw();
        for (cmd, reply) in [
            ("MULTI", &b"+OK\r\n"[..]),
            ("SET in:1 a", b"+QUEUED\r\n"),
            ("CLIENT PAUSE 60000 WRITE", b"+QUEUED\r\n"),
            ("SET in:2 b", b"+QUEUED\r\n"),
            ("EXEC", b"*3\r\n+OK\r\n+OK\r\n+OK\r\n"),
        ] {
            assert_eq!(c.cmd(&words(cmd)), reply, "{cmd}");
        }
        let mut w = proxy.raw();
        w.send(&encode(&words("SET in:3 c")));
        wait_until(Duration::from_secs(10), || blocked(&server) == 1).expect("held upstream");
        assert_eq!(c.cmd(&words("GET in:2")), b"$1\r\nb\r\n");
        assert_eq!(c.cmd(&words("GET in:3")), b"$-1\r\n");
        assert_eq!(c.cmd(&words("CLIENT UNPAUSE")), b"+OK\r\n");
        assert_eq!(w.reply().unwrap(), b"+OK\r\n");
        assert_eq!(server.raw().cmd(&words("GET in:3")), b"$1\r\nc\r\n");
    }
);

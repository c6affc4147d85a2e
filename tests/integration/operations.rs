//! Running respite: upstream URL forms, deadlines, the admin endpoints, limits on clients,
//! draining on shutdown, and the binary's configuration checks.
use crate::both;
use crate::support::{Binary, Kind, Proxy, Raw, Server, encode, metric, signal, wait_until, words};
use std::time::{Duration, Instant};

both!(
    upstream_over_unix_socket_with_password_and_db,
    |kind: Kind| {
        let server = Server::start_with(kind, &["--requirepass", "s3cret"]);
        let url = format!("unix://{}?db=0", server.socket_path().display());
        // No password: the handshake fails and commands get an error naming the upstream and cause
        // (with local-only mode on, the local engine would answer instead).
        let proxy = Proxy::start_with(&url, &[("local_only.enabled", "false")]);
        let r = String::from_utf8(proxy.raw().cmd(&words("GET k"))).unwrap();
        assert!(r.starts_with("-ERR upstream"), "{r}");
        drop(proxy);
        // With the password and a database in a TCP URL, commands land in that database.
        let proxy = Proxy::start(&format!("redis://:s3cret@127.0.0.1:{}/3", server.port));
        let mut p = proxy.raw();
        wait_until(Duration::from_secs(5), || {
            p.cmd(&words("SET k in-db-3")) == b"+OK\r\n"
        })
        .unwrap();
        assert_eq!(p.cmd(&words("SELECT 3")), b"+OK\r\n");
        let mut d = server.raw();
        assert_eq!(d.cmd(&words("AUTH s3cret")), b"+OK\r\n");
        assert_eq!(d.cmd(&words("SELECT 3")), b"+OK\r\n");
        assert_eq!(d.cmd(&words("GET k")), b"$7\r\nin-db-3\r\n");
        // And over the unix socket with the password.
        let proxy = Proxy::start(&format!("unix://{}?db=3", server.socket_path().display()));
        drop(proxy);
    }
);

both!(
    a_frozen_upstream_fails_commands_at_the_deadline,
    |kind: Kind| {
        let server = Server::start(kind);
        // Local-only mode off: this is the deadline alone, not the health probe taking over.
        let proxy = Proxy::start_with(
            &server.url(),
            &[
                ("upstream.command_timeout_ms", "300"),
                ("local_only.enabled", "false"),
            ],
        );
        let mut p = proxy.raw();
        assert_eq!(p.cmd(&words("SET k 1")), b"+OK\r\n");
        server.signal("STOP");
        let start = Instant::now();
        let r = String::from_utf8(p.cmd(&words("GET k"))).unwrap();
        let waited = start.elapsed();
        assert!(
            r.starts_with("-ERR upstream connection lost") && r.contains("no reply within"),
            "{r}"
        );
        assert!(
            waited >= Duration::from_millis(300),
            "failed before the deadline: {waited:?}"
        );
        server.signal("CONT");
        // The late reply reaches no one; the next command gets its own reply.
        wait_until(Duration::from_secs(5), || {
            p.cmd(&words("INCR n")) == b":1\r\n"
        })
        .unwrap();
        assert_eq!(p.cmd(&words("GET k")), b"$1\r\n1\r\n");
    }
);

both!(admin_endpoints_report_state_and_metrics, |kind: Kind| {
    let mut server = Server::start(kind);
    // Local-only mode off: a down upstream makes respite unready (with it on, respite serves and
    // stays ready; see local_only.rs).
    let proxy = Proxy::start_with(
        &server.url(),
        &[
            ("upstream.backoff_max_ms", "100"),
            ("local_only.enabled", "false"),
        ],
    );
    assert_eq!(proxy.admin_get("/healthz").0, 200);
    wait_until(Duration::from_secs(5), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .expect("ready");
    let mut p = proxy.raw();
    let mut pipeline = Vec::new();
    for i in 0..100 {
        pipeline.extend(encode(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
    }
    p.send(&pipeline);
    for _ in 0..100 {
        assert_eq!(p.reply().unwrap(), b"+OK\r\n");
    }
    p.cmd(&words("NOSUCH"));
    p.cmd(&words("GET k0 extra"));
    // Error replies of the upstream's own are relayed and counted on their own series (the
    // registry is shared by the tests running alongside, so only the growth is checked).
    let relayed = metric(&proxy, "respite_upstream_error_replies_total");
    assert!(p.cmd(&words("INCR k0")).starts_with(b"-ERR"));
    assert!(p.cmd(&words("LPUSH k1 x")).starts_with(b"-WRONGTYPE"));
    assert!(metric(&proxy, "respite_upstream_error_replies_total") >= relayed + 2.0);
    assert!(metric(&proxy, "respite_commands_total{command=\"set\"}") >= 100.0);
    assert!(metric(&proxy, "respite_errors_total{kind=\"unknown_command\"}") >= 1.0);
    assert!(metric(&proxy, "respite_errors_total{kind=\"arity\"}") >= 1.0);
    assert!(metric(&proxy, "respite_client_connections") >= 1.0);
    assert!(metric(&proxy, "respite_upstream_batch_commands_count") >= 1.0);
    let (_, stats) = proxy.admin_get("/stats");
    assert!(stats.contains("\"live_connections\":4"), "{stats}");
    assert!(stats.contains("\"state\":\"healthy\""), "{stats}");
    // The upstream goes away: not ready, reconnects counted; back: ready again.
    server.kill();
    wait_until(Duration::from_secs(5), || {
        proxy.admin_get("/readyz") == (503, "upstream down\n".into())
    })
    .expect("not ready");
    assert!(
        metric(
            &proxy,
            "respite_upstream_health_transitions_total{to=\"down\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &proxy,
            "respite_upstream_reconnects_total{protocol=\"resp2\"}"
        ) >= 1.0
    );
    server.restart();
    wait_until(Duration::from_secs(5), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .expect("ready again");
});

both!(clients_over_the_limit_are_refused_clearly, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("listen.max_clients", "3")]);
    let mut held: Vec<Raw> = (0..3).map(|_| proxy.raw()).collect();
    for c in &mut held {
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
    }
    let mut extra = proxy.raw();
    assert_eq!(
        extra.reply().unwrap(),
        b"-ERR max number of clients reached\r\n"
    );
    assert!(extra.closed());
    held.pop();
    // The slot frees when that client's session ends.
    wait_until(Duration::from_secs(5), || {
        let mut c = proxy.raw();
        c.cmd(&words("PING")) == b"+PONG\r\n"
    })
    .expect("a slot freed");
});

both!(shutdown_drains_in_flight_commands, |kind: Kind| {
    let server = Server::start(kind);
    // Local-only mode off: it would fail the frozen commands once the probe gives up on the upstream.
    let mut proxy = Proxy::start_with(
        &server.url(),
        &[
            ("local_only.enabled", "false"),
            ("runtime.shutdown_grace_ms", "30000"),
        ],
    );
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("SET k v")), b"+OK\r\n");
    // An idle client, blocked in its read: the drain must reach it at once, not at the grace's end.
    let mut idle = proxy.raw();
    assert_eq!(idle.cmd(&words("PING")), b"+PONG\r\n");
    server.signal("STOP");
    // The registry is shared with the tests alongside: wait for 50 more than before.
    let incrs = metric(&proxy, "respite_commands_total{command=\"incr\"}");
    p.send(&encode(&[b"INCR", b"n"]).repeat(50));
    wait_until(Duration::from_secs(5), || {
        metric(&proxy, "respite_commands_total{command=\"incr\"}") >= incrs + 50.0
    })
    .unwrap();
    // Drain starts while 50 commands wait on the frozen upstream; once /readyz says so, the
    // upstream resumes and every one of them completes before the connection closes.
    let addr = proxy.addr;
    proxy.begin_shutdown();
    wait_until(Duration::from_secs(5), || {
        proxy.admin_get("/readyz") == (503, "draining\n".into())
    })
    .expect("draining");
    let drain_started = std::time::Instant::now();
    assert!(idle.closed(), "the idle client is closed by the drain");
    assert!(
        drain_started.elapsed() < Duration::from_secs(10),
        "closed by the drain, not the grace"
    );
    server.signal("CONT");
    proxy.shutdown();
    for i in 1..=50 {
        assert_eq!(p.reply().unwrap(), format!(":{i}\r\n").into_bytes());
    }
    assert!(p.closed(), "the connection closes after the drain");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
});

#[test]
fn check_config_accepts_the_shipped_file_and_names_bad_keys() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let ok = Binary::command()
        .args(["--config", shipped, "--check-config"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[upstream]\nurl = \"redis://127.0.0.1:6379\"\n\nmax_inflite = 10\n",
    )
    .unwrap();
    let out = Binary::command()
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("max_inflite") && err.contains("line 4"),
        "{err}"
    );

    std::fs::write(&bad, "[limits]\nmax_bulk_len = 0\n").unwrap();
    let out = Binary::command()
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_bulk_len") && err.contains("line 2"),
        "{err}"
    );

    let out = Binary::command()
        .args(["--check-config", "--upstream", "redis://h:notaport"])
        .env("RESPITE_LIMITS_MAX_ARGS", "12")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream.url") && err.contains("command line"),
        "{err}"
    );
    let out = Binary::command()
        .args(["--check-config"])
        .env("RESPITE_LIMITS_MAX_ARGS", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_args"), "{err}");
}

// The shipped binary itself (its one-thread runtime, its signal handling): it serves, and SIGTERM
// drains it: an idle client is closed at once, a reply owed is delivered, the process exits 0.
both!(the_binary_serves_and_drains_on_sigterm, |kind: Kind| {
    let server = Server::start(kind);
    let mut binary = Binary::start("", &["--upstream", &server.url(), "--log-level", "warn"]);
    let addr = binary.addr;
    let mut c = Raw::connect(addr);
    wait_until(Duration::from_secs(5), || {
        c.cmd(&words("SET k v")) == b"+OK\r\n"
    })
    .expect("forwarding");
    assert_eq!(c.cmd(&words("GET k")), b"$1\r\nv\r\n");
    let mut idle = Raw::connect(addr);
    assert_eq!(idle.cmd(&words("PING")), b"+PONG\r\n");
    // A command owed a reply when the signal comes: the upstream is frozen until after it.
    server.signal("STOP");
    c.send(&encode(&[b"INCR", b"n"]));
    let incr_seen = || {
        let (_, body) = binary.admin_get("/metrics");
        body.lines()
            .any(|l| l.starts_with("respite_commands_total{command=\"incr\"} 1"))
    };
    wait_until(Duration::from_secs(5), incr_seen).expect("the INCR was read");
    signal(binary.pid(), "TERM");
    assert!(idle.closed(), "the idle client is closed by the drain");
    server.signal("CONT");
    assert_eq!(c.reply().unwrap(), b":1\r\n");
    assert!(c.closed());
    let status = binary.child.wait().unwrap();
    assert!(status.success(), "{status}");
});

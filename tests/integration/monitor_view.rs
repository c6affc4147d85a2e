//! What MONITOR shows through respite (issue 21 finding 6, issue 22): none of respite's own
//! traffic (batch markers, health-probe PINGs, pinned resets and handshakes), clients' commands
//! in their own spelling; and for a prefixed tenant only commands whose keys, by the command
//! table's key positions, are all its own — never another tenant's line because a value starts
//! with its prefix, never a keyless command, never a direct client's command.
//!
//! Each scenario ends with a sentinel command and reads the stream up to it: the upstream writes
//! monitor lines in the order it runs commands, so every line of what ran before is seen by then.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, tenants, wait_until, words};
use std::time::Duration;

/// The stream's lines up to and including the first that contains `sentinel`.
fn lines_until(m: &mut Raw, sentinel: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let line = String::from_utf8_lossy(&m.reply().expect("a monitor line")).into_owned();
        let done = line.contains(sentinel);
        out.push(line);
        if done {
            return out;
        }
    }
}

/// The upstream's count of PING calls so far (markers, probes and releases are all PINGs).
fn pings(server: &Server) -> u64 {
    let stats =
        String::from_utf8_lossy(&server.raw().cmd(&words("INFO commandstats"))).into_owned();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

both!(monitor_shows_none_of_respites_own_traffic, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut m = proxy.raw();
    assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
    let before = pings(&server);
    let mut c = proxy.raw();
    // A transaction in lower case, a pinned lease (WATCH … UNWATCH ends with a reset) and
    // pipelined writes (each batch with its marker).
    c.send(b"multi\r\nset tx 1\r\nexec\r\n");
    for _ in 0..3 {
        c.reply().unwrap();
    }
    assert_eq!(c.cmd(&words("WATCH w")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("UNWATCH")), b"+OK\r\n");
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(format!("SET k{i} v\r\n").as_bytes());
    }
    c.send(&batch);
    for _ in 0..20 {
        c.reply().unwrap();
    }
    // Health probes ran meanwhile (each a PING upstream): wait for some beyond the markers.
    wait_until(Duration::from_secs(10), || pings(&server) >= before + 10)
        .expect("respite's own PINGs upstream");
    assert_eq!(c.cmd(&words("SET sentinel 1")), b"+OK\r\n");
    let lines = lines_until(&mut m, "\"sentinel\"");
    for l in &lines {
        for own in ["\"PING\"", "\"RESET\"", "\"HELLO\"", "\"ping\""] {
            assert!(!l.contains(own), "respite's own {own}: {l}");
        }
    }
    let joined = lines.join("");
    for mine in [
        "\"multi\"\r\n",
        "\"set\" \"tx\" \"1\"",
        "\"exec\"\r\n",
        "\"WATCH\" \"w\"",
        "\"SET\" \"k19\" \"v\"",
    ] {
        assert!(joined.contains(mine), "{mine} missing: {joined}");
    }
    assert!(
        !joined.contains("\"MULTI\"") && !joined.contains("\"EXEC\""),
        "{joined}"
    );
});

both!(a_tenants_monitor_shows_its_own_keys_only, |kind: Kind| {
    let server = Server::start(kind);
    let toml = tenants(&[
        TenantToml::new("a", "a:").login("pa").allow(&["@all"]),
        TenantToml::new("b", "b:").login("pb").allow(&["@all"]),
    ]);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut m = proxy.login("a", "pa");
    assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
    // Tenant b, with values (and fields) that start with a's prefix.
    let mut b = proxy.login("b", "pb");
    for cmd in [
        "SET note a:hello",
        "HSET h a:field a:value",
        "MSET x a:1 y a:2",
        "RPUSH l a:item",
        "PUBLISH a:chan a:msg",
        "SET a:k stolen",
    ] {
        let reply = b.cmd(&words(cmd));
        assert!(
            !reply.starts_with(b"-"),
            "{cmd}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A direct client, in a's namespace, and keyless commands.
    let mut d = server.raw();
    for cmd in [
        "SET a:direct v",
        "GET a:mine",
        "PUBLISH a:chan direct",
        "SCRIPT FLUSH",
    ] {
        d.cmd(&words(cmd));
    }
    d.cmd(&[
        b"EVAL",
        b"return redis.call('SET', 'a:byscript', 'v')",
        b"0",
    ]);
    // a's own, then the sentinel.
    let mut a = proxy.login("a", "pa");
    assert_eq!(a.cmd(&words("SET mine a:v")), b"+OK\r\n");
    assert_eq!(a.cmd(&words("PUBLISH mychan m")), b":0\r\n");
    assert_eq!(a.cmd(&words("SET sentinel 1")), b"+OK\r\n");
    let lines = lines_until(&mut m, "\"sentinel\"");
    let shown: Vec<String> = lines
        .iter()
        .map(|l| l.split_once("] ").unwrap().1.trim_end().to_string())
        .collect();
    assert_eq!(
        shown,
        ["\"SET\" \"mine\" \"a:v\"", "\"SET\" \"sentinel\" \"1\""],
        "{lines:?}"
    );
    // The upstream holds what b wrote, where b wrote it: the lines were hidden, not lost.
    assert_eq!(server.raw().cmd(&words("GET b:note")), b"$7\r\na:hello\r\n");
});

both!(a_monitor_is_not_an_idle_client, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("limits.idle_timeout_ms", "300")]);
    let mut m = proxy.raw();
    assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
    // An idle client opened after the monitor is closed: the timeout has passed for the monitor.
    let mut idle = proxy.raw();
    assert_eq!(idle.cmd(&words("PING")), b"+PONG\r\n");
    assert!(idle.closed());
    assert_eq!(proxy.raw().cmd(&words("SET after-idle 1")), b"+OK\r\n");
    lines_until(&mut m, "\"after-idle\"");
});

/// How many of the upstream's connections are monitors (`flags=O`).
fn upstream_monitors(server: &Server) -> usize {
    let list = String::from_utf8_lossy(&server.raw().cmd(&words("CLIENT LIST"))).into_owned();
    list.lines().filter(|l| l.contains(" flags=O ")).count()
}

both!(reset_and_quit_end_monitoring, |kind: Kind| {
    // Redis's other.tcl "RESET clears MONITOR state": RESET's reply follows the lines relayed
    // before it, and the client is an ordinary one again; its monitor connection upstream is
    // gone (judged by the upstream's own client list). QUIT gets +OK, as directly.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut m = proxy.raw();
    assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
    wait_until(Duration::from_secs(5), || upstream_monitors(&server) == 1)
        .expect("a monitor upstream");
    proxy.raw().cmd(&words("SET reset:before 1"));
    m.send(&crate::support::encode(&words("RESET")));
    let lines = lines_until(&mut m, "RESET");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("+RESET\r\n"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("reset:before")),
        "{lines:?}"
    );
    assert_eq!(m.cmd(&words("PING")), b"+PONG\r\n");
    proxy.raw().cmd(&words("SET reset:after 1"));
    assert_eq!(m.cmd(&words("ECHO sentinel")), b"$8\r\nsentinel\r\n");
    wait_until(Duration::from_secs(5), || upstream_monitors(&server) == 0)
        .expect("the monitor connection closed");
    let mut q = proxy.raw();
    assert_eq!(q.cmd(&words("MONITOR")), b"+OK\r\n");
    wait_until(Duration::from_secs(5), || upstream_monitors(&server) == 1)
        .expect("a monitor upstream");
    q.send(&crate::support::encode(&words("QUIT")));
    let lines = lines_until(&mut q, "+OK");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("+OK\r\n"),
        "{lines:?}"
    );
    assert!(q.closed());
    wait_until(Duration::from_secs(5), || upstream_monitors(&server) == 0)
        .expect("the monitor connection closed");
});

/// The addresses (`ip:port`) of the upstream's connections named `name` (respite's, by their
/// client name).
fn addrs_named(server: &Server, name: &str) -> Vec<String> {
    let list = String::from_utf8_lossy(&server.raw().cmd(&words("CLIENT LIST"))).into_owned();
    list.lines()
        .filter(|l| l.contains(&format!(" name={name} ")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .map(str::to_string)
        .collect()
}

both!(
    a_local_port_shared_with_another_upstream_hides_nothing,
    |kind: Kind| {
        // The kernel keeps a TCP connection's four-tuple unique, not its local port: connections to
        // two upstreams (a cluster's nodes; two proxies in one process, as the test suite runs them)
        // can share one local address. A connection of respite's own to another upstream from the
        // same address as a client's pinned connection (listed as the kernel would allow, since it
        // cannot be made to happen on demand) must not hide that client's lines: it did, now and
        // then, in loaded full runs of this suite.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("WATCH w")), b"+OK\r\n");
        let pinned = addrs_named(&server, "respite-pinned");
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        let _elsewhere = respite::upstream::own::Registration::new(
            respite::upstream::own::Key {
                local: pinned[0].clone(),
                upstream: "127.0.0.1:1".into(),
            },
            respite::upstream::own::Role::Own,
        );
        let mut m = proxy.raw();
        assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SET shared-port 1")), b"+OK\r\n");
        assert_eq!(proxy.raw().cmd(&words("SET sentinel 1")), b"+OK\r\n");
        let joined = lines_until(&mut m, "\"sentinel\"").join("");
        assert!(joined.contains("\"SET\" \"shared-port\" \"1\""), "{joined}");
    }
);

both!(
    every_line_reaches_monitors_started_under_load,
    |kind: Kind| {
        // Many MONITOR start / write cycles while other clients write all along: each monitor
        // sees every command acknowledged after its +OK (a fresh client's on the shared
        // connections, a pinned client's, a transaction's), in order per client.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..2)
            .map(|t| {
                let (addr, stop) = (proxy.port(), stop.clone());
                std::thread::spawn(move || {
                    let mut c = Raw::connect(([127, 0, 0, 1], addr).into());
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let mut batch = Vec::new();
                        for _ in 0..16 {
                            batch.extend_from_slice(format!("SET load:{t} {i}\r\n").as_bytes());
                            i += 1;
                        }
                        c.send(&batch);
                        for _ in 0..16 {
                            assert_eq!(c.reply().unwrap(), b"+OK\r\n");
                        }
                    }
                })
            })
            .collect();
        let mut pinned = proxy.raw();
        assert_eq!(pinned.cmd(&words("WATCH w")), b"+OK\r\n");
        for cycle in 0..60 {
            let mut m = proxy.raw();
            assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
            let mut fresh = proxy.raw();
            let fresh_key = format!("fresh:{cycle}");
            assert_eq!(fresh.cmd(&[b"SET", fresh_key.as_bytes(), b"v"]), b"+OK\r\n");
            let pinned_key = format!("pinned:{cycle}");
            assert_eq!(
                pinned.cmd(&[b"SET", pinned_key.as_bytes(), b"v"]),
                b"+OK\r\n"
            );
            let tx_key = format!("tx:{cycle}");
            fresh.send(&crate::support::encode(&words("MULTI")));
            fresh.send(&crate::support::encode(&[b"SET", tx_key.as_bytes(), b"v"]));
            fresh.send(&crate::support::encode(&words("EXEC")));
            for _ in 0..3 {
                fresh.reply().unwrap();
            }
            let sentinel = format!("sentinel:{cycle}");
            assert_eq!(fresh.cmd(&[b"SET", sentinel.as_bytes(), b"v"]), b"+OK\r\n");
            let joined = lines_until(&mut m, &format!("\"{sentinel}\"")).join("");
            for key in [&fresh_key, &pinned_key, &tx_key] {
                assert!(
                    joined.contains(&format!("\"{key}\"")),
                    "cycle {cycle}: {key} missing"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in load {
            t.join().unwrap();
        }
    }
);

/// Whether a reply is a monitor line (`+<seconds>.<micros> [db addr] …`).
fn is_line(reply: &[u8]) -> bool {
    reply.starts_with(b"+") && reply.get(1).is_some_and(u8::is_ascii_digit) && {
        let text = String::from_utf8_lossy(reply);
        text.contains(" [")
    }
}

/// Send `cmd` and read up to its reply, skipping monitor lines.
fn answer(m: &mut Raw, cmd: &[&[u8]]) -> String {
    m.send(&crate::support::encode(cmd));
    loop {
        let r = m.reply().expect("a reply");
        if !is_line(&r) {
            return String::from_utf8_lossy(&r).into_owned();
        }
    }
}

both!(
    a_monitoring_client_is_answered_as_redis_answers_it,
    |kind: Kind| {
        // Redis flags a monitor as a replica: what touches the keyspace is refused (`Replica can't
        // interact with the keyspace`, inside MULTI too, so EXEC aborts), a second MONITOR gets no
        // reply, everything else is answered while the lines go on. The same commands on a direct
        // monitor and on one through respite get the same replies.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let script: &[&[&[u8]]] = &[
            &[b"GET", b"k"],
            &[b"SET", b"k", b"v"],
            &[b"DBSIZE"],
            &[b"PUBLISH", b"ch", b"m"],
            &[b"EVAL", b"return 1", b"0"],
            &[b"FCALL", b"f", b"0"],
            &[b"BLPOP", b"l", b"1"],
            &[b"ECHO", b"hi"],
            &[b"PING"],
            &[b"MULTI"],
            &[b"GET", b"k"],
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"PING"],
            &[b"EXEC"],
            &[b"CLIENT", b"SETNAME", b"mon"],
            &[b"CLIENT", b"GETNAME"],
            &[b"SCRIPT", b"LOAD", b"return 1"],
            &[b"NOSUCHCOMMAND"],
        ];
        let run = |m: &mut Raw| -> Vec<String> {
            assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
            let mut got: Vec<String> = script.iter().map(|c| answer(m, c)).collect();
            // No reply to a second MONITOR: the next reply is the ECHO's.
            m.send(&crate::support::encode(&words("MONITOR")));
            got.push(answer(m, &words("ECHO after-monitor")));
            got.push(answer(m, &words("RESET")));
            got.push(answer(m, &words("GET k")));
            got
        };
        let direct = run(&mut server.raw());
        let through = run(&mut proxy.raw());
        assert_eq!(through, direct);
        assert!(
            direct[0].contains("Replica can't interact with the keyspace"),
            "{direct:?}"
        );
    }
);

both!(reset_follows_every_line_written_before_it, |kind: Kind| {
    // RESET's reply follows the lines of every command acknowledged before it was sent, however
    // the upstream's lines and the client's RESET race (respite ends the monitor with a PING on
    // it and relays up to its reply).
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut w = proxy.raw();
    for round in 0..40 {
        let mut m = proxy.raw();
        assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
        let key = format!("before-reset:{round}");
        assert_eq!(w.cmd(&[b"SET", key.as_bytes(), b"1"]), b"+OK\r\n");
        m.send(&crate::support::encode(&words("RESET")));
        let lines = lines_until(&mut m, "+RESET");
        assert!(
            lines.iter().any(|l| l.contains(&key)),
            "round {round}: {lines:?}"
        );
    }
});

both!(
    a_monitor_that_does_not_read_is_closed_at_its_limit,
    |kind: Kind| {
        // Its lines wait in its outbox, bounded by limits.pubsub_output_bytes like a subscriber's
        // messages; past it the monitor is closed (and other clients go on). The monitor's socket
        // has a small fixed receive buffer (python sets SO_RCVBUF, which the test crate cannot
        // without unsafe), so the kernel holds little of what it does not read and respite's own
        // queue is what fills: 6 MB of lines, past the 4 MiB the sender's buffer grows to.
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("limits.pubsub_output_bytes", "65536")]);
        let script = r#"
import socket, sys, time
port = int(sys.argv[1])
m = socket.socket()
m.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
m.connect(("127.0.0.1", port))
m.sendall(b"MONITOR\r\n")
assert m.recv(5) == b"+OK\r\n"
w = socket.create_connection(("127.0.0.1", port))
value = b"x" * 1000
for batch in range(60):
    out = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1000\r\n%s\r\n" % (len(k), k, value)
                   for k in (b"k%d:%d" % (batch, i) for i in range(100)))
    w.sendall(out)
    got = b""
    while got.count(b"\r\n") < 100:
        got += w.recv(65536)
    assert got == b"+OK\r\n" * 100, got[:100]
m.settimeout(10)
closed = False
try:
    while m.recv(65536):
        pass
    closed = True
except ConnectionResetError:
    closed = True
except socket.timeout:
    pass
w.sendall(b"PING\r\n")
print("closed" if closed else "open", w.recv(100))
"#;
        let out = crate::support::python(&["-c", script, &proxy.port().to_string()]);
        assert_eq!(out.trim(), "closed b'+PONG\\r\\n'");
    }
);

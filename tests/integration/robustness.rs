//! Many clients at once, binary data, hostile input, and the upstream dying under load.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, metric, rss_kib, wait_until, words};
use std::io::Write;
use std::time::{Duration, Instant};

both!(
    two_hundred_clients_pipelining_get_their_own_replies,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let addr = proxy.addr;
        let threads: Vec<_> = (0..200)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut conn = Raw::connect(addr);
                    // 1,000 commands: SET/GET pairs on this client's keys, with a PING (answered by
                    // respite itself) every tenth command, so replies from both paths interleave.
                    let mut pipeline = Vec::new();
                    let mut expect = Vec::new();
                    for j in 0..1000 {
                        let key = format!("k:{c}:{j}");
                        let val = format!("v:{c}:{j}");
                        match j % 10 {
                            9 => {
                                pipeline.extend(encode(&[b"PING", val.as_bytes()]));
                                expect.push(format!("${}\r\n{val}\r\n", val.len()).into_bytes());
                            }
                            n if n % 2 == 0 => {
                                pipeline.extend(encode(&[b"SET", key.as_bytes(), val.as_bytes()]));
                                expect.push(b"+OK\r\n".to_vec());
                            }
                            _ => {
                                let prev = format!("k:{c}:{}", j - 1);
                                let prev_val = format!("v:{c}:{}", j - 1);
                                pipeline.extend(encode(&[b"GET", prev.as_bytes()]));
                                expect.push(
                                    format!("${}\r\n{prev_val}\r\n", prev_val.len()).into_bytes(),
                                );
                            }
                        }
                    }
                    conn.send(&pipeline);
                    for (j, want) in expect.iter().enumerate() {
                        let got = conn.reply().expect("reply");
                        assert_eq!(
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(want),
                            "client {c} command {j}"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
    }
);

both!(binary_keys_and_values_survive_unchanged, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"nul\0key".to_vec(), b"a\0b\0".to_vec()),
        (b"crlf\r\nkey".to_vec(), b"\r\n$3\r\n*1\r\n".to_vec()),
        (b"empty".to_vec(), Vec::new()),
        (b"".to_vec(), b"empty key".to_vec()),
        ((0..=255u8).collect(), (0..=255u8).rev().collect()),
    ];
    for (k, v) in &cases {
        assert_eq!(p.cmd(&[b"SET", k, v]), b"+OK\r\n");
    }
    for (k, v) in &cases {
        let mut want = format!("${}\r\n", v.len()).into_bytes();
        want.extend_from_slice(v);
        want.extend_from_slice(b"\r\n");
        assert_eq!(p.cmd(&[b"GET", k]), want);
        // And the upstream holds exactly those bytes.
        assert_eq!(server.raw().cmd(&[b"GET", k]), want);
    }
    // A 16 MB value, written and read back through the proxy.
    let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(p.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
    let got = p.cmd(&[b"GET", b"big"]);
    let header = format!("${}\r\n", big.len());
    assert_eq!(&got[..header.len()], header.as_bytes());
    assert!(
        got[header.len()..got.len() - 2] == big[..],
        "16 MB value came back changed"
    );
    assert_eq!(p.cmd(&words("STRLEN big")), b":16777216\r\n");
});

both!(a_request_delivered_byte_by_byte_is_framed, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    let mut pipeline = encode(&[b"SET", b"k\r\n", b"v\0"]);
    pipeline.extend(b"PING\r\n");
    pipeline.extend(encode(&[b"GET", b"k\r\n"]));
    for b in &pipeline {
        p.stream.write_all(std::slice::from_ref(b)).unwrap();
        p.stream.flush().unwrap();
    }
    assert_eq!(p.reply().unwrap(), b"+OK\r\n");
    assert_eq!(p.reply().unwrap(), b"+PONG\r\n");
    assert_eq!(p.reply().unwrap(), b"$2\r\nv\0\r\n");
});

both!(framer_limits_are_enforced_and_named, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(
        &server.url(),
        &[
            ("limits.max_args", "10"),
            ("limits.max_bulk_len", "100"),
            ("limits.max_inline_len", "64"),
            ("limits.max_query_buffer", "4096"),
        ],
    );
    let mut p = proxy.raw();
    // Too many arguments: refused by name, skipped, and the connection still works.
    let many: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
        .chain(std::iter::repeat_n(&b"x"[..], 12))
        .collect();
    let r = String::from_utf8(p.cmd(&many)).unwrap();
    assert!(
        r.starts_with("-ERR ") && r.contains("limits.max_args"),
        "{r}"
    );
    assert_eq!(p.cmd(&words("PING")), b"+PONG\r\n");
    // An argument over the bulk limit: the same, and nothing reached the upstream.
    let r = String::from_utf8(p.cmd(&[b"SET", b"big", &[b'x'; 101]])).unwrap();
    assert!(
        r.starts_with("-ERR ") && r.contains("limits.max_bulk_len"),
        "{r}"
    );
    assert_eq!(p.cmd(&words("EXISTS big")), b":0\r\n");
    assert_eq!(p.cmd(&[b"SET", b"ok", &[b'x'; 100]]), b"+OK\r\n");
    // An inline line over its limit cannot be resynchronised: error, then close.
    let mut q = proxy.raw();
    q.send(&[b'a'; 200]);
    let r = String::from_utf8(q.reply().unwrap()).unwrap();
    assert!(
        r.starts_with("-ERR Protocol error: too big inline request"),
        "{r}"
    );
    assert!(q.closed());
    // An unfinished request growing past the query buffer limit: error, then close.
    let mut q = proxy.raw();
    let mut req = b"*10\r\n".to_vec();
    for _ in 0..9 {
        req.extend(b"$100\r\n");
        req.extend([b'y'; 100]);
        req.extend(b"\r\n");
    }
    // 9 complete arguments of 100 bytes fit; the unfinished request is still under 4096 bytes,
    // so nothing happens until more arrives.
    q.send(&req);
    assert_eq!(proxy.raw().cmd(&words("PING")), b"+PONG\r\n");
    // Malformed framing is fatal, with Redis's wording.
    let mut q = proxy.raw();
    q.send(b"*2\r\n$3\r\nGET\r\n:1\r\n");
    let r = String::from_utf8(q.reply().unwrap()).unwrap();
    assert!(
        r.starts_with("-ERR Protocol error: expected '$', got ':'"),
        "{r}"
    );
    assert!(q.closed());
    let mut q = proxy.raw();
    q.send(b"*x\r\n");
    assert!(
        q.reply()
            .unwrap()
            .starts_with(b"-ERR Protocol error: invalid multibulk length")
    );
    assert!(q.closed());
});

both!(
    a_client_that_never_reads_cannot_hurt_others,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        server.raw().cmd(&[b"SET", b"k", &[b'v'; 512]]);
        let before = rss_kib();
        let addr = proxy.addr;
        // Pipeline 4,000,000 GETs of a 512-byte value (88 MB of requests, 2 GB of replies) and
        // never read a reply. respite forwards no more for it once its replies back up, and keeps
        // reading it (it could be a client that reads once it has written everything) until what
        // it holds for it, unread replies and the requests behind them, passes its 32 MiB
        // (limits.max_reply_bytes): then it is closed, and its writes fail or stall.
        let flood = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            let chunk = encode(&[b"GET", b"k"]).repeat(40_000);
            let mut sent = 0usize;
            for _ in 0..100 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                sent += 40_000;
            }
            (s, sent)
        });
        // Meanwhile another client is served promptly, without errors.
        let mut other = proxy.raw();
        let start = Instant::now();
        for i in 0..200 {
            let v = format!("{i}");
            assert_eq!(other.cmd(&[b"SET", b"other", v.as_bytes()]), b"+OK\r\n");
            assert_eq!(
                other.cmd(&words("GET other")),
                format!("${}\r\n{v}\r\n", v.len()).into_bytes()
            );
        }
        let (flooder, sent) = flood.join().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "other client stalled"
        );
        let grown = rss_kib().saturating_sub(before);
        assert!(
            sent < 4_000_000,
            "respite kept reading from a client that never reads, past its limit"
        );
        assert!(
            grown < 256 * 1024,
            "memory grew by {grown} KiB while a client refused to read"
        );
        drop(flooder);
        assert_eq!(other.cmd(&words("PING")), b"+PONG\r\n");
    }
);

both!(upstream_killed_with_commands_in_flight, |kind: Kind| {
    let mut server = Server::start(kind);
    // Local-only mode off: the commands frozen upstream must meet the kill, not the health probe.
    let proxy = Proxy::start_with(
        &server.url(),
        &[
            ("upstream.backoff_max_ms", "200"),
            ("local_only.enabled", "false"),
        ],
    );
    let addr = proxy.addr;
    // 10 clients, each with its own counter: 100 INCRs answered, then 1,000 more sent while the
    // upstream is frozen (SIGSTOP), so 10,000 commands are in flight when it is killed.
    let mut clients: Vec<_> = (0..10).map(|_| Raw::connect(addr)).collect();
    for (c, conn) in clients.iter_mut().enumerate() {
        let key = format!("counter:{c}");
        conn.send(&encode(&[b"INCR", key.as_bytes()]).repeat(100));
    }
    for conn in clients.iter_mut() {
        for j in 1..=100 {
            assert_eq!(conn.reply().unwrap(), format!(":{j}\r\n").into_bytes());
        }
    }
    server.signal("STOP");
    // The registry is shared with the tests alongside: wait for 10,000 more than before.
    let incrs = metric(&proxy, "respite_commands_total{command=\"incr\"}");
    for (c, conn) in clients.iter_mut().enumerate() {
        let key = format!("counter:{c}");
        conn.send(&encode(&[b"INCR", key.as_bytes()]).repeat(1000));
    }
    wait_until(Duration::from_secs(10), || {
        metric(&proxy, "respite_commands_total{command=\"incr\"}") >= incrs + 10_000.0
    })
    .expect("respite dispatched every INCR");
    server.kill();
    for (c, conn) in clients.iter_mut().enumerate() {
        for j in 0..1000 {
            let r = conn
                .reply()
                .unwrap_or_else(|| panic!("client {c}: connection closed at {j}"));
            let e = String::from_utf8_lossy(&r);
            // Never another client's reply, never a hang: each gets an error naming the cause.
            assert!(
                e.starts_with("-ERR upstream"),
                "client {c} command {j}: {e}"
            );
        }
    }
    // The upstream comes back (empty): new commands succeed without restarting respite.
    server.restart();
    let mut p = proxy.raw();
    wait_until(Duration::from_secs(10), || {
        p.cmd(&words("INCR after")) == b":1\r\n"
    })
    .expect("respite reconnected to the restarted upstream");
});

both!(
    a_pipeline_cut_short_gets_errors_never_unconfirmed_replies,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("upstream.command_timeout_ms", "300")]);
        let mut p = proxy.raw();
        assert_eq!(p.cmd(&words("SET a 1")), b"+OK\r\n");
        // Writes pause on the upstream: in one read, one upstream job, two reads are answered, the
        // write behind them stalls past the deadline, and two more wait behind it. The batch's
        // marker never comes back, so nothing confirms the two replies that did: every command
        // of the batch gets the indeterminate error (see `upstream::conn`'s invariants).
        let mut d = server.raw();
        assert_eq!(d.cmd(&words("CLIENT PAUSE 5000 WRITE")), b"+OK\r\n");
        let mut pipeline = encode(&[b"GET", b"a"]);
        pipeline.extend(encode(&[b"STRLEN", b"a"]));
        pipeline.extend(encode(&[b"SET", b"b", b"2"]));
        pipeline.extend(encode(&[b"INCR", b"n"]));
        pipeline.extend(encode(&[b"GET", b"a"]));
        p.send(&pipeline);
        for i in 0..5 {
            let r = String::from_utf8(p.reply().unwrap()).unwrap();
            assert!(
                r.starts_with("-ERR upstream connection lost") && r.contains("no reply within"),
                "{i}: {r}"
            );
        }
        assert_eq!(d.cmd(&words("CLIENT UNPAUSE")), b"+OK\r\n");
        // The same client carries on over a fresh upstream connection.
        wait_until(Duration::from_secs(10), || {
            p.cmd(&words("GET a")) == b"$1\r\n1\r\n"
        })
        .unwrap();
    }
);

both!(
    a_client_that_leaves_large_replies_unread_is_closed,
    |kind: Kind| {
        // limits.max_reply_bytes bounds what one client may leave unread: 64 pipelined GETs of a
        // 4 MB value, never read, would hold 256 MB in respite; past 16 MB they are replaced by an
        // error naming the limit and the client is closed. Others never notice.
        let server = Server::start(kind);
        let proxy = Proxy::start_with(&server.url(), &[("limits.max_reply_bytes", "16777216")]);
        let value = vec![b'v'; 4 << 20];
        server.raw().cmd(&[b"SET", b"big", &value]);
        // Within the limit, a pipeline sent whole and read afterwards is served.
        let mut fine = proxy.raw();
        let mut batch = Vec::new();
        for _ in 0..3 {
            batch.extend(encode(&words("GET big")));
        }
        fine.send(&batch);
        for _ in 0..3 {
            assert_eq!(fine.reply().unwrap().len(), value.len() + 12);
        }
        let mut hog = proxy.raw();
        let mut batch = Vec::new();
        for _ in 0..64 {
            batch.extend(encode(&words("GET big")));
        }
        hog.send(&batch);
        // Meanwhile, another client is served at once.
        let mut other = proxy.raw();
        for i in 0..20 {
            let v = format!("v{i}");
            assert_eq!(other.cmd(&[b"SET", b"k", v.as_bytes()]), b"+OK\r\n");
            assert_eq!(
                other.cmd(&words("GET k")),
                format!("${}\r\n{v}\r\n", v.len()).into_bytes()
            );
        }
        // The hog gets what fitted, then errors naming the limit, then the end of the stream.
        let (mut values, mut errors) = (0, 0);
        while let Some(r) = hog.reply() {
            if r.starts_with(b"-") {
                let e = String::from_utf8_lossy(&r).into_owned();
                assert!(e.contains("limits.max_reply_bytes"), "{e}");
                errors += 1;
            } else {
                assert_eq!(r.len(), value.len() + 12);
                values += 1;
            }
        }
        assert!(errors >= 1, "{values} values, {errors} errors");
        assert!(values + errors <= 64);
        assert!(values < 64, "the client was closed before all 64 values");
        assert_eq!(other.cmd(&words("PING")), b"+PONG\r\n");
    }
);

//! Slow and deep: a runaway script neither stalls other clients nor escapes SCRIPT KILL, and a
//! reply nested far deeper than any limit respite used to have comes back intact, while other
//! clients on the same shared connection carry on. Judged by the upstream's own state (its
//! client list, its replies to the same script sent directly).
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, wait_until};
use std::time::{Duration, Instant};

/// The upstream's connections named `name`, by client id.
fn upstream_clients(server: &Server, name: &str) -> Vec<String> {
    let list = server.raw().cmd(&[b"CLIENT", b"LIST"]);
    let mut ids: Vec<String> = String::from_utf8_lossy(&list)
        .lines()
        .filter(|l| l.contains(&format!(" name={name} ")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

both!(runaway_script_is_killed_through_respite, |kind: Kind| {
    let server = Server::start(kind);
    // The server starts answering -BUSY 100 ms into a script (5 s by default), well inside
    // respite's command deadline and the health probe's.
    let set = server
        .raw()
        .cmd(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"100"]);
    assert_eq!(set, b"+OK\r\n");
    // One shared connection per protocol: every client here shares it.
    let proxy = Proxy::start_with(&server.url(), &[("upstream.connections", "1")]);
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let shared = upstream_clients(&server, "respite");
    assert_eq!(shared.len(), 2, "one connection per protocol");

    let mut runner = proxy.raw();
    runner.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
    // Another client, on the same shared connection, gets the server's own -BUSY while the
    // script runs: its command reached the server instead of queueing behind the script.
    let mut busy = None;
    wait_until(Duration::from_secs(10), || {
        let reply = other.cmd(&[b"GET", b"k"]);
        if reply.starts_with(b"-BUSY") {
            busy = Some(reply);
            true
        } else {
            assert_eq!(reply, b"$1\r\nv\r\n", "before the script runs");
            false
        }
    })
    .expect("a -BUSY reply while the script runs");
    let busy = String::from_utf8(busy.unwrap()).unwrap();
    assert!(busy.contains("SCRIPT KILL"), "{busy}");

    let mut killer = proxy.raw();
    let start = Instant::now();
    let killed = killer.cmd(&[b"SCRIPT", b"KILL"]);
    assert_eq!(killed, b"+OK\r\n");
    let script = runner.reply().expect("the script's reply");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "SCRIPT KILL took {took:?}");
    let script = String::from_utf8_lossy(&script);
    assert!(
        script.starts_with('-') && script.contains("killed"),
        "{script}"
    );

    // The shared connection survived: the same upstream connections, answering as before.
    assert_eq!(other.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(runner.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(upstream_clients(&server, "respite"), shared);

    // The same for a function, ended by FUNCTION KILL.
    let lib = b"#!lua name=spin\nredis.register_function{function_name='spin', \
        callback=function() while true do end end, flags={'no-writes'}}";
    assert_eq!(runner.cmd(&[b"FUNCTION", b"LOAD", lib]), b"$4\r\nspin\r\n");
    runner.send(&encode(&[b"FCALL", b"spin", b"0"]));
    wait_until(Duration::from_secs(10), || {
        let reply = other.cmd(&[b"GET", b"k"]);
        reply.starts_with(b"-BUSY") || {
            assert_eq!(reply, b"$1\r\nv\r\n");
            false
        }
    })
    .expect("a -BUSY reply while the function runs");
    let start = Instant::now();
    assert_eq!(killer.cmd(&[b"FUNCTION", b"KILL"]), b"+OK\r\n");
    let spun = String::from_utf8_lossy(&runner.reply().unwrap()).into_owned();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(spun.starts_with('-') && spun.contains("killed"), "{spun}");
    assert_eq!(other.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(upstream_clients(&server, "respite"), shared);
});

both!(
    script_kill_with_nothing_running_is_the_servers_answer,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let direct = server.raw().cmd(&[b"SCRIPT", b"KILL"]);
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&[b"SCRIPT", b"KILL"]), direct);
        // Pipelined around it, the client's other commands keep their order.
        c.send(
            &[
                encode(&[b"SET", b"a", b"1"]),
                encode(&[b"SCRIPT", b"KILL"]),
                encode(&[b"EVAL", b"return redis.call('get','a')", b"0"]),
                encode(&[b"GET", b"a"]),
            ]
            .concat(),
        );
        assert_eq!(c.reply().unwrap(), b"+OK\r\n");
        assert_eq!(c.reply().unwrap(), direct);
        assert_eq!(c.reply().unwrap(), b"$1\r\n1\r\n");
        assert_eq!(c.reply().unwrap(), b"$1\r\n1\r\n");
    }
);

/// A script returning a table nested `depth + 1` deep (the innermost holds "x").
fn nested_script(depth: usize) -> Vec<u8> {
    format!(
        "local t = {{}} local c = t for i = 1, {depth} do local n = {{}} c[1] = n c = n end \
         c[1] = 'x' return t"
    )
    .into_bytes()
}

both!(deep_replies_are_relayed_intact, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.connections", "1")]);
    let addr = proxy.addr;
    // Another client on the same shared connection the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Raw::connect(addr);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = n.to_string();
                assert_eq!(c.cmd(&[b"SET", b"other", v.as_bytes()]), b"+OK\r\n");
                let got = c.cmd(&[b"GET", b"other"]);
                assert_eq!(got, format!("${}\r\n{v}\r\n", v.len()).into_bytes());
                n += 1;
            }
            n
        })
    };
    for depth in [600, 1_000, 5_000] {
        let script = nested_script(depth);
        // What the script returns, in either protocol; the same bytes the server sends directly.
        let mut want = b"*1\r\n".repeat(depth + 1);
        want.extend_from_slice(b"$1\r\nx\r\n");
        for hello in [&b"2"[..], b"3"] {
            for port in [server.port, proxy.addr.port()] {
                let mut raw = Raw::connect(([127, 0, 0, 1], port).into());
                raw.send(
                    &[
                        encode(&[b"HELLO", hello]),
                        encode(&[b"EVAL", &script, b"0"]),
                        encode(&[b"PING"]),
                    ]
                    .concat(),
                );
                // The HELLO reply is a map (RESP3) or an array (RESP2) the oracle can read.
                raw.reply().expect("HELLO's reply");
                let mut got = vec![0; want.len() + b"+PONG\r\n".len()];
                raw.read_exact_raw(&mut got);
                assert!(
                    got[..want.len()] == want[..] && got[want.len()..] == b"+PONG\r\n"[..],
                    "depth {depth}, RESP{}, port {port}: not the script's reply",
                    hello[0] as char
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = busy.join().expect("the other client was never failed");
    assert!(rounds > 0);
});

both!(
    a_script_longer_than_the_command_deadline_gets_its_reply,
    |kind: Kind| {
        let server = Server::start(kind);
        let set = server
            .raw()
            .cmd(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"100"]);
        assert_eq!(set, b"+OK\r\n");
        // A 500 ms deadline, and a script that runs for 1.5 s: the script's own lane has no
        // deadline while the server answers, and the shared lane's commands get -BUSY meanwhile.
        let proxy = Proxy::start_with(
            &server.url(),
            &[
                ("upstream.connections", "1"),
                ("upstream.command_timeout_ms", "500"),
            ],
        );
        let mut runner = proxy.raw();
        let mut other = proxy.raw();
        assert_eq!(other.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        let shared = upstream_clients(&server, "respite");
        let script = b"local t = redis.call('TIME') \
        local start = t[1] * 1000000 + t[2] local now = start \
        while now - start < 1500000 do t = redis.call('TIME') now = t[1] * 1000000 + t[2] end \
        return 'done'";
        runner.send(&encode(&[b"EVAL", script, b"0"]));
        wait_until(Duration::from_secs(10), || {
            let reply = other.cmd(&[b"GET", b"k"]);
            reply.starts_with(b"-BUSY") || {
                assert_eq!(reply, b"$1\r\nv\r\n");
                false
            }
        })
        .expect("a -BUSY reply while the script runs");
        assert_eq!(runner.reply().unwrap(), b"$4\r\ndone\r\n");
        assert_eq!(other.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
        assert_eq!(upstream_clients(&server, "respite"), shared);
    }
);

both!(
    a_tenant_trusted_with_scripts_kills_its_runaway_script,
    |kind: Kind| {
        let server = Server::start(kind);
        let set = server
            .raw()
            .cmd(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"100"]);
        assert_eq!(set, b"+OK\r\n");
        // The tenants of upstream_commands.rs: `app` trusted with scripts, `plain` not.
        let toml = crate::upstream_commands::tenant_config();
        let proxy =
            Proxy::start_with_config(&server.url(), &toml, &[("upstream.connections", "1")]);
        let mut runner = proxy.login("app", "pw");
        let mut plain = proxy.login("plain", "pw");
        // Without scripts, SCRIPT KILL is refused like EVAL (it would end anyone's script).
        let refused = String::from_utf8(plain.cmd(&[b"SCRIPT", b"KILL"])).unwrap();
        assert!(refused.contains("scripts"), "{refused}");
        runner.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
        wait_until(Duration::from_secs(10), || {
            let reply = plain.cmd(&[b"SET", b"k", b"v"]);
            reply.starts_with(b"-BUSY") || {
                assert_eq!(reply, b"+OK\r\n");
                false
            }
        })
        .expect("a -BUSY reply while the script runs");
        let mut killer = proxy.login("app", "pw");
        let start = Instant::now();
        assert_eq!(killer.cmd(&[b"SCRIPT", b"KILL"]), b"+OK\r\n");
        let script = String::from_utf8_lossy(&runner.reply().unwrap()).into_owned();
        let took = start.elapsed();
        eprintln!("SCRIPT KILL through respite to the script's reply: {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(script.contains("killed"), "{script}");
        assert_eq!(plain.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        assert_eq!(server.raw().cmd(&[b"GET", b"plain:k"]), b"$1\r\nv\r\n");
    }
);

//! A busy upstream, as its clients see it through respite (issue 21, findings 1 and 2): while a
//! script runs, new upstream connections still open (waiting, as a direct client waits, while the
//! server answers nobody), SCRIPT KILL and FUNCTION KILL reach it on a connection made ready
//! before they are needed, and every client gets the server's own `-BUSY` — for PING too, and
//! for each command queued inside MULTI, so EXEC aborts — never respite's "unavailable". Judged
//! by the upstream's own state (its client list, its keys) and by its own replies.
use crate::both;
use crate::busy_not_down::health;
use crate::support::{Kind, Proxy, Raw, Server, encode, text, wait_until};
use std::time::{Duration, Instant};

fn threshold(server: &Server, ms: &str) {
    let set = server
        .raw()
        .cmd(&[b"CONFIG", b"SET", b"busy-reply-threshold", ms.as_bytes()]);
    assert_eq!(set, b"+OK\r\n");
}

/// How many of the upstream's connections are named `name`.
fn named(server: &Server, name: &str) -> usize {
    let list = server.raw().cmd(&[b"CLIENT", b"LIST"]);
    String::from_utf8_lossy(&list)
        .lines()
        .filter(|l| l.contains(&format!(" name={name} ")))
        .count()
}

/// Wait until `client`'s GET through respite is answered `-BUSY` by the upstream.
fn wait_busy(client: &mut Raw) {
    wait_until(Duration::from_secs(10), || {
        client.cmd(&[b"GET", b"busy:probe"]).starts_with(b"-BUSY")
    })
    .expect("the upstream answers -BUSY while the script runs");
}

const SPIN_LIB: &[u8] = b"#!lua name=spin\nredis.register_function{function_name='spin', \
    callback=function() while true do end end, flags={'no-writes'}}";

/// Start a read-only endless script (`fcall`: the function instead) on `runner`, and end it
/// 300 ms later through respite with SCRIPT KILL (FUNCTION KILL), from a client connected
/// only then: its kill must be `+OK` and the script's reply the server's "killed" error.
fn kill_through_respite(proxy: &Proxy, runner: &mut Raw, fcall: bool) -> Duration {
    let (start, kill): (Vec<u8>, &[&[u8]]) = if fcall {
        (encode(&[b"FCALL", b"spin", b"0"]), &[b"FUNCTION", b"KILL"])
    } else {
        (
            encode(&[b"EVAL", b"while true do end", b"0"]),
            &[b"SCRIPT", b"KILL"],
        )
    };
    runner.send(&start);
    std::thread::sleep(Duration::from_millis(300));
    let mut killer = proxy.raw();
    let began = Instant::now();
    let killed = killer.cmd(kill);
    let took = began.elapsed();
    assert_eq!(text(&killed), "+OK\r\n", "{kill:?} through respite");
    let reply = text(runner.reply().expect("the script's reply"));
    assert!(
        reply.starts_with('-') && reply.contains("killed"),
        "{reply}"
    );
    took
}

both!(
    kills_reach_a_server_that_answers_nobody_yet,
    |kind: Kind| {
        let server = Server::start(kind);
        // For its first 1.5 s a script holds the server silent: no reply, and no HELLO of a new
        // connection answered (one opened only then would miss respite's 1 s connect deadline).
        threshold(&server, "1500");
        let proxy = Proxy::start(&server.url());
        let mut runner = proxy.raw();
        // The first command that may keep the server busy makes the out-of-band connection ready.
        assert_eq!(runner.cmd(&[b"EVAL", b"return 1", b"0"]), b":1\r\n");
        wait_until(Duration::from_secs(5), || {
            named(&server, "respite-admin") == 1
        })
        .expect("an out-of-band connection ready before it is needed");
        assert_eq!(
            text(runner.cmd(&[b"FUNCTION", b"LOAD", SPIN_LIB])),
            "$4\r\nspin\r\n"
        );
        let (_, transitions) = health(&proxy);
        for fcall in [false, true] {
            let took = kill_through_respite(&proxy, &mut runner, fcall);
            // Answered once the server looks at its clients again: at its threshold, not later.
            assert!(took < Duration::from_secs(5), "the kill took {took:?}");
            // Used once, and another made ready for the next.
            wait_until(Duration::from_secs(5), || {
                named(&server, "respite-admin") == 1
            })
            .expect("the next out-of-band connection ready");
        }
        // The same on a script run on a pinned connection (another database), where the client
        // running it connected during nothing special: the kill does not depend on the lane.
        assert_eq!(runner.cmd(&[b"SELECT", b"1"]), b"+OK\r\n");
        kill_through_respite(&proxy, &mut runner, false);
        assert_eq!(runner.cmd(&[b"PING"]), b"+PONG\r\n");
        // Three spells of 1.8 s of silence: busy, never down.
        assert_eq!(health(&proxy), ("healthy".to_string(), transitions));
    }
);

both!(
    a_silent_server_is_waited_for_by_new_connections,
    |kind: Kind| {
        let server = Server::start(kind);
        threshold(&server, "1500");
        let proxy = Proxy::start(&server.url());
        let mut runner = proxy.raw();
        runner.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
        std::thread::sleep(Duration::from_millis(300));
        // A new client whose commands need connections of their own (another database, a blocking
        // command), opened while the server answers nobody: they wait for it, as a direct client
        // would, and get its own -BUSY once it answers.
        let mut selecting = proxy.raw();
        let mut blocking = proxy.raw();
        selecting.send(&encode(&[b"SELECT", b"2"]));
        blocking.send(&encode(&[b"BLPOP", b"busy:list", b"1"]));
        let reply = text(blocking.reply().expect("a reply"));
        assert!(reply.starts_with("-BUSY"), "{reply}");
        // Valkey 9 runs SELECT while busy; Redis 7 refuses it.
        let reply = text(selecting.reply().expect("a reply"));
        match kind {
            Kind::Redis => assert!(reply.starts_with("-BUSY"), "{reply}"),
            Kind::Valkey => assert_eq!(reply, "+OK\r\n"),
        }
        assert_eq!(text(proxy.raw().cmd(&[b"SCRIPT", b"KILL"])), "+OK\r\n");
        assert!(text(runner.reply().unwrap()).contains("killed"));
        assert_eq!(selecting.cmd(&[b"SELECT", b"2"]), b"+OK\r\n");
        assert_eq!(blocking.cmd(&[b"RPUSH", b"busy:list", b"a"]), b":1\r\n");
    }
);

both!(
    clients_get_the_servers_own_busy_for_everything,
    |kind: Kind| {
        let server = Server::start(kind);
        threshold(&server, "100");
        let proxy = Proxy::start(&server.url());
        let mut runner = proxy.raw();
        runner.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
        let mut watcher = proxy.raw();
        wait_busy(&mut watcher);
        // A client that connects now: its commands, PING included, get the server's -BUSY (and
        // what the server allows while busy, the server's answer: Valkey 9 runs SELECT).
        let mut fresh = proxy.raw();
        let mut direct = server.raw();
        for cmd in [
            &[&b"PING"[..]][..],
            &[b"GET", b"busy:k"],
            &[b"SET", b"busy:k", b"1"],
            &[b"BLPOP", b"busy:list", b"1"],
            &[b"SELECT", b"3"],
        ] {
            let reply = text(fresh.cmd(cmd));
            let want = text(direct.cmd(cmd));
            assert_eq!(reply, want, "{cmd:?}");
            if cmd[0] != b"SELECT" {
                assert!(reply.starts_with("-BUSY"), "{cmd:?}: {reply}");
            }
        }
        // Inside MULTI each queued command gets -BUSY, and EXEC aborts: nothing of it runs.
        let mut tx = proxy.raw();
        assert_eq!(tx.cmd(&[b"MULTI"]), b"+OK\r\n");
        let queued = text(tx.cmd(&[b"SET", b"busy:tx", b"1"]));
        assert!(queued.starts_with("-BUSY"), "{queued}");
        assert_eq!(text(proxy.raw().cmd(&[b"SCRIPT", b"KILL"])), "+OK\r\n");
        assert!(text(runner.reply().unwrap()).contains("killed"));
        let exec = text(tx.cmd(&[b"EXEC"]));
        assert!(exec.starts_with("-EXECABORT"), "{exec}");
        assert_eq!(server.raw().cmd(&[b"EXISTS", b"busy:tx"]), b":0\r\n");
        assert_eq!(server.raw().cmd(&[b"EXISTS", b"busy:k"]), b":0\r\n");
        // Once the script is gone, PING is the server's PONG again, and MULTI queues.
        assert_eq!(fresh.cmd(&[b"PING"]), b"+PONG\r\n");
        assert_eq!(tx.cmd(&[b"MULTI"]), b"+OK\r\n");
        assert_eq!(tx.cmd(&[b"SET", b"busy:tx", b"1"]), b"+QUEUED\r\n");
        assert_eq!(tx.cmd(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    }
);

both!(
    a_transaction_meets_a_script_past_its_limit_before_any_probe_does,
    |kind: Kind| {
        // Redis's multi.tcl "MULTI and script timeout" and "EXEC and script timeout": the script
        // passes its 10 ms limit long before respite's own probe could see it (here never: one
        // probe a minute), yet a command queued then gets the server's -BUSY, and EXEC sent
        // while busy aborts naming it, as a direct client sees. Nothing of it runs.
        let server = Server::start(kind);
        threshold(&server, "10");
        let proxy = Proxy::start_with(
            &server.url(),
            &[
                ("health.probe_interval_ms", "60000"),
                ("health.probe_timeout_ms", "120000"),
                ("health.busy_grace_ms", "120000"),
            ],
        );
        let mut runner = proxy.raw();
        assert_eq!(runner.cmd(&[b"SET", b"busy:xx", b"1"]), b"+OK\r\n");
        let mut tx = proxy.raw();
        let mut direct_tx = server.raw();
        for c in [&mut tx, &mut direct_tx] {
            assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
            assert_eq!(c.cmd(&[b"INCR", b"busy:xx"]), b"+QUEUED\r\n");
        }
        runner.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
        std::thread::sleep(Duration::from_millis(200));
        let mut queued = Vec::new();
        for c in [&mut tx, &mut direct_tx] {
            queued.push(text(c.cmd(&[b"INCR", b"busy:xx"])));
        }
        assert!(queued[1].starts_with("-BUSY"), "direct: {}", queued[1]);
        assert_eq!(queued[0], queued[1], "a command queued while busy");
        let mut exec = Vec::new();
        for c in [&mut tx, &mut direct_tx] {
            exec.push(text(c.cmd(&[b"EXEC"])));
        }
        assert!(
            exec[1].starts_with("-EXECABORT Transaction discarded because of: BUSY"),
            "direct: {}",
            exec[1]
        );
        assert_eq!(exec[0], exec[1], "EXEC while busy");
        // A transaction begun while busy, its command refused, EXEC after the kill: the queueing
        // error aborts it.
        assert_eq!(tx.cmd(&[b"MULTI"]), b"+OK\r\n");
        let refused = text(tx.cmd(&[b"INCR", b"busy:xx"]));
        assert!(refused.starts_with("-BUSY"), "{refused}");
        assert_eq!(text(proxy.raw().cmd(&[b"SCRIPT", b"KILL"])), "+OK\r\n");
        assert!(text(runner.reply().unwrap()).contains("killed"));
        assert_eq!(tx.cmd(&[b"INCR", b"busy:xx"]), b"+QUEUED\r\n");
        assert_eq!(
            text(tx.cmd(&[b"EXEC"])),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(server.raw().cmd(&[b"GET", b"busy:xx"]), b"$1\r\n1\r\n");
        assert_eq!(tx.cmd(&[b"PING", b"asdf"]), b"$4\r\nasdf\r\n");
    }
);

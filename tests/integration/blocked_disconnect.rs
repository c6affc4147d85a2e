//! A client that goes away while blocked loses nothing, however it pipelined: with commands
//! queued behind its blocking command (respite is then waiting on that command's reply, not
//! reading the client), several blocking commands in a row, a pipeline long enough to fill its
//! reply queue, or while holding other state on the connection. Judged by the upstream's own
//! state: once the client is gone the upstream no longer blocks for it, and every element
//! pushed afterwards is still in the list.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, text, wait_until, words};
use std::time::Duration;

/// Send `setup` and read its replies, pipeline `pipeline` without reading, wait until the
/// upstream blocks for it, drop the client, and check that the upstream stops blocking and
/// nothing pushed afterwards is popped for the client that left.
fn leaves_while_blocked(server: &Server, proxy: &Proxy, setup: &[&str], pipeline: &[u8]) {
    let mut c = proxy.raw();
    for line in setup {
        let r = text(c.cmd(&words(line)));
        assert!(!r.starts_with('-'), "{line}: {r}");
    }
    c.send(pipeline);
    wait_until(Duration::from_secs(5), || server.blocked_clients() >= 1).expect("blocked upstream");
    drop(c);
    wait_until(Duration::from_secs(5), || server.blocked_clients() == 0)
        .expect("the upstream stops blocking for a client that is gone");
    let mut producer = proxy.raw();
    for j in ["j1", "j2", "j3"] {
        assert!(
            producer
                .cmd(&[b"RPUSH", b"q", j.as_bytes()])
                .starts_with(b":")
        );
    }
    assert_eq!(
        producer.cmd(&words("GET after")),
        b"$-1\r\n",
        "nothing ran after it"
    );
    // Every element pushed is still there: none was popped for the client that left.
    assert_eq!(server.raw().cmd(&words("LLEN q")), b":3\r\n");
    server.raw().cmd(&words("DEL q"));
}

fn pipeline(lines: &[&str]) -> Vec<u8> {
    lines.iter().flat_map(|l| encode(&words(l))).collect()
}

both!(
    a_client_gone_with_commands_behind_its_blpop_loses_nothing,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        // A command behind it, and a write that must never run (Redis never runs it either).
        leaves_while_blocked(
            &server,
            &proxy,
            &[],
            &pipeline(&["BLPOP q 0", "GET x", "SET after 1"]),
        );
        // Two blocking commands in a row: the second waits for the first's reply.
        leaves_while_blocked(&server, &proxy, &[], &pipeline(&["BLPOP q 0", "BLPOP q 0"]));
        // BLMOVE, then a read.
        leaves_while_blocked(
            &server,
            &proxy,
            &[],
            &pipeline(&["BLMOVE q dst LEFT RIGHT 0", "LLEN dst", "SET after 1"]),
        );
        assert_eq!(server.raw().cmd(&words("LLEN dst")), b":0\r\n");
        // A pipeline past the client's reply queue (limits.max_inflight_per_client = 1024).
        let mut long = pipeline(&["BRPOP q 0"]);
        for _ in 0..3000 {
            long.extend(encode(&words("GET x")));
        }
        long.extend(encode(&words("SET after 1")));
        leaves_while_blocked(&server, &proxy, &[], &long);
        // Holding a WATCH: what follows goes on the same pinned connection; short, and long
        // enough to fill the reply queue behind the blocked reply.
        leaves_while_blocked(
            &server,
            &proxy,
            &["WATCH w"],
            &pipeline(&["BLPOP q 0", "GET x", "SET after 1"]),
        );
        leaves_while_blocked(&server, &proxy, &["WATCH w"], &long);
    }
);

both!(
    an_upstream_user_gone_with_commands_behind_its_blpop_loses_nothing,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        server
            .raw()
            .cmd(&words("ACL SETUSER worker on >pw ~* &* +@all"));
        leaves_while_blocked(
            &server,
            &proxy,
            &["AUTH worker pw"],
            &pipeline(&["BLPOP q 0", "GET x", "SET after 1"]),
        );
        leaves_while_blocked(
            &server,
            &proxy,
            &["AUTH worker pw"],
            &pipeline(&["BLPOP q 0", "SELECT 1", "SET after 1"]),
        );
    }
);

both!(
    a_blocked_client_still_there_gets_its_element,
    |kind: Kind| {
        // The other side of the contract: a client that stays gets what was pushed, and the
        // commands it pipelined behind run in order.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = proxy.raw();
        c.send(&pipeline(&[
            "BLPOP q 0",
            "BLPOP q 0",
            "SET after 1",
            "GET after",
        ]));
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
            .expect("blocked upstream");
        let mut producer: Raw = proxy.raw();
        assert_eq!(producer.cmd(&words("RPUSH q j1 j2")), b":2\r\n");
        assert_eq!(c.reply().unwrap(), b"*2\r\n$1\r\nq\r\n$2\r\nj1\r\n");
        assert_eq!(c.reply().unwrap(), b"*2\r\n$1\r\nq\r\n$2\r\nj2\r\n");
        assert_eq!(c.reply().unwrap(), b"+OK\r\n");
        assert_eq!(c.reply().unwrap(), b"$1\r\n1\r\n");
        assert_eq!(server.raw().cmd(&words("LLEN q")), b":0\r\n");
    }
);

/// Everything `c` reads until the connection closes (a 10 s read timeout fails the test).
fn until_closed(c: &mut Raw) -> Vec<u8> {
    use std::io::Read;
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    c.stream
        .read_to_end(&mut all)
        .expect("closed, not timed out");
    all
}

both!(
    a_client_that_closes_while_blocked_gets_no_invented_replies,
    |kind: Kind| {
        // Finding 11: `BLPOP l 0; SET foo 1; INCR foo` in one write, then the client closes its
        // sending side. The server drops the connection without a word (the SET and INCR never
        // ran); through respite the client sees the same: the replies owed it are never made up as
        // errors, so its library knows to reconnect and send them again.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let pipeline = encode(&words("BLPOP closing:l 0"))
            .into_iter()
            .chain(encode(&words("SET closing:foo 1")))
            .chain(encode(&words("INCR closing:foo")))
            .collect::<Vec<u8>>();
        let mut direct = server.raw();
        direct.send(&pipeline);
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
            .expect("blocked directly");
        direct.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let want = until_closed(&mut direct);
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 0).expect("unblocked");
        let mut c = proxy.raw();
        c.send(&pipeline);
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
            .expect("blocked via respite");
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let got = until_closed(&mut c);
        assert_eq!(
            text(got),
            text(want),
            "what the client read before the close"
        );
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 0).expect("unblocked");
        assert_eq!(server.raw().cmd(&words("EXISTS closing:foo")), b":0\r\n");

        // A pinned connection the upstream closes under a blocked client (CLIENT KILL): directly,
        // the client's connection closes; through respite, the same, after the replies before it.
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("SET closing:k v")), b"+OK\r\n");
        c.send(&encode(&words("BLPOP closing:l 0")));
        wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
            .expect("blocked via respite");
        let killed = server
            .raw()
            .cmd(&words("CLIENT KILL TYPE normal SKIPME yes"));
        assert!(text(killed).starts_with(':'));
        assert_eq!(text(until_closed(&mut c)), "");
    }
);

//! CLIENT UNBLOCK by respite's client ids, and CLIENT NO-TOUCH on a connection of the client's
//! own: the replies are the upstream's own (compared byte for byte with a direct client), and
//! the effects are judged on the upstream (its blocked clients, its lists, its LFU counters).
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, tenants, text, wait_until, words};
use std::time::Duration;

fn id_of(c: &mut Raw) -> String {
    let r = text(c.cmd(&words("CLIENT ID")));
    r.trim_start_matches(':').trim().to_string()
}

/// What a client blocked in `BLPOP q 0` gets when another unblocks it with `reason`, directly
/// on the server or through respite (`unblocker` and `blocked` connect to the same place).
fn unblocked_reply(
    server: &Server,
    mut waiter: Raw,
    mut unblocker: Raw,
    reason: &str,
) -> (Vec<u8>, Vec<u8>) {
    let id = id_of(&mut waiter);
    waiter.send(&crate::support::encode(&words("BLPOP q 0")));
    wait_until(Duration::from_secs(5), || server.blocked_clients() == 1).expect("blocked");
    let answer = unblocker.cmd(&words(&format!("CLIENT UNBLOCK {id} {reason}")));
    let got = waiter.reply().unwrap();
    // The client goes on as usual.
    assert_eq!(waiter.cmd(&words("PING")), b"+PONG\r\n");
    (answer, got)
}

both!(client_unblock_answers_as_the_upstream, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for reason in ["", "TIMEOUT", "ERROR", "error"] {
        let direct = unblocked_reply(&server, server.raw(), server.raw(), reason);
        let proxied = unblocked_reply(&server, proxy.raw(), proxy.raw(), reason);
        assert_eq!(proxied, direct, "reason {reason:?}");
        assert_eq!(proxied.0, b":1\r\n");
        assert_eq!(server.blocked_clients(), 0);
    }
    // Errors and ids that block nothing, as the upstream answers them.
    let mut p = proxy.raw();
    let mut d = server.raw();
    let own = id_of(&mut p);
    for line in [
        "CLIENT UNBLOCK abc".to_string(),
        "CLIENT UNBLOCK 5 FOO".into(),
        "CLIENT UNBLOCK abc FOO".into(),
        "CLIENT UNBLOCK 99999".into(),
        "CLIENT UNBLOCK -1".into(),
        "CLIENT UNBLOCK 0 error".into(),
        format!("CLIENT UNBLOCK {own}"),
    ] {
        assert_eq!(
            text(p.cmd(&words(&line))),
            text(d.cmd(&words(&line))),
            "{line}"
        );
    }
    // A client that is not blocked: :0 (its pinned connection, held for WATCH, is idle).
    let mut watcher = proxy.raw();
    assert_eq!(watcher.cmd(&words("WATCH w")), b"+OK\r\n");
    let id = id_of(&mut watcher);
    assert_eq!(p.cmd(&words(&format!("CLIENT UNBLOCK {id}"))), b":0\r\n");
    // Nothing was popped for anyone: every element pushed now is still there.
    assert_eq!(p.cmd(&words("RPUSH q a")), b":1\r\n");
    assert_eq!(server.raw().cmd(&words("LLEN q")), b":1\r\n");
});

both!(client_unblock_after_the_lease_went_back, |kind: Kind| {
    // A client that was blocked and answered no longer holds that connection, which may now
    // carry another client's BLPOP: an unblock by the first client's id must not reach it.
    let server = Server::start(kind);
    let proxy = Proxy::start_with(&server.url(), &[("upstream.max_pinned", "1")]);
    let mut first = proxy.raw();
    let first_id = id_of(&mut first);
    server.raw().cmd(&words("RPUSH q a"));
    assert!(first.cmd(&words("BLPOP q 0")).starts_with(b"*2"));
    // The one connection is back in the pool, reset (until then a second lease is refused).
    wait_until(Duration::from_secs(5), || {
        text(server.raw().cmd(&words("CLIENT LIST")))
            .lines()
            .any(|l| l.contains("name=respite-pinned") && l.contains("cmd=client|info"))
    })
    .expect("the lease went back");
    let mut second = proxy.raw();
    let second_id = id_of(&mut second);
    second.send(&crate::support::encode(&words("BLPOP q 0")));
    wait_until(Duration::from_secs(5), || server.blocked_clients() == 1).expect("blocked");
    let mut p = proxy.raw();
    assert_eq!(
        p.cmd(&words(&format!("CLIENT UNBLOCK {first_id}"))),
        b":0\r\n"
    );
    assert_eq!(
        server.blocked_clients(),
        1,
        "the second client is still blocked"
    );
    assert_eq!(
        p.cmd(&words(&format!("CLIENT UNBLOCK {second_id}"))),
        b":1\r\n"
    );
    assert_eq!(second.reply().unwrap(), b"*-1\r\n");
});

both!(a_tenant_unblocks_only_its_own_clients, |kind: Kind| {
    let server = Server::start(kind);
    let a = TenantToml::new("a", "a:").login("pa").allow(&["@all"]);
    let b = TenantToml::new("b", "b:").login("pb").allow(&["@all"]);
    let proxy = Proxy::start_with_config(&server.url(), &tenants(&[a, b]), &[]);
    let mut waiter = proxy.login("a", "pa");
    let id = id_of(&mut waiter);
    waiter.send(&crate::support::encode(&words("BLPOP q 0")));
    wait_until(Duration::from_secs(5), || server.blocked_clients() == 1).expect("blocked");
    let mut other = proxy.login("b", "pb");
    assert_eq!(
        other.cmd(&words(&format!("CLIENT UNBLOCK {id} ERROR"))),
        b":0\r\n"
    );
    assert_eq!(
        server.blocked_clients(),
        1,
        "another tenant's client stays blocked"
    );
    let mut same = proxy.login("a", "pa");
    assert_eq!(
        same.cmd(&words(&format!("CLIENT UNBLOCK {id} ERROR"))),
        b":1\r\n"
    );
    assert_eq!(
        waiter.reply().unwrap(),
        b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
});

/// The upstream's LFU counter of `key` (OBJECT FREQ).
fn freq(server: &Server, key: &str) -> i64 {
    text(server.raw().cmd(&words(&format!("OBJECT FREQ {key}"))))
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap()
}

both!(client_no_touch_applies_to_the_client_only, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut d = server.raw();
    let mut p = proxy.raw();
    let direct = text(d.cmd(&words("CLIENT NO-TOUCH ON")));
    let proxied = text(p.cmd(&words("CLIENT NO-TOUCH ON")));
    assert_eq!(proxied, direct, "the upstream's own answer");
    if direct.starts_with('-') {
        // Redis 7.0 has no NO-TOUCH: refused as it refuses it, and nothing stays pinned.
        assert_eq!(
            text(p.cmd(&words("CLIENT NO-TOUCH OFF"))),
            text(d.cmd(&words("CLIENT NO-TOUCH OFF")))
        );
        return;
    }
    d.cmd(&words("CLIENT NO-TOUCH OFF"));
    assert_eq!(
        d.cmd(&words("CONFIG SET maxmemory-policy allkeys-lfu")),
        b"+OK\r\n"
    );
    d.cmd(&words("SET k v"));
    let before = freq(&server, "k");
    for _ in 0..200 {
        assert_eq!(p.cmd(&words("GET k")), b"$1\r\nv\r\n");
    }
    assert_eq!(
        freq(&server, "k"),
        before,
        "a NO-TOUCH client's reads do not count"
    );
    // Other clients' reads, on the shared connections, still count.
    let mut other = proxy.raw();
    for _ in 0..200 {
        other.cmd(&words("GET k"));
    }
    let touched = freq(&server, "k");
    assert!(touched > before, "{touched} > {before}");
    // OFF: the client's reads count again, and its connection went back to the pool.
    assert_eq!(p.cmd(&words("CLIENT NO-TOUCH OFF")), b"+OK\r\n");
    wait_until(Duration::from_secs(5), || {
        text(server.raw().cmd(&words("CLIENT LIST")))
            .lines()
            .filter(|l| l.contains("name=respite-pinned"))
            .all(|l| l.contains("cmd=client|info"))
    })
    .expect("the pinned connection went back, reset");
    assert_eq!(p.cmd(&words("CLIENT NO-TOUCH ON")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("RESET")), b"+RESET\r\n");
    for _ in 0..300 {
        p.cmd(&words("GET k"));
    }
    assert!(freq(&server, "k") > touched, "after RESET its reads count");
});

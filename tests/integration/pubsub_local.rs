//! Pub/Sub within respite: in standalone mode (no upstream) and in local-only mode (upstream
//! down), respite's own clients publish to and subscribe from each other. Standalone transcripts
//! are compared byte for byte with a real redis-server's for the same sequence; tenants keep
//! their namespaces; a subscription made while the upstream is down is carried upstream once it
//! is back.
use crate::pubsub::transcript;
use crate::support::{Kind, Proxy, Server, TenantToml, tenants, wait_until, words};
use std::time::Duration;

const SLACK: Duration = Duration::from_secs(10);

const STEPS: &[(&str, &str, usize)] = &[
    ("sub", "SUBSCRIBE a b a", 3),
    ("sub", "PSUBSCRIBE p* a*", 2),
    ("sub", "SSUBSCRIBE s", 1),
    ("sub", "PING", 1),
    ("pub", "PUBSUB NUMSUB a b zz", 0),
    ("pub", "PUBSUB NUMPAT", 0),
    ("pub", "PUBSUB CHANNELS b*", 0),
    ("pub", "PUBSUB CHANNELS a", 0),
    ("pub", "PUBSUB SHARDCHANNELS", 0),
    ("pub", "PUBSUB SHARDNUMSUB s zz", 0),
    ("pub", "PUBSUB CHANNELS x y", 0),
    // The channel and the pattern a*: two receivers, two frames.
    ("pub", "PUBLISH a m1", 2),
    ("pub", "PUBLISH pa m2", 1),
    ("pub", "SPUBLISH s m3", 1),
    ("pub", "PUBLISH b m4", 1),
    ("pub", "PUBLISH nobody m5", 0),
    ("sub", "UNSUBSCRIBE a", 1),
    ("pub", "PUBLISH a m6", 1),
    ("sub", "UNSUBSCRIBE zz", 1),
    ("sub", "PUNSUBSCRIBE a*", 1),
    ("sub", "PUNSUBSCRIBE", 1),
    ("pub", "PUBSUB NUMPAT", 0),
    ("sub", "SUNSUBSCRIBE", 1),
    ("sub", "SUNSUBSCRIBE", 1),
    ("sub", "UNSUBSCRIBE", 1),
    ("sub", "UNSUBSCRIBE", 1),
    ("pub", "PUBSUB NUMSUB a b", 0),
    ("pub", "PUBLISH b m7", 0),
    ("sub", "PING", 1),
];

#[test]
fn standalone_transcripts_match_redis() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start("none");
    for proto in [2, 3] {
        let direct = transcript(server.raw(), server.raw(), proto, STEPS);
        let through = transcript(proxy.raw(), proxy.raw(), proto, STEPS);
        assert_eq!(through, direct, "RESP{proto}");
    }
    // Subscribed mode refuses PUBLISH with Redis's own text, as in proxy mode.
    let mut sub = proxy.raw();
    sub.cmd(&words("SUBSCRIBE a"));
    assert_eq!(
        String::from_utf8_lossy(&sub.cmd(&words("PUBLISH a x"))),
        "-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    // A subscriber that goes away is forgotten: no receiver is counted for it.
    drop(sub);
    let mut p = proxy.raw();
    wait_until(SLACK, || p.cmd(&words("PUBLISH a x")) == b":0\r\n").expect("subscriber gone");
}

#[test]
fn standalone_tenants_hear_only_their_own_channels() {
    let toml = tenants(&[
        TenantToml::new("alpha", "a:").login("pa").allow(&["@all"]),
        TenantToml::new("beta", "b:").login("pb").allow(&["@all"]),
    ]);
    let proxy = Proxy::start_with_config("none", &toml, &[]);
    let mut a = proxy.login("alpha", "pa");
    let mut b = proxy.login("beta", "pb");
    assert_eq!(
        a.cmd(&words("SUBSCRIBE news")),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        a.cmd(&words("PSUBSCRIBE *")),
        b"*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:2\r\n"
    );
    b.cmd(&words("SUBSCRIBE news"));
    let mut pa = proxy.login("alpha", "pa");
    let mut pb = proxy.login("beta", "pb");
    // Beta's PUBLISH reaches beta's subscriber only: alpha's `*` is confined to alpha.
    assert_eq!(pb.cmd(&words("PUBLISH news for-b")), b":1\r\n");
    assert_eq!(
        b.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nfor-b\r\n"
    );
    assert_eq!(pa.cmd(&words("PUBLISH news for-a")), b":2\r\n");
    assert_eq!(
        a.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nfor-a\r\n"
    );
    assert_eq!(
        a.reply().unwrap(),
        b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$4\r\nnews\r\n$5\r\nfor-a\r\n"
    );
    // Names come back without the prefix and counts stay within the tenant.
    assert_eq!(pa.cmd(&words("PUBSUB CHANNELS")), b"*1\r\n$4\r\nnews\r\n");
    assert_eq!(
        pb.cmd(&words("PUBSUB NUMSUB news")),
        b"*2\r\n$4\r\nnews\r\n:1\r\n"
    );
    // Beta's subscriber got nothing of alpha's: the next frame it reads is its own.
    assert_eq!(pb.cmd(&words("PUBLISH news again")), b":1\r\n");
    assert_eq!(
        b.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nagain\r\n"
    );
}

#[test]
fn standalone_slow_subscriber_is_closed_at_its_limit() {
    let proxy = Proxy::start_with("none", &[("limits.pubsub_output_bytes", "65536")]);
    let mut sub = proxy.raw();
    sub.cmd(&words("SUBSCRIBE flood"));
    let mut p = proxy.raw();
    let payload = vec![b'x'; 64 * 1024];
    // The subscriber reads nothing: past 64 KiB unread (and what the kernel buffers, a few MiB
    // on loopback), it is closed and stops being counted. 2,000 messages are 128 MiB.
    let gone = (0..2000).find(|_| p.cmd(&[b"PUBLISH", b"flood", &payload]) == b":0\r\n");
    assert!(gone.is_some(), "the subscriber was never closed");
    assert!(crate::support::metric(&proxy, "respite_pubsub_slow_subscribers_total") >= 1.0);
}

fn health(proxy: &Proxy) -> String {
    let (_, body) = proxy.admin_get("/stats");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    v["upstream"]["health"]["state"]
        .as_str()
        .expect("state")
        .to_string()
}

#[test]
fn local_only_publish_reaches_local_subscribers_then_upstream_again() {
    let mut server = Server::start(Kind::Redis);
    let proxy = Proxy::start(&server.url());
    wait_until(SLACK, || health(&proxy) == "healthy").expect("healthy");
    let mut before = proxy.raw();
    before.cmd(&words("SUBSCRIBE early"));
    server.kill();
    wait_until(SLACK, || health(&proxy) == "down").expect("local-only");

    // A subscriber made during the outage is confirmed at once, RESP3 too.
    let mut during = proxy.raw();
    during.cmd(&words("HELLO 3"));
    assert_eq!(
        during.cmd(&words("SUBSCRIBE late")),
        b">3\r\n$9\r\nsubscribe\r\n$4\r\nlate\r\n:1\r\n"
    );
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("PUBLISH early e1")), b":1\r\n");
    assert_eq!(
        before.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$5\r\nearly\r\n$2\r\ne1\r\n"
    );
    assert_eq!(p.cmd(&words("PUBLISH late l1")), b":1\r\n");
    assert_eq!(
        during.reply().unwrap(),
        b">3\r\n$7\r\nmessage\r\n$4\r\nlate\r\n$2\r\nl1\r\n"
    );
    assert_eq!(
        p.cmd(&words("PUBSUB NUMSUB early late")),
        b"*4\r\n$5\r\nearly\r\n:1\r\n$4\r\nlate\r\n:1\r\n"
    );

    // Back: both subscriptions are carried upstream, and a message published there by another
    // client reaches them.
    server.restart();
    wait_until(SLACK, || health(&proxy) == "healthy").expect("healthy again");
    let mut upstream = server.raw();
    wait_until(SLACK, || {
        upstream.cmd(&words("PUBSUB NUMSUB early late"))
            == b"*4\r\n$5\r\nearly\r\n:1\r\n$4\r\nlate\r\n:1\r\n"
    })
    .expect("resubscribed upstream");
    assert_eq!(upstream.cmd(&words("PUBLISH late l2")), b":1\r\n");
    assert_eq!(
        during.reply().unwrap(),
        b">3\r\n$7\r\nmessage\r\n$4\r\nlate\r\n$2\r\nl2\r\n"
    );
    assert_eq!(p.cmd(&words("PUBLISH early e2")), b":1\r\n");
    assert_eq!(
        before.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$5\r\nearly\r\n$2\r\ne2\r\n"
    );
}

//! Pub/Sub through respite: confirmations, messages, subscribed mode and counts byte for byte as
//! the upstream sends them directly, RESP3 pushes interleaved with replies, tenants' namespaces
//! judged by what a direct upstream subscriber sees, and unmodified clients (redis-rs, redis-py,
//! redis-cli). The fan-out to 10,000 subscribers and the slow-subscriber limit are in
//! `pubsub_fanout.rs`.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, TenantToml, encode, tenants, words};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run `steps` with a subscriber and a publisher connection: each step is (who, command, how many
/// frames the subscriber then reads). The publisher's replies are read at once. The transcript is
/// everything the subscriber read, step by step, plus the publisher's replies. A `"pub?"` step
/// publishes without recording the count (see its use).
pub(crate) fn transcript(
    mut sub: Raw,
    mut publ: Raw,
    proto: u8,
    steps: &[(&str, &str, usize)],
) -> Vec<String> {
    let mut out = Vec::new();
    if proto == 3 {
        // HELLO's reply names the server; only that it worked is compared.
        let hello = sub.cmd(&words("HELLO 3"));
        out.push(format!("hello ok: {}", hello.starts_with(b"%")));
    }
    for (who, line, frames) in steps {
        if *who == "pub" {
            let r = publ.cmd(&words(line));
            out.push(format!("pub {line} -> {}", String::from_utf8_lossy(&r)));
        } else if *who == "pub?" {
            publ.cmd(&words(line));
        } else {
            sub.send(&encode(&words(line)));
        }
        for _ in 0..*frames {
            let r = sub.reply().expect("a frame");
            out.push(format!("{line} => {}", String::from_utf8_lossy(&r)));
        }
    }
    out
}

const STEPS: &[(&str, &str, usize)] = &[
    ("sub", "SUBSCRIBE a b a", 3),
    ("sub", "PSUBSCRIBE p*", 1),
    ("sub", "SSUBSCRIBE s", 1),
    ("sub", "PING", 1),
    ("sub", "PING hi", 1),
    ("pub", "PUBLISH a m1", 1),
    ("pub", "PUBLISH pa m2", 1),
    ("pub", "SPUBLISH s m3", 1),
    ("pub", "PUBLISH b m4", 1),
    ("sub", "UNSUBSCRIBE a", 1),
    // Not delivered (the next frame read is UNSUBSCRIBE zz's); its count is not compared: respite
    // withdraws its upstream subscription after confirming the last local UNSUBSCRIBE, so a
    // PUBLISH made at once may still count respite (docs/pubsub.md, Counts).
    ("pub?", "PUBLISH a gone", 0),
    ("sub", "UNSUBSCRIBE zz", 1),
    ("sub", "PUNSUBSCRIBE", 1),
    ("sub", "SUNSUBSCRIBE", 1),
    ("sub", "SUNSUBSCRIBE", 1),
    ("pub", "PUBLISH b m5", 1),
    ("sub", "UNSUBSCRIBE", 1),
    ("sub", "UNSUBSCRIBE", 1),
    ("sub", "PING", 1),
    ("sub", "GET k", 1),
];

both!(transcript_matches_direct_resp2, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let direct = transcript(server.raw(), server.raw(), 2, STEPS);
    let through = transcript(proxy.raw(), proxy.raw(), 2, STEPS);
    assert_eq!(through, direct);
    // Subscribed mode refuses other commands with Redis's own text.
    let mut sub = proxy.raw();
    sub.cmd(&words("SUBSCRIBE a"));
    assert_eq!(
        String::from_utf8_lossy(&sub.cmd(&words("GET k"))),
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    // RESET leaves subscribed mode.
    assert_eq!(sub.cmd(&words("RESET")), b"+RESET\r\n");
    assert_eq!(sub.cmd(&words("GET k")), b"$-1\r\n");
});

both!(transcript_matches_direct_resp3, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let direct = transcript(server.raw(), server.raw(), 3, STEPS);
    let through = transcript(proxy.raw(), proxy.raw(), 3, STEPS);
    assert_eq!(through, direct);
});

// PUBSUB NUMSUB counts respite's subscribers as the upstream would count them connected
// directly; the upstream itself sees one subscription per channel, however many subscribe.
both!(counts_and_one_upstream_subscription, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut subs: Vec<Raw> = (0..5).map(|_| proxy.raw()).collect();
    for s in &mut subs {
        s.cmd(&words("SUBSCRIBE news"));
    }
    let mut direct = server.raw();
    direct.cmd(&words("SUBSCRIBE news"));
    let mut upstream = server.raw();
    assert_eq!(
        upstream.cmd(&words("PUBSUB NUMSUB news other")),
        b"*4\r\n$4\r\nnews\r\n:2\r\n$5\r\nother\r\n:0\r\n",
        "respite's five subscribers are one upstream subscription"
    );
    let mut client = proxy.raw();
    assert_eq!(
        client.cmd(&words("PUBSUB NUMSUB news other")),
        b"*4\r\n$4\r\nnews\r\n:6\r\n$5\r\nother\r\n:0\r\n"
    );
    assert_eq!(
        client.cmd(&words("PUBSUB CHANNELS n*")),
        b"*1\r\n$4\r\nnews\r\n"
    );
    // Every subscriber leaves: respite withdraws its upstream subscription.
    for s in &mut subs {
        s.cmd(&words("UNSUBSCRIBE news"));
    }
    let gone = crate::support::wait_until(Duration::from_secs(5), || {
        upstream.cmd(&words("PUBSUB NUMSUB news")) == b"*2\r\n$4\r\nnews\r\n:1\r\n"
    });
    assert!(gone.is_some(), "respite's upstream subscription stays");
    // A subscriber that disconnects is gone too.
    let mut s = proxy.raw();
    s.cmd(&words("SUBSCRIBE other"));
    assert_eq!(
        upstream.cmd(&words("PUBSUB NUMSUB other")),
        b"*2\r\n$5\r\nother\r\n:1\r\n"
    );
    drop(s);
    let gone = crate::support::wait_until(Duration::from_secs(5), || {
        upstream.cmd(&words("PUBSUB NUMSUB other")) == b"*2\r\n$5\r\nother\r\n:0\r\n"
    });
    assert!(gone.is_some(), "a closed subscriber's subscription stays");
});

/// Subscribers from `subscriber()` (a channel's two, one client on a channel and a pattern, a
/// pattern's two, shard channels) beside one subscriber connected straight to `server`, then
/// every count a publisher from `publisher()` sees.
fn receiver_counts(server: &Server, subscriber: &dyn Fn() -> Raw, mut publ: Raw) -> Vec<String> {
    let mut held = Vec::new();
    for lines in [
        &["SUBSCRIBE news"][..],
        &["SUBSCRIBE news"],
        &["SUBSCRIBE news", "PSUBSCRIBE n*"],
        &["PSUBSCRIBE n*"],
        &["PSUBSCRIBE x*", "PSUBSCRIBE ne?s"],
        &["SSUBSCRIBE shard"],
        &["SSUBSCRIBE shard", "SUBSCRIBE other"],
    ] {
        let mut s = subscriber();
        for line in lines {
            s.cmd(&words(line));
        }
        held.push(s);
    }
    let mut direct = server.raw();
    direct.cmd(&words("SUBSCRIBE news"));
    [
        "PUBLISH news m",
        "PUBLISH nope m",
        "PUBLISH xyz m",
        "PUBLISH other m",
        "PUBLISH none m",
        "SPUBLISH shard m",
        "SPUBLISH news m",
        "PUBSUB NUMSUB news other none",
        "PUBSUB NUMPAT",
        "PUBSUB SHARDNUMSUB shard news",
    ]
    .iter()
    .map(|line| {
        format!(
            "{line} -> {}",
            String::from_utf8_lossy(&publ.cmd(&words(line)))
        )
    })
    .collect()
}

// PUBLISH's receiver count and the PUBSUB counts are what one server gives, however many of the
// subscribers share respite's one upstream subscription (issue 21, finding 5), with a direct
// subscriber beside them.
both!(publish_counts_every_subscriber, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let direct = receiver_counts(&server, &|| server.raw(), server.raw());
    let mut up = server.raw();
    let gone = crate::support::wait_until(Duration::from_secs(5), || {
        up.cmd(&words("PUBSUB NUMPAT")) == b":0\r\n"
            && up.cmd(&words("PUBSUB NUMSUB news")) == b"*2\r\n$4\r\nnews\r\n:0\r\n"
    });
    assert!(gone.is_some(), "the direct run's subscribers left");
    let through = receiver_counts(&server, &|| proxy.raw(), proxy.raw());
    assert_eq!(through, direct);
    assert_eq!(
        direct[0], "PUBLISH news m -> :7\r\n",
        "the scenario counts what it means to"
    );
});

// RESP3: pushes come between whole replies and never take a reply's place.
both!(resp3_pushes_interleave_with_replies, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut sub = proxy.raw();
    sub.cmd(&words("HELLO 3"));
    assert_eq!(
        sub.cmd(&words("SUBSCRIBE c")),
        b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    );
    let publisher = {
        let url = server.url();
        std::thread::spawn(move || {
            let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
            let mut p = Raw::connect(([127, 0, 0, 1], port).into());
            for i in 0..500 {
                p.cmd(&[b"PUBLISH", b"c", format!("m{i}").as_bytes()]);
            }
        })
    };
    // Pipelined commands while messages stream in: replies in order, messages in order.
    let mut pipeline = Vec::new();
    for i in 0..500 {
        pipeline.extend(encode(&[b"SET", b"k", format!("v{i}").as_bytes()]));
        pipeline.extend(encode(&[b"GET", b"k"]));
    }
    sub.send(&pipeline);
    let (mut replies, mut messages) = (Vec::new(), Vec::new());
    while replies.len() < 1000 || messages.len() < 500 {
        let f = sub.reply().expect("a frame");
        if f.starts_with(b">") {
            messages.push(f);
        } else {
            replies.push(f);
        }
    }
    publisher.join().unwrap();
    for i in 0..500 {
        assert_eq!(replies[2 * i], b"+OK\r\n");
        let v = format!("v{i}");
        assert_eq!(
            replies[2 * i + 1],
            format!("${}\r\n{v}\r\n", v.len()).as_bytes()
        );
        let m = format!("m{i}");
        assert_eq!(
            messages[i],
            format!(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n{m}\r\n", m.len()).as_bytes()
        );
    }
});

// Tenants: channels and patterns live in the tenant's namespace upstream, names come back
// without the prefix, and no tenant hears another's messages.
both!(tenants_are_namespaced, |kind: Kind| {
    let server = Server::start(kind);
    let toml = tenants(&[
        TenantToml::new("alpha", "a:")
            .login("alpha-pw")
            .allow(&["@all"]),
        TenantToml::new("beta", "b:")
            .login("beta-pw")
            .allow(&["@all"]),
    ]);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut watcher = server.raw();
    watcher.cmd(&words("PSUBSCRIBE *"));
    let mut a = proxy.login("alpha", "alpha-pw");
    let mut b = proxy.login("beta", "beta-pw");
    assert_eq!(
        a.cmd(&words("SUBSCRIBE news")),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        a.cmd(&words("PSUBSCRIBE n*")),
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n"
    );
    b.cmd(&words("SUBSCRIBE news"));
    let mut upstream = server.raw();
    assert_eq!(
        upstream.cmd(&words("PUBSUB NUMSUB a:news b:news news")),
        b"*6\r\n$6\r\na:news\r\n:1\r\n$6\r\nb:news\r\n:1\r\n$4\r\nnews\r\n:0\r\n"
    );
    let mut pa = proxy.login("alpha", "alpha-pw");
    let mut pb = proxy.login("beta", "beta-pw");
    // The watcher, and respite once for the channel and once for the pattern.
    assert_eq!(pa.cmd(&words("PUBLISH news hello-a")), b":3\r\n");
    // The direct subscriber sees the prefixed channel.
    let seen = watcher.reply().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$6\r\na:news\r\n$7\r\nhello-a\r\n"
    );
    assert_eq!(
        a.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\nhello-a\r\n"
    );
    assert_eq!(
        a.reply().unwrap(),
        b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$7\r\nhello-a\r\n"
    );
    pb.cmd(&words("PUBLISH news hello-b"));
    // Beta's first message is its own: alpha's never reached it.
    assert_eq!(
        b.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\nhello-b\r\n"
    );
    // A direct publish outside both namespaces reaches neither.
    upstream.cmd(&words("PUBLISH news direct"));
    pa.cmd(&words("PUBLISH news second-a"));
    assert_eq!(
        a.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$8\r\nsecond-a\r\n"
    );
    // Counts and channel lists stay within the namespace.
    assert_eq!(
        pa.cmd(&words("PUBSUB NUMSUB news")),
        b"*2\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(pb.cmd(&words("PUBSUB CHANNELS *")), b"*1\r\n$4\r\nnews\r\n");
});

// redis-rs's async PubSub, over RESP2 and RESP3.
both!(redis_rs_async_pubsub, |kind: Kind| {
    use futures_util::StreamExt;
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for suffix in ["", "?protocol=resp3"] {
        let url = format!("{}{suffix}", proxy.url());
        rt.block_on(async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut pubsub = client.get_async_pubsub().await.unwrap();
            pubsub.subscribe("jobs").await.unwrap();
            pubsub.psubscribe("ev.*").await.unwrap();
            let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
            for i in 0..20 {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg("jobs")
                    .arg(format!("j{i}"))
                    .query_async(&mut publisher)
                    .await
                    .unwrap();
            }
            let _: i64 = redis::cmd("PUBLISH")
                .arg("ev.x")
                .arg("e")
                .query_async(&mut publisher)
                .await
                .unwrap();
            let mut stream = pubsub.on_message();
            for i in 0..20 {
                let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(m.get_channel_name(), "jobs");
                assert_eq!(m.get_payload::<String>().unwrap(), format!("j{i}"));
            }
            let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.get_channel_name(), "ev.x");
            assert_eq!(m.get_pattern::<String>().unwrap(), "ev.*");
        });
    }
});

// redis-py's PubSub over RESP2 and RESP3: subscribe, messages, unsubscribe counts.
both!(redis_py_pubsub, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let script = r#"
import sys, redis
port, proto = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(port=port, protocol=proto)
p = r.pubsub()
p.subscribe("ch")
p.psubscribe("c*")
out = []
def next_message():
    while True:
        m = p.get_message(timeout=10)
        if m is not None:
            return m
out.append(next_message())
out.append(next_message())
r.publish("ch", "hello")
out.append(next_message())
out.append(next_message())
p.unsubscribe("ch")
out.append(next_message())
p.punsubscribe()
out.append(next_message())
print(r.pubsub_numsub("ch"))
for m in out:
    print(sorted((k, v) for k, v in m.items()))
"#;
    for proto in ["2", "3"] {
        let direct = crate::support::python(&["-c", script, &server.port.to_string(), proto]);
        let through = crate::support::python(&["-c", script, &proxy.port().to_string(), proto]);
        assert_eq!(through, direct, "protocol {proto}");
        assert!(through.contains("hello"), "{through}");
    }
});

// redis-cli in subscribe mode prints what it would print connected directly.
both!(redis_cli_subscribe, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut child = Command::new("redis-cli")
        .args(["-p", &proxy.port().to_string(), "SUBSCRIBE", "cli"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = crate::support::Reaped(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    // subscribe, cli, 1
    for _ in 0..3 {
        seen.push(lines.next().unwrap().unwrap());
    }
    let mut p = proxy.raw();
    p.cmd(&words("PUBLISH cli from-respite"));
    for _ in 0..3 {
        seen.push(lines.next().unwrap().unwrap());
    }
    assert_eq!(
        seen,
        ["subscribe", "cli", "1", "message", "cli", "from-respite"]
    );
    drop(lines);
    drop(guard);
});

// A lost subscriber connection: respite subscribes everything again once the upstream is back.
both!(resubscribes_after_the_upstream_restarts, |kind: Kind| {
    let mut server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut sub = proxy.raw();
    sub.cmd(&words("SUBSCRIBE again"));
    sub.cmd(&words("PSUBSCRIBE ag*"));
    server.restart();
    let back = crate::support::wait_until(Duration::from_secs(15), || {
        let mut up = server.raw();
        up.cmd(&words("PUBSUB NUMSUB again")) == b"*2\r\n$5\r\nagain\r\n:1\r\n"
            && up.cmd(&words("PUBSUB NUMPAT")) == b":1\r\n"
    });
    assert!(back.is_some(), "respite did not subscribe again");
    server.raw().cmd(&words("PUBLISH again hello"));
    assert_eq!(
        sub.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$5\r\nagain\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        sub.reply().unwrap(),
        b"*4\r\n$8\r\npmessage\r\n$3\r\nag*\r\n$5\r\nagain\r\n$5\r\nhello\r\n"
    );
});

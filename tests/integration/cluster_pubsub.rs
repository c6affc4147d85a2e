//! Pub/Sub through respite on a Redis Cluster and a Valkey Cluster (`redis+cluster://`), judged by
//! what the nodes themselves say (PUBSUB NUMSUB / SHARDNUMSUB on each node) and by messages
//! published straight to the nodes: classic channels and patterns reach a subscriber from any
//! node; a shard channel is subscribed on its slot's primary, follows its slot when it moves,
//! and both survive SIGKILL of the node that held them (respite subscribes again elsewhere).
//! PUBSUB NUMSUB and SHARDNUMSUB through respite count the subscribers of every node a name is
//! counted on; SSUBSCRIBE of shard channels in two slots is refused with CROSSSLOT.
use crate::support::{Cluster, Kind, Raw, bulk, text, wait_until};
use std::time::Duration;

fn count(reply: &[u8]) -> i64 {
    text(reply)
        .lines()
        .last()
        .and_then(|l| l.trim_start_matches(':').parse().ok())
        .unwrap_or(-1)
}

/// `PUBSUB NUMSUB name` (or SHARDNUMSUB) on the node on `port`: that node's own subscribers.
fn numsub(cluster: &Cluster, port: u16, sub: &[u8], name: &str) -> i64 {
    let r = cluster.node(port).cmd(&[b"PUBSUB", sub, name.as_bytes()]);
    count(&r)
}

/// A message frame as a RESP2 subscriber gets it.
fn message(kind: &str, channel: &str, payload: &str) -> String {
    let mut out = format!("*3\r\n${}\r\n{kind}\r\n", kind.len());
    out.push_str(&text(bulk(channel)));
    out.push_str(&text(bulk(payload)));
    out
}

/// Publish (`verb` on the node on `port`) until the subscriber gets the message: respite may
/// still be subscribing again after a move. Every frame read meanwhile must be one of ours.
fn until_heard(cluster: &Cluster, port: u16, sub: &mut Raw, verb: &str, channel: &str) -> bool {
    let mut heard = false;
    let found = wait_until(Duration::from_secs(30), || {
        let payload = "probe";
        cluster
            .node(port)
            .cmd(&[verb.as_bytes(), channel.as_bytes(), payload.as_bytes()]);
        while let Some(frame) = sub.reply_within(Duration::from_millis(100)) {
            let f = text(&frame);
            assert!(f.contains(payload), "unexpected frame: {f}");
            let kind = if verb == "SPUBLISH" {
                "smessage"
            } else {
                "message"
            };
            heard |= f == message(kind, channel, payload);
        }
        heard
    });
    found.is_some()
}

fn scenario(kind: Kind) {
    let mut cluster = Cluster::start(kind);
    let proxy = crate::support::Proxy::start(&cluster.url());
    let mut sub = proxy.raw();
    assert_eq!(
        text(sub.cmd(&[b"SUBSCRIBE", b"news"])),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        text(sub.cmd(&[b"PSUBSCRIBE", b"new*"])),
        "*3\r\n$10\r\npsubscribe\r\n$4\r\nnew*\r\n:2\r\n"
    );
    // respite's one subscription to the channel is on one node: the confirmation came after it.
    let primaries = cluster.primaries();
    let holding: Vec<u16> = primaries
        .iter()
        .copied()
        .filter(|&p| numsub(&cluster, p, b"NUMSUB", "news") == 1)
        .collect();
    assert_eq!(holding.len(), 1, "one node carries respite's subscription");
    let global = holding[0];
    // A shard channel on another primary than that.
    let channel = (0..1000)
        .map(|i| format!("orders:{i}"))
        .find(|c| cluster.slot_owner(cluster.keyslot(c.as_bytes())) != Some(global))
        .unwrap();
    let slot = cluster.keyslot(channel.as_bytes());
    let owner = cluster.slot_owner(slot).unwrap();
    assert_eq!(
        text(sub.cmd(&[b"SSUBSCRIBE", channel.as_bytes()])),
        format!("*3\r\n$10\r\nssubscribe\r\n{}:1\r\n", text(bulk(&channel)))
    );
    assert_eq!(
        numsub(&cluster, owner, b"SHARDNUMSUB", &channel),
        1,
        "SSUBSCRIBE went to the slot's primary"
    );

    // Published straight to a node that is not the one respite listens on: the cluster carries
    // a classic message to every node, and the subscriber gets it once per subscription.
    let other = *primaries.iter().find(|&&p| p != global).unwrap();
    assert_eq!(
        cluster.node(other).cmd(&[b"PUBLISH", b"news", b"hello"]),
        b":0\r\n"
    );
    assert_eq!(
        text(sub.reply().unwrap()),
        message("message", "news", "hello")
    );
    let pm = text(sub.reply().unwrap());
    assert_eq!(
        pm,
        "*4\r\n$8\r\npmessage\r\n$4\r\nnew*\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        cluster
            .node(owner)
            .cmd(&[b"SPUBLISH", channel.as_bytes(), b"first"]),
        b":1\r\n"
    );
    assert_eq!(
        text(sub.reply().unwrap()),
        message("smessage", &channel, "first")
    );

    // Through respite: PUBLISH counts the subscriber's two subscriptions as one server would;
    // SPUBLISH reaches the slot's primary (one receiver there: respite).
    let mut publ = proxy.raw();
    assert_eq!(text(publ.cmd(&[b"PUBLISH", b"news", b"two"])), ":2\r\n");
    assert_eq!(
        text(sub.reply().unwrap()),
        message("message", "news", "two")
    );
    sub.reply().unwrap();
    assert_eq!(
        text(publ.cmd(&[b"SPUBLISH", channel.as_bytes(), b"second"])),
        ":1\r\n"
    );
    assert_eq!(
        text(sub.reply().unwrap()),
        message("smessage", &channel, "second")
    );

    // PUBSUB NUMSUB through respite counts every node's subscribers, as one server counts all
    // of its own: respite's subscriber, one client straight on another primary and one on a
    // replica. SHARDNUMSUB counts the slot's primary's: respite's subscriber and one direct.
    let mut direct = cluster.node(other);
    direct.cmd(&[b"SUBSCRIBE", b"news"]);
    let mut on_replica = cluster.node(cluster.replicas()[0]);
    on_replica.cmd(&[b"SUBSCRIBE", b"news"]);
    let mut shard_direct = cluster.node(owner);
    shard_direct.cmd(&[b"SSUBSCRIBE", channel.as_bytes()]);
    let mut q = proxy.raw();
    // A replica counts once respite's topology lists it online (read every 5 s; a replica is
    // `loading` until its first sync ends).
    let want = "*4\r\n$4\r\nnews\r\n:3\r\n$6\r\nnobody\r\n:0\r\n";
    let mut got = String::new();
    let counted = wait_until(Duration::from_secs(15), || {
        got = text(q.cmd(&[b"PUBSUB", b"NUMSUB", b"news", b"nobody"]));
        got == want
    });
    assert!(counted.is_some(), "NUMSUB through respite: {got}");
    assert_eq!(
        text(q.cmd(&[b"PUBSUB", b"SHARDNUMSUB", channel.as_bytes()])),
        format!("*2\r\n{}:2\r\n", text(bulk(&channel)))
    );
    direct.cmd(&[b"UNSUBSCRIBE"]);
    on_replica.cmd(&[b"UNSUBSCRIBE"]);
    shard_direct.cmd(&[b"SUNSUBSCRIBE"]);
    assert_eq!(
        text(q.cmd(&[b"PUBSUB", b"NUMSUB", b"news"])),
        "*2\r\n$4\r\nnews\r\n:1\r\n"
    );
    // Shard channels of two slots in one SSUBSCRIBE: the cluster's own CROSSSLOT, and the
    // client subscribed to neither (it still answers PING as a client in no subscription).
    let two = (0..1000)
        .map(|i| format!("orders:{i}"))
        .find(|c| cluster.keyslot(c.as_bytes()) != slot)
        .unwrap();
    assert_eq!(
        text(q.cmd(&[b"SSUBSCRIBE", channel.as_bytes(), two.as_bytes()])),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        text(q.cmd(&[b"SUNSUBSCRIBE", channel.as_bytes(), two.as_bytes()])),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(text(q.cmd(&[b"PING"])), "+PONG\r\n");
    assert_eq!(
        text(q.cmd(&[b"PUBSUB", b"SHARDNUMSUB", channel.as_bytes()])),
        format!("*2\r\n{}:1\r\n", text(bulk(&channel)))
    );

    // The shard channel's slot moves to the node respite listens to for classic channels: the
    // old primary drops respite's subscription, respite subscribes on the new one.
    cluster.move_slot(slot, owner, global);
    assert!(
        until_heard(&cluster, global, &mut sub, "SPUBLISH", &channel),
        "the shard subscription did not follow its slot"
    );
    assert_eq!(numsub(&cluster, owner, b"SHARDNUMSUB", &channel), 0);
    assert_eq!(numsub(&cluster, global, b"SHARDNUMSUB", &channel), 1);

    // SIGKILL of that node: the classic subscriptions move to another node at once, the shard
    // one to the replica the cluster promotes.
    cluster.kill(global);
    let killed = std::time::Instant::now();
    let live = *primaries.iter().find(|&&p| p != global).unwrap();
    assert!(
        until_heard(&cluster, live, &mut sub, "PUBLISH", "news"),
        "the classic subscription did not survive its node"
    );
    let classic = killed.elapsed();
    let promoted = wait_until(Duration::from_secs(30), || {
        cluster.slot_owner(slot).is_some()
    });
    assert!(promoted.is_some(), "the cluster promoted no replica");
    let promoted = cluster.slot_owner(slot).unwrap();
    assert!(
        until_heard(&cluster, promoted, &mut sub, "SPUBLISH", &channel),
        "the shard subscription did not follow the failover"
    );
    eprintln!(
        "subscriptions back after the kill: classic {classic:?}, shard {:?}",
        killed.elapsed()
    );
    // The subscriber never noticed: still subscribed to all three, on one connection.
    assert_eq!(text(sub.cmd(&[b"PING"])), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

crate::both!(pubsub_follows_the_cluster, scenario);

/// MONITOR through respite shows the commands of every primary; WAIT goes to the primary of
/// the client's last write (judged by the nodes' own commandstats).
fn monitor_and_wait(kind: Kind) {
    let cluster = Cluster::start(kind);
    let proxy = crate::support::Proxy::start(&cluster.url());
    let primaries = cluster.primaries();
    // A key on each primary.
    let keys: Vec<(u16, String)> = primaries
        .iter()
        .map(|&p| {
            let key = (0..1000)
                .map(|i| format!("mon:{i}"))
                .find(|k| cluster.slot_owner(cluster.keyslot(k.as_bytes())) == Some(p))
                .unwrap();
            (p, key)
        })
        .collect();
    let mut mon = proxy.raw();
    assert_eq!(mon.cmd(&[b"MONITOR"]), b"+OK\r\n");
    let mut c = proxy.raw();
    for (_, key) in &keys {
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"seen"]), b"+OK\r\n");
    }
    let mut missing: Vec<&String> = keys.iter().map(|(_, k)| k).collect();
    while !missing.is_empty() {
        let line = text(mon.reply().expect("a monitor line"));
        missing.retain(|k| !line.contains(&format!("\"SET\" \"{k}\" \"seen\"")));
    }

    cluster.wait_replicas_online();
    cluster.reset_stats();
    for (port, key) in &keys {
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"again"]), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"WAIT", b"1", b"5000"]), b":1\r\n");
        for &p in &primaries {
            let want = u64::from(p == *port);
            assert_eq!(
                cluster.calls(p, "wait"),
                want,
                "WAIT after a write on {port}, node {p}"
            );
        }
        cluster.reset_stats();
    }
}

crate::both!(monitor_and_wait_follow_the_writes, monitor_and_wait);

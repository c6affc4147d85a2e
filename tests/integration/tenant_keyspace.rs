//! Keyspace notifications for a prefixed tenant (issue 22): a tenant's `__keyspace@0__:…` and
//! `__keyevent@0__:…` subscriptions, channels and patterns, get the notifications of its own keys,
//! un-prefixed, as its own `notify-keyspace-events` admits them — never another tenant's, not
//! even of keys named like its own or holding values that start with its prefix. The judges are
//! a direct subscriber on the upstream (the events did happen there) and a second tenant (it gets
//! its own, and nothing of the first).
//!
//! Each scenario ends with a sentinel key written last: the upstream publishes notifications in
//! the order it runs commands, on respite's one subscriber connection, so once a subscriber has
//! the sentinel's notification it has every earlier one.
use crate::both;
use crate::support::{
    Kind, Proxy, Raw, Server, TenantToml, Value, tenants, text, wait_until, words,
};
use std::time::Duration;

fn config() -> String {
    let all = ["@all"];
    tenants(&[
        TenantToml::new("a", "a:").login("pa").allow(&all),
        TenantToml::new("b", "b:").login("pb").allow(&all),
        TenantToml::new("c", "c:")
            .login("pc")
            .allow(&all)
            .db(2)
            .notify("E$"),
    ])
}

/// The next Pub/Sub message as `[pattern ]channel payload` (pushes read as arrays).
fn next(c: &mut Raw) -> String {
    let mut r = c.reply().expect("a message");
    if r[0] == b'>' {
        r[0] = b'*';
    }
    let Value::Arr(items) = Value::decode(&r) else {
        panic!("not a message: {}", text(&r));
    };
    let words: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::Bulk(b) => text(b),
            Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    match words[0].as_str() {
        "message" | "pmessage" => words[1..].join(" "),
        _ => panic!("not a message: {words:?}"),
    }
}

/// Messages up to and including the first that ends with `last`.
fn until(c: &mut Raw, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let m = next(c);
        let done = m.ends_with(last);
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Subscribe `c` with `command` (one name), reading its confirmation.
fn subscribe(c: &mut Raw, command: &str) {
    c.send(&crate::support::encode(&words(command)));
    let r = text(c.reply().unwrap());
    assert!(r.contains("subscribe"), "{command}: {r}");
}

both!(a_tenant_hears_only_its_own_keys_unprefixed, |kind: Kind| {
    let server = Server::start_with(kind, &["--notify-keyspace-events", "KEA"]);
    let proxy = Proxy::start_with_config(&server.url(), &config(), &[]);
    let mut direct = server.raw();
    let mut judge = server.raw();
    subscribe(&mut judge, "PSUBSCRIBE __key*@*__:*");

    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    // A tenant starts as Redis does: no notifications until it asks for them.
    assert_eq!(
        text(a.cmd(&words("CONFIG GET notify-keyspace-events"))),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n"
    );
    for t in [&mut a, &mut b] {
        assert_eq!(
            t.cmd(&words("CONFIG SET notify-keyspace-events KEA")),
            b"+OK\r\n"
        );
    }
    let mut a_pattern = proxy.login("a", "pa");
    subscribe(&mut a_pattern, "PSUBSCRIBE __key*@*__:*");
    let mut a_channels = proxy.login("a", "pa");
    assert!(text(a_channels.cmd(&words("HELLO 3"))).starts_with('%'));
    subscribe(&mut a_channels, "SUBSCRIBE __keyspace@0__:mykey");
    subscribe(&mut a_channels, "SUBSCRIBE __keyevent@0__:set");
    let mut a_all = proxy.login("a", "pa");
    subscribe(&mut a_all, "PSUBSCRIBE *");
    let mut b_pattern = proxy.login("b", "pb");
    subscribe(&mut b_pattern, "PSUBSCRIBE __key*@*__:*");
    let mut b_channel = proxy.login("b", "pb");
    subscribe(&mut b_channel, "SUBSCRIBE __keyevent@0__:set");

    // Each tenant counts only its own subscribers of a shared notification channel.
    assert_eq!(
        text(a.cmd(&words("PUBSUB NUMSUB __keyevent@0__:set"))),
        "*2\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n"
    );

    assert_eq!(a.cmd(&words("SET mykey v1")), b"+OK\r\n");
    // b writes keys named like a's (with a's prefix, and a's own name), and values that start
    // with a's prefix.
    for cmd in [
        "SET a:mykey x",
        "SET mykey y",
        "SET note a:mykey",
        "HSET a:h f a:v",
    ] {
        b.cmd(&words(cmd));
    }
    // A direct client's key under a's prefix is a's; another key is nobody's.
    direct.cmd(&words("SET a:direct 1"));
    direct.cmd(&words("SET zz 1"));
    assert_eq!(a.cmd(&words("PUBLISH news hi")), b":1\r\n");
    assert_eq!(a.cmd(&words("SET e 1 PX 1")), b"+OK\r\n");
    // Its expiry, made to happen now (PTTL expires it lazily if active expiry has not yet).
    wait_until(Duration::from_secs(5), || {
        direct.cmd(&words("PTTL a:e")) == b":-2\r\n"
    })
    .expect("a:e expired");
    assert_eq!(a.cmd(&words("DEL mykey")), b":1\r\n");
    assert_eq!(a.cmd(&words("SET end 1")), b"+OK\r\n");
    assert_eq!(b.cmd(&words("SET endb 1")), b"+OK\r\n");

    let p = "__key*@*__:*";
    let pair = |key: &str, event: &str| {
        [
            format!("__keyspace@0__:{key} {event}"),
            format!("__keyevent@0__:{event} {key}"),
        ]
    };
    let mut want: Vec<String> = Vec::new();
    for (key, event) in [
        ("mykey", "set"),
        ("direct", "set"),
        ("e", "set"),
        ("e", "expire"),
        ("e", "expired"),
        ("mykey", "del"),
        ("end", "set"),
    ] {
        want.extend(pair(key, event).map(|m| format!("{p} {m}")));
    }
    assert_eq!(until(&mut a_pattern, "__keyevent@0__:set end"), want);
    assert_eq!(
        until(&mut a_channels, "__keyevent@0__:set end"),
        [
            "__keyspace@0__:mykey set",
            "__keyevent@0__:set mykey",
            "__keyevent@0__:set direct",
            "__keyevent@0__:set e",
            "__keyspace@0__:mykey del",
            "__keyevent@0__:set end",
        ]
    );
    let all = until(&mut a_all, "__keyevent@0__:set end");
    assert!(all.contains(&"* news hi".to_string()), "{all:?}");
    let mut rest: Vec<String> = all.into_iter().filter(|m| m != "* news hi").collect();
    for m in rest.iter_mut() {
        *m = m.replacen("* ", &format!("{p} "), 1);
    }
    assert_eq!(rest, want, "PSUBSCRIBE * hears the same notifications");

    let mut b_want: Vec<String> = Vec::new();
    for (key, event) in [
        ("a:mykey", "set"),
        ("mykey", "set"),
        ("note", "set"),
        ("a:h", "hset"),
        ("endb", "set"),
    ] {
        b_want.extend(pair(key, event).map(|m| format!("{p} {m}")));
    }
    assert_eq!(until(&mut b_pattern, "__keyevent@0__:set endb"), b_want);
    assert_eq!(
        until(&mut b_channel, "__keyevent@0__:set endb"),
        [
            "__keyevent@0__:set a:mykey",
            "__keyevent@0__:set mykey",
            "__keyevent@0__:set note",
            "__keyevent@0__:set endb",
        ]
    );
    // The upstream did publish all of it, under the prefixed names.
    let seen = until(&mut judge, "__keyevent@0__:set b:endb");
    for m in [
        "__keyspace@0__:a:mykey set",
        "__keyspace@0__:b:a:mykey set",
        "__keyspace@0__:b:mykey set",
        "__keyevent@0__:set a:direct",
        "__keyevent@0__:set zz",
        "__keyevent@0__:expired a:e",
    ] {
        assert!(seen.contains(&format!("{p} {m}")), "{m}: {seen:?}");
    }

    // a's classes change for a alone, at once, and never upstream: keyspace, generic only.
    assert_eq!(
        a.cmd(&words("CONFIG SET notify-keyspace-events Kg")),
        b"+OK\r\n"
    );
    assert_eq!(
        text(a.cmd(&words("CONFIG GET notify-keyspace-events"))),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$2\r\ngK\r\n"
    );
    assert_eq!(
        text(b.cmd(&words("CONFIG GET notify-keyspace-events"))),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n"
    );
    for cmd in ["SET s 1", "DEL s", "SET end2 1", "DEL end2"] {
        a.cmd(&words(cmd));
    }
    assert_eq!(
        until(&mut a_pattern, "__keyspace@0__:end2 del"),
        [
            format!("{p} __keyspace@0__:s del"),
            format!("{p} __keyspace@0__:end2 del"),
        ]
    );
    assert_eq!(b.cmd(&words("SET endb2 1")), b"+OK\r\n");
    assert_eq!(
        until(&mut b_channel, "endb2"),
        ["__keyevent@0__:set endb2"],
        "b's classes are its own"
    );
    // Redis's errors; any other parameter stays refused; the upstream's setting is untouched.
    assert_eq!(
        text(a.cmd(&words("CONFIG SET notify-keyspace-events KEQ"))),
        "-ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'.\r\n"
    );
    assert_eq!(
        text(a.cmd(&words(
            "CONFIG SET notify-keyspace-events KEA notify-keyspace-events Kx"
        ))),
        "-ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - duplicate parameter\r\n"
    );
    let refused = text(a.cmd(&words("CONFIG SET notify-keyspace-events KEA maxmemory 1")));
    assert!(refused.starts_with("-ERR"), "{refused}");
    assert_eq!(
        text(direct.cmd(&words("CONFIG GET notify-keyspace-events"))),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n"
    );
    assert_eq!(
        text(direct.cmd(&words("CONFIG GET maxmemory"))),
        "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    );
});

// A tenant with a database of its own hears its database's notifications as database 0's, with
// the classes its configuration gives it (`notify_keyspace_events`, no CONFIG SET).
both!(
    a_tenant_with_its_own_database_hears_it_as_db0,
    |kind: Kind| {
        let server = Server::start_with(kind, &["--notify-keyspace-events", "KEA"]);
        let proxy = Proxy::start_with_config(&server.url(), &config(), &[]);
        let mut judge = server.raw();
        subscribe(&mut judge, "PSUBSCRIBE __keyevent@2__:*");
        let mut c = proxy.login("c", "pc");
        assert_eq!(
            text(c.cmd(&words("CONFIG GET notify-keyspace-events"))),
            "*2\r\n$22\r\nnotify-keyspace-events\r\n$2\r\n$E\r\n"
        );
        let mut sub = proxy.login("c", "pc");
        subscribe(&mut sub, "PSUBSCRIBE __keyevent@0__:*");
        // Database 2's own name is not the tenant's: a channel of its namespace, never published.
        let mut other = proxy.login("c", "pc");
        subscribe(&mut other, "PSUBSCRIBE __keyevent@2__:*");
        for cmd in ["SET k 1", "DEL k", "LPUSH l x", "SET end 1"] {
            c.cmd(&words(cmd));
        }
        assert_eq!(
            until(&mut sub, " end"),
            [
                "__keyevent@0__:* __keyevent@0__:set k",
                "__keyevent@0__:* __keyevent@0__:set end",
            ]
        );
        let seen = until(&mut judge, "c:end");
        assert!(
            seen.contains(&"__keyevent@2__:* __keyevent@2__:lpush c:l".to_string()),
            "{seen:?}"
        );
        assert_eq!(c.cmd(&words("PUBLISH x y")), b":0\r\n");
        other.send(&crate::support::encode(&words("PING")));
        assert_eq!(
            text(other.reply().unwrap()),
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        );
    }
);

//! TTL rules against live servers: each rewritten command and its follow-ups are sent on a raw
//! connection, as the session will, then every key's PTTL is checked against its rule.
mod policy_support;
#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use policy_support::{Conn, decode_bulks, now_ms, show};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use respite::policy::{OnExcess, Tenant, TtlRule};
use support::{KINDS, Server};

const PREFIX: &str = "tt:";

/// `s:*` capped at 60 s (default 5 s), `r:*` refused over 30 s (default 30 s), the rest capped at
/// 120 s (default 50 s).
fn tenant() -> Tenant {
    Tenant::builder("t")
        .prefix(PREFIX)
        .allow(&["@all"])
        .ttl(TtlRule::new(
            "s:*",
            Some(60_000),
            Some(5_000),
            OnExcess::Cap,
        ))
        .ttl(TtlRule::new("r:*", Some(30_000), None, OnExcess::Refuse))
        .ttl(TtlRule::new(
            "*",
            Some(120_000),
            Some(50_000),
            OnExcess::Cap,
        ))
        .build()
}

fn max_for(key: &[u8]) -> i64 {
    if key.starts_with(b"s:") {
        60_000
    } else if key.starts_with(b"r:") {
        30_000
    } else {
        120_000
    }
}

fn pttl(conn: &mut Conn, key: &str) -> i64 {
    let r = conn.call(&["PTTL", &format!("{PREFIX}{key}")]);
    std::str::from_utf8(&r[1..r.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

/// Every key in the namespace has a TTL within its rule.
fn all_within_rules(conn: &mut Conn, kind: support::Kind) -> usize {
    let keys = decode_bulks(&conn.call(&["KEYS", &format!("{PREFIX}*")])).unwrap();
    for key in &keys {
        let name = &key[PREFIX.len()..];
        let r = conn.call(&[&b"PTTL"[..], key]);
        let ms: i64 = std::str::from_utf8(&r[1..r.len() - 2])
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ms > 0 && ms <= max_for(name),
            "{kind:?}: {} has PTTL {ms}, rule max {}",
            String::from_utf8_lossy(name),
            max_for(name)
        );
    }
    keys.len()
}

fn dump_payload(conn: &mut Conn) -> Bytes {
    conn.call(&["SET", "payload-source", "hello"]);
    let r = conn.call(&["DUMP", "payload-source"]);
    conn.call(&["DEL", "payload-source"]);
    // A bulk: `$len\r\n…\r\n`.
    let start = r.iter().position(|&b| b == b'\n').unwrap() + 1;
    r.slice(start..r.len() - 2)
}

#[test]
fn rules_hold_for_each_ttl_option() {
    let t = tenant();
    for kind in KINDS {
        let server = Server::start(kind);
        let mut c = Conn::to(&server);
        let via = |c: &mut Conn, line: &str| show(&c.via_line(&t, line));

        assert_eq!(via(&mut c, "SET s:a v"), "+OK ");
        let ms = pttl(&mut c, "s:a");
        assert!(ms > 0 && ms <= 5_000, "{kind:?} default: {ms}");

        // SETEX over the cap is capped; the client still gets +OK.
        assert_eq!(via(&mut c, "SETEX s:b 1000 v"), "+OK ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:b")));
        assert_eq!(via(&mut c, "SET s:c v EX 1000 GET"), "$-1 ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:c")));
        let at = now_ms() / 1000 + 1000;
        assert_eq!(via(&mut c, &format!("SET s:d v EXAT {at}")), "+OK ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:d")));

        // EXPIRE GT past the cap: a private server would set it (1), so does the capped one.
        assert_eq!(via(&mut c, "EXPIRE s:a 1000 GT"), ":1 ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:a")));
        // LT with a longer time than the current TTL: not set on a private server, nor here.
        assert_eq!(via(&mut c, "EXPIRE s:a 1000 LT"), ":0 ");
        // LT with a shorter time is set.
        assert_eq!(via(&mut c, "PEXPIRE s:a 2000 LT"), ":1 ");
        assert!(pttl(&mut c, "s:a") <= 2_000);
        assert_eq!(via(&mut c, "EXPIRE s:a 10 NX"), ":0 ");

        // PERSIST under a cap becomes "as long as allowed"; the reply is PERSIST's for a key
        // with a TTL.
        assert_eq!(via(&mut c, "PERSIST s:a"), ":1 ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:a")));
        assert_eq!(via(&mut c, "PERSIST s:nokey"), ":0 ");
        assert_eq!(via(&mut c, "GETEX s:a PERSIST"), "$1 v ");
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:a")));

        // Under on_excess = "refuse": over the max is an error and nothing changes.
        assert_eq!(via(&mut c, "SET r:a v"), "+OK ");
        assert!(via(&mut c, "SET r:a w EX 100").starts_with("-ERR TTL of 100000 ms is over"));
        assert!(via(&mut c, "PERSIST r:a").starts_with("-ERR PERSIST would remove"));
        assert_eq!(via(&mut c, "GET r:a"), "$1 v ");

        // Keys that inherit a TTL from another key are capped to their own rule.
        assert_eq!(via(&mut c, "SET long v EX 100"), "+OK ");
        assert_eq!(via(&mut c, "COPY long s:copy"), ":1 ");
        assert_eq!(via(&mut c, "RENAME long s:renamed"), "+OK ");
        assert!(pttl(&mut c, "s:copy") <= 60_000);
        assert!(pttl(&mut c, "s:renamed") <= 60_000);

        // RESTORE without a TTL gets the default; with one over the cap, the cap.
        let payload = dump_payload(&mut c);
        let restore = |ttl: &str, key: &str| {
            vec![
                Bytes::from_static(b"RESTORE"),
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::copy_from_slice(ttl.as_bytes()),
                payload.clone(),
            ]
        };
        assert_eq!(show(&c.via(&t, &restore("0", "s:r1"), now_ms())), "+OK ");
        assert!(pttl(&mut c, "s:r1") <= 5_000);
        assert_eq!(
            show(&c.via(&t, &restore("9999999", "s:r2"), now_ms())),
            "+OK "
        );
        assert!((55_000..=60_000).contains(&pttl(&mut c, "s:r2")));

        // KEEPTTL keeps an existing TTL and gives a new key the default.
        assert_eq!(via(&mut c, "SET s:k v KEEPTTL"), "+OK ");
        assert!(pttl(&mut c, "s:k") <= 5_000);

        for line in [
            "INCR s:n",
            "HSET s:h f v",
            "LPUSH s:l a b",
            "SADD s:set m",
            "ZADD s:z 1 m",
            "XADD s:x * f v",
            "SUNIONSTORE s:su s:set",
            "ZUNIONSTORE s:zu 1 s:z",
            "SORT s:l ALPHA STORE s:sorted",
            "PFADD s:hll a",
            "GEOADD s:geo 13.36 38.11 m",
            "GEORADIUS s:geo 13 38 200 km STORE s:geostore",
            "XGROUP CREATE s:stream g $ MKSTREAM",
            "BITOP OR s:bits s:n",
            "LMOVE s:l s:moved LEFT RIGHT",
            "MSET s:m1 1 s:m2 2",
        ] {
            let reply = via(&mut c, line);
            assert!(!reply.starts_with('-'), "{kind:?}: {line}: {reply}");
        }
        all_within_rules(&mut c, kind);
    }
}

/// A seeded random workload of key-creating and TTL-setting commands; afterwards every key in
/// the namespace has a TTL within its rule.
#[test]
fn randomized_workload_leaves_every_key_within_its_rule() {
    let t = tenant();
    let templates = [
        "SET k v",
        "SET k v EX s",
        "SET k v PX ms",
        "SET k v EXAT at",
        "SET k v PXAT pat",
        "SET k v KEEPTTL",
        "SET k v NX",
        "SET k v XX GET",
        "SETEX k s v",
        "PSETEX k ms v",
        "SETNX k v",
        "GETEX k EX s",
        "GETEX k PERSIST",
        "GETSET k v",
        "APPEND k v",
        "SETRANGE k 3 v",
        "INCR k",
        "INCRBYFLOAT k 1.5",
        "EXPIRE k s",
        "EXPIRE k s GT",
        "PEXPIRE k ms LT",
        "EXPIREAT k at XX",
        "PEXPIREAT k pat",
        "PERSIST k",
        "HSET k f v",
        "HINCRBY k f 1",
        "LPUSH k v",
        "RPUSH k v",
        "SADD k v",
        "ZADD k 1 v",
        "ZINCRBY k 1 v",
        "XADD k * f v",
        "PFADD k v",
        "SETBIT k 7 1",
        "COPY k k",
        "COPY k k REPLACE",
        "RENAME k k",
        "RENAMENX k k",
        "SUNIONSTORE k k k",
        "SINTERSTORE k k",
        "SDIFFSTORE k k",
        "ZUNIONSTORE k 2 k k",
        "ZINTERSTORE k 1 k",
        "ZRANGESTORE k k 0 -1",
        "LMOVE k k LEFT LEFT",
        "RPOPLPUSH k k",
        "SMOVE k k v",
        "SORT k STORE k",
        "BITOP AND k k k",
        "PFMERGE k k",
        "MSET k v k v",
        "MSETNX k v k v",
        "DEL k",
    ];
    let names = ["s:1", "s:2", "r:1", "r:2", "a", "b", "c"];
    for kind in KINDS {
        let server = Server::start(kind);
        let mut c = Conn::to(&server);
        let mut rng = StdRng::seed_from_u64(0x771_0000 + kind as u64);
        let mut refusals = 0;
        for _ in 0..600 {
            let template = templates[rng.random_range(0..templates.len())];
            let now = now_ms();
            let words: Vec<String> = template
                .split(' ')
                .map(|w| match w {
                    "k" => names[rng.random_range(0..names.len())].to_string(),
                    "s" => rng.random_range(1..400).to_string(),
                    "ms" => rng.random_range(1..400_000).to_string(),
                    "at" => (now / 1000 + rng.random_range(1..400)).to_string(),
                    "pat" => (now + rng.random_range(1..400_000)).to_string(),
                    other => other.to_string(),
                })
                .collect();
            let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.clone())).collect();
            let reply = c.via(&t, &args, now);
            if reply.starts_with(b"-ERR TTL") || reply.starts_with(b"-ERR PERSIST") {
                refusals += 1;
            }
        }
        let n = all_within_rules(&mut c, kind);
        assert!(n >= 4, "{kind:?}: the workload left only {n} keys");
        assert!(
            refusals > 0,
            "{kind:?}: the refuse rule was never exercised"
        );
    }
}

//! The oracle that is not respite's parser: generated calls of keyword-key and numkeys commands
//! (repeated options, keywords in odd places and as key names, numkeys lies, NUL bytes) run as a
//! prefixed tenant through respite against a real server with `notify-keyspace-events KEA`; a
//! direct subscriber to the server's keyspace events checks that every key the server touched
//! lies under the tenant's prefix, and that every key left behind has a TTL within the cap.
//!
//! Each case re-seeds the tenant's data, sends one generated call, then a PUBLISH on a direct
//! connection whose message marks the end of that call's events. Cases default to 1000 per server
//! (a few seconds each); `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=<n> cargo test --test
//! integration tenant_oracle -- --nocapture` is the soak (see docs/testing.md).
use std::cell::RefCell;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::both;
use crate::support::{
    Kind, Proxy, Raw, Server, TenantToml, Value, encode, tenants, text, wait_until, words,
};

const PREFIX: &str = "t:";
const CAP_MS: i64 = 60_000;

fn tenant_config() -> String {
    tenants(&[TenantToml::new("t", "t:")
        .login("pt")
        .allow(&["@all", "-@dangerous", "sort"])
        .max_value_bytes(4096)
        .ttl("*", Some(60000), 30000)])
}

/// Calls to mutate, one per command shape, each with the option words its grammar knows (which
/// mutations insert three times in four): every keyword-key and numkeys command in the table that
/// a tenant may run, plus writers whose destinations are fixed (as controls).
const TEMPLATES: &[(&str, &[&[u8]])] = &[
    ("GEORADIUS g 0 0 500 km |", GEO),
    ("GEORADIUS g 0 0 500 km | STORE d", GEO),
    ("GEORADIUSBYMEMBER g m1 500 km | STOREDIST d", GEO),
    ("GEORADIUSBYMEMBER g m1 500 km |", GEO),
    ("GEORADIUS_RO g 0 0 500 km |", GEO),
    ("GEORADIUSBYMEMBER_RO g m1 500 km |", GEO),
    ("GEOSEARCH g | FROMMEMBER m1 BYRADIUS 500 km", GEO),
    ("SORT k |", SORT),
    ("SORT k | STORE d", SORT),
    ("SORT_RO k |", SORT),
    ("XREAD | STREAMS s 0", XREAD),
    ("XREAD | COUNT 1 STREAMS s 0", XREAD),
    ("XREADGROUP | GROUP grp c STREAMS s >", XREAD),
    ("XREADGROUP | GROUP grp c COUNT 1 NOACK STREAMS s >", XREAD),
    ("ZUNIONSTORE d 2 z1 z2 |", ZSTORE),
    ("ZINTERSTORE d 2 z1 z2 | WEIGHTS 1 2", ZSTORE),
    ("ZDIFFSTORE d 2 z1 z2 |", ZSTORE),
    ("ZUNION 2 z1 z2 |", ZSTORE),
    ("ZRANGESTORE d z1 0 -1", ZSTORE),
    ("LMPOP 1 k LEFT |", MPOP),
    ("ZMPOP 2 z1 z2 MIN |", MPOP),
    ("SINTERCARD 1 z1 |", MPOP),
    ("ZINTERCARD 2 z1 z2 |", MPOP),
    ("BITOP OR d str k", &[]),
    (
        "BITFIELD str | SET u8 0 1",
        &[b"GET", b"SET", b"INCRBY", b"OVERFLOW"],
    ),
    (
        "SET str v | GET",
        &[b"GET", b"NX", b"XX", b"KEEPTTL", b"EX", b"PX"],
    ),
    ("COPY str d |", &[b"REPLACE", b"DB"]),
    ("LMOVE k d LEFT RIGHT", &[]),
    ("RENAME str d", &[]),
    ("XGROUP CREATECONSUMER s grp c2", &[]),
    ("XAUTOCLAIM s grp c 0 0 |", &[b"COUNT", b"JUSTID"]),
    ("MEMORY USAGE k", &[b"SAMPLES"]),
    ("EVAL return 1 1 k", &[]),
];

const GEO: &[&[u8]] = &[
    b"STORE",
    b"STOREDIST",
    b"store",
    b"storedist",
    b"COUNT",
    b"WITHDIST",
    b"ASC",
    b"ANY",
];
const SORT: &[&[u8]] = &[
    b"STORE", b"store", b"BY", b"GET", b"LIMIT", b"ALPHA", b"DESC",
];
const XREAD: &[&[u8]] = &[
    b"STREAMS", b"streams", b"COUNT", b"BLOCK", b"GROUP", b"NOACK",
];
const ZSTORE: &[&[u8]] = &[b"WEIGHTS", b"AGGREGATE", b"SUM", b"WITHSCORES"];
const MPOP: &[&[u8]] = &[b"LEFT", b"MIN", b"COUNT", b"LIMIT"];

/// Option keywords mutations insert (some lower-case, one with a NUL byte).
const KEYWORDS: &[&[u8]] = &[
    b"STORE",
    b"STOREDIST",
    b"store",
    b"STREAMS",
    b"streams",
    b"GROUP",
    b"COUNT",
    b"BLOCK",
    b"NOACK",
    b"BY",
    b"GET",
    b"LIMIT",
    b"ASC",
    b"ALPHA",
    b"WITHDIST",
    b"ANY",
    b"WEIGHTS",
    b"AGGREGATE",
    b"LEFT",
    b"MIN",
    b"STORE\0x",
];

/// Values mutations insert: numbers (numkeys lies among them) and names that exist outside the
/// namespace as well as inside it.
const VALUES: &[&[u8]] = &[
    b"0", b"1", b"2", b"3", b"-1", b">", b"#", b"other", b"victim", b"d", b"k", b"s", b"z1",
    b"str", b"", b"STORE", b"streams",
];
/// Keys outside the namespace that a confinement failure would touch.
const VICTIMS: &[&str] = &[
    "SET other x",
    "SET victim x",
    "SET d x",
    "SET STORE x",
    "SET streams x",
    "RPUSH k 9",
    "ZADD z1 5 zz",
    "XGROUP CREATE s grp $ MKSTREAM",
];

/// The tenant's own data, rebuilt before every case.
const SEED: &[&str] = &[
    "DEL k g s z1 z2 d str other victim STORE streams",
    "RPUSH k 3 1 2",
    "GEOADD g 0 0 m1 0.1 0.1 m2",
    "ZADD z1 1 a 2 b",
    "ZADD z2 1 b 3 c",
    "XADD s 1-1 f v",
    "XGROUP CREATE s grp 0",
    "SET str hello",
];

type Edit = (u8, usize, usize, usize);

/// A template with up to six edits: insert a keyword or a value, replace an argument by one,
/// insert or append an option with its value, or delete an argument; mostly among the options
/// (after `|`), sometimes anywhere. The command name is never touched.
fn build(template: usize, edits: &[Edit]) -> Vec<Vec<u8>> {
    let (line, grammar) = TEMPLATES[template];
    // Options go after `|` (three edits in four), or anywhere.
    let fixed = words(line).iter().position(|w| w == b"|");
    let mut args: Vec<Vec<u8>> = words(line)
        .into_iter()
        .filter(|w| w != b"|")
        .map(<[u8]>::to_vec)
        .collect();
    for &(kind, pos, a, b) in edits {
        let keyword = match grammar.len() {
            n if n > 0 && a % 4 != 0 => grammar[(a / 4) % n],
            _ => KEYWORDS[a % KEYWORDS.len()],
        }
        .to_vec();
        let value = VALUES[b % VALUES.len()].to_vec();
        let at = match fixed {
            Some(f) if pos % 4 != 0 => {
                let f = f.min(args.len());
                f + (pos / 4) % (args.len() + 1 - f)
            }
            _ => 1 + pos % args.len(),
        };
        match kind {
            0 => args.insert(at, keyword),
            1 => args.insert(at, value),
            2 if at < args.len() => args[at] = value,
            3 => {
                args.insert(at, value);
                args.insert(at, keyword);
            }
            4 | 5 => args.extend([keyword, value]),
            6 if at < args.len() && args.len() > 2 => {
                args.remove(at);
            }
            _ => {}
        }
    }
    // Never block: BLOCK's value becomes 1 ms.
    for i in 1..args.len().saturating_sub(1) {
        if args[i].eq_ignore_ascii_case(b"block") {
            args[i + 1] = b"1".to_vec();
        }
    }
    args
}

/// The elements of a RESP2 array of bulk strings and integers (those as their text): a
/// Pub/Sub message.
fn items(frame: &[u8]) -> Vec<Vec<u8>> {
    let Value::Arr(items) = Value::decode(frame) else {
        panic!("not an array: {}", text(frame));
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Bulk(b) => b,
            Value::Int(i) => i.to_string().into_bytes(),
            other => panic!("in a message: {other:?}"),
        })
        .collect()
}

struct Rig {
    tenant: Raw,
    direct: Raw,
    events: Raw,
    sync: u64,
    /// Calls the server ran (not refused by respite or the server).
    ran: u32,
}

impl Rig {
    fn pipeline(conn: &mut Raw, lines: &[&str]) {
        let mut batch = Vec::new();
        for l in lines {
            batch.extend(encode(&words(l)));
        }
        conn.send(&batch);
        for _ in lines {
            conn.reply().unwrap();
        }
    }

    /// The keys (with their events) the server reported since the last call.
    fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        self.sync += 1;
        let marker = self.sync.to_string();
        self.direct
            .cmd(&[b"PUBLISH", b"oracle-sync", marker.as_bytes()]);
        let mut touched = Vec::new();
        loop {
            let msg = items(&self.events.reply().expect("event stream"));
            if msg[0] == b"message" && msg[2] == marker.as_bytes() {
                return touched;
            }
            if msg[0] == b"pmessage" {
                let event = String::from_utf8_lossy(&msg[2])
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string();
                touched.push((event, msg[3].clone()));
            }
        }
    }

    fn case(&mut self, args: &[Vec<u8>]) -> Result<(), TestCaseError> {
        Self::pipeline(&mut self.tenant, SEED);
        let call: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = self.tenant.cmd(&call);
        self.ran += u32::from(!reply.starts_with(b"-"));
        let show = || {
            format!(
                "{:?} -> {}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&reply)
            )
        };
        if std::env::var("ORACLE_VERBOSE").is_ok() {
            eprintln!("{}", show());
        }
        let touched = self.drain();
        for (event, key) in &touched {
            prop_assert!(
                key.starts_with(PREFIX.as_bytes()),
                "{event} on {:?} outside the namespace: {}",
                String::from_utf8_lossy(key),
                show()
            );
        }
        for (event, key) in touched {
            if matches!(
                event.as_str(),
                "del" | "expired" | "rename_from" | "evicted"
            ) {
                continue;
            }
            // A default TTL arrives as a follow-up right after the command: wait for it.
            let mut pttl = 0;
            let settled = wait_until(Duration::from_secs(2), || {
                pttl = match Value::decode(&self.direct.cmd(&[b"PTTL", &key])) {
                    Value::Int(ms) => ms,
                    other => panic!("PTTL: {other:?}"),
                };
                pttl == -2 || (0..=CAP_MS).contains(&pttl)
            });
            prop_assert!(
                settled.is_some(),
                "{event} left {:?} with PTTL {pttl}: {}",
                String::from_utf8_lossy(&key),
                show()
            );
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

both!(every_key_the_server_touches_is_the_tenants, |kind: Kind| {
    let server = Server::start_with(kind, &["--notify-keyspace-events", "KEA"]);
    let mut direct = server.raw();
    Rig::pipeline(&mut direct, VICTIMS);
    let mut events = server.raw();
    events.send(&encode(&words("PSUBSCRIBE __keyevent@0__:*")));
    events.reply().unwrap();
    events.send(&encode(&words("SUBSCRIBE oracle-sync")));
    events.reply().unwrap();
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let tenant = crate::tenant_hardening::login(&proxy, "t", "pt");
    let rig = RefCell::new(Rig {
        tenant,
        direct,
        events,
        sync: 0,
        ran: 0,
    });

    let mut config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var("PROPTEST_RNG_SEED").is_err() {
        config.rng_seed = RngSeed::Fixed(0x5eed_0012);
    }
    let strategy = (
        0..TEMPLATES.len(),
        proptest::collection::vec((0u8..7, 0usize..64, 0..64usize, 0..64usize), 0..6),
    );
    let mut runner = TestRunner::new(config);
    let ran = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(template, edits)| {
        ran.set(ran.get() + 1);
        rig.borrow_mut().case(&build(template, &edits))
    });
    eprintln!(
        "{kind:?}: {} generated calls checked, {} of them run by the server",
        ran.get(),
        rig.borrow().ran
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The victims outside the namespace are as they were.
    let mut d = server.raw();
    assert_eq!(d.cmd(&words("GET other")), b"$1\r\nx\r\n");
    assert_eq!(d.cmd(&words("LLEN k")), b":1\r\n");
    assert_eq!(d.cmd(&words("ZCARD z1")), b":1\r\n");
});

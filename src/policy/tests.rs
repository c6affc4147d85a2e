//! Rules of [`Tenant::check`], one by one.
use bytes::Bytes;

use super::*;
use crate::command::{resolve, test_args as args};

const NOW: i64 = 1_700_000_000_000;

fn tenant() -> Tenant {
    Tenant::builder("a")
        .credentials("alice", "pw")
        .prefix("a:")
        .allow(&["@all"])
        .build()
}

fn with_ttl(rule: TtlRule) -> Tenant {
    Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .ttl(rule)
        .build()
}

fn check(t: &Tenant, line: &str) -> Result<Plan, PolicyError> {
    let a = args(line);
    t.check(resolve(&a).expect(line), &a, None, NOW)
}

/// The forwarded command as words, plus follow-ups as lines.
fn fwd(t: &Tenant, line: &str) -> (String, Vec<String>, ReplyRewrite) {
    match check(t, line).unwrap_or_else(|e| panic!("{line}: {e}")) {
        Plan::Forward(f) => (
            words(&f.command),
            f.follow_ups.iter().map(|b| words(b)).collect(),
            f.reply,
        ),
        Plan::Namespace(op) => panic!("{line}: local {op:?}"),
    }
}

/// Decode a RESP array of bulks back to a space-separated line.
fn words(cmd: &[u8]) -> String {
    let v = reply_rewrite::parse(cmd).unwrap();
    v.items()
        .unwrap()
        .iter()
        .map(|w| String::from_utf8_lossy(w.bulk().unwrap()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn err(t: &Tenant, line: &str) -> String {
    check(t, line).expect_err(line).to_string()
}

#[test]
fn noperm_uses_redis_wording() {
    let t = Tenant::builder("a")
        .credentials("alice", "pw")
        .prefix("a:")
        .allow(&["@read"])
        .build();
    assert_eq!(
        err(&t, "SET k v"),
        "NOPERM User alice has no permissions to run the 'set' command"
    );
    assert_eq!(
        err(&t, "CONFIG GET x"),
        "NOPERM User alice has no permissions to run the 'config|get' command"
    );
    assert!(check(&t, "GET k").is_ok());
}

#[test]
fn keys_get_the_prefix_wherever_they_are() {
    let t = tenant();
    for (line, want) in [
        ("GET k", "GET a:k"),
        ("MSET x 1 y 2", "MSET a:x 1 a:y 2"),
        (
            "ZUNIONSTORE d 2 s1 s2 WEIGHTS 1 2",
            "ZUNIONSTORE a:d 2 a:s1 a:s2 WEIGHTS 1 2",
        ),
        (
            "LMPOP 2 l1 l2 LEFT COUNT 2",
            "LMPOP 2 a:l1 a:l2 LEFT COUNT 2",
        ),
        (
            "XREAD COUNT 2 STREAMS s1 s2 0 0",
            "XREAD COUNT 2 STREAMS a:s1 a:s2 0 0",
        ),
        (
            "GEORADIUS g 0 0 1 km STORE d",
            "GEORADIUS a:g 0 0 1 km STORE a:d",
        ),
        ("SMOVE s d m", "SMOVE a:s a:d m"),
        ("BITOP AND d x y", "BITOP AND a:d a:x a:y"),
        ("RENAME x y", "RENAME a:x a:y"),
        ("SINTERCARD 2 x y LIMIT 1", "SINTERCARD 2 a:x a:y LIMIT 1"),
        ("XINFO STREAM s", "XINFO STREAM a:s"),
        ("MEMORY USAGE k", "MEMORY USAGE a:k"),
        ("PING", "PING"),
    ] {
        assert_eq!(fwd(&t, line).0, want, "{line}");
    }
    assert_eq!(fwd(&t, "BLPOP l 0").2, ReplyRewrite::FirstKey);
    assert_eq!(fwd(&t, "XREAD STREAMS s 0").2, ReplyRewrite::Streams);
    assert_eq!(fwd(&t, "GET k").2, ReplyRewrite::Errors);
}

#[test]
fn unprefixed_tenant_forwards_raw_bytes() {
    let t = Tenant::builder("solo").allow(&["@all"]).build();
    let a = args("GET k");
    let raw = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    match t.check(resolve(&a).unwrap(), &a, Some(&raw), NOW).unwrap() {
        Plan::Forward(f) => {
            assert_eq!(f.command, raw);
            assert!(f.follow_ups.is_empty());
            assert_eq!(f.reply, ReplyRewrite::None);
        }
        other => panic!("{other:?}"),
    }
    // Keyspace-wide commands are the tenant's own when it is alone.
    assert!(matches!(check(&t, "FLUSHALL"), Ok(Plan::Forward(_))));
}

#[test]
fn keyspace_wide_commands() {
    let t = tenant();
    for line in [
        "CONFIG GET maxmemory",
        "DEBUG SLEEP 0",
        "INFO",
        "MONITOR",
        "CLIENT LIST",
        "CLIENT KILL ID 1",
        "MOVE k 1",
        "COPY x y DB 1",
        "SCRIPT FLUSH",
        "FUNCTION LIST",
        "PUBSUB NUMPAT",
        "MEMORY STATS",
        "SLOWLOG GET",
        "LASTSAVE",
        "CLUSTER GETKEYSINSLOT 1 1",
    ] {
        let e = err(&t, line);
        assert!(
            e.starts_with("ERR '") && e.contains("prefix"),
            "{line}: {e}"
        );
    }
    assert_eq!(fwd(&t, "COPY x y REPLACE").0, "COPY a:x a:y REPLACE");
    assert_eq!(err(&t, "COPY x y BOGUS"), "ERR syntax error");
    for (line, kind) in [
        ("DBSIZE", NamespaceKind::DbSize),
        ("FLUSHDB", NamespaceKind::FlushDb),
        ("flushdb async", NamespaceKind::FlushDb),
        ("FLUSHALL", NamespaceKind::FlushDb),
        ("flushall SYNC", NamespaceKind::FlushDb),
        ("RANDOMKEY", NamespaceKind::RandomKey),
    ] {
        match check(&t, line).unwrap() {
            Plan::Namespace(op) => {
                assert_eq!(op.kind, kind);
                assert_eq!(&op.pattern[..], b"a:*");
            }
            other => panic!("{line}: {other:?}"),
        }
    }
    assert_eq!(err(&t, "FLUSHDB NOW"), "ERR syntax error");
}

#[test]
fn a_tenant_with_a_database_of_its_own_gets_the_upstreams_answers() {
    let t = Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .db(3)
        .build();
    assert_eq!(fwd(&t, "DBSIZE").0, "DBSIZE");
    assert_eq!(fwd(&t, "FLUSHDB").0, "FLUSHDB");
    // Never the upstream's FLUSHALL: it would empty every tenant's database.
    assert_eq!(fwd(&t, "FLUSHALL").0, "FLUSHDB");
    assert_eq!(fwd(&t, "flushall async").0, "FLUSHDB async");
    assert_eq!(fwd(&t, "FLUSHDB SYNC").0, "FLUSHDB SYNC");
    assert_eq!(err(&t, "FLUSHALL NOW"), "ERR syntax error");
    assert_eq!(err(&t, "FLUSHDB SYNC ASYNC"), "ERR syntax error");
    let (cmd, _, reply) = fwd(&t, "RANDOMKEY");
    assert_eq!((cmd.as_str(), reply), ("RANDOMKEY", ReplyRewrite::Key));
    // Keys, patterns and refusals are as for any prefixed tenant.
    assert_eq!(fwd(&t, "KEYS *").0, "KEYS a:*");
    assert_eq!(fwd(&t, "GET k").0, "GET a:k");
    for line in ["MOVE k 1", "CONFIG GET maxmemory"] {
        assert!(err(&t, line).starts_with("ERR '"), "{line}");
    }
}

#[test]
fn patterns_are_confined() {
    let t = Tenant::builder("a")
        .prefix("a[*]:")
        .allow(&["@all"])
        .build();
    assert_eq!(fwd(&t, "KEYS *").0, "KEYS a\\[\\*\\]:*");
    assert_eq!(fwd(&t, "KEYS *").2, ReplyRewrite::Keys);
    assert_eq!(fwd(&t, "SCAN 0").0, "SCAN 0 COUNT 1000 MATCH a\\[\\*\\]:*");
    assert_eq!(
        fwd(&t, "SCAN 0 MATCH u* COUNT 10 TYPE string MATCH x*").0,
        "SCAN 0 COUNT 10 TYPE string COUNT 1000 MATCH a\\[\\*\\]:x*"
    );
    // A larger COUNT is the client's; a bad one goes first, for the upstream's own error.
    assert_eq!(
        fwd(&t, "SCAN 0 COUNT 5000").0,
        "SCAN 0 COUNT 5000 MATCH a\\[\\*\\]:*"
    );
    assert_eq!(
        fwd(&t, "SCAN 0 COUNT x").0,
        "SCAN 0 COUNT x COUNT 1000 MATCH a\\[\\*\\]:*"
    );
    assert_eq!(err(&t, "SCAN 0 MATCH"), "ERR syntax error");
    assert_eq!(fwd(&t, "PUBSUB CHANNELS").0, "PUBSUB CHANNELS a\\[\\*\\]:*");
    assert_eq!(fwd(&t, "PSUBSCRIBE n*").0, "PSUBSCRIBE a\\[\\*\\]:n*");
    assert_eq!(fwd(&t, "PUBLISH ch m").0, "PUBLISH a[*]:ch m");
    assert_eq!(
        fwd(&t, "PUBSUB NUMSUB c1 c2").0,
        "PUBSUB NUMSUB a[*]:c1 a[*]:c2"
    );
}

#[test]
fn scripts_and_sort_patterns() {
    let t = tenant();
    assert!(err(&t, "EVAL x 1 k").contains("tenant.scripts"));
    assert!(err(&t, "SCRIPT LOAD x").contains("tenant.scripts"));
    let s = Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .scripts(true)
        .build();
    assert_eq!(fwd(&s, "EVAL x 2 k1 k2 argv").0, "EVAL x 2 a:k1 a:k2 argv");
    assert_eq!(fwd(&s, "EVAL x 0").0, "EVAL x 0");
    assert!(err(&s, "EVAL x 3 k").contains("greater than number of args"));
    assert_eq!(
        err(&s, "FUNCTION FLUSH bad_arg"),
        "ERR FUNCTION FLUSH only supports SYNC|ASYNC option"
    );
    assert_eq!(
        err(&s, "FUNCTION FLUSH sync extra"),
        "ERR unknown subcommand or wrong number of arguments for 'flush'. Try FUNCTION HELP."
    );

    assert_eq!(fwd(&t, "SORT l").0, "SORT a:l");
    assert_eq!(
        fwd(&t, "SORT l BY nosort GET # LIMIT 0 5 ALPHA DESC STORE d").0,
        "SORT a:l BY nosort GET # LIMIT 0 5 ALPHA DESC STORE a:d"
    );
    assert!(err(&t, "SORT l BY w_*").contains("sort_patterns"));
    assert!(err(&t, "SORT_RO l GET o_*->f").contains("sort_patterns"));
    assert_eq!(err(&t, "SORT_RO l STORE d"), "ERR syntax error");
    assert_eq!(
        err(&t, "SORT l LIMIT 0 x"),
        "ERR value is not an integer or out of range"
    );
    let p = Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .sort_patterns(true)
        .build();
    assert_eq!(
        fwd(&p, "SORT l BY w_* GET o_*->f GET # STORE store").0,
        "SORT a:l BY a:w_* GET a:o_*->f GET # STORE a:store"
    );
}

#[test]
fn value_limit() {
    let t = Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .max_value_bytes(4)
        .build();
    assert_eq!(
        err(&t, "SET k 12345"),
        "ERR value of 5 bytes is over this tenant's limit of 4 bytes (tenant.max_value_bytes)"
    );
    assert!(check(&t, "SET k 1234").is_ok());
    assert!(
        check(&t, "SET longkeyname 1").is_ok(),
        "keys are not values"
    );
    for line in [
        "APPEND k 12345",
        "HSET h f 1 g 12345",
        "LPUSH l 1 12345",
        "SETRANGE k 0 12345",
        "MSET a 1 b 12345",
        "XADD s * f 12345",
        "RESTORE k 0 12345",
        "ZADD z 1 12345",
    ] {
        assert!(err(&t, line).contains("over this tenant's limit"), "{line}");
    }
    assert!(check(&t, "GET 12345678").is_ok(), "reads are not limited");
}

fn rule(max: Option<i64>, default: Option<i64>) -> TtlRule {
    TtlRule::new("*", max, default, OnExcess::Cap)
}

#[test]
fn set_ttl_options() {
    let t = with_ttl(rule(Some(10_000), Some(1_000)));
    assert_eq!(fwd(&t, "SET k v").0, "SET a:k v PX 1000");
    assert_eq!(fwd(&t, "SET k v NX GET").0, "SET a:k v NX GET PX 1000");
    assert_eq!(fwd(&t, "SET k v EX 5").0, "SET a:k v EX 5");
    assert_eq!(fwd(&t, "SET k v ex 50").0, "SET a:k v PX 10000");
    assert_eq!(fwd(&t, "SET k v EX 1 EX 50 XX").0, "SET a:k v XX PX 10000");
    assert_eq!(fwd(&t, "SET k v PX 20000").0, "SET a:k v PX 10000");
    assert_eq!(
        fwd(&t, &format!("SET k v PXAT {}", NOW + 5_000)).0,
        format!("SET a:k v PXAT {}", NOW + 5_000)
    );
    assert_eq!(
        fwd(&t, &format!("SET k v EXAT {}", NOW / 1000 + 50)).0,
        "SET a:k v PX 10000"
    );
    let (cmd, follow, _) = fwd(&t, "SET k v KEEPTTL");
    assert_eq!(cmd, "SET a:k v KEEPTTL");
    assert_eq!(follow, vec!["PEXPIRE a:k 1000 NX"]);
    assert_eq!(err(&t, "SET k v EX 1 PX 2"), "ERR syntax error");
    assert_eq!(err(&t, "SET k v KEEPTTL EX 1"), "ERR syntax error");
    assert_eq!(err(&t, "SET k v NX XX"), "ERR syntax error");
    assert_eq!(err(&t, "SET k v EX"), "ERR syntax error");
    assert_eq!(
        err(&t, "SET k v EX 0"),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(&t, "SET k v EX x"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(err(&t, "SET k v PERSIST"), "ERR syntax error");

    let refuse = with_ttl(TtlRule::new("*", Some(10_000), None, OnExcess::Refuse));
    assert_eq!(
        err(&refuse, "SET k v PX 20000"),
        "ERR TTL of 20000 ms is over this tenant's limit of 10000 ms for this key (tenant.ttl)"
    );
    assert_eq!(
        fwd(&refuse, "SET k v").0,
        "SET a:k v PX 10000",
        "default is the max"
    );
}

#[test]
fn rules_by_pattern() {
    let t = Tenant::builder("a")
        .prefix("a:")
        .allow(&["@all"])
        .ttl(TtlRule::new(
            "s:*",
            Some(60_000),
            Some(5_000),
            OnExcess::Cap,
        ))
        .build();
    assert_eq!(fwd(&t, "SET s:1 v").0, "SET a:s:1 v PX 5000");
    assert_eq!(fwd(&t, "SET other v").0, "SET a:other v", "no rule, no TTL");
    assert_eq!(
        fwd(&t, "SET other v EX 999999").0,
        "SET a:other v EX 999999"
    );
}

#[test]
fn getex_setex_expire_persist_restore() {
    let t = with_ttl(rule(Some(10_000), Some(1_000)));
    assert_eq!(fwd(&t, "GETEX k").0, "GETEX a:k");
    assert_eq!(fwd(&t, "GETEX k EX 100").0, "GETEX a:k PX 10000");
    assert_eq!(fwd(&t, "GETEX k PERSIST").0, "GETEX a:k PX 10000");
    assert_eq!(err(&t, "GETEX k PERSIST EX 1"), "ERR syntax error");
    assert_eq!(fwd(&t, "SETEX k 5 v").0, "SETEX a:k 5 v");
    assert_eq!(fwd(&t, "SETEX k 50 v").0, "PSETEX a:k 10000 v");
    assert_eq!(fwd(&t, "PSETEX k 50000 v").0, "PSETEX a:k 10000 v");
    assert_eq!(
        err(&t, "SETEX k 0 v"),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(fwd(&t, "EXPIRE k 5").0, "EXPIRE a:k 5");
    assert_eq!(fwd(&t, "EXPIRE k 50 GT").0, "PEXPIRE a:k 10000 GT");
    assert_eq!(fwd(&t, "pexpire k 50000 lt").0, "PEXPIRE a:k 10000 LT");
    assert_eq!(
        fwd(&t, "EXPIRE k -1").0,
        "EXPIRE a:k -1",
        "deleting is always allowed"
    );
    assert_eq!(
        fwd(&t, &format!("PEXPIREAT k {}", NOW + 50_000)).0,
        "PEXPIRE a:k 10000"
    );
    assert_eq!(
        fwd(&t, &format!("EXPIREAT k {}", NOW / 1000 + 5)).0,
        format!("EXPIREAT a:k {}", NOW / 1000 + 5)
    );
    assert_eq!(
        err(&t, "EXPIRE k 5 NX XX"),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&t, "EXPIRE k 5 GT LT"),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(err(&t, "EXPIRE k 5 FOO"), "ERR Unsupported option FOO");
    assert_eq!(
        err(&t, "EXPIRE k 9223372036854775807"),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(fwd(&t, "PERSIST k").0, "PEXPIRE a:k 10000");
    let refuse = with_ttl(TtlRule::new("*", Some(10_000), None, OnExcess::Refuse));
    assert!(err(&refuse, "PERSIST k").contains("PERSIST would remove the TTL"));
    assert!(err(&refuse, "EXPIRE k 50").contains("TTL of 50000 ms"));

    assert_eq!(fwd(&t, "RESTORE k 0 payload").0, "RESTORE a:k 1000 payload");
    assert_eq!(
        fwd(&t, "RESTORE k 50000 payload REPLACE").0,
        "RESTORE a:k 10000 payload REPLACE"
    );
    assert_eq!(
        fwd(&t, "RESTORE k 0 payload ABSTTL").0,
        format!("RESTORE a:k {} payload ABSTTL", NOW + 1_000)
    );
    assert_eq!(
        fwd(
            &t,
            &format!("RESTORE k {} payload ABSTTL IDLETIME 5", NOW + 99_000)
        )
        .0,
        format!("RESTORE a:k {} payload ABSTTL IDLETIME 5", NOW + 10_000)
    );
    assert_eq!(
        err(&t, "RESTORE k -1 payload"),
        "ERR Invalid TTL value, must be >= 0"
    );
    assert_eq!(
        err(&t, "RESTORE k 0 payload IDLETIME 1 FREQ 1"),
        "ERR syntax error"
    );
}

#[test]
fn default_ttl_follow_ups() {
    let t = with_ttl(rule(Some(10_000), Some(1_000)));
    for (line, keys) in [
        ("INCR k", vec!["a:k"]),
        ("HSET h f v", vec!["a:h"]),
        ("LPUSH l x", vec!["a:l"]),
        ("SADD s x", vec!["a:s"]),
        ("ZADD z 1 x", vec!["a:z"]),
        ("XADD s * f v", vec!["a:s"]),
        ("MSET x 1 y 2 x 3", vec!["a:x", "a:y"]),
        ("SUNIONSTORE d s1 s2", vec!["a:d"]),
        ("ZUNIONSTORE d 1 s1", vec!["a:d"]),
        ("LMOVE s d LEFT RIGHT", vec!["a:d"]),
        ("SORT l STORE d", vec!["a:d"]),
        ("PFMERGE d s", vec!["a:d"]),
        ("GET k", vec![]),
        ("DEL k", vec![]),
        ("LPOP l", vec![]),
    ] {
        let (_, follow, _) = fwd(&t, line);
        let want: Vec<String> = keys
            .iter()
            .map(|k| format!("PEXPIRE {k} 1000 NX"))
            .collect();
        assert_eq!(follow, want, "{line}");
    }
    let (_, follow, _) = fwd(&t, "RENAME x y");
    assert_eq!(follow, vec!["PEXPIRE a:y 1000 NX", "PEXPIRE a:y 10000 LT"]);
    let (_, follow, _) = fwd(&t, "COPY x y");
    assert_eq!(follow, vec!["PEXPIRE a:y 1000 NX", "PEXPIRE a:y 10000 LT"]);
}

#[test]
fn config_to_check() {
    let src = r#"
[[tenant]]
name = "a"
username = "alice"
password = "pw"
prefix = "a:"
allow = ["+@all"]
[[tenant.ttl]]
pattern = "*"
max_ms = 1000
"#;
    let tenants = config::from_toml(src, "t.toml").unwrap();
    let a = tenants.authenticate(b"alice", b"pw").unwrap();
    let argv = args("SET k v");
    match a.check(resolve(&argv).unwrap(), &argv, None, NOW).unwrap() {
        Plan::Forward(f) => assert_eq!(words(&f.command), "SET a:k v PX 1000"),
        other => panic!("{other:?}"),
    }
}

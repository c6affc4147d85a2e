//! Unit tests of the engine through its public entry point.
use bytes::Bytes;

use super::Engine;
use crate::command::resolve;
use crate::protocol::Protocol;

fn run(e: &Engine, proto: Protocol, now: u64, words: &[&str]) -> String {
    let args: Vec<Bytes> = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let spec = resolve(&args).expect("resolves");
    String::from_utf8_lossy(&e.execute(spec, &args, proto, now)).into_owned()
}

const R2: Protocol = Protocol::Resp2;
const R3: Protocol = Protocol::Resp3;

#[test]
fn strings_and_ttl() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 1000, &["set", "k", "v", "px", "500"]),
        "+OK\r\n"
    );
    assert_eq!(run(&e, R2, 1000, &["pttl", "k"]), ":500\r\n");
    assert_eq!(run(&e, R2, 1499, &["get", "k"]), "$1\r\nv\r\n");
    assert_eq!(run(&e, R2, 1500, &["get", "k"]), "$-1\r\n");
    assert_eq!(run(&e, R3, 1500, &["get", "k"]), "_\r\n");
    assert_eq!(
        run(&e, R2, 0, &["set", "k", "v", "nx", "xx"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["set", "k", "v", "ex", "0"]),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["incrbyfloat", "f", "1.1"]),
        "$3\r\n1.1\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["incr", "f"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["lpush", "l", "a"]), ":1\r\n");
    assert_eq!(
        run(&e, R2, 0, &["get", "l"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
}

#[test]
fn expiry_is_swept() {
    let e = Engine::new(0);
    run(&e, R2, 0, &["set", "a", "1", "px", "10"]);
    run(&e, R2, 0, &["set", "b", "1"]);
    e.sweep(10);
    assert_eq!(run(&e, R2, 10, &["dbsize"]), ":1\r\n");
    assert_eq!(
        run(&e, R2, 10, &["scan", "0"]),
        "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n"
    );
}

#[test]
fn zset_doubles_follow_protocol() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["zadd", "z", "1.1", "a", "2", "b"]),
        ":2\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["zscore", "z", "a"]),
        "$18\r\n1.1000000000000001\r\n"
    );
    assert_eq!(run(&e, R3, 0, &["zscore", "z", "b"]), ",2\r\n");
    assert_eq!(
        run(&e, R3, 0, &["zrange", "z", "0", "-1", "withscores"]),
        "*2\r\n*2\r\n$1\r\na\r\n,1.1000000000000001\r\n*2\r\n$1\r\nb\r\n,2\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["zrevrank", "z", "a"]), ":1\r\n");
}

#[test]
fn memory_bound_evicts() {
    let e = Engine::new(10_000);
    for i in 0..1000 {
        let k = format!("key{i}");
        assert_eq!(run(&e, R2, 0, &["set", &k, &"x".repeat(100)]), "+OK\r\n");
    }
    assert!(e.used_memory() <= 10_000);
    let big = "x".repeat(20_000);
    assert!(run(&e, R2, 0, &["set", "big", &big]).starts_with("-OOM"));
}

#[test]
fn unsupported_is_named() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["xlen", "s"]),
        "-ERR 'xlen' is not supported by respite's local engine\r\n"
    );
}

#[test]
fn unsupported_without_arguments_does_not_panic() {
    let e = Engine::new(0);
    assert_eq!(
        run(&e, R2, 0, &["lastsave"]),
        "-ERR 'lastsave' is not supported by respite's local engine\r\n"
    );
}

#[test]
fn engine_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn keys_and_scan_use_redis_globs() {
    let e = Engine::new(0);
    run(&e, R2, 0, &["mset", "a1", "x", "b1", "y", "a[", "z"]);
    assert_eq!(run(&e, R2, 0, &["keys", "a\\["]), "*1\r\n$2\r\na[\r\n");
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "match", "b*", "count", "5"]),
        "*2\r\n$1\r\n0\r\n*1\r\n$2\r\nb1\r\n"
    );
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "type", "hash"]),
        "*2\r\n$1\r\n0\r\n*0\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["scan", "x"]), "-ERR invalid cursor\r\n");
    assert_eq!(
        run(&e, R2, 0, &["scan", "0", "count", "0"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn randomkey_and_flush() {
    let e = Engine::new(0);
    assert_eq!(run(&e, R3, 0, &["randomkey"]), "_\r\n");
    run(&e, R2, 0, &["set", "only", "1"]);
    assert_eq!(run(&e, R2, 0, &["randomkey"]), "$4\r\nonly\r\n");
    assert_eq!(run(&e, R2, 0, &["flushall", "async"]), "+OK\r\n");
    assert_eq!(
        run(&e, R2, 0, &["flushall", "now"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(run(&e, R2, 0, &["dbsize"]), ":0\r\n");
    assert_eq!(e.used_memory(), 0);
}

//! A bounded fuzz run with a checker (issue 13): clients sending mutated and random RESP alongside
//! a client that SETs and GETs unique values and verifies every reply. Whatever the fuzzed clients
//! do to their own sessions, the checker's replies are always exactly its own.
use crate::support::{Kind, Proxy, Raw, Server, encode, words};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), seeded per client so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One fuzzed request: a valid command, then perhaps mutated, truncated or replaced by noise.
fn fuzzed(rng: &mut Rng) -> Vec<u8> {
    const COMMANDS: &[&str] = &[
        "GET k",
        "SET k v",
        "INCR n",
        "MGET a b c",
        "PING",
        "ECHO hi",
        "DEL k",
        "HSET h f v",
        "LPUSH l x",
        "EXPIRE k 10",
        "MULTI",
        "EXEC",
        "CLIENT SETNAME x",
        "SELECT 0",
        "HELLO 3",
        "HELLO 2",
        "QUIT",
        "SUBSCRIBE c",
        "WATCH k",
        "DISCARD",
    ];
    let mut out = encode(&words(COMMANDS[rng.below(COMMANDS.len())]));
    match rng.below(6) {
        0 => {
            let at = rng.below(out.len());
            out[at] = rng.next() as u8;
        }
        1 => out.truncate(rng.below(out.len())),
        2 => out = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        3 => out.extend(format!("*{}\r\n", rng.next() % 5000).as_bytes()),
        _ => {}
    }
    out
}

#[test]
fn fuzzed_clients_never_disturb_a_checker() {
    let server = Server::start(Kind::Redis);
    let proxy = Proxy::start_with(&server.url(), &[("local_only.enabled", "false")]);
    let stop = Arc::new(AtomicBool::new(false));
    let fuzzers: Vec<_> = (0..4u64)
        .map(|seed| {
            let (addr, stop) = (proxy.addr, stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                let mut sink = [0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    for _ in 0..rng.below(50) + 1 {
                        if s.write_all(&fuzzed(&mut rng)).is_err() {
                            break;
                        }
                        // Sometimes read, sometimes not: both kinds of client.
                        if rng.below(2) == 0 {
                            let _ = s.read(&mut sink);
                        }
                    }
                }
            })
        })
        .collect();
    let mut checker = proxy.raw();
    let start = Instant::now();
    let mut checked = 0;
    while start.elapsed() < Duration::from_secs(5) {
        let value = format!("checked:{checked}");
        let mut both = encode(&[b"SET", b"checker:key", value.as_bytes()]);
        both.extend(encode(&words("GET checker:key")));
        checker.send(&both);
        assert_eq!(checker.reply().unwrap(), b"+OK\r\n", "SET {checked}");
        assert_eq!(
            checker.reply().unwrap(),
            format!("${}\r\n{value}\r\n", value.len()).as_bytes(),
            "GET {checked}"
        );
        checked += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for f in fuzzers {
        f.join().unwrap();
    }
    assert!(checked > 50, "only {checked} checks ran");
    // And respite still serves fresh clients.
    assert_eq!(Raw::connect(proxy.addr).cmd(&words("PING")), b"+PONG\r\n");
}

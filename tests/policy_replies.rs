//! Reply rewriting against live servers: what a prefixed tenant sees through respite equals what a
//! private server holding the unprefixed keys answers, in RESP2 and RESP3. Database 0 holds the
//! tenant's keys (and another tenant's, as noise); database 1 plays the private server.
mod policy_support;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use policy_support::{Conn, decode_bulks, show};
use respite::policy::Tenant;
use support::{KINDS, Kind, Server};

fn tenant() -> Tenant {
    Tenant::builder("t")
        .prefix("t[1]:")
        .allow(&["@all"])
        .build()
}

struct Pair {
    shared: Conn,
    private: Conn,
    t: Tenant,
    kind: Kind,
}

impl Pair {
    fn new(server: &Server, resp3: bool) -> Pair {
        let mut shared = Conn::to(server);
        let mut private = Conn::to(server);
        private.line("SELECT 1");
        if resp3 {
            shared.resp3();
            private.resp3();
        }
        shared.line("FLUSHALL");
        Pair {
            shared,
            private,
            t: tenant(),
            kind: server.kind,
        }
    }

    /// Run `line` both ways; return (through respite, private).
    fn both(&mut self, line: &str) -> (Bytes, Bytes) {
        let via = self.shared.via_line(&self.t, line);
        let private = self.private.line(line);
        (via, private)
    }

    fn same(&mut self, line: &str) {
        let (via, private) = self.both(line);
        assert_eq!(
            show(&via),
            show(&private),
            "{:?} {:?}: {line}",
            self.kind,
            self.shared.proto
        );
    }

    /// Same elements, order aside (hash order differs with different names).
    fn same_set(&mut self, line: &str) {
        let (via, private) = self.both(line);
        let set = |b: &Bytes| -> BTreeSet<Bytes> {
            decode_bulks(b)
                .unwrap_or_else(|| panic!("{line}: {}", show(b)))
                .into_iter()
                .collect()
        };
        assert_eq!(set(&via), set(&private), "{:?}: {line}", self.kind);
    }

    fn scan_all(&mut self, options: &str) -> (BTreeSet<Bytes>, BTreeSet<Bytes>) {
        let mut out = Vec::new();
        for through in [true, false] {
            let mut keys = BTreeSet::new();
            let mut cursor = "0".to_string();
            loop {
                let line = format!("SCAN {cursor} {options}");
                let reply = if through {
                    self.shared.via_line(&self.t, &line)
                } else {
                    self.private.line(&line)
                };
                let (next, batch) = split_scan(&reply);
                keys.extend(batch);
                cursor = next;
                if cursor == "0" {
                    break;
                }
            }
            out.push(keys);
        }
        let private = out.pop().unwrap();
        (out.pop().unwrap(), private)
    }
}

/// `*2 $n cursor *m keys…` → (cursor, keys).
fn split_scan(reply: &[u8]) -> (String, Vec<Bytes>) {
    let text = reply;
    // The cursor is the first bulk; the rest is an array of bulks.
    let first = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    let rest = &text[first..];
    let len_end = rest.iter().position(|&b| b == b'\r').unwrap();
    let len: usize = std::str::from_utf8(&rest[1..len_end])
        .unwrap()
        .parse()
        .unwrap();
    let cursor = std::str::from_utf8(&rest[len_end + 2..len_end + 2 + len])
        .unwrap()
        .to_string();
    let keys = decode_bulks(&rest[len_end + 4 + len..]).unwrap();
    (cursor, keys)
}

fn populate(p: &mut Pair) {
    for line in [
        "SET a 1",
        "SET b 2",
        "SET user:1 x",
        "SET user:2 y",
        "RPUSH list1 a b c",
        "RPUSH list2 d",
        "ZADD z 1 m 2 n",
        "XADD s1 1-1 f v",
        "XADD s1 2-1 g w",
        "XADD s2 1-1 h x",
        "HSET h f v",
    ] {
        p.same(line);
    }
    // Another tenant's keys on the same server, which must never show up.
    for line in [
        "SET other:a 1",
        "SET t:a 1",
        "RPUSH other:list1 q",
        "XADD other:s1 1-1 f v",
    ] {
        p.shared.line(line);
    }
}

#[test]
fn replies_match_a_private_server() {
    for kind in KINDS {
        let server = Server::start(kind);
        for resp3 in [false, true] {
            let mut p = Pair::new(&server, resp3);
            populate(&mut p);
            p.same_set("KEYS *");
            p.same_set("KEYS user:*");
            p.same_set("KEYS [ab]");
            p.same_set("KEYS nothing*");
            let (via, private) = p.scan_all("COUNT 3");
            assert_eq!(via, private, "{kind:?} SCAN");
            assert_eq!(via.len(), 10);
            let (via, private) = p.scan_all("MATCH user:* COUNT 2");
            assert_eq!(via, private, "{kind:?} SCAN MATCH");
            let (via, private) = p.scan_all("TYPE list");
            assert_eq!(via, private, "{kind:?} SCAN TYPE");
            p.same("DBSIZE");

            p.same("BLPOP list1 0.01");
            p.same("BRPOP list2 list1 0.01");
            p.same("BLPOP missing 0.01");
            p.same("LMPOP 2 missing list1 RIGHT COUNT 5");
            p.same("LMPOP 1 missing LEFT");
            p.same("ZMPOP 1 z MIN");
            p.same("BZPOPMAX z 0.01");
            p.same("BZMPOP 0.01 1 z MAX");
            p.same("XREAD COUNT 1 STREAMS s1 s2 0 0");
            p.same("XREAD STREAMS s1 s2 0 0");
            p.same("XREAD STREAMS s1 9-0");
            p.same("XREADGROUP GROUP g c STREAMS s1 >");
            p.same("XGROUP CREATE s1 g 0");
            p.same("XREADGROUP GROUP g c COUNT 1 STREAMS s1 >");
            p.same("XINFO STREAM missing");

            // One key left: RANDOMKEY must find it, whichever way.
            p.same("FLUSHDB");
            assert_eq!(
                show(&p.shared.line("GET other:a")),
                "$1 1 ",
                "other tenants' keys survive FLUSHDB"
            );
            p.same("RANDOMKEY");
            p.same("SET only 1");
            p.same("RANDOMKEY");
            p.same("DBSIZE");
            p.same("FLUSHDB ASYNC");
            p.same("DBSIZE");
        }
    }
}

//! Connection commands respite answers itself (CLIENT SETNAME, GETNAME, NO-EVICT, ID, INFO)
//! inside MULTI: queued as Redis queues them and answered in their place in EXEC's array, their
//! effects applied only if EXEC ran. Compared byte for byte with the upstream's own transcript
//! (ids aside), in RESP2 and RESP3, queued by respite and streamed on a pinned connection.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, text, words};

/// A transcript: each line's reply. `WATCHER` lines are sent by a second client of the same
/// place (to break a WATCH).
const SCRIPT: &str = "
MULTI
CLIENT SETNAME first
SET k v
CLIENT GETNAME
INCR c
CLIENT NO-EVICT on
CLIENT SETNAME second
CLIENT GETNAME
EXEC
CLIENT GETNAME
MULTI
CLIENT SETNAME bad name
GET k
EXEC
CLIENT GETNAME
WATCH w
MULTI
CLIENT SETNAME watched
INCR c
EXEC
CLIENT GETNAME
WATCH w
OTHER SET w changed
MULTI
CLIENT SETNAME never
INCR c
EXEC
CLIENT GETNAME
MULTI
CLIENT SETNAME x
NOSUCHCOMMAND
EXEC
CLIENT GETNAME
GET c
";

fn run(mut c: Raw, mut other: Raw, resp3: bool) -> Vec<String> {
    if resp3 {
        c.cmd(&words("HELLO 3"));
    }
    SCRIPT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.strip_prefix("OTHER ") {
            Some(rest) => format!("{l} -> {}", text(other.cmd(&words(rest)))),
            None => format!("{l} -> {}", text(c.cmd(&words(l)))),
        })
        .collect()
}

both!(connection_commands_inside_multi_as_redis, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for resp3 in [false, true] {
        server.raw().cmd(&words("FLUSHALL"));
        let direct = run(server.raw(), server.raw(), resp3);
        server.raw().cmd(&words("FLUSHALL"));
        let proxied = run(proxy.raw(), proxy.raw(), resp3);
        assert_eq!(proxied, direct, "resp3: {resp3}");
    }
    // CLIENT ID and INFO inside EXEC are respite's own client's.
    let mut c = proxy.raw();
    let id = text(c.cmd(&words("CLIENT ID")));
    c.cmd(&words("MULTI"));
    c.cmd(&words("CLIENT ID"));
    c.cmd(&words("CLIENT INFO"));
    c.cmd(&words("PING"));
    let exec = text(c.cmd(&words("EXEC")));
    let id_num = id.trim_start_matches(':').trim();
    assert!(exec.starts_with(&format!("*3\r\n{id}")), "{exec}");
    assert!(exec.contains(&format!("id={id_num} ")), "{exec}");
    assert!(exec.ends_with("+PONG\r\n"), "{exec}");
});

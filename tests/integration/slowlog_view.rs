//! SLOWLOG GET through respite shows the clients' commands, none of respite's own (batch
//! markers, health probes, lease resets), as Redis's slowlog.tcl reads it with
//! `slowlog-log-slower-than 0`: entry 0 is the command just run, and a trimmed SADD sits right
//! before the SLOWLOG RESET. Compared with a direct client's view of the same commands.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, Value, words};
use std::time::Duration;

/// The argument lists of SLOWLOG GET's entries, newest first.
fn entries(c: &mut Raw, get: &str) -> Vec<Vec<String>> {
    let Value::Arr(entries) = Value::decode(&c.cmd(&words(get))) else {
        panic!("an array");
    };
    entries
        .into_iter()
        .map(|e| match e {
            Value::Arr(fields) => match &fields[3] {
                Value::Arr(args) => args
                    .iter()
                    .map(|a| match a {
                        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

fn scenario(c: &mut Raw, connect: &dyn Fn() -> Raw, server: &Server) -> Vec<Vec<Vec<String>>> {
    let mut seen = Vec::new();
    // A BLPOP released by a transaction: through respite its pinned connection is then reset
    // and checked (RESET, HELLO, CLIENT INFO), none of which is the client's.
    let mut rd = connect();
    rd.send(&crate::support::encode(&words("BLPOP l 0")));
    crate::support::wait_until(Duration::from_secs(5), || server.blocked_clients() == 1)
        .expect("BLPOP blocks");
    for line in ["MULTI", "LPUSH l foo", "SLOWLOG RESET", "EXEC"] {
        c.cmd(&words(line));
    }
    rd.reply().expect("BLPOP's reply");
    drop(rd);
    std::thread::sleep(Duration::from_millis(300));
    seen.push(entries(c, "SLOWLOG GET 1"));
    c.cmd(&words("SADD set a b c d e"));
    c.cmd(&words("SLOWLOG RESET"));
    c.cmd(&words("SPOP set 10"));
    // Long enough for respite's health probe (every 250 ms) to be logged too.
    std::thread::sleep(Duration::from_millis(600));
    seen.push(entries(c, "SLOWLOG GET 1"));
    c.cmd(&words("SLOWLOG RESET"));
    let many: Vec<String> = (3..=33).map(|n| n.to_string()).collect();
    c.cmd(&words(&format!("SADD set {}", many.join(" "))));
    std::thread::sleep(Duration::from_millis(300));
    seen.push(entries(c, "SLOWLOG GET"));
    seen
}

both!(slowlog_shows_the_clients_commands_only, |kind: Kind| {
    let server = Server::start(kind);
    assert_eq!(
        server
            .raw()
            .cmd(&words("CONFIG SET slowlog-log-slower-than 0")),
        b"+OK\r\n"
    );
    let direct = scenario(&mut server.raw(), &|| server.raw(), &server);
    assert_eq!(direct[0], vec![vec!["BLPOP", "l", "0"]]);
    assert_eq!(direct[1], vec![vec!["SPOP", "set", "10"]]);
    // Started only now: directly, respite's probe would be among the direct client's entries.
    let proxy = Proxy::start(&server.url());
    let through = scenario(&mut proxy.raw(), &|| proxy.raw(), &server);
    assert_eq!(through, direct);
    // The upstream's own log does hold respite's markers: they are left out, not absent.
    let all = entries(&mut server.raw(), "SLOWLOG GET -1");
    assert!(
        all.iter()
            .any(|a| a.len() == 2 && a[0].eq_ignore_ascii_case("ping")),
        "{all:?}"
    );
    // A count the upstream refuses is its own error.
    let bad = proxy.raw().cmd(&words("SLOWLOG GET -5"));
    assert_eq!(bad, server.raw().cmd(&words("SLOWLOG GET -5")));
});

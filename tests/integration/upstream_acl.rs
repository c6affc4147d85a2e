//! An upstream user's ACL through respite (issue 21, finding 10): a client logged in as one of
//! the upstream's users is refused what that user may not run — MONITOR, SUBSCRIBE and its
//! family (channel rules included), the CLIENT subcommands respite answers itself, CLIENT
//! TRACKING — with the server's own `-NOPERM` text, byte for byte as a direct connection of the
//! same user gets it, and nothing of it happens upstream (no monitor, no subscriber among the
//! upstream's clients). What the user may run still works.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, wait_until, words};
use std::time::Duration;

fn login(c: &mut Raw, user: &str) {
    assert_eq!(c.cmd(&[b"AUTH", user.as_bytes(), b"pw"]), b"+OK\r\n");
}

/// Refused to `limited` by its ACL (`-monitor -ssubscribe -client|setname -client|list
/// -client|tracking`, channels `allowed*` only).
const REFUSED: &[&str] = &[
    "MONITOR",
    "SUBSCRIBE other",
    "SUBSCRIBE allowed1 other",
    "PSUBSCRIBE other*",
    "SSUBSCRIBE allowed1",
    "CLIENT SETNAME x",
    "CLIENT LIST",
    "CLIENT TRACKING ON",
];

both!(
    an_upstream_users_acl_holds_for_what_respite_serves,
    |kind: Kind| {
        let server = Server::start(kind);
        let mut admin = server.raw();
        for user in [
            "ACL SETUSER limited reset on >pw ~* &allowed* +@all -monitor -ssubscribe -client|setname -client|list -client|tracking",
            // No MULTI: respite checks with ACL DRYRUN instead.
            "ACL SETUSER nomulti reset on >pw ~* &allowed* +@all -multi -monitor",
            "ACL SETUSER full reset on >pw ~* &* +@all",
        ] {
            assert_eq!(admin.cmd(&words(user)), b"+OK\r\n");
        }
        let proxy = Proxy::start(&server.url());
        for line in REFUSED {
            let mut d = server.raw();
            login(&mut d, "limited");
            let mut p = proxy.raw();
            login(&mut p, "limited");
            let direct = String::from_utf8_lossy(&d.cmd(&words(line))).into_owned();
            assert!(direct.starts_with("-NOPERM"), "{line}: {direct}");
            let proxied = String::from_utf8_lossy(&p.cmd(&words(line))).into_owned();
            assert_eq!(proxied, direct, "{line}");
            // The client carries on as the same user.
            assert_eq!(p.cmd(&words("SET k v")), b"+OK\r\n", "{line}");
        }
        let mut p = proxy.raw();
        login(&mut p, "nomulti");
        let refused = String::from_utf8_lossy(&p.cmd(&words("MONITOR"))).into_owned();
        assert!(
            refused.starts_with("-NOPERM") && refused.contains("'monitor'"),
            "{refused}"
        );
        assert_eq!(p.cmd(&words("SET k v")), b"+OK\r\n");
        // Nothing of it upstream: no monitor, no subscriber of `other`.
        let list = String::from_utf8_lossy(&admin.cmd(&words("CLIENT LIST"))).into_owned();
        assert!(
            !list.lines().any(|l| l.contains(" flags=O ")),
            "a monitor upstream: {list}"
        );
        assert_eq!(
            admin.cmd(&words("PUBSUB NUMSUB other")),
            b"*2\r\n$5\r\nother\r\n:0\r\n"
        );

        // What the user may run goes through: a channel of its own, and (for `full`) MONITOR.
        let mut sub = proxy.raw();
        login(&mut sub, "limited");
        let mut d = server.raw();
        login(&mut d, "limited");
        assert_eq!(
            sub.cmd(&words("SUBSCRIBE allowed1")),
            d.cmd(&words("SUBSCRIBE allowed1"))
        );
        let mut mon = proxy.raw();
        login(&mut mon, "full");
        assert_eq!(mon.cmd(&words("MONITOR")), b"+OK\r\n");
        wait_until(Duration::from_secs(10), || {
            server.raw().cmd(&words("PUBLISH allowed1 hello")) == b":2\r\n"
        })
        .expect("respite's subscription and the direct one");
        let message = String::from_utf8_lossy(&sub.reply().unwrap()).into_owned();
        assert!(message.contains("hello"), "{message}");
        let mut writer = proxy.raw();
        assert_eq!(writer.cmd(&words("SET seen-by-monitor 1")), b"+OK\r\n");
        loop {
            let line = String::from_utf8_lossy(&mon.reply().expect("a monitor line")).into_owned();
            if line.contains("seen-by-monitor") {
                break;
            }
        }
    }
);

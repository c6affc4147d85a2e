//! Outages that lose nothing (issue 20): writes local-only mode cannot judge are refused, not
//! guessed. Judged by the upstream's own keys.
use super::busy_not_down::{health, wait_healthy};
use crate::both;
use crate::support::{Kind, Proxy, Server, wait_until, words};
use std::time::Duration;

pub(crate) fn wait_state(proxy: &Proxy, state: &str) {
    wait_until(Duration::from_secs(15), || health(proxy).0 == state)
        .unwrap_or_else(|| panic!("never {state}: {:?}", health(proxy)));
}

fn text(r: &[u8]) -> String {
    String::from_utf8_lossy(r).trim_end().to_string()
}

both!(
    conditional_writes_are_refused_unless_a_rule_allows_them,
    |kind: Kind| {
        let server = Server::start(kind);
        let rules = "[[local_only.rule]]\npattern = \"mine:*\"\nwrites = \"apply\"\n";
        let proxy = Proxy::start_with_config(&server.url(), rules, &[]);
        let mut p = proxy.raw();
        // A lock held upstream when the outage begins, and a queue with an element in it.
        assert_eq!(p.cmd(&words("SET lock:job holder PX 60000")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("RPUSH q first")), b":1\r\n");
        wait_healthy(&proxy);
        server.signal("STOP");
        wait_state(&proxy, "down");
        for line in [
            "SET lock:job me NX PX 5000",
            "SET lock:job me XX",
            "SET lock:job me GET",
            "SETNX lock:job me",
            "MSETNX lock:job me other 1",
            "HSETNX h f v",
            "GETSET lock:job me",
            "GETDEL lock:job",
            "LPOP q",
            "LMOVE q q2 LEFT RIGHT",
            "SINTERSTORE d a b",
            "EXPIRE lock:job 1 NX",
            "EVAL return 1 1 lock:job",
        ] {
            let r = text(&p.cmd(&words(line)));
            assert!(
                r.starts_with("-TRYAGAIN") && r.contains("cannot know"),
                "{line}: {r}"
            );
        }
        // A rule naming the key allows them; unconditional writes are applied as before.
        assert_eq!(p.cmd(&words("SET mine:lock me NX")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("SET plain v")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("INCR n")), b":1\r\n");
        server.signal("CONT");
        wait_healthy(&proxy);
        // The upstream's own state: the lock still has its one holder, the queue its element.
        let mut u = server.raw();
        assert_eq!(text(&u.cmd(&words("GET lock:job"))), "$6\r\nholder");
        assert_eq!(text(&u.cmd(&words("LRANGE q 0 -1"))), "*1\r\n$5\r\nfirst");
        // Through respite again: the lock is refused to a second holder.
        assert_eq!(p.cmd(&words("SET lock:job me NX")), b"$-1\r\n");
    }
);

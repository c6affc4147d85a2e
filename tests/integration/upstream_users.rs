//! Clients that log in as the upstream's own users (respite without tenants): HELLO's AUTH
//! option is checked by the upstream as AUTH is, over RESP2 and RESP3, and the user's ACLs
//! keep applying to what the client does — judged by the upstream's own keys and replies.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, bulk, text, wait_until, words};
use std::time::Duration;

both!(hello_auth_is_checked_by_the_upstream, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut d = server.raw();
    assert_eq!(
        d.cmd(&words(
            "ACL SETUSER alice on >secret ~a:* +get +set +hset +hgetall +ping +client"
        )),
        b"+OK\r\n"
    );
    for version in ["2", "3"] {
        let mut p = proxy.raw();
        // A wrong password: the upstream's own refusal, and the client is still the default
        // user (it may DEL anything).
        let wrong = format!("HELLO {version} AUTH alice wrong");
        assert_eq!(
            text(p.cmd(&words(&wrong))),
            text(server.raw().cmd(&words(&wrong)))
        );
        assert_eq!(p.cmd(&words("SET b:1 x")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("DEL b:1")), b":1\r\n");
        // The right one: respite's HELLO reply in the version asked for, then alice's rules.
        let hello = text(p.cmd(&words(&format!("HELLO {version} AUTH alice secret"))));
        let head = if version == "3" { "%7\r\n" } else { "*14\r\n" };
        assert!(hello.starts_with(head), "{hello}");
        assert!(
            hello.contains(&format!("proto\r\n:{version}\r\n")),
            "{hello}"
        );
        assert_eq!(p.cmd(&words("SET a:1 x")), b"+OK\r\n");
        assert_eq!(p.cmd(&words("HSET a:h f v")), b":1\r\n");
        let all = p.cmd(&words("HGETALL a:h"));
        let expected: &[u8] = if version == "3" {
            b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
        } else {
            b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
        };
        assert_eq!(all, expected, "HGETALL in RESP{version}");
        let refused = text(p.cmd(&words("SET b:1 x")));
        assert!(refused.starts_with("-NOPERM"), "{refused}");
        assert!(text(p.cmd(&words("DEL a:1"))).starts_with("-NOPERM"));
        assert_eq!(d.cmd(&words("EXISTS b:1")), b":0\r\n");
        assert!(text(p.cmd(&words("CLIENT INFO"))).contains(" user=alice "));
        // A later wrong HELLO AUTH leaves it alice, as Redis does.
        assert!(text(p.cmd(&words(&wrong))).starts_with("-WRONGPASS"));
        assert!(text(p.cmd(&words("DEL a:1"))).starts_with("-NOPERM"));
        // RESET makes it the default user again.
        assert_eq!(p.cmd(&words("RESET")), b"+RESET\r\n");
        assert_eq!(p.cmd(&words("DEL a:1 a:h")), b":2\r\n");
    }
    // HELLO AUTH with SETNAME: the name is the client's own in respite.
    let mut p = proxy.raw();
    let hello = text(p.cmd(&words("HELLO 3 AUTH alice secret SETNAME worker-1")));
    assert!(hello.starts_with("%7"), "{hello}");
    assert_eq!(p.cmd(&words("CLIENT GETNAME")), bulk("worker-1"));
    assert_eq!(p.cmd(&words("GET a:1")), b"_\r\n");
    // Leases come back reset: no upstream connection stays logged in as alice once its
    // clients are gone.
    drop(p);
    wait_until(Duration::from_secs(5), || {
        !text(server.raw().cmd(&words("CLIENT LIST"))).contains("user=alice")
    })
    .expect("alice's connections closed or reset");
});

both!(an_upstream_user_switches_protocol_in_place, |kind: Kind| {
    // AUTH first, HELLO 3 after: the user's own connection switches, so replies are RESP3
    // and the user is still alice.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut d: Raw = server.raw();
    d.cmd(&words(
        "ACL SETUSER alice on >secret ~a:* +hset +hgetall +get",
    ));
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&words("AUTH alice secret")), b"+OK\r\n");
    assert!(text(p.cmd(&words("HELLO 3"))).starts_with("%7"));
    assert_eq!(p.cmd(&words("HSET a:h f v")), b":1\r\n");
    assert_eq!(
        p.cmd(&words("HGETALL a:h")),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert!(text(p.cmd(&words("HSET b:h f v"))).starts_with("-NOPERM"));
    assert!(text(p.cmd(&words("HELLO 2"))).starts_with("*14"));
    assert_eq!(p.cmd(&words("GET a:nothing")), b"$-1\r\n");
});

both!(
    an_upstream_users_channel_rules_apply_to_pubsub,
    |kind: Kind| {
        // Subscriptions are fanned out over respite's own connection; the user's channel rules
        // still decide what it may subscribe to, with the upstream's own NOPERM.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut d: Raw = server.raw();
        d.cmd(&words("ACL SETUSER alice on >pw ~* &allowed:* +@all"));
        let direct = |cmd: &str| -> String {
            let mut c = server.raw();
            c.cmd(&words("AUTH alice pw"));
            text(c.cmd(&words(cmd)))
        };
        for version in ["2", "3"] {
            let mut p = proxy.raw();
            let hello = text(p.cmd(&words(&format!("HELLO {version} AUTH alice pw"))));
            assert!(!hello.starts_with('-'), "{hello}");
            let confirmed = text(p.cmd(&words("SUBSCRIBE allowed:x")));
            assert!(confirmed.contains("allowed:x"), "{confirmed}");
            let refused = text(p.cmd(&words("SUBSCRIBE secret")));
            assert!(refused.starts_with("-NOPERM"), "{refused}");
            assert_eq!(refused, direct("SUBSCRIBE secret"));
            // One channel refused refuses the command, as the server does.
            assert_eq!(
                text(p.cmd(&words("SUBSCRIBE allowed:y secret"))),
                direct("SUBSCRIBE allowed:y secret")
            );
            assert_eq!(
                text(p.cmd(&words("PSUBSCRIBE secret*"))),
                direct("PSUBSCRIBE secret*")
            );
            assert!(text(p.cmd(&words("PSUBSCRIBE allowed:*"))).contains("allowed:*"));
            // Alice receives nothing from the channels she may not read: the first frames she
            // gets are the allowed channel's, though `secret` was published first.
            let mut admin = proxy.raw();
            assert!(admin.cmd(&words("PUBLISH secret s1")).starts_with(b":"));
            assert!(
                admin
                    .cmd(&words("PUBLISH allowed:y ignored"))
                    .starts_with(b":")
            );
            assert!(
                admin
                    .cmd(&words("PUBLISH allowed:x hello"))
                    .starts_with(b":")
            );
            let frames: Vec<String> = (0..3).map(|_| text(p.reply().unwrap())).collect();
            assert!(
                frames[0].contains("pmessage") && frames[0].contains("allowed:y"),
                "{frames:?}"
            );
            assert!(frames.iter().all(|f| !f.contains("s1")), "{frames:?}");
            assert!(
                frames[1..].iter().all(|f| f.contains("hello")),
                "{frames:?}"
            );
            // PUBLISH as alice is the upstream's to check.
            let mut publisher = proxy.raw();
            publisher.cmd(&words("AUTH alice pw"));
            assert_eq!(
                text(publisher.cmd(&words("PUBLISH secret x"))),
                direct("PUBLISH secret x")
            );
            assert!(
                publisher
                    .cmd(&words("PUBLISH allowed:x y"))
                    .starts_with(b":")
            );
        }
        // The upstream shows respite's subscriptions, none to `secret`.
        let channels = text(d.cmd(&words("PUBSUB CHANNELS *")));
        assert!(!channels.contains("secret"), "{channels}");
    }
);

both!(
    a_password_set_through_respite_never_locks_its_clients_out,
    |kind: Kind| {
        // redis-py's test_auth, through respite: a client sets the default user's password, then
        // clients log in with it. respite's own credentials (none here) are no longer the
        // upstream's, but a connection opened for a client's login is set up as that client.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut setter = proxy.raw();
        assert_eq!(
            setter.cmd(&words("CONFIG SET requirepass temp_pass")),
            b"+OK\r\n"
        );
        let mut direct = server.raw();
        assert_eq!(direct.cmd(&words("AUTH temp_pass")), b"+OK\r\n");
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&words("AUTH default temp_pass")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("AUTH temp_pass")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SET pw:k v")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SELECT 9")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("SELECT 0")), b"+OK\r\n");
        assert_eq!(c.cmd(&words("GET pw:k")), bulk("v"));
        assert_eq!(
            c.cmd(&words(
                "ACL SETUSER pw-user on >strong_password +acl +get ~*"
            )),
            b"+OK\r\n"
        );
        // Another client logs in as the new user; a wrong password is the upstream's refusal.
        let mut u = proxy.raw();
        let wrong = "AUTH pw-user wrong_password";
        let want = text(server.raw().cmd(&words(wrong)));
        assert!(want.starts_with("-WRONGPASS"), "{want}");
        assert_eq!(text(u.cmd(&words(wrong))), want);
        assert_eq!(u.cmd(&words("AUTH pw-user strong_password")), b"+OK\r\n");
        assert_eq!(u.cmd(&words("GET pw:k")), bulk("v"));
        assert!(text(u.cmd(&words("SET pw:k w"))).starts_with("-NOPERM"));
        // The upstream sees the client as its user, on a connection of its own.
        let list = text(direct.cmd(&words("CLIENT LIST")));
        assert!(
            list.lines()
                .any(|l| l.contains(" name=respite-pinned ") && l.contains(" user=pw-user ")),
            "{list}"
        );
        // The first client puts the password back, and a client that never logged in is served.
        assert_eq!(c.cmd(&[b"CONFIG", b"SET", b"requirepass", b""]), b"+OK\r\n");
        assert_eq!(c.cmd(&words("ACL DELUSER pw-user")), b":1\r\n");
        let mut after = proxy.raw();
        assert_eq!(after.cmd(&words("BLPOP pw:none 0.01")), b"*-1\r\n");
        assert_eq!(after.cmd(&words("GET pw:k")), bulk("v"));
    }
);

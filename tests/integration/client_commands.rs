//! CLIENT subcommands about respite's own clients (LIST, KILL, REPLY, NO-EVICT, PAUSE), answered
//! as Redis answers them for the client's view: respite's clients, never the upstream's
//! connections, and a prefixed tenant's clients only for that tenant.
use crate::both;
use crate::support::{
    Kind, Proxy, Server, TenantToml, bulk, encode, tenants, text, wait_until, words,
};
use std::time::Duration;

both!(client_list_and_kill_see_respites_clients, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut a = proxy.raw();
    let mut b = proxy.raw();
    assert_eq!(a.cmd(&words("CLIENT SETNAME alpha")), b"+OK\r\n");
    assert_eq!(b.cmd(&words("CLIENT SETNAME beta")), b"+OK\r\n");
    b.cmd(&words("GET k"));
    let list = text(a.cmd(&words("CLIENT LIST")));
    assert!(
        list.contains(" name=alpha ") && list.contains(" name=beta "),
        "{list}"
    );
    assert!(list.contains("cmd=get"), "{list}");
    assert!(!list.contains("respite"), "no upstream connection: {list}");
    assert_eq!(a.cmd(&words("CLIENT LIST TYPE pubsub")), b"$0\r\n\r\n");
    let b_id = text(b.cmd(&words("CLIENT ID")))
        .trim_start_matches(':')
        .trim()
        .to_string();
    let only_b = text(a.cmd(&words(&format!("CLIENT LIST ID {b_id}"))));
    assert!(
        only_b.contains("name=beta") && !only_b.contains("name=alpha"),
        "{only_b}"
    );
    // KILL by ID: the killed client's connection closes.
    assert_eq!(a.cmd(&words(&format!("CLIENT KILL ID {b_id}"))), b":1\r\n");
    assert!(b.closed());
    assert_eq!(a.cmd(&words("CLIENT KILL ID 999999")), b":0\r\n");
    // The old form, by address; SKIPME is the default of the new form.
    let mut c = proxy.raw();
    let info = text(c.cmd(&words("CLIENT INFO")));
    let addr = info
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_string();
    assert_eq!(a.cmd(&words(&format!("CLIENT KILL {addr}"))), b"+OK\r\n");
    assert!(c.closed());
    assert_eq!(
        a.cmd(&words("CLIENT KILL 1.2.3.4:5")),
        b"-ERR No such client\r\n"
    );
    assert_eq!(a.cmd(&words("CLIENT KILL USER default")), b":0\r\n");
    assert_eq!(
        a.cmd(&words("CLIENT KILL USER default SKIPME no")),
        b":1\r\n"
    );
    assert!(a.closed());
});

both!(
    a_client_killed_in_blpop_is_unblocked_upstream,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut waiter = proxy.raw();
        let id = text(waiter.cmd(&words("CLIENT ID")))
            .trim_start_matches(':')
            .trim()
            .to_string();
        waiter.send(&encode(&words("BLPOP q 0")));
        let blocked =
            || text(server.raw().cmd(&words("INFO clients"))).contains("blocked_clients:1");
        wait_until(Duration::from_secs(5), blocked).expect("blocked");
        assert_eq!(
            proxy.raw().cmd(&words(&format!("CLIENT KILL ID {id}"))),
            b":1\r\n"
        );
        wait_until(Duration::from_secs(5), || !blocked()).expect("unblocked");
        proxy.raw().cmd(&words("LPUSH q x"));
        assert_eq!(server.raw().cmd(&words("LLEN q")), b":1\r\n");
    }
);

both!(client_reply_drops_replies_as_redis_does, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let script = [
        "CLIENT REPLY OFF",
        "SET a 1",
        "GET a",
        "PING",
        "CLIENT REPLY ON",
        "GET a",
        "CLIENT REPLY SKIP",
        "SET b 2",
        "GET b",
        "CLIENT REPLY BAD",
    ];
    let mut batch = Vec::new();
    for l in script {
        batch.extend(encode(&words(l)));
    }
    let run = |mut c: crate::support::Raw| {
        c.send(&batch);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(text(c.reply().unwrap()));
        }
        got
    };
    let direct = run(server.raw());
    assert_eq!(direct[1], text(bulk("1")));
    assert_eq!(run(proxy.raw()), direct);
});

both!(client_modes_and_pause, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut p = proxy.raw();
    let mut d = server.raw();
    for cmd in ["CLIENT NO-EVICT on", "CLIENT NO-EVICT maybe"] {
        assert_eq!(text(p.cmd(&words(cmd))), text(d.cmd(&words(cmd))), "{cmd}");
    }
    // (NO-TOUCH: see client_unblock.rs.)
    // On a pinned connection it is forwarded (and reset with it).
    p.cmd(&words("WATCH k"));
    assert_eq!(p.cmd(&words("CLIENT NO-EVICT on")), b"+OK\r\n");
    p.cmd(&words("UNWATCH"));
    assert_eq!(p.cmd(&words("CLIENT PAUSE 10 WRITE")), b"+OK\r\n");
    assert_eq!(p.cmd(&words("CLIENT UNPAUSE")), b"+OK\r\n");
    // Tenants may not pause everyone, and see only their own clients.
    let toml = tenants(&[
        TenantToml::new("a", "a:").login("pa").allow(&["@all"]),
        TenantToml::new("b", "b:").login("pb").allow(&["@all"]),
    ]);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut a = proxy.login("a", "pa");
    let mut b = proxy.login("b", "pb");
    b.cmd(&words("CLIENT SETNAME bee"));
    assert!(text(a.cmd(&words("CLIENT PAUSE 10"))).starts_with("-ERR CLIENT PAUSE is not allowed"));
    let list = text(a.cmd(&words("CLIENT LIST")));
    assert!(!list.contains("bee") && list.contains("user="), "{list}");
    assert_eq!(a.cmd(&words("CLIENT KILL USER b")), b":0\r\n");
    assert_eq!(b.cmd(&words("PING")), b"+PONG\r\n");
});

both!(
    monitor_shows_the_upstreams_commands_filtered_for_a_tenant,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut m = proxy.raw();
        assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
        // Checked: a SET that failed would leave the loop below waiting for a line never sent.
        assert_eq!(proxy.raw().cmd(&words("SET mk mv")), b"+OK\r\n");
        let line = loop {
            let l = text(m.reply().unwrap());
            if l.contains("\"mk\"") {
                break l;
            }
        };
        assert!(line.contains("\"SET\" \"mk\" \"mv\""), "{line}");
        drop(m);
        // A prefixed tenant sees its own keys only, without the prefix; one not allowed MONITOR is
        // refused.
        let toml = tenants(&[
            TenantToml::new("a", "a:").login("pa").allow(&["@all"]),
            TenantToml::new("b", "b:")
                .login("pb")
                .allow(&["@read", "@write"]),
        ]);
        let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
        let mut b = proxy.login("b", "pb");
        assert!(text(b.cmd(&words("MONITOR"))).starts_with("-NOPERM"));
        let mut m = proxy.login("a", "pa");
        assert_eq!(m.cmd(&words("MONITOR")), b"+OK\r\n");
        b.cmd(&words("SET secret 1"));
        assert_eq!(proxy.login("a", "pa").cmd(&words("SET mine 2")), b"+OK\r\n");
        loop {
            let l = text(m.reply().unwrap());
            assert!(!l.contains("secret") && !l.contains("b:"), "{l}");
            if l.contains("\"mine\"") {
                assert!(l.contains("\"SET\" \"mine\" \"2\""), "{l}");
                break;
            }
        }
        // The monitor's upstream connection closes with the client.
        drop(m);
        wait_until(Duration::from_secs(5), || {
            !text(server.raw().cmd(&words("CLIENT LIST"))).contains("name=respite-monitor")
        })
        .expect("closed");
    }
);

both!(client_kill_of_an_unknown_user_is_refused, |kind: Kind| {
    // As the server refuses it: a user it does not know is an error, not 0 clients killed.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = proxy.raw();
    let cmd = words("CLIENT KILL USER wrong_user");
    let want = String::from_utf8_lossy(&server.raw().cmd(&cmd)).into_owned();
    assert_eq!(want, "-ERR No such user 'wrong_user'\r\n");
    assert_eq!(String::from_utf8_lossy(&c.cmd(&cmd)).into_owned(), want);
    // A user the upstream knows is no error.
    let known = String::from_utf8_lossy(&c.cmd(&words("CLIENT KILL USER default"))).into_owned();
    assert!(known.starts_with(':'), "{known}");
});

/// Clients in each mode (subscribed, in a transaction, tracking in BCAST mode), named, then what
/// an observer's CLIENT LIST says of each (flags, sub, psub, ssub, multi) and INFO's
/// `connected_clients`.
fn modes_seen(connect: &dyn Fn() -> crate::support::Raw) -> Vec<String> {
    let mut subscribed = connect();
    subscribed.cmd(&words("CLIENT SETNAME s"));
    subscribed.cmd(&words("SUBSCRIBE a b"));
    subscribed.reply();
    subscribed.cmd(&words("PSUBSCRIBE p*"));
    subscribed.cmd(&words("SSUBSCRIBE sh"));
    let mut queued = connect();
    queued.cmd(&words("CLIENT SETNAME m"));
    for line in ["MULTI", "SET x 1", "GET x"] {
        queued.cmd(&words(line));
    }
    let mut tracking = connect();
    tracking.cmd(&words("HELLO 3 SETNAME t"));
    tracking.cmd(&words("CLIENT TRACKING ON BCAST"));
    let mut observer = connect();
    observer.cmd(&words("CLIENT SETNAME o"));
    let list = text(observer.cmd(&words("CLIENT LIST")));
    let mut seen: Vec<String> = list
        .lines()
        .filter(|l| l.contains("name="))
        .map(|line| {
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .unwrap_or("?")
                    .to_string()
            };
            ["name", "flags", "sub", "psub", "ssub", "multi", "cmd"]
                .map(|k| format!("{k}={}", field(k)))
                .join(" ")
        })
        .collect();
    seen.sort();
    let info = text(observer.cmd(&words("INFO clients")));
    seen.extend(
        info.lines()
            .filter(|l| l.starts_with("connected_clients:"))
            .map(str::to_string),
    );
    seen
}

// Issue 21, finding 7: CLIENT LIST shows each client's modes as Redis does, and INFO counts the
// clients CLIENT LIST shows (respite's, not the upstream's connections, which include respite's
// pools).
both!(
    client_list_modes_and_info_clients_as_direct,
    |kind: Kind| {
        let server = Server::start(kind);
        // Before respite connects: directly, its pools would be among the upstream's clients.
        let direct = modes_seen(&|| server.raw());
        let proxy = Proxy::start(&server.url());
        assert!(
            direct
                .iter()
                .any(|l| l.starts_with("name=s flags=P sub=2 psub=1 ssub=1")),
            "{direct:?}"
        );
        let through = modes_seen(&|| proxy.raw());
        assert_eq!(through, direct);
    }
);

/// The value of `field` in the CLIENT LIST line of the client named `name`.
fn field_of(list: &str, name: &str, field: &str) -> String {
    let line = list
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .unwrap_or_else(|| panic!("{name} in {list}"));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("{field} in {line}"))
        .trim()
        .to_string()
}

both!(
    client_list_buffers_idle_and_fd_are_the_clients_own,
    |kind: Kind| {
        // introspection.tcl's CLIENT LIST / CLIENT INFO patterns: the asking client's query buffer
        // holds its own command (qbuf=26 and argv-mem=10 for `client list`, as directly); `idle`
        // counts from a client's latest bytes, `fd` is its socket's, and `omem`/`tot-mem` are what
        // respite holds for it (replies it has not read).
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let fields = |line: &str| -> Vec<String> {
            ["qbuf", "argv-mem", "obl", "oll", "omem"]
                .iter()
                .map(|f| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
                        .unwrap_or("?")
                        .to_string()
                })
                .collect()
        };
        let direct = text(server.raw().cmd(&words("CLIENT INFO")));
        let through = text(proxy.raw().cmd(&words("CLIENT INFO")));
        assert_eq!(fields(&through), ["26", "10", "0", "0", "0"], "{through}");
        if kind == Kind::Redis {
            // (Valkey 9 has read and freed its query buffer when the command runs: qbuf=0.)
            assert_eq!(fields(&direct), fields(&through), "{direct}");
        }
        let mut idle = proxy.raw();
        assert_eq!(idle.cmd(&words("CLIENT SETNAME idler")), b"+OK\r\n");
        let mut heavy = proxy.raw();
        assert_eq!(heavy.cmd(&words("CLIENT SETNAME heavy")), b"+OK\r\n");
        let mut me = proxy.raw();
        assert_eq!(me.cmd(&words("CLIENT SETNAME me")), b"+OK\r\n");
        let list = text(me.cmd(&words("CLIENT LIST")));
        assert_eq!(field_of(&list, "me", "qbuf"), "26");
        assert_eq!(field_of(&list, "idler", "qbuf"), "0");
        let fds: Vec<String> = ["idler", "heavy", "me"]
            .iter()
            .map(|n| field_of(&list, n, "fd"))
            .collect();
        for fd in &fds {
            // The proxy runs in this process: its descriptor is one of this process's sockets.
            let link =
                std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("an open descriptor");
            assert!(
                link.to_string_lossy().starts_with("socket:"),
                "{fd}: {link:?}"
            );
        }
        assert!(fds[0] != fds[1] && fds[1] != fds[2], "{fds:?}");
        // A client that reads none of its 1 MiB replies: what respite holds for it shows.
        let value = vec![b'v'; 1 << 20];
        server.raw().cmd(&[b"SET", b"big", &value]);
        for _ in 0..24 {
            heavy.send(&encode(&[b"GET", b"big"]));
        }
        let mut held = 0;
        wait_until(Duration::from_secs(10), || {
            let list = text(me.cmd(&words("CLIENT LIST")));
            let omem: u64 = field_of(&list, "heavy", "omem").parse().unwrap();
            let tot: u64 = field_of(&list, "heavy", "tot-mem").parse().unwrap();
            held = omem;
            omem > 0 && tot >= omem
        })
        .expect("replies held for a client that does not read");
        assert!(held <= 24 * ((1 << 20) + 16), "{held}");
        std::thread::sleep(Duration::from_millis(2100));
        let list = text(me.cmd(&words("CLIENT LIST")));
        assert!(
            field_of(&list, "idler", "idle").parse::<u64>().unwrap() >= 2,
            "{list}"
        );
        assert_eq!(field_of(&list, "me", "idle"), "0");
    }
);

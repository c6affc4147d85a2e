//! respite's own upstream password, changed under it: a client changes the upstream's password
//! through respite (CONFIG SET requirepass, as redis-py's `test_auth` does), so every connection
//! respite opens afterwards with the old credentials is refused; the operator puts the new
//! password in the configuration and reloads (SIGHUP), and new clients, pinned connections,
//! Pub/Sub, MONITOR and the shared pools' reconnections all work again (issue 21).
use crate::both;
use crate::support::{Binary, Kind, Raw, Server, signal, text, wait_until, words};
use std::time::Duration;

fn config(url: &str) -> String {
    format!("[upstream]\nurl = \"{url}\"\n")
}

/// A fresh client's WATCH (a pinned connection), SUBSCRIBE (the Pub/Sub link) and MONITOR (a
/// connection of its own), a PUBLISH straight to the upstream (`direct`) that both should see,
/// and a GET (the shared pools): each reply's text.
fn fresh_clients(proxy: &Binary, direct: &mut Raw) -> Vec<String> {
    let mut w = Raw::connect(proxy.addr);
    let watch = text(w.cmd(&words("WATCH k")));
    let mut s = Raw::connect(proxy.addr);
    let sub = text(s.cmd(&words("SUBSCRIBE news")));
    let mut m = Raw::connect(proxy.addr);
    let monitor = text(m.cmd(&words("MONITOR")));
    let published = text(direct.cmd(&words("PUBLISH news hi")));
    let mut out = vec![watch, sub, monitor.clone(), published.clone()];
    if published == ":1\r\n" {
        out.push(text(s.reply().expect("the message")));
    }
    if monitor == "+OK\r\n" {
        let line = text(m.reply().expect("a monitor line"));
        out.push(line.contains(r#""PUBLISH" "news" "hi""#).to_string());
    }
    let mut g = Raw::connect(proxy.addr);
    out.push(text(g.cmd(&words("GET k"))));
    out
}

const WORKING: [&str; 7] = [
    "+OK\r\n",
    "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    "+OK\r\n",
    ":1\r\n",
    "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
    "true",
    "$1\r\nv\r\n",
];

both!(
    pools_recover_after_the_operator_reloads_a_changed_password,
    |kind: Kind| {
        let server = Server::start(kind);
        server.raw().cmd(&words("SET k v"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, config(&server.url())).unwrap();
        let proxy = Binary::start("", &["--config", file.to_str().unwrap()]);
        let mut direct = server.raw();
        assert_eq!(fresh_clients(&proxy, &mut direct), WORKING);
        // A client changes the password through respite; connections open before stay logged in.
        let mut changer = Raw::connect(proxy.addr);
        assert_eq!(
            changer.cmd(&words("CONFIG SET requirepass n3w")),
            b"+OK\r\n"
        );
        assert_eq!(changer.cmd(&words("AUTH n3w")), b"+OK\r\n");
        // It works on as the upstream user it logged in as (its own pinned connection).
        assert_eq!(changer.cmd(&words("GET k")), b"$1\r\nv\r\n");
        // The shared pools lose their connections (as they would to a restart or a network cut):
        // respite's old credentials open none now.
        assert_eq!(direct.cmd(&words("AUTH n3w")), b"+OK\r\n");
        direct.cmd(&words("CLIENT KILL TYPE normal SKIPME yes"));
        direct.cmd(&words("CLIENT KILL TYPE pubsub"));
        let mut w = Raw::connect(proxy.addr);
        let refused = text(w.cmd(&words("WATCH k")));
        assert!(
            refused.starts_with('-'),
            "a pinned connection with the old password: {refused}"
        );
        // The operator reloads with the new password.
        std::fs::write(
            &file,
            config(&format!("redis://:n3w@{}", &server.url()[8..])),
        )
        .unwrap();
        signal(proxy.pid(), "HUP");
        let mut last = None;
        let recovered = wait_until(Duration::from_secs(10), || {
            let now = fresh_clients(&proxy, &mut direct);
            let ok = now == WORKING;
            last = Some(now);
            ok
        });
        assert!(recovered.is_some(), "after the reload: {last:?}");
    }
);

//! CLIENT TRACKING through respite, for client-side caches: RESP3 pushes on the client's own
//! connection, RESP2 REDIRECT to a `__redis__:invalidate` subscriber, BCAST with prefixes,
//! OPTIN with CACHING YES, NOLOOP, tenants kept apart (judged from the upstream's side: keys are
//! written there directly), a flush when the upstream goes away, and redis-py's and redis-rs's
//! own client-side caching machinery against a concurrent writer.
use crate::both;
use crate::support::{
    Kind, Proxy, Raw, Server, TenantToml, metric, python, tenants, text, wait_until, words,
};
use std::time::Duration;

/// A RESP3 connection to the proxy.
fn resp3(proxy: &Proxy) -> Raw {
    let mut c = proxy.raw();
    let hello = c.cmd(&words("HELLO 3"));
    assert!(hello.starts_with(b"%"), "{}", text(&hello));
    c
}

/// GETs the upstream has run (INFO commandstats).
fn upstream_gets(server: &Server) -> u64 {
    let stats = text(server.raw().cmd(&words("INFO commandstats")));
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

fn invalidate(keys: &[&str]) -> Vec<u8> {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len()).into_bytes();
    for k in keys {
        out.extend_from_slice(format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    out
}

/// Nothing is waiting for the client: a PING's reply is the next thing it reads.
fn nothing_pending(c: &mut Raw) {
    assert_eq!(text(c.cmd(&words("PING"))), "+PONG\r\n");
}

both!(default_mode_invalidates_once_per_change, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("CLIENT GETREDIR")), b":0\r\n");
    // Another client of this respite changes a key the tracked client read.
    assert_eq!(c.cmd(&words("GET k")), b"_\r\n");
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&words("SET k 1")), b"+OK\r\n");
    assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
    // Exactly one: the key is no longer tracked until it is read again.
    assert_eq!(other.cmd(&words("SET k 2")), b"+OK\r\n");
    nothing_pending(&mut c);
    // A direct writer to the upstream.
    assert_eq!(c.cmd(&words("GET k")), b"$1\r\n2\r\n");
    assert_eq!(server.raw().cmd(&words("SET k 3")), b"+OK\r\n");
    assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
    // Expiry.
    assert_eq!(server.raw().cmd(&words("SET e v PX 200")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("GET e")), b"$1\r\nv\r\n");
    assert_eq!(c.reply().unwrap(), invalidate(&["e"]));
    nothing_pending(&mut c);
    // (A process-wide gauge: other tests' clients count too.)
    assert!(metric(&proxy, "respite_tracking_clients") >= 1.0);
    // Off: no more.
    assert_eq!(c.cmd(&words("CLIENT TRACKING OFF")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("CLIENT GETREDIR")), b":-1\r\n");
    assert_eq!(c.cmd(&words("GET k")), b"$1\r\n3\r\n");
    assert_eq!(other.cmd(&words("SET k 4")), b"+OK\r\n");
    nothing_pending(&mut c);
});

both!(tracking_works_beside_the_near_cache, |kind: Kind| {
    // The near cache holds `k` (and is kept coherent by its own tracking connections); a
    // tracked client reads upstream all the same, so the upstream tracks its reads.
    let server = Server::start(kind);
    let toml = "[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = \"*\"\n";
    let proxy = Proxy::start_with_config(&server.url(), toml, &[]);
    server.raw().cmd(&words("SET k 1"));
    let mut plain = proxy.raw();
    wait_until(Duration::from_secs(10), || {
        plain.cmd(&words("GET k"));
        let before = upstream_gets(&server);
        plain.cmd(&words("GET k"));
        upstream_gets(&server) == before
    })
    .expect("k answered from the near cache");
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON OPTOUT")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("GET k")), b"$1\r\n1\r\n");
    // OPTOUT: CACHING NO leaves the next read untracked.
    assert_eq!(c.cmd(&words("CLIENT CACHING NO")), b"+OK\r\n");
    assert_eq!(c.cmd(&words("GET j")), b"_\r\n");
    server.raw().cmd(&words("SET j 1"));
    server.raw().cmd(&words("SET k 2"));
    assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
    nothing_pending(&mut c);
    // The near cache hears of the change on its own connection, in its own time.
    wait_until(Duration::from_secs(5), || {
        plain.cmd(&words("GET k")) == b"$1\r\n2\r\n"
    })
    .expect("the near cache invalidated too");
});

both!(
    an_invalidation_comes_before_a_later_reads_reply,
    |kind: Kind| {
        // The ordering Redis gives: once the writer is answered, the tracked client's next read
        // of the key has the invalidation in front of it (in the same stream, before the reply).
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = resp3(&proxy);
        let mut w = server.raw();
        assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
        for i in 0..200 {
            let got = c.cmd(&words("GET k"));
            assert!(got.starts_with(b"$") || got == b"_\r\n", "{}", text(&got));
            assert_eq!(w.cmd(&words(&format!("SET k {i}"))), b"+OK\r\n");
            // The read after the write: the push, then the new value.
            c.send(&crate::support::encode(&words("GET k")));
            assert_eq!(c.reply().unwrap(), invalidate(&["k"]), "round {i}");
            let v = c.reply().unwrap();
            assert_eq!(text(&v), format!("${}\r\n{i}\r\n", i.to_string().len()));
            assert_eq!(w.cmd(&words(&format!("SET k x{i}"))), b"+OK\r\n");
            assert_eq!(c.reply().unwrap(), invalidate(&["k"]), "round {i}");
        }
    }
);

both!(
    an_invalidation_never_passes_an_earlier_reply,
    |kind: Kind| {
        // The client stops reading, so its replies queue in respite; the change comes after the
        // upstream answered its read of `k`: the invalidation must come after that read's reply,
        // or a client-side cache would keep the old value for good.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = resp3(&proxy);
        assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
        let big = "x".repeat(1 << 20);
        let mut up = server.raw();
        assert_eq!(up.cmd(&[b"SET", b"big", big.as_bytes()]), b"+OK\r\n");
        up.cmd(&words("SET k old"));
        let before = upstream_gets(&server);
        let mut pipeline = Vec::new();
        for _ in 0..20 {
            pipeline.extend(crate::support::encode(&words("GET big")));
        }
        pipeline.extend(crate::support::encode(&words("GET k")));
        c.send(&pipeline);
        wait_until(Duration::from_secs(10), || {
            upstream_gets(&server) >= before + 21
        })
        .expect("the reads ran upstream");
        up.cmd(&words("SET k new"));
        for i in 0..20 {
            let r = c.reply().unwrap();
            assert!(r.len() > 1 << 20, "reply {i} is the value, not a push");
        }
        assert_eq!(c.reply().unwrap(), b"$3\r\nold\r\n");
        assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
    }
);

both!(bcast_with_prefixes, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(
        c.cmd(&words("CLIENT TRACKING ON BCAST PREFIX user: PREFIX job:")),
        b"+OK\r\n"
    );
    let info = text(c.cmd(&words("CLIENT TRACKINGINFO")));
    assert!(info.contains("bcast") && info.contains("user:"), "{info}");
    let mut w = server.raw();
    w.cmd(&words("SET other 1"));
    w.cmd(&words("SET user:1 1"));
    assert_eq!(c.reply().unwrap(), invalidate(&["user:1"]));
    w.cmd(&words("SET job:7 1"));
    assert_eq!(c.reply().unwrap(), invalidate(&["job:7"]));
    nothing_pending(&mut c);
    // Redis's own refusals.
    let mut d = resp3(&proxy);
    assert_eq!(
        text(d.cmd(&words("CLIENT TRACKING ON PREFIX a"))),
        "-ERR PREFIX option requires BCAST mode to be enabled\r\n"
    );
    assert_eq!(
        text(d.cmd(&words("CLIENT TRACKING ON BCAST OPTIN"))),
        "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n"
    );
});

both!(optin_tracks_only_after_caching_yes, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(
        text(c.cmd(&words("CLIENT CACHING YES"))),
        "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n"
    );
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON OPTIN")), b"+OK\r\n");
    assert_eq!(
        text(c.cmd(&words("CLIENT CACHING NO"))),
        "-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n"
    );
    c.cmd(&words("GET a"));
    assert_eq!(c.cmd(&words("CLIENT CACHING YES")), b"+OK\r\n");
    c.cmd(&words("GET b"));
    let mut w = server.raw();
    w.cmd(&words("SET a 1"));
    w.cmd(&words("SET b 1"));
    assert_eq!(c.reply().unwrap(), invalidate(&["b"]));
    nothing_pending(&mut c);
});

both!(noloop_skips_the_clients_own_writes, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON NOLOOP")), b"+OK\r\n");
    c.cmd(&words("GET k"));
    assert_eq!(c.cmd(&words("SET k mine")), b"+OK\r\n");
    nothing_pending(&mut c);
    c.cmd(&words("GET k"));
    proxy.raw().cmd(&words("SET k theirs"));
    assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
    let info = text(c.cmd(&words("CLIENT TRACKINGINFO")));
    assert!(info.contains("noloop"), "{info}");
});

both!(resp2_redirect_to_an_invalidate_subscriber, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut sub = proxy.raw();
    let id = text(sub.cmd(&words("CLIENT ID")))
        .trim_start_matches(':')
        .trim()
        .to_string();
    let confirm = sub.cmd(&words("SUBSCRIBE __redis__:invalidate"));
    assert_eq!(
        text(&confirm),
        "*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n"
    );
    // Served by respite: the upstream has no such subscription.
    let numsub = text(
        server
            .raw()
            .cmd(&words("PUBSUB NUMSUB __redis__:invalidate")),
    );
    assert!(numsub.ends_with(":0\r\n"), "{numsub}");
    let mut c = proxy.raw();
    // RESP2 without REDIRECT: accepted, and nothing can be sent to it (as from Redis).
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    c.cmd(&words("GET r2"));
    server.raw().cmd(&words("SET r2 1"));
    assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
    assert_eq!(
        text(c.cmd(&words("CLIENT TRACKING ON REDIRECT 987654"))),
        "-ERR The client ID you want redirect to does not exist\r\n"
    );
    assert_eq!(
        c.cmd(&words(&format!("CLIENT TRACKING ON REDIRECT {id}"))),
        b"+OK\r\n"
    );
    assert_eq!(text(c.cmd(&words("CLIENT GETREDIR"))), format!(":{id}\r\n"));
    assert_eq!(c.cmd(&words("GET k")), b"$-1\r\n");
    server.raw().cmd(&words("SET k 1"));
    assert_eq!(
        text(sub.reply().unwrap()),
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    // A PUBLISH to the channel (upstream or through respite) is not an invalidation.
    proxy
        .raw()
        .cmd(&words("PUBLISH __redis__:invalidate forged"));
    server
        .raw()
        .cmd(&words("PUBLISH __redis__:invalidate forged"));
    c.cmd(&words("GET k"));
    server.raw().cmd(&words("DEL k"));
    assert_eq!(
        text(sub.reply().unwrap()),
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    // The target goes away: the redirect is broken.
    drop(sub);
    c.cmd(&words("GET k"));
    server.raw().cmd(&words("SET k 2"));
    wait_until(Duration::from_secs(5), || {
        text(c.cmd(&words("CLIENT TRACKINGINFO"))).contains("broken_redirect")
    })
    .expect("a broken redirect");
});

both!(a_resp3_client_hears_of_its_broken_redirect, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut target = resp3(&proxy);
    let id = text(target.cmd(&words("CLIENT ID")))
        .trim_start_matches(':')
        .trim()
        .to_string();
    let mut c = resp3(&proxy);
    assert_eq!(
        c.cmd(&words(&format!("CLIENT TRACKING ON REDIRECT {id}"))),
        b"+OK\r\n"
    );
    c.cmd(&words("GET k"));
    server.raw().cmd(&words("SET k 1"));
    // A RESP3 target gets the push, subscribed or not.
    assert_eq!(target.reply().unwrap(), invalidate(&["k"]));
    drop(target);
    let mut admin = proxy.raw();
    wait_until(Duration::from_secs(5), || {
        !text(admin.cmd(&words("CLIENT LIST"))).contains(&format!("id={id} "))
    })
    .expect("the target gone from respite");
    c.cmd(&words("GET k"));
    server.raw().cmd(&words("SET k 2"));
    let broken = format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{id}\r\n");
    assert_eq!(text(c.reply().unwrap()), broken);
});

both!(tenants_see_only_their_own_keys_unprefixed, |kind: Kind| {
    let server = Server::start(kind);
    let toml = tenants(&[
        TenantToml::new("t1", "t1:").login("p1").allow(&["@all"]),
        TenantToml::new("t2", "t2:").login("p2").allow(&["@all"]),
    ]);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut a = proxy.login("t1", "p1");
    assert!(a.cmd(&words("HELLO 3")).starts_with(b"%"));
    assert_eq!(a.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    a.cmd(&words("GET k"));
    // The same name in the other tenant: a different upstream key, no invalidation.
    let mut b = proxy.login("t2", "p2");
    assert_eq!(b.cmd(&words("SET k theirs")), b"+OK\r\n");
    nothing_pending(&mut a);
    let mut up = server.raw();
    assert_eq!(up.cmd(&words("GET t2:k")), b"$6\r\ntheirs\r\n");
    // Its own key, changed on the upstream: named as the tenant names it.
    a.cmd(&words("GET k"));
    up.cmd(&words("SET t1:k mine"));
    assert_eq!(a.reply().unwrap(), invalidate(&["k"]));
    // BCAST without a prefix covers its namespace only; its PREFIXes are inside it.
    let mut bc = proxy.login("t1", "p1");
    assert!(bc.cmd(&words("HELLO 3")).starts_with(b"%"));
    assert_eq!(bc.cmd(&words("CLIENT TRACKING ON BCAST")), b"+OK\r\n");
    let mut bp = proxy.login("t1", "p1");
    assert!(bp.cmd(&words("HELLO 3")).starts_with(b"%"));
    assert_eq!(
        bp.cmd(&words("CLIENT TRACKING ON BCAST PREFIX u:")),
        b"+OK\r\n"
    );
    up.cmd(&words("SET t2:x 1"));
    up.cmd(&words("SET u:x 1"));
    up.cmd(&words("SET t1:u:x 1"));
    assert_eq!(bc.reply().unwrap(), invalidate(&["u:x"]));
    assert_eq!(bp.reply().unwrap(), invalidate(&["u:x"]));
    nothing_pending(&mut bc);
    nothing_pending(&mut bp);
    // A redirect to another tenant's client is to a client that does not exist for it.
    let other = text(b.cmd(&words("CLIENT ID")))
        .trim_start_matches(':')
        .trim()
        .to_string();
    assert_eq!(
        text(bp.cmd(&words(&format!("CLIENT TRACKING ON REDIRECT {other}")))),
        "-ERR The client ID you want redirect to does not exist\r\n"
    );
});

both!(losing_the_upstream_flushes_the_client, |kind: Kind| {
    let mut server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    c.cmd(&words("GET k"));
    server.kill();
    assert_eq!(text(c.reply().unwrap()), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
    // While the tracking is not back, every reply is followed by another flush.
    let reply = c.cmd(&words("GET k"));
    assert!(
        reply.starts_with(b"-") || reply.starts_with(b"_"),
        "{}",
        text(&reply)
    );
    assert_eq!(text(c.reply().unwrap()), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
    // Back: tracked again, on a new connection, before the next command runs: a command's
    // reply is no longer followed by a flush.
    server.restart();
    wait_until(Duration::from_secs(15), || {
        c.send(&crate::support::encode(&words("GET k")));
        c.send(&crate::support::encode(&words("PING")));
        let _get = c.reply();
        let next = c.reply().unwrap();
        if next == b"+PONG\r\n" {
            return true;
        }
        // The flush after the GET; then the PING's own reply (and its flush).
        assert_eq!(text(&next), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
        loop {
            if c.reply().unwrap() == b"+PONG\r\n" {
                break;
            }
        }
        let _flush = c.reply();
        false
    })
    .expect("the upstream back");
    c.cmd(&words("GET k"));
    server.raw().cmd(&words("SET k 2"));
    assert_eq!(c.reply().unwrap(), invalidate(&["k"]));
});

both!(a_client_back_in_resp2_gets_no_pushes, |kind: Kind| {
    let mut server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    assert!(c.cmd(&words("HELLO 2")).starts_with(b"*"));
    c.cmd(&words("GET k"));
    // Its connection is lost: a RESP2 client cannot be sent the flush (nor anything).
    server.kill();
    // (An error, or the local engine's answer once local-only mode took over; or, when the GET
    // was written to the pinned connection before respite saw it close, the client's connection
    // closed with it, as a direct client's closes when its server dies: no reply is invented.)
    c.send(&crate::support::encode(&words("GET k")));
    let Some(reply) = c.reply() else {
        return;
    };
    assert!(
        reply == b"$-1\r\n" || reply.starts_with(b"-"),
        "{}",
        text(&reply)
    );
    // PING goes to the upstream while respite proxies (as Redis's own PING reflects the
    // server): its error until local-only mode takes over, then the local +PONG. Either way a
    // reply, never a push read in its place.
    let reply = c.cmd(&words("PING"));
    assert!(
        reply == b"+PONG\r\n" || reply.starts_with(b"-ERR upstream"),
        "{}",
        text(&reply)
    );
});

both!(local_only_replies_are_followed_by_a_flush, |kind: Kind| {
    // A frozen upstream keeps the client's connection open, but local-only mode answers from
    // the local engine, which nobody tracks: each such reply is followed by a flush.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    c.cmd(&words("GET k"));
    server.signal("STOP");
    // Resumed whatever happens below.
    struct Cont<'a>(&'a Server);
    impl Drop for Cont<'_> {
        fn drop(&mut self) {
            self.0.signal("CONT");
        }
    }
    let _cont = Cont(&server);
    wait_until(Duration::from_secs(10), || {
        crate::busy_not_down::health(&proxy).0 == "down"
    })
    .expect("local-only mode");
    assert_eq!(c.cmd(&words("SET k local")), b"+OK\r\n");
    assert_eq!(text(c.reply().unwrap()), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
    assert_eq!(c.cmd(&words("GET k")), b"$5\r\nlocal\r\n");
    assert_eq!(text(c.reply().unwrap()), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
});

both!(trackinginfo_is_the_upstreams_own, |kind: Kind| {
    // The same commands directly and through respite: the same TRACKINGINFO, in both protocols.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for hello in ["HELLO 2", "HELLO 3"] {
        let mut d = server.raw();
        let mut p = proxy.raw();
        d.cmd(&words(hello));
        p.cmd(&words(hello));
        for line in [
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING ON",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING ON BCAST PREFIX b PREFIX a NOLOOP",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING ON BCAST PREFIX c",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING OFF",
            "CLIENT TRACKING ON OPTIN",
            "CLIENT CACHING YES",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKINGINFO",
            "GET k",
            "CLIENT TRACKINGINFO",
            "CLIENT GETREDIR",
            "CLIENT TRACKING OFF",
            "CLIENT TRACKINGINFO",
            "CLIENT GETREDIR",
        ] {
            assert_eq!(
                text(p.cmd(&words(line))),
                text(d.cmd(&words(line))),
                "{hello}: {line}"
            );
        }
    }
});

both!(the_upstreams_tracking_table_bound_applies, |kind: Kind| {
    // The upstream bounds what it tracks and evicts with an invalidation, as for a direct client.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    server
        .raw()
        .cmd(&words("CONFIG SET tracking-table-max-keys 5"));
    let mut c = resp3(&proxy);
    assert_eq!(c.cmd(&words("CLIENT TRACKING ON")), b"+OK\r\n");
    let mut gets = Vec::new();
    for i in 0..20 {
        gets.extend(crate::support::encode(&words(&format!("GET k{i}"))));
    }
    c.send(&gets);
    // Every read answered, and at least 15 keys forgotten upstream, each with an invalidation
    // to the client (between the replies, never inside one).
    let (mut replies, mut evicted) = (0, 0);
    while replies < 20 || evicted < 15 {
        let r = c.reply().unwrap();
        if r == b"_\r\n" {
            replies += 1;
        } else {
            assert!(
                r.starts_with(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$"),
                "{}",
                text(&r)
            );
            evicted += 1;
        }
    }
});

both!(standalone_refuses_tracking, |_kind: Kind| {
    let proxy = Proxy::start("none");
    let mut c = resp3(&proxy);
    let e = text(c.cmd(&words("CLIENT TRACKING ON")));
    assert!(
        e.starts_with("-ERR CLIENT TRACKING is not supported by respite without an upstream"),
        "{e}"
    );
    assert_eq!(c.cmd(&words("CLIENT TRACKING OFF")), b"+OK\r\n");
});

both!(redis_rs_receives_invalidations, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let client = redis::Client::open(format!("{}/?protocol=resp3", proxy.url())).unwrap();
    let mut con = client.get_connection().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    con.set_push_sender(tx);
    let ok: String = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    server.raw().cmd(&words("SET k v"));
    wait_until(Duration::from_secs(5), || {
        let _: String = redis::cmd("PING").query(&mut con).unwrap();
        rx.try_iter().any(|p| {
            p.kind == redis::PushKind::Invalidate
                && p.data
                    == vec![redis::Value::Array(vec![redis::Value::BulkString(
                        b"k".to_vec(),
                    )])]
        })
    })
    .expect("an invalidate push");
});

both!(redis_py_client_side_cache_is_never_stale, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let script = r#"
import random, sys, threading, redis
from redis.cache import CacheConfig
from redis.connection import CacheProxyConnection
# redis-py offers its client-side cache only to servers that call themselves "redis" 7.4 or
# later; the suite's servers are Redis 7.0 and Valkey, which track keys the same way. Only that
# gate is lowered: the cache, its invalidation handling and the connection are redis-py's own.
CacheProxyConnection.MIN_ALLOWED_VERSION = "7.0.0"
CacheProxyConnection.DEFAULT_SERVER_NAME = sys.argv[2]
port = int(sys.argv[1])
cached = redis.Redis(port=port, protocol=3, cache_config=CacheConfig(max_size=1000))
plain = redis.Redis(port=port)
keys = [f"k{i}" for i in range(8)]
for k in keys:
    plain.set(k, 0)
rng = random.Random(7)
done = threading.Event()
reads = 0
def reader():
    global reads
    last = {k: 0 for k in keys}
    while not done.is_set():
        reads += 1
        k = rng.choice(keys)
        v = int(cached.get(k))
        # A value never goes back: a cache holding a stale value would.
        assert v >= last[k], (k, v, last[k])
        last[k] = v
t = threading.Thread(target=reader)
t.start()
final = {}
for i in range(1, 2001):
    k = rng.choice(keys)
    plain.set(k, i)
    final[k] = i
done.set()
t.join()
# Once the writer is done, every key reads its final value (bounded wait for the pushes).
import time
deadline = time.time() + 10
for k, v in final.items():
    while int(cached.get(k)) != v:
        assert time.time() < deadline, (k, int(cached.get(k)), v)
        time.sleep(0.01)
print("ok", reads)
"#;
    let name = text(server.raw().cmd(&words("HELLO 3")));
    let name = if name.contains("valkey") {
        "valkey"
    } else {
        "redis"
    };
    let before = upstream_gets(&server);
    let out = python(&["-c", script, &proxy.port().to_string(), name]);
    let reads: u64 = out.trim().strip_prefix("ok ").unwrap().parse().unwrap();
    // The cache answered reads: fewer GETs reached the upstream than the reader made.
    let gets = upstream_gets(&server) - before;
    assert!(gets < reads, "{gets} GETs upstream for {reads} reads");
    eprintln!("redis-py: {reads} reads, {gets} reached the upstream");
});

both!(bcast_prefixes_added_by_a_later_call, |kind: Kind| {
    // Redis's tracking.tcl "Adding prefixes to BCAST mode works" and "BCAST with prefix
    // collisions throw errors": a second CLIENT TRACKING ON BCAST adds its prefixes to the
    // earlier ones, and a prefix overlapping one of them is the server's own refusal; the same
    // transcript directly and through respite.
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let run = |mut c: Raw, w: &mut Raw| -> Vec<String> {
        let mut out = Vec::new();
        for line in [
            "HELLO 3",
            "CLIENT TRACKING ON BCAST PREFIX a: PREFIX b:",
            "CLIENT TRACKING ON BCAST PREFIX c:",
            "CLIENT TRACKING ON BCAST PREFIX FOO PREFIX BAR",
            "CLIENT TRACKING ON BCAST PREFIX FO",
            "CLIENT TRACKING ON BCAST PREFIX BARB",
        ] {
            let reply = text(c.cmd(&words(line)));
            out.push(if line == "HELLO 3" {
                "hello".into()
            } else {
                reply
            });
        }
        for key in ["c:1", "a:1", "FOO1"] {
            w.cmd(&words(&format!("SET {key} 1")));
            out.push(text(c.reply().expect("an invalidation")));
        }
        out.push(text(c.cmd(&words("PING"))));
        out
    };
    let mut w = server.raw();
    let direct = run(server.raw(), &mut w);
    assert!(direct[4].starts_with("-ERR Prefix 'FO'"), "{direct:?}");
    let through = run(proxy.raw(), &mut w);
    assert_eq!(through, direct);
});

both!(
    flushall_reaches_a_resp2_clients_redirect_target,
    |kind: Kind| {
        // Redis's tracking.tcl "Invalidation message received for flushall/flushdb": the flush a
        // RESP2 client's tracking redirects is a null in that client's protocol inside the push
        // (`$-1`); the subscriber gets it as directly.
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let run = |mut sub: Raw, mut c: Raw, mut w: Raw, flush: &str| -> String {
            let id = text(sub.cmd(&words("CLIENT ID")))
                .trim_start_matches(':')
                .trim()
                .to_string();
            sub.cmd(&words("SUBSCRIBE __redis__:invalidate"));
            c.cmd(&words(&format!("CLIENT TRACKING ON REDIRECT {id}")));
            w.cmd(&words("SET fl:k 1"));
            c.cmd(&words("GET fl:k"));
            w.cmd(&words(flush));
            text(sub.reply().expect("the flush"))
        };
        for flush in ["FLUSHALL", "FLUSHDB"] {
            let direct = run(server.raw(), server.raw(), server.raw(), flush);
            assert_eq!(
                direct,
                "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
            );
            let through = run(proxy.raw(), proxy.raw(), proxy.raw(), flush);
            assert_eq!(through, direct, "{flush}");
        }
    }
);

//! Hot reload of the shipped binary (SIGHUP and `POST /reload`) under a running workload: a
//! tenant's TTL cap changes for the next command of a connection opened before (judged by the
//! upstream's PTTL), an invalid file changes nothing and is counted, no client connection drops,
//! SIGHUP does not end the process; and the latency histograms grow with commands.
use crate::support::{Binary, Kind, Raw, Server, TenantToml, signal, tenants, wait_until, words};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn config(max_ms: u64) -> String {
    tenants(&[TenantToml::new("app", "app:")
        .login("app-pw")
        .allow(&["@all"])
        .ttl("*", Some(max_ms), 1000)])
}

/// The value of one series in the binary's /metrics (0 when absent).
fn metric(proxy: &Binary, series: &str) -> f64 {
    let (_, body) = proxy.admin_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn post(proxy: &Binary, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(proxy.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// The upstream's PTTL of `key`, in ms.
fn pttl(upstream: &Server, key: &str) -> i64 {
    let reply = upstream.raw().cmd(&words(&format!("PTTL {key}")));
    std::str::from_utf8(&reply[1..reply.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

fn login(proxy: &Binary) -> Raw {
    let mut c = Raw::connect(proxy.addr);
    assert_eq!(c.cmd(&words("AUTH app app-pw")), b"+OK\r\n");
    c
}

#[test]
fn reload_changes_a_ttl_cap_for_the_next_command_and_refuses_an_invalid_file() {
    let upstream = Server::start(Kind::Redis);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, config(100_000)).unwrap();
    let proxy = Binary::start(
        "",
        &[
            "--config",
            file.to_str().unwrap(),
            "--upstream",
            &upstream.url(),
        ],
    );
    // A workload that runs through every reload on connections opened before it.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, done, mut c) = (stop.clone(), done.clone(), login(&proxy));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let set = format!("SET w{w}:{} v EX 50", i % 100);
                    assert_eq!(c.cmd(&words(&set)), b"+OK\r\n", "worker {w} command {i}");
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut client = login(&proxy);
    assert_eq!(client.cmd(&words("SET before v EX 1000")), b"+OK\r\n");
    let before = pttl(&upstream, "app:before");
    assert!(before > 10_000 && before <= 100_000, "{before}");

    // SIGHUP: the cap drops to 10 s, and the connection from before gets it at its next command.
    std::fs::write(&file, config(10_000)).unwrap();
    signal(proxy.pid(), "HUP");
    wait_until(Duration::from_secs(10), || {
        metric(&proxy, "respite_config_reloads_total{result=\"ok\"}") == 1.0
    })
    .expect("the reload is counted");
    assert_eq!(client.cmd(&words("SET after v EX 1000")), b"+OK\r\n");
    let after = pttl(&upstream, "app:after");
    assert!(
        after > 0 && after <= 10_000,
        "capped by the reloaded rule: {after}"
    );

    // An invalid file: nothing changes, the failure is counted and answered with its reason.
    std::fs::write(&file, "[[tenant]\nname = ").unwrap();
    let (code, body) = post(&proxy, "/reload");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("proxy.toml line 1"), "{body}");
    signal(proxy.pid(), "HUP");
    wait_until(Duration::from_secs(10), || {
        metric(&proxy, "respite_config_reloads_total{result=\"error\"}") == 2.0
    })
    .expect("both failures are counted");
    assert_eq!(client.cmd(&words("SET invalid v EX 1000")), b"+OK\r\n");
    let still = pttl(&upstream, "app:invalid");
    assert!(
        still > 0 && still <= 10_000,
        "the running rule stays: {still}"
    );

    // What cannot change live is named and left as it runs.
    std::fs::write(
        &file,
        format!(
            "{}[limits]\nmax_inflight_per_client = 500\n[runtime]\nworker_threads = 3\n",
            config(20_000)
        ),
    )
    .unwrap();
    let (code, body) = post(&proxy, "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("need a restart") && body.contains("runtime"),
        "{body}"
    );
    assert_eq!(client.cmd(&words("SET third v EX 1000")), b"+OK\r\n");
    let third = pttl(&upstream, "app:third");
    assert!(third > 10_000 && third <= 20_000, "{third}");

    // A removed tenant: its live sessions are no longer authenticated.
    std::fs::write(
        &file,
        tenants(&[TenantToml::new("other", "other:")
            .login("o-pw")
            .allow(&["@all"])]),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("no worker saw an error or a dropped connection");
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(post(&proxy, "/reload").0, 200);
    let reply = client.cmd(&words("GET after"));
    assert!(
        reply.starts_with(b"-NOAUTH"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Still the same process, alive after three SIGHUPs... well, two, and serving.
    let mut proxy = proxy;
    assert!(
        matches!(proxy.child.try_wait(), Ok(None)),
        "SIGHUP ended the process"
    );
    proxy.kill();
}

#[test]
fn latency_histograms_grow_with_commands() {
    let upstream = Server::start(Kind::Valkey);
    let proxy = Binary::start("", &["--upstream", &upstream.url()]);
    let count = |p: &Binary, series: &str| metric(p, series);
    let mut c = Raw::connect(proxy.addr);
    for i in 0..40 {
        assert_eq!(c.cmd(&words(&format!("SET lat:{i} v"))), b"+OK\r\n");
    }
    let set = "respite_command_duration_seconds_count{command=\"set\"}";
    let rtt = "respite_upstream_rtt_seconds_count{protocol=\"resp2\"}";
    // 1 in 16 commands per client is timed, from its first: 3 of the 40.
    wait_until(Duration::from_secs(5), || count(&proxy, set) == 3.0)
        .unwrap_or_else(|| panic!("{set} = {}", count(&proxy, set)));
    let rtt_before = count(&proxy, rtt);
    assert!(
        rtt_before >= 40.0,
        "one round trip per unpipelined command: {rtt_before}"
    );
    for i in 0..40 {
        assert_eq!(c.cmd(&words(&format!("GET lat:{i}"))), b"$1\r\nv\r\n");
    }
    let get = "respite_command_duration_seconds_count{command=\"get\"}";
    wait_until(Duration::from_secs(5), || count(&proxy, get) == 2.0)
        .unwrap_or_else(|| panic!("{get} = {}", count(&proxy, get)));
    assert!(count(&proxy, rtt) >= rtt_before + 40.0);
    let (_, body) = proxy.admin_get("/metrics");
    for series in [
        "respite_command_duration_seconds_bucket{command=\"get\",le=\"0.005\"}",
        "respite_upstream_inflight_commands{protocol=\"resp2\"} 0",
        "respite_upstream_shared_connections ",
    ] {
        assert!(body.contains(series), "{series} in:\n{body}");
    }
    assert!(count(&proxy, "respite_upstream_shared_connections") >= 1.0);
}

/// A near cache with one rule for every client (none when `pattern` is `None`).
fn cache_config(pattern: Option<&str>) -> String {
    let mut toml = String::from("[near_cache]\nenabled = true\n");
    if let Some(p) = pattern {
        toml.push_str(&format!("[[near_cache.rule]]\npattern = \"{p}\"\n"));
    }
    toml
}

/// `GET` calls the upstream has answered so far (its own `INFO commandstats`).
fn upstream_gets(upstream: &Server) -> u64 {
    let info = upstream.raw().cmd(&words("INFO commandstats"));
    String::from_utf8_lossy(&info)
        .split("cmdstat_get:calls=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

/// A `near_cache.rule` removed by a reload stops caching at once, on a connection opened
/// before: the key it covered was answered from the cache (the upstream saw no GET), and after
/// the reload every read reaches the upstream. Counted as a flush with reason "reload".
#[test]
fn reload_replaces_the_near_cache_rules() {
    let upstream = Server::start(Kind::Redis);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, cache_config(Some("hot:*"))).unwrap();
    let proxy = Binary::start(
        "",
        &[
            "--config",
            file.to_str().unwrap(),
            "--upstream",
            &upstream.url(),
        ],
    );
    wait_until(Duration::from_secs(10), || {
        metric(&proxy, "respite_near_cache_enabled") == 1.0
    })
    .expect("the near cache's tracking connections come up");
    let mut client = Raw::connect(proxy.addr);
    assert_eq!(client.cmd(&words("SET hot:k v")), b"+OK\r\n");
    // The first read fills the cache; the next ones are hits the upstream never sees.
    assert_eq!(client.cmd(&words("GET hot:k")), b"$1\r\nv\r\n");
    let filled = upstream_gets(&upstream);
    assert!(filled >= 1, "the fill reached the upstream");
    for _ in 0..5 {
        assert_eq!(client.cmd(&words("GET hot:k")), b"$1\r\nv\r\n");
    }
    assert_eq!(upstream_gets(&upstream), filled, "cached under the rule");

    // The rule goes; the cache's other settings are unchanged, so nothing needs a restart.
    std::fs::write(&file, cache_config(None)).unwrap();
    let (code, body) = post(&proxy, "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("near_cache"),
        "nothing waits for a restart: {body}"
    );
    for i in 1..=5 {
        assert_eq!(client.cmd(&words("GET hot:k")), b"$1\r\nv\r\n");
        assert_eq!(
            upstream_gets(&upstream),
            filled + i,
            "read {i} after the reload"
        );
    }
    wait_until(Duration::from_secs(5), || {
        metric(
            &proxy,
            "respite_near_cache_flushes_total{reason=\"reload\"}",
        ) == 1.0
    })
    .expect("the rule change emptied the cache");

    // The rule comes back: caching resumes, from an empty cache (one fill, then hits).
    std::fs::write(&file, cache_config(Some("hot:*"))).unwrap();
    let (code, body) = post(&proxy, "/reload");
    assert_eq!(code, 200, "{body}");
    let before = upstream_gets(&upstream);
    for _ in 0..5 {
        assert_eq!(client.cmd(&words("GET hot:k")), b"$1\r\nv\r\n");
    }
    assert_eq!(upstream_gets(&upstream), before + 1, "one fill, then hits");
}

/// `POST /reload` with extra request headers, to any address: (status, body).
fn post_to(admin: std::net::SocketAddr, headers: &str) -> (u16, String) {
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /reload HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// The admin port's control endpoint is apart from its read-only ones: on a listener that is not
/// loopback, `POST /reload` is refused (and counted) while /metrics and /readyz still answer;
/// with `admin.reload_token_file` it needs the file's token, on any listener. (The in-process
/// proxy has no sources to reload, so a request that passes the gate gets reload's own 400.)
#[test]
fn post_reload_needs_a_loopback_listener_or_the_token() {
    use crate::support::Proxy;
    let open = Proxy::start_with("none", &[("admin.listen", "0.0.0.0:0")]);
    let admin = open.admin.unwrap();
    assert!(admin.ip().is_unspecified());
    let (status, body) = post_to(admin, "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.reload_token_file"), "{body}");
    assert_eq!(open.admin_get("/readyz").0, 200);
    let (status, metrics) = open.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(
            |l| l.starts_with("respite_config_reloads_total{result=\"refused\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    let loopback = Proxy::start_with("none", &[]);
    let (status, body) = post_to(loopback.admin.unwrap(), "");
    assert_eq!(status, 400, "past the gate, to reload itself: {body}");

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let guarded = Proxy::start_with(
        "none",
        &[
            ("admin.listen", "0.0.0.0:0"),
            ("admin.reload_token_file", token.to_str().unwrap()),
        ],
    );
    let admin = guarded.admin.unwrap();
    assert_eq!(post_to(admin, "").0, 401);
    assert_eq!(post_to(admin, "Authorization: Bearer s3cret\r\n").0, 401);
    assert_eq!(
        post_to(admin, "Authorization: Bearer s3cret-token-and-more\r\n").0,
        401
    );
    assert_eq!(
        post_to(admin, "Authorization: Bearer s3cret-token\r\n").0,
        400
    );
    // A rotated token applies at once.
    std::fs::write(&token, "rotated").unwrap();
    assert_eq!(
        post_to(admin, "Authorization: Bearer s3cret-token\r\n").0,
        401
    );
    assert_eq!(post_to(admin, "Authorization: Bearer rotated\r\n").0, 400);
}

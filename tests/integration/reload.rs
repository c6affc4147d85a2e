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

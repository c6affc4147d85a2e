//! `/metrics` as it reads from the first scrape and through an outage: every counter whose labels
//! are known is there at 0 from start (so `rate()` and `increase()` see its first event), the
//! probe's round trip is NaN while the upstream does not answer (never the last value from before),
//! and `admin.command_histograms` trades per-command latency series for one.
//!
//! Each test runs the shipped binary: the metrics registry is per process.
use crate::observability::promtool;
use crate::support::{Binary, Kind, Raw, Server, TenantToml, tenants, wait_until, words};
use std::time::Duration;

/// The value of `series` (name and labels, exactly as exported) in a /metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn every_counter_is_exported_at_zero_from_start() {
    let server = Server::start(Kind::Redis);
    let toml = format!(
        "{}[near_cache]\nenabled = true\n",
        tenants(&[TenantToml::new("web", "web:")
            .login("web-pw")
            .allow(&["@all"])])
    );
    let respite = Binary::start(&toml, &["--upstream", &server.url()]);
    let (_, text) = respite.admin_get("/metrics");
    for series in [
        r#"respite_upstream_reconnects_total{protocol="resp2"}"#,
        r#"respite_upstream_reconnects_total{protocol="resp3"}"#,
        r#"respite_upstream_health_transitions_total{to="down"}"#,
        r#"respite_upstream_health_transitions_total{to="recovering"}"#,
        "respite_recovery_replayed_total",
        "respite_recovery_conflicts_total",
        "respite_recovery_unknown_fate_total",
        "respite_recovery_discarded_writes_total",
        "respite_local_only_journal_entries",
        "respite_local_only_journal_bytes",
        r#"respite_config_reloads_total{result="error"}"#,
        r#"respite_errors_total{kind="timeout"}"#,
        r#"respite_errors_total{kind="local_only"}"#,
        "respite_upstream_error_replies_total",
        "respite_upstream_pinned_refused_total",
        "respite_pubsub_slow_subscribers_total",
        "respite_tracking_lost_total",
        r#"respite_near_cache_flushes_total{reason="tracking_lost"}"#,
        "respite_near_cache_evictions_total",
        r#"respite_tenant_commands_total{tenant="web"}"#,
        r#"respite_tenant_errors_total{tenant="web"}"#,
        r#"respite_tenant_auth_failures_total{tenant="web"}"#,
        r#"respite_tenant_auth_failures_total{tenant="unknown"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} at 0:\n{text}");
    }
    // Every counter family has a sample, except those labelled by what clients send.
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for family in families {
        if ["respite_commands_total", "respite_tenant_refusals_total"].contains(&family)
            || family.starts_with("respite_near_cache_hits")
            || family.starts_with("respite_near_cache_misses")
        {
            continue;
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with(family) && !l.starts_with('#')),
            "counter {family} described but not exported:\n{text}"
        );
    }
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{out}\n{text}");
}

#[test]
fn the_probe_round_trip_is_nan_while_the_upstream_is_down() {
    let mut server = Server::start(Kind::Redis);
    let respite = Binary::start(
        "",
        &[
            "--upstream",
            &server.url(),
            "--set",
            "health.probe_interval_ms=50",
            "--set",
            "health.probe_timeout_ms=300",
            "--set",
            "upstream.backoff_max_ms=100",
        ],
    );
    let rtt = || {
        sample(
            &respite.admin_get("/metrics").1,
            "respite_upstream_probe_rtt_seconds",
        )
    };
    wait_until(Duration::from_secs(5), || rtt().is_some_and(f64::is_finite))
        .expect("a probe round trip while the upstream answers");
    server.kill();
    wait_until(Duration::from_secs(10), || {
        sample(
            &respite.admin_get("/metrics").1,
            r#"respite_upstream_health{state="down"}"#,
        ) == Some(1.0)
    })
    .expect("the upstream is down");
    let (_, text) = respite.admin_get("/metrics");
    let value = sample(&text, "respite_upstream_probe_rtt_seconds");
    assert!(value.is_some_and(f64::is_nan), "NaN while down:\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"respite_upstream_health_transitions_total{to="down"}"#
        ),
        Some(1.0)
    );
    let (_, stats) = respite.admin_get("/stats");
    assert!(stats.contains("\"last_probe_rtt_us\":null"), "{stats}");
    // Back: a round trip again.
    server.restart();
    wait_until(Duration::from_secs(10), || {
        rtt().is_some_and(f64::is_finite)
    })
    .expect("a round trip once the upstream answers again");
}

/// Latency series with and without `admin.command_histograms`.
#[test]
fn per_command_histograms_can_be_switched_off() {
    let series = |per_command: bool| {
        let flag = format!("admin.command_histograms={per_command}");
        let respite = Binary::start("", &["--upstream", "none", "--set", &flag]);
        // A few clients, each timed on its first command.
        for cmd in ["SET k v", "GET k", "INCR n", "PING"] {
            let mut c = Raw::connect(respite.addr);
            c.cmd(&words(cmd));
            c.cmd(&words("PING"));
        }
        let (_, text) = respite.admin_get("/metrics");
        let commands: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("respite_command_duration_seconds_count{command=\""))
            .filter_map(|l| Some(l.split_once('"')?.0.to_string()))
            .collect();
        (commands, text)
    };
    let (on, text) = series(true);
    for command in ["set", "get", "incr", "ping"] {
        assert!(on.iter().any(|c| c == command), "{command}:\n{text}");
    }
    assert!(!on.iter().any(|c| c == "all"), "{on:?}");
    let (off, text) = series(false);
    assert_eq!(off, ["all"], "one series:\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"respite_command_duration_seconds_count{command="all"}"#
        ),
        Some(4.0),
        "the first command of each of four clients:\n{text}"
    );
}

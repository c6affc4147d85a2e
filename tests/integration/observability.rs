//! Metrics as an operator meets them: a real Prometheus (Debian's `prometheus`) scrapes a running
//! respite through deploy/prometheus/prometheus.yml's annotation relabeling and loads its alerting
//! rules; `promtool` checks the rules, the config and respite's /metrics text; every expression in
//! the Grafana dashboard and the rules names a metric respite defines and parses in Prometheus.
//!
//! The tools are installed by scripts/test.sh; a test that needs one fails, naming it, when it is
//! missing (never skips).
use crate::deploy::{read, repo, yaml_docs};
use crate::support::{Kind, Reaped, Server, free_port, http_get, wait_until, words};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: scripts/test.sh installs it (apt-get install prometheus)"
    );
    Command::new(name)
}

pub(crate) fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = tool("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every metric name respite defines: the `respite_*` string literals in src/, and the process
/// metrics src/admin/process.rs writes.
fn defined_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![repo("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for prefix in ["\"respite_", "\"process_"] {
                    for (at, _) in text.match_indices(prefix) {
                        let name: String = text[at + 1..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        names.insert(name);
                    }
                }
            }
        }
    }
    names
}

/// The metric names an expression uses (identifiers with respite's or the process prefix; a
/// histogram's series suffixes stripped).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["respite_", "process_"] {
        for (at, _) in expr.match_indices(prefix) {
            if at > 0 && {
                let c = expr.as_bytes()[at - 1];
                c.is_ascii_alphanumeric() || c == b'_'
            } {
                continue;
            }
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            out.push(base.to_string());
        }
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    let d: Value = serde_json::from_str(&read("deploy/grafana/respite.json")).unwrap();
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    exprs
}

fn alert_exprs() -> Vec<String> {
    let rules = &yaml_docs("deploy/prometheus/alerts.yml")[0];
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_dashboard_and_the_rules_use_metrics_respite_defines() {
    let defined = defined_metrics();
    // The finder itself: names from several modules.
    for known in [
        "respite_commands_total",
        "respite_near_cache_hits_total",
        "respite_tenant_refusals_total",
        "respite_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(defined.contains(known), "{known} in {defined:?}");
    }
    let d: Value = serde_json::from_str(&read("deploy/grafana/respite.json")).unwrap();
    assert_eq!(d["uid"], "respite");
    let exprs: Vec<String> = dashboard_exprs().into_iter().chain(alert_exprs()).collect();
    assert!(exprs.len() > 30, "{} expressions", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metrics_in(e);
        assert!(!names.is_empty() || e.contains("up{"), "no metric in: {e}");
        for n in names {
            assert!(
                defined.contains(&n),
                "{n} (in `{e}`) is not a metric respite defines"
            );
            used.insert(n);
        }
    }
    for needed in [
        "respite_upstream_health",
        "respite_local_only",
        "respite_near_cache_hits_total",
        "respite_errors_total",
        "respite_upstream_probe_rtt_seconds",
    ] {
        assert!(used.contains(needed), "nothing watches {needed}");
    }
}

#[test]
fn promtool_passes_the_alerting_rules() {
    let (ok, out) = promtool(
        &[
            "check",
            "rules",
            repo("deploy/prometheus/alerts.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
}

/// The shipped prometheus.yml, made runnable here: Debian's Prometheus is built without Kubernetes
/// discovery, so `kubernetes_sd_configs` becomes a file of targets that carry the labels
/// Kubernetes discovery would set (the pod's annotations), and the relabeling runs unchanged.
/// Scrapes and rule evaluations every second.
fn runnable_config(dir: &Path, targets: &Value) -> std::path::PathBuf {
    let mut config = yaml_docs("deploy/prometheus/prometheus.yml").remove(0);
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let job = &mut config["scrape_configs"][0];
    let map = job.as_mapping_mut().unwrap();
    assert!(
        map.remove("kubernetes_sd_configs").is_some(),
        "the shipped config discovers pods"
    );
    let targets_file = dir.join("targets.json");
    std::fs::write(&targets_file, targets.to_string()).unwrap();
    map.insert(
        "file_sd_configs".into(),
        serde_norway::from_str(&format!("[{{files: [\"{}\"]}}]", targets_file.display())).unwrap(),
    );
    std::fs::copy(repo("deploy/prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_norway::to_string(&config).unwrap()).unwrap();
    path
}

/// A pod as Kubernetes discovery describes it: its IP with a port of no interest, and its
/// annotations.
fn pod(name: &str, scrape: &str, port: u16) -> Value {
    serde_json::json!({
        "targets": ["127.0.0.1:1"],
        "labels": {
            "__meta_kubernetes_namespace": "default",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_label_app": "app",
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
            "__meta_kubernetes_pod_annotation_prometheus_io_port": port.to_string(),
            "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        }
    })
}

/// A GET to Prometheus's HTTP API (HTTP/1.0: the whole body, never chunked).
fn api(port: u16, path: &str, query: &[(&str, &str)]) -> Value {
    let mut url = path.to_string();
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(k);
        url.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {url} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// The value of an instant query's single series, if there is exactly one.
fn scalar(port: u16, query: &str) -> Option<f64> {
    let r = api(port, "/api/v1/query", &[("query", query)]);
    let result = r["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

const CACHE: &str = "[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = \"user:*\"\n";

#[test]
fn prometheus_scrapes_respite_through_the_shipped_config() {
    let server = Server::start(Kind::Redis);
    let dir = tempfile::tempdir().unwrap();
    let (tcp, admin, prom) = (free_port(), free_port(), free_port());
    // respite in a process of its own: its registry holds only its own counts.
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, CACHE).unwrap();
    let _respite = Reaped(
        Command::new(env!("CARGO_BIN_EXE_respite"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{tcp}")])
            .args(["--upstream", &server.url()])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--log-level", "error"])
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
    })
    .expect("respite listens");
    let mut c = crate::support::Raw::connect(([127, 0, 0, 1], tcp).into());
    c.cmd(&words("SET user:1 alice"));
    for _ in 0..7 {
        assert_eq!(c.cmd(&words("GET user:1")), b"$5\r\nalice\r\n");
    }
    let targets = serde_json::json!([pod("app-0", "true", admin), pod("other", "false", admin)]);
    let prometheus_yml = runnable_config(dir.path(), &targets);
    let (ok, out) = promtool(&["check", "config", prometheus_yml.to_str().unwrap()], None);
    assert!(ok, "promtool check config:\n{out}");
    let data = dir.path().join("data");
    let _prometheus = Reaped(
        tool("prometheus")
            .arg(format!("--config.file={}", prometheus_yml.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            // One core: the tests alongside share this machine's two.
            .env("GOMAXPROCS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", prom)).is_ok()
            && http_get(("127.0.0.1", prom), "/-/ready").0 == 200
    })
    .expect("Prometheus is ready");
    // Seven GETs went through respite: the scraped counter says so, through the relabeling that
    // sent Prometheus to the annotated port (the discovered address's port 1 has no server).
    wait_until(Duration::from_secs(30), || {
        scalar(
            prom,
            r#"respite_commands_total{job="respite", pod="app-0", command="get"}"#,
        ) == Some(7.0)
    })
    .expect("Prometheus scraped respite's 7 GETs");
    // Only the pod annotated for scraping is a target.
    let active = api(prom, "/api/v1/targets", &[("state", "active")]);
    let scraped: Vec<&Value> = active["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(scraped.len(), 1, "{active}");
    assert_eq!(scraped[0]["labels"]["pod"], "app-0");
    assert_eq!(
        scraped[0]["scrapeUrl"],
        format!("http://127.0.0.1:{admin}/metrics")
    );
    let info = api(prom, "/api/v1/query", &[("query", "respite_build_info")]);
    assert_eq!(
        info["data"]["result"][0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{info}"
    );
    // The near cache: one fill, six hits; gauges for the upstream's health and tracking.
    wait_until(Duration::from_secs(15), || {
        scalar(prom, "sum(respite_near_cache_hits_total)") == Some(6.0)
            && scalar(prom, "respite_near_cache_enabled") == Some(1.0)
            && scalar(prom, r#"respite_upstream_health{state="healthy"}"#) == Some(1.0)
            && scalar(prom, "respite_local_only") == Some(0.0)
            && scalar(prom, "process_resident_memory_bytes").is_some_and(|v| v > 1e6)
            && scalar(prom, "respite_client_read_bytes_total").is_some_and(|v| v > 0.0)
    })
    .expect("the near cache's hits and the gauges scraped");
    // The rules loaded, and every dashboard and rule expression parses and runs in Prometheus.
    let rules = api(prom, "/api/v1/rules", &[]);
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, 14, "{rules}");
    for e in dashboard_exprs().into_iter().chain(alert_exprs()) {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$namespace", ".*")
            .replace("$pod", ".*");
        let e = match e.strip_prefix("label_values(") {
            // A Grafana variable query, not PromQL: its selector is.
            Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
            None => e,
        };
        let r = api(prom, "/api/v1/query", &[("query", &e)]);
        assert_eq!(r["status"], "success", "{e}: {r}");
    }
    // promtool's own lint of the exposition text.
    let (_, metrics) = http_get(("127.0.0.1", admin), "/metrics");
    let (ok, out) = promtool(&["check", "metrics"], Some(&metrics));
    assert!(ok, "promtool check metrics:\n{out}\n{metrics}");
}

/// `respite_near_cache_enabled` follows the tracking connections: 1 while they are up, 0 when the
/// upstream (and so tracking) is gone.
#[test]
fn the_near_cache_gauge_follows_tracking() {
    let mut server = Server::start(Kind::Redis);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, CACHE).unwrap();
    let admin = free_port();
    let _respite = Reaped(
        Command::new(env!("CARGO_BIN_EXE_respite"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--upstream", &server.url()])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--log-level", "error"])
            .spawn()
            .unwrap(),
    );
    let gauges = || {
        let (_, m) = http_get(("127.0.0.1", admin), "/metrics");
        let get = |name: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        (
            get("respite_near_cache_enabled"),
            get("respite_near_cache_tracking_connections"),
        )
    };
    let up = |want: (Option<f64>, Option<f64>)| {
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() && gauges() == want
        })
    };
    up((Some(1.0), Some(2.0))).expect("enabled with both tracking connections up");
    server.kill();
    up((Some(0.0), Some(0.0))).expect("0 once tracking is lost");
    server.restart();
    up((Some(1.0), Some(2.0))).expect("1 again once tracking is back");
}

/// An outage is a few log lines, not one per reconnect attempt: each connect-failure warning at
/// most once per 30 s (it was 31 WARN lines in 20 s), and no colour codes into a pipe.
#[test]
fn an_outage_logs_each_warning_once_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, CACHE).unwrap();
    let admin = free_port();
    // Nothing listens on this port: every connection attempt fails at once.
    let down = format!("redis://127.0.0.1:{}", free_port());
    let mut respite = Reaped(
        Command::new(env!("CARGO_BIN_EXE_respite"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--upstream", &down])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Enough failed attempts that the old policy (powers of two per connection) logged 10+.
    wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() && {
            let (_, m) = http_get(("127.0.0.1", admin), "/metrics");
            m.lines()
                .filter_map(|l| l.strip_prefix("respite_upstream_reconnects_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
                >= 16.0
        }
    })
    .expect("16 failed reconnects");
    let _ = respite.0.kill();
    let mut log = String::new();
    respite
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("upstream connection failed"), 1, "{log}");
    assert_eq!(count("near-cache tracking connection failed"), 1, "{log}");
    assert_eq!(count("respite started"), 1, "{log}");
    assert!(!log.contains('\x1b'), "no colour codes into a pipe:\n{log}");
}

/// With `[[tenant]]` configured, `/metrics` still passes `promtool check metrics`: the
/// `respite_tenant_*` families carry HELP and TYPE (they failed it before).
#[test]
fn promtool_passes_the_metrics_with_tenants() {
    use crate::support::{Proxy, TenantToml, tenants};
    let server = Server::start(Kind::Redis);
    let toml = tenants(&[TenantToml::new("web", "web:")
        .login("web-pw")
        .allow(&["@all", "-@dangerous"])]);
    let proxy = Proxy::start_with_config(&server.url(), &toml, &[]);
    let mut c = proxy.login("web", "web-pw");
    assert_eq!(c.cmd(&words("SET k v")), b"+OK\r\n");
    assert!(c.cmd(&words("FLUSHALL")).starts_with(b"-"));
    assert!(
        proxy
            .raw()
            .cmd(&words("AUTH web wrong"))
            .starts_with(b"-WRONGPASS")
    );
    let (_, metrics) = proxy.admin_get("/metrics");
    for family in [
        "respite_tenant_commands_total",
        "respite_tenant_refusals_total",
        "respite_tenant_auth_failures_total",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family}:\n{metrics}"
        );
    }
    let (ok, out) = promtool(&["check", "metrics"], Some(&metrics));
    assert!(ok, "promtool check metrics:\n{out}\n{metrics}");
}

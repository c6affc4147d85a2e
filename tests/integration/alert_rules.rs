//! The alerting rules as Prometheus evaluates them: `promtool test rules` feeds series shaped like
//! respite's /metrics through deploy/prometheus/alerts.yml and checks which alerts fire, when, with
//! which labels and rendered text. Covers the alerts of issue 25 (latency, reload failures,
//! recovery, certificate expiry); tests/integration/observability.rs checks the file as a whole.
use crate::deploy::{repo, yaml_docs};
use crate::observability::promtool;
use serde_json::{Value, json};

/// A series of respite's in pod `pod` (namespace `n`), with `values` in promtool's notation.
fn series(name: &str, pod: &str, labels: &str, values: &str) -> Value {
    let extra = if labels.is_empty() {
        String::new()
    } else {
        format!(", {labels}")
    };
    json!({
        "series": format!("{name}{{job=\"respite\", namespace=\"n\", pod=\"{pod}\"{extra}}}"),
        "values": values,
    })
}

/// The shipped rule's static annotations (description, runbook_url), plus the rendered summary.
fn annotations(alert: &str, summary: &str) -> Value {
    let rules = &yaml_docs("deploy/prometheus/alerts.yml")[0];
    let rule = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["alert"].as_str() == Some(alert))
        .unwrap_or_else(|| panic!("{alert} in alerts.yml"));
    let text = |k: &str| rule["annotations"][k].as_str().unwrap().to_string();
    json!({
        "summary": summary,
        "description": text("description"),
        "runbook_url": text("runbook_url"),
    })
}

fn expect(alert: &str, at: &str, firing: Vec<(Value, Value)>) -> Value {
    let alerts: Vec<Value> = firing
        .into_iter()
        .map(|(labels, annotations)| json!({"exp_labels": labels, "exp_annotations": annotations}))
        .collect();
    json!({"eval_time": at, "alertname": alert, "exp_alerts": alerts})
}

#[test]
fn the_operations_alerts_fire_when_they_should_and_only_then() {
    let input = vec![
        // Pod a's certificate for clients expires in 10 days, its upstream's in 30.
        series(
            "respite_tls_cert_not_after_seconds",
            "a",
            r#"side="listen""#,
            "864000x180",
        ),
        series(
            "respite_tls_cert_not_after_seconds",
            "a",
            r#"side="upstream""#,
            "2592000x180",
        ),
        // One failed reload at minute 10.
        series(
            "respite_config_reloads_total",
            "a",
            r#"result="error""#,
            "0x10 1x170",
        ),
        series(
            "respite_config_reloads_total",
            "a",
            r#"result="ok""#,
            "0+1x180",
        ),
        // Pod a's recovery at minute 10 discarded 5 writes and had 2 conflicts; pod b's none
        // (exported at 0 from start, as respite does).
        series(
            "respite_recovery_discarded_writes_total",
            "a",
            "",
            "0x10 5x170",
        ),
        series("respite_recovery_conflicts_total", "a", "", "0x10 2x170"),
        series("respite_recovery_unknown_fate_total", "a", "", "0x180"),
        series("respite_recovery_discarded_writes_total", "b", "", "0x180"),
        series("respite_recovery_conflicts_total", "b", "", "0x180"),
        series("respite_recovery_unknown_fate_total", "b", "", "0x10 1x170"),
    ];
    // Latency: pod a's GETs have their p99 between 100 and 250 ms; pod b's GETs are fast and
    // only its BLPOPs (blocked by design) wait long.
    let mut latency = Vec::new();
    for (pod, command, le_01, le_025) in [
        ("a", "get", "0+10x180", "0+100x180"),
        ("b", "get", "0+100x180", "0+100x180"),
        ("b", "blpop", "0x180", "0x180"),
    ] {
        let c = format!("command=\"{command}\"");
        for (le, values) in [("0.1", le_01), ("0.25", le_025), ("+Inf", "0+100x180")] {
            latency.push(series(
                "respite_command_duration_seconds_bucket",
                pod,
                &format!("{c}, le=\"{le}\""),
                values,
            ));
        }
        latency.push(series(
            "respite_command_duration_seconds_count",
            pod,
            &c,
            "0+100x180",
        ));
    }
    let pod = |extra: Value| {
        let mut labels = json!({"job": "respite", "namespace": "n", "pod": "a"});
        for (k, v) in extra.as_object().unwrap() {
            labels[k] = v.clone();
        }
        labels
    };
    let tests = vec![
        expect(
            "RespiteCertificateExpiry",
            "2h",
            vec![(
                pod(json!({"severity": "warning", "side": "listen"})),
                annotations(
                    "RespiteCertificateExpiry",
                    "A TLS certificate of respite in a (listen) expires in 9d 22h 0m 0s",
                ),
            )],
        ),
        // Not before it has held for an hour.
        expect("RespiteCertificateExpiry", "30m", vec![]),
        expect(
            "RespiteReloadFailed",
            "20m",
            vec![(
                pod(json!({"severity": "warning", "result": "error"})),
                annotations(
                    "RespiteReloadFailed",
                    "A configuration reload of respite in a failed",
                ),
            )],
        ),
        expect("RespiteReloadFailed", "2h", vec![]),
        expect(
            "RespiteRecoveryDiscardedWrites",
            "30m",
            vec![(
                pod(json!({"severity": "critical"})),
                annotations(
                    "RespiteRecoveryDiscardedWrites",
                    "respite in a discarded 5 writes acknowledged in local-only mode",
                ),
            )],
        ),
        expect("RespiteRecoveryDiscardedWrites", "2h30m", vec![]),
        expect(
            "RespiteRecoveryConflicts",
            "30m",
            vec![
                (
                    pod(json!({"severity": "warning"})),
                    annotations(
                        "RespiteRecoveryConflicts",
                        "Writes replayed by respite in a after an outage conflicted or have an unknown fate",
                    ),
                ),
                (
                    json!({"job": "respite", "namespace": "n", "pod": "b", "severity": "warning"}),
                    annotations(
                        "RespiteRecoveryConflicts",
                        "Writes replayed by respite in b after an outage conflicted or have an unknown fate",
                    ),
                ),
            ],
        ),
        expect(
            "RespiteCommandLatencyHigh",
            "30m",
            vec![(
                json!({"namespace": "n", "pod": "a", "severity": "warning"}),
                annotations(
                    "RespiteCommandLatencyHigh",
                    "p99 command latency through respite in a is 248.3ms",
                ),
            )],
        ),
        // Not before it has held for 10 minutes.
        expect("RespiteCommandLatencyHigh", "10m", vec![]),
    ];
    let mut input_series = input;
    input_series.extend(latency);
    let file = json!({
        "rule_files": [repo("deploy/prometheus/alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}],
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts_test.yml");
    // JSON is YAML: promtool reads it as such.
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let (ok, out) = promtool(&["test", "rules", path.to_str().unwrap()], None);
    assert!(ok, "promtool test rules:\n{out}");
}

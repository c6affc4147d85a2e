//! Local-only mode with a cluster upstream (`redis+cluster://`), on a real Redis Cluster and
//! Valkey Cluster: it takes over only when no node of the cluster serves (every node frozen
//! with SIGSTOP), never for one node's failure (see `cluster.rs`'s one-primary-down scenario),
//! and what it acknowledged is replayed on the cluster, each write to its slot's primary, once
//! the cluster serves again. Judged by the primaries' own keys.
use crate::support::{Cluster, Kind, Proxy, bulk, text, wait_until};
use std::time::Duration;

fn health(proxy: &Proxy) -> String {
    let (_, body) = proxy.admin_get("/stats");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    v["upstream"]["health"]["state"]
        .as_str()
        .expect("state")
        .to_string()
}

fn wait_health(proxy: &Proxy, state: &str, limit: Duration) {
    let mut last = String::new();
    let reached = wait_until(limit, || {
        last = health(proxy);
        last == state
    });
    assert!(reached.is_some(), "health never became {state}: {last}");
}

fn scenario(kind: Kind) {
    let cluster = Cluster::start(kind);
    let proxy = Proxy::start_with(
        &cluster.url(),
        &[
            ("health.probe_interval_ms", "50"),
            ("health.probe_timeout_ms", "300"),
        ],
    );
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&[b"SET", b"lo:before", b"1"]), b"+OK\r\n");
    wait_health(&proxy, "healthy", Duration::from_secs(10));

    // Every node stops answering: no node serves, the whole cluster is down.
    for n in &cluster.nodes {
        n.signal("STOP");
    }
    let stopped = std::time::Instant::now();
    wait_health(&proxy, "down", Duration::from_secs(20));
    eprintln!(
        "[{kind:?}] local-only {:?} after freezing every node",
        stopped.elapsed()
    );
    // Every slot is served locally now (the gauge is set at each scrape).
    let (_, metrics) = proxy.admin_get("/metrics");
    assert!(
        metrics.contains("respite_cluster_slots_local 16384"),
        "respite_cluster_slots_local in local-only mode"
    );
    let keys: Vec<String> = (0..12).map(|i| format!("lo:k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let v = format!("v{i}");
        assert_eq!(
            c.cmd(&[b"SET", k.as_bytes(), v.as_bytes()]),
            b"+OK\r\n",
            "{k}"
        );
    }
    for n in 1..=3 {
        assert_eq!(text(c.cmd(&[b"INCR", b"lo:counter"])), format!(":{n}\r\n"));
    }

    for n in &cluster.nodes {
        n.signal("CONT");
    }
    wait_health(&proxy, "healthy", Duration::from_secs(30));
    // Replayed, each on its slot's primary; what was there before is kept.
    let on_owner = |key: &str| {
        let owner = cluster.slot_owner(cluster.keyslot(key.as_bytes())).unwrap();
        cluster.node(owner).cmd(&[b"GET", key.as_bytes()])
    };
    let replayed = wait_until(Duration::from_secs(10), || {
        keys.iter()
            .enumerate()
            .all(|(i, k)| on_owner(k) == text(bulk(format!("v{i}"))).into_bytes())
    });
    assert!(
        replayed.is_some(),
        "not every local write reached its primary: {:?}",
        keys.iter().map(|k| text(on_owner(k))).collect::<Vec<_>>()
    );
    assert_eq!(text(on_owner("lo:counter")), text(bulk("3")));
    assert_eq!(text(on_owner("lo:before")), text(bulk("1")));
    // And forwarding goes on as before.
    assert_eq!(text(c.cmd(&[b"GET", b"lo:k3"])), text(bulk("v3")));
}

crate::both!(local_only_when_no_node_serves, scenario);

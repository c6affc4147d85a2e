//! Reads from replicas (`upstream.read_from_replicas = true`) on a real Redis Cluster and Valkey
//! Cluster: read-only commands are served by the replicas (judged by the replicas' own INFO
//! commandstats), a client's read right after its write always sees it (values large enough
//! that a replica applies them measurably later than its primary answers, so a read sent to a
//! replica that has not caught up would return the old one), a pipelined write and read of one
//! key, a replica's SIGKILL costing no read, and a primary's SIGKILL still followed to the
//! promoted replica.
use crate::support::{Cluster, Kind, Proxy, Raw, bulk, encode, text, wait_until};
use std::time::Duration;

/// Local-only mode off: during a failover the client sees the cluster's own errors rather
/// than the local engine's answers, so what it reads afterwards is the cluster's.
const REPLICA_READS: &str =
    "[upstream]\nread_from_replicas = true\n[local_only]\nenabled = false\n";

/// GET calls on every replica together.
fn replica_gets(cluster: &Cluster) -> u64 {
    cluster
        .replicas()
        .iter()
        .map(|&r| cluster.calls(r, "get"))
        .sum()
}

#[track_caller]
fn set(c: &mut Raw, key: &str, value: &[u8]) {
    assert_eq!(
        text(c.cmd(&[b"SET", key.as_bytes(), value])),
        "+OK\r\n",
        "SET {key}"
    );
}

fn scenarios(kind: Kind) {
    let mut cluster = Cluster::start(kind);
    cluster.wait_replicas_online();
    let proxy = Proxy::start_with_config(&cluster.url(), REPLICA_READS, &[]);
    let mut c = proxy.raw();

    // Keys written once, then read many times: the replicas answer (once respite has seen them
    // catch up), and with the written values.
    for i in 0..60 {
        set(&mut c, &format!("stable:{i}"), format!("v{i}").as_bytes());
    }
    for r in cluster.replicas() {
        cluster.node(r).cmd(&[b"CONFIG", b"RESETSTAT"]);
    }
    // Each of the three replicas serves some: reads are spread by slot, not sent to one.
    let served = wait_until(Duration::from_secs(10), || {
        for i in 0..60 {
            let got = c.cmd(&[b"GET", format!("stable:{i}").as_bytes()]);
            assert_eq!(text(got), text(bulk(format!("v{i}"))), "stable:{i}");
        }
        cluster
            .replicas()
            .iter()
            .all(|&r| cluster.calls(r, "get") > 0)
    });
    assert!(
        served.is_some(),
        "not every replica served reads: {:?}",
        cluster
            .replicas()
            .iter()
            .map(|&r| (r, cluster.calls(r, "get")))
            .collect::<Vec<_>>()
    );

    // Read-your-writes: each SET of a new 512 KiB value is read back at once, by the writer
    // and pipelined behind the write, and never as the value before it.
    let before = replica_gets(&cluster);
    let mut p = proxy.raw();
    for i in 0..60 {
        let key = format!("ryw:{}", i % 6);
        let value = vec![b'a' + (i % 26) as u8; 512 * 1024];
        set(&mut c, &key, &value);
        let got = c.cmd(&[b"GET", key.as_bytes()]);
        assert!(
            got == bulk(&value),
            "GET {key} after SET #{i}: a stale value"
        );
        // Write and read in one batch: the read sees the write.
        let next = vec![b'A' + (i % 26) as u8; 512 * 1024];
        let mut batch = encode(&[b"SET", key.as_bytes(), &next]);
        batch.extend(encode(&[b"GET", key.as_bytes()]));
        p.send(&batch);
        assert_eq!(p.reply().unwrap(), b"+OK\r\n");
        assert!(
            p.reply().unwrap() == bulk(&next),
            "pipelined GET {key} after SET #{i}: a stale value"
        );
        // A counter, read back after each increment.
        let n = text(c.cmd(&[b"INCR", b"ryw:counter"]));
        assert_eq!(
            text(c.cmd(&[b"GET", b"ryw:counter"])),
            text(bulk(&n.trim().as_bytes()[1..]))
        );
    }
    // A script of 50,000 increments: its replicas get them (as a transaction of effects) only
    // once it has run, and take about as long again to apply them, so a read from a replica
    // right after its reply would see the count before it.
    let script =
        b"for i = 1, 50000 do redis.call('INCR', KEYS[1]) end return redis.call('GET', KEYS[1])";
    for i in 0..10 {
        let n = c.cmd(&[b"EVAL", script, b"1", b"ryw:script"]);
        assert!(n.starts_with(b"$"), "{}", text(&n));
        let got = c.cmd(&[b"GET", b"ryw:script"]);
        assert_eq!(text(got), text(&n), "GET after script #{i}: a stale count");
    }
    // The stable keys are still read from replicas meanwhile: writes hold back only their own
    // slots.
    for i in 0..60 {
        c.cmd(&[b"GET", format!("stable:{i}").as_bytes()]);
    }
    assert!(
        replica_gets(&cluster) > before,
        "no replica read while writing"
    );

    // A replica killed: reads it would have served are answered by its primary, none fails.
    let doomed = cluster.replicas()[0];
    cluster.kill(doomed);
    for round in 0..3 {
        for i in 0..60 {
            let got = c.cmd(&[b"GET", format!("stable:{i}").as_bytes()]);
            assert_eq!(
                text(got),
                text(bulk(format!("v{i}"))),
                "stable:{i}, round {round}"
            );
        }
    }

    // A primary killed: its slots' reads and writes are served again once the cluster promotes
    // its replica (and other slots' all along).
    let primaries = cluster.primaries();
    // One whose replica is alive, to be promoted.
    let victim = *primaries
        .iter()
        .find(|&&p| {
            text(cluster.node(p).cmd(&[b"INFO", b"replication"])).contains("connected_slaves:1")
        })
        .unwrap();
    let on_victim: Vec<String> = (0..60)
        .map(|i| format!("stable:{i}"))
        .filter(|k| cluster.node(victim).cmd(&[b"EXISTS", k.as_bytes()]) == b":1\r\n")
        .collect();
    assert!(!on_victim.is_empty());
    assert_eq!(
        cluster.node(victim).cmd(&[b"WAIT", b"1", b"10000"]),
        b":1\r\n",
        "the replica has the writes"
    );
    cluster.kill(victim);
    // Until the cluster promotes the replica, it refuses every command (CLUSTERDOWN); then
    // respite follows.
    let live = cluster.primaries()[1];
    let promoted = wait_until(Duration::from_secs(30), || {
        let info = text(cluster.node(live).cmd(&[b"CLUSTER", b"INFO"]));
        info.contains("cluster_state:ok") && !cluster.primaries().contains(&victim)
    });
    assert!(promoted.is_some(), "the cluster did not promote a replica");
    let key = on_victim[0].clone();
    let i: usize = key["stable:".len()..].parse().unwrap();
    // Its replica may serve its reads before respite knows of the promotion, so the write
    // is what says respite followed.
    assert_eq!(
        text(c.cmd(&[b"GET", key.as_bytes()])),
        text(bulk(format!("v{i}")))
    );
    let followed = wait_until(Duration::from_secs(30), || {
        c.cmd(&[b"SET", key.as_bytes(), b"after"]) == b"+OK\r\n"
    });
    assert!(followed.is_some(), "the failover was not followed");
    assert_eq!(text(c.cmd(&[b"GET", key.as_bytes()])), text(bulk("after")));
    for i in 0..60 {
        let k = format!("stable:{i}");
        let want = if k == key {
            bulk("after")
        } else {
            bulk(format!("v{i}"))
        };
        assert_eq!(text(c.cmd(&[b"GET", k.as_bytes()])), text(want), "{k}");
    }
}

#[test]
fn redis_cluster_replica_reads() {
    scenarios(Kind::Redis);
}

#[test]
fn valkey_cluster_replica_reads() {
    scenarios(Kind::Valkey);
}

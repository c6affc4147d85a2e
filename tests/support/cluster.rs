//! A real local Redis Cluster or Valkey Cluster: six servers with `--cluster-enabled yes` on
//! ephemeral loopback ports, joined by `redis-cli --cluster create … --cluster-replicas 1`
//! (three primaries, a replica each), waited on until every node reports `cluster_state:ok`
//! and agrees on the slot map. Its servers are [`Server`]s: killed by PID when it drops.
use super::{Kind, Raw, Server, wait_until};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Cluster {
    pub kind: Kind,
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Six nodes, three primaries with a replica each, ready to serve.
    pub fn start(kind: Kind) -> Cluster {
        let nodes: Vec<Server> = (0..6)
            .map(|_| {
                Server::start_with(
                    kind,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        // A replica promotes however long ago it last heard its primary: on
                        // a loaded machine a young replica's link may not be counted fresh,
                        // and the default factor (10) then keeps it from ever failing over.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { kind, nodes };
        cluster.wait_ok();
        cluster
    }

    /// Wait until every node says `cluster_state:ok` and knows all 16384 slots as assigned.
    pub fn wait_ok(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.nodes.iter().all(|n| {
                let info = payload(&n.raw().cmd(&[b"CLUSTER", b"INFO"]));
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        });
        assert!(ok.is_some(), "the cluster did not reach cluster_state:ok");
    }

    /// `redis+cluster://` with two of the nodes as seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// The ports of the primaries that serve slots, as the cluster reports them.
    pub fn primaries(&self) -> Vec<u16> {
        let nodes = payload(&self.nodes[0].raw().cmd(&[b"CLUSTER", b"NODES"]));
        let mut ports: Vec<u16> = nodes
            .lines()
            // id, address, flags, primary, ping, pong, epoch, link state, then its slots.
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
            })
            .filter_map(|l| {
                let addr = l.split(' ').nth(1)?;
                let hostport = addr.split('@').next()?;
                hostport.rsplit(':').next()?.parse().ok()
            })
            .collect();
        ports.sort();
        ports
    }

    /// A raw connection to the node on `port`.
    pub fn node(&self, port: u16) -> Raw {
        Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Calls of `command` (lower case, as INFO commandstats names it) on the node on `port`.
    pub fn calls(&self, port: u16, command: &str) -> u64 {
        let info = payload(&self.node(port).cmd(&[b"INFO", b"commandstats"]));
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// `CONFIG RESETSTAT` on every primary.
    pub fn reset_stats(&self) {
        for p in self.primaries() {
            self.node(p).cmd(&[b"CONFIG", b"RESETSTAT"]);
        }
    }

    /// Move `slots` slots from the primary on `from` to the one on `to` with
    /// `redis-cli --cluster reshard`, and wait for the cluster to agree again.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) {
        let id = |port: u16| payload(&self.node(port).cmd(&[b"CLUSTER", b"MYID"]));
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "10"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "reshard failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.wait_ok();
    }
}

/// The payload of a bulk (or simple) string reply, as text.
fn payload(reply: &[u8]) -> String {
    let s = String::from_utf8_lossy(reply).into_owned();
    match s.split_once("\r\n") {
        Some((head, rest)) if head.starts_with('$') => rest.trim_end_matches("\r\n").to_string(),
        Some((head, _)) if head.starts_with('+') => head[1..].to_string(),
        _ => s,
    }
}

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

    /// Wait until every running primary has a replica whose link is up (`state=online` in its
    /// INFO replication): `cluster_state:ok` says nothing of replication, and a WAIT before the
    /// replica's first sync ends counts no replica.
    pub fn wait_replicas_online(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.primaries().into_iter().all(|p| {
                payload(&self.node(p).cmd(&[b"INFO", b"replication"])).contains("state=online")
            })
        });
        assert!(ok.is_some(), "a primary's replica did not come online");
    }

    /// `redis+cluster://` with two of the nodes as seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// The ports of the running primaries, as the cluster reports them.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self.nodes.iter().find(|n| n.pid().is_some()).unwrap();
        let nodes = payload(&live.raw().cmd(&[b"CLUSTER", b"NODES"]));
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
            // A node this test killed is not one, whatever the others think yet.
            .filter(|p| self.nodes.iter().any(|n| n.port == *p && n.pid().is_some()))
            .collect();
        ports.sort();
        ports
    }

    /// The ports of the running replicas: every live node that is not a primary.
    pub fn replicas(&self) -> Vec<u16> {
        let primaries = self.primaries();
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some() && !primaries.contains(&n.port))
            .map(|n| n.port)
            .collect()
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

impl Cluster {
    /// The slot of `key`, as the cluster computes it.
    pub fn keyslot(&self, key: &[u8]) -> u16 {
        let r = payload(
            &self
                .node(self.primaries()[0])
                .cmd(&[b"CLUSTER", b"KEYSLOT", key]),
        );
        r.trim_start_matches(':').trim().parse().unwrap()
    }

    /// The port of the primary serving `slot`, as that primary itself says (`myself` in its
    /// CLUSTER NODES holds the slot).
    pub fn slot_owner(&self, slot: u16) -> Option<u16> {
        self.primaries().into_iter().find(|&p| {
            let nodes = payload(&self.node(p).cmd(&[b"CLUSTER", b"NODES"]));
            nodes.lines().any(|l| {
                l.contains("myself")
                    && l.split(' ').skip(8).any(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                    })
            })
        })
    }

    /// Move one slot (and its keys) from the primary on `from` to the one on `to`, as
    /// `redis-cli --cluster reshard` does it (IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE on
    /// every live node), and wait until the cluster agrees.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let id = |port: u16| payload(&self.node(port).cmd(&[b"CLUSTER", b"MYID"]));
        let (from_id, to_id) = (id(from), id(to));
        let slot_s = slot.to_string();
        let s = slot_s.as_bytes();
        let ok = |r: Vec<u8>| assert_eq!(payload(&r), "OK", "{}", String::from_utf8_lossy(&r));
        ok(self
            .node(to)
            .cmd(&[b"CLUSTER", b"SETSLOT", s, b"IMPORTING", from_id.as_bytes()]));
        ok(self
            .node(from)
            .cmd(&[b"CLUSTER", b"SETSLOT", s, b"MIGRATING", to_id.as_bytes()]));
        let to_port = to.to_string();
        loop {
            let keys = self
                .node(from)
                .cmd(&[b"CLUSTER", b"GETKEYSINSLOT", s, b"100"]);
            if keys == b"*0\r\n" {
                break;
            }
            let text = String::from_utf8_lossy(&keys).into_owned();
            let names: Vec<&str> = text
                .split("\r\n")
                .skip(1)
                .filter(|l| !l.starts_with('$') && !l.is_empty())
                .collect();
            let mut migrate: Vec<&[u8]> = vec![b"MIGRATE", b"127.0.0.1", to_port.as_bytes()];
            migrate.extend([&b""[..], b"0", b"5000", b"KEYS"]);
            migrate.extend(names.iter().map(|k| k.as_bytes()));
            ok(self.node(from).cmd(&migrate));
        }
        // The target first, then the source, then every other primary: as redis-cli does.
        let mut order = vec![to, from];
        order.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in order {
            ok(self
                .node(port)
                .cmd(&[b"CLUSTER", b"SETSLOT", s, b"NODE", to_id.as_bytes()]));
        }
        let agreed = wait_until(Duration::from_secs(30), || {
            self.slot_owner(slot) == Some(to)
        });
        assert!(agreed.is_some(), "slot {slot} did not move to {to}");
        self.wait_ok();
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        node.kill();
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

//! Which primary serves which slot: read from a node with `CLUSTER SHARDS` (Redis 7+, Valkey),
//! falling back to `CLUSTER SLOTS` where that is unknown, into a [`Topology`].
//!
//! Each slot maps to its primary, which every write and (by default) every read goes to; each
//! primary's online replicas are kept beside it for `upstream.read_from_replicas` (see
//! [`super::replicas`]). A primary the shard reports as `failed` is still listed: a cluster
//! that has not yet promoted its replica still maps the slot there, and its commands fail as
//! that node's, not anyone else's.
use super::slot::SLOTS;
use crate::protocol::value::{self, Value};

/// Slot → primary, and the primaries' addresses (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Index into `primaries` per slot; [`UNASSIGNED`] for a slot no node serves.
    slots: Vec<u16>,
    primaries: Vec<String>,
    /// The online replicas of each primary (same index as `primaries`), by address.
    replicas: Vec<Vec<String>>,
}

pub const UNASSIGNED: u16 = u16::MAX;

/// A reply that is not a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected CLUSTER {0} reply: {1}")]
pub struct BadTopology(pub &'static str, pub String);

impl Topology {
    /// A topology with every slot on `primary` (tests, and a one-node view before discovery).
    pub fn single(primary: &str) -> Topology {
        Topology {
            slots: vec![0; SLOTS],
            primaries: vec![primary.to_string()],
            replicas: vec![Vec::new()],
        }
    }

    /// The primary serving `slot`, if any.
    pub fn primary(&self, slot: u16) -> Option<&str> {
        match self.slots.get(slot as usize) {
            Some(&i) if i != UNASSIGNED => Some(&self.primaries[i as usize]),
            _ => None,
        }
    }

    /// The index of the primary serving `slot` in [`Topology::primaries`].
    pub fn primary_index(&self, slot: u16) -> Option<usize> {
        match self.slots.get(slot as usize) {
            Some(&i) if i != UNASSIGNED => Some(i as usize),
            _ => None,
        }
    }

    /// The online replicas of the primary at `index` in [`Topology::primaries`].
    pub fn replicas(&self, index: usize) -> &[String] {
        self.replicas.get(index).map_or(&[], |r| &r[..])
    }

    /// Every primary serving at least one slot, in a stable order (by address).
    pub fn primaries(&self) -> &[String] {
        &self.primaries
    }

    /// Whether every slot has the same primary (by address) in `other`.
    pub fn same_owners(&self, other: &Topology) -> bool {
        (0..SLOTS as u16).all(|s| self.primary(s) == other.primary(s))
    }

    /// The slots whose primary differs in `other`.
    pub fn moved_slots<'a>(&'a self, other: &'a Topology) -> impl Iterator<Item = u16> + 'a {
        (0..SLOTS as u16).filter(move |&s| self.primary(s) != other.primary(s))
    }

    /// Set the replicas of the primary at `index` (tests).
    #[cfg(test)]
    pub fn set_replicas(&mut self, index: usize, replicas: Vec<String>) {
        self.replicas[index] = replicas;
    }

    /// Slots served by no node.
    pub fn unassigned(&self) -> usize {
        self.slots.iter().filter(|&&i| i == UNASSIGNED).count()
    }

    /// Record that `slot` is now served by `addr` (a MOVED seen before the next refresh).
    pub fn moved(&mut self, slot: u16, addr: &str) {
        let i = match self.primaries.iter().position(|p| p == addr) {
            Some(i) => i,
            None => {
                self.primaries.push(addr.to_string());
                self.replicas.push(Vec::new());
                self.primaries.len() - 1
            }
        };
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = i as u16;
        }
    }

    /// `ranges` of slots and their primary; `of` lists replicas by their primary's address.
    fn build(ranges: Vec<(u16, u16, String)>, of: &[(String, String)]) -> Topology {
        let mut primaries: Vec<String> = ranges.iter().map(|r| r.2.clone()).collect();
        primaries.sort();
        primaries.dedup();
        let replicas = primaries
            .iter()
            .map(|p| {
                let mut r: Vec<String> = of
                    .iter()
                    .filter(|(primary, _)| primary == p)
                    .map(|(_, replica)| replica.clone())
                    .collect();
                r.sort();
                r.dedup();
                r
            })
            .collect();
        let mut slots = vec![UNASSIGNED; SLOTS];
        for (start, end, addr) in ranges {
            let i = primaries.binary_search(&addr).unwrap_or(0) as u16;
            for s in start..=end.min(SLOTS as u16 - 1) {
                slots[s as usize] = i;
            }
        }
        Topology {
            slots,
            primaries,
            replicas,
        }
    }

    /// Parse a `CLUSTER SHARDS` reply (RESP2 or RESP3). `asked` is the `host` respite asked,
    /// for a node whose endpoint is unknown (`?`) or empty; `tls` picks `tls-port`.
    pub fn from_shards(reply: &[u8], asked: &str, tls: bool) -> Result<Topology, BadTopology> {
        let bad = |m: &str| BadTopology("SHARDS", m.to_string());
        let v = value::parse(reply).map_err(|_| bad("malformed"))?;
        if let Some(e) = v.error() {
            return Err(bad(&String::from_utf8_lossy(e)));
        }
        let shards = v.items().ok_or_else(|| bad("not an array"))?;
        let mut ranges = Vec::new();
        let mut replicas = Vec::new();
        for shard in shards {
            let fields = shard.items().ok_or_else(|| bad("shard not a map"))?;
            let slots = field(fields, b"slots").and_then(|s| s.items());
            let nodes = field(fields, b"nodes").and_then(|n| n.items());
            let (Some(slots), Some(nodes)) = (slots, nodes) else {
                return Err(bad("shard without slots or nodes"));
            };
            // After a failover the old primary may still be listed as one, failed: the
            // online one serves the slots.
            let primaries: Vec<&[Value]> = nodes
                .iter()
                .filter_map(|n| {
                    let f = n.items()?;
                    let role = field(f, b"role").and_then(text)?;
                    (role == b"master" || role == b"primary").then_some(f)
                })
                .collect();
            let primary = primaries
                .iter()
                .find(|f| field(f, b"health").and_then(text) == Some(&b"online"[..]))
                .or(primaries.first())
                .copied();
            let Some(primary) = primary else { continue };
            let addr = node_addr(primary, asked, tls).ok_or_else(|| bad("node without port"))?;
            // Replicas that serve: online (a replica still loading its first sync says
            // `loading`, one that lost its primary `fail`).
            for n in nodes.iter().filter_map(|n| n.items()) {
                let role = field(n, b"role").and_then(text);
                let online = field(n, b"health").and_then(text) == Some(&b"online"[..]);
                if matches!(role, Some(b"replica" | b"slave"))
                    && online
                    && let Some(r) = node_addr(n, asked, tls)
                {
                    replicas.push((addr.clone(), r));
                }
            }
            for pair in slots.chunks(2) {
                let (Some(start), Some(end)) =
                    (pair.first().and_then(int), pair.get(1).and_then(int))
                else {
                    return Err(bad("slot range not two integers"));
                };
                ranges.push((start as u16, end as u16, addr.clone()));
            }
        }
        if ranges.is_empty() {
            return Err(bad("no slot is served"));
        }
        Ok(Topology::build(ranges, &replicas))
    }

    /// Parse a `CLUSTER SLOTS` reply: `[start, end, [host, port, id…], replicas…]` per range.
    pub fn from_slots(reply: &[u8], asked: &str) -> Result<Topology, BadTopology> {
        let bad = |m: &str| BadTopology("SLOTS", m.to_string());
        let v = value::parse(reply).map_err(|_| bad("malformed"))?;
        if let Some(e) = v.error() {
            return Err(bad(&String::from_utf8_lossy(e)));
        }
        let mut ranges = Vec::new();
        let mut replicas = Vec::new();
        for range in v.items().ok_or_else(|| bad("not an array"))? {
            let r = range.items().ok_or_else(|| bad("range not an array"))?;
            let (Some(start), Some(end), Some(node)) = (
                r.first().and_then(int),
                r.get(1).and_then(int),
                r.get(2).and_then(|n| n.items()),
            ) else {
                return Err(bad("range without start, end and primary"));
            };
            let endpoint = |node: &[Value<'_>]| {
                let host = node
                    .first()
                    .and_then(text)
                    .filter(|h| !h.is_empty() && *h != b"?")
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .unwrap_or_else(|| asked.to_string());
                Some(join(&host, node.get(1).and_then(int)?))
            };
            let addr = endpoint(node).ok_or_else(|| bad("no port"))?;
            // CLUSTER SLOTS lists a range's replicas after its primary, failed ones included
            // (it says nothing of their state): a failed one's reads fail over to the primary
            // by its health (see `super::replicas`).
            for r in r[3..].iter().filter_map(|n| n.items()) {
                if let Some(r) = endpoint(r) {
                    replicas.push((addr.clone(), r));
                }
            }
            ranges.push((start as u16, end as u16, addr));
        }
        if ranges.is_empty() {
            return Err(bad("no slot is served"));
        }
        Ok(Topology::build(ranges, &replicas))
    }
}

/// A `CLUSTER SHARDS` node's `host:port`: its TLS port when `tls`, its endpoint (else its IP,
/// else `asked` when it gives neither).
fn node_addr(node: &[Value<'_>], asked: &str, tls: bool) -> Option<String> {
    let port = if tls {
        field(node, b"tls-port").and_then(int)
    } else {
        None
    }
    .or_else(|| field(node, b"port").and_then(int))?;
    let host = ["endpoint", "ip"]
        .iter()
        .filter_map(|k| field(node, k.as_bytes()).and_then(text))
        .find(|h| !h.is_empty() && *h != b"?")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_else(|| asked.to_string());
    Some(join(&host, port))
}

/// `host:port`, an IPv6 literal in brackets.
pub fn join(host: &str, port: i64) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The value after `name` in a map (RESP3) or a flat key/value array (RESP2).
fn field<'a, 'v>(fields: &'v [Value<'a>], name: &[u8]) -> Option<&'v Value<'a>> {
    fields
        .chunks(2)
        .find(|kv| kv.first().and_then(text) == Some(name))
        .and_then(|kv| kv.get(1))
}

fn text<'v>(v: &'v Value<'_>) -> Option<&'v [u8]> {
    v.bulk()
}

fn int(v: &Value<'_>) -> Option<i64> {
    match v {
        Value::Line(b':', n) => std::str::from_utf8(n).ok()?.parse().ok(),
        other => std::str::from_utf8(other.bulk()?).ok()?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(parts: &[&str]) -> String {
        // A tiny RESP2 writer for the fixtures: `[` opens an array of the next N, written
        // inline as `*N`; everything else is a bulk string, `:n` an integer.
        let mut out = String::new();
        for p in parts {
            if let Some(n) = p.strip_prefix('*') {
                out.push_str(&format!("*{n}\r\n"));
            } else if p.starts_with(':') {
                out.push_str(&format!("{p}\r\n"));
            } else {
                out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
            }
        }
        out
    }

    #[test]
    fn shards_map_each_range_to_its_primary() {
        fn node<'a>(ip: &'a str, port: &'a str, role: &'a str) -> Vec<&'a str> {
            let health = if port == ":7009" { "fail" } else { "online" };
            vec![
                "*12", "id", "abc", "port", port, "ip", ip, "endpoint", ip, "role", role, "health",
                health,
            ]
        }
        let mut parts = vec!["*2"];
        parts.extend(["*4", "slots", "*2", ":0", ":8191", "nodes", "*2"]);
        parts.extend(node("127.0.0.1", ":7001", "replica"));
        parts.extend(node("127.0.0.1", ":7000", "master"));
        parts.extend([
            "*4", "slots", "*4", ":8192", ":9000", ":9001", ":16383", "nodes", "*1",
        ]);
        parts.extend(node("127.0.0.1", ":7002", "master"));
        let t = Topology::from_shards(enc(&parts).as_bytes(), "seed", false).unwrap();
        assert_eq!(t.primary(0), Some("127.0.0.1:7000"));
        assert_eq!(t.primary(8191), Some("127.0.0.1:7000"));
        assert_eq!(t.primary(8192), Some("127.0.0.1:7002"));
        assert_eq!(t.primary(16383), Some("127.0.0.1:7002"));
        assert_eq!(t.primaries().len(), 2);
        assert_eq!(t.replicas(0), ["127.0.0.1:7001".to_string()]);
        assert!(t.replicas(1).is_empty());
        assert_eq!(t.unassigned(), 0);
    }

    #[test]
    fn slots_reply_with_an_empty_host_uses_the_asked_one() {
        let parts = [
            "*2", "*3", ":0", ":99", "*3", "", ":7000", "id1", "*4", ":100", ":16383", "*3",
            "10.0.0.2", ":7001", "id2", "*3", "10.0.0.3", ":7002", "id3",
        ];
        let t = Topology::from_slots(enc(&parts).as_bytes(), "10.0.0.1").unwrap();
        assert_eq!(t.primary(5), Some("10.0.0.1:7000"));
        assert_eq!(t.primary(100), Some("10.0.0.2:7001"));
        let second = t.primary_index(100).unwrap();
        assert_eq!(t.replicas(second), ["10.0.0.3:7002".to_string()]);
        assert_eq!(t.unassigned(), 0);
    }

    #[test]
    fn errors_and_empty_maps_are_refused() {
        assert!(Topology::from_shards(b"-ERR unknown subcommand\r\n", "h", false).is_err());
        assert!(Topology::from_slots(b"*0\r\n", "h").is_err());
    }

    #[test]
    fn a_moved_slot_is_reassigned() {
        let mut t = Topology::single("a:1");
        t.moved(7, "b:2");
        assert_eq!(t.primary(7), Some("b:2"));
        assert_eq!(t.primary(8), Some("a:1"));
    }
}

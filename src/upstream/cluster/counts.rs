//! PUBSUB NUMSUB and SHARDNUMSUB over a cluster, as one server would count: a node counts only
//! its own subscribers, so a channel's count is the sum over every node (primaries and
//! replicas: a client may subscribe on any), and a shard channel's the sum over its slot's
//! primary and that primary's replicas (where its SPUBLISH reaches).
use super::Cluster;
use super::slot::key_slot;
use crate::protocol::Protocol;
use crate::protocol::value::{self, Value};
use bytes::{Bytes, BytesMut};

impl Cluster {
    /// `PUBSUB NUMSUB names…` (`shard`: SHARDNUMSUB), summed over the nodes each name is
    /// counted on, as a RESP2 reply in the names' order (names as the upstream knows them).
    pub async fn numsub(&self, shard: bool, names: &[Bytes]) -> Result<Bytes, String> {
        let topo = self
            .topology()
            .await
            .ok_or("CLUSTERDOWN respite has not read the cluster's topology yet")?;
        let every: Vec<&String> = topo
            .primaries()
            .iter()
            .enumerate()
            .flat_map(|(i, p)| std::iter::once(p).chain(topo.replicas(i)))
            .collect();
        // Per node: the indices of the names it is asked about.
        let mut asks: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let nodes: Vec<&str> = match shard {
                false => every.iter().map(|s| s.as_str()).collect(),
                true => {
                    let slot = key_slot(name);
                    let Some(p) = topo.primary_index(slot) else {
                        return Err(format!("CLUSTERDOWN Hash slot {slot} is not served"));
                    };
                    std::iter::once(&topo.primaries()[p])
                        .chain(topo.replicas(p))
                        .map(String::as_str)
                        .collect()
                }
            };
            for n in nodes {
                match asks.iter_mut().find(|a| a.0 == n) {
                    Some(a) => a.1.push(i),
                    None => asks.push((n, vec![i])),
                }
            }
        }
        let sub: &[u8] = if shard { b"SHARDNUMSUB" } else { b"NUMSUB" };
        let mut pending = Vec::with_capacity(asks.len());
        for (addr, idx) in &asks {
            let mut args: Vec<&[u8]> = vec![b"PUBSUB", sub];
            args.extend(idx.iter().map(|&i| &names[i][..]));
            let rx = self
                .node(addr)
                .conn(Protocol::Resp2, 0)
                .send(super::command(&args), 1)
                .await;
            pending.push((*addr, idx, rx));
        }
        let mut totals = vec![0i64; names.len()];
        for (addr, idx, rx) in pending {
            let reply = match rx.await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(partial)) => return Err(format!("ERR {}", partial.error)),
                Err(_) => return Err(format!("ERR no reply from cluster node {addr}")),
            };
            let counts = counts(&reply).ok_or_else(|| {
                let text = String::from_utf8_lossy(&reply);
                text.strip_prefix('-')
                    .unwrap_or(&text)
                    .trim_end()
                    .to_string()
            })?;
            for (&i, n) in idx.iter().zip(counts) {
                totals[i] += n;
            }
        }
        let mut out = BytesMut::new();
        crate::protocol::encode::array_header(&mut out, names.len() * 2);
        for (name, n) in names.iter().zip(totals) {
            crate::protocol::encode::bulk(&mut out, name);
            crate::protocol::encode::integer(&mut out, n);
        }
        Ok(out.freeze())
    }
}

/// The counts of a NUMSUB reply (`name, count, …`, a flat array or a map), in order.
fn counts(reply: &[u8]) -> Option<Vec<i64>> {
    let Ok(Value::Agg(_, items)) = value::parse(reply) else {
        return None;
    };
    items
        .chunks(2)
        .map(|pair| match pair.get(1)? {
            Value::Line(b':', n) => std::str::from_utf8(n).ok()?.parse().ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_read_in_order() {
        let reply = b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:0\r\n";
        assert_eq!(super::counts(reply), Some(vec![2, 0]));
        assert_eq!(super::counts(b"-ERR no\r\n"), None);
    }
}

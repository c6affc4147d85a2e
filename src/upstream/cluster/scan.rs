//! SCAN over a cluster, by slot: the cursor is the next slot to read (0 to start, 0 again when
//! every slot has been read), so it means the same on every node and survives resharding. Each
//! call reads a window of slots with `CLUSTER GETKEYSINSLOT` from every primary at once and
//! keeps each key once: a slot mid-migration has its keys on its source and its target, and
//! both are read, so a key that exists throughout an iteration is returned (barring the instant
//! it crosses between the two reads). MATCH and TYPE are applied by respite; COUNT is a hint,
//! as for Redis: a call stops once it has that many keys or has read [`MAX_SLOTS`] slots.
use super::ctx::Ctx;
use super::merge;
use super::slot::SLOTS;
use crate::protocol::encode;
use bytes::{Bytes, BytesMut};

/// Slots read per round trip, and at most per call.
const WINDOW: usize = 256;
const MAX_SLOTS: usize = 1024;

fn error(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    out.freeze()
}

/// Answer `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`.
pub(super) async fn run(ctx: &Ctx, args: &[Bytes]) -> Bytes {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return error("ERR invalid cursor");
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut kind: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        let Some(value) = args.get(i + 1) else {
            return error("ERR syntax error");
        };
        match &opt[..] {
            b"match" => pattern = Some(value),
            b"count" => match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return error("ERR syntax error"),
                None => return error("ERR value is not an integer or out of range"),
            },
            b"type" => kind = Some(value.to_ascii_lowercase()),
            _ => return error("ERR syntax error"),
        }
        i += 2;
    }
    // A cursor past the last slot is one respite never gave: Redis starts over on an unknown
    // cursor, and so does this.
    let mut slot = if cursor as usize >= SLOTS {
        0
    } else {
        cursor as usize
    };
    let Some(topo) = ctx.cluster.topology().await else {
        return error("CLUSTERDOWN respite has not read the cluster's topology yet");
    };
    let mut found: Vec<Bytes> = Vec::new();
    let start = slot;
    while slot < SLOTS && found.len() < count && slot - start < MAX_SLOTS {
        let end = (slot + WINDOW).min(SLOTS);
        let mut cmds = BytesMut::new();
        for s in slot..end {
            encode::command(
                &mut cmds,
                &[
                    &b"CLUSTER"[..],
                    b"GETKEYSINSLOT",
                    s.to_string().as_bytes(),
                    b"1000000000",
                ],
            );
        }
        let cmds = cmds.freeze();
        let mut waits = Vec::new();
        for addr in topo.primaries() {
            let node = ctx.cluster.node(addr);
            let rx = node
                .conn_in(ctx.lane, ctx.proto, ctx.index as u64)
                .send(cmds.clone(), end - slot)
                .await;
            waits.push((addr.clone(), rx));
        }
        let mut per_node = Vec::new();
        for (addr, rx) in waits {
            let replies = match rx.await {
                Ok(Ok(bytes)) => merge::split(&bytes),
                Ok(Err(p)) => {
                    ctx.cluster.request_refresh();
                    return error(&format!("ERR {}", p.error));
                }
                Err(_) => return error("ERR upstream connection closed before replying"),
            };
            if let Some(e) = replies.iter().find(|r| merge::is_error(r)) {
                return e.clone();
            }
            per_node.push((addr, replies));
        }
        for k in 0..end - slot {
            let mut keys: Vec<Bytes> = Vec::new();
            for (_, replies) in &per_node {
                let Some((_, items)) = replies.get(k).and_then(merge::elements) else {
                    continue;
                };
                for item in items {
                    let Some(key) = bulk(&item) else { continue };
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
            found.extend(
                keys.into_iter()
                    .filter(|k| pattern.is_none_or(|p| crate::policy::glob::matches(p, k))),
            );
        }
        slot = end;
    }
    if let Some(kind) = kind {
        found = of_type(ctx, &topo, found, &kind).await;
    }
    let next = if slot >= SLOTS { 0 } else { slot };
    let mut out = BytesMut::new();
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, next.to_string().as_bytes());
    encode::array_header(&mut out, found.len());
    for k in found {
        encode::bulk(&mut out, &k);
    }
    out.freeze()
}

/// The keys of `found` whose TYPE is `kind`, asked of each key's node.
async fn of_type(
    ctx: &Ctx,
    topo: &super::topology::Topology,
    found: Vec<Bytes>,
    kind: &[u8],
) -> Vec<Bytes> {
    let mut kept = Vec::new();
    for key in found {
        let Some(addr) = topo.primary(super::slot::key_slot(&key)) else {
            continue;
        };
        let rx = ctx
            .cluster
            .node(addr)
            .conn_in(ctx.lane, ctx.proto, ctx.index as u64)
            .send(super::command(&[&b"TYPE"[..], &key]), 1)
            .await;
        if let Ok(Ok(reply)) = rx.await
            && reply
                .strip_prefix(b"+")
                .and_then(|r| r.strip_suffix(b"\r\n"))
                == Some(kind)
        {
            kept.push(key);
        }
    }
    kept
}

/// The data of a bulk string reply.
fn bulk(reply: &Bytes) -> Option<Bytes> {
    let eol = memchr::memchr(b'\n', reply)?;
    if reply.first() != Some(&b'$') || reply.len() < eol + 3 {
        return None;
    }
    Some(reply.slice(eol + 1..reply.len() - 2))
}

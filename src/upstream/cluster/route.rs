//! The router behind each of a cluster upstream's pool connections: it takes a client's job
//! (one or more commands), frames its commands, plans each ([`super::plan`]), sends what goes
//! to each node as one job on that node's connection, and once every reply is in, follows the
//! redirections, merges what was split and hands the client its replies in order.
//!
//! # Invariants
//! - Jobs are taken in the order they were queued and their commands are queued on the nodes
//!   before the next job is read, so a client's commands reach each node in its order.
//! - Each command gets exactly one reply, in place; a redirection is followed (at most
//!   [`MAX_REDIRECTS`] times) only on the node's word that the command did not run.
use super::ctx::Ctx;
use super::merge;
use super::plan::{self, CROSSSLOT, Fan, Plan, Split};
use super::replicas::WriteMark;
use super::topology::Topology;
use super::{MAX_REDIRECTS, fail_job};
use crate::command::{self, CommandSpec, Flags};
use crate::metrics;
use crate::protocol::{Framer, encode};
use crate::upstream::error::NoReply;
use crate::upstream::job::Job;
use crate::upstream::reply::{Partial, Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A read over several slots of one node, as one script: `ARGV[1]` run on each key in turn,
/// the replies as an array. A script without a shebang may touch keys of several slots of its
/// own node (Redis 7.0's default for such scripts); a key not the node's stops it with an
/// error, and the part falls back to one command per slot. Reads only: a write stopped half
/// way would have written half.
const SCRIPT: &[u8] =
    b"local r = {} for i = 2, #ARGV do r[i - 1] = redis.call(ARGV[1], ARGV[i]) end return r";
/// Keys per script part.
const SCRIPT_MAX_ARGS: usize = 4000;

/// The single-key command a split read runs per key inside [`SCRIPT`]; `None` for writes.
fn script_command(split: Split, spec: Option<&CommandSpec>) -> Option<&'static [u8]> {
    match (split, spec.map(|s| s.name)) {
        (Split::Mget, _) => Some(b"GET"),
        (Split::Sum, Some("exists")) => Some(b"EXISTS"),
        (Split::Sum, Some("touch")) => Some(b"TOUCH"),
        _ => None,
    }
}

/// The client's key indices `idx` grouped by slot, in order of first appearance.
fn by_slot(args: &[Bytes], idx: &[usize], step: usize) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for &k in idx {
        let s = super::slot::key_slot(&args[1 + k * step]);
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(g) => g.1.push(k),
            None => groups.push((s, vec![k])),
        }
    }
    groups
}

pub(super) async fn run(ctx: Ctx, mut rx: mpsc::Receiver<Job>) {
    let ctx = Arc::new(ctx);
    while let Some(job) = rx.recv().await {
        dispatch(&ctx, job).await;
    }
}

/// One framed command.
struct Cmd {
    args: Vec<Bytes>,
    bytes: Bytes,
    spec: Option<&'static CommandSpec>,
}

/// What one command (or MULTI…EXEC block) of a job became.
enum Unit {
    /// Commands on one node: their replies are `count` replies of `batch` from `at`.
    Direct {
        batch: usize,
        at: usize,
        count: usize,
        bytes: Bytes,
        addr: String,
        /// A read sent to a replica: its primary, which answers it if the replica's
        /// connection fails (a read is safe to send again).
        primary: Option<String>,
    },
    /// A multi-key command split per node.
    Split {
        split: Split,
        args: Vec<Bytes>,
        keys: usize,
        parts: Vec<Part>,
    },
    /// A keyless command on every primary.
    Fanout {
        fan: Fan,
        at: Vec<(usize, usize)>,
    },
    Scan(Vec<Bytes>),
    /// Answered without a node.
    Ready(Bytes),
}

/// One node's part of a split command: its reply is `batch`'s `at`; `keys` are the client's
/// key indices it holds; `script` when they span slots.
struct Part {
    batch: usize,
    at: usize,
    addr: String,
    keys: Vec<usize>,
    script: bool,
}

/// What goes to each node in one job: its commands' bytes as they came (joined only when
/// there are several, so a lone command is sent without a copy) and how many.
#[derive(Default)]
struct Batches(Vec<(String, Vec<Bytes>, usize)>);

impl Batches {
    fn add(&mut self, addr: &str, bytes: &Bytes, count: usize) -> (usize, usize) {
        let i = match self.0.iter().position(|b| b.0 == addr) {
            Some(i) => i,
            None => {
                self.0.push((addr.to_string(), Vec::new(), 0));
                self.0.len() - 1
            }
        };
        let b = &mut self.0[i];
        b.1.push(bytes.clone());
        let at = b.2;
        b.2 += count;
        (i, at)
    }
}

/// One node's commands as one buffer.
fn joined(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in &chunks {
        out.extend_from_slice(c);
    }
    out.freeze()
}

fn error_reply(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    out.freeze()
}

fn frame(bytes: Bytes) -> Option<Vec<Cmd>> {
    // The job's bytes are its own: framed in place, without a copy.
    let mut buf = bytes
        .try_into_mut()
        .unwrap_or_else(|b| BytesMut::from(&b[..]));
    let mut framer = Framer::new(Default::default());
    let mut cmds = Vec::new();
    while !buf.is_empty() {
        let req = framer.next(&mut buf).ok()??;
        let bytes = match req.raw {
            Some(raw) => raw,
            None => {
                let mut out = BytesMut::new();
                encode::command(&mut out, &req.args);
                out.freeze()
            }
        };
        let spec = command::resolve(&req.args).ok();
        cmds.push(Cmd {
            args: req.args,
            bytes,
            spec,
        });
    }
    Some(cmds)
}

async fn dispatch(ctx: &Arc<Ctx>, mut job: Job) {
    let bytes = std::mem::take(&mut job.bytes);
    let Some(cmds) = frame(bytes).filter(|c| c.len() == job.count) else {
        return fail_job(
            job,
            "ERR respite could not frame the commands for the cluster",
        );
    };
    let Some(topo) = ctx.cluster.topology().await else {
        return fail_job(
            job,
            "CLUSTERDOWN respite has not read the cluster's topology yet",
        );
    };
    let primaries = topo.primaries();
    let any = primaries[ctx.index % primaries.len()].clone();
    let owner = |slot: u16| topo.primary(slot).map(str::to_string);
    // With reads from replicas, the job's writes are marked before anything is sent, so none
    // of its reads (before or after them) goes to a replica that may not have them yet.
    let replicas = ctx.cluster.reads_from_replicas();
    let marks = match replicas {
        true => write_marks(ctx, &cmds, &any),
        false => Vec::new(),
    };
    let mut batches = Batches::default();
    let mut units = Vec::new();
    let mut i = 0;
    while i < cmds.len() {
        let cmd = &cmds[i];
        let name = cmd.spec.map(|s| s.name);
        if name == Some("multi") {
            // The whole transaction to one node, as the session sends it: MULTI … EXEC.
            let end = cmds[i..]
                .iter()
                .position(|c| matches!(c.spec.map(|s| s.name), Some("exec" | "discard")))
                .map_or(cmds.len(), |p| i + p + 1);
            let block = &cmds[i..end];
            let mut slot = None;
            let mut cross = false;
            for c in block {
                if let Some(spec) = c.spec {
                    match plan::slot_of(spec, &c.args) {
                        Ok(Some(s)) if slot.is_some_and(|t| t != s) => cross = true,
                        Ok(Some(s)) => slot = Some(s),
                        Ok(None) => {}
                        Err(_) => cross = true,
                    }
                }
            }
            if cross {
                // As the cluster answers it: each command queued, EXEC refused.
                let mut out = BytesMut::new();
                for c in block {
                    match c.spec.map(|s| s.name) {
                        Some("multi") => encode::simple(&mut out, "OK"),
                        Some("exec") => encode::error(&mut out, CROSSSLOT),
                        Some("discard") => encode::simple(&mut out, "OK"),
                        _ => encode::simple(&mut out, "QUEUED"),
                    }
                }
                units.push(Unit::Ready(out.freeze()));
            } else {
                let addr = slot.and_then(owner).unwrap_or_else(|| any.clone());
                let mut bytes = BytesMut::new();
                for c in block {
                    bytes.extend_from_slice(&c.bytes);
                }
                let bytes = bytes.freeze();
                let (batch, at) = batches.add(&addr, &bytes, block.len());
                units.push(Unit::Direct {
                    batch,
                    at,
                    count: block.len(),
                    bytes,
                    addr,
                    primary: None,
                });
            }
            i = end;
            continue;
        }
        i += 1;
        match plan::plan(cmd.spec, &cmd.args) {
            Plan::Single(slot) => {
                let mut primary = None;
                let addr = match slot {
                    Some(s) => match owner(s) {
                        Some(a) => match replicas && reads(cmd.spec) {
                            true => match replica_for(ctx, &topo, s) {
                                Some(r) => {
                                    primary = Some(a);
                                    r
                                }
                                None => a,
                            },
                            false => a,
                        },
                        None => {
                            units.push(Unit::Ready(error_reply(&format!(
                                "CLUSTERDOWN Hash slot {s} is not served"
                            ))));
                            continue;
                        }
                    },
                    None => any.clone(),
                };
                let (batch, at) = batches.add(&addr, &cmd.bytes, 1);
                units.push(Unit::Direct {
                    batch,
                    at,
                    count: 1,
                    bytes: cmd.bytes.clone(),
                    addr,
                    primary,
                });
            }
            Plan::CrossSlot => units.push(Unit::Ready(error_reply(CROSSSLOT))),
            Plan::Scan => units.push(Unit::Scan(cmd.args.clone())),
            Plan::Fanout(fan) => {
                metrics::cluster_split("fanout");
                let at = primaries
                    .iter()
                    .map(|p| batches.add(p, &cmd.bytes, 1))
                    .collect();
                units.push(Unit::Fanout { fan, at });
            }
            Plan::Split(split) => {
                metrics::cluster_split("split");
                let step = split.step();
                let keys = (cmd.args.len() - 1) / step;
                // Per node: its keys (client order) and whether they span slots.
                let mut groups: Vec<(String, Vec<usize>, Option<u16>, bool)> = Vec::new();
                let mut unserved = None;
                for k in 0..keys {
                    let s = super::slot::key_slot(&cmd.args[1 + k * step]);
                    let Some(addr) = owner(s) else {
                        unserved = Some(s);
                        break;
                    };
                    match groups.iter_mut().find(|g| g.0 == addr) {
                        Some(g) => {
                            g.3 |= g.2 != Some(s);
                            g.1.push(k);
                        }
                        None => groups.push((addr, vec![k], Some(s), false)),
                    }
                }
                if let Some(s) = unserved {
                    units.push(Unit::Ready(error_reply(&format!(
                        "CLUSTERDOWN Hash slot {s} is not served"
                    ))));
                    continue;
                }
                // A read over several slots of one node is one script; a write is one command
                // per slot, pipelined on the node's job (a script that failed half way would
                // have written half).
                let script = script_command(split, cmd.spec);
                let mut parts = Vec::new();
                for (addr, idx, _, multi) in groups {
                    let per_part: Vec<Vec<usize>> = match script {
                        Some(_) if multi => {
                            idx.chunks(SCRIPT_MAX_ARGS).map(<[usize]>::to_vec).collect()
                        }
                        _ => by_slot(&cmd.args, &idx, step)
                            .into_iter()
                            .map(|g| g.1)
                            .collect(),
                    };
                    for keys in per_part {
                        let as_script = script.filter(|_| multi);
                        let bytes = part_command(&cmd.args, &keys, step, as_script);
                        let (batch, at) = batches.add(&addr, &bytes, 1);
                        parts.push(Part {
                            batch,
                            at,
                            addr: addr.clone(),
                            keys,
                            script: as_script.is_some(),
                        });
                    }
                }
                units.push(Unit::Split {
                    split,
                    args: cmd.args.clone(),
                    keys,
                    parts,
                });
            }
        }
    }
    let mut pending = Vec::with_capacity(batches.0.len());
    for (addr, bytes, count) in batches.0 {
        let (node, m) = ctx.cluster.node_and_metrics(&addr);
        m.commands.increment(count as u64);
        m.inflight.increment(count as f64);
        let rx = node
            .conn_in(ctx.lane, ctx.proto, ctx.index as u64)
            .send_marked(joined(bytes), count, None, job.slow)
            .await;
        pending.push((rx, count, m));
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut replies = Vec::with_capacity(pending.len());
        for (rx, count, m) in pending {
            replies.push(collect(&ctx, &m, rx, count).await);
        }
        let mut out = BytesMut::new();
        for unit in units {
            finish(&ctx, unit, &replies, &mut out).await;
        }
        // Every reply is in: the writes are done, and wait only for their replicas now.
        drop(marks);
        deliver(job.reply, out.freeze(), job.budget);
    });
}

/// Whether a command may change data: a write, a script or function (which may write keys it
/// does not declare), or one respite does not know.
fn writes(spec: Option<&CommandSpec>) -> bool {
    match spec {
        None => true,
        Some(s) => {
            !s.flags.contains(Flags::READONLY)
                && (s.flags.contains(Flags::WRITE)
                    || matches!(s.name, "eval" | "evalsha" | "fcall"))
        }
    }
}

/// Whether a replica may answer the command: read-only, and not one that reads respite's or
/// the node's own state rather than data.
fn reads(spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|s| s.flags.contains(Flags::READONLY) && !s.flags.contains(Flags::BLOCKING))
}

/// The replica that may serve a read of `slot` now (see [`super::replicas`]).
fn replica_for(ctx: &Ctx, topo: &Topology, slot: u16) -> Option<String> {
    let healthy = |addr: &str| {
        ctx.cluster.node(addr).health().state() == crate::upstream::health::State::Healthy
    };
    ctx.cluster
        .replicas()
        .replica_for(topo, slot, ctx.index, healthy)
        .map(str::to_string)
}

/// The marks of the writes among `cmds` (see [`super::replicas`]): the slot of each written
/// key, the node a keyless write goes to, every slot for a write on every primary.
fn write_marks(ctx: &Ctx, cmds: &[Cmd], any: &str) -> Vec<WriteMark> {
    let r = ctx.cluster.replicas();
    let mut marks = Vec::new();
    let mut slots: Vec<u16> = Vec::new();
    for cmd in cmds.iter().filter(|c| writes(c.spec)) {
        match plan::plan(cmd.spec, &cmd.args) {
            Plan::Single(Some(s)) => slots.push(s),
            Plan::Single(None) => marks.push(r.write_node(any)),
            Plan::Split(split) => {
                let step = split.step();
                let keys = (cmd.args.len() - 1) / step;
                slots.extend((0..keys).map(|k| super::slot::key_slot(&cmd.args[1 + k * step])));
            }
            Plan::Fanout(_) => marks.push(r.write_all()),
            Plan::Scan | Plan::CrossSlot => {}
        }
    }
    slots.sort_unstable();
    slots.dedup();
    marks.extend(slots.into_iter().map(|s| r.write_slot(s)));
    marks
}

/// A split command's part for the keys `idx` (argument `1 + k * step` onward for each `k`):
/// the command itself, or [`SCRIPT`] running `script` on each key.
fn part_command(args: &[Bytes], idx: &[usize], step: usize, script: Option<&[u8]>) -> Bytes {
    let mut part: Vec<&[u8]> = Vec::with_capacity(idx.len() * step + 4);
    match script {
        Some(name) => part.extend([&b"EVAL"[..], SCRIPT, b"0", name]),
        None => part.push(&args[0]),
    }
    for &k in idx {
        for j in 0..step {
            part.push(&args[1 + k * step + j]);
        }
    }
    super::command(&part)
}

/// The `count` replies of one node job, an error reply in place of each that did not come, and
/// whether any did not (its connection failed).
async fn collect(
    ctx: &Ctx,
    m: &crate::metrics::ClusterNode,
    rx: oneshot::Receiver<Reply>,
    count: usize,
) -> (Vec<Bytes>, bool) {
    let outcome = rx.await;
    m.inflight.decrement(count as f64);
    let (mut replies, error) = match outcome {
        Ok(Ok(bytes)) => (merge::split(&bytes), None),
        Ok(Err(partial)) => {
            m.failures.increment(1);
            if matches!(
                partial.error,
                NoReply::Unavailable(_) | NoReply::NotSent(_) | NoReply::Lost(_)
            ) {
                ctx.cluster.request_refresh();
            }
            (
                merge::split(&partial.replies),
                Some(format!("ERR {}", partial.error)),
            )
        }
        Err(_) => (
            Vec::new(),
            Some("ERR upstream connection closed before replying".to_string()),
        ),
    };
    replies.truncate(count);
    let failed = error.is_some() || replies.len() < count;
    let filler = error_reply(
        error
            .as_deref()
            .unwrap_or("ERR respite lost a cluster reply"),
    );
    replies.resize(count, filler);
    (replies, failed)
}

/// Append what `unit` answers to `out`: following redirections, merging parts.
async fn finish(ctx: &Ctx, unit: Unit, replies: &[(Vec<Bytes>, bool)], out: &mut BytesMut) {
    match unit {
        Unit::Ready(bytes) => out.extend_from_slice(&bytes),
        Unit::Direct {
            batch,
            at,
            count,
            bytes,
            addr,
            primary,
        } => {
            let (got, failed) = &replies[batch];
            let (addr, first) = match primary {
                // The replica's connection failed: the read is asked of its primary.
                Some(p) if *failed => {
                    let again = send(ctx, &p, &bytes, count, false).await;
                    (p, again)
                }
                _ => (addr, got[at..at + count].to_vec()),
            };
            for r in follow(ctx, &addr, &bytes, count, first).await {
                out.extend_from_slice(&r);
            }
        }
        Unit::Fanout { fan, at } => {
            let got: Vec<Bytes> = at.iter().map(|&(b, i)| replies[b].0[i].clone()).collect();
            out.extend_from_slice(&merge::fan(fan, &got, ctx.proto));
        }
        Unit::Scan(args) => out.extend_from_slice(&super::scan::run(ctx, &args).await),
        Unit::Split {
            split,
            args,
            keys,
            parts,
        } => {
            let step = split.step();
            let mut done: Vec<(Vec<usize>, Bytes)> = Vec::new();
            for part in parts {
                let reply = replies[part.batch].0[part.at].clone();
                if !merge::is_error(&reply) {
                    done.push((part.keys, reply));
                    continue;
                }
                if !part.script && redirect(&reply).is_none() {
                    done.push((part.keys, reply));
                    continue;
                }
                // One command per slot, each following its own redirections.
                for (_, idx) in by_slot(&args, &part.keys, step) {
                    let bytes = part_command(&args, &idx, step, None);
                    let reply = send(ctx, &part.addr, &bytes, 1, false).await;
                    let reply = follow(ctx, &part.addr, &bytes, 1, reply).await;
                    done.push((idx, reply[0].clone()));
                }
            }
            let merged = match split {
                Split::Mget => merge::mget(&done, keys, ctx.proto),
                Split::Sum => merge::sum(&done.into_iter().map(|d| d.1).collect::<Vec<_>>()),
                Split::Mset => merge::all_ok(&done.into_iter().map(|d| d.1).collect::<Vec<_>>()),
            };
            out.extend_from_slice(&merged);
        }
    }
}

/// A redirection a node answered with instead of running the command.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Moved(u16, String),
    Ask(String),
    TryAgain,
}

fn redirect(reply: &[u8]) -> Option<Redirect> {
    let text = reply.strip_prefix(b"-")?;
    let text = std::str::from_utf8(text).ok()?.trim_end();
    let mut words = text.split(' ');
    match words.next()? {
        "MOVED" => {
            let slot = words.next()?.parse().ok()?;
            Some(Redirect::Moved(slot, endpoint(words.next()?)))
        }
        "ASK" => {
            words.next()?;
            Some(Redirect::Ask(endpoint(words.next()?)))
        }
        "TRYAGAIN" => Some(Redirect::TryAgain),
        _ => None,
    }
}

/// A redirection's `host:port`; Redis 7 writes `:port` when the node's endpoint is unknown,
/// which respite cannot use, so it is kept as is and fails as an unreachable node.
fn endpoint(word: &str) -> String {
    word.to_string()
}

/// Send `count` commands to `addr` (after ASKING when `asking`) and take their replies.
async fn send(ctx: &Ctx, addr: &str, bytes: &Bytes, count: usize, asking: bool) -> Vec<Bytes> {
    let (node, m) = ctx.cluster.node_and_metrics(addr);
    let conn = node.conn_in(ctx.lane, ctx.proto, ctx.index as u64);
    let (bytes, n) = if asking {
        let mut b = BytesMut::from(&b"*1\r\n$6\r\nASKING\r\n"[..]);
        b.extend_from_slice(bytes);
        (b.freeze(), count + 1)
    } else {
        (bytes.clone(), count)
    };
    m.commands.increment(n as u64);
    m.inflight.increment(n as f64);
    let rx = conn.send(bytes, n).await;
    let (mut replies, _) = collect(ctx, &m, rx, n).await;
    if asking {
        replies.remove(0);
    }
    replies
}

/// Follow the redirections among `replies` (of `bytes`, sent to `addr`): resend the commands
/// where the node says, until they run or [`MAX_REDIRECTS`] is reached.
async fn follow(
    ctx: &Ctx,
    addr: &str,
    bytes: &Bytes,
    count: usize,
    mut replies: Vec<Bytes>,
) -> Vec<Bytes> {
    let mut target = addr.to_string();
    let mut asking = false;
    for tries in 1..=MAX_REDIRECTS {
        let Some(r) = replies.iter().find_map(|r| redirect(r)) else {
            return replies;
        };
        let (_, by) = ctx.cluster.node_and_metrics(&target);
        match &r {
            Redirect::Moved(..) => by.moved.increment(1),
            Redirect::Ask(_) => by.ask.increment(1),
            Redirect::TryAgain => by.tryagain.increment(1),
        }
        match r {
            Redirect::Moved(slot, to) => {
                ctx.cluster.moved(slot, &to);
                target = to;
                asking = false;
            }
            Redirect::Ask(to) => {
                metrics::cluster_redirect("ask");
                target = to;
                asking = true;
            }
            Redirect::TryAgain => {
                // A multi-key command whose keys are mid-migration: shortly, they are not.
                metrics::cluster_redirect("tryagain");
                tokio::time::sleep(Duration::from_millis(10 * tries as u64)).await;
            }
        }
        replies = send(ctx, &target, bytes, count, asking).await;
    }
    for r in replies.iter_mut() {
        if redirect(r).is_some() {
            *r = error_reply(&format!(
                "TRYAGAIN respite followed {MAX_REDIRECTS} cluster redirections for this command without an answer"
            ));
        }
    }
    replies
}

/// Hand the job its replies, against its client's budget, as a connection does.
fn deliver(tx: oneshot::Sender<Reply>, bytes: Bytes, budget: Option<Arc<ReplyBudget>>) {
    let reply = match &budget {
        Some(b) => {
            b.weigh(bytes.len());
            if b.charge(bytes.len()) {
                Ok(bytes)
            } else {
                Err(Partial::from(b.overflow_error()))
            }
        }
        None => Ok(bytes),
    };
    if let Err(Ok(dropped)) = tx.send(reply)
        && let Some(b) = &budget
    {
        b.release(dropped.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_read_from_the_error() {
        assert_eq!(
            redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved(3999, "127.0.0.1:6381".into()))
        );
        assert_eq!(
            redirect(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask("127.0.0.1:6381".into()))
        );
        assert_eq!(
            redirect(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(redirect(b"-ERR MOVED\r\n"), None);
        assert_eq!(redirect(b"+MOVED 1 a:1\r\n"), None);
    }

    #[test]
    fn a_multi_slot_read_is_one_script_and_a_write_a_command() {
        let args: Vec<Bytes> = ["MSET", "a", "1", "b", "2", "c", "3"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        // MGET a b c: keys 0 and 2 on one node, in two slots.
        let mget: Vec<Bytes> = ["MGET", "a", "b", "c"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let part = part_command(&mget, &[0, 2], 1, Some(b"GET"));
        let expect = super::super::command(&[b"EVAL", SCRIPT, b"0", b"GET", b"a", b"c"]);
        assert_eq!(part, expect);
        assert_eq!(script_command(Split::Mset, None), None);
        let single = part_command(&args, &[1], 2, None);
        assert_eq!(single, super::super::command(&[b"MSET", b"b", b"2"]));
    }
}

//! The wire half of a connection: coalescing queued jobs into writes, and pairing replies with
//! their slots, oldest first, through the alignment markers ([`super::marker`]). The connection's
//! task ([`super::conn`]) owns the socket and runs these two loops; pinned connections run them
//! without markers. The FIFO-pairing invariants are stated in [`super::conn`], and kept here.
//!
//! This module must never interpret replies beyond finding their boundaries.
use super::activity::Activity;
use super::error::{Closer, Kind, Lost, NoReply, ProtocolError};
use super::handshake::{BoxRead, BoxWrite};
use super::job::{InFlight, Job, PushSink, Slot};
use super::marker::Markers;
use super::reply::{HEAVY_JOB, Partial};
use crate::metrics;
use crate::protocol::ReplyScanner;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::debug;

/// Coalesce queued jobs into one write, without alignment markers (pinned connections). Returns
/// `None` when every handle is gone.
// The connection's parts, its bound, and the two accounts it keeps (busy-vs-down activity, metrics).
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_loop(
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut VecDeque<Job>,
    write: &mut BoxWrite,
    inflight: &InFlight,
    permits: &Semaphore,
    max_inflight: usize,
    activity: &Activity,
    // The protocol the in-flight and round-trip metrics count under; `None` (pinned
    // connections) counts nothing.
    label: Option<&'static str>,
) -> Option<Kind> {
    write_marked(
        rx,
        jobs,
        write,
        inflight,
        permits,
        max_inflight,
        activity,
        label,
        None,
    )
    .await
}

/// [`write_loop`], ending each batch with an alignment marker when given `markers`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_marked(
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut VecDeque<Job>,
    write: &mut BoxWrite,
    inflight: &InFlight,
    permits: &Semaphore,
    max_inflight: usize,
    activity: &Activity,
    label: Option<&'static str>,
    mut markers: Option<Markers>,
) -> Option<Kind> {
    const BATCH: usize = 1024;
    let (batch_commands, batch_bytes) = metrics::batch_histograms();
    let mut received = Vec::with_capacity(BATCH);
    let mut out = BytesMut::new();
    loop {
        if rx.recv_many(&mut received, BATCH).await == 0 {
            return None;
        }
        jobs.extend(received.drain(..));
        // A pinned connection (no markers) carries one client's jobs, which its session already
        // groups: waiting a scheduler round for other clients would gain nothing there, and would
        // let a command another client sends right behind this one reach the upstream first
        // (a WATCHer's EXEC and an LPUSH; a BRPOPLPUSH and the push that should feed it).
        if jobs.len() < BATCH && markers.is_some() {
            // Auto-pipelining: let every client task that is ready right now queue its commands
            // before this write goes out, so one write carries many clients' commands. Costs one
            // trip through the scheduler, not a timer.
            tokio::task::yield_now().await;
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push_back(job),
                    Err(_) => break,
                }
            }
        }
        let commands: usize = jobs.iter().map(|j| j.count).sum();
        let now = Instant::now();
        let mut total = 0;
        // Jobs since the last marker written.
        let mut unmarked = 0;
        // A job leaves `jobs` only once its slot is in flight (see `serve`).
        while let Some(next) = jobs.front() {
            if let Some(overflow) = next
                .budget
                .as_ref()
                .filter(|b| b.exceeded())
                .map(|b| b.overflow_error())
            {
                // Its client is being closed for what it left unread (as Redis closes a client
                // past its output limit, unread commands and all): not sent, so it holds no one
                // up behind it on this connection.
                let job = jobs.pop_front().expect("the front job");
                let _ = job.reply.send(Err(Partial::from(overflow)));
                continue;
            }
            // Bound what is in flight: each slot holds min(count, bound) permits. Out of permits,
            // first send what is already queued here (its replies are what frees permits), then
            // wait; meanwhile later jobs stay in the channel and their senders wait in turn.
            let weight = next.count.min(max_inflight) as u32;
            match permits.try_acquire_many(weight) {
                Ok(p) => p.forget(),
                Err(_) => {
                    // The batch ends here, with its marker: its replies are delivered when the
                    // marker comes back, not held until every job still queued behind it has
                    // been sent and answered (200 slow readers' groups of 16 GETs of 100 KB on
                    // the bulk lane were one batch: 320 MB held for one marker).
                    if unmarked > 0
                        && let Some(m) = markers.as_mut()
                    {
                        unmarked = 0;
                        m.append(&mut out);
                        inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push_back(marker_slot(now));
                    }
                    if let Err(e) = write.write_all(&out).await {
                        return Some(Kind::Lost(Lost::Write(e.into())));
                    }
                    out.clear();
                    match permits.acquire_many(weight).await {
                        Ok(p) => p.forget(),
                        Err(_) => return Some(Kind::Closed(Closer::PermitsClosed)),
                    }
                }
            }
            let job = jobs.pop_front().expect("the front job");
            unmarked += 1;
            if job.slow {
                activity.slow_started();
            }
            total += job.bytes.len();
            if let Some(label) = label {
                metrics::upstream_inflight_add(label, job.count as i64);
                activity.sent(job.count);
            }
            out.extend_from_slice(&job.bytes);
            // The slot goes in before its bytes go out, so the reader always finds it.
            let mut q = inflight.lock().unwrap_or_else(|p| p.into_inner());
            if q.is_empty()
                && let Some(tag) = &job.script
            {
                tag.at_head();
            }
            q.push_back(Slot {
                reply: Some(job.reply),
                count: job.count,
                permits: weight,
                sent: now,
                progress: now,
                budget: job.budget,
                slow: job.slow,
                discarded: false,
                charged: 0,
                script: job.script,
            });
            drop(q);
        }
        // The batch's marker: its echo releases the replies before it (see `marker`).
        if unmarked > 0
            && let Some(m) = markers.as_mut()
        {
            m.append(&mut out);
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(marker_slot(now));
        }
        batch_commands.record(commands as f64);
        batch_bytes.record(total as f64);
        if let Err(e) = write.write_all(&out).await {
            return Some(Kind::Lost(Lost::Write(e.into())));
        }
        out.clear();
        // Large one-off batches should not pin their buffer forever.
        if out.capacity() > 1 << 20 {
            out = BytesMut::new();
        }
    }
}

/// A read buffer past this is large: replies leave it as copies of their own (see
/// [`take_replies`]).
const LARGE_BUFFER: usize = 64 * 1024;

/// The first `n` bytes of `buf`, a job's replies, as their own `Bytes`. From a small buffer they
/// share its allocation (no copy: the common case of small replies). From a large one (a large
/// reply grew it) they are copied out, exactly sized: a slice of it would keep the whole
/// allocation alive, up to twice the job's bytes after geometric growth, for as long as its
/// client leaves it unread, where its count (`limits.max_client_memory`) says only the job's
/// bytes; and the buffer, unshared, is reused for the next job instead of grown again.
fn take_replies(buf: &mut BytesMut, n: usize) -> Bytes {
    if buf.capacity() <= LARGE_BUFFER {
        return buf.split_to(n).freeze();
    }
    let replies = Bytes::copy_from_slice(&buf[..n]);
    buf.advance(n);
    if buf.is_empty() && buf.capacity() > 4 * LARGE_BUFFER {
        // Idle again: the connection keeps no large buffer.
        *buf = BytesMut::new();
    }
    replies
}

/// The slot of a batch's alignment marker: respite's own, answering no client.
fn marker_slot(sent: Instant) -> Slot {
    Slot {
        reply: None,
        count: 1,
        permits: 0,
        sent,
        progress: sent,
        budget: None,
        slow: false,
        discarded: false,
        charged: 0,
        script: None,
    }
}

/// Pair replies with slots, oldest first, without alignment markers: a pinned connection's own
/// client is the only one on it, and its state (MULTI, CLIENT REPLY, MONITOR) would change what a
/// marker is answered with.
pub(super) async fn read_loop(
    read: &mut BoxRead,
    buf: &mut BytesMut,
    inflight: &InFlight,
    permits: &Semaphore,
    activity: &Activity,
    // The protocol the in-flight and round-trip metrics count under; `None` (pinned
    // connections) counts nothing.
    label: Option<&'static str>,
) -> Option<Kind> {
    read_marked(
        read,
        buf,
        &mut Vec::new(),
        inflight,
        permits,
        activity,
        label,
        None,
        None,
    )
    .await
}

/// [`read_loop`] for a pinned connection with `CLIENT TRACKING` on: its push frames go to
/// `sink` in the order they came between the replies, instead of being dropped.
pub(super) async fn read_loop_pushing(
    read: &mut BoxRead,
    buf: &mut BytesMut,
    inflight: &InFlight,
    permits: &Semaphore,
    activity: &Activity,
    sink: &dyn PushSink,
) -> Option<Kind> {
    read_marked(
        read,
        buf,
        &mut Vec::new(),
        inflight,
        permits,
        activity,
        None,
        None,
        Some(sink),
    )
    .await
}

/// Pair replies with slots, oldest first: a slot is complete once its `count` replies are in, and
/// with `markers`, delivered once the marker after it is echoed in place (held until then).
#[allow(clippy::too_many_arguments)]
pub(super) async fn read_marked(
    read: &mut BoxRead,
    buf: &mut BytesMut,
    held: &mut Vec<(Slot, Bytes)>,
    inflight: &InFlight,
    permits: &Semaphore,
    activity: &Activity,
    label: Option<&'static str>,
    mut markers: Option<Markers>,
    // Pushes go here (pinned tracking connections only; never with markers).
    sink: Option<&dyn PushSink>,
) -> Option<Kind> {
    let mut scanner = ReplyScanner::new();
    let rtt = label.map(metrics::upstream_rtt);
    // Replies of the head slot already scanned: their count and total length at the front of buf.
    let mut scanned = 0;
    let mut have = 0;
    let error_replies = metrics::upstream_error_replies();
    loop {
        if buf.capacity() - buf.len() < 4096 {
            // Geometric growth while a large reply arrives: a buffer whose front was split off
            // (delivered replies share it) is reallocated to exactly what `reserve` asks, so
            // 16 KiB steps copied a 10 MB job's bytes hundreds of times over (measured: most of
            // the reader's time beside clients fetching 100 KB values).
            buf.reserve((16 * 1024).max(buf.len()));
        }
        match read.read_buf(buf).await {
            Ok(0) => return Some(Kind::Lost(Lost::Closed)),
            Ok(_) => activity.replied(),
            Err(e) => return Some(Kind::Lost(Lost::Read(e.into()))),
        }
        let mut done = 0;
        let mut answered = 0;
        // The oldest slot this read completes: one clock reading per read, not per command.
        let mut oldest_sent = None;
        let mut errors = 0;
        loop {
            let found = match scanner.scan(&buf[scanned..]) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return Some(Kind::Protocol(ProtocolError::Garbled(e))),
            };
            if found.push {
                // Out of band (e.g. a tracking invalidation): not the answer to any request.
                let mut tail = buf.split_off(scanned);
                match sink {
                    // Before any later reply is delivered, so the sink sees the push in its
                    // place between the replies (`have`: the head job is partly answered).
                    Some(sink) => sink.push(tail.split_to(found.len).freeze(), have > 0),
                    None => {
                        debug!("ignoring push frame on a shared connection");
                        tail.advance(found.len);
                    }
                }
                buf.extend_from_slice(&tail);
                continue;
            }
            // `-` (RESP2 and RESP3) or `!` (a RESP3 blob error) opens an error reply.
            errors += matches!(buf[scanned], b'-' | b'!') as u64;
            scanned += found.len;
            have += 1;
            let mut q = inflight.lock().unwrap_or_else(|p| p.into_inner());
            let Some(head) = q.front_mut() else {
                return Some(Kind::Protocol(ProtocolError::Unsolicited));
            };
            if have < head.count {
                if !head.discarded && scanned - head.charged >= CHARGE_STEP {
                    charge_arrived(head, scanned);
                }
                if head.discarded || (scanned >= HEAVY_JOB && unwanted(head, scanned)) {
                    // Replies nobody will take: dropped as they come, not held until the
                    // job's last one (10 MB for 100 GETs of 100 KB).
                    buf.advance(scanned);
                    scanned = 0;
                    head.discarded = true;
                    release_charged(head);
                }
                continue;
            }
            let mut slot = q.pop_front().expect("head exists");
            if let Some(tag) = q.front().and_then(|next| next.script.as_ref()) {
                tag.at_head();
            }
            drop(q);
            if !slot.discarded {
                // Counted now, before it waits for its marker: what a batch holds in `held` is
                // counted too (`limits.max_client_memory`).
                charge_arrived(&mut slot, scanned);
            }
            if let Some(b) = slot.budget.as_ref().filter(|_| !slot.discarded) {
                b.weigh(scanned);
            }
            if slot.slow {
                activity.slow_finished();
            }
            oldest_sent.get_or_insert(slot.sent);
            // A marker is respite's own, never counted in flight.
            if slot.reply.is_some() {
                answered += slot.count;
            }
            done += slot.permits as usize;
            if markers.is_none() {
                if let Some(sink) = sink {
                    sink.delivered();
                }
                deliver(slot, take_replies(buf, scanned));
            } else if slot.reply.is_some() {
                held.push((slot, take_replies(buf, scanned)));
            } else {
                if !markers.as_mut().is_some_and(|m| m.check(&buf[..scanned])) {
                    return Some(Kind::Protocol(ProtocolError::Misaligned));
                }
                activity.saw_refusal(super::activity::refuses_all(&buf[..scanned]));
                buf.advance(scanned);
                for (slot, replies) in held.drain(..) {
                    deliver(slot, replies);
                }
            }
            scanned = 0;
            have = 0;
        }
        if done > 0 || !buf.is_empty() {
            // The connection is being answered, not stuck: the head job's replies are arriving,
            // or the jobs before it were just answered (the watchdog's deadline runs from this).
            // One clock reading per read.
            if let Some(head) = inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front_mut()
            {
                head.progress = Instant::now();
            }
        }
        if done > 0 {
            permits.add_permits(done);
            if let Some(label) = label {
                metrics::upstream_inflight_add(label, -(answered as i64));
                activity.settled(answered);
            }
        }
        if let (Some(sent), Some(rtt)) = (oldest_sent, &rtt) {
            rtt.record(sent.elapsed().as_secs_f64());
        }
        if errors > 0 {
            error_replies.increment(errors);
        }
    }
}

/// A large job still arriving: mark its client heavy at once (its next commands go on the
/// bulk lane), and say whether its replies so far can be dropped: its client is gone, or over
/// its limit, or the job alone is over it (the client is closed for it, as it would be once the
/// job's last reply came).
fn unwanted(head: &Slot, scanned: usize) -> bool {
    let Some(tx) = &head.reply else {
        return false; // a marker
    };
    if tx.is_closed() {
        return true;
    }
    let Some(b) = &head.budget else { return false };
    b.weigh(scanned);
    if scanned > b.limit() {
        b.overflow();
    }
    b.exceeded()
}

/// Charge a large job's replies to its client as they arrive, at least this many bytes at a time:
/// a job is counted while it is read, not only once whole, so what the connection's buffer holds
/// for a client counts against its limits before more of it is read.
const CHARGE_STEP: usize = 16 * 1024;

/// Charge the head job's `scanned` bytes so far (those not yet charged) to its client; over a
/// limit, the job's replies are to be dropped (`discarded`) and the client is closed.
fn charge_arrived(slot: &mut Slot, scanned: usize) {
    let Some(b) = &slot.budget else { return };
    if slot.reply.as_ref().is_none_or(|tx| tx.is_closed()) {
        // A marker, or a client gone: nobody takes these bytes.
        slot.discarded = true;
        return;
    }
    let more = scanned.saturating_sub(slot.charged);
    if more == 0 {
        return;
    }
    if b.charge(more) {
        slot.charged = scanned;
    } else {
        slot.discarded = true;
    }
}

/// A job's replies are dropped: what was charged for them leaves its client's count now.
fn release_charged(slot: &mut Slot) {
    if let Some(b) = &slot.budget
        && slot.charged > 0
    {
        b.release(std::mem::take(&mut slot.charged));
    }
}

/// Hand a job its vouched-for replies, charged to its client's budget when they came
/// ([`charge_arrived`]): the charge goes with them to the client's writer, which releases it.
pub(super) fn deliver(mut slot: Slot, replies: Bytes) {
    let reply = if slot.discarded {
        // Its replies were dropped as they came, or are over its client's limit.
        release_charged(&mut slot);
        Err(Partial::from(slot.budget.as_ref().map_or(
            NoReply::Overflow {
                limit: 0,
                total: false,
            },
            |b| b.overflow_error(),
        )))
    } else {
        debug_assert!(slot.budget.is_none() || slot.charged == replies.len());
        // Handed over: the writer releases it once written.
        slot.charged = 0;
        Ok(replies)
    };
    // The client may have gone: its replies are dropped, the pairing holds.
    if let Some(tx) = slot.reply.take()
        && let Err(Ok(dropped)) = tx.send(reply)
        && let Some(b) = &slot.budget
    {
        b.release(dropped.len());
    }
}

//! The session's last stage: resolve the [`Pending`] replies in FIFO order and write them to the
//! client, batching what is already known into one write. It is the only writer of the client
//! socket; the reply it picks for each upstream job is decided here ([`reply_bytes`]).
use super::tracking::Invalidations;
use super::{Fifo, Keep, Pending, error_bytes};
use crate::cache::coherence::{Unanswered, answered};
use crate::cache::{Fetched, NearCache};
use crate::metrics::{self, ErrorKind};
use crate::policy::{self, ReplyRewrite};
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::pubsub::Outbox;
use crate::server::io::ClientIo;
use crate::upstream::{Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// Write replies in FIFO order. After waiting for the reply at the head, take every reply behind
/// it that is already known, so a pipelining client gets them in one write. Pub/Sub pushes in
/// `pushes` are taken before each reply and while waiting for one: between whole replies only.
pub(super) async fn write_loop<C: ClientIo>(
    w: &C,
    fifo: &Fifo<Pending>,
    cache: Option<&NearCache>,
    unanswered_writes: &Unanswered,
    budget: Option<&ReplyBudget>,
    pushes: Option<&Outbox>,
    tracked: &OnceLock<Arc<Invalidations>>,
) {
    // Upstream replies leave the client's budget once written (or copied into the bounded
    // output batch), not when taken: a client that never reads keeps them counted.
    let owed = |r: &Result<Reply, ()>| match r {
        Ok(Ok(bytes)) => bytes.len(),
        _ => 0,
    };
    // The budgeted bytes of the item about to be written (taken ahead by the look-ahead below).
    let mut owed_next = 0;
    // The item about to be written is an upstream job's replies (taken ahead, below): CLIENT
    // TRACKING's pushes count it once written (see `invalidations`).
    let mut job_next = false;
    const FLUSH_AT: usize = 64 * 1024;
    let mut out = BytesMut::new();
    let mut head: Option<Pending> = None;
    // The client can no longer be written to (it went away, or is over its output limit).
    let mut gone = false;
    // CLIENT REPLY OFF or SKIP: replies are still awaited in order, and dropped.
    let mut silent = false;
    'session: loop {
        let mut item = match head.take() {
            Some(p) => Some(p),
            None => match between(w, budget, &mut out, pushes, tracked, fifo.pop()).await {
                Ok(p) => p,
                Err(()) => {
                    gone = true;
                    break 'session;
                }
            },
        };
        if item.is_none() {
            break;
        }
        while let Some(p) = item.take() {
            let mut owed_now = std::mem::take(&mut owed_next);
            let mut job = std::mem::take(&mut job_next);
            if let Pending::Ready(b) = &p
                && !job
            {
                // Counted when queued (see `Outgoing::enqueue`); an upstream job's replies
                // taken ahead (`job`) carry their own count.
                owed_now = b.len();
            }
            if let Some(pushes) = pushes {
                pushes.drain_into(&mut out);
            }
            if let Some(t) = tracked.get() {
                t.drain_into(&mut out);
            }
            let written = match p {
                Pending::Ready(_) if silent => Ok(()),
                Pending::Ready(b) => append(w, budget, &mut out, b).await,
                Pending::Upstream { rx, count, keep } => {
                    let Ok(r) = between(w, budget, &mut out, pushes, tracked, rx).await else {
                        gone = true;
                        break 'session;
                    };
                    // Tracking pushes read before this reply go before it.
                    if let Some(t) = tracked.get() {
                        t.drain_into(&mut out);
                    }
                    job = true;
                    let r = r.map_err(|_| ());
                    if r.is_err() {
                        // No reply will ever come, and nothing says why (its connection was
                        // closed under it: the client left while it was owed, the upstream
                        // closed a pinned connection, respite is shutting down). A server
                        // whose connection closes says nothing more either: the client gets
                        // the replies before it and then a closed connection, never a reply
                        // made up for commands whose fate is unknown (a client library then
                        // knows to reconnect, and not to take them as failed).
                        let _ = flush(w, budget, &mut out).await;
                        gone = true;
                        break 'session;
                    }
                    owed_now = owed(&r);
                    if silent {
                        Ok(())
                    } else {
                        append(w, budget, &mut out, reply_bytes(r, count, &keep)).await
                    }
                }
                Pending::Cached { rx, proto } => {
                    let Ok(r) = between(w, budget, &mut out, pushes, tracked, rx).await else {
                        gone = true;
                        break 'session;
                    };
                    let bytes = fetched_bytes(r.ok(), proto);
                    if silent {
                        Ok(())
                    } else {
                        append(w, budget, &mut out, bytes).await
                    }
                }
                Pending::Silence(s) => {
                    silent = s;
                    Ok(())
                }
                Pending::Written(written) => {
                    answered(cache, written, unanswered_writes);
                    Ok(())
                }
                Pending::Barrier(done) => {
                    let r = flush(w, budget, &mut out).await;
                    let _ = done.send(());
                    r
                }
                Pending::Close => break 'session,
                // Sampled (1 in 16), and pushed at the end of a read batch, where the replies
                // before it would be flushed next anyway.
                Pending::Timed(spec, framed) => {
                    let r = flush(w, budget, &mut out).await;
                    metrics::command_duration(spec, framed.elapsed().as_secs_f64());
                    r
                }
            };
            if written.is_err() {
                // Not written, but dropped here all the same: it leaves the client's count.
                if let Some(b) = budget.filter(|_| owed_now > 0) {
                    b.release(owed_now);
                }
                gone = true;
                break 'session;
            }
            if job && let Some(t) = tracked.get() {
                t.wrote_job();
            }
            if let Some(b) = budget.filter(|_| owed_now > 0) {
                b.release(owed_now);
            }
            if out.len() >= FLUSH_AT {
                break;
            }
            item = match fifo.try_pop() {
                Some(Pending::Upstream {
                    mut rx,
                    count,
                    keep,
                }) => match rx.try_recv() {
                    Ok(r) => {
                        let r = Ok(r);
                        owed_next = owed(&r);
                        job_next = true;
                        Some(Pending::Ready(reply_bytes(r, count, &keep)))
                    }
                    // Closed with no reply: handled as the head (above), which closes.
                    Err(
                        oneshot::error::TryRecvError::Closed | oneshot::error::TryRecvError::Empty,
                    ) => {
                        // Not here yet: write what we have before waiting for it.
                        head = Some(Pending::Upstream { rx, count, keep });
                        None
                    }
                },
                Some(Pending::Cached { mut rx, proto }) => match rx.try_recv() {
                    Ok(f) => Some(Pending::Ready(fetched_bytes(Some(f), proto))),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some(Pending::Ready(fetched_bytes(None, proto)))
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        head = Some(Pending::Cached { rx, proto });
                        None
                    }
                },
                Some(other) => Some(other),
                None => None,
            };
        }
        if budget.is_some_and(|b| b.exceeded()) {
            // Past limits.max_reply_bytes: the errors that replaced the replies go out, then the
            // connection closes. Whatever the reader still queues is dropped until it stops.
            let _ = flush(w, budget, &mut out).await;
            w.shutdown_both();
            gone = true;
            break;
        }
        if flush(w, budget, &mut out).await.is_err() {
            gone = true;
            break;
        }
        if head.is_none() && fifo.is_empty() {
            // Idle clients keep no write buffer: it goes back to the thread's spares, for the
            // next reply of any session here (see `io::give_back`).
            crate::server::io::give_back(std::mem::take(&mut out));
        }
    }
    if gone {
        // The reader may be waiting for bytes from a client that is gone or being closed. One
        // closed for the clients' total leaves nothing behind in the kernel either.
        if budget.is_some_and(|b| b.evicted()) {
            w.abort();
        } else {
            w.shutdown_both();
        }
        fifo.abandon();
        if let Some(b) = budget {
            // A reader waiting for this client to drain its replies stops waiting.
            b.wake();
        }
        settle(head, fifo, cache, unanswered_writes, budget).await;
        return;
    }
    let _ = flush(w, budget, &mut out).await;
    w.shutdown_write().await;
}

/// Wait for `next`, writing Pub/Sub pushes as they come meanwhile (`out` then holds only whole
/// replies, so a push never lands inside one). `Err`: the client is gone.
async fn between<C: ClientIo, F: std::future::Future>(
    w: &C,
    budget: Option<&ReplyBudget>,
    out: &mut BytesMut,
    pushes: Option<&Outbox>,
    tracked: &OnceLock<Arc<Invalidations>>,
    next: F,
) -> Result<F::Output, ()> {
    if let Some(tracked) = tracked.get() {
        // Boxed: only tracked clients wait here, and inline its three-way wait would grow every
        // session's future (and cost every untracked reply a third branch).
        return Box::pin(between_tracked(w, budget, out, pushes, tracked, next)).await;
    }
    let Some(pushes) = pushes else {
        return Ok(next.await);
    };
    // Polled by hand, `next` first, rather than by `select!`: this wait comes twice per
    // unpipelined request for every client of an upstream with Pub/Sub, subscribed or not, and
    // the macro's bookkeeping around its two branches cost more than the branches themselves.
    let mut next = std::pin::pin!(next);
    let mut pushed = std::pin::pin!(pushes.ready());
    loop {
        let got = std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(v) = next.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(v));
            }
            pushed.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match got {
            Some(v) => return Ok(v),
            None => {
                pushes.drain_into(out);
                flush(w, budget, out).await?;
            }
        }
    }
}

/// [`between`] for a client with CLIENT TRACKING on: its tracking pushes are written as they
/// come too.
async fn between_tracked<C: ClientIo, F: std::future::Future>(
    w: &C,
    budget: Option<&ReplyBudget>,
    out: &mut BytesMut,
    pushes: Option<&Outbox>,
    tracked: &Invalidations,
    next: F,
) -> Result<F::Output, ()> {
    tokio::pin!(next);
    loop {
        tokio::select! {
            biased;
            v = &mut next => return Ok(v),
            () = outbox_ready(pushes) => {
                if let Some(p) = pushes {
                    p.drain_into(out);
                }
                flush(w, budget, out).await?;
            }
            () = tracked.ready() => {
                tracked.drain_into(out);
                flush(w, budget, out).await?;
            }
        }
    }
}

async fn outbox_ready(pushes: Option<&Outbox>) {
    match pushes {
        Some(p) => p.ready().await,
        None => std::future::pending().await,
    }
}

/// After the client is gone: take what the reader still queues until it stops, dropping the
/// replies but keeping what other clients rely on: a write's near-cache invalidation waits for
/// its reply as usual, budgets are released, barriers are signalled.
async fn settle(
    mut head: Option<Pending>,
    fifo: &Fifo<Pending>,
    cache: Option<&NearCache>,
    unanswered_writes: &Unanswered,
    budget: Option<&ReplyBudget>,
) {
    loop {
        let p = match head.take() {
            Some(p) => p,
            None => match fifo.pop().await {
                Some(p) => p,
                None => return,
            },
        };
        match p {
            Pending::Upstream { mut rx, .. } => {
                // Only a write's invalidation (the Written just behind it, pushed together with
                // it) needs its reply; dropped, the reply's bytes leave the budget when it comes.
                head = fifo.try_pop();
                if matches!(head, Some(Pending::Written(_))) {
                    if let (Some(b), Ok(Ok(bytes))) = (budget, rx.await) {
                        b.release(bytes.len());
                    }
                } else if let (Some(b), Ok(Ok(bytes))) = (budget, rx.try_recv()) {
                    // Arrived and counted: freed now (one still to come is released by the
                    // connection when it finds the slot's receiver gone).
                    b.release(bytes.len());
                }
            }
            Pending::Ready(bytes) => {
                if let Some(b) = budget {
                    b.release(bytes.len());
                }
            }
            Pending::Written(written) => answered(cache, written, unanswered_writes),
            Pending::Barrier(done) => {
                let _ = done.send(());
            }
            // Replies nobody will read.
            _ => {}
        }
    }
}

/// A near-cache fill's reply for a client (`None`: the fill vanished unanswered).
fn fetched_bytes(f: Option<Fetched>, proto: Protocol) -> Bytes {
    match f {
        Some(Ok(cached)) => cached.get(proto),
        Some(Err(why)) => {
            metrics::error(ErrorKind::Upstream);
            error_bytes(&format!("ERR {why}"))
        }
        None => {
            metrics::error(ErrorKind::Upstream);
            error_bytes("ERR near-cache fill abandoned before its reply")
        }
    }
}

async fn flush<C: ClientIo>(
    w: &C,
    budget: Option<&ReplyBudget>,
    out: &mut BytesMut,
) -> Result<(), ()> {
    if out.is_empty() {
        return Ok(());
    }
    write_all(w, budget, out).await?;
    out.clear();
    Ok(())
}

/// Write all of `b`; once the client is to be closed over its own limit, give the write
/// [`CLOSE_GRACE`] more: the errors naming the limit reach a client that reads, while one that
/// never reads no longer holds this write, and its session, forever. Closed for the clients'
/// total, a write that cannot complete at once is dropped at once (see inside).
async fn write_all<C: ClientIo>(w: &C, budget: Option<&ReplyBudget>, b: &[u8]) -> Result<(), ()> {
    // One write future for both paths: awaited in place on the first, it took a slot of its own
    // beside the second's in every session's future.
    let write = w.write_all(b);
    tokio::pin!(write);
    let Some(budget) = budget else {
        return write.await.map_err(|_| ());
    };
    // Most writes complete at once (a reply into an empty socket buffer): polled once on its
    // own first, without the select's setup (callgrind: about 100 instructions per reply).
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(r) = first {
        return r.map_err(|_| ());
    }
    // Blocked: the client is not taking what it is owed (the reader, at its limit, closes it
    // then; see `outgoing::park`).
    budget.writer_stalled(true);
    // A write that completes at once never polls the budget's wake-up.
    let r = tokio::select! {
        biased;
        r = &mut write => Some(r),
        _ = budget.closed() => None,
    };
    budget.writer_stalled(false);
    if let Some(r) = r {
        return r.map_err(|_| ());
    }
    if budget.evicted() {
        // Closed for the clients' total: what it holds is dropped now, not after a grace, so
        // the memory the total bounds is freed at once (Redis drops an evicted client's output
        // buffer the same way), and so is what the kernel still holds for it (a reset). A
        // client that reads still got what its socket took.
        w.abort();
        return Err(());
    }
    // Boxed: rare (a client being closed), and its timer would grow every session's future.
    match Box::pin(tokio::time::timeout(CLOSE_GRACE, write)).await {
        Ok(r) => r.map_err(|_| ()),
        Err(_) => {
            // It did not read its errors: what its socket holds is dropped with it.
            w.abort();
            Err(())
        }
    }
}

/// How long a client being closed for its limits still gets to take what is written to it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The bytes a client gets for the `count` commands of one upstream job: their replies, or the
/// replies that arrived followed by one error for each command that got none. `Err(())`: the
/// slot vanished unanswered (the pool shut down).
pub(super) fn reply_bytes(r: Result<Reply, ()>, count: usize, keep: &Keep) -> Bytes {
    if let Keep::First(f) = keep {
        return first_reply(r, f.skip, f.rewrite, &f.prefix, f.proto);
    }
    let (mut out, failed, msg) = match r {
        Ok(Ok(bytes)) => return bytes,
        Ok(Err(partial)) => {
            metrics::error(partial.error.kind());
            (
                BytesMut::from(&partial.replies[..]),
                count - partial.count,
                format!("ERR {}", partial.error),
            )
        }
        Err(()) => {
            metrics::error(ErrorKind::Upstream);
            (
                BytesMut::new(),
                count,
                "ERR upstream connection closed before replying".to_string(),
            )
        }
    };
    for _ in 0..failed {
        encode::error(&mut out, &msg);
    }
    out.freeze()
}

/// The command's own reply (the one after `skip`) out of a job that also carried what respite
/// added around it, rewritten for the tenant.
fn first_reply(
    r: Result<Reply, ()>,
    skip: usize,
    rewrite: ReplyRewrite,
    prefix: &[u8],
    proto: Protocol,
) -> Bytes {
    let replies = match r {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(partial)) if partial.count > skip => partial.replies,
        Ok(Err(partial)) => return reply_bytes(Ok(Err(partial.without_replies())), 1, &Keep::All),
        other => return reply_bytes(other, 1, &Keep::All),
    };
    let mut scanner = ReplyScanner::new();
    let mut at = 0;
    for _ in 0..skip {
        match scanner.scan(&replies[at..]) {
            Ok(Some(s)) => at += s.len,
            _ => break,
        }
    }
    let len = match scanner.scan(&replies[at..]) {
        Ok(Some(s)) => s.len,
        _ => replies.len() - at,
    };
    let first = replies.slice(at..at + len);
    policy::rewrite_reply(rewrite, prefix, &first, proto)
        .unwrap_or_else(|e| error_bytes(&format!("ERR {e}")))
}

/// Add a reply to the output batch; a large reply is written straight through instead of copied.
async fn append<C: ClientIo>(
    w: &C,
    budget: Option<&ReplyBudget>,
    out: &mut BytesMut,
    b: Bytes,
) -> Result<(), ()> {
    if b.len() >= 16 * 1024 {
        flush(w, budget, out).await?;
        write_all(w, budget, &b).await
    } else {
        if out.capacity() == 0 {
            *out = crate::server::io::spare(b.len());
        }
        out.extend_from_slice(&b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::error::{Kind, Lost};
    use crate::upstream::{NoReply, Partial, UpstreamError};

    fn lost(replies: &'static [u8], count: usize) -> Result<Reply, ()> {
        Ok(Err(Partial {
            replies: Bytes::from_static(replies),
            count,
            error: NoReply::Lost(std::sync::Arc::new(UpstreamError {
                addr: "127.0.0.1:6379".into(),
                kind: Kind::Lost(Lost::Closed),
            })),
        }))
    }

    const LOST: &str = "-ERR upstream connection lost with the command in flight (upstream closed the connection); it may or may not have run\r\n";
    const CLOSED: &str = "-ERR upstream connection closed before replying\r\n";

    fn first(skip: usize, rewrite: ReplyRewrite, prefix: &'static [u8]) -> Keep {
        Keep::first(skip, rewrite, Bytes::from_static(prefix), Protocol::Resp2)
    }

    #[test]
    fn every_reply_as_it_came() {
        let r = Ok(Ok(Bytes::from_static(b"+OK\r\n:1\r\n")));
        assert_eq!(&reply_bytes(r, 2, &Keep::All)[..], b"+OK\r\n:1\r\n");
    }

    #[test]
    fn partial_replies_then_one_error_per_missing_command() {
        let got = reply_bytes(lost(b"+OK\r\n", 1), 3, &Keep::All);
        assert_eq!(got, format!("+OK\r\n{LOST}{LOST}").as_bytes());
        let got = reply_bytes(lost(b"", 0), 2, &Keep::All);
        assert_eq!(got, format!("{LOST}{LOST}").as_bytes());
    }

    #[test]
    fn a_vanished_slot_answers_every_command() {
        let got = reply_bytes(Err(()), 2, &Keep::All);
        assert_eq!(got, format!("{CLOSED}{CLOSED}").as_bytes());
    }

    #[test]
    fn first_reply_skips_what_respite_added() {
        // MULTI, two QUEUED, EXEC's array, then a follow-up's reply.
        let replies = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$1\r\na\r\n:1\r\n:1\r\n";
        let r = Ok(Ok(Bytes::from_static(replies)));
        let got = reply_bytes(r, 5, &first(3, ReplyRewrite::None, b""));
        assert_eq!(&got[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        // No skip: the command's own reply, not its follow-up's.
        let r = Ok(Ok(Bytes::from_static(b"+OK\r\n:1\r\n")));
        assert_eq!(
            &reply_bytes(r, 2, &first(0, ReplyRewrite::None, b""))[..],
            b"+OK\r\n"
        );
    }

    #[test]
    fn first_reply_is_rewritten_for_the_tenant() {
        let r = Ok(Ok(Bytes::from_static(
            b"*2\r\n$4\r\nt1:a\r\n$4\r\nt1:b\r\n",
        )));
        let got = reply_bytes(r, 1, &first(0, ReplyRewrite::Keys, b"t1:"));
        assert_eq!(&got[..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    }

    #[test]
    fn first_reply_of_a_partial_job() {
        // Its own reply arrived before the failure: the client gets it.
        let got = reply_bytes(
            lost(b"+OK\r\n:5\r\n", 2),
            3,
            &first(1, ReplyRewrite::None, b""),
        );
        assert_eq!(&got[..], b":5\r\n");
        // It did not: one error, for the one command the client sent.
        let got = reply_bytes(lost(b"+OK\r\n", 1), 3, &first(1, ReplyRewrite::None, b""));
        assert_eq!(got, LOST.as_bytes());
        let got = reply_bytes(Err(()), 3, &first(1, ReplyRewrite::None, b""));
        assert_eq!(got, CLOSED.as_bytes());
    }

    #[test]
    fn fills_answer_or_fail() {
        assert_eq!(
            &fetched_bytes(None, Protocol::Resp2)[..],
            b"-ERR near-cache fill abandoned before its reply\r\n"
        );
    }
}

//! One subscriber's pushes waiting for its session's writer: a bounded queue of whole frames.
//!
//! The hub fills it from the upstream subscriber connection's reader and must never wait, so a
//! push never blocks: past `limits.pubsub_output_bytes` the queue is dropped and the outbox is
//! marked overflowed, which ends the session (as Redis's `client-output-buffer-limit pubsub`
//! closes a slow subscriber). It never holds more than its limit, and it never writes to a
//! socket: the writer drains it between replies.
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};

/// What one queued frame costs besides its bytes (its handle and queue slot): payloads are
/// shared between subscribers, so a queue of tiny frames is bounded by what it really holds.
pub(crate) const FRAME_OVERHEAD: usize = 48;

/// Most bytes one drain hands the writer, so a long queue goes out in bounded writes.
const DRAIN_MAX: usize = 64 * 1024;

pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    /// Something is queued (or the outbox overflowed): read without the lock on every reply.
    ready: AtomicBool,
    limit: usize,
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflowed: bool,
    /// The writer waiting for a push.
    writer: Option<Waker>,
    /// The session waiting for an overflow.
    watcher: Option<Waker>,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: AtomicBool::new(false),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one whole frame. False if the subscriber is over its limit (now or before): the
    /// frame is dropped and the session is being closed.
    pub fn push(&self, frame: Bytes) -> bool {
        let mut inner = self.lock();
        if inner.overflowed {
            return false;
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        if inner.bytes + cost > self.limit {
            inner.overflowed = true;
            inner.frames = VecDeque::new();
            inner.bytes = 0;
            if let Some(w) = inner.watcher.take() {
                w.wake();
            }
            return false;
        }
        inner.frames.push_back(frame);
        inner.bytes += cost;
        self.ready.store(true, Ordering::Release);
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
        true
    }

    /// Move queued frames (up to about 64 KiB) to the end of `out`. Whole frames only: the
    /// writer calls this between replies, never inside one.
    pub fn drain_into(&self, out: &mut BytesMut) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        let mut taken = 0;
        while taken < DRAIN_MAX {
            let Some(f) = inner.frames.pop_front() else {
                break;
            };
            taken += f.len();
            inner.bytes -= f.len() + FRAME_OVERHEAD;
            out.extend_from_slice(&f);
        }
        if inner.frames.is_empty() {
            // An idle subscriber keeps no queue.
            inner.frames = VecDeque::new();
            self.ready.store(false, Ordering::Release);
        }
    }

    /// Completes once something is queued.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if !inner.frames.is_empty() {
                return Poll::Ready(());
            }
            inner.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Completes once the subscriber went over its limit.
    pub async fn overflowed(&self) {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.overflowed {
                return Poll::Ready(());
            }
            inner.watcher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_then_overflowed_for_good() {
        let o = Outbox::new(3 * (10 + FRAME_OVERHEAD));
        for _ in 0..3 {
            assert!(o.push(Bytes::from_static(b"0123456789")));
        }
        let mut out = BytesMut::new();
        o.drain_into(&mut out);
        assert_eq!(out.len(), 30);
        for _ in 0..3 {
            assert!(o.push(Bytes::from_static(b"0123456789")));
        }
        assert!(!o.push(Bytes::from_static(b"x")), "past the limit");
        assert!(!o.push(Bytes::from_static(b"x")), "stays overflowed");
        let mut out = BytesMut::new();
        o.drain_into(&mut out);
        assert!(out.is_empty(), "the queue was dropped");
    }
}

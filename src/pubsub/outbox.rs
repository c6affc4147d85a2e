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
    /// The writer's waker is registered (and not yet taken by a push), and the outbox has
    /// overflowed: read without the lock, so a session that never subscribes pays two atomic
    /// loads per wait, not a lock and a waker clone (callgrind: about 490 instructions per
    /// unpipelined GET went to these two checks).
    writer_registered: AtomicBool,
    overflowed: AtomicBool,
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
            writer_registered: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
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
            self.overflowed.store(true, Ordering::Release);
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
            self.writer_registered.store(false, Ordering::Release);
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

    /// Completes once something is queued. Always awaited from the same task (the session's),
    /// whose waker stays the same for its life: once registered, it stays until a push takes
    /// it, and until then nothing queued and a registered waker mean Pending without the lock.
    pub fn ready(&self) -> impl std::future::Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if !self.ready.load(Ordering::Acquire) && self.writer_registered.load(Ordering::Acquire)
            {
                return Poll::Pending;
            }
            let mut inner = self.lock();
            if !inner.frames.is_empty() {
                return Poll::Ready(());
            }
            inner.writer = Some(cx.waker().clone());
            self.writer_registered.store(true, Ordering::Release);
            Poll::Pending
        })
    }

    /// Completes once the subscriber went over its limit. Registered on its first poll; after
    /// that, polled on every wake-up of the session, it reads only the flag (set before the
    /// watcher is woken).
    pub fn overflowed(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut registered = false;
        poll_fn(move |cx| {
            if registered && !self.overflowed.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            let mut inner = self.lock();
            if inner.overflowed {
                return Poll::Ready(());
            }
            inner.watcher = Some(cx.waker().clone());
            registered = true;
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

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

    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waits_without_the_lock_yet_never_miss_a_push_or_an_overflow() {
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let o = Outbox::new(2 * (1 + FRAME_OVERHEAD));
        let mut overflowed = std::pin::pin!(o.overflowed());
        assert!(overflowed.as_mut().poll(&mut cx).is_pending());
        for _ in 0..3 {
            // A fresh wait each time, as the writer makes one per reply it waits for.
            assert!(std::pin::pin!(o.ready()).poll(&mut cx).is_pending());
        }
        assert!(o.push(Bytes::from_static(b"x")));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the push woke the writer"
        );
        assert!(std::pin::pin!(o.ready()).poll(&mut cx).is_ready());
        let mut out = BytesMut::new();
        o.drain_into(&mut out);
        assert!(std::pin::pin!(o.ready()).poll(&mut cx).is_pending());
        assert!(o.push(Bytes::from_static(b"y")));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "registered again after the first push"
        );
        assert!(overflowed.as_mut().poll(&mut cx).is_pending());
        assert!(o.push(Bytes::from_static(b"z")));
        assert!(!o.push(Bytes::from_static(b"w")), "over the limit");
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            3,
            "the overflow woke the watcher"
        );
        assert!(overflowed.as_mut().poll(&mut cx).is_ready());
    }
}

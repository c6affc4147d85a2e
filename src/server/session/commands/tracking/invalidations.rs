//! A tracked client's own invalidation pushes on their way to its writer (RESP3 `CLIENT TRACKING`
//! without `REDIRECT`): the pushes its pinned connection reads between replies, each held until
//! every reply the upstream sent before it has been written, then written before the next reply.
//!
//! # Invariants
//! - A push is never written before a reply that the upstream sent before it. The pinned
//!   connection's reader counts the jobs it hands over ([`Invalidations::delivered`]); a push
//!   read after `n` of them (and after part of the next one: `n + 1`) waits until the writer has
//!   written `n` (`n + 1`) of this connection's jobs ([`Invalidations::wrote_job`], and
//!   [`Invalidations::consumed`] for the few jobs the session's reader takes itself: HELLO,
//!   SELECT, AUTH, a transaction's queueing). Otherwise a client could cache a value it read
//!   before the change after the invalidation of that change (stale for good).
//! - A push that has waited its turn is written before the reply of any job sent after it was
//!   read: the writer takes ready pushes before each reply and while it waits for one. So a
//!   client that waits for each reply gets an invalidation before the reply of any later read.
//! - Memory is bounded: past `limit` bytes the queued pushes are replaced by one `invalidate`
//!   with a null (flush everything), which is always correct, never by nothing.
//!
//! It never parses what it queues: frames come encoded for the client (see [`super::tracking`]).
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Waker};

/// `>2 invalidate _`: forget every key (RESP3).
pub(crate) const FLUSH_ALL: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

pub(crate) struct Invalidations {
    inner: Mutex<Inner>,
    /// Something is queued: read without the lock before every reply.
    queued: AtomicBool,
    delivered: AtomicU64,
    written: AtomicU64,
    limit: usize,
}

#[derive(Default)]
struct Inner {
    /// Each push with the number of jobs that must be written before it; non-decreasing.
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
    writer: Option<Waker>,
}

impl Invalidations {
    pub fn new(limit: usize) -> Self {
        Invalidations {
            inner: Mutex::new(Inner::default()),
            queued: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new tracking connection: counting starts again. Called with nothing in flight and
    /// every earlier reply written (after a barrier), so whatever is queued may go at once.
    pub fn restart(&self) {
        let mut inner = self.lock();
        self.delivered.store(0, Ordering::Release);
        self.written.store(0, Ordering::Release);
        for f in inner.frames.iter_mut() {
            f.0 = 0;
        }
    }

    /// The pinned reader hands over one more job's replies.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::AcqRel);
    }

    /// The writer wrote one more job's replies.
    pub fn wrote_job(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
    }

    /// The session's reader took one job's reply itself (it answers the client otherwise).
    pub fn consumed(&self) {
        self.wrote_job()
    }

    /// Queue `frame`, read after the jobs delivered so far (and part of the next, `mid_job`).
    pub fn push(&self, frame: Bytes, mid_job: bool) {
        let after = self.delivered.load(Ordering::Acquire) + mid_job as u64;
        let mut inner = self.lock();
        if inner.bytes + frame.len() > self.limit {
            // Over the bound: one flush replaces them all (and comes after all of them).
            inner.frames.clear();
            inner.bytes = FLUSH_ALL.len();
            inner
                .frames
                .push_back((after, Bytes::from_static(FLUSH_ALL)));
            crate::metrics::tracking_overflow();
        } else {
            let after = inner.frames.back().map_or(after, |b| b.0.max(after));
            inner.bytes += frame.len();
            inner.frames.push_back((after, frame));
        }
        self.queued.store(true, Ordering::Release);
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
    }

    /// Move the pushes whose turn has come to the end of `out` (between whole replies only).
    pub fn drain_into(&self, out: &mut BytesMut) {
        if !self.queued.load(Ordering::Acquire) {
            return;
        }
        let written = self.written.load(Ordering::Acquire);
        let mut inner = self.lock();
        while let Some((after, _)) = inner.frames.front() {
            if *after > written {
                break;
            }
            let (_, f) = inner.frames.pop_front().expect("front exists");
            inner.bytes -= f.len();
            out.extend_from_slice(&f);
        }
        if inner.frames.is_empty() {
            inner.frames = VecDeque::new();
            self.queued.store(false, Ordering::Release);
        }
    }

    /// Completes once a push's turn has come.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            let written = self.written.load(Ordering::Acquire);
            let mut inner = self.lock();
            if inner.frames.front().is_some_and(|f| f.0 <= written) {
                return Poll::Ready(());
            }
            inner.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(i: &Invalidations) -> Vec<u8> {
        let mut out = BytesMut::new();
        i.drain_into(&mut out);
        out.to_vec()
    }

    #[test]
    fn a_push_waits_for_the_replies_before_it() {
        let i = Invalidations::new(1 << 20);
        i.delivered();
        i.push(Bytes::from_static(b"A"), false);
        assert!(drained(&i).is_empty(), "job 1 is not written yet");
        i.wrote_job();
        assert_eq!(drained(&i), b"A");
        // Read in the middle of job 2: after all of it.
        i.push(Bytes::from_static(b"B"), true);
        assert!(drained(&i).is_empty());
        i.delivered();
        i.wrote_job();
        assert_eq!(drained(&i), b"B");
    }

    #[test]
    fn later_pushes_never_pass_earlier_ones() {
        let i = Invalidations::new(1 << 20);
        i.push(Bytes::from_static(b"A"), true);
        i.push(Bytes::from_static(b"B"), false);
        assert!(drained(&i).is_empty());
        i.delivered();
        i.wrote_job();
        assert_eq!(drained(&i), b"AB");
    }

    #[test]
    fn over_the_bound_one_flush_replaces_them() {
        let i = Invalidations::new(6);
        i.push(Bytes::from_static(b"0123"), false);
        i.push(Bytes::from_static(b"4567"), false);
        assert_eq!(drained(&i), FLUSH_ALL);
    }

    #[test]
    fn restart_releases_what_is_queued() {
        let i = Invalidations::new(1 << 20);
        i.delivered();
        i.delivered();
        i.push(Bytes::from_static(b"A"), false);
        i.restart();
        assert_eq!(drained(&i), b"A");
    }
}

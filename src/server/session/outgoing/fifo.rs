//! The bounded FIFO between a session's outgoing side and its writer: replies owed, in request
//! order. Only [`Outgoing`](super::Outgoing) pushes (`push` is private to it); the writer pops.
//!
//! Both halves run in one task, so this needs no channel machinery: a mutex that is never contended
//! across threads, the oldest item held inline, a `VecDeque` behind it that allocates only once a
//! second item is queued (and is released as soon as it empties), and one waker per side. An idle
//! client costs a few dozen bytes here instead of a channel's pre-allocated block; an unpipelined
//! client, whose queue rarely holds two items, allocates nothing per request.
//!
//! # Invariants
//! - A push wakes a writer waiting for an item, but while [`Fifo::producing`] is set: whoever
//!   sets it polls the writer after the pusher in the same pass (the session's join,
//!   `session::halves`, sets it around the reader only).
//! - A reader parked for room always wakes: either the writer takes an item, or the writer has
//!   given up on the client ([`Fifo::abandon`]), after which pushes never wait. Without the
//!   second, a client that pipelined more than the capacity and went away left its reader
//!   parked forever and the session (its socket, memory and `max_clients` slot) leaked.
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};

pub(crate) struct Fifo<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    /// The pusher is being polled, and the writer will be polled next in the same pass.
    producing: AtomicBool,
}

struct Inner<T> {
    /// Items with their weight (how many requests each stands for): the oldest inline, the rest
    /// in `queue` (empty whenever `head` is).
    head: Option<(T, usize)>,
    queue: VecDeque<(T, usize)>,
    weight: usize,
    /// The sender is gone: once the queue drains, the receiver sees the end.
    closed: bool,
    /// The receiver no longer writes to the client (it went away): pushes stop waiting, and the
    /// sender should stop reading.
    abandoned: bool,
    /// Waiting for room (the reader).
    push_waker: Option<Waker>,
    /// Waiting for an item (the writer).
    pop_waker: Option<Waker>,
}

impl<T> Fifo<T> {
    pub(in crate::server::session) fn new(capacity: usize) -> Self {
        Fifo {
            inner: Mutex::new(Inner {
                head: None,
                queue: VecDeque::new(),
                weight: 0,
                closed: false,
                abandoned: false,
                push_waker: None,
                pop_waker: None,
            }),
            capacity,
            producing: AtomicBool::new(false),
        }
    }

    /// Set around a poll of the pusher that the popper's poll follows in the same pass: pushes
    /// meanwhile need not wake the popper.
    pub(in crate::server::session) fn producing(&self, on: bool) {
        self.producing.store(on, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an item standing for `weight` requests, waiting while that would go over capacity
    /// (an item heavier than the capacity goes alone into an empty queue). Once abandoned, it
    /// never waits: the receiver drains whatever comes until the sender stops.
    // Not an `async fn`: its future would hold the item twice (argument and local), and it is
    // nested in every session's future at its largest.
    pub(super) fn push(
        &self,
        item: T,
        weight: usize,
    ) -> impl std::future::Future<Output = ()> + '_ {
        let mut item = Some(item);
        poll_fn(move |cx| {
            let mut inner = self.lock();
            if self.full(&inner, weight) {
                inner.push_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            self.queue(&mut inner, item.take().expect("pushed once"), weight);
            Poll::Ready(())
        })
    }

    /// Queue an item at once if there is room (as [`Fifo::push`] would without waiting), under
    /// one lock; otherwise hand it back.
    pub(super) fn try_push(&self, item: T, weight: usize) -> Option<T> {
        let mut inner = self.lock();
        if self.full(&inner, weight) {
            return Some(item);
        }
        self.queue(&mut inner, item, weight);
        None
    }

    fn full(&self, inner: &Inner<T>, weight: usize) -> bool {
        !inner.abandoned && inner.weight > 0 && inner.weight + weight > self.capacity
    }

    fn queue(&self, inner: &mut Inner<T>, item: T, weight: usize) {
        inner.weight += weight;
        let entry = (item, weight);
        if inner.head.is_none() {
            inner.head = Some(entry);
        } else {
            inner.queue.push_back(entry);
        }
        // While the session's join polls the reader (`producing`), it polls the writer right
        // after, which then sees this item in the same pass: waking it would only schedule the
        // whole session once more (callgrind: a poll of both halves, about 1,000 instructions
        // per unpipelined request).
        if !self.producing.load(Ordering::Relaxed)
            && let Some(w) = inner.pop_waker.take()
        {
            w.wake();
        }
    }

    /// Whether a push of `weight` would have to wait for room now.
    #[cfg(test)]
    fn full_for(&self, weight: usize) -> bool {
        self.full(&self.lock(), weight)
    }

    /// The receiver has stopped delivering (its client went away): wake a sender waiting for
    /// room, and let no push wait again. The receiver still pops what comes, to settle it.
    pub(in crate::server::session) fn abandon(&self) {
        let mut inner = self.lock();
        inner.abandoned = true;
        if let Some(w) = inner.push_waker.take() {
            w.wake();
        }
    }

    /// Whether the receiver has given up on the client: the sender should stop reading.
    pub(in crate::server::session) fn abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// No more pushes: the receiver gets what is queued, then `None`.
    pub(in crate::server::session) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        if let Some(w) = inner.pop_waker.take() {
            w.wake();
        }
    }

    /// The next item, waiting for one; `None` once closed and drained.
    pub(in crate::server::session) async fn pop(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut inner = self.lock();
            match self.take(&mut inner) {
                Some(item) => Poll::Ready(Some(item)),
                None if inner.closed => Poll::Ready(None),
                None => {
                    inner.pop_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next item if one is queued.
    pub(in crate::server::session) fn try_pop(&self) -> Option<T> {
        let mut inner = self.lock();
        self.take(&mut inner)
    }

    fn take(&self, inner: &mut Inner<T>) -> Option<T> {
        let (item, weight) = inner.head.take()?;
        inner.head = inner.queue.pop_front();
        inner.weight -= weight;
        if let Some(w) = inner.push_waker.take() {
            w.wake();
        }
        if inner.head.is_none() && inner.queue.capacity() > 0 {
            // An idle session keeps no queue memory (the queue is used only by bursts).
            inner.queue = VecDeque::new();
        }
        Some(item)
    }

    pub(in crate::server::session) fn is_empty(&self) -> bool {
        self.lock().head.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn order_bound_and_close() {
        let fifo = Arc::new(Fifo::new(2));
        let producer = {
            let fifo = fifo.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    fifo.push(i, 1 + i % 2).await;
                }
                fifo.close();
            })
        };
        let mut got = Vec::new();
        while let Some(i) = fifo.pop().await {
            assert!(fifo.lock().weight <= 2, "bound exceeded");
            got.push(i);
        }
        producer.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(fifo.try_pop().is_none());
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_push_wakes_the_writer_unless_it_is_polled_next() {
        use std::future::Future;
        let fifo = Fifo::new(8);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || count.0.load(std::sync::atomic::Ordering::Relaxed);
        let mut pop = Box::pin(fifo.pop());
        assert!(pop.as_mut().poll(&mut cx).is_pending());
        // Pushed while producing: not woken (it is polled next), and it gets the item.
        fifo.producing(true);
        assert!(Box::pin(fifo.push(1, 1)).as_mut().poll(&mut cx).is_ready());
        fifo.producing(false);
        assert_eq!(woken(), 0);
        assert_eq!(pop.as_mut().poll(&mut cx), Poll::Ready(Some(1)));
        // Pushed otherwise: the waiting writer is woken.
        let mut pop = Box::pin(fifo.pop());
        assert!(pop.as_mut().poll(&mut cx).is_pending());
        assert!(Box::pin(fifo.push(2, 1)).as_mut().poll(&mut cx).is_ready());
        assert_eq!(woken(), 1);
        assert_eq!(pop.as_mut().poll(&mut cx), Poll::Ready(Some(2)));
    }

    #[tokio::test]
    async fn abandon_wakes_a_full_sender() {
        let fifo = Arc::new(Fifo::new(2));
        let producer = {
            let fifo = fifo.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    fifo.push(i, 1).await;
                }
                fifo.close();
            })
        };
        // Nobody pops: the producer is parked on the third push until the receiver gives up.
        while !fifo.full_for(1) {
            tokio::task::yield_now().await;
        }
        fifo.abandon();
        producer.await.unwrap();
        assert!(fifo.abandoned() && !fifo.full_for(1));
        let mut n = 0;
        while fifo.pop().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 10, "everything pushed is still there to settle");
    }
}

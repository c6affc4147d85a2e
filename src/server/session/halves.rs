//! The session's two halves, reader and writer, joined in one task: each poll of the task polls
//! the reader only if something woke the reader, then the writer.
//!
//! A plain join polls both halves on every wake-up of the task. An unpipelined request wakes a
//! session twice (the client's bytes, then the upstream's reply), and the reply's wake-up polled
//! the reader too: its whole wait rebuilt (the read's readiness, the drain and eviction checks),
//! only to find nothing to do (callgrind: about 400 instructions per unpipelined request). Here
//! the reader is polled with a waker of its own that records that it fired.
//!
//! # Invariants
//! - The reader is polled on the task's first poll and after every wake-up of the waker it was
//!   last polled with (the flag is set before the task is woken, and cleared before the poll).
//! - The writer is polled on every poll of the task, after the reader: what the reader queued
//!   in the same pass is seen without a wake-up (`Fifo` skips waking the writer for pushes made
//!   while [`Fifo::producing`](super::outgoing::Fifo) is set, which only this join sets).
use super::Pending;
use super::outgoing::Fifo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The reader's waker: it records that it fired, then wakes the session's task.
struct ReaderWake {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for ReaderWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken: the poll that follows sees it.
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            task.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// Both halves of a session; ready once both are done.
    pub(super) struct Halves<'f, R, W> {
        #[pin]
        read: Option<R>,
        #[pin]
        write: Option<W>,
        fifo: &'f Fifo<Pending>,
        // The reader's waker, and its state.
        wake: Option<(Arc<ReaderWake>, Waker)>,
    }
}

impl<'f, R: Future<Output = ()>, W: Future<Output = ()>> Halves<'f, R, W> {
    pub(super) fn new(read: R, write: W, fifo: &'f Fifo<Pending>) -> Self {
        Halves {
            read: Some(read),
            write: Some(write),
            fifo,
            // Made on the first poll: nothing is allocated for it before the session runs.
            wake: None,
        }
    }
}

impl<R: Future<Output = ()>, W: Future<Output = ()>> Future for Halves<'_, R, W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(read) = this.read.as_mut().as_pin_mut() {
            let (wake, waker) = this.wake.get_or_insert_with(|| {
                let wake = Arc::new(ReaderWake {
                    woken: AtomicBool::new(true),
                    task: Mutex::new(None),
                });
                (wake.clone(), Waker::from(wake))
            });
            if wake.woken.swap(false, Ordering::AcqRel) {
                {
                    let mut task = wake.task.lock().unwrap_or_else(|p| p.into_inner());
                    if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                        *task = Some(cx.waker().clone());
                    }
                }
                this.fifo.producing(true);
                let done = read.poll(&mut Context::from_waker(waker)).is_ready();
                this.fifo.producing(false);
                if done {
                    this.read.set(None);
                    // Its waker may still be held (a timer, a registration): it must not keep
                    // the task's waker alive past the reader.
                    if let Some((w, _)) = this.wake.take() {
                        *w.task.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                }
            }
        }
        if let Some(write) = this.write.as_mut().as_pin_mut()
            && write.poll(cx).is_ready()
        {
            this.write.set(None);
        }
        if this.read.is_none() && this.write.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

//! What a client gets back for the commands it sent upstream: the raw bytes of their replies,
//! or the part that arrived and the [`CommandError`] that cut the rest short; and the
//! [`ReplyBudget`] that bounds the replies a client has not read yet. Types only: the
//! connection ([`super::conn`]) fills them in, the session reads them.
use super::error::CommandError;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The outcome of a job: the raw bytes of all its replies, in order, or what arrived before a failure.
pub type Reply = Result<Bytes, Partial>;

/// A job that did not get all its replies: the first `count` arrived (`replies`), the rest failed.
#[derive(Debug, Clone)]
pub struct Partial {
    pub replies: Bytes,
    pub count: usize,
    pub error: CommandError,
}

impl Partial {
    /// The failure alone: for a caller that needs a reply which did not arrive.
    pub fn without_replies(self) -> Partial {
        self.error.into()
    }
}

impl From<CommandError> for Partial {
    fn from(error: CommandError) -> Self {
        Partial {
            replies: Bytes::new(),
            count: 0,
            error,
        }
    }
}

/// The bytes of replies one client is owed: received from the upstream, not yet taken by its
/// writer. A client that lets them pile up past the limit (pipelining reads of large values
/// without reading the replies) gets errors instead of the replies that would go over, and is
/// closed, as Redis closes a client past its output buffer limit.
#[derive(Debug)]
pub struct ReplyBudget {
    owed: AtomicUsize,
    limit: usize,
    exceeded: AtomicBool,
}

impl ReplyBudget {
    pub fn new(limit: usize) -> ReplyBudget {
        ReplyBudget {
            owed: AtomicUsize::new(0),
            limit,
            exceeded: AtomicBool::new(false),
        }
    }

    /// Count `n` more bytes owed; false (and exceeded from now on) if that goes over the limit,
    /// in which case they are not counted.
    pub(crate) fn charge(&self, n: usize) -> bool {
        if self.exceeded.load(Ordering::Relaxed) {
            return false;
        }
        let owed = self.owed.fetch_add(n, Ordering::AcqRel) + n;
        if owed > self.limit {
            self.owed.fetch_sub(n, Ordering::AcqRel);
            self.exceeded.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// The writer took `n` bytes of replies.
    pub fn release(&self, n: usize) {
        self.owed.fetch_sub(n, Ordering::AcqRel);
    }

    /// The client went over its limit: it is to be closed.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

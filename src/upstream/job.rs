//! What the connection tasks ([`super::conn`], [`super::pinned`]) and their read and write loops
//! ([`super::pipe`]) pass between them: a [`Job`] on its way, a [`Slot`] waiting for its replies,
//! the queue of slots in flight, and where a tracking lease's pushes go ([`PushSink`]). A leaf:
//! it imports none of them.
use super::reply::{Reply, ReplyBudget};
use super::scripts::ScriptTag;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Commands on their way: their encoded bytes, how many they are, and where the replies go.
pub(super) struct Job {
    pub(super) bytes: Bytes,
    pub(super) count: usize,
    pub(super) reply: oneshot::Sender<Reply>,
    pub(super) budget: Option<Arc<ReplyBudget>>,
    /// It holds a known-slow command (see [`super::activity`]).
    pub(super) slow: bool,
    /// It holds scripts, registered in the upstream's [`super::scripts::Scripts`].
    pub(super) script: Option<ScriptTag>,
}

/// A job written to the connection and waiting for its replies, or (`reply: None`) a batch's
/// alignment marker.
pub(super) struct Slot {
    pub(super) reply: Option<oneshot::Sender<Reply>>,
    pub(super) count: usize,
    pub(super) permits: u32,
    pub(super) sent: Instant,
    /// When bytes of its replies last arrived (its send until then): the command deadline runs
    /// from here, so a job whose replies are still streaming in (600 SETs of 1 MiB take seconds
    /// to send and answer) is not taken for a stuck one.
    pub(super) progress: Instant,
    pub(super) budget: Option<Arc<ReplyBudget>>,
    pub(super) slow: bool,
    /// Its replies are being dropped as they come (its client is gone or over its limit).
    pub(super) discarded: bool,
    /// Bytes of its replies already charged to `budget` while they arrived (a large job is
    /// counted as it comes, not only once whole: see `pipe::charge_arrived`). Handed over to the
    /// client's writer with the replies; given back if the slot goes any other way.
    pub(super) charged: usize,
    /// The job's [`Job::script`]: marked at the head when this slot becomes the oldest.
    pub(super) script: Option<ScriptTag>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Charged and never handed over (failed, dropped, or its client over a limit): the
        // bytes are gone, so they leave the client's count.
        if self.charged > 0
            && let Some(b) = &self.budget
        {
            b.release(self.charged);
        }
    }
}

pub(super) type InFlight = Mutex<VecDeque<Slot>>;

/// Where a tracking lease's push frames go (see [`PinnedPool::take_tracked`]); called from the
/// connection's reader, in the order the frames came between the replies.
pub trait PushSink: Send + Sync {
    /// One more job's replies are about to be handed over (jobs complete in order).
    fn delivered(&self);
    /// A push frame, read after every reply of the jobs [`PushSink::delivered`] so far and,
    /// when `mid_job`, after some of the next job's replies too.
    fn push(&self, frame: Bytes, mid_job: bool);
    /// The connection failed while leased: pushes it would have carried are lost.
    fn lost(&self);
}

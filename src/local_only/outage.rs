//! What an outage leaves to undo: the writes acknowledged locally, journaled for
//! `local_only.on_recovery = "replay"` ([`Journal`]), or the keys they touched for `"invalidate"`,
//! and the fence that holds forwarding back until the upstream has been brought up to date.
//!
//! # Invariants
//! - Every key a write answered locally may have changed is in the set before that write's reply
//!   exists (recorded before the engine runs it), so no acknowledged local write escapes the
//!   invalidation.
//! - The fence is raised by the recovery transition's hook, which runs before the forwarding state
//!   is visible (and [`crate::upstream::health::Health::state`] is an acquire load), so no command
//!   is forwarded between the switch and the end of the replay or invalidation: a command
//!   forwarded after recovery comes after every write acknowledged during the outage.
//!
//! It never talks to the upstream itself: [`super::recovery`] does.
use super::journal::Journal;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

pub(crate) struct Outage {
    written: Mutex<HashSet<Bytes>>,
    /// `replay`'s journal.
    pub(crate) journal: Journal,
    /// Writes acknowledged locally since the last recovery (what `drop` and `invalidate`
    /// discard, for their log line and counter).
    acknowledged: AtomicU64,
    fenced: AtomicBool,
    lifted: Notify,
}

impl Default for Outage {
    fn default() -> Self {
        Outage::new(usize::MAX)
    }
}

impl Outage {
    /// An outage's state, with a journal of at most `journal_max_bytes`.
    pub(crate) fn new(journal_max_bytes: usize) -> Outage {
        Outage {
            written: Mutex::default(),
            journal: Journal::new(journal_max_bytes),
            acknowledged: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            lifted: Notify::new(),
        }
    }

    /// Count a write acknowledged locally.
    pub(crate) fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    /// The writes acknowledged locally since the last call.
    pub(crate) fn take_acknowledged(&self) -> u64 {
        self.acknowledged.swap(0, Ordering::Relaxed)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<Bytes>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note keys a local write is about to change (upstream keys: a tenant's are prefixed).
    pub(crate) fn record<'k>(&self, keys: impl Iterator<Item = &'k Bytes>) {
        let mut set = self.keys();
        for k in keys {
            if !set.contains(k) {
                set.insert(k.clone());
            }
        }
    }

    /// Take every key recorded so far.
    pub(crate) fn take(&self) -> Vec<Bytes> {
        self.keys().drain().collect()
    }

    /// Put back keys whose invalidation did not complete: the next recovery tries them again.
    pub(crate) fn put_back(&self, keys: impl IntoIterator<Item = Bytes>) {
        self.keys().extend(keys);
    }

    pub(crate) fn raise(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    pub(crate) fn lift(&self) {
        self.fenced.store(false, Ordering::SeqCst);
        self.lifted.notify_waiters();
    }

    /// Whether forwarding must wait (one atomic load: the hot path's cost).
    #[inline]
    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Wait until the fence is lifted (at once when it is not raised).
    pub(crate) async fn wait(&self) {
        while self.fenced() {
            let lifted = self.lifted.notified();
            tokio::pin!(lifted);
            lifted.as_mut().enable();
            if !self.fenced() {
                return;
            }
            lifted.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_each_key_once_and_puts_back() {
        let o = Outage::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        o.record([&a, &b, &a].into_iter());
        let mut keys = o.take();
        keys.sort();
        assert_eq!(keys, vec![a.clone(), b]);
        assert!(o.take().is_empty());
        o.put_back([a.clone()]);
        assert_eq!(o.take(), vec![a]);
    }

    #[tokio::test]
    async fn waiters_pass_once_the_fence_is_lifted() {
        let o = Arc::new(Outage::default());
        o.wait().await; // not raised: at once
        o.raise();
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        o.lift();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("lifted")
            .unwrap();
    }
}

//! Fairness between clients that share an upstream connection: one client's large or unread
//! replies never sit in front of another client's replies for long.
//!
//! On a multiplexed connection replies come back in the order their commands were written, so
//! every byte a client asked for is read before any later reply on that connection, whoever it
//! is for. Two rules keep that from becoming one client's problem for everyone:
//!
//! - **Heavy clients travel apart.** A client whose latest job put
//!   [`HEAVY_JOB`](crate::upstream::reply::HEAVY_JOB) bytes or more on its connection, or whose
//!   replies are not known yet (its first job), sends its next group on the bulk lane
//!   ([`Lane::Bulk`]), a connection of its own kind: the server interleaves that connection's
//!   bulk with the shared connections' small replies, so a client of small replies waits for
//!   its own reply, not behind 10 MB of someone else's. The connection's reader weighs each job
//!   ([`ReplyBudget::is_heavy`]); the choice is made at the start of a group only, and a move
//!   between lanes keeps the client's order as any lane change does (see [`Pin`](crate::server::session::pin::Pin)).
//!   There a heavy client has one group of at most [`BULK_GROUP`] commands in flight at a time,
//!   and the lane at most [`BULK_INFLIGHT`](crate::upstream::lanes::BULK_INFLIGHT): what the
//!   server copies out for the bulk lane in one go stays small enough to pass others between.
//! - **A client that does not take its replies stops being forwarded.** Past
//!   [`gate`] bytes of replies received for it and not yet written to it, its next group waits
//!   before it sends another group, and the upstream carries no more bulk for it until it reads.
//!   It is still read meanwhile (see `park`): what it sends waits in respite, counted against
//!   its limits, so a client that writes its whole pipeline before reading completes when it
//!   fits, and is closed when it does not. (Redis keeps executing such a client's commands until
//!   its output buffer limit closes it; respite holds them instead.)
//!
//! Replies that arrive for a client that is gone or over its limit are dropped by the
//! connection's reader as they come (see `upstream::pipe`), never held whole.
//!
//! This file decides when a group waits ([`Outgoing::wait_for_drain`]); which lane it takes is
//! the [`Pin`](crate::server::session::pin::Pin)'s. It never sends or writes itself.
use super::Outgoing;
use crate::server::session::Pending;
use crate::upstream::ReplyBudget;
use crate::upstream::lanes::Lane;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The most bytes of replies a client may be owed (received, not yet written to it) before its
/// next group waits: a quarter of `limits.max_reply_bytes`, at most 1 MiB. Enough for a client
/// that reads to keep a deep pipeline of large values going (its socket takes a few MB at a
/// time on loopback), little enough that a thousand clients that do not read hold 1 GiB at
/// most, and `limits.max_client_memory` closes the largest before that.
pub(crate) fn gate(max_reply_bytes: usize) -> usize {
    (max_reply_bytes / 4).min(1 << 20)
}

impl Outgoing<'_> {
    /// Before a group goes upstream: a heavy client's waits until every earlier reply of its has
    /// been written to it (one group in flight at a time); any client's waits while it is owed
    /// more than [`gate`] bytes (until its writer has written them). Either ends early if the
    /// client is gone, closed for its limits, or killed.
    pub(super) async fn wait_for_drain(&mut self) {
        if self.pin.lane() == Lane::Bulk && self.pin.held().is_none() && !self.fifo.is_empty() {
            let (tx, rx) = oneshot::channel();
            // Not `barrier`: that would send the group this wait is for.
            self.enqueue(Pending::Barrier(tx), 1).await;
            let kill = self.kill.clone();
            self.cache_now = None;
            // The client is read meanwhile: it may be writing its whole pipeline before it
            // reads the replies this waits for (see `park`).
            self.park(async {
                tokio::select! {
                    _ = rx => {}
                    () = kill.cancelled() => {}
                }
            })
            .await;
        }
        let Some(b) = &self.budget else { return };
        let owed = b.owed();
        if owed == 0 {
            return;
        }
        let gate = self.gate;
        if owed <= gate {
            return;
        }
        let b: Arc<ReplyBudget> = b.clone();
        let kill = self.kill.clone();
        let fifo = self.fifo;
        // The batch's clock reading will be old by the time this returns.
        self.cache_now = None;
        self.park(async {
            while b.owed() > gate && !b.exceeded() && !fifo.abandoned() && !kill.is_cancelled() {
                tokio::select! {
                    () = b.drained(gate) => {}
                    () = kill.cancelled() => {}
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_is_a_quarter_of_the_limit_at_most_one_mib() {
        assert_eq!(gate(256 * 1024), 64 * 1024);
        assert_eq!(gate(32 << 20), 1 << 20);
    }
}

//! The session's side of [`lanes`](crate::upstream::lanes): before a forwarded command joins a
//! group, pick the connection kind it travels on, and keep the client's own order across them.
//! It never sends anything itself; `forward` does, on the lane chosen here.
//!
//! # Invariants
//! - A client's commands run on the upstream in the order it sent them, as on one connection:
//!   when a client moves from one lane to another, everything it sent before is answered first
//!   ([`Reader::barrier`]). Moves are rare (a script among fast commands), so the wait is too.
//! - An out-of-band command (SCRIPT KILL, FUNCTION KILL, SHUTDOWN) waits for nothing: it is sent
//!   alone, at once, on a connection of its own, so it reaches a server busy with a command the
//!   client (or anyone) sent before it. Its reply still takes its place in the client's FIFO.
use super::Reader;
use crate::command::CommandSpec;
use crate::upstream::lanes::{self, Lane};

impl Reader<'_> {
    /// Choose the lane for `spec`, about to be forwarded. Sets `self.oob` for a command that
    /// goes out of band; the caller sends its group as soon as the command has joined it.
    pub(super) async fn enter_lane(&mut self, spec: &'static CommandSpec) {
        // Whether anyone answers instead of the upstream does not depend on the arguments (they
        // only choose between the engine and a refusal).
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &[]).is_some() {
            return;
        }
        if lanes::out_of_band(spec) {
            self.send_group().await;
            self.oob = true;
            return;
        }
        let mut lane = lanes::lane(spec);
        if lane == Lane::Shared {
            // Heavy clients apart (see `fairness`).
            lane = self.size_lane();
        }
        if lane != self.lane {
            self.send_group().await;
            self.barrier().await;
            self.lane = lane;
        }
    }

    /// Send an out-of-band command's group now (it is alone in it) and go back to the lanes.
    pub(super) async fn leave_out_of_band(&mut self) {
        if self.oob {
            self.send_group().await;
            self.oob = false;
        }
    }

    /// The lane the client's group goes on now.
    pub(super) fn lane(&self) -> Lane {
        self.lane
    }
}

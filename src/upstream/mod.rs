//! Connections to the upstream (Redis, Valkey, Dragonfly): pools of multiplexed, auto-pipelined
//! connections, one pool per client protocol, and the upstream's health.
//!
//! - [`pool`]: the [`Upstream`], its two pools, and which connection a client uses.
//! - [`conn`]: one connection: the [`Conn`] handle, the task that writes batches, pairs replies
//!   with their commands in FIFO order and reconnects; its `# Invariants` are the pairing rules.
//! - [`handshake`]: connect, HELLO and SELECT, for every connection respite opens (pools, probe,
//!   near-cache tracking). [`marker`]: the per-batch marker that proves replies still pair with
//!   their commands. [`backoff`]: the reconnect delays and the fail-fast wait in between.
//! - [`reply`]: what a client gets back ([`Reply`], [`Partial`], [`ReplyBudget`]); [`error`]:
//!   why it did not ([`NoReply`]), and why a connection failed ([`UpstreamError`]).
//! - [`command_fetch`]: the upstream's own command table, read once at start.
//! - [`lanes`]: which connection a command goes on (shared, slow, or one of its own for SCRIPT
//!   KILL and the like), so a slow command never holds up fast ones.
//! - [`pinned`]: connections of one client's own (WATCH, blocking commands, another database),
//!   leased from a bounded pool and taken back only after a verified reset.
//! - [`cluster`]: a Redis or Valkey Cluster behind the same pools: each pool connection a
//!   router to the node of each command's slot, every node an upstream of its own.
//! - [`scripts`]: which of the scripts respite sent may be the one running, and whose.
//! - [`health`]: whether the upstream answers, judged from the connections' events and the
//!   [`probe`]'s PINGs; [`activity`]: what tells a busy upstream from a dead one.
//!
//! Nothing here interprets a forwarded reply beyond finding where it ends: what a reply means is
//! the session's business.
pub mod activity;
pub mod backoff;
pub mod blockable;
pub mod cluster;
pub mod command_fetch;
pub mod conn;
pub mod error;
pub mod handshake;
pub mod health;
mod job;
pub mod lanes;
mod marker;
pub mod own;
pub mod pinned;
mod pipe;
pub mod pool;
pub mod probe;
pub mod reply;
pub mod scripts;

pub use conn::Conn;
pub use error::{NoReply, UpstreamError};
pub use handshake::ServerInfo;
pub use job::PushSink;
pub use pinned::{Monitor, PinError, Pinned, PinnedPool};
pub use pool::Upstream;
pub use reply::{ClientMemory, Partial, Reply, ReplyBudget};

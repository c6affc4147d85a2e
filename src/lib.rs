//! respite: a Redis-protocol (RESP2/RESP3) caching proxy.
//!
//! # Layout
//! The data path, in the order a request travels it:
//! - [`server`] accepts TCP and unix-socket clients and runs one session per client: it reads bytes,
//!   frames them into requests ([`protocol::framer`]), answers what respite owns itself (HELLO, PING,
//!   CLIENT SETNAME, …) and sends the rest on, writing replies back strictly in request order.
//! - [`command`] is the table every decision is made from: arity, flags, key positions and the
//!   [`command::Route`] of each command. Commands not in it are refused, never forwarded blind.
//! - [`upstream`] owns the connections to Redis/Valkey/Dragonfly: a pool of multiplexed connections per
//!   protocol, each with one writer that coalesces many clients' commands into one write, a FIFO of
//!   reply slots, and one reader that finds reply boundaries ([`protocol::scanner`]) and hands raw bytes
//!   back. Reconnects with backoff; never resends a write whose fate is unknown. [`upstream::health`]
//!   judges whether the upstream answers; while it is down, [`local_only`] has the in-memory
//!   [`engine`] serve instead (local-only mode), as it always does with no upstream (standalone
//!   mode), and settles what it held once the upstream is back.
//! - `pubsub` fans Pub/Sub out: one upstream subscription per channel per respite, shared by every
//!   local subscriber, each behind a bounded outbox its session's writer drains between replies.
//! - [`admin`] serves `/metrics`, `/healthz` and `/readyz` over HTTP; [`metrics`] names what is counted.
//! - [`config`] parses proxy.toml, environment overrides and flags into a validated [`config::Config`],
//!   one file per section. It is a leaf (it reads only the [`command`] table and [`protocol`]'s limits):
//!   each part imports its own section's typed config from it, never the reverse.
//! - [`tls`] builds rustls material from the configured PEM files for both sides; [`reload`]
//!   re-reads the configuration on SIGHUP or `POST /reload` and swaps what may change live.
//!
//! [`run`] ties them together; `main.rs` only parses the command line and calls it.

pub mod admin;
pub mod cache;
mod clock;
pub mod command;
pub mod config;
pub mod engine;
pub mod local_only;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod protocol;
mod pubsub;
pub mod reload;
pub mod server;
pub mod tls;
pub mod upstream;

pub use server::run;

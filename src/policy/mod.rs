//! Tenant policy: who a client is, which commands it may run, and how each command is confined to
//! the tenant's key namespace, TTL rules and value limit before it reaches the upstream.
//!
//! Owns: the runtime tenants built from the validated `[[tenant]]` section ([`config`]; allow rules
//! are compiled by configuration, [`allow`]), authentication and the failure slowdown
//! ([`Tenants`], [`FailureTracker`]), the per-command decision ([`Tenant::check`] → [`Plan`]),
//! reply rewriting ([`rewrite_reply`]), commands answered inside a namespace ([`NamespaceRun`]),
//! Pub/Sub naming ([`pubsub`]) and per-tenant metric names ([`metrics`]).
//!
//! Must never: touch sockets, clocks or the upstream (callers pass `now` and feed replies in);
//! forward a prefixed tenant's raw bytes (commands are rebuilt from parsed arguments); or let a
//! command through that it does not understand — a prefixed tenant's keyless command is refused
//! unless it is known to mean the same on a shared server.
//!
//! # How the session uses it
//! 1. Before AUTH, use [`Tenants::default_tenant`]; with none, reply [`NOAUTH`] to everything but
//!    AUTH/HELLO/QUIT/RESET. On AUTH, [`Tenants::authenticate`] (`default` as the username for
//!    password-only AUTH); on failure call [`FailureTracker::failed`] with the address and that
//!    username and sleep what it returns before replying with the error text; on success,
//!    [`FailureTracker::succeeded`] with the same pair.
//! 2. For each request the session would forward, call [`Tenant::check`] with the Unix time in ms:
//!    - `Err(e)`: reply `-{e}` (the text carries its code: `NOPERM …`, `ERR …`).
//!    - `Ok(Plan::Forward(f))`: send `f.command`, then each of `f.follow_ups` right after it on the
//!      same upstream connection (so they run after it); discard the follow-ups' replies. Pass
//!      `f.command`'s reply through [`rewrite_reply`] with `f.reply` unless it is
//!      [`ReplyRewrite::None`].
//!    - `Ok(Plan::Namespace(op))`: [`NamespaceRun::start`], send what it yields, feed each reply to
//!      [`NamespaceRun::step`] until it yields the client's reply. Run it on one connection so no
//!      other command of the same client overtakes it.
//! 3. For commands the session answers itself (PING, CLIENT SETNAME …), [`Tenant::permits`] gives
//!    the ACL decision if wanted.
//!
//! # What confinement covers (docs/tenants.md material)
//! - Keys: every key argument the command table finds gets the prefix — destinations, keys after
//!   numkeys, after STREAMS, STORE/STOREDIST. [`crate::command::keys`] is the one answer, found as
//!   the server's parser finds it (the last STORE of GEORADIUS and SORT, the STREAMS that is not an
//!   option's value); prefixing, TTL follow-ups, the value limit and the session's near-cache
//!   invalidation all read it. KEYS, SCAN MATCH, PSUBSCRIBE and PUBSUB CHANNELS patterns get
//!   the prefix with its glob characters escaped, so they can only match the tenant's names.
//!   Replies naming keys (KEYS, SCAN, RANDOMKEY, the blocking and *MPOP pops, XREAD/XREADGROUP,
//!   Pub/Sub) and key names quoted in error texts lose the prefix. SCAN cursors are sealed
//!   (`policy::cursor`) so they do not show the shared keyspace's size.
//! - Refused for a prefixed tenant: every keyless command not known to be namespace-neutral
//!   (CONFIG, DEBUG, MODULE, MONITOR, INFO, LASTSAVE, SAVE, SHUTDOWN, CLIENT LIST/KILL,
//!   CLUSTER, SLOWLOG, LATENCY, MEMORY STATS/DOCTOR, ACL, FUNCTION *, SCRIPT FLUSH/KILL, PUBSUB
//!   NUMPAT, …), MOVE and COPY … DB (they reach another database).
//! - Answered in the namespace: DBSIZE, FLUSHDB, FLUSHALL (the namespace is all a tenant has),
//!   RANDOMKEY — by respite's walk of the shared database ([`namespace`], O(all keys)), or, for a
//!   tenant with a database of its own (`tenant.db`), by the upstream there (FLUSHALL sent as
//!   FLUSHDB), in O(the tenant's keys).
//! - INFO is the session's, rendered by [`info`] from the tenant's own view.
//! - Scripts (EVAL, EVALSHA, FCALL and their _RO forms, SCRIPT LOAD/EXISTS, FUNCTION …) are
//!   refused unless the tenant has `scripts = true`. Then the declared KEYS are prefixed, function
//!   libraries and names are the tenant's own ([`functions`]), and nothing else is confined: a
//!   script can `redis.call` any key name it computes, including other tenants' keys, so enable it
//!   only for tenants trusted with the whole server.
//! - Keyspace notifications of the tenant's keys reach its subscribers un-prefixed, as its own
//!   `notify-keyspace-events` admits them ([`keyspace`], applied by `crate::pubsub`).
//! - SORT BY/GET patterns containing `*` are refused unless `sort_patterns = true`. Then they are
//!   prefixed: SORT reads the key named by the pattern with each element substituted at its first
//!   `*`, so a prefixed pattern names only the tenant's keys (a prefix holding `*` or `->` cannot
//!   be combined with it). Patterns without `*` (and `#`) read no keys and are always allowed.
//!
//! # TTL rules
//! See [`ttl`]: per-key-pattern `max_ms`/`default_ms`, caps or refusals for SET EX/PX/EXAT/PXAT,
//! SETEX, PSETEX, GETEX, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, RESTORE; PERSIST and GETEX PERSIST
//! become `PEXPIRE key max` under a cap (refused under `on_excess = "refuse"`); every other write
//! that may create a key gets a `PEXPIRE key default NX` follow-up (needs Redis 7+, Valkey or
//! Dragonfly). Absolute times are compared with respite's clock, so clock skew between respite and
//! the upstream shifts caps on EXAT/PXAT/EXPIREAT/ABSTTL by that skew.
//!
//! # Values
//! With `max_value_bytes`, any non-key argument of a command that stores data (write or denyoom
//! flag, or a script) longer than the limit is refused before anything is sent, and so is a write
//! whose result would be (SETRANGE, SETBIT, BITFIELD, RESTORE); APPEND, INCRBYFLOAT and
//! HINCRBYFLOAT are checked against what is stored in the same step (see `policy::values`).
/// Allow rules are compiled once, when the configuration is validated.
pub use crate::config::allow;
pub mod auth;
mod call;
mod check;
pub mod config;
mod cursor;
mod error;
pub mod functions;
pub mod glob;
pub mod info;
pub mod keyspace;
mod lua_scan;
pub mod metrics;
pub mod namespace;
pub mod pubsub;
pub mod reply_rewrite;
pub mod sha256;
pub mod ttl;
mod ttl_rule;
mod values;

pub use auth::{
    AuthError, FailureTracker, NOAUTH, Tenant, TenantBuilder, Tenants, UNAUTHENTICATED_LIMIT,
    unauthenticated,
};
pub use check::{Forward, Plan};
pub use error::PolicyError;
pub use namespace::{NamespaceKind, NamespaceOp, NamespaceRun, NamespaceStep};
pub use reply_rewrite::{ReplyError, ReplyRewrite, rewrite_push, rewrite_reply};
pub use ttl_rule::{OnExcess, TtlRule};

#[cfg(test)]
mod tests;

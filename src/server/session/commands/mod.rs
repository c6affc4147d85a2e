//! The command families the session answers or handles itself, each in its own file; the
//! stages they use (reading, outgoing, the pin) are the session's (see [`super`]).
pub(super) mod builtin;
pub(super) mod clients;
mod exec_splice;
pub(super) mod monitor;
pub(super) mod multi;
mod pause;
pub(super) mod script_kill;
mod slowlog;
mod stateful;
pub(super) mod subscribe;
pub(super) mod tracking;
mod unblock;
pub(super) mod upstream_acl;

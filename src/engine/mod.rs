//! The local engine: an in-memory keyspace that answers commands itself, byte for byte as Redis
//! 7.0 would, for respite's local-only mode.
//!
//! It owns the data (strings, hashes, sets, sorted sets, lists), lazy and swept expiry, an
//! approximate memory bound with Redis's eviction policies, and scripts. It must never do I/O, read the clock (the caller
//! passes `now_ms`, so tests are deterministic) or know about sessions, tenants or upstreams: the
//! server resolves the command, calls [`Engine::execute`] and writes the bytes it gets back.
//!
//! Memory: sizes are estimates (exact for strings, sampled for containers). The bound is enforced
//! before each `denyoom` command, by evicting keys as the [`Eviction`] policy says (sampled
//! LRU by default) until the arguments fit; a single write may overshoot until the next one.
//! `-OOM` when the arguments alone exceed the bound, or the policy finds nothing it may evict.
//! `max_memory_bytes == 0` means no bound.
//!
//! Deviations from Redis, by design:
//! - Iteration order of HGETALL, HKEYS, HVALS, SMEMBERS, KEYS and SCAN is unspecified (hash
//!   order), as in Redis, but not the same order as Redis's.
//! - SCAN cursors are points in the engine's own hash order (see [`scan`]); HSCAN/SSCAN/ZSCAN
//!   of a container over 128 elements return at least 1/64 of it per call whatever COUNT says.
//! - INCRBYFLOAT/HINCRBYFLOAT emulate `long double` in software; hex-float inputs and values
//!   beyond its exponent range fall back to `f64` (see [`num`]).
//! - Sorted sets behave like Redis's listpack encoding (what Redis uses for small sets) for the
//!   "undefined" case of BYLEX ranges over members with different scores.
use std::collections::BTreeSet;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::command::{AclCategories, CommandSpec, Flags};
use crate::protocol::{Protocol, encode};

mod bitmap;
mod db;
mod evict;
mod hash;
mod hll;
mod keyspace;
mod lcs;
mod list;
pub mod num;
mod random;
pub mod recovery_merge;
mod scan;
mod script;
mod set;
mod sort;
mod stream;
mod stream_data;
mod stream_group;
mod strings;
mod zset;

use db::ENTRY_OVERHEAD;
pub(crate) use db::{Db, Entry, Value};
pub use evict::Eviction;
pub(crate) use zset::ZSet;

pub(crate) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
pub(crate) const NOT_INT: &str = "ERR value is not an integer or out of range";
pub(crate) const SYNTAX: &str = "ERR syntax error";
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// A reply being built, in the client's protocol.
pub(crate) struct Out {
    pub(crate) buf: BytesMut,
    pub(crate) proto: Protocol,
}

impl Out {
    pub(crate) fn ok(&mut self) {
        encode::simple(&mut self.buf, "OK");
    }
    pub(crate) fn simple(&mut self, s: &str) {
        encode::simple(&mut self.buf, s);
    }
    pub(crate) fn err(&mut self, msg: &str) {
        encode::error(&mut self.buf, msg);
    }
    pub(crate) fn int(&mut self, n: i64) {
        encode::integer(&mut self.buf, n);
    }
    pub(crate) fn bulk(&mut self, b: &[u8]) {
        encode::bulk(&mut self.buf, b);
    }
    pub(crate) fn null(&mut self) {
        encode::null(&mut self.buf, self.proto);
    }
    /// Redis's null array: `*-1` in RESP2, `_` in RESP3.
    pub(crate) fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }
    pub(crate) fn array(&mut self, n: usize) {
        encode::array_header(&mut self.buf, n);
    }
    pub(crate) fn map(&mut self, n: usize) {
        encode::map_header(&mut self.buf, self.proto, n);
    }
    /// A set header: `~n` in RESP3, an array in RESP2.
    pub(crate) fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.array(n),
            Protocol::Resp3 => {
                self.buf.extend_from_slice(format!("~{n}\r\n").as_bytes());
            }
        }
    }
    /// Redis's `addReplyDouble`: a `%.17g` bulk string in RESP2, a `,` double in RESP3.
    pub(crate) fn double(&mut self, d: f64) {
        let s = num::fmt_g17(d);
        match self.proto {
            Protocol::Resp2 => self.bulk(s.as_bytes()),
            Protocol::Resp3 => {
                self.buf.extend_from_slice(format!(",{s}\r\n").as_bytes());
            }
        }
    }
    pub(crate) fn bool_int(&mut self, b: bool) {
        self.int(i64::from(b));
    }
}

/// Arguments of one call plus where its reply goes.
pub(crate) struct Call<'a> {
    pub(crate) name: &'static str,
    pub(crate) args: &'a [Bytes],
    pub(crate) out: Out,
}

impl Call<'_> {
    /// `ERR wrong number of arguments for '<name>' command`, for arity rules the table cannot
    /// express (MSET's even count, HSET's pairs).
    pub(crate) fn arity_err(&mut self) {
        let msg = format!("ERR wrong number of arguments for '{}' command", self.name);
        self.out.err(&msg);
    }
}

/// The in-memory engine. One mutex around the whole keyspace: simple, and commands are short.
pub struct Engine {
    db: Mutex<Db>,
    /// Loaded scripts; kept apart from the keyspace so that [`Engine::flush`] leaves them, as
    /// FLUSHALL does in Redis. Locked after `db`, never before it.
    scripts: Mutex<script::Scripts>,
    max_memory: usize,
    eviction: Eviction,
}

impl Engine {
    /// An empty engine holding at most about `max_memory_bytes` (0 means no limit, as Redis's
    /// `maxmemory 0`).
    pub fn new(max_memory_bytes: usize) -> Self {
        Engine::with_eviction(max_memory_bytes, Eviction::default())
    }

    /// An empty engine bounded as [`Engine::new`], making room by `eviction` (Redis's
    /// `maxmemory-policy`).
    pub fn with_eviction(max_memory_bytes: usize, eviction: Eviction) -> Self {
        Engine {
            eviction,
            db: Mutex::new(Db::default()),
            scripts: Mutex::new(script::Scripts::default()),
            max_memory: max_memory_bytes,
        }
    }

    /// Approximate bytes held now.
    pub fn used_memory(&self) -> usize {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        // A panic inside a command leaves the keyspace consistent enough to go on serving.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove every key (local-only mode's data, when the upstream is back).
    pub fn flush(&self) {
        // Swap in an empty keyspace and free the old one after the lock is released: commands
        // wait for an O(1) swap, not for a large keyspace to be freed.
        let old = std::mem::take(&mut *self.lock());
        drop(old);
    }

    /// Take every live key out (the engine is left empty), as commands that recreate each one
    /// upstream without overwriting anything there (see [`recovery_merge`]).
    pub fn take_for_merge(&self, now_ms: u64) -> Vec<recovery_merge::Call> {
        let old = std::mem::take(&mut *self.lock());
        recovery_merge::calls(old.map, now_ms)
    }

    /// Keys held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove every key whose expiry is at or before `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        let mut db = self.lock();
        db.now = now_ms;
        db.sweep();
    }

    /// Run one resolved command (arity already checked by `command::resolve`) and return its
    /// complete encoded reply in `proto`.
    pub fn execute(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        proto: Protocol,
        now_ms: u64,
    ) -> Bytes {
        let mut db = self.lock();
        db.now = now_ms;
        if spec.acl.contains(AclCategories::SCRIPTING) {
            let mut call = Call {
                name: spec.name,
                args,
                out: Out {
                    buf: BytesMut::new(),
                    proto,
                },
            };
            let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
            let mut exec = |db: &mut Db, spec: &'static CommandSpec, args: &[Bytes]| {
                self.run(db, spec, args, script::SCRIPT_PROTO)
            };
            let handled = match spec.name {
                "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => {
                    script::eval(&mut db, &mut scripts, &mut call, &mut exec);
                    true
                }
                _ => script::script_command(&mut scripts, &mut call),
            };
            if handled {
                return call.out.buf.freeze();
            }
        }
        self.run(&mut db, spec, args, proto)
    }

    /// Run one command on the locked keyspace: the memory bound, the handler, the re-accounting.
    fn run(
        &self,
        db: &mut Db,
        spec: &'static CommandSpec,
        args: &[Bytes],
        proto: Protocol,
    ) -> Bytes {
        let mut call = Call {
            name: spec.name,
            args,
            out: Out {
                buf: BytesMut::new(),
                proto,
            },
        };
        let incoming = args.iter().map(|a| a.len()).sum::<usize>() + ENTRY_OVERHEAD;
        if spec.flags.contains(Flags::DENYOOM)
            && !evict::make_room(db, self.eviction, self.max_memory, incoming)
        {
            call.out.err(OOM);
            return call.out.buf.freeze();
        }
        if !dispatch(db, &mut call) {
            let msg = format!(
                "ERR '{}' is not supported by respite's local engine",
                spec.name
            );
            call.out.err(&msg);
        }
        if spec.flags.contains(Flags::WRITE) && args.len() > 1 {
            // Re-account the first key (in-place changes); multi-key writers insert/remove via
            // Db methods, which account for themselves.
            db.account(&args[1]);
        }
        call.out.buf.freeze()
    }
}

/// Route to the handler; false if the command is not implemented here.
fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    strings::dispatch(db, c)
        || keyspace::dispatch(db, c)
        || hash::dispatch(db, c)
        || set::dispatch(db, c)
        || zset::dispatch(db, c)
        || list::dispatch(db, c)
        || scan::dispatch(db, c)
        || bitmap::dispatch(db, c)
        || hll::dispatch(db, c)
        || stream::dispatch(db, c)
        || stream_group::dispatch(db, c)
        || lcs::dispatch(db, c)
        || sort::dispatch(db, c)
}

/// Redis's `getLongLongFromObjectOrReply` on an argument.
pub(crate) fn arg_i64(c: &mut Call, i: usize) -> Option<i64> {
    let v = num::parse_i64(&c.args[i]);
    if v.is_none() {
        c.out.err(NOT_INT);
    }
    v
}

pub(crate) fn eq_ci(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Ordered set of (score, member) used by sorted sets; re-exported for the zset module.
pub(crate) type ScoreIndex = BTreeSet<(zset::Score, Bytes)>;

#[cfg(test)]
mod tests;

/// The `numkeys` argument of LMPOP, ZMPOP and the like: at least 1 and no more keys than the
/// arguments that follow it.
pub(crate) fn numkeys(c: &mut Call, i: usize) -> Option<usize> {
    match num::parse_i64(&c.args[i]) {
        Some(n) if n > 0 => {
            if n as usize > c.args.len() - i - 1 {
                c.out.err(SYNTAX);
                None
            } else {
                Some(n as usize)
            }
        }
        _ => {
            c.out.err("ERR numkeys should be greater than 0");
            None
        }
    }
}

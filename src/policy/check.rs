//! [`Tenant::check`]: from a parsed request to a [`Plan`] — refuse, answer locally, or forward a
//! command rebuilt with the tenant's prefix on every key, its TTL rules applied, and follow-ups.
//!
//! For a prefixed tenant the client's bytes are never forwarded: the command is re-encoded from
//! the arguments respite parsed, so the upstream reads exactly what respite read. Keys are found by
//! the command table ([`crate::command::keys`], a port of Redis's own key finder, which Redis's ACL
//! key permissions also trust); where a command reads more than its key specs say (SORT, scripts,
//! KEYS/SCAN patterns, channels, keyspace-wide commands), it is handled here by name.
use bytes::{BufMut, Bytes, BytesMut};

use super::auth::Tenant;
use super::call::{Call, c_str};
use super::error::PolicyError;
use super::functions;
use super::glob;
use super::namespace::{NamespaceKind, NamespaceOp};
use super::reply_rewrite::ReplyRewrite;
use super::ttl;
use super::values;
use crate::command::{CommandSpec, Keys, keys, sort_options};
use crate::protocol::encode;

/// What the session does with a request, decided by [`Tenant::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Forward(Forward),
    /// Answered by respite within the namespace, through upstream calls it drives itself
    /// (see [`super::NamespaceRun`]).
    Namespace(NamespaceOp),
}

/// A command to send upstream, and what to do around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The command to send, RESP-encoded: the client's raw bytes when nothing changed and the
    /// tenant has no prefix, otherwise rebuilt from the parsed arguments.
    pub command: Bytes,
    /// Commands to send right after `command` on the same upstream connection (so they run
    /// after it): `PEXPIRE key ms NX` for default TTLs, `PEXPIRE key ms LT` for caps. Their replies
    /// are read and discarded; the client sees only `command`'s reply.
    pub follow_ups: Vec<Bytes>,
    /// How to rewrite `command`'s reply before the client sees it ([`super::rewrite_reply`]).
    pub reply: ReplyRewrite,
}

impl Call<'_> {
    fn finish(self, raw: Option<&Bytes>) -> Forward {
        let command = match raw {
            Some(raw) if !self.changed => raw.clone(),
            _ => {
                let mut out = BytesMut::with_capacity(
                    self.args.iter().map(|a| a.len() + 16).sum::<usize>() + 16,
                );
                encode::command(&mut out, &self.args);
                out.freeze()
            }
        };
        Forward {
            command,
            follow_ups: self.follow_ups,
            reply: self.reply,
        }
    }
}

/// Keyless commands that mean the same on a shared server as on a private one, forwarded as they
/// are for a prefixed tenant. Every other keyless command is refused for such a tenant unless it
/// is handled by name below: deny by default, so a command added to the table later is refused
/// until someone decides what it means for a namespace. Connection commands the session answers
/// itself (HELLO, AUTH, SELECT, CLIENT SETNAME, …) are not listed: they must never reach a shared
/// upstream connection, so for a prefixed tenant `check` refuses them if asked.
fn neutral(name: &str) -> bool {
    matches!(
        name,
        "ping"
            | "echo"
            | "time"
            | "command"
            | "command|count"
            | "command|docs"
            | "command|getkeys"
            | "command|getkeysandflags"
            | "command|info"
            | "command|list"
            | "wait"
            | "waitaof"
            | "multi"
            | "exec"
            | "discard"
            | "unwatch"
            | "readonly"
            | "readwrite"
    ) || name.ends_with("|help")
}

/// SCRIPT and FUNCTION subcommands a tenant with `scripts = true` may run (see `confine`).
fn script_admin(name: &str) -> bool {
    matches!(
        name,
        "script|load"
            | "script|exists"
            | "script|kill"
            | "function|load"
            | "function|list"
            | "function|delete"
            | "function|flush"
            | "function|kill"
            | "function|stats"
    )
}

const SERVER_WIDE: &str = "it acts on the whole server, beyond this tenant's keys";
const OTHER_DB: &str = "it moves keys to another database, outside this tenant's namespace";
const SCRIPTS: &str =
    "scripts can name keys respite cannot see; the tenant needs scripts = true (tenant.scripts)";
/// The least COUNT of a prefixed tenant's SCAN in the shared database: COUNT is a hint that
/// Redis may exceed, and at 1,000 slots a call costs the server about what one step of the
/// DBSIZE walk does (~0.3-0.7 ms beside 200,000-1,000,000 keys; docs/tenants.md).
const SHARED_SCAN_COUNT: i64 = 1000;
const FUNCTION_PAYLOAD: &str = "its payload holds every tenant's function libraries; FUNCTION LIST WITHCODE and FUNCTION LOAD copy this tenant's own";
const SORT_PATTERNS: &str = "SORT BY/GET patterns read keys named by the data; the tenant needs sort_patterns = true (tenant.sort_patterns)";

impl Tenant {
    /// True if the tenant's allow rules include this command. [`Tenant::check`] tests it first;
    /// the session may also use it for the commands it answers itself (PING, CLIENT SETNAME…).
    pub fn permits(&self, spec: &CommandSpec) -> bool {
        self.allowed.permits(spec)
    }

    /// The refusal of a command outside this tenant's allow list, in Redis's words.
    pub fn no_perm(&self, spec: &CommandSpec) -> PolicyError {
        PolicyError::NoPerm {
            user: self.user_label().to_string(),
            command: spec.name.to_string(),
        }
    }

    /// Decide what to do with one request. `spec` comes from [`crate::command::resolve`] for
    /// `args`; `raw` is the request's RESP bytes if it came as an array (forwarded as they are
    /// when nothing changes and the tenant has no prefix); `now_ms` is the Unix time in
    /// milliseconds, used for EXAT/PXAT/EXPIREAT/RESTORE ABSTTL caps.
    pub fn check(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        raw: Option<&Bytes>,
        now_ms: i64,
    ) -> Result<Plan, PolicyError> {
        if !self.permits(spec) {
            return Err(self.no_perm(spec));
        }
        let found = keys(spec, args);
        values::check(self, spec, args, found.as_ref().ok())?;
        let mut call = Call::new(args);
        let keys = match found {
            Ok(keys) => keys,
            // A prefixed tenant cannot forward what it cannot confine; without a prefix the
            // upstream gives its own error for the malformed call.
            Err(e) if self.has_prefix() => return Err(e.into()),
            Err(_) => return Ok(Plan::Forward(call.finish(raw))),
        };
        if self.has_prefix()
            && let Some(op) = self.confine(spec, &mut call, &keys)?
        {
            return Ok(Plan::Namespace(op));
        }
        ttl::apply(self, spec, &mut call, &keys, now_ms)?;
        values::guard(self, spec, &mut call);
        Ok(Plan::Forward(call.finish(raw)))
    }

    pub(super) fn prefixed(&self, key: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.prefix.len() + key.len());
        out.put_slice(&self.prefix);
        out.put_slice(key);
        out.freeze()
    }

    fn refuse(spec: &CommandSpec, reason: &'static str) -> PolicyError {
        PolicyError::OutsideNamespace {
            command: spec.name.to_string(),
            reason,
        }
    }

    /// Confine a prefixed tenant's call to its namespace: prefix keys, channels and patterns,
    /// refuse what cannot be confined, or turn it into a [`NamespaceOp`].
    fn confine(
        &self,
        spec: &CommandSpec,
        call: &mut Call,
        keys: &Keys,
    ) -> Result<Option<NamespaceOp>, PolicyError> {
        // Even unchanged, the command is re-encoded: raw bytes are never forwarded for a prefixed
        // tenant, so an inline request or odd framing cannot reach the upstream as sent.
        call.changed = true;
        let args = call.input;
        match spec.name {
            "keys" => {
                call.set(1, glob::confine(&self.prefix, &args[1]));
                call.reply = ReplyRewrite::Keys;
                return Ok(None);
            }
            "scan" => {
                self.scan(call)?;
                return Ok(None);
            }
            // In a database of its own, the upstream's answers are the namespace's: one round
            // trip each. FLUSHALL becomes FLUSHDB there (never the upstream's FLUSHALL).
            "dbsize" if self.db.is_some() => return Ok(None),
            "randomkey" if self.db.is_some() => {
                call.reply = ReplyRewrite::Key;
                return Ok(None);
            }
            "flushdb" | "flushall" if self.db.is_some() => {
                flush_mode(args)?;
                call.args[0] = Bytes::from_static(b"FLUSHDB");
                return Ok(None);
            }
            "dbsize" => return Ok(Some(self.namespace(NamespaceKind::DbSize))),
            "randomkey" => return Ok(Some(self.namespace(NamespaceKind::RandomKey))),
            // FLUSHALL means every database of a private server; a tenant has one namespace, so
            // it empties that, as FLUSHDB does (never the upstream's FLUSHALL).
            "flushdb" | "flushall" => {
                // [ASYNC|SYNC]: either way respite UNLINKs, which frees in the background.
                flush_mode(args)?;
                return Ok(Some(self.namespace(NamespaceKind::FlushDb)));
            }
            "move" => return Err(Self::refuse(spec, OTHER_DB)),
            "copy" => {
                // COPY src dst [DB n] [REPLACE], parsed as copyCommand does.
                let mut j = 3;
                while j < args.len() {
                    let opt = c_str(&args[j]);
                    if opt.eq_ignore_ascii_case(b"replace") {
                    } else if opt.eq_ignore_ascii_case(b"db") && args.len() > j + 1 {
                        return Err(Self::refuse(spec, OTHER_DB));
                    } else {
                        return Err(PolicyError::syntax());
                    }
                    j += 1;
                }
            }
            // The sorted key and STORE destination are keys (below); the patterns are not.
            "sort" | "sort_ro" => self.sort_patterns(spec, call)?,
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
                if !self.scripts =>
            {
                return Err(Self::refuse(spec, SCRIPTS));
            }
            // Scripts and function libraries live server-wide, not per namespace: a tenant
            // trusted with scripts may load, list and kill them (a runaway script must be
            // killable), and FCALL's declared keys are prefixed below like EVAL's.
            name if script_admin(name) && !self.scripts => {
                return Err(Self::refuse(spec, SCRIPTS));
            }
            // Function libraries and function names in the tenant's own namespace
            // (`policy::functions`); FCALL's declared keys are prefixed below like EVAL's.
            "fcall" | "fcall_ro" if args.len() > 1 => {
                call.set(1, self.function_name(&args[1]));
            }
            "function|load" if args.len() > 2 => {
                let last = args.len() - 1;
                let ns = functions::namespace(&self.prefix);
                let code =
                    functions::load_code(&ns, &args[last]).map_err(PolicyError::FunctionCode)?;
                call.set(last, code);
                call.reply = ReplyRewrite::Functions;
                return Ok(None);
            }
            "function|delete" if args.len() == 3 => {
                call.set(2, self.function_name(&args[2]));
                call.reply = ReplyRewrite::Functions;
                return Ok(None);
            }
            "function|list" => {
                self.function_list(call)?;
                return Ok(None);
            }
            "function|flush" => {
                // Redis's own words for FUNCTION FLUSH's bad arguments.
                if args.len() > 3 {
                    return Err(PolicyError::Syntax(
                        "unknown subcommand or wrong number of arguments for 'flush'. Try FUNCTION HELP.".into(),
                    ));
                }
                if flush_mode(&args[1..]).is_err() {
                    return Err(PolicyError::Syntax(
                        "FUNCTION FLUSH only supports SYNC|ASYNC option".into(),
                    ));
                }
                let mut pattern = BytesMut::from(&functions::namespace(&self.prefix)[..]);
                pattern.put_u8(b'*');
                return Ok(Some(NamespaceOp {
                    kind: NamespaceKind::FunctionFlush,
                    prefix: self.prefix.clone(),
                    pattern: pattern.freeze(),
                }));
            }
            // Server parameters the operator lets this tenant set (`tenant.server_config`),
            // forwarded as sent: server-wide, every tenant's keys live under them.
            "config|set"
                if args.len() > 2
                    && args[2..]
                        .iter()
                        .step_by(2)
                        .all(|name| super::info::server_param(&self.server_config, name)) =>
            {
                return Ok(None);
            }
            "function|stats" => {
                call.reply = ReplyRewrite::FunctionStats;
                return Ok(None);
            }
            "function|dump" | "function|restore" => {
                return Err(Self::refuse(spec, FUNCTION_PAYLOAD));
            }
            name if script_admin(name) => return Ok(None),
            "publish" | "spublish" => {
                call.set(1, self.prefixed(&args[1]));
                return Ok(None);
            }
            "subscribe" | "ssubscribe" | "unsubscribe" | "sunsubscribe" => {
                for (i, a) in args.iter().enumerate().skip(1) {
                    call.set(i, self.prefixed(a));
                }
                call.reply = ReplyRewrite::PubSub;
                return Ok(None);
            }
            "psubscribe" | "punsubscribe" => {
                for (i, a) in args.iter().enumerate().skip(1) {
                    call.set(i, glob::confine(&self.prefix, a));
                }
                call.reply = ReplyRewrite::PubSub;
                return Ok(None);
            }
            "pubsub|channels" | "pubsub|shardchannels" => {
                let pattern = args.get(2).map_or(&b"*"[..], |p| &p[..]);
                call.args.truncate(2);
                call.args.push(glob::confine(&self.prefix, pattern));
                call.reply = ReplyRewrite::Channels;
                return Ok(None);
            }
            "pubsub|numsub" | "pubsub|shardnumsub" => {
                for (i, a) in args.iter().enumerate().skip(2) {
                    call.set(i, self.prefixed(a));
                }
                call.reply = ReplyRewrite::NumSub;
                return Ok(None);
            }
            _ => {}
        }
        if keys.is_empty() && !spec.has_keys() {
            if neutral(spec.name) {
                return Ok(None);
            }
            return Err(Self::refuse(spec, SERVER_WIDE));
        }
        for pos in keys.positions() {
            call.set(pos, self.prefixed(&args[pos]));
        }
        call.reply = match spec.name {
            "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "lmpop" | "blmpop" | "zmpop"
            | "bzmpop" => ReplyRewrite::FirstKey,
            "xread" | "xreadgroup" => ReplyRewrite::Streams,
            _ => ReplyRewrite::Errors,
        };
        Ok(None)
    }

    /// A function or library name in the tenant's namespace.
    fn function_name(&self, name: &[u8]) -> Bytes {
        let mut out = BytesMut::from(&functions::namespace(&self.prefix)[..]);
        out.put_slice(name);
        out.freeze()
    }

    /// FUNCTION LIST [WITHCODE] [LIBRARYNAME pattern], parsed as `functionListCommand` does;
    /// rebuilt with a LIBRARYNAME that only the tenant's libraries can match (Redis matches it
    /// case-insensitively; the namespace is lower-case hex, which no other tenant's matches).
    fn function_list(&self, call: &mut Call) -> Result<(), PolicyError> {
        let args = call.input;
        let mut out = vec![args[0].clone(), args[1].clone()];
        let mut pattern: &[u8] = b"*";
        let mut i = 2;
        while i < args.len() {
            let opt = c_str(&args[i]);
            if opt.eq_ignore_ascii_case(b"withcode") {
                out.push(args[i].clone());
            } else if opt.eq_ignore_ascii_case(b"libraryname") && i + 1 < args.len() {
                pattern = &args[i + 1];
                i += 1;
            } else {
                return Err(PolicyError::Syntax(format!(
                    "Unknown argument {}",
                    String::from_utf8_lossy(&args[i])
                )));
            }
            i += 1;
        }
        out.push(Bytes::from_static(b"LIBRARYNAME"));
        out.push(self.function_name(pattern));
        call.args = out;
        call.reply = ReplyRewrite::Functions;
        Ok(())
    }

    fn namespace(&self, kind: NamespaceKind) -> NamespaceOp {
        NamespaceOp {
            kind,
            prefix: self.prefix.clone(),
            pattern: glob::confine(&self.prefix, b"*"),
        }
    }

    /// SCAN cursor [MATCH p] [COUNT n] [TYPE t], parsed as `scanGenericCommand` does; rebuilt with
    /// one MATCH that confines the client's pattern (or `*`) to the prefix. In the shared
    /// database each call examines at least [`SHARED_SCAN_COUNT`] slots of the upstream's table
    /// (a last `COUNT` is added; the client's own, if any, is still sent first, so a bad one gets
    /// the upstream's error): otherwise a client's whole iteration would take a call per
    /// COUNT (10 by default) slots of every tenant's keys.
    fn scan(&self, call: &mut Call) -> Result<(), PolicyError> {
        let args = call.input;
        let mut out = vec![args[0].clone(), super::cursor::open(&self.prefix, &args[1])];
        let mut count: Option<&[u8]> = None;
        let mut pattern: &[u8] = b"*";
        let mut i = 2;
        while i < args.len() {
            let opt = c_str(&args[i]);
            let more = args.len() - i;
            if more >= 2 && opt.eq_ignore_ascii_case(b"match") {
                pattern = &args[i + 1];
            } else if more >= 2
                && (opt.eq_ignore_ascii_case(b"count") || opt.eq_ignore_ascii_case(b"type"))
            {
                if opt.eq_ignore_ascii_case(b"count") {
                    count = Some(&args[i + 1]);
                }
                out.push(args[i].clone());
                out.push(args[i + 1].clone());
            } else {
                return Err(PolicyError::syntax());
            }
            i += 2;
        }
        let asked = count
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<i64>().ok());
        if self.db.is_none() && asked.is_none_or(|n| n < SHARED_SCAN_COUNT) {
            out.push(Bytes::from_static(b"COUNT"));
            out.push(Bytes::from(SHARED_SCAN_COUNT.to_string()));
        }
        out.push(Bytes::from_static(b"MATCH"));
        out.push(glob::confine(&self.prefix, pattern));
        call.args = out;
        call.reply = ReplyRewrite::Scan;
        Ok(())
    }

    /// SORT/SORT_RO BY/GET patterns, found by the same parse that finds SORT's keys
    /// ([`crate::command::sort_options`], a port of `sortCommandGeneric`). A pattern with a `*`
    /// names keys through the data, so it is refused unless the tenant has `sort_patterns`, and
    /// then prefixed (the key a pattern names is its text with the element substituted at the
    /// first `*`, so a prefixed pattern can only name prefixed keys).
    fn sort_patterns(&self, spec: &CommandSpec, call: &mut Call) -> Result<(), PolicyError> {
        let args = call.input;
        let options = sort_options(args, spec.name == "sort_ro")?;
        for j in options.patterns {
            let pattern = &args[j];
            // Redis looks for `*` with strchr, so a NUL ends the pattern.
            if c_str(pattern).contains(&b'*') {
                if !self.sort_patterns {
                    return Err(Self::refuse(spec, SORT_PATTERNS));
                }
                call.set(j, self.prefixed(pattern));
            }
        }
        Ok(())
    }
}

/// FLUSHDB/FLUSHALL's one optional argument, ASYNC or SYNC, checked as `getFlushCommandFlags`
/// does.
fn flush_mode(args: &[Bytes]) -> Result<(), PolicyError> {
    let bad = |a: &Bytes| {
        !c_str(a).eq_ignore_ascii_case(b"async") && !c_str(a).eq_ignore_ascii_case(b"sync")
    };
    if args.len() > 2 || args.get(1).is_some_and(bad) {
        return Err(PolicyError::syntax());
    }
    Ok(())
}

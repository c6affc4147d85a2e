//! EVAL, EVALSHA (and their `_RO` forms) and SCRIPT LOAD/EXISTS/FLUSH/KILL on an embedded Lua
//! 5.1, the language Redis embeds, so that the scripts apps send to Redis run here unchanged.
//!
//! Each call gets a fresh Lua state holding only what Redis's sandbox offers (base, table,
//! string and math; no os, io, require, loadfile or dofile), with Redis's global protection:
//! reading an unknown global or assigning any is an error with Redis's text. `redis.call` and
//! `redis.pcall` run engine commands on the keyspace the script already holds locked, so a
//! script is atomic as in Redis. Values cross as Redis converts them (RESP2 replies to Lua, Lua
//! results to the client's protocol: numbers truncate to integers, false is nil, tables are
//! arrays up to the first nil, `{ok=}`/`{err=}` are status and error replies).
//!
//! This module must never read the clock: a runaway script is stopped by an instruction budget
//! ([`BUDGET`]) instead of Redis's `lua-time-limit` and SCRIPT KILL, since the whole engine waits
//! on it. Not offered: the cjson, cmsgpack, struct, bit and debug libraries, redis.setresp and
//! the script debugger.
use std::collections::HashMap;

use bytes::Bytes;
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value as Lua_, VmState};
use sha1::{Digest, Sha1};

mod convert;

use convert::{Reply, emit, error_text, from_resp2, to_reply};

use super::num::parse_i64;
use super::{Call, Db, NOT_INT, eq_ci};
use crate::command::{self, CommandSpec, Flags};
use crate::protocol::Protocol;

/// Lua instructions a script may run before it is stopped (about a second of simple loops).
const BUDGET: u64 = 200_000_000;
/// The budget is checked every this many instructions.
const CHECK_EVERY: u32 = 100_000;
const OVER_BUDGET: &str = "script exceeded the local engine's instruction budget";
/// Bytes of Lua heap a script may allocate.
const LUA_MEMORY: usize = 256 * 1024 * 1024;

/// Scripts by their lower-case hex SHA1, as SCRIPT LOAD and EVAL leave them.
#[derive(Default)]
pub struct Scripts(HashMap<String, Bytes>);

/// Runs one command for a script: the engine's own executor, with the keyspace held.
pub(super) type Exec<'a> = dyn FnMut(&mut Db, &'static CommandSpec, &[Bytes]) -> Bytes + 'a;

pub(super) fn sha1_hex(b: &[u8]) -> String {
    Sha1::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// SCRIPT LOAD/EXISTS/FLUSH/KILL; false if `c` is none of them.
pub(super) fn script_command(scripts: &mut Scripts, c: &mut Call) -> bool {
    match c.name {
        "script|load" => {
            let body = c.args[2].clone();
            if let Err(e) = Lua::new()
                .load(&body[..])
                .set_name("@user_script")
                .into_function()
            {
                compile_err(c, e);
                return true;
            }
            let sha = sha1_hex(&body);
            c.out.bulk(sha.as_bytes());
            scripts.0.insert(sha, body);
        }
        "script|exists" => {
            c.out.array(c.args.len() - 2);
            for sha in &c.args[2..] {
                let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                c.out.bool_int(scripts.0.contains_key(&sha));
            }
        }
        "script|flush" => {
            if c.args.len() > 3
                || (c.args.len() == 3 && !["sync", "async"].iter().any(|m| eq_ci(&c.args[2], m)))
            {
                c.out.err("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
                return true;
            }
            scripts.0.clear();
            c.out.ok();
        }
        // A script never outlives the call that runs it, so there is never one to kill.
        "script|kill" => c.out.err("NOTBUSY No scripts in execution right now."),
        _ => return false,
    }
    true
}

fn compile_err(c: &mut Call, e: mlua::Error) {
    let msg = match e {
        mlua::Error::SyntaxError { message, .. } => message,
        e => e.to_string(),
    };
    let msg = format!("ERR Error compiling script (new function): {msg}");
    c.out.err(&msg);
}

/// EVAL/EVALSHA script-or-sha numkeys [key ...] [arg ...] (and the `_RO` forms).
pub(super) fn eval(db: &mut Db, scripts: &mut Scripts, c: &mut Call, exec: &mut Exec) {
    let by_sha = c.name.starts_with("evalsha");
    let read_only = c.name.ends_with("_ro");
    let Some(numkeys) = parse_i64(&c.args[2]) else {
        return c.out.err(NOT_INT);
    };
    if numkeys < 0 {
        return c.out.err("ERR Number of keys can't be negative");
    }
    if numkeys as usize > c.args.len() - 3 {
        return c
            .out
            .err("ERR Number of keys can't be greater than number of args");
    }
    let (body, sha) = if by_sha {
        let sha = String::from_utf8_lossy(&c.args[1]).to_ascii_lowercase();
        match scripts.0.get(&sha) {
            Some(b) => (b.clone(), sha),
            None => return c.out.err("NOSCRIPT No matching script. Please use EVAL."),
        }
    } else {
        let body = c.args[1].clone();
        (body.clone(), sha1_hex(&body))
    };
    let split = 3 + numkeys as usize;
    let (keys, argv) = (&c.args[3..split], &c.args[split..]);
    let reply = match run(db, exec, &body, &sha, keys, argv, read_only) {
        Ok(r) => r,
        Err(Failure::Compile(e)) => return compile_err(c, e),
        Err(Failure::Runtime(msg)) => return c.out.err(&msg),
    };
    if !by_sha {
        scripts.0.insert(sha, body);
    }
    emit(c, &reply);
}

enum Failure {
    Compile(mlua::Error),
    Runtime(String),
}

/// The sandbox, after `redis.call`/`pcall` (Rust functions) are set and before the script's own
/// globals: the `redis` helpers written in Lua, and Redis's global protection.
const PRELUDE: &str = r#"
redis.error_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments') end
  return {err = redis.__errtext(msg)}
end
redis.status_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments') end
  return {ok = msg}
end
redis.log = function() end
redis.set_repl = function() end
redis.replicate_commands = function() return true end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
loadfile, dofile, module, require, package = nil, nil, nil, nil, nil
setmetatable(_G, {
  __index = function(_, k)
    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
  __newindex = function() error('Attempt to modify a readonly table', 2) end,
})
"#;

#[allow(clippy::too_many_arguments)]
fn run(
    db: &mut Db,
    exec: &mut Exec,
    body: &[u8],
    sha: &str,
    keys: &[Bytes],
    argv: &[Bytes],
    read_only: bool,
) -> Result<Reply, Failure> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )
    .map_err(|e| Failure::Runtime(format!("ERR {e}")))?;
    let rt = |e: mlua::Error| Failure::Runtime(format!("ERR {e}"));
    lua.set_memory_limit(LUA_MEMORY).map_err(rt)?;
    let left = std::sync::atomic::AtomicU64::new(BUDGET / u64::from(CHECK_EVERY));
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        move |lua, _| {
            use std::sync::atomic::Ordering::Relaxed;
            if left.fetch_sub(1, Relaxed) > 1 {
                return Ok(VmState::Continue);
            }
            // Past the budget every instruction fails, so a script that catches the error with
            // pcall fails again at its next instruction, out to the top.
            lua.set_hook(HookTriggers::new().every_nth_instruction(1), |_, _| {
                Err(mlua::Error::runtime(OVER_BUDGET))
            })?;
            Err(mlua::Error::runtime(OVER_BUDGET))
        },
    )
    .map_err(rt)?;
    let f = lua
        .load(body)
        .set_name("@user_script")
        .into_function()
        .map_err(Failure::Compile)?;
    let trailer = |msg: &[u8], line: Option<usize>| -> String {
        let line = line.map_or("?".to_string(), |l| l.to_string());
        format!(
            "{} script: {sha}, on @user_script:{line}.",
            String::from_utf8_lossy(msg)
        )
    };
    let held = std::cell::RefCell::new((db, exec));
    lua.scope(|scope| {
        let g = lua.globals();
        let redis = lua.create_table()?;
        // redis.call and redis.pcall are C functions, as in Redis, so that a script's
        // `return redis.call(...)` (a tail call) keeps the script's frame for the error's line.
        let pcall = scope.create_function(|lua, args: MultiValue| {
            let (db, exec) = &mut *held.borrow_mut();
            redis_call(lua, db, *exec, args, read_only)
        })?;
        let call = scope.create_function(|lua, args: MultiValue| {
            let (db, exec) = &mut *held.borrow_mut();
            let r = redis_call(lua, db, *exec, args, read_only)?;
            if let Lua_::Table(t) = &r
                && let Ok(Lua_::String(e)) = t.raw_get::<Lua_>("err")
            {
                let line = lua.inspect_stack(1, |d| d.current_line()).flatten();
                return Err(mlua::Error::external(Raised {
                    msg: e.as_bytes().to_vec(),
                    line,
                }));
            }
            Ok(r)
        })?;
        redis.set("call", call)?;
        redis.set("pcall", pcall)?;
        redis.set(
            "__errtext",
            lua.create_function(|lua, msg: mlua::LuaString| {
                let raw = msg.as_bytes();
                let text = if raw.starts_with(b"-") {
                    error_text(&raw)
                } else {
                    error_text(&[b"-".as_slice(), &raw].concat())
                };
                lua.create_string(text)
            })?,
        )?;
        redis.set(
            "sha1hex",
            lua.create_function(|_, s: mlua::LuaString| Ok(sha1_hex(&s.as_bytes())))?,
        )?;
        g.set("redis", redis)?;
        g.set(
            "KEYS",
            lua.create_sequence_from(
                keys.iter()
                    .map(|k| lua.create_string(k))
                    .collect::<mlua::Result<Vec<_>>>()?,
            )?,
        )?;
        g.set(
            "ARGV",
            lua.create_sequence_from(
                argv.iter()
                    .map(|a| lua.create_string(a))
                    .collect::<mlua::Result<Vec<_>>>()?,
            )?,
        )?;
        lua.load(PRELUDE).set_name("=prelude").exec()?;
        // Redis's error handler: note where the error was raised (the first user_script frame
        // with a line), and turn a plain error into an `ERR` one.
        let handler = lua.create_function(|lua, err: Lua_| {
            let line = (1..8).find_map(|lvl| {
                lua.inspect_stack(lvl, |d| {
                    let src = d.source().source.map(|s| s.into_owned());
                    (src.as_deref() == Some("@user_script"))
                        .then(|| d.current_line())
                        .flatten()
                })
                .flatten()
            });
            let t = lua.create_table()?;
            let raised = match &err {
                Lua_::Error(e) => find_raised(e),
                _ => None,
            };
            if let Some(r) = raised {
                t.set("err", lua.create_string(&r.msg)?)?;
                t.set("line", r.line)?;
                return Ok(t);
            }
            match &err {
                Lua_::Table(e) if e.contains_key("err")? => {
                    t.set("err", e.get::<Lua_>("err")?)?;
                }
                other => {
                    let s = match other {
                        Lua_::Error(e) => lua_error_text(e),
                        v => lua
                            .coerce_string(v.clone())?
                            .map(|s| s.to_string_lossy())
                            .unwrap_or_else(|| "(error object is not a string)".into()),
                    };
                    t.set("err", format!("ERR {s}"))?;
                }
            }
            t.set("line", line)?;
            Ok(t)
        })?;
        let xpcall: mlua::Function = g.raw_get("xpcall")?;
        let (ok, val): (bool, Lua_) = xpcall.call((f, handler))?;
        if ok {
            return Ok(Ok(to_reply(&val, 0)));
        }
        let Lua_::Table(t) = val else {
            return Ok(Err(Failure::Runtime("ERR script failed".into())));
        };
        let msg: mlua::LuaString = t.get("err")?;
        let line: Option<usize> = t.get("line")?;
        Ok(Err(Failure::Runtime(trailer(&msg.as_bytes(), line))))
    })
    .unwrap_or_else(|e| Err(Failure::Runtime(format!("ERR {}", lua_error_text(&e)))))
}

/// An error reply that `redis.call` raised, with the script line that called it.
#[derive(Debug)]
struct Raised {
    msg: Vec<u8>,
    line: Option<usize>,
}

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.msg))
    }
}

impl std::error::Error for Raised {}

fn find_raised(e: &mlua::Error) -> Option<&Raised> {
    match e {
        mlua::Error::CallbackError { cause, .. } => find_raised(cause),
        e => e.downcast_ref::<Raised>(),
    }
}

/// The message of an error raised in Rust (the budget) or by Lua itself, without mlua's
/// traceback decorations.
fn lua_error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => lua_error_text(cause),
        e => e.to_string(),
    }
}

/// `redis.call`/`redis.pcall`: check the command as Redis does for scripts, run it, and return
/// its reply as Lua sees it (an error reply as an `{err=}` table; `redis.call` raises it).
fn redis_call(
    lua: &Lua,
    db: &mut Db,
    exec: &mut Exec,
    args: MultiValue,
    read_only: bool,
) -> mlua::Result<Lua_> {
    let err = |msg: &str| -> mlua::Result<Lua_> {
        let t = lua.create_table()?;
        t.set("err", msg)?;
        Ok(Lua_::Table(t))
    };
    if args.is_empty() {
        return err("ERR Please specify at least one argument for this redis lib call");
    }
    let mut words = Vec::with_capacity(args.len());
    for a in args {
        let s = match a {
            Lua_::String(_) | Lua_::Integer(_) | Lua_::Number(_) => lua.coerce_string(a)?,
            _ => None,
        };
        match s {
            Some(s) => words.push(Bytes::copy_from_slice(&s.as_bytes())),
            None => {
                return err("ERR Lua redis lib command arguments must be strings or integers");
            }
        }
    }
    let spec = match command::resolve(&words) {
        Ok(spec) => spec,
        Err(command::CommandError::Arity(_)) => {
            return err("ERR Wrong number of args calling Redis command from script");
        }
        Err(_) => return err("ERR Unknown Redis command called from script"),
    };
    if spec.flags.contains(Flags::NOSCRIPT) {
        return err("ERR This Redis command is not allowed from script");
    }
    if read_only && spec.flags.contains(Flags::WRITE) {
        return err("ERR Write commands are not allowed from read-only scripts.");
    }
    let reply = exec(db, spec, &words);
    from_resp2(lua, &reply)
}

/// Protocol in which `redis.call` gets replies: RESP2, as Redis scripts do by default.
pub(super) const SCRIPT_PROTO: Protocol = Protocol::Resp2;

//! Values across the Lua boundary, as Redis converts them: engine replies (RESP2) into Lua
//! values for `redis.call`, and a script's Lua result into the client's reply. Owns no state.
use mlua::{Lua, Table, Value as Lua_};

use super::super::Call;
use super::super::num::parse_i64;
use crate::protocol::value::{self, Value};

/// A script's result, converted from Lua as Redis converts it.
pub(super) enum Reply {
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Status(Vec<u8>),
    Error(Vec<u8>),
    Array(Vec<Reply>),
}

pub(super) fn emit(c: &mut Call, r: &Reply) {
    match r {
        Reply::Int(n) => c.out.int(*n),
        Reply::Bulk(b) => c.out.bulk(b),
        Reply::Null => c.out.null(),
        Reply::Status(s) => c.out.simple(&String::from_utf8_lossy(s)),
        Reply::Error(e) => c.out.err(&String::from_utf8_lossy(e)),
        Reply::Array(items) => {
            c.out.array(items.len());
            for i in items {
                emit(c, i);
            }
        }
    }
}

/// Redis's `luaPushErrorBuff`: `-CODE msg` keeps its code, anything else gets `ERR`.
pub(super) fn error_text(raw: &[u8]) -> Vec<u8> {
    let raw = raw.strip_suffix(b"\r\n").unwrap_or(raw);
    match raw.strip_prefix(b"-") {
        Some(rest) if rest.contains(&b' ') => rest.to_vec(),
        Some(rest) => [b"ERR ".as_slice(), rest].concat(),
        None => [b"ERR ".as_slice(), raw].concat(),
    }
}

/// One RESP2 reply of the engine's own making (read by [`crate::protocol::value`]), as Redis
/// hands replies to Lua.
pub(super) fn from_resp2(lua: &Lua, reply: &[u8]) -> mlua::Result<Lua_> {
    match value::parse(reply) {
        Ok(v) => to_lua(lua, &v),
        Err(_) => Err(mlua::Error::runtime(
            "ERR respite could not read the local engine's reply",
        )),
    }
}

fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<Lua_> {
    Ok(match v {
        Value::Line(b'+', line) => {
            let t = lua.create_table()?;
            t.set("ok", lua.create_string(line)?)?;
            Lua_::Table(t)
        }
        Value::Line(b'-', line) => {
            let t = lua.create_table()?;
            t.set(
                "err",
                lua.create_string(error_text(&[b"-", *line].concat()))?,
            )?;
            Lua_::Table(t)
        }
        Value::Line(b':', line) => Lua_::Number(parse_i64(line).unwrap_or(0) as f64),
        // `$-1` and `*-1`: Redis hands Lua a false.
        Value::Line(b'$' | b'*', _) => Lua_::Boolean(false),
        Value::Blob(b'$', b) => Lua_::String(lua.create_string(b.bytes())?),
        Value::Agg(b'*', items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Lua_::Table(t)
        }
        _ => Lua_::Nil,
    })
}

/// Redis's `luaReplyToRedisReply`.
pub(super) fn to_reply(v: &Lua_, depth: usize) -> Reply {
    match v {
        Lua_::Integer(i) => Reply::Int(*i),
        // C's cast of a double to long long: truncation (saturating here where C's is undefined).
        Lua_::Number(f) => Reply::Int(*f as i64),
        Lua_::String(s) => Reply::Bulk(s.as_bytes().to_vec()),
        Lua_::Boolean(true) => Reply::Int(1),
        Lua_::Table(t) => table_reply(t, depth),
        _ => Reply::Null,
    }
}

fn table_reply(t: &Table, depth: usize) -> Reply {
    if let Ok(Lua_::String(e)) = t.raw_get::<Lua_>("err") {
        return Reply::Error(e.as_bytes().to_vec());
    }
    if let Ok(Lua_::String(s)) = t.raw_get::<Lua_>("ok") {
        return Reply::Status(s.as_bytes().to_vec());
    }
    if depth > 64 {
        return Reply::Error(b"ERR reached lua stack limit".to_vec());
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Lua_>(i) {
            Ok(Lua_::Nil) | Err(_) => break,
            Ok(v) => items.push(to_reply(&v, depth + 1)),
        }
    }
    Reply::Array(items)
}

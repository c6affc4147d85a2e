//! Redis Functions in a prefixed tenant's namespace: its library and function names carry a
//! namespace of their own upstream, `respite_<hex of the prefix>_`, and lose it in what the tenant
//! reads back, so FUNCTION LOAD, LIST, DELETE and FLUSH act on its own libraries and FCALL calls
//! its own functions.
//!
//! Library and function names may only hold letters, digits and `_`, so the prefix goes in as hex;
//! the namespaces of two prefixes never start one another (the hex is followed by `_`, which hex
//! never holds). The library name is rewritten in the code's shebang line (`#!lua name=…`);
//! function names are given in the code, so the code gets a small Lua function, on the line of
//! its own first line (line numbers in errors stay the user's), that prefixes the name before it
//! calls `redis.register_function`, and the code's `redis.register_function` calls go to it.
//! Reading the code back (FUNCTION LIST WITHCODE) undoes both.
//!
//! Every way the code could reach `redis.register_function` is found by [`super::lua_scan`]
//! before the code is sent: the plain spellings are rewritten and any other (an alias, an index)
//! refuses the load, so no name outside the namespace is ever registered upstream. What this is
//! not: a fence for data — a script's `redis.call` reaches any key whatever its declared keys
//! (docs/tenants.md: `scripts = true` is trust). Pure: the session sends what
//! [`super::Tenant::check`] builds and passes replies through [`rewrite_reply`].
use bytes::{BufMut, Bytes, BytesMut};

use super::reply_rewrite::{ReplyError, Value, parse};
use crate::protocol::value::{Blob, encode};

const REGISTER: &[u8] = b"redis.register_function";
const WRAPPER: &[u8] = b"__respite_register";

/// The namespace of `prefix`'s library and function names upstream.
pub fn namespace(prefix: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + prefix.len() * 2);
    out.put_slice(b"respite_");
    for b in prefix {
        out.put_slice(format!("{b:02x}").as_bytes());
    }
    out.put_u8(b'_');
    out.freeze()
}

/// The Lua put before the code's first line. Only what the load-time sandbox allows: no `type`
/// or `pairs` there, so a table argument (`{function_name = …}`) is told from a name by indexing
/// it (a string's index is the string library's, which has no `function_name`).
fn prelude(ns: &[u8]) -> Vec<u8> {
    let ns = String::from_utf8_lossy(ns);
    format!(
        "local function __respite_register(a, ...) local n = a.function_name if n then a.function_name = '{ns}' .. n else a = '{ns}' .. a end return redis.register_function(a, ...) end "
    )
    .into_bytes()
}

fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// The globals a library's code can reach `redis.register_function` through while it loads:
/// `redis`, and Valkey's alias `server` (see [`super::lua_scan`]).
const API: [&[u8]; 2] = [b"redis", b"server"];

/// FUNCTION LOAD's code as the upstream gets it: the library named in the namespace, function
/// names registered in it. Code without a shebang line goes as it is (the upstream refuses it).
///
/// Refused (the error's text, for `ERR Error registering functions: …`), so nothing outside the
/// namespace is ever registered, even for a moment: an engine other than Lua (respite cannot
/// confine its names); code that names `redis` or `server` other than as `redis.<name>` (an
/// alias, an index, a local or parameter of that name: the only ways to reach
/// `register_function` that the rewrite below would not see); code that names respite's own
/// wrapper. The shebang's `name=` is matched as the servers match it, in any case (`NAME=x`
/// names the library too).
pub fn load_code(ns: &[u8], code: &[u8]) -> Result<Bytes, String> {
    if !code.starts_with(b"#!") {
        return Ok(Bytes::copy_from_slice(code));
    }
    let (shebang, body) = match code.iter().position(|&b| b == b'\n') {
        Some(i) => (&code[..i], &code[i + 1..]),
        None => (code, &b""[..]),
    };
    let mut out = Vec::with_capacity(code.len() + 256);
    for (i, part) in shebang.split(|&b| b == b' ').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if i == 0 && !part[2..].eq_ignore_ascii_case(b"lua") {
            return Err(format!(
                "a tenant's library must be Lua ('#!lua'), not '{}': respite confines only Lua libraries to the namespace",
                String::from_utf8_lossy(&part[2..])
            ));
        }
        match part.get(..5) {
            Some(key) if key.eq_ignore_ascii_case(b"name=") => {
                out.extend_from_slice(key);
                out.extend_from_slice(ns);
                out.extend_from_slice(&part[5..]);
            }
            _ => out.extend_from_slice(part),
        }
    }
    if contains(body, WRAPPER) {
        return Err(format!(
            "the name '{}' is respite's own",
            String::from_utf8_lossy(WRAPPER)
        ));
    }
    out.push(b'\n');
    out.extend_from_slice(&prelude(ns));
    let mut from = 0;
    for u in super::lua_scan::uses(body, &API) {
        match u.field {
            // Every register call goes to the wrapper; the span's newlines stay, so every
            // later line keeps its number.
            Some(b"register_function") => {
                out.extend_from_slice(&body[from..u.span.start]);
                out.extend_from_slice(WRAPPER);
                let lines = body[u.span.clone()].iter().filter(|&&b| b == b'\n');
                out.extend(lines);
                from = u.span.end;
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "user_function:{}: a tenant's library may name '{}' only as {}.<name> (an alias, an index or a variable of that name could register functions outside its namespace)",
                    u.line + 1,
                    String::from_utf8_lossy(u.name),
                    String::from_utf8_lossy(u.name)
                ));
            }
        }
    }
    out.extend_from_slice(&body[from..]);
    Ok(out.into())
}

fn contains(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len()).any(|w| w == word)
}

/// The code as the tenant loaded it, from the upstream's copy ([`load_code`] undone).
pub fn unload_code(ns: &[u8], code: &[u8]) -> Vec<u8> {
    let (shebang, body) = match code.iter().position(|&b| b == b'\n') {
        Some(i) => (&code[..i], &code[i + 1..]),
        None => return code.to_vec(),
    };
    let mut out = Vec::with_capacity(code.len());
    for (i, part) in shebang.split(|&b| b == b' ').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        match part.get(..5) {
            Some(key) if key.eq_ignore_ascii_case(b"name=") => {
                out.extend_from_slice(key);
                let name = &part[5..];
                out.extend_from_slice(name.strip_prefix(ns).unwrap_or(name));
            }
            _ => out.extend_from_slice(part),
        }
    }
    out.push(b'\n');
    let body = body.strip_prefix(&prelude(ns)[..]).unwrap_or(body);
    out.extend_from_slice(&replace(body, WRAPPER, REGISTER));
    out
}

/// A FUNCTION command's reply as the tenant sees it: errors and names without the namespace,
/// and FUNCTION LIST's libraries only the tenant's, with their code as it was loaded.
pub fn rewrite_reply(prefix: &[u8], reply: &Bytes) -> Result<Bytes, ReplyError> {
    let ns = namespace(prefix);
    if matches!(reply.first(), Some(b'-' | b'!')) {
        return Ok(replace(reply, &ns, b"").into());
    }
    let mut v = parse(reply)?;
    match &mut v {
        // FUNCTION LOAD: the library's name.
        Value::Blob(b'$', b) => {
            if let Some(name) = b.bytes().strip_prefix(&ns[..]) {
                *b = Blob::Owned(Bytes::copy_from_slice(name));
            }
        }
        // FUNCTION LIST: one map (or flat array) per library.
        Value::Agg(_, libraries) => {
            libraries.retain(|lib| {
                field(lib, b"library_name")
                    .and_then(Value::bulk)
                    .is_some_and(|n| n.starts_with(&ns))
            });
            for lib in libraries.iter_mut() {
                rewrite_library(&ns, lib);
            }
        }
        _ => return Ok(reply.clone()),
    }
    let mut out = BytesMut::with_capacity(reply.len());
    encode(&v, &mut out);
    Ok(out.freeze())
}

/// FUNCTION STATS as the tenant sees it: the running function only if it is the tenant's own
/// (its name and the function name in its command out of the namespace); another tenant's, whose
/// command holds that tenant's key names and arguments, shows as no running function (null).
/// The engines' library and function counts stay the server's.
pub fn rewrite_stats(prefix: &[u8], reply: &Bytes) -> Result<Bytes, ReplyError> {
    let ns = namespace(prefix);
    if matches!(reply.first(), Some(b'-' | b'!')) {
        return Ok(reply.clone());
    }
    let mut v = parse(reply)?;
    let resp3 = reply.first() == Some(&b'%');
    let Value::Agg(_, items) = &mut v else {
        return Ok(reply.clone());
    };
    for kv in items.chunks_mut(2) {
        let [k, running] = kv else {
            continue;
        };
        if k.bulk() != Some(b"running_script") || running.is_null() {
            continue;
        }
        let own = field(running, b"name")
            .and_then(Value::bulk)
            .is_some_and(|n| n.starts_with(&ns));
        if !own {
            *running = if resp3 {
                Value::Line(b'_', b"")
            } else {
                Value::Line(b'$', b"-1")
            };
            continue;
        }
        if let Value::Agg(_, fields) = running {
            for fkv in fields.chunks_mut(2) {
                let [fk, fv] = fkv else {
                    continue;
                };
                match fk.bulk() {
                    Some(b"name") => strip_ns(&ns, fv),
                    Some(b"command") => {
                        if let Value::Agg(_, words) = fv
                            && let Some(name) = words.get_mut(1)
                        {
                            strip_ns(&ns, name);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out = BytesMut::with_capacity(reply.len());
    encode(&v, &mut out);
    Ok(out.freeze())
}

/// What FUNCTION STATS says runs: `Some(true)` a function of the tenant's (by its name's
/// namespace), `Some(false)` none or another's, `None` no answer of that shape (an error: `-BUSY`
/// while an EVAL script runs, or a server without FUNCTION).
pub fn runs_own_function(prefix: &[u8], reply: &[u8]) -> Option<bool> {
    let ns = namespace(prefix);
    let v = parse(reply).ok()?;
    let running = field(&v, b"running_script")?;
    if running.is_null() {
        return Some(false);
    }
    Some(
        field(running, b"name")
            .and_then(Value::bulk)
            .is_some_and(|n| n.starts_with(&ns)),
    )
}

/// The value of `name` in a map, or in an array of alternating names and values.
pub(super) fn field<'v, 'a>(v: &'v Value<'a>, name: &[u8]) -> Option<&'v Value<'a>> {
    let items = v.items()?;
    items
        .chunks(2)
        .find(|kv| kv[0].bulk() == Some(name))
        .and_then(|kv| kv.get(1))
}

fn rewrite_library(ns: &[u8], lib: &mut Value) {
    let Value::Agg(_, items) = lib else {
        return;
    };
    for kv in items.chunks_mut(2) {
        let [k, v] = kv else {
            continue;
        };
        match k.bulk() {
            Some(b"library_name") => strip_ns(ns, v),
            Some(b"library_code") => {
                if let Value::Blob(_, b) = v {
                    *b = Blob::Owned(unload_code(ns, b.bytes()).into());
                }
            }
            Some(b"functions") => {
                if let Value::Agg(_, functions) = v {
                    for f in functions.iter_mut() {
                        if let Value::Agg(_, fields) = f {
                            for fkv in fields.chunks_mut(2) {
                                if let [fk, fv] = fkv
                                    && fk.bulk() == Some(b"name")
                                {
                                    strip_ns(ns, fv);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn strip_ns(ns: &[u8], v: &mut Value) {
    if let Value::Blob(_, b) = v
        && let Some(rest) = b.bytes().strip_prefix(ns)
    {
        *b = Blob::Owned(Bytes::copy_from_slice(rest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_into_the_namespace_and_come_back() {
        let ns = namespace(b"t:");
        assert_eq!(&ns[..], b"respite_743a_");
        assert!(!namespace(b"a_").starts_with(&namespace(b"a")));
        let code = b"#!lua name=mylib\nredis.register_function('f', function() return 1 end)\nredis.register_function{function_name='g', callback=function() return 2 end}";
        let up = load_code(&ns, code).unwrap();
        let text = String::from_utf8_lossy(&up);
        assert!(
            text.starts_with("#!lua name=respite_743a_mylib\nlocal function __respite_register(")
        );
        assert!(text.contains(" end __respite_register('f'"), "{text}");
        assert_eq!(
            text.lines().count(),
            3,
            "the user's lines keep their numbers"
        );
        assert_eq!(unload_code(&ns, &up), code.to_vec());
        // No shebang: as it is, for the upstream to refuse.
        assert_eq!(&load_code(&ns, b"return 1").unwrap()[..], b"return 1");
    }

    #[test]
    fn every_way_to_register_outside_the_namespace_is_closed() {
        let ns = namespace(b"t:");
        // The library name in any case the servers accept, and spellings the rewrite follows.
        let up = load_code(
            &ns,
            b"#!LUA NAME=lib\nserver.register_function('f', f)\nredis --[[x\n]] . register_function('g', g)\nlocal r = redis.register_function\nr('h', h)",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&up);
        assert!(text.starts_with("#!LUA NAME=respite_743a_lib\n"), "{text}");
        // The prelude's own call is the only one left.
        assert_eq!(text.matches("register_function").count(), 1, "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
        assert_eq!(
            String::from_utf8_lossy(&unload_code(&ns, &up)),
            "#!LUA NAME=lib\nredis.register_function('f', f)\nredis.register_function\n('g', g)\nlocal r = redis.register_function\nr('h', h)"
        );
        for (code, line) in [
            ("local r = redis\nr.register_function('f', f)", 2),
            ("redis['register_function']('f', f)", 2),
            (
                "\n\nredis[ 'register_' .. 'function' ]{function_name='f', callback=f}",
                4,
            ),
            ("local t = {redis}", 2),
            (
                "local function reg(redis) redis.register_function('f', f) end",
                2,
            ),
            ("local server = 1", 2),
        ] {
            let err = load_code(&ns, format!("#!lua name=l\n{code}").as_bytes()).unwrap_err();
            assert!(
                err.starts_with(&format!("user_function:{line}: ")),
                "{code}: {err}"
            );
        }
        for code in [
            "#!lua name=l\nlocal function __respite_register() end",
            "#!js name=l\nredis.register_function('f', f)",
        ] {
            assert!(load_code(&ns, code.as_bytes()).is_err(), "{code}");
        }
        // Strings and comments that mention them are no use.
        assert!(
            load_code(
                &ns,
                b"#!lua name=l\n-- redis is here\nredis.register_function('f', function() return 'redis' end)"
            )
            .is_ok()
        );
    }

    #[test]
    fn stats_show_only_the_tenants_running_function() {
        let running = |name: &str| {
            format!(
                "*4\r\n$14\r\nrunning_script\r\n*6\r\n$4\r\nname\r\n${}\r\n{name}\r\n$7\r\ncommand\r\n*3\r\n$5\r\nfcall\r\n${}\r\n{name}\r\n$1\r\n0\r\n$11\r\nduration_ms\r\n:5\r\n$7\r\nengines\r\n*0\r\n",
                name.len(),
                name.len()
            )
        };
        let own = rewrite_stats(b"t:", &Bytes::from(running("respite_743a_spin"))).unwrap();
        assert_eq!(String::from_utf8_lossy(&own), running("spin"));
        assert_eq!(
            runs_own_function(b"t:", running("respite_743a_spin").as_bytes()),
            Some(true)
        );
        assert_eq!(
            runs_own_function(b"t:", running("respite_753a_spin").as_bytes()),
            Some(false)
        );
        assert_eq!(
            runs_own_function(
                b"t:",
                b"*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines\r\n*0\r\n"
            ),
            Some(false)
        );
        assert_eq!(runs_own_function(b"t:", b"-BUSY Redis is busy\r\n"), None);
        let other = rewrite_stats(b"t:", &Bytes::from(running("respite_753a_spin"))).unwrap();
        assert_eq!(
            &other[..],
            b"*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines\r\n*0\r\n"
        );
    }

    #[test]
    fn list_shows_only_the_tenants_libraries() {
        let ns = namespace(b"t:");
        let code = load_code(&ns, b"#!lua name=lib\nredis.register_function('f', f)").unwrap();
        let mut reply = BytesMut::new();
        reply.put_slice(b"*2\r\n");
        for (lib, f) in [
            ("respite_743a_lib", "respite_743a_f"),
            ("respite_753a_x", "respite_753a_g"),
        ] {
            reply.put_slice(b"*8\r\n$12\r\nlibrary_name\r\n");
            reply.put_slice(format!("${}\r\n{lib}\r\n", lib.len()).as_bytes());
            reply.put_slice(
                b"$6\r\nengine\r\n$3\r\nLUA\r\n$9\r\nfunctions\r\n*1\r\n*2\r\n$4\r\nname\r\n",
            );
            reply.put_slice(format!("${}\r\n{f}\r\n", f.len()).as_bytes());
            reply.put_slice(b"$12\r\nlibrary_code\r\n");
            reply.put_slice(format!("${}\r\n", code.len()).as_bytes());
            reply.put_slice(&code);
            reply.put_slice(b"\r\n");
        }
        let got = rewrite_reply(b"t:", &reply.freeze()).unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("*1\r\n*8\r\n$12\r\nlibrary_name\r\n$3\r\nlib\r\n"),
            "{text}"
        );
        assert!(text.contains("$4\r\nname\r\n$1\r\nf\r\n"), "{text}");
        assert!(
            text.contains("#!lua name=lib\nredis.register_function('f', f)"),
            "{text}"
        );
        assert!(!text.contains("respite_"), "{text}");
        assert_eq!(
            &rewrite_reply(
                b"t:",
                &Bytes::from_static(b"-ERR Library 'respite_743a_lib' already exists\r\n")
            )
            .unwrap()[..],
            b"-ERR Library 'lib' already exists\r\n"
        );
        assert_eq!(
            &rewrite_reply(b"t:", &Bytes::from_static(b"$16\r\nrespite_743a_lib\r\n")).unwrap()[..],
            b"$3\r\nlib\r\n"
        );
    }
}

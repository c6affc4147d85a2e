//! Redis Functions for prefixed tenants with `scripts = true` (issue 22): each tenant's FUNCTION
//! LOAD, LIST, DELETE and FLUSH act on its own libraries and FCALL calls its own functions, so
//! two tenants may load the same library and function names. The judge is the upstream's own
//! FUNCTION LIST and keys; a library loaded straight on the upstream is nobody's through respite.
use crate::both;
use crate::support::{Kind, Proxy, Server, script_tenants_a_and_b, text, words};

const CODE: &str = "#!lua name=mylib\nredis.register_function('f', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\nredis.register_function{function_name='g', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}";

fn upstream_libraries(server: &Server) -> String {
    text(server.raw().cmd(&words("FUNCTION LIST")))
}

both!(each_tenant_has_its_own_function_libraries, |kind: Kind| {
    let server = Server::start(kind);
    let config = script_tenants_a_and_b();
    let proxy = Proxy::start_with_config(&server.url(), &config, &[]);
    let mut direct = server.raw();
    assert_eq!(
        text(direct.cmd(&[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=plain\nredis.register_function('p', function() return 1 end)"
        ])),
        "$5\r\nplain\r\n"
    );
    let (mut a, mut b) = (proxy.login("a", "pa"), proxy.login("b", "pb"));
    // The same library and function names for both.
    for t in [&mut a, &mut b] {
        assert_eq!(
            text(t.cmd(&[b"FUNCTION", b"LOAD", CODE.as_bytes()])),
            "$5\r\nmylib\r\n"
        );
    }
    assert_eq!(a.cmd(&words("FCALL f 1 k va")), b"+OK\r\n");
    assert_eq!(b.cmd(&words("FCALL f 1 k vb")), b"+OK\r\n");
    assert_eq!(text(a.cmd(&words("FCALL_RO g 1 k"))), "$2\r\nva\r\n");
    assert_eq!(text(direct.cmd(&words("GET a:k"))), "$2\r\nva\r\n");
    assert_eq!(text(direct.cmd(&words("GET b:k"))), "$2\r\nvb\r\n");
    let up = upstream_libraries(&server);
    for name in [
        "respite_613a_mylib",
        "respite_623a_mylib",
        "respite_613a_f",
        "respite_623a_g",
        "plain",
    ] {
        assert!(up.contains(name), "{name} upstream: {up}");
    }

    // a lists its own library alone, with its own names and code.
    let list = text(a.cmd(&words("FUNCTION LIST WITHCODE")));
    assert!(list.starts_with("*1\r\n"), "{list}");
    assert!(
        list.contains("$5\r\nmylib\r\n") && list.contains("$4\r\nname\r\n$1\r\nf\r\n"),
        "{list}"
    );
    assert!(
        list.contains(&format!("${}\r\n{CODE}\r\n", CODE.len())),
        "{list}"
    );
    for never in ["respite_", "plain", "b:"] {
        assert!(!list.contains(never), "{never} in {list}");
    }
    assert_eq!(
        text(a.cmd(&words("FUNCTION LIST LIBRARYNAME pl*"))),
        "*0\r\n"
    );
    assert!(text(a.cmd(&words("FUNCTION LIST LIBRARYNAME MY*"))).starts_with("*1\r\n"));
    assert_eq!(
        text(a.cmd(&[b"FUNCTION", b"LOAD", CODE.as_bytes()])),
        "-ERR Library 'mylib' already exists\r\n"
    );
    assert_eq!(
        text(a.cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", CODE.as_bytes()])),
        "$5\r\nmylib\r\n"
    );

    // DELETE and FLUSH reach a's libraries only.
    assert_eq!(a.cmd(&words("FUNCTION DELETE mylib")), b"+OK\r\n");
    assert!(text(a.cmd(&words("FCALL f 1 k x"))).starts_with("-ERR Function not found"));
    let up = upstream_libraries(&server);
    assert!(
        !up.contains("respite_613a_mylib") && up.contains("respite_623a_mylib"),
        "{up}"
    );
    for lib in ["one", "two"] {
        let code =
            format!("#!lua name={lib}\nredis.register_function('{lib}', function() return 1 end)");
        assert_eq!(
            text(a.cmd(&[b"FUNCTION", b"LOAD", code.as_bytes()])),
            format!("$3\r\n{lib}\r\n")
        );
    }
    assert_eq!(a.cmd(&words("FUNCTION FLUSH ASYNC")), b"+OK\r\n");
    assert_eq!(text(a.cmd(&words("FUNCTION LIST"))), "*0\r\n");
    let up = upstream_libraries(&server);
    assert!(!up.contains("respite_613a_"), "{up}");
    assert!(
        up.contains("respite_623a_mylib") && up.contains("plain"),
        "{up}"
    );
    assert_eq!(text(b.cmd(&words("FCALL_RO g 1 k"))), "$2\r\nvb\r\n");
    // The payload holds every tenant's libraries: refused.
    let dump = text(a.cmd(&words("FUNCTION DUMP")));
    assert!(
        dump.starts_with("-ERR 'function|dump' is not available"),
        "{dump}"
    );
});

both!(no_spelling_registers_outside_the_namespace, |kind: Kind| {
    // Tenant a tries every way to register a name in b's namespace (or in none), or to replace
    // b's library: the upstream's own FUNCTION LIST is the judge, and b's function keeps working.
    let server = Server::start(kind);
    let config = script_tenants_a_and_b();
    let proxy = Proxy::start_with_config(&server.url(), &config, &[]);
    let (mut a, mut b) = (proxy.login("a", "pa"), proxy.login("b", "pb"));
    assert_eq!(
        text(b.cmd(&[b"FUNCTION", b"LOAD", CODE.as_bytes()])),
        "$5\r\nmylib\r\n"
    );
    assert_eq!(b.cmd(&words("FCALL f 1 k vb")), b"+OK\r\n");
    let b_lib = || {
        text(server.raw().cmd(&words(
            "FUNCTION LIST LIBRARYNAME respite_623a_mylib WITHCODE",
        )))
    };
    let before = b_lib();
    assert!(before.contains("respite_623a_f"), "{before}");
    let escapes = [
        "local r = redis\nr.register_function('respite_623a_f2', function() return 'a' end)",
        "redis['register_function']('respite_623a_f3', function() return 'a' end)",
        "local k = 'register_' .. 'function'\nredis[k]{function_name='respite_623a_f4', callback=function() return 'a' end}",
        "local function reg(redis) redis.register_function('respite_623a_f5', function() return 'a' end) end\nreg(redis)",
        "local t = {redis}\nt[1].register_function('x', function() return 'a' end)",
        "local s = server\ns.register_function('respite_623a_f6', function() return 'a' end)",
    ];
    for body in escapes {
        for replace in [false, true] {
            let code = format!("#!lua name=evil\n{body}");
            let mut cmd: Vec<&[u8]> = vec![b"FUNCTION", b"LOAD"];
            if replace {
                cmd.push(b"REPLACE");
            }
            cmd.push(code.as_bytes());
            let got = text(a.cmd(&cmd));
            assert!(
                got.starts_with("-ERR Error registering functions: user_function:"),
                "{body}: {got}"
            );
        }
    }
    // The library name in capitals, naming b's library upstream: it stays a's own.
    let replace_b =
        "#!lua NAME=respite_623a_mylib\nredis.register_function('f', function() return 'a' end)";
    assert_eq!(
        text(a.cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", replace_b.as_bytes()])),
        "$18\r\nrespite_623a_mylib\r\n"
    );
    let after = text(server.raw().cmd(&words("FUNCTION LIST WITHCODE")));
    assert!(after.contains("respite_613a_respite_623a_mylib"), "{after}");
    // b's library is as it was: the same code, the same functions.
    assert_eq!(before, b_lib());
    assert_eq!(text(b.cmd(&words("FCALL_RO g 1 k"))), "$2\r\nvb\r\n");
    assert_eq!(b.cmd(&words("FCALL f 1 k vb2")), b"+OK\r\n");
    // No function upstream outside a namespace.
    let names = text(server.raw().cmd(&words("FUNCTION LIST")));
    for line in names.lines().filter(|l| !l.starts_with(['*', '$', '%'])) {
        assert!(
            !line.contains("f2") && !line.contains("f3") && line != "x",
            "{line} in {names}"
        );
    }
});

//! The command table follows the upstream: commands respite's built-in table lacks are
//! forwarded when the upstream serves them, with their keys found from the upstream's own key
//! specs and prefixed for a tenant (judged by the keys the upstream holds), FCALL included.
use crate::both;
use crate::support::{Kind, Proxy, Server, TenantToml, bulk, tenants};

/// Two prefixed tenants allowed everything: `app` trusted with scripts, `plain` not (also
/// slow_commands.rs's).
pub(crate) fn tenant_config() -> String {
    tenants(&[
        TenantToml::new("app", "app:")
            .login("pw")
            .allow(&["+@all"])
            .scripts(),
        TenantToml::new("plain", "plain:")
            .login("pw")
            .allow(&["+@all"]),
    ])
}

/// The upstream's `COMMAND INFO name` is a one-element array holding the entry, or a null
/// (`$-1` from Redis 7.0, `*-1` elsewhere) for a command it does not have.
fn upstream_has(server: &Server, name: &str) -> bool {
    let reply = server.raw().cmd(&[b"COMMAND", b"INFO", name.as_bytes()]);
    reply.starts_with(b"*1\r\n*") && !reply.starts_with(b"*1\r\n*-1")
}

both!(lcs_forwards_with_prefixed_keys, |kind: Kind| {
    let server = Server::start(kind);
    assert!(upstream_has(&server, "lcs"));
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut c = proxy.login("app", "pw");
    assert_eq!(c.cmd(&[b"SET", b"a", b"ohmytext"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", b"b", b"mynewtext"]), b"+OK\r\n");
    // Keys found from the upstream's key spec (LCS: index 1, range of two): the tenant's own.
    assert_eq!(c.cmd(&[b"LCS", b"a", b"b"]), bulk("mytext"));
    let mut up = server.raw();
    assert_eq!(up.cmd(&[b"LCS", b"app:a", b"app:b"]), bulk("mytext"));
    assert_eq!(up.cmd(&[b"EXISTS", b"a", b"b"]), b":0\r\n");
    // OBJECT, a container only the upstream's table has: its subcommand's key is prefixed too.
    assert_eq!(c.cmd(&[b"OBJECT", b"ENCODING", b"a"]), bulk("embstr"));
    assert_eq!(
        c.cmd(&[b"OBJECT", b"ENCODING", b"missing"]),
        up.cmd(&[b"OBJECT", b"ENCODING", b"app:missing"])
    );
    // GEOSEARCHSTORE writes where the tenant's keys are.
    c.cmd(&[b"GEOADD", b"g", b"13.361389", b"38.115556", b"Palermo"]);
    assert_eq!(
        c.cmd(&[
            b"GEOSEARCHSTORE",
            b"dst",
            b"g",
            b"FROMLONLAT",
            b"15",
            b"37",
            b"BYRADIUS",
            b"200",
            b"km"
        ]),
        b":1\r\n"
    );
    assert_eq!(up.cmd(&[b"ZCARD", b"app:dst"]), b":1\r\n");
    assert_eq!(up.cmd(&[b"EXISTS", b"dst"]), b":0\r\n");
    // Arity is the upstream's: a wrong call gets Redis's own error.
    let direct = up.cmd(&[b"LCS", b"a"]);
    assert_eq!(c.cmd(&[b"LCS", b"a"]), direct);
    // SWAPDB acts beyond the namespace: refused to a prefixed tenant, forwarded without one.
    let refused = String::from_utf8(c.cmd(&[b"SWAPDB", b"0", b"1"])).unwrap();
    assert!(refused.starts_with('-'), "{refused}");
    assert_eq!(
        up.cmd(&[b"DBSIZE"]),
        b":4\r\n",
        "nothing moved between databases"
    );
});

both!(
    untenanted_clients_get_every_upstream_command,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = proxy.raw();
        let mut up = server.raw();
        for cmd in [
            &[&b"SET"[..], b"a", b"x"][..],
            &[b"OBJECT", b"ENCODING", b"a"],
            &[b"LCS", b"a", b"a"],
            &[b"SWAPDB", b"0", b"0"],
            &[b"OBJECT", b"HELP"],
        ] {
            assert_eq!(
                c.cmd(cmd),
                up.cmd(cmd),
                "{:?}",
                String::from_utf8_lossy(cmd[0])
            );
        }
        // ZRANK … WITHSCORE (Redis 7.2+, Valkey): the upstream's arity decides.
        c.cmd(&[b"ZADD", b"z", b"1.5", b"m"]);
        let args: &[&[u8]] = &[b"ZRANK", b"z", b"m", b"WITHSCORE"];
        assert_eq!(c.cmd(args), up.cmd(args));
        // Still unknown to both: Redis's own error text.
        let args: &[&[u8]] = &[b"NOSUCHCOMMAND", b"x"];
        assert_eq!(c.cmd(args), up.cmd(args));
    }
);

both!(a_newer_servers_command_forwards_prefixed, |kind: Kind| {
    let server = Server::start(kind);
    // HEXPIRE (Valkey 9, Redis 7.4): not in respite's built-in table. Where the server has it,
    // it must forward with its key prefixed; where it does not, it stays unknown.
    let has = upstream_has(&server, "hexpire");
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut c = proxy.login("app", "pw");
    let mut up = server.raw();
    c.cmd(&[b"HSET", b"h", b"f", b"v", b"g", b"w"]);
    let reply = c.cmd(&[b"HEXPIRE", b"h", b"100", b"FIELDS", b"1", b"f"]);
    if !has {
        assert!(String::from_utf8_lossy(&reply).contains("unknown command"));
        return;
    }
    assert_eq!(reply, b"*1\r\n:1\r\n");
    // Judged by the upstream: the field of the tenant's hash has the TTL, nothing else exists.
    let ttl = up.cmd(&[b"HTTL", b"app:h", b"FIELDS", b"2", b"f", b"g"]);
    let ttl = String::from_utf8(ttl).unwrap();
    let lines: Vec<&str> = ttl.split("\r\n").collect();
    let f_ttl: i64 = lines[1].trim_start_matches(':').parse().unwrap();
    assert!((1..=100).contains(&f_ttl), "{ttl}");
    assert_eq!(lines[2], ":-1", "{ttl}");
    assert_eq!(up.cmd(&[b"EXISTS", b"h"]), b":0\r\n");
    // Keys past the specs' reach are refused: a wrong numfields leaves nothing half-prefixed.
    let direct = up.cmd(&[b"HEXPIRE", b"app:h", b"100", b"FIELDS", b"2", b"f"]);
    assert_eq!(
        c.cmd(&[b"HEXPIRE", b"h", b"100", b"FIELDS", b"2", b"f"]),
        direct
    );
});

both!(fcall_with_a_loaded_library, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start_with_config(&server.url(), &tenant_config(), &[]);
    let mut c = proxy.login("app", "pw");
    let mut up = server.raw();
    let lib = b"#!lua name=mylib\n\
        redis.register_function('setget', function(keys, args) \
          redis.call('SET', keys[1], args[1]) return redis.call('GET', keys[1]) end)\n\
        redis.register_function{function_name='get_ro', \
          callback=function(keys, args) return redis.call('GET', keys[1]) end, \
          flags={'no-writes'}}";
    assert_eq!(c.cmd(&[b"FUNCTION", b"LOAD", lib]), bulk("mylib"));
    assert_eq!(
        c.cmd(&[b"FCALL", b"setget", b"1", b"k", b"hello"]),
        bulk("hello")
    );
    // The declared key was prefixed: the upstream holds the tenant's key, not the bare one.
    assert_eq!(up.cmd(&[b"GET", b"app:k"]), bulk("hello"));
    assert_eq!(up.cmd(&[b"EXISTS", b"k"]), b":0\r\n");
    assert_eq!(c.cmd(&[b"FCALL_RO", b"get_ro", b"1", b"k"]), bulk("hello"));
    let list = c.cmd(&[b"FUNCTION", b"LIST"]);
    assert!(String::from_utf8_lossy(&list).contains("mylib"));
    assert!(c.cmd(&[b"FUNCTION", b"STATS"]).starts_with(b"*"));
    // numkeys checked as EVAL's: more keys than arguments is Redis's own error (the function's
    // upstream name is in the tenant's function namespace, docs/tenants.md).
    assert_eq!(
        c.cmd(&[b"FCALL", b"setget", b"5", b"k"]),
        up.cmd(&[b"FCALL", b"respite_6170703a_setget", b"5", b"k"])
    );
    assert_eq!(c.cmd(&[b"FUNCTION", b"DELETE", b"mylib"]), b"+OK\r\n");
    assert_eq!(up.cmd(&[b"FUNCTION", b"LIST"]), b"*0\r\n");
    // A tenant not trusted with scripts may not call functions.
    let mut plain = proxy.login("plain", "pw");
    let refused = String::from_utf8(plain.cmd(&[b"FCALL", b"setget", b"1", b"k", b"x"])).unwrap();
    assert!(refused.contains("scripts"), "{refused}");
    let refused = String::from_utf8(plain.cmd(&[b"FUNCTION", b"LOAD", lib])).unwrap();
    assert!(refused.contains("scripts"), "{refused}");
    assert_eq!(up.cmd(&[b"EXISTS", b"plain:k"]), b":0\r\n");
});

// The latency metric samples a session's first command: one only the upstream's table has (its
// id past the built-in table's) must be timed by name, not crash the session (it did: an index
// past the handle table, found when `scripts/instructions.sh` began its run with LCS).
both!(
    a_first_command_only_the_upstream_knows_is_timed,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let mut c = proxy.raw();
        assert_eq!(c.cmd(&[b"LCS", b"a", b"b"]), bulk(""));
        assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
        let (_, metrics) = proxy.admin_get("/metrics");
        assert!(
            metrics.contains("respite_command_duration_seconds_count{command=\"lcs\"}"),
            "{metrics}"
        );
    }
);

//! SCRIPT KILL and FUNCTION KILL of a prefixed tenant end only its own running script (issue
//! 22): another tenant's KILL gets `-NOTBUSY` while it runs — also when that tenant has a script
//! of its own queued behind it, and when the running script is a direct client's. The judge is
//! the script itself: one that runs its course writes a key upstream at its end, so a kill that
//! reached it would leave the key unwritten.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, script_tenants_a_and_b, text, wait_until};
use std::time::Duration;

/// Runs for ARGV[1] ms (by the server's clock), then writes KEYS[1]: killable until its end.
const BOUNDED: &str = "local function ms() local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000) end \
    local start = ms() while ms() - start < tonumber(ARGV[1]) do end \
    redis.call('SET', KEYS[1], 'done') return 1";

const LIB: &str = "#!lua name=slow\nredis.register_function('bounded', function(keys, args) \
    local function ms() local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000) end \
    local start = ms() while ms() - start < tonumber(args[1]) do end \
    redis.call('SET', keys[1], 'done') return 1 end)\n\
    redis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}";

const NOTBUSY: &str = "-NOTBUSY No scripts in execution right now.\r\n";

fn setup(kind: Kind) -> (Server, Proxy) {
    let server = Server::start(kind);
    let set = server
        .raw()
        .cmd(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"200"]);
    assert_eq!(set, b"+OK\r\n");
    let config = script_tenants_a_and_b();
    let proxy = Proxy::start_with_config(&server.url(), &config, &[]);
    (server, proxy)
}

/// Wait until `client`'s GET is answered `-BUSY`: the server is past its time limit.
fn wait_busy(client: &mut Raw) {
    wait_until(Duration::from_secs(10), || {
        client.cmd(&[b"GET", b"probe"]).starts_with(b"-BUSY")
    })
    .expect("the upstream answers -BUSY while the script runs");
}

both!(another_tenants_kill_never_ends_a_script, |kind: Kind| {
    let (server, proxy) = setup(kind);
    let mut direct = server.raw();
    let (mut a, mut a2) = (proxy.login("a", "pa"), proxy.login("a", "pa"));
    let (mut b, mut b2) = (proxy.login("b", "pb"), proxy.login("b", "pb"));
    for t in [&mut a, &mut b] {
        assert_eq!(
            text(t.cmd(&[b"FUNCTION", b"LOAD", LIB.as_bytes()])),
            "$4\r\nslow\r\n"
        );
    }

    // a's EVAL runs; b queues one of its own behind it (the same slow lane), then tries both kills.
    a.send(&encode(&[
        b"EVAL",
        BOUNDED.as_bytes(),
        b"1",
        b"done1",
        b"1500",
    ]));
    wait_busy(&mut b);
    b2.send(&encode(&[b"EVAL", b"return 2", b"0"]));
    assert_eq!(text(b.cmd(&[b"SCRIPT", b"KILL"])), NOTBUSY);
    assert_eq!(text(b.cmd(&[b"FUNCTION", b"KILL"])), NOTBUSY);
    assert_eq!(text(a.reply().expect("a's script ends")), ":1\r\n");
    assert_eq!(text(direct.cmd(&[b"GET", b"a:done1"])), "$4\r\ndone\r\n");
    assert_eq!(text(b2.reply().expect("b's script runs after")), ":2\r\n");

    // The same for a's function, whatever b asks.
    a.send(&encode(&[b"FCALL", b"bounded", b"1", b"done2", b"1500"]));
    wait_busy(&mut b);
    assert_eq!(text(b.cmd(&[b"FUNCTION", b"KILL"])), NOTBUSY);
    assert_eq!(text(b.cmd(&[b"SCRIPT", b"KILL"])), NOTBUSY);
    assert_eq!(text(a.reply().expect("a's function ends")), ":1\r\n");
    assert_eq!(text(direct.cmd(&[b"GET", b"a:done2"])), "$4\r\ndone\r\n");

    // A direct client's script, with a's EVAL sent just behind it: a's SCRIPT KILL is not sent.
    direct.send(&encode(&[
        b"EVAL",
        BOUNDED.as_bytes(),
        b"1",
        b"direct",
        b"1500",
    ]));
    std::thread::sleep(Duration::from_millis(50));
    a2.send(&encode(&[b"EVAL", b"return 3", b"0"]));
    assert_eq!(text(a.cmd(&[b"SCRIPT", b"KILL"])), NOTBUSY);
    let late = text(a2.reply().expect("a's script is refused or runs"));
    assert!(late.starts_with("-BUSY") || late == ":3\r\n", "{late}");
    assert_eq!(
        text(direct.reply().expect("the direct script ends")),
        ":1\r\n"
    );
    assert_eq!(
        text(server.raw().cmd(&[b"GET", b"direct"])),
        "$4\r\ndone\r\n"
    );

    // Nothing running: NOTBUSY, as Redis says.
    assert_eq!(text(b.cmd(&[b"SCRIPT", b"KILL"])), NOTBUSY);
    assert_eq!(text(b.cmd(&[b"FUNCTION", b"KILL"])), NOTBUSY);
});

both!(a_tenant_kills_its_own_script, |kind: Kind| {
    let (server, proxy) = setup(kind);
    let (mut a, mut a2, mut b) = (
        proxy.login("a", "pa"),
        proxy.login("a", "pa"),
        proxy.login("b", "pb"),
    );
    assert_eq!(
        text(a.cmd(&[b"FUNCTION", b"LOAD", LIB.as_bytes()])),
        "$4\r\nslow\r\n"
    );
    // b's script queued behind a's, which a ends: b's then runs.
    a.send(&encode(&[b"EVAL", b"while true do end", b"0"]));
    wait_busy(&mut a2);
    b.send(&encode(&[
        b"EVAL",
        BOUNDED.as_bytes(),
        b"1",
        b"after",
        b"10",
    ]));
    // FUNCTION KILL on its own EVAL: the server's refusal, as Redis gives it.
    let wrong = text(a2.cmd(&[b"FUNCTION", b"KILL"]));
    assert!(
        wrong.starts_with("-BUSY") && wrong.contains("SCRIPT KILL"),
        "{wrong}"
    );
    assert_eq!(text(a2.cmd(&[b"SCRIPT", b"KILL"])), "+OK\r\n");
    assert!(text(a.reply().expect("killed")).contains("killed"));
    assert_eq!(text(b.reply().expect("b's script runs")), ":1\r\n");
    assert_eq!(
        text(server.raw().cmd(&[b"GET", b"b:after"])),
        "$4\r\ndone\r\n"
    );

    a.send(&encode(&[b"FCALL", b"spin", b"0"]));
    wait_busy(&mut a2);
    let wrong = text(a2.cmd(&[b"SCRIPT", b"KILL"]));
    assert!(wrong.starts_with("-BUSY"), "{wrong}");
    assert_eq!(text(a2.cmd(&[b"FUNCTION", b"KILL"])), "+OK\r\n");
    assert!(text(a.reply().expect("killed")).contains("killed"));
    assert_eq!(a.cmd(&[b"PING"]), b"+PONG\r\n");
});

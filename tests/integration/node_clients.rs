//! ioredis (from npm, pinned in tests/node/package.json and installed by scripts/test.sh with
//! `npm ci`) through respite against Redis and Valkey: blocking pops, WATCH/MULTI/EXEC, Pub/Sub
//! in subscriber mode, pipelines, scripts (defineCommand's EVALSHA), the `db` option and the
//! upstream's own commands. The scenarios are in tests/node/families.js; they assert on
//! ioredis's results and on the upstream's own state over a direct connection.
use crate::both;
use crate::support::{Kind, Proxy, Server};
use std::path::Path;
use std::process::Command;

const FAMILIES: [&str; 7] = [
    "blocking pops",
    "watch multi exec",
    "pub/sub",
    "pipelines",
    "scripts",
    "select db",
    "upstream commands",
];

both!(ioredis_through_respite, |kind: Kind| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ioredis").is_dir(),
        "ioredis is not installed: run scripts/test.sh (npm ci in tests/node)"
    );
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let server_port = server.url().rsplit(':').next().unwrap().to_string();
    // Bounded: a scenario that hangs fails the test instead of holding the suite.
    let out = Command::new("timeout")
        .current_dir(&dir)
        .args([
            "60",
            "node",
            "families.js",
            &proxy.addr.port().to_string(),
            server_port.trim_end_matches('/'),
        ])
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ioredis scenarios failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for family in FAMILIES {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok {family}"))),
            "{family} did not run:\n{stdout}"
        );
    }
});

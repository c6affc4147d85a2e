//! The one test harness, included by every test crate (`#[path = "support/mod.rs"] mod support;`):
//! real redis-server / valkey-server processes on ephemeral loopback ports ([`Server`], in
//! `servers.rs`), respite in-process ([`Proxy`]) and as the shipped binary ([`Binary`], both in
//! `proxy.rs`), a raw RESP connection for byte-exact comparisons ([`Raw`], [`encode`], [`text`],
//! [`frame_len`]) and replies decoded ([`Value`]), in `resp.rs`; `[[tenant]]` tables
//! ([`TenantToml`], in `tenant.rs`), and here
//! [`wait_until`] for conditions with no event to await, the admin/RSS readers ([`http_get`],
//! [`rss_kib_of`]), signals by PID, python3 clients and the [`both!`] macro.
//!
//! Every process a test starts is owned by a value here and killed by PID when that value drops.
// Each test crate uses a part of the harness.
#![allow(dead_code, unused_imports)]

mod cluster;
mod proxy;
mod resp;
mod servers;
mod tenant;

pub use cluster::Cluster;
pub use proxy::{Binary, Proxy, metric};
pub use resp::{Raw, Value, bulk, encode, frame_len, text, words};
pub use servers::{KINDS, Kind, Server, free_port};
pub use tenant::{TenantToml, script_tenants_a_and_b, tenants};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Resident memory of this test process in KiB (the proxy runs in-process).
pub fn rss_kib() -> u64 {
    rss_kib_of("self")
}

/// Resident memory of a process (`"self"` or a PID) in KiB.
pub fn rss_kib_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Poll `cond` until it holds or `limit` passes (for conditions with no event to wait on, such as
/// a child process accepting connections).
pub fn wait_until<T>(limit: Duration, mut cond: impl FnMut() -> T) -> Option<()>
where
    T: Into<bool>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while start.elapsed() < limit {
        if cond().into() {
            return Some(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    None
}

/// Run `body` once against Redis and once against Valkey, each with its own fresh server.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn redis() {
                let f: fn($crate::support::Kind) = $body;
                f($crate::support::Kind::Redis)
            }
            #[test]
            fn valkey() {
                let f: fn($crate::support::Kind) = $body;
                f($crate::support::Kind::Valkey)
            }
        }
    };
}

/// A GET on an admin port (`/metrics`, `/stats`, …): the status and the body.
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Run python3 (redis-py clients, installed by scripts/test.sh) with `args`; it must succeed.
/// Its standard output.
pub fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 {:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Send a signal (`"STOP"`, `"CONT"`, `"TERM"`) to one process, by its PID.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A process a test started (a tool such as prometheus, or the binary run with a command line of
/// the test's own), killed by its PID if the test ends before it exits on its own.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

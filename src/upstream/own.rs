//! respite's own connections to the upstream, by the address the upstream sees each from (the
//! `ip:port` a MONITOR line names), and what each carries: clients' commands (the shared and
//! pinned pools, SCRIPT KILL's own connection) or only respite's own traffic (the health probe,
//! the near cache's tracking connections, Pub/Sub's subscriber, the command-table read, monitors
//! and tracking redirect targets). MONITOR reads it to show a client nothing of respite's own
//! and, for a tenant, nothing from outside respite.
//!
//! # Invariants
//! An address is listed exactly while a connection of respite's own holds it: the entry is made
//! when the connection is opened, before its first byte is sent, and removed when its read half
//! is dropped (the connection's end), so a port the system gives again to another client is not
//! taken for respite's. A unix-socket connection has no address of its own (every client of the
//! socket shows as `unix:<path>`) and is not listed.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// What a connection of respite's own carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Clients' commands (and respite's markers, handshakes and resets around them).
    Carrier,
    /// Only respite's own traffic.
    Own,
}

/// Address -> (role, how many connections hold it: a closed one's port may be reused by the
/// next before its read half is dropped).
static ADDRS: LazyLock<Mutex<HashMap<String, (Role, usize)>>> = LazyLock::new(Default::default);

fn addrs() -> std::sync::MutexGuard<'static, HashMap<String, (Role, usize)>> {
    ADDRS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The role of the connection the upstream sees at `addr`, if it is one of respite's own.
pub fn role(addr: &str) -> Option<Role> {
    addrs().get(addr).map(|e| e.0)
}

/// Mark the connection at `addr` as carrying only respite's own traffic.
pub fn set_own(addr: &str) {
    if let Some(e) = addrs().get_mut(addr) {
        e.0 = Role::Own;
    }
}

/// The role a connection opened under client name `name` has: the pools that carry clients'
/// commands name theirs so; the near cache's tracking connections share the shared pool's name
/// and are marked [`set_own`] by their opener.
pub fn role_of_name(name: &str) -> Role {
    match name {
        "respite" | "respite-slow" | "respite-bulk" | "respite-pinned" | "respite-admin" => {
            Role::Carrier
        }
        _ => Role::Own,
    }
}

/// A connection's entry, removed when dropped.
pub struct Registration(String);

impl Registration {
    pub fn new(addr: String, role: Role) -> Registration {
        let mut map = addrs();
        let e = map.entry(addr.clone()).or_insert((role, 0));
        e.0 = role;
        e.1 += 1;
        Registration(addr)
    }

    pub fn addr(&self) -> &str {
        &self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = addrs();
        if let Some(e) = map.get_mut(&self.0) {
            e.1 -= 1;
            if e.1 == 0 {
                map.remove(&self.0);
            }
        }
    }
}

/// A read half that keeps its connection's [`Registration`] for as long as it lives.
pub struct Registered<R> {
    pub inner: R,
    pub _entry: Registration,
}

impl<R: AsyncRead + Unpin> AsyncRead for Registered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_while_held() {
        let a = Registration::new("192.0.2.1:1".into(), Role::Carrier);
        let b = Registration::new("192.0.2.1:1".into(), Role::Carrier);
        assert_eq!(role("192.0.2.1:1"), Some(Role::Carrier));
        drop(a);
        assert_eq!(role("192.0.2.1:1"), Some(Role::Carrier));
        set_own("192.0.2.1:1");
        assert_eq!(role("192.0.2.1:1"), Some(Role::Own));
        drop(b);
        assert_eq!(role("192.0.2.1:1"), None);
        assert_eq!(role_of_name("respite-probe"), Role::Own);
        assert_eq!(role_of_name("respite-pinned"), Role::Carrier);
    }
}

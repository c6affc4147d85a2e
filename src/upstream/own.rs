//! respite's own connections to the upstream, by the address the upstream sees each from (the
//! `ip:port` a MONITOR line names) and the upstream it goes to, and what each carries: clients'
//! commands (the shared and pinned pools, SCRIPT KILL's own connection) or only respite's own
//! traffic (the health probe, the near cache's tracking connections, Pub/Sub's subscriber, the
//! command-table read, monitors and tracking redirect targets). MONITOR reads it to show a client
//! nothing of respite's own and, for a tenant, nothing from outside respite.
//!
//! # Invariants
//! An entry is keyed by the local address *and* the upstream (its configured address): the
//! kernel keeps a TCP connection's four-tuple unique, not its local port, so connections to two
//! upstreams (a cluster's nodes; two proxies in one process) can share one local address, and a
//! monitor of one upstream must not take a client's line for the other's probe (it hid it).
//! An entry is listed exactly while a connection of respite's own holds it: made when the
//! connection is opened, before its first byte is sent, and removed when its read half is
//! dropped (the connection's end), so a port the system gives again to another client is not
//! taken for respite's. A unix-socket connection has no address of its own (every client of the
//! socket shows as `unix:<path>`) and is not listed.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
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

/// A connection as the registry knows it: the local address the upstream sees it from, and the
/// upstream (its configured address, as [`super::handshake::addr`] gives it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub local: String,
    pub upstream: Arc<str>,
}

/// Key -> (role, how many connections hold it: a closed one's port may be reused by the next
/// before its read half is dropped).
static ADDRS: LazyLock<Mutex<HashMap<Key, (Role, usize)>>> = LazyLock::new(Default::default);

fn addrs() -> std::sync::MutexGuard<'static, HashMap<Key, (Role, usize)>> {
    ADDRS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The role of the connection `upstream` sees at `addr`, if it is one of respite's own. With
/// `upstream` unknown (`None`: a reply that came from some node of a cluster), any of respite's
/// connections at `addr` answers, `Own` only if every one is.
pub fn role(addr: &str, upstream: Option<&str>) -> Option<Role> {
    let map = addrs();
    match upstream {
        Some(upstream) => map
            .get(&Key {
                local: addr.to_string(),
                upstream: upstream.into(),
            })
            .map(|e| e.0),
        None => map
            .iter()
            .filter(|(k, _)| k.local == addr)
            .map(|(_, e)| e.0)
            .reduce(|a, b| if a == b { a } else { Role::Carrier }),
    }
}

/// Mark the connection `key` as carrying only respite's own traffic.
pub fn set_own(key: &Key) {
    if let Some(e) = addrs().get_mut(key) {
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
pub struct Registration(Key);

impl Registration {
    pub fn new(key: Key, role: Role) -> Registration {
        let mut map = addrs();
        let e = map.entry(key.clone()).or_insert((role, 0));
        e.0 = role;
        e.1 += 1;
        Registration(key)
    }

    pub fn key(&self) -> &Key {
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

    fn key(local: &str, upstream: &str) -> Key {
        Key {
            local: local.into(),
            upstream: upstream.into(),
        }
    }

    #[test]
    fn listed_while_held() {
        let upstream = "198.51.100.1:6379";
        let up = Some(upstream);
        let a = Registration::new(key("192.0.2.1:1", upstream), Role::Carrier);
        let b = Registration::new(key("192.0.2.1:1", upstream), Role::Carrier);
        assert_eq!(role("192.0.2.1:1", up), Some(Role::Carrier));
        drop(a);
        assert_eq!(role("192.0.2.1:1", up), Some(Role::Carrier));
        set_own(&key("192.0.2.1:1", upstream));
        assert_eq!(role("192.0.2.1:1", up), Some(Role::Own));
        drop(b);
        assert_eq!(role("192.0.2.1:1", up), None);
        assert_eq!(role_of_name("respite-probe"), Role::Own);
        assert_eq!(role_of_name("respite-pinned"), Role::Carrier);
    }

    #[test]
    fn one_local_address_to_two_upstreams_is_two_connections() {
        // The kernel gives one local port to connections to different destinations.
        let (a, b) = ("198.51.100.1:6379", "198.51.100.2:6379");
        let carrier = Registration::new(key("192.0.2.2:7", a), Role::Carrier);
        let own = Registration::new(key("192.0.2.2:7", b), Role::Own);
        assert_eq!(role("192.0.2.2:7", Some(a)), Some(Role::Carrier));
        assert_eq!(role("192.0.2.2:7", Some(b)), Some(Role::Own));
        assert_eq!(role("192.0.2.2:7", Some("198.51.100.3:6379")), None);
        // Not knowing which upstream: respite's, but not all of its own.
        assert_eq!(role("192.0.2.2:7", None), Some(Role::Carrier));
        drop(carrier);
        assert_eq!(role("192.0.2.2:7", None), Some(Role::Own));
        set_own(&key("192.0.2.2:7", a));
        assert_eq!(role("192.0.2.2:7", Some(a)), None);
        drop(own);
        assert_eq!(role("192.0.2.2:7", None), None);
    }
}

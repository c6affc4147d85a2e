//! CLIENT UNBLOCK for respite's clients: a client blocked in BLPOP (or any blocking command) is
//! blocked on its pinned connection, so unblocking it means `CLIENT UNBLOCK <that connection's
//! upstream id>` sent from another connection. A [`Blockable`] is that address for one lease.
//!
//! # Invariants
//! - An unblock reaches only the lease it was meant for. The lease's task retires its
//!   [`Blockable`] ([`Blockable::retire`]) once the lease has ended and before the connection
//!   can carry anyone else's commands; retiring waits for every unblock that was let through
//!   ([`Blockable::enter`]) to be answered, and none is let through after. So an unblock never
//!   lands on the next client that leases the same connection.
//!
//! This module never decides who may unblock whom: the session does (tenants).
use std::sync::Arc;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// The upstream address of one lease of a pinned connection, for CLIENT UNBLOCK.
pub struct Blockable {
    /// The connection's id on the upstream (`None`: the upstream did not say).
    id: Option<u64>,
    /// True while the lease lasts.
    live: Arc<RwLock<bool>>,
}

/// Held while an unblock is on its way: the lease cannot end meanwhile.
pub struct Entered {
    pub id: u64,
    _guard: OwnedRwLockReadGuard<bool>,
}

impl Blockable {
    pub(super) fn new(id: Option<u64>) -> Arc<Blockable> {
        Arc::new(Blockable {
            id,
            live: Arc::new(RwLock::new(true)),
        })
    }

    /// Let an unblock through to this lease's connection; hold the result until its reply.
    /// `None`: the lease has ended (nothing of this client's is blocked there any more).
    pub async fn enter(&self) -> Option<Entered> {
        let guard = self.live.clone().read_owned().await;
        match (*guard, self.id) {
            (true, Some(id)) => Some(Entered { id, _guard: guard }),
            _ => None,
        }
    }

    /// The lease's upstream connection id while the lease lasts, without waiting: `None` once it
    /// has ended (or is ending), or when the upstream did not say.
    pub fn live_id(&self) -> Option<u64> {
        match self.live.try_read() {
            Ok(live) if *live => self.id,
            _ => None,
        }
    }

    /// The lease ended: wait for the unblocks on their way, and let no more through.
    pub(super) async fn retire(&self) {
        *self.live.write().await = false;
    }
}

/// `CLIENT UNBLOCK <id> [reason]` for the upstream.
pub fn command(entered: &Entered, reason: Option<&[u8]>) -> bytes::Bytes {
    let id = entered.id.to_string();
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", id.as_bytes()];
    args.extend(reason);
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode::command(&mut out, &args);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retired_lease_lets_no_unblock_through() {
        let b = Blockable::new(Some(7));
        let entered = b.enter().await.expect("live");
        assert_eq!(
            &command(&entered, Some(b"ERROR"))[..],
            b"*4\r\n$6\r\nCLIENT\r\n$7\r\nUNBLOCK\r\n$1\r\n7\r\n$5\r\nERROR\r\n"
        );
        // Retiring waits for the unblock on its way.
        let retire = b.retire();
        tokio::pin!(retire);
        assert!(futures_poll_once(retire.as_mut()).await.is_none());
        drop(entered);
        retire.await;
        assert!(b.enter().await.is_none());
        assert!(Blockable::new(None).enter().await.is_none());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            v = f => Some(v),
            () = std::future::ready(()) => None,
        }
    }
}

//! The reader while it waits: for room in the client's reply queue, for a barrier (every
//! earlier reply written), or for a reply it needs before going on. Meanwhile it keeps reading
//! the client's socket, as Redis keeps reading a blocked client, so a client that leaves is seen
//! at once rather than when the wait ends — which, behind a blocking command, may be never, or
//! after the upstream has popped an element for a client that is gone.
//!
//! It reads only while a reply may be owed on a connection of the client's own (a pinned one,
//! held or just given back): elsewhere a wait ends on its own, and a client that left is seen
//! by the writer or the next read. What arrives meanwhile is kept (`Outgoing::parked`, at most
//! 1 MiB) and framed after the wait, in order. The end of the stream seen then *hangs up* the
//! session: its pinned connections are closed at once (the upstream then pops nothing for it),
//! nothing more is sent upstream, and the reader stops, as Redis frees a blocked client that
//! closes without running what it pipelined behind it.
//!
//! This file never frames or dispatches; it only reads and waits.
use super::Outgoing;
use crate::server::io::ClientIo;
use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;

/// Reads made while parked: behind a pointer, so the reader's stages need not be generic over
/// the socket. Rare (only while waiting), so boxing the read costs nothing that matters.
pub(crate) trait ParkedRead: Send + Sync {
    fn read_parked<'a>(
        &'a self,
        buf: &'a mut BytesMut,
        want: usize,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>>;
}

impl<C: ClientIo> ParkedRead for C {
    fn read_parked<'a>(
        &'a self,
        buf: &'a mut BytesMut,
        want: usize,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>> {
        Box::pin(self.read(buf, want))
    }
}

/// How much one read while parked takes, and the most kept (the rest waits in the kernel, and
/// TCP pushes back): a client that pipelines more than this behind a blocking command and then
/// leaves is seen to leave only once that command returns.
const PARKED_READ: usize = 16 * 1024;
pub(super) const PARKED_MAX: usize = 1024 * 1024;

impl Outgoing<'_> {
    /// Wait for `f`. While a reply may be owed on a connection of the client's own (a pinned
    /// one, held or just given back), the client is read meanwhile. `None`: it hung up first.
    pub(crate) async fn park<F: Future>(&mut self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            if self.hung_up {
                return None;
            }
            let owed = self.pin.held().is_some() || self.pin.after_pinned();
            let room = self.parked.len() < self.parked_max;
            if !(owed && room) {
                // Nothing owed that could wait forever: the writer sees a client that left.
                return Some(f.await);
            }
            tokio::select! {
                biased;
                v = &mut f => return Some(v),
                r = self.sock.read_parked(&mut self.parked, PARKED_READ) => {
                    if !matches!(r, Ok(n) if n > 0) {
                        self.hang_up();
                    }
                }
            }
        }
    }

    /// The client's stream ended while a reply was owed on a pinned connection (see the module).
    fn hang_up(&mut self) {
        self.hung_up = true;
        // Nothing waits for the client any more, and its pinned connections close now.
        self.fifo.abandon();
        self.pin.gone();
    }

    /// Whether the client hung up (see the module): nothing more goes upstream for it.
    pub(crate) fn hung_up(&self) -> bool {
        self.hung_up
    }

    /// Bytes arrived while parked, not yet taken.
    pub(crate) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Bytes that arrived while parked, for the framer: they came after everything in `buf`.
    pub(crate) fn take_parked(&mut self, buf: &mut BytesMut) -> bool {
        if self.parked.is_empty() {
            return false;
        }
        buf.extend_from_slice(&std::mem::take(&mut self.parked));
        true
    }
}

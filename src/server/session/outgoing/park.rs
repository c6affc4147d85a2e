//! The reader while it waits: for room in the client's reply queue, for the client to take the
//! replies it is owed, for a barrier (every earlier reply written), or for a reply it needs
//! before going on. Meanwhile it keeps reading the client's socket, as Redis keeps reading a
//! client whatever it owes it: a client that writes its whole pipeline before reading any reply
//! (redis-py's `pipeline()`) is blocked writing until it has written everything, so a reader that
//! stopped reading it while owing it replies would wait for it for ever, and it for the reader.
//! And a client that leaves is seen at once rather than when the wait ends — which, behind a
//! blocking command, may be never, or after the upstream has popped an element for a client
//! that is gone.
//!
//! What arrives meanwhile is kept (`Outgoing::parked`) and framed after the wait, in order,
//! counted against the client's limits ([`ReplyBudget::hold_parked`]): the replies it leaves
//! unread plus the requests waiting behind them stay within `limits.max_reply_bytes`, or it is
//! closed, as Redis closes a client past its output buffer limit, once it is not taking its
//! replies (its writer is blocked on its socket); all clients' together within
//! `limits.max_client_memory`. A client at its limit that still reads (the wait is for the
//! upstream) is only not read for a while: TCP backpressure.
//!
//! The end of the stream seen while a reply may be owed on a connection of the client's own (a
//! pinned one, held or just given back) *hangs up* the session: its pinned connections are
//! closed at once (the upstream then pops nothing for it), nothing more is sent upstream, and
//! the reader stops, as Redis frees a blocked client that closes without running what it
//! pipelined behind it. Elsewhere the end is only noted: what came before it is served, as if
//! the reader had read it without waiting.
//!
//! This file never frames or dispatches; it only reads and waits.
use super::Outgoing;
use crate::server::io::ClientIo;
#[cfg(doc)]
use crate::upstream::ReplyBudget;
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

/// How much one read while parked takes: the most that may go past the client's limits before
/// they are checked.
const PARKED_READ: usize = 16 * 1024;

impl Outgoing<'_> {
    /// Wait for `f`, reading the client meanwhile (see the module). `None`: it hung up first.
    pub(crate) async fn park<F: Future>(&mut self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            if self.hung_up {
                return None;
            }
            let held = self.parked.len() + self.unframed;
            let room = !self.parked_eof
                && held < self.parked_max
                && self
                    .budget
                    .as_ref()
                    .is_none_or(|b| !b.exceeded() && b.parked_room(held));
            if !room {
                return Some(self.at_limit(f).await);
            }
            tokio::select! {
                biased;
                v = &mut f => return Some(v),
                r = self.sock.read_parked(&mut self.parked, PARKED_READ) => {
                    match r {
                        Ok(n) if n > 0 => {
                            if let Some(b) = &self.budget {
                                // False: closed for its limits; the next turn stops reading.
                                let _ = b.hold_parked(self.parked.len());
                            }
                        }
                        _ if self.pin.held().is_some() || self.pin.after_pinned() => self.hang_up(),
                        _ => self.parked_eof = true,
                    }
                }
            }
        }
    }

    /// Wait for `f` without reading: the client's stream ended, it is closed, or what respite
    /// holds for it reached its limit. At the limit, a client that is not taking its replies
    /// (its writer blocked on its socket), now or while this waits, is closed: it may be writing
    /// the rest of its pipeline before it reads, and would wait for ever. A wait for a client
    /// being closed ends on its own (the writer abandons its queue, which ends every wait here).
    async fn at_limit<F: Future>(&mut self, f: Pin<&mut F>) -> F::Output {
        let mut f = f;
        let Some(b) = self.budget.clone().filter(|_| !self.parked_eof) else {
            return f.await;
        };
        loop {
            if b.exceeded() {
                return f.await;
            }
            if b.is_stalled() {
                b.overflow();
                continue;
            }
            tokio::select! {
                biased;
                v = &mut f => return v,
                () = b.stalled() => {}
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

    /// The reader holds `bytes` not framed yet (see `Outgoing::unframed`).
    pub(crate) fn unframed(&mut self, bytes: usize) {
        self.unframed = bytes;
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
        if let Some(b) = &self.budget {
            // Counted from now on as the reader's request bytes (before its next read).
            let _ = b.hold_parked(0);
        }
        true
    }
}

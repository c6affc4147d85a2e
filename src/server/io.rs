//! Client sockets driven by readiness, one registration shared by a session's reader and writer.
//!
//! tokio's stream types learn that a socket is drained only from a `recv` that fails with
//! `WouldBlock`, so an unpipelined client costs two `recv` calls per request. Through [`AsyncFd`] a
//! read that comes back short (the kernel had no more) clears readiness itself; the guard's tick
//! makes that safe against data that arrived meanwhile. Writes are attempted first and wait for
//! writability only when the socket buffer is full.
//!
//! Reads land in a per-thread scratch buffer and only the bytes that arrived are copied out, so a
//! read need not zero-fill the room it asks for (which safe code would otherwise have to do).
//!
//! The one `unsafe` call in respite is here (`register`): tokio's `AsyncFd::register` asks its caller to vouch
//! that the descriptor stays valid, which an owned std socket does. Measured need: one `recv`
//! fewer per unpipelined request (strace: recvfrom calls went from 2 to 1 per request).
use bytes::BytesMut;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::task::Poll;
use tokio::io::unix::AsyncFd;

/// What a session reads from and writes to: a readiness-driven [`ClientSocket`] (plain TCP and
/// unix, the hot path) or a TLS session (`super::tls_io`). Sessions are generic over it, so the
/// plain path pays no dynamic dispatch.
pub(crate) trait ClientIo: Send + Sync {
    /// Append up to `want` bytes to `buf`; `Ok(0)` is end of stream. Cancel-safe.
    fn read(
        &self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Write all of `data`.
    fn write_all(&self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// No more writes (after the last reply).
    fn shutdown_write(&self) -> impl Future<Output = ()> + Send;
    /// Close both directions at once: the reader sees the end of the stream.
    fn shutdown_both(&self);
    /// Give up on the client: [`ClientIo::shutdown_both`], and when the socket closes the kernel
    /// drops what respite wrote to it and the client has not taken (a reset, not a graceful
    /// close). See [`abort_on_close`].
    fn abort(&self);
}

impl<S: RawStream> ClientIo for ClientSocket<S> {
    fn read(
        &self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        ClientSocket::read(self, buf, want)
    }
    fn write_all(&self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        ClientSocket::write_all(self, data)
    }
    async fn shutdown_write(&self) {
        ClientSocket::shutdown_write(self)
    }
    fn shutdown_both(&self) {
        ClientSocket::shutdown_both(self)
    }
    fn abort(&self) {
        self.fd.get_ref().abort_on_close();
        ClientSocket::shutdown_both(self)
    }
}

/// A connected, non-blocking client socket (TCP or unix).
pub(crate) trait RawStream: AsRawFd + Send + Sync + 'static {
    fn read_into(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_from(&self, buf: &[u8]) -> io::Result<usize>;
    fn shutdown_write(&self);
    fn shutdown_both(&self);
    /// See [`abort_on_close`] (TCP only: a unix socket's unread bytes are bounded by its send
    /// buffer and are not the kernel's TCP memory).
    fn abort_on_close(&self) {}
}

/// TCP and unix streams offer the same calls under the same names; TCP adds its abortive close.
macro_rules! raw_stream {
    ($t:ty { $($extra:item)* }) => {
        impl RawStream for $t {
            fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
            fn write_from(&self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }
            fn shutdown_write(&self) {
                let _ = self.shutdown(std::net::Shutdown::Write);
            }
            fn shutdown_both(&self) {
                let _ = self.shutdown(std::net::Shutdown::Both);
            }
            $($extra)*
        }
    };
}

raw_stream!(std::os::unix::net::UnixStream {});
raw_stream!(std::net::TcpStream {
    fn abort_on_close(&self) {
        abort_on_close(self)
    }
});

/// Unsent bytes the kernel holds for a client before a write waits (`TCP_NOTSENT_LOWAT`): with
/// what the client's own receive buffer takes, what a client that stops reading costs the kernel.
/// Without it the kernel's send buffer grows (autotuning) to megabytes per client: 2,000 clients
/// that never read held 1.6 GiB there, uncounted by `limits.max_client_memory`, which took the
/// kernel past its TCP memory pressure line (`net.ipv4.tcp_mem`); it then dropped packets on
/// respite's upstream connections, which slowed to a crawl of retransmissions. A client that
/// reads is not slowed by it: its bytes leave the send buffer as fast as they are written.
/// Measured in docs/performance.md (issue 24, slow readers).
pub(crate) const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Bound what the kernel holds unsent for an accepted TCP client (see [`NOTSENT_LOWAT`]).
pub(crate) fn bound_send_buffer(s: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

/// When `s` closes, reset the connection instead of closing it gracefully, so the kernel drops
/// what is still queued for the client at once. A graceful close leaves an orphaned socket that
/// holds those bytes (up to the send buffer, megabytes) for as long as the kernel keeps probing
/// a peer that does not read: clients closed for `limits.max_client_memory` moved their replies
/// from respite's memory into the kernel's, 880 MB of them in the 2,000-reader run.
pub(crate) fn abort_on_close(s: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}

/// Register an owned descriptor with the reactor.
#[allow(unsafe_code)]
fn register<T: AsRawFd>(owned: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: every `T` used here is an owned std socket or listener: its descriptor is open for
    // as long as the value lives, `as_raw_fd` always returns that same descriptor, and the AsyncFd
    // owns the value until it is dropped, so the descriptor outlives the registration.
    unsafe { AsyncFd::register(owned) }.map_err(io::Error::from)
}

/// A listening socket whose accepted connections are registered once, by [`ClientSocket`].
/// (tokio's listeners register each accepted stream themselves; re-registering it as an AsyncFd
/// would cost every client a second registration.)
pub(crate) struct Acceptor<L: AsRawFd> {
    fd: AsyncFd<L>,
}

impl<L: AsRawFd> Acceptor<L> {
    pub fn new(listener: L) -> io::Result<Self> {
        Ok(Acceptor {
            fd: register(listener)?,
        })
    }

    /// Accept with `f` (the listener's own non-blocking `accept`), waiting until one is there.
    pub async fn accept<T>(&self, f: impl Fn(&L) -> io::Result<T>) -> io::Result<T> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|l| f(l.get_ref())) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The most one client read takes at once (the session asks for less: see its read size).
pub(crate) const SCRATCH: usize = 256 * 1024;

/// Spare read buffers kept per thread, and the largest kept: enough for the sessions one
/// scheduler pass serves, bounded (at most 512 KiB per thread).
const SPARES: usize = 32;
const SPARE_MAX: usize = 16 * 1024;
const SPARE_MIN: usize = 1024;

/// Per-thread buffers of client reads.
struct ThreadBufs {
    /// What client reads land in before they are copied to the session's buffer, zeroed once.
    scratch: Vec<u8>,
    /// Emptied session read buffers ([`put_back`]), for the next read of any session here.
    spare: Vec<BytesMut>,
}

thread_local! {
    static BUFS: std::cell::RefCell<ThreadBufs> = std::cell::RefCell::new(ThreadBufs {
        scratch: vec![0; SCRATCH],
        spare: Vec::new(),
    });
}

/// Take back a session's read buffer once it is empty, so an idle session holds none while the
/// next read (of any session on this thread) reuses it: an unpipelined client then allocates and
/// frees neither a buffer nor the header its requests share per request (callgrind: about 350
/// instructions). Kept only when no request still points into it and it is small.
pub(crate) fn put_back(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    // Asking for one byte more than it has left succeeds, without allocating, only by moving
    // back to the start of an allocation nothing else shares (`try_reclaim`); its capacity is
    // then the whole allocation's.
    let room = buf.capacity();
    if !buf.try_reclaim(room + 1) || buf.capacity() > SPARE_MAX {
        return;
    }
    BUFS.with_borrow_mut(|t| {
        if t.spare.len() < SPARES {
            t.spare.push(buf);
        }
    });
}

/// A buffer for a session's replies on their way out: a spare if the thread has one (see
/// [`give_back`]), else a fresh one with room for `len` bytes.
pub(crate) fn spare(len: usize) -> BytesMut {
    BUFS.with_borrow_mut(|t| t.spare.pop())
        .unwrap_or_else(|| BytesMut::with_capacity(len.max(SPARE_MIN)))
}

/// Take back a session's output buffer once it is written and empty, as [`put_back`] does read
/// buffers: an unpipelined client then allocates and frees no output buffer per reply
/// (callgrind: about 270 instructions). The writer only appends to it and clears it, never
/// splits it, so it is whole and unshared; kept only when small.
pub(crate) fn give_back(buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if !(SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        return;
    }
    BUFS.with_borrow_mut(|t| {
        if t.spare.len() < SPARES {
            t.spare.push(buf);
        }
    });
}

pub(crate) struct ClientSocket<S: RawStream> {
    fd: AsyncFd<S>,
}

impl<S: RawStream> ClientSocket<S> {
    /// Register a socket that is already in non-blocking mode.
    pub fn new(stream: S) -> io::Result<Self> {
        Ok(ClientSocket {
            fd: register(stream)?,
        })
    }

    /// Append up to `want` bytes (at most [`SCRATCH`]) to `buf`, waiting until some are there.
    /// `Ok(0)` is end of stream. Cancel-safe: nothing is read until the socket is ready, and then
    /// without awaiting.
    pub async fn read(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        let want = want.clamp(1, SCRATCH);
        // `poll_read_ready`, not `readable()`: the latter's future joins (and on drop leaves) the
        // registration's list of waiters under its lock on every wait, where this keeps the
        // task's waker in the registration's one reader slot (callgrind: about 300 instructions
        // per unpipelined request). One slot is enough: only the session's task reads its socket.
        std::future::poll_fn(|cx| {
            loop {
                let mut guard = match self.fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(guard)) => guard,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                };
                // The kernel writes into the thread's scratch buffer, initialised once, and only
                // what arrived is copied out: no unsafe, and no zero-filling of `want` bytes per
                // read (a 16-deep SET batch zero-filled 4 KiB to receive 1.4: 12% of its
                // instructions).
                let r: io::Result<usize> = BUFS.with_borrow_mut(|t| {
                    let n = guard.get_inner().read_into(&mut t.scratch[..want])?;
                    if n > 0 && buf.capacity() == 0 {
                        // A fresh buffer has room for the next few requests too, so that it
                        // is worth keeping once they are done.
                        *buf = t
                            .spare
                            .pop()
                            .unwrap_or_else(|| BytesMut::with_capacity(n.max(SPARE_MIN)));
                    }
                    buf.extend_from_slice(&t.scratch[..n]);
                    Ok(n)
                });
                match r {
                    Ok(n) => {
                        crate::metrics::client_read(n);
                        if n < want && n > 0 {
                            // The kernel had no more: wait for the next edge instead of asking
                            // again.
                            guard.clear_ready();
                        }
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
        .await
    }

    /// Write all of `data`, waiting for room only when the socket buffer is full.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let len = data.len();
        while !data.is_empty() {
            match self.fd.get_ref().write_from(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = self.fd.writable().await?;
                    match guard.try_io(|fd| fd.get_ref().write_from(data)) {
                        Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(Ok(n)) => data = &data[n..],
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Counted once per call (a failed write closes the client; its bytes are not counted).
        crate::metrics::client_written(len);
        Ok(())
    }

    pub fn shutdown_write(&self) {
        self.fd.get_ref().shutdown_write()
    }

    /// Close both directions: the reader sees the end of the stream at once.
    pub fn shutdown_both(&self) {
        self.fd.get_ref().shutdown_both()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> usize {
        BUFS.with_borrow(|t| t.spare.len())
    }

    #[test]
    fn only_unshared_small_buffers_are_kept() {
        let before = spares();
        // Shared with a request still held: not kept (the request's bytes stay intact).
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let held = buf.split_to(buf.len()).freeze();
        put_back(std::mem::take(&mut buf));
        assert_eq!(spares(), before);
        assert_eq!(&held[..], b"*1\r\n$4\r\nPING\r\n");
        // Its requests gone: kept, whole again.
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        drop(buf.split_to(buf.len()).freeze());
        put_back(buf);
        assert_eq!(spares(), before + 1);
        let kept = BUFS.with_borrow_mut(|t| t.spare.pop().expect("kept"));
        assert!(kept.is_empty() && kept.capacity() >= 1024);
        // Filled to its last byte, then emptied: kept.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        drop(buf.split_to(buf.len()));
        assert_eq!(buf.capacity(), 0);
        put_back(buf);
        assert_eq!(spares(), before + 1);
        BUFS.with_borrow_mut(|t| t.spare.pop().expect("kept"));
        // Never used: nothing to keep.
        put_back(BytesMut::new());
        assert_eq!(spares(), before);
        // Large: not kept.
        let mut buf = BytesMut::with_capacity(SPARE_MAX * 2);
        buf.extend_from_slice(b"x");
        drop(buf.split_to(1));
        put_back(buf);
        assert_eq!(spares(), before);
    }
}

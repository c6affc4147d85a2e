//! Client sessions over TLS (`listen.tls`): the handshake, and a [`ClientIo`] over a tokio-rustls
//! stream for the session to read and write.
//!
//! A path of its own beside the readiness-driven [`super::io::ClientSocket`]: TLS needs the
//! record layer between the socket and the session's buffers, and keeping it apart leaves the
//! plain path as it was (the session is generic over [`ClientIo`], no dynamic dispatch). The
//! reader and the writer run in one task, so each half's mutex is never contended across
//! threads. Never touches certificates: the acceptor's configuration comes from `crate::tls`,
//! swapped whole on reload (a session keeps the configuration it shook hands with).
use super::io::{ClientIo, SCRATCH};
use bytes::BytesMut;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the TLS handshake before it is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS client was dropped before its session started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsAcceptError {
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake: not finished within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
    #[error("TLS: {0}")]
    Socket(io::Error),
}

pub(crate) struct TlsSocket {
    read: Mutex<ReadHalf<TlsStream<TcpStream>>>,
    write: Mutex<WriteHalf<TlsStream<TcpStream>>>,
    /// The same socket, to close both directions without waiting for either half's lock.
    raw: std::net::TcpStream,
}

impl TlsSocket {
    /// Shake hands on an accepted (non-blocking) socket with the current server configuration.
    pub(crate) async fn accept(
        stream: std::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<TlsSocket, TlsAcceptError> {
        let raw = stream.try_clone().map_err(TlsAcceptError::Socket)?;
        let stream = TcpStream::from_std(stream).map_err(TlsAcceptError::Socket)?;
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(TlsAcceptError::Handshake(e)),
            Err(_) => return Err(TlsAcceptError::TimedOut),
        };
        let (read, write) = tokio::io::split(tls);
        Ok(TlsSocket {
            read: Mutex::new(read),
            write: Mutex::new(write),
            raw,
        })
    }
}

impl ClientIo for TlsSocket {
    async fn read(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        let want = want.clamp(1, SCRATCH);
        let mut half = self.read.lock().await;
        buf.reserve(want);
        // `take` bounds the read as the plain path's `want` does; read_buf is cancel-safe.
        let n = (&mut *half).take(want as u64).read_buf(buf).await?;
        crate::metrics::client_read(n);
        Ok(n)
    }

    async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut half = self.write.lock().await;
        half.write_all(data).await?;
        // rustls buffers records: flush so the reply leaves now.
        half.flush().await?;
        crate::metrics::client_written(data.len());
        Ok(())
    }

    async fn shutdown_write(&self) {
        // close_notify, then the socket's write side.
        let _ = self.write.lock().await.shutdown().await;
    }

    fn shutdown_both(&self) {
        let _ = self.raw.shutdown(std::net::Shutdown::Both);
    }

    fn abort(&self) {
        // A socket option, so set through this descriptor it holds for the session's too.
        super::io::abort_on_close(&self.raw);
        self.shutdown_both();
    }
}

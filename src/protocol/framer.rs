//! Request framer: a client's read buffer → [`Request`]s.
//!
//! OWNED BY THE PROTOCOL WORK (stub). Contract:
//! - Resumable: `next` may be called with a buffer that holds part of a request; it returns
//!   `Ok(None)` and remembers how far it got, so feeding a large request in small chunks is O(n).
//! - Zero-copy: a complete request is split off the front of the buffer (`split_to(..).freeze()`), and
//!   its arguments are `Bytes` slices of that allocation.
//! - Accepts RESP arrays of bulk strings and inline commands (space-separated, with Redis's quoting
//!   rules from `sdssplitargs`). Empty arrays (`*0`, `*-1`) and empty inline lines are skipped, as Redis does.
//! - Limits: a request over `max_args` or with a bulk over `max_bulk_len` is a *recoverable* error: the
//!   framer returns the error once and then silently discards the rest of that request (its bulk
//!   lengths are known), so the next call yields the next request. Malformed framing (bad type byte,
//!   non-numeric length, inline line over `max_inline_len`, unbalanced quotes) is *fatal*: the stream
//!   cannot be resynchronised and the caller closes the connection after replying.
use bytes::{Bytes, BytesMut};

/// Framing limits. Defaults are Redis's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one request (Redis: 1024*1024 multibulk elements).
    pub max_args: usize,
    /// Largest single bulk argument in bytes (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Longest inline command line, and longest `*`/`$` header line (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes buffered for one client's unfinished request (Redis `client-query-buffer-limit`, 1 GiB).
    pub max_query_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args: 1024 * 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// One complete client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The arguments; `args[0]` is the command name as the client spelled it. Never empty.
    pub args: Vec<Bytes>,
    /// The exact bytes of the request when it came as a RESP array (forwardable as is); `None` for
    /// inline requests, which must be re-encoded before forwarding.
    pub raw: Option<Bytes>,
}

/// Why a request could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The text after `-ERR `, e.g. `Protocol error: invalid multibulk length`.
    pub message: String,
    /// True when the stream cannot be resynchronised: reply, then close the connection.
    pub fatal: bool,
}

/// Resumable request framer; one per client connection.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer { limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Frame the next request at the front of `buf`. `Ok(Some)` consumed it from `buf`; `Ok(None)`
    /// needs more bytes (bytes already examined are not re-examined next time); `Err` reports a limit
    /// or protocol error (see the module doc for which are fatal).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, FrameError> {
        let _ = buf;
        todo!("framer")
    }
}

//! The wire: bytes in, commands out; replies in, byte ranges out.
//!
//! The one home of RESP reading and writing. `framer` turns a client's read buffer into
//! [`Request`]s without copying argument bytes; `scanner` finds where each upstream reply ends so
//! replies are forwarded as raw bytes; `value` reads one whole reply into a tree for the few that
//! must be looked inside (un-prefixing key names, the upstream's handshake); `resp3` re-encodes
//! RESP3 replies for RESP2 clients and reads tracking pushes; `int` is the integer parser all of
//! them (and command arguments) share; `encode` writes the replies that respite synthesises
//! itself. Nothing here knows about commands, tenants or sockets.

pub mod encode;
pub mod framer;
pub mod int;
pub mod resp3;
pub mod scanner;
pub mod value;

pub use framer::{FrameError, Framer, Limits, Request};
pub use scanner::{ReplyScanner, ScanError};

/// The RESP version a client speaks: 2 until it says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

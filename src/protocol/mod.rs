//! The wire: bytes in, commands out; replies in, byte ranges out.
//!
//! `framer` turns a client's read buffer into [`Request`]s without copying argument bytes, `scanner`
//! finds where each upstream reply ends so replies are forwarded as raw bytes, and `encode` writes the
//! replies that respite synthesises itself. Nothing here knows about commands, tenants or sockets.

pub mod encode;
pub mod framer;
pub mod scanner;

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

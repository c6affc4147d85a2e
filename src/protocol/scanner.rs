//! Reply boundary scanner: finds where each upstream reply ends, without building frames.
//!
//! OWNED BY THE PROTOCOL WORK (stub). Contract:
//! - Handles every RESP2 and RESP3 type: `+ - : $ * _ , # ( = % ~ > |` (an attribute `|` and the reply
//!   it annotates count as one reply), nested to any depth up to `max_depth`.
//! - Resumable: when the buffer holds only part of a reply, `scan` returns `Ok(None)` and keeps its
//!   position and the stack of outstanding element counts, so the next call (with the same bytes plus
//!   more appended) resumes where it stopped. Feeding a 16 MB reply in 4 KB chunks is O(n), not O(n²).
//! - After `Ok(Some(..))` the caller splits that many bytes off the front; the scanner has reset itself.
use bytes::BytesMut;

/// A complete reply found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Length in bytes of the whole reply (attribute included).
    pub len: usize,
    /// True for a RESP3 push (`>`): out-of-band, not the answer to any request.
    pub push: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("upstream protocol error: unexpected type byte {0:#04x}")]
    BadType(u8),
    #[error("upstream protocol error: invalid length")]
    BadLength,
    #[error("upstream protocol error: nesting deeper than {0}")]
    TooDeep(usize),
}

#[derive(Debug, Default)]
pub struct ReplyScanner {}

impl ReplyScanner {
    pub fn new() -> Self {
        ReplyScanner::default()
    }

    /// Find the end of the reply at the front of `buf`.
    pub fn scan(&mut self, buf: &BytesMut) -> Result<Option<Scanned>, ScanError> {
        let _ = buf;
        todo!("scanner")
    }
}

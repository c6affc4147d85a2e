//! Pub/Sub channel names in a tenant's namespace: channels get the prefix, patterns the escaped
//! prefix, and names in messages lose it again.
//!
//! [`super::Tenant::check`] already applies these to PUBLISH, SPUBLISH, PUBSUB CHANNELS/NUMSUB and
//! the SUBSCRIBE family; these functions are for the stateful-commands work, where a pinned
//! connection's pushed messages are rewritten with [`super::rewrite_push`].
use bytes::Bytes;

use super::glob;

/// The upstream name of a tenant's channel.
pub fn channel(prefix: &[u8], channel: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + channel.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(channel);
    out.into()
}

/// The upstream pattern for a tenant's PSUBSCRIBE pattern: it can only match the tenant's channels.
pub fn pattern(prefix: &[u8], pattern: &[u8]) -> Bytes {
    glob::confine(prefix, pattern)
}

/// The client's name of an upstream channel, or `None` if it is not the tenant's.
pub fn unprefix_channel<'a>(prefix: &[u8], channel: &'a [u8]) -> Option<&'a [u8]> {
    channel.strip_prefix(prefix)
}

/// The client's pattern for an upstream pattern made by [`pattern`].
pub fn unprefix_pattern(prefix: &[u8], pattern: &[u8]) -> Option<Bytes> {
    let escaped = glob::escape(prefix);
    pattern
        .strip_prefix(&escaped[..])
        .map(Bytes::copy_from_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(&channel(b"t:", b"news")[..], b"t:news");
        assert_eq!(unprefix_channel(b"t:", b"t:news"), Some(&b"news"[..]));
        assert_eq!(unprefix_channel(b"t:", b"u:news"), None);
        let p = pattern(b"t[1]:", b"n*");
        assert_eq!(&p[..], b"t\\[1\\]:n*");
        assert!(glob::matches(&p, b"t[1]:news"));
        assert!(!glob::matches(&p, b"t1:news"));
        assert_eq!(unprefix_pattern(b"t[1]:", &p).as_deref(), Some(&b"n*"[..]));
    }
}

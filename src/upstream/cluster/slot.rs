//! Hash slots as Redis Cluster computes them (`keyHashSlot` in cluster.c): CRC16-CCITT (XMODEM)
//! of the key, or of its hash tag (the bytes between the first `{` and the first `}` after it,
//! when not empty), modulo 16384.
//!
//! A tenant's prefix keeps co-location because it is put in front of the key and (config
//! permitting) holds no `{`: the first `{` of `prefix + key` is then the first `{` of `key`, so
//! `prefix + key` and `key` have the same tag, and keys that share a tag in the client's view
//! share a slot after prefixing. Keys without a tag hash whole, prefix included, as any key does.

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The slot `key` hashes to.
pub fn key_slot(key: &[u8]) -> u16 {
    (crc16(hash_tag(key)) as usize % SLOTS) as u16
}

/// The part of `key` that is hashed: its hash tag, or the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key)
        && let Some(len) = memchr::memchr(b'}', &key[open + 1..])
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis's crc16.c.
pub fn crc16(data: &[u8]) -> u16 {
    static TABLE: std::sync::LazyLock<[u16; 256]> = std::sync::LazyLock::new(|| {
        let mut table = [0u16; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut crc = (i as u16) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
            *entry = crc;
        }
        table
    });
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[((crc >> 8) as u8 ^ b) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_reference_check_value() {
        // The XMODEM check value, as Redis's crc16.c documents it.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags_follow_the_first_brace_pair() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        // An empty tag hashes the whole key.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // The first `{` and the first `}` after it.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no}open{"), b"no}open{");
    }

    #[test]
    fn a_brace_free_prefix_keeps_the_tag() {
        for key in [&b"{t}a"[..], b"x{t}y", b"}{t}", b"{t}"] {
            let mut prefixed = b"tenant:".to_vec();
            prefixed.extend_from_slice(key);
            assert_eq!(key_slot(&prefixed), key_slot(key), "{key:?}");
        }
    }
}

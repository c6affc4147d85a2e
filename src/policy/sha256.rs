//! SHA-256 digests and a constant-time comparison, for tenant passwords.
//!
//! The digest comes from the `sha2` crate (RustCrypto). This must never be used for anything but
//! comparing a presented password with a configured digest: there is no HMAC, no key stretching,
//! and the configured digests are plain SHA-256 as Redis's ACL `#<hex>` uses (read from their hex
//! by the configuration, [`crate::config::tenants::from_hex`]).
use sha2::{Digest, Sha256};

/// The SHA-256 digest of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality whose running time does not depend on where the digests differ, so a client
/// cannot learn a configured digest byte by byte from reply timing.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tenants::from_hex;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn nist_vectors() {
        assert_eq!(
            hex(digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(digest(&[b'a'; 1_000_000])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        // Lengths around the padding boundary (55, 56, 63, 64 bytes) go through both tail shapes.
        for n in [55, 56, 63, 64, 65, 119, 120] {
            let d = digest(&vec![b'x'; n]);
            assert_eq!(from_hex(&hex(d)), Some(d));
        }
    }

    #[test]
    fn compare_and_parse() {
        let a = digest(b"secret");
        assert!(ct_eq(&a, &digest(b"secret")));
        assert!(!ct_eq(&a, &digest(b"secreT")));
        assert_eq!(from_hex(&hex(a).to_uppercase()), Some(a));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}

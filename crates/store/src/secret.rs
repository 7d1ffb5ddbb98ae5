//! Device secrets, kept only as salted hashes.
//!
//! SHA-256 over salt and secret, not a slow password hash: device secrets
//! are issued as 128-bit random tokens, so brute force is not the threat
//! a slow hash guards against, while a city's devices reconnecting at
//! once after an outage would make a slow hash a CPU storm at CONNECT.
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh random secret (128 bits, hex) for a device registered without one.
pub fn generate_secret() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Returns `(salt, hash)`, both hex.
pub fn hash_secret(secret: &str) -> (String, String) {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = hex::encode(salt);
    let hash = digest(&salt, secret);
    (salt, hash)
}

/// Constant-time check of `secret` against a stored salt and hash.
pub fn verify_secret(secret: &str, salt: &str, hash: &str) -> bool {
    let got = digest(salt, secret);
    got.as_bytes().ct_eq(hash.as_bytes()).into()
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_the_secret() {
        let (salt, hash) = hash_secret("s3cret");
        assert!(verify_secret("s3cret", &salt, &hash));
        assert!(!verify_secret("s3cret ", &salt, &hash));
        let (salt2, hash2) = hash_secret("s3cret");
        assert_ne!(hash, hash2, "salted");
        assert!(verify_secret("s3cret", &salt2, &hash2));
        assert_eq!(generate_secret().len(), 32);
    }
}

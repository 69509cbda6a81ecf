//! The three primitives every higher-level operation goes through, exposed so that
//! published test vectors (Wycheproof, RFC 5869) exercise the exact code paths the keyring
//! uses. Not a general-purpose API: prefer [`crate::Keyring`].
//!
//! This module must never accept a nonce or tag of another length than Nova uses.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::error::CryptoError;

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand `info` into `out`.
///
/// # Errors
/// [`CryptoError::InvalidKeyOperation`] when `out` is longer than 255 × 32 bytes.
pub fn hkdf_sha256(
    salt: Option<&[u8]>,
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, out)
        .map_err(|_| CryptoError::InvalidKeyOperation("HKDF output too long"))
}

/// HMAC-SHA256 of `msg` under `key` (any key length, RFC 2104).
#[must_use]
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.chain_update(msg).finalize().into_bytes().into()
}

/// AES-256-GCM seal with a 96-bit nonce; returns ciphertext ‖ tag.
///
/// # Errors
/// [`CryptoError::InvalidKeyOperation`] for a key or nonce of the wrong length.
pub fn aes256gcm_seal(
    key: &[u8],
    nonce: &[u8],
    ad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new_from_slice(key)
        .map_err(|_| CryptoError::InvalidKeyOperation("AES-256 key must be 32 bytes"))?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::InvalidKeyOperation("nonce must be 96 bits"))?;
    let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    out.extend_from_slice(plaintext);
    let tag = seal_in_place(&cipher, &nonce, ad, &mut out)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// AES-256-GCM open of ciphertext ‖ tag with a 96-bit nonce.
///
/// # Errors
/// [`CryptoError::Authentication`] for a wrong key, nonce, associated data or tag, or a
/// nonce or tag of another length; [`CryptoError::InvalidKeyOperation`] for a bad key size.
pub fn aes256gcm_open(
    key: &[u8],
    nonce: &[u8],
    ad: &[u8],
    ct_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = Aes256Gcm::new_from_slice(key)
        .map_err(|_| CryptoError::InvalidKeyOperation("AES-256 key must be 32 bytes"))?;
    open(&cipher, nonce, ad, ct_and_tag)
}

/// Constant-time equality of a 32-byte secret with a slice (false unless the slice is 32
/// bytes). Folds the XOR of four 64-bit words, then compares once through `subtle`, so the
/// time does not depend on where the values differ.
pub(crate) fn ct_eq_32(a: &[u8], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    let Ok(a) = <&[u8; 32]>::try_from(a) else {
        return false;
    };
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

pub(crate) fn seal_in_place(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into())
        .map_err(|_| CryptoError::TooLarge("plaintext exceeds AES-GCM limits"))?;
    Ok(tag.into())
}

/// Opens ciphertext ‖ tag into a fresh buffer whose capacity equals its length, so that
/// turning it into a boxed secret never leaves an unzeroized copy behind.
pub(crate) fn open(
    cipher: &Aes256Gcm,
    nonce: &[u8],
    ad: &[u8],
    ct_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if nonce.len() != NONCE_LEN || ct_and_tag.len() < TAG_LEN {
        return Err(CryptoError::Authentication);
    }
    let (ct, tag) = ct_and_tag.split_at(ct_and_tag.len() - TAG_LEN);
    let tag = Tag::try_from(tag).map_err(|_| CryptoError::Authentication)?;
    let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Authentication)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(ct.len()));
    buf.extend_from_slice(ct);
    cipher
        .decrypt_inout_detached(&nonce, ad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| CryptoError::Authentication)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_32_compares_every_byte() {
        let a = [7u8; 32];
        assert!(ct_eq_32(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!ct_eq_32(&b, &a), "byte {i}");
        }
        assert!(!ct_eq_32(&a[..31], &a));
    }
}

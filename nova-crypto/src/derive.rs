//! HKDF-SHA256 derivation of per-tenant, per-purpose keys (RFC 5869).
//!
//! ```text
//! PRK  = HKDF-Extract(salt = tenant salt (32 random bytes), IKM = KEK (32 bytes))
//! OKM  = HKDF-Expand(PRK, info, L)
//! info = "nova-crypto/v1" || 0x00 || purpose (1 byte) || tenant id (16 bytes)
//!        || len16(table) || table || len16(column) || column
//! ```
//!
//! Purposes: `0x01` field encryption (L = 64: AES-256 key, then 32-byte key commitment),
//! `0x02` blind index (L = 32: HMAC-SHA256 key), `0x03` streams (L = 32: stream root key;
//! `table` is the stream label and `column` is empty). Lengths are big-endian `u16`, so no
//! two distinct (tenant, purpose, table, column) tuples share an `info`. This module must
//! never derive two purposes from the same `info`.

use nova_tenancy::TenantId;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keys::{KEY_LEN, SecretKey};

/// Domain-separation label at the start of every `info`.
pub(crate) const LABEL: &[u8] = b"nova-crypto/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    Field = 1,
    BlindIndex = 2,
    Stream = 3,
}

/// Builds `info` for a purpose. Names are at most 64 bytes (validated by callers).
pub(crate) fn info(purpose: Purpose, tenant: TenantId, table: &str, column: &str) -> Vec<u8> {
    let mut info = Vec::with_capacity(LABEL.len() + 2 + 16 + 4 + table.len() + column.len());
    info.extend_from_slice(LABEL);
    info.push(0);
    info.push(purpose as u8);
    info.extend_from_slice(tenant.as_uuid().as_bytes());
    for part in [table, column] {
        // Callers validate lengths (≤ 64 bytes), so the cast cannot truncate.
        info.extend_from_slice(&(part.len() as u16).to_be_bytes());
        info.extend_from_slice(part.as_bytes());
    }
    info
}

/// Derives `out.len()` bytes for `info` from a KEK and a tenant salt.
pub(crate) fn derive(
    kek: &SecretKey,
    salt: &SecretKey,
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    crate::primitives::hkdf_sha256(Some(salt.expose()), kek.expose(), info, out)
}

/// Derives a 32-byte subkey from a key and a salt (used per stream).
pub(crate) fn subkey(
    key: &[u8; KEY_LEN],
    salt: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; 64]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; 64]);
    crate::primitives::hkdf_sha256(Some(salt), key, info, out.as_mut())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_injective_over_name_boundaries() {
        let t = TenantId::new_v4();
        assert_ne!(
            info(Purpose::Field, t, "ab", "c"),
            info(Purpose::Field, t, "a", "bc")
        );
        assert_ne!(
            info(Purpose::Field, t, "a", "b"),
            info(Purpose::BlindIndex, t, "a", "b")
        );
        assert_ne!(
            info(Purpose::Field, t, "a", "b"),
            info(Purpose::Field, TenantId::new_v4(), "a", "b")
        );
    }
}

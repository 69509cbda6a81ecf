//! Envelope v1: the self-describing encoding of one sealed field, in binary (for `BYTEA`)
//! and text (for `TEXT`) forms. Decoding is total: any input gives an envelope or a
//! [`DecodeError`], never a panic, and never allocates more than the input's size.
//!
//! # Binary layout (all integers big-endian)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | magic `NV` (`0x4E 0x56`) |
//! | 2 | 1 | format version, `0x01` |
//! | 3 | 1 | algorithm, `0x01` = AES-256-GCM, HKDF-SHA256 keys, 32-byte key commitment |
//! | 4 | 1 | key id length `L` (1–64) |
//! | 5 | `L` | key-encryption key id, ASCII `[a-z0-9._:-]` |
//! | 5+L | 4 | key-encryption key version (≥ 1) |
//! | 9+L | 4 | tenant key version (≥ 1) |
//! | 13+L | 12 | nonce (random) |
//! | 25+L | 32 | key commitment |
//! | 57+L | n | ciphertext (`n` = plaintext length) |
//! | 57+L+n | 16 | GCM tag |
//!
//! The **text form** is `nv1:` followed by the binary form in unpadded base64url
//! (RFC 4648 §5), so it fits a `TEXT` column, a JSON string or a URL unchanged.
//!
//! The header (offsets 0 to 13+L) is part of the associated data, so a changed version,
//! algorithm, key id or key version fails authentication rather than selecting another key.

use std::fmt;

use base64::Engine as _;

use crate::error::DecodeError;
use crate::keys::{KEY_ID_MAX_LEN, KeyId, KeyVersion};

/// Magic bytes at the start of every binary envelope.
pub const MAGIC: [u8; 2] = *b"NV";
/// The only format version this build writes and reads.
pub const FORMAT_V1: u8 = 1;
/// AES-256-GCM with HKDF-SHA256-derived keys and a 32-byte key commitment.
pub const ALG_AES256GCM_COMMITTED: u8 = 1;
/// Nonce length (96 bits, NIST SP 800-38D §8.2.2 random construction).
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Key commitment length.
pub const COMMITMENT_LEN: usize = 32;
/// Largest envelope accepted by the decoders (and plaintext accepted by `seal`, less the
/// overhead): 16 MiB. Larger payloads belong in a stream.
pub const MAX_ENVELOPE_LEN: usize = 16 << 20;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "nv1:";

const FIXED_HEADER: usize = 5; // magic, version, algorithm, key id length
const MIN_LEN: usize = FIXED_HEADER + 1 + 8 + NONCE_LEN + COMMITMENT_LEN + TAG_LEN;

/// One sealed field. Construct with [`crate::Keyring::seal`] or by decoding stored bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
    key_id_len: usize,
}

impl Envelope {
    /// Decodes the binary form.
    ///
    /// # Errors
    /// [`DecodeError`] describing the first problem found.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let key_id_len = validate(bytes)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            key_id_len,
        })
    }

    /// Decodes the text form (`nv1:` + base64url).
    ///
    /// # Errors
    /// [`DecodeError`] describing the first problem found.
    pub fn from_text(text: &str) -> Result<Self, DecodeError> {
        let body = text
            .strip_prefix(TEXT_PREFIX)
            .ok_or(DecodeError::BadMagic)?;
        // Refuse before decoding anything that could not fit, so memory stays bounded.
        if body.len() > MAX_ENVELOPE_LEN / 3 * 4 + 4 {
            return Err(DecodeError::TooLong { what: "envelope" });
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DecodeError::BadEncoding)?;
        let key_id_len = validate(&bytes)?;
        Ok(Self { bytes, key_id_len })
    }

    /// The binary form.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The binary form, by value.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The text form.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(TEXT_PREFIX.len() + self.bytes.len().div_ceil(3) * 4);
        s.push_str(TEXT_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&self.bytes, &mut s);
        s
    }

    /// Format version (always [`FORMAT_V1`] today).
    #[must_use]
    pub fn format_version(&self) -> u8 {
        self.bytes[2]
    }

    /// Algorithm identifier.
    #[must_use]
    pub fn algorithm(&self) -> u8 {
        self.bytes[3]
    }

    /// The key-encryption key id.
    #[must_use]
    pub fn kek_id(&self) -> KeyId {
        // Validated at construction.
        KeyId::from_bytes(&self.bytes[FIXED_HEADER..FIXED_HEADER + self.key_id_len])
            .unwrap_or_else(|_| unreachable!("key id validated when the envelope was built"))
    }

    pub(crate) fn kek_id_bytes(&self) -> &[u8] {
        &self.bytes[FIXED_HEADER..FIXED_HEADER + self.key_id_len]
    }

    /// The key-encryption key version.
    #[must_use]
    pub fn kek_version(&self) -> KeyVersion {
        self.version_at(FIXED_HEADER + self.key_id_len)
    }

    /// The tenant key version.
    #[must_use]
    pub fn key_version(&self) -> KeyVersion {
        self.version_at(FIXED_HEADER + self.key_id_len + 4)
    }

    fn version_at(&self, at: usize) -> KeyVersion {
        let v = u32::from_be_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ]);
        KeyVersion::new(v).unwrap_or(KeyVersion::FIRST)
    }

    pub(crate) fn header_len(&self) -> usize {
        FIXED_HEADER + self.key_id_len + 8
    }

    pub(crate) fn header(&self) -> &[u8] {
        &self.bytes[..self.header_len()]
    }

    pub(crate) fn nonce(&self) -> &[u8] {
        let h = self.header_len();
        &self.bytes[h..h + NONCE_LEN]
    }

    pub(crate) fn commitment(&self) -> &[u8] {
        let h = self.header_len() + NONCE_LEN;
        &self.bytes[h..h + COMMITMENT_LEN]
    }

    pub(crate) fn ciphertext_and_tag(&self) -> &[u8] {
        &self.bytes[self.header_len() + NONCE_LEN + COMMITMENT_LEN..]
    }

    /// Length of the sealed plaintext.
    #[must_use]
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext_and_tag().len() - TAG_LEN
    }

    /// Writes a header; returns its length.
    pub(crate) fn write_header(
        out: &mut Vec<u8>,
        kek_id: &KeyId,
        kek_version: KeyVersion,
        key_version: KeyVersion,
    ) -> usize {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_V1);
        out.push(ALG_AES256GCM_COMMITTED);
        // Key ids are at most 64 bytes (validated by KeyId).
        out.push(kek_id.as_str().len() as u8);
        out.extend_from_slice(kek_id.as_str().as_bytes());
        out.extend_from_slice(&kek_version.get().to_be_bytes());
        out.extend_from_slice(&key_version.get().to_be_bytes());
        out.len() - start
    }

    pub(crate) fn from_sealed(bytes: Vec<u8>, key_id_len: usize) -> Self {
        Self { bytes, key_id_len }
    }

    /// Overhead in bytes for a key id of `key_id_len` bytes.
    #[must_use]
    pub const fn overhead(key_id_len: usize) -> usize {
        FIXED_HEADER + key_id_len + 8 + NONCE_LEN + COMMITMENT_LEN + TAG_LEN
    }
}

/// Checks a binary envelope; returns the key id length.
fn validate(b: &[u8]) -> Result<usize, DecodeError> {
    if b.len() > MAX_ENVELOPE_LEN {
        return Err(DecodeError::TooLong { what: "envelope" });
    }
    if b.len() < 2 || b[..2] != MAGIC {
        return Err(if b.len() < 2 {
            DecodeError::Truncated { what: "magic" }
        } else {
            DecodeError::BadMagic
        });
    }
    let version = *b.get(2).ok_or(DecodeError::Truncated { what: "version" })?;
    if version != FORMAT_V1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let alg = *b
        .get(3)
        .ok_or(DecodeError::Truncated { what: "algorithm" })?;
    if alg != ALG_AES256GCM_COMMITTED {
        return Err(DecodeError::UnsupportedAlgorithm(alg));
    }
    let kid_len = usize::from(*b.get(4).ok_or(DecodeError::Truncated {
        what: "key id length",
    })?);
    if kid_len == 0 || kid_len > KEY_ID_MAX_LEN {
        return Err(DecodeError::BadKeyId);
    }
    if b.len() < MIN_LEN - 1 + kid_len {
        return Err(DecodeError::Truncated { what: "envelope" });
    }
    KeyId::from_bytes(&b[FIXED_HEADER..FIXED_HEADER + kid_len])?;
    for at in [FIXED_HEADER + kid_len, FIXED_HEADER + kid_len + 4] {
        let v = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        KeyVersion::new(v)?;
    }
    Ok(kid_len)
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ciphertext is not secret, but it is noise in logs; show the header only.
        f.debug_struct("Envelope")
            .field("kek_id", &self.kek_id())
            .field("kek_version", &self.kek_version())
            .field("key_version", &self.key_version())
            .field("plaintext_len", &self.plaintext_len())
            .finish()
    }
}

impl serde::Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_text(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "sqlx")]
mod sqlx_impl {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
    use sqlx::{Decode, Encode, Type, TypeInfo as _, ValueRef as _};

    use super::Envelope;

    /// Stored as `BYTEA` (binary form); also decodes from `TEXT` columns holding the text
    /// form. To write a `TEXT` column, bind [`Envelope::to_text`].
    impl Type<Postgres> for Envelope {
        fn type_info() -> PgTypeInfo {
            <Vec<u8> as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <Vec<u8> as Type<Postgres>>::compatible(ty)
                || <String as Type<Postgres>>::compatible(ty)
        }
    }

    impl Encode<'_, Postgres> for Envelope {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <&[u8] as Encode<Postgres>>::encode(self.as_bytes(), buf)
        }
    }

    impl<'r> Decode<'r, Postgres> for Envelope {
        fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
            let is_bytea = value.type_info().name() == "BYTEA";
            if is_bytea {
                let bytes = <Vec<u8> as Decode<Postgres>>::decode(value)?;
                Ok(Envelope::from_bytes(&bytes)?)
            } else {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(Envelope::from_text(text)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kid: &str) -> Vec<u8> {
        let mut b = Vec::new();
        Envelope::write_header(
            &mut b,
            &KeyId::new(kid).unwrap(),
            KeyVersion::new(7).unwrap(),
            KeyVersion::new(3).unwrap(),
        );
        b.extend_from_slice(&[0xAA; NONCE_LEN + COMMITMENT_LEN]);
        b.extend_from_slice(b"ciphertext");
        b.extend_from_slice(&[0xBB; TAG_LEN]);
        b
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let b = sample("root");
        assert_eq!(&b[..5], &[b'N', b'V', 1, 1, 4]);
        assert_eq!(&b[5..9], b"root");
        assert_eq!(&b[9..13], &7u32.to_be_bytes());
        assert_eq!(&b[13..17], &3u32.to_be_bytes());
        let e = Envelope::from_bytes(&b).unwrap();
        assert_eq!(e.kek_id().as_str(), "root");
        assert_eq!(e.kek_version().get(), 7);
        assert_eq!(e.key_version().get(), 3);
        assert_eq!(e.plaintext_len(), 10);
        assert_eq!(e.header_len(), 17);
        assert_eq!(b.len(), Envelope::overhead(4) + 10);
    }

    #[test]
    fn text_form_round_trips_and_is_prefixed() {
        let e = Envelope::from_bytes(&sample("k")).unwrap();
        let t = e.to_text();
        assert!(t.starts_with("nv1:"));
        assert!(!t.contains('=') && !t.contains('+') && !t.contains('/'));
        assert_eq!(Envelope::from_text(&t).unwrap(), e);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let b = sample("root");
        for n in 0..b.len() - 10 {
            assert!(Envelope::from_bytes(&b[..n]).is_err(), "accepted {n} bytes");
        }
    }

    #[test]
    fn header_fields_are_checked() {
        let good = sample("root");
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Envelope::from_bytes(&b), Err(DecodeError::BadMagic));
        let mut b = good.clone();
        b[2] = 2;
        assert_eq!(
            Envelope::from_bytes(&b),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut b = good.clone();
        b[3] = 9;
        assert_eq!(
            Envelope::from_bytes(&b),
            Err(DecodeError::UnsupportedAlgorithm(9))
        );
        let mut b = good.clone();
        b[5] = b'R';
        assert_eq!(Envelope::from_bytes(&b), Err(DecodeError::BadKeyId));
        let mut b = good.clone();
        b[9..13].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Envelope::from_bytes(&b), Err(DecodeError::BadKeyVersion));
        let mut b = good;
        b[4] = 0;
        assert_eq!(Envelope::from_bytes(&b), Err(DecodeError::BadKeyId));
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let big = format!("nv1:{}", "A".repeat(MAX_ENVELOPE_LEN / 3 * 4 + 8));
        assert_eq!(
            Envelope::from_text(&big),
            Err(DecodeError::TooLong { what: "envelope" })
        );
        assert!(Envelope::from_text("nv2:AAAA").is_err());
        assert!(Envelope::from_text("nv1:!!!!").is_err());
    }
}

//! The crate's one error type. No variant carries key bytes, plaintext or ciphertext.

use crate::keys::{KeyId, KeyVersion};

/// Why an encoded envelope, stream header or key id was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the smallest valid encoding, or cut off inside a field.
    #[error("truncated: {what}")]
    Truncated {
        /// The field that was cut off.
        what: &'static str,
    },
    /// Longer than the format allows.
    #[error("too long: {what}")]
    TooLong {
        /// The field or object that is too long.
        what: &'static str,
    },
    /// The magic bytes or text prefix are not Nova's.
    #[error("not a Nova envelope or stream (bad magic or prefix)")]
    BadMagic,
    /// A format version this build does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// An algorithm identifier this build does not know.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// The text form is not valid base64url.
    #[error("text form is not valid base64url")]
    BadEncoding,
    /// A key id is empty, too long or has characters outside `[a-z0-9._:-]`.
    #[error("malformed key id")]
    BadKeyId,
    /// A key version of zero (versions start at 1).
    #[error("key version must be at least 1")]
    BadKeyVersion,
    /// A stream chunk size outside the supported range.
    #[error("stream chunk size out of range")]
    BadChunkSize,
}

/// Everything that can go wrong in `nova-crypto`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// An envelope, stream or key id could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// The envelope does not open in this context: it belongs to another tenant, table,
    /// column or row, it was sealed under another key, or it was modified.
    #[error(
        "envelope does not open in this context (wrong tenant, table, column or row, or tampered)"
    )]
    Authentication,
    /// The tenant's key was destroyed (crypto-shredded): the data is gone for good.
    #[error("key destroyed: this tenant's data was crypto-shredded")]
    KeyDestroyed,
    /// The key-encryption key version named by the envelope was destroyed.
    #[error("key-encryption key {id} version {version} was destroyed")]
    KekDestroyed {
        /// The key id.
        id: KeyId,
        /// The destroyed version.
        version: KeyVersion,
    },
    /// No such key-encryption key, or no such version of it.
    #[error("unknown key-encryption key {id} version {version:?}")]
    UnknownKek {
        /// The key id.
        id: KeyId,
        /// The version asked for, if one was.
        version: Option<KeyVersion>,
    },
    /// The tenant has no key yet and the store cannot create one without I/O: call
    /// [`crate::Keyring::provision_tenant`] when the tenant is created.
    #[error("tenant has no key yet; provision it first")]
    TenantNotProvisioned,
    /// The tenant has no key of the version the envelope names.
    #[error("unknown tenant key version {0}")]
    UnknownTenantKey(KeyVersion),
    /// Key material for a provider is missing.
    #[error("key material missing: {source_name} is not set")]
    KeyMaterialMissing {
        /// Where the key was looked for (an environment variable or a file path).
        source_name: String,
    },
    /// Key material has the wrong length or encoding.
    #[error("key material in {source_name} is invalid: expected {expected} base64-encoded bytes")]
    KeyMaterialInvalid {
        /// Where the key came from.
        source_name: String,
        /// The required length in bytes.
        expected: usize,
    },
    /// The key was configured to not be used (e.g. a retired version asked to encrypt).
    #[error("invalid key operation: {0}")]
    InvalidKeyOperation(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// A field, stream or batch is larger than the format allows.
    #[error("input too large: {0}")]
    TooLarge(&'static str),
    /// An opened field is not valid UTF-8 (asked for as a string).
    #[error("opened field is not valid UTF-8")]
    NotUtf8,
    /// A key store failed (database unreachable, malformed row).
    #[error("key store error: {0}")]
    Store(String),
    /// Reading or writing a stream failed.
    #[error("stream I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A stream ended before its final chunk.
    #[error("stream truncated: the final chunk is missing")]
    StreamTruncated,
}

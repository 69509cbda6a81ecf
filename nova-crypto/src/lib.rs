//! # nova-crypto
//!
//! Per-tenant field encryption for multi-tenant services: seal a column value in one line,
//! store the envelope in `BYTEA` or `TEXT`, open it only in the same tenant, table, column
//! and row. Keys rotate without downtime and a tenant's data can be destroyed by destroying
//! its key (crypto-shredding).
//!
//! ```
//! use std::sync::Arc;
//! use nova_crypto::{Column, InMemoryTenantKeyStore, Keyring, LocalKeyProvider, normalize};
//! use nova_tenancy::{TenantContext, TenantId};
//! use secrecy::ExposeSecret;
//!
//! // Once, at start-up. In production the KEK comes from a KMS-backed `KeyProvider`
//! // (e.g. `LocalKeyProvider::from_env("root", "NOVA_KEK")` in development).
//! let keyring = Keyring::new(
//!     Arc::new(LocalKeyProvider::generated("root")?),
//!     Arc::new(InMemoryTenantKeyStore::new()),
//!     "root",
//! )?;
//! let email = Column::new("users", "email")?.with_normalizer(normalize::email);
//!
//! // Per request, with the verified context:
//! let ctx = TenantContext::system(TenantId::new_v4(), "doc example")?;
//! let sealed = keyring.seal(&ctx, &email.row(42_i64), b"alice@example.com")?;
//! let lookup = keyring.blind_index(&ctx, &email, "Alice@Example.com")?; // equality search
//! let opened = keyring.open(&ctx, &email.row(42_i64), &sealed)?;
//! assert_eq!(opened.expose_secret(), b"alice@example.com");
//! # let _ = lookup;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Key hierarchy
//!
//! ```text
//! KEK (KeyProvider: id + version)      tenant salt (TenantKeyStore: tenant + version, random)
//!              \                                   /
//!               HKDF-SHA256 extract (salt = tenant salt, IKM = KEK)
//!                                   |
//!       expand(info = "nova-crypto/v1" ‖ purpose ‖ tenant ‖ table ‖ column)
//!          /                        |                              \
//!   field key + commitment    blind-index key                 stream root key
//! ```
//!
//! - **Key-encryption keys** come from a [`KeyProvider`]: ids, versions, a primary, destroy.
//!   [`LocalKeyProvider`] reads one from an environment variable or a file for development;
//!   [`WrappedKeyProvider`] shows how a KMS or Vault plugs in (keys stored wrapped, unwrapped
//!   once into memory).
//! - **Tenant keys** are a random 256-bit salt per tenant and version in a
//!   [`TenantKeyStore`]. The store must be durable: `PgTenantKeyStore` (feature `sqlx`)
//!   keeps them in PostgreSQL, mirrored in memory; the [`InMemoryTenantKeyStore`] is for
//!   tests and demos — a process that restarts with it cannot open what it sealed. Both the KEK and the salt are needed to derive anything, so
//!   erasing a tenant's salts ([`Keyring::shred_tenant`]) makes all of that tenant's data
//!   unreadable even to someone holding the KEK — crypto-shredding — while other tenants are
//!   untouched. Treat the store as key material: a backup of the salts undoes shredding.
//! - **Derived keys** are bound to tenant and purpose through HKDF `info` (see `derive.rs`
//!   for the exact bytes) and cached in a bounded map, so sealing a field costs one AES-GCM
//!   call plus a cache lookup. Cached keys zeroize when evicted or dropped.
//!
//! ## Envelope
//!
//! [`Envelope`] v1 is a versioned binary layout with a text form (`nv1:` + base64url); the
//! table of fields is in [`Envelope`]'s module docs. AES-256-GCM with a random 96-bit nonce;
//! the associated data binds the header, tenant, table, column and row id, so an envelope
//! copied to another tenant, row or column fails — with [`CryptoError::Authentication`], or
//! [`CryptoError::UnknownTenantKey`] / [`CryptoError::KeyDestroyed`] when the target tenant
//! has no such key version. The commitment is the same for every envelope of one tenant,
//! key version and column, so someone who can read the stored envelopes can tell which rows
//! share a tenant, column and key version (and so how far a rotation has got) — not their
//! contents.
//!
//! **Message bound.** Random 96-bit nonces are safe for at most 2^32 messages per key
//! (NIST SP 800-38D §8.3). Each (tenant, key version, table, column) has its own key, so the
//! bound applies per column per tenant; rotating the tenant key resets it. A
//! [`RotationPolicy`] reports keys past a maximum age.
//!
//! **Key commitment.** AES-GCM alone is not key-committing: one ciphertext can be made to
//! decrypt under two different keys ("invisible salamanders", Dodis et al. 2018; "partitioning
//! oracle" attacks, Len et al. 2021). Each envelope therefore carries a 32-byte commitment,
//! derived by the same HKDF expansion as the key, and `open` compares it in constant time
//! before decrypting. Finding an envelope that opens under two keys would require a
//! collision in HKDF-SHA256's output. We chose a per-key commitment in the header (the
//! "key-check value" approach) over a committing AEAD mode because it keeps standard
//! AES-GCM, adds one comparison to `open`, and costs 32 bytes per field.
//!
//! ## Also here
//!
//! - Rotation: [`Keyring::rotate_tenant`], [`Keyring::rotate_kek`], [`Keyring::reencrypt`]
//!   and [`Keyring::reencrypt_batch`] with [`ReencryptProgress`].
//! - Blind indexes: [`Keyring::blind_index`] — HMAC-SHA256 per tenant and column, truncated
//!   to 16 bytes by default ([`Column::with_index_len`]), with a normalisation hook.
//! - Per-subject erasure: [`SubjectKeys`] seals a data subject's fields under a random key
//!   of their own, stored wrapped by the tenant keyring in a [`SubjectKeyStore`]
//!   ([`InMemorySubjectKeyStore`], `PgSubjectKeyStore` with `sqlx`).
//!   [`SubjectKeys::shred`] destroys that one key — the person's fields become unreadable,
//!   in backups too as long as the key store is kept out of them — while the rest of the
//!   tenant stays readable. [`SubjectEnvelope`] (`ns1:` text form) names the subject in
//!   the clear; their docs give the layout, the key derivation and the security notes.
//! - Streams: [`Keyring::encrypt_stream`] / [`Keyring::decrypt_stream`], the STREAM
//!   construction over AES-256-GCM for backups and exports; truncation, reordering and chunk
//!   swapping are detected.
//! - Classification: [`Public`], [`Internal`], [`Sensitive`] (masked in logs),
//!   [`Restricted`] (never printed), and [`mask_email`] / [`mask_tail`].
//! - `sqlx` (default feature): [`Envelope`] is `Type`/`Encode`/`Decode` for PostgreSQL
//!   `BYTEA`, and decodes from `TEXT` holding the text form.
//!
//! ## Performance notes
//!
//! AES-GCM runs on AES-NI and CLMUL (PCLMULQDQ) when the CPU has them: the `aes` and
//! `ghash` crates detect them at run time (`cpufeatures`). Measured costs, side by side with
//! raw `aes-gcm`, are in the repository's `BENCHMARKS.md`.

#![forbid(unsafe_code)]

mod classify;
mod derive;
mod envelope;
mod error;
mod field;
mod keyring;
mod keys;
#[cfg(feature = "sqlx")]
mod pg_keys;
#[doc(hidden)]
pub mod primitives;
mod rotation;
mod stream;
mod subject;
mod tenant_keys;
#[cfg(feature = "sqlx")]
mod text_column;

pub use classify::{
    Classification, Internal, Mask, Public, Restricted, Sensitive, mask_email, mask_tail,
};
pub use envelope::{
    ALG_AES256GCM_COMMITTED, COMMITMENT_LEN, Envelope, FORMAT_V1, MAGIC, MAX_ENVELOPE_LEN,
    NONCE_LEN, TAG_LEN, TEXT_PREFIX,
};
pub use error::{CryptoError, DecodeError};
pub use field::{
    BLIND_INDEX_DEFAULT_LEN, Column, FieldRef, Normalizer, ROW_ID_MAX_LEN, RowId, normalize,
};
pub use keyring::{
    BlindIndex, DEFAULT_CACHE_CAPACITY, Keyring, ReencryptProgress, ShredReport, TenantKeys,
};
pub use keys::{
    KEY_ID_MAX_LEN, KEY_LEN, KeyId, KeyInfo, KeyProvider, KeyState, KeyVersion, Kms,
    LocalKeyProvider, SecretKey, WrappedKeyProvider,
};
#[cfg(feature = "sqlx")]
pub use pg_keys::PgTenantKeyStore;
pub use rotation::{KeyDue, RotationPolicy, RotationStatus, RotationSubject};
pub use stream::{
    DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, STREAM_MAGIC, StreamHeader, StreamSummary,
};
#[cfg(feature = "sqlx")]
pub use subject::PgSubjectKeyStore;
pub use subject::{
    InMemorySubjectKeyStore, SUBJECT_FORMAT_V1, SUBJECT_TEXT_PREFIX, SubjectEnvelope,
    SubjectHandle, SubjectKeyLookup, SubjectKeyStore, SubjectKeys,
};
pub use tenant_keys::{
    InMemoryTenantKeyStore, StoreFuture, TenantKeyInfo, TenantKeyLookup, TenantKeyRecord,
    TenantKeyStore,
};
#[cfg(feature = "sqlx")]
pub use text_column::{TextColumn, TextForm};

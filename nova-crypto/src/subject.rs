//! Per-subject crypto-shredding: make one data subject's fields unreadable — in the live
//! database and in every backup of it — while the rest of the tenant stays readable (GDPR
//! Art. 17 erasure without rewriting history). This module must never open a field whose
//! subject key was destroyed, and never give a shredded subject a new key.
//!
//! The key hierarchy, security notes and costs are documented on [`SubjectKeys`], the
//! binary layout on [`SubjectEnvelope`], so that they appear in the rendered docs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::Engine as _;
use nova_tenancy::{AUDIT_TARGET, Actor, SecurityEvent, TenantContext, TenantId};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::envelope::{COMMITMENT_LEN, Envelope, MAX_ENVELOPE_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{CryptoError, DecodeError};
use crate::field::{Column, FieldRef, ROW_ID_MAX_LEN};
use crate::keyring::Keyring;
use crate::keys::KEY_LEN;
use crate::primitives;
use crate::tenant_keys::StoreFuture;

#[cfg(feature = "sqlx")]
pub use pg::PgSubjectKeyStore;

/// The only subject envelope format version this build writes and reads.
pub const SUBJECT_FORMAT_V1: u8 = 1;
/// Prefix of a subject envelope's text form.
pub const SUBJECT_TEXT_PREFIX: &str = "ns1:";

/// Domain-separation label at the start of every subject key derivation's `info`.
const KDF_LABEL: &[u8] = b"nova-crypto/subject/v1";
/// Domain-separation label at the start of every subject field's associated data.
const AD_LABEL: &[u8] = b"nova-crypto/subject/v1/field";
/// Where wrapped subject keys live, as far as the tenant keyring's associated data knows.
const WRAP_TABLE: &str = "nova_subject_keys";
const WRAP_COLUMN: &str = "key";

const HEADER_LEN: usize = 1 + 16;
const OVERHEAD: usize = HEADER_LEN + COMMITMENT_LEN + NONCE_LEN + TAG_LEN;

// ----- envelope -----

/// One field sealed under a subject's key. Construct with [`SubjectKeys::seal`] or by
/// decoding stored bytes; decoding never panics.
///
/// # Layout
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 1 | format version, `0x01` |
/// | 1 | 16 | subject id (UUID bytes) |
/// | 17 | 32 | key commitment |
/// | 49 | 12 | nonce (random) |
/// | 61 | n | ciphertext (`n` = plaintext length) |
/// | 61+n | 16 | GCM tag |
///
/// The text form is `ns1:` followed by the binary form in unpadded base64url (RFC 4648 §5).
/// The associated data is `"nova-crypto/subject/v1/field"` ‖ header (offsets 0 to 17) ‖
/// tenant id ‖ len8(table) ‖ table ‖ len8(column) ‖ column ‖ row id (tagged, as for
/// [`crate::Envelope`]), so an envelope copied to another tenant, subject, table, column or
/// row fails with [`CryptoError::Authentication`]. The 32-byte commitment is compared in
/// constant time before decrypting, for the reason given in the crate docs (AES-GCM alone
/// is not key-committing).
///
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectEnvelope {
    bytes: Vec<u8>,
}

impl SubjectEnvelope {
    /// Decodes the binary form.
    ///
    /// # Errors
    /// [`DecodeError`] describing the first problem found.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        validate(bytes)?;
        Ok(Self {
            bytes: bytes.to_vec(),
        })
    }

    /// Decodes the text form (`ns1:` + base64url).
    ///
    /// # Errors
    /// [`DecodeError`] describing the first problem found.
    pub fn from_text(text: &str) -> Result<Self, DecodeError> {
        let body = text
            .strip_prefix(SUBJECT_TEXT_PREFIX)
            .ok_or(DecodeError::BadMagic)?;
        // Refuse before decoding anything that could not fit, so memory stays bounded.
        if body.len() > MAX_ENVELOPE_LEN / 3 * 4 + 4 {
            return Err(DecodeError::TooLong { what: "envelope" });
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DecodeError::BadEncoding)?;
        validate(&bytes)?;
        Ok(Self { bytes })
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
        let mut s =
            String::with_capacity(SUBJECT_TEXT_PREFIX.len() + self.bytes.len().div_ceil(3) * 4);
        s.push_str(SUBJECT_TEXT_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&self.bytes, &mut s);
        s
    }

    /// The data subject whose key sealed this field.
    #[must_use]
    pub fn subject(&self) -> Uuid {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.bytes[1..HEADER_LEN]);
        Uuid::from_bytes(id)
    }

    /// Length of the sealed plaintext.
    #[must_use]
    pub fn plaintext_len(&self) -> usize {
        self.bytes.len() - OVERHEAD
    }

    fn header(&self) -> &[u8] {
        &self.bytes[..HEADER_LEN]
    }

    fn commitment(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + COMMITMENT_LEN]
    }

    fn nonce(&self) -> &[u8] {
        let at = HEADER_LEN + COMMITMENT_LEN;
        &self.bytes[at..at + NONCE_LEN]
    }

    fn ciphertext_and_tag(&self) -> &[u8] {
        &self.bytes[HEADER_LEN + COMMITMENT_LEN + NONCE_LEN..]
    }
}

/// Checks a binary subject envelope's length and version.
fn validate(b: &[u8]) -> Result<(), DecodeError> {
    if b.len() > MAX_ENVELOPE_LEN {
        return Err(DecodeError::TooLong { what: "envelope" });
    }
    let version = *b
        .first()
        .ok_or(DecodeError::Truncated { what: "version" })?;
    if version != SUBJECT_FORMAT_V1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if b.len() < OVERHEAD {
        return Err(DecodeError::Truncated { what: "envelope" });
    }
    Ok(())
}

impl fmt::Debug for SubjectEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ciphertext is not secret, but it is noise in logs; show the header only.
        f.debug_struct("SubjectEnvelope")
            .field("subject", &self.subject())
            .field("plaintext_len", &self.plaintext_len())
            .finish()
    }
}

impl serde::Serialize for SubjectEnvelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for SubjectEnvelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_text(&text).map_err(serde::de::Error::custom)
    }
}

// ----- store -----

/// What a [`SubjectKeyStore`] holds for one (tenant, subject).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectKeyLookup {
    /// The subject's key, wrapped by the tenant keyring (an [`Envelope`] in text form).
    Found(String),
    /// The subject was crypto-shredded; the tombstone stays so no new key is made.
    Destroyed,
    /// The subject has no key yet.
    Missing,
}

impl fmt::Debug for SubjectKeyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found(_) => f.write_str("Found([REDACTED])"),
            Self::Destroyed => f.write_str("Destroyed"),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

/// Where wrapped subject keys live. Every write must be durable before its future
/// resolves, and the store must be shared by every process that seals for the same
/// tenants, so that racing first seals converge on one key and a shred is seen by all.
///
/// Treat the store as key material: keep it out of the data's backups (see the module
/// docs), or erasure can be undone by restoring it.
pub trait SubjectKeyStore: Send + Sync + 'static {
    /// The subject's wrapped key, its tombstone, or nothing.
    ///
    /// # Errors
    /// Store-specific failures ([`CryptoError::Store`]).
    fn get(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, SubjectKeyLookup>;

    /// Stores `wrapped` unless the subject already has a key or a tombstone, and returns
    /// what is stored now — so when two writers race, both get the winner's key.
    ///
    /// # Errors
    /// Store-specific failures ([`CryptoError::Store`]).
    fn insert_if_absent(
        &self,
        tenant: TenantId,
        subject: Uuid,
        wrapped: String,
    ) -> StoreFuture<'_, SubjectKeyLookup>;

    /// Erases the subject's wrapped key and leaves a tombstone (also when it had no key
    /// yet). Returns whether a key was erased.
    ///
    /// # Errors
    /// Store-specific failures ([`CryptoError::Store`]).
    fn destroy(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, bool>;
}

/// Wrapped keys by (tenant, subject); `None` is a tombstone.
type SubjectMap = HashMap<(TenantId, Uuid), Option<Zeroizing<String>>>;

/// A [`SubjectKeyStore`] in process memory, for tests and demos: its contents are lost when
/// the process ends, and with them every subject's data.
#[derive(Default)]
pub struct InMemorySubjectKeyStore {
    keys: Mutex<SubjectMap>,
}

impl InMemorySubjectKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubjectMap> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lookup_of(entry: Option<&Option<Zeroizing<String>>>) -> SubjectKeyLookup {
    match entry {
        None => SubjectKeyLookup::Missing,
        Some(None) => SubjectKeyLookup::Destroyed,
        Some(Some(w)) => SubjectKeyLookup::Found(String::clone(w)),
    }
}

impl SubjectKeyStore for InMemorySubjectKeyStore {
    fn get(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, SubjectKeyLookup> {
        let found = lookup_of(self.lock().get(&(tenant, subject)));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn insert_if_absent(
        &self,
        tenant: TenantId,
        subject: Uuid,
        wrapped: String,
    ) -> StoreFuture<'_, SubjectKeyLookup> {
        let mut map = self.lock();
        let now = map
            .entry((tenant, subject))
            .or_insert_with(|| Some(Zeroizing::new(wrapped)));
        let found = lookup_of(Some(now));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn destroy(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, bool> {
        // Replacing the entry drops the wrapped key, which zeroizes it.
        let existed = matches!(self.lock().insert((tenant, subject), None), Some(Some(_)));
        Box::pin(std::future::ready(Ok(existed)))
    }
}

impl fmt::Debug for InMemorySubjectKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemorySubjectKeyStore")
            .field("subjects", &self.lock().len())
            .finish()
    }
}

// ----- sealing and opening -----

/// Seals and opens fields under per-subject keys, and crypto-shreds single subjects.
/// Cheap to share: wrap it in an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use nova_crypto::{
///     Column, CryptoError, InMemorySubjectKeyStore, InMemoryTenantKeyStore, Keyring,
///     LocalKeyProvider, SubjectKeys,
/// };
/// use nova_tenancy::{TenantContext, TenantId};
/// use secrecy::ExposeSecret;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let keyring = Arc::new(Keyring::new(
///     Arc::new(LocalKeyProvider::generated("root")?),
///     Arc::new(InMemoryTenantKeyStore::new()),
///     "root",
/// )?);
/// let subjects = SubjectKeys::new(keyring, Arc::new(InMemorySubjectKeyStore::new()));
/// let ctx = TenantContext::system(TenantId::new_v4(), "doc example")?;
/// let phone = Column::new("patients", "phone")?;
/// let alice = uuid::Uuid::new_v4();
///
/// let sealed = subjects.seal(&ctx, alice, &phone.row(7_i64), b"+44 20 7946 0000").await?;
/// let opened = subjects.open(&ctx, alice, &phone.row(7_i64), &sealed).await?;
/// assert_eq!(opened.expose_secret(), b"+44 20 7946 0000");
///
/// // Erasure request: Alice's fields are gone, everywhere, for good.
/// assert!(subjects.shred(&ctx, alice).await?);
/// assert!(matches!(
///     subjects.open(&ctx, alice, &phone.row(7_i64), &sealed).await,
///     Err(CryptoError::KeyDestroyed)
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Key hierarchy
///
/// Each (tenant, subject) pair gets a random 256-bit *subject key* when its first field is
/// sealed. The key is stored only *wrapped*: sealed by the tenant's [`Keyring`] as the field
/// `nova_subject_keys.key` of row `subject`, in a [`SubjectKeyStore`]. Reading it therefore
/// needs the KEK and the tenant key too, and [`Keyring::shred_tenant`] takes every subject
/// of the tenant with it. (So the keyring field `nova_subject_keys.key` is reserved: do not
/// seal application data under that table and column name.) Field keys come from the
/// subject key:
///
/// ```text
/// OKM  = HKDF-SHA256(salt = none, IKM = subject key, info, L = 64)   AES-256 key ‖ commitment
/// info = "nova-crypto/subject/v1" ‖ 0x00 ‖ tenant id (16) ‖ subject id (16)
///        ‖ len16(table) ‖ table ‖ len16(column) ‖ column
/// ```
///
/// The subject key is uniformly random, so HKDF needs no salt (RFC 5869 §3.1). Lengths are
/// big-endian `u16`, so no two (tenant, subject, table, column) tuples share an `info`.
///
/// # Security notes
///
/// - **Erasure.** [`SubjectKeys::shred`] erases the wrapped key and leaves a tombstone:
///   later opens give [`CryptoError::KeyDestroyed`] and later seals for that subject fail
///   with the same error instead of minting a fresh key. A seal already past its key lookup
///   when the shred lands can still finish; what it wrote is sealed under the destroyed key
///   and nobody can open it.
/// - **Backups.** The subject key store is key material. Keep it out of the backups of the
///   data it protects (or give its backups a retention no longer than your erasure
///   deadline): a data backup restored after an erasure then holds only envelopes whose key
///   is gone. Restoring an old copy of the key store brings erased subjects back.
/// - **What is visible.** The subject id is stored in the clear, so the key can be found
///   and an erasure job can find a subject's rows; use a pseudonymous id, not one derived
///   from personal data. The commitment is the same for every envelope of one tenant,
///   subject and column, which reveals nothing the subject id does not.
/// - **Message bound.** Random 96-bit nonces are safe for 2^32 messages per key (NIST
///   SP 800-38D §8.3); each (tenant, subject, column) has its own key.
///
/// # Performance
///
/// Nothing is cached, so a shred takes effect at once in every process sharing the store.
/// Each seal or open costs one store lookup (one round trip for `PgSubjectKeyStore`), one
/// AES-GCM open of the wrapped key under the tenant's cached field key, one HKDF expansion
/// and the field's AES-GCM.
pub struct SubjectKeys {
    keyring: Arc<Keyring>,
    store: Arc<dyn SubjectKeyStore>,
    /// The field under which the tenant keyring wraps subject keys (row = subject id).
    wrap_column: Column,
}

impl SubjectKeys {
    /// Subject keys wrapped by `keyring` and kept in `store`.
    #[must_use]
    pub fn new(keyring: Arc<Keyring>, store: Arc<dyn SubjectKeyStore>) -> Self {
        let wrap_column = Column::new(WRAP_TABLE, WRAP_COLUMN)
            .unwrap_or_else(|_| unreachable!("constant names are valid SQL identifiers"));
        Self {
            keyring,
            store,
            wrap_column,
        }
    }

    /// Seals `plaintext` for one field of `subject` in the context's tenant. The subject's
    /// key is created on its first seal; replicas racing to create it converge on one.
    ///
    /// # Errors
    /// - [`CryptoError::KeyDestroyed`] when the subject or the tenant was crypto-shredded;
    /// - [`CryptoError::TooLarge`] above 16 MiB;
    /// - [`CryptoError::TenantNotProvisioned`] when the keyring's tenant key store needs
    ///   [`Keyring::provision_tenant`] first; provider and store errors.
    pub async fn seal(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<SubjectEnvelope, CryptoError> {
        if plaintext.len() > MAX_ENVELOPE_LEN - OVERHEAD {
            return Err(CryptoError::TooLarge(
                "field larger than 16 MiB; use a stream",
            ));
        }
        let tenant = ctx.tenant();
        let key = match self.store.get(tenant, subject).await? {
            SubjectKeyLookup::Found(wrapped) => self.unwrap_key(ctx, subject, &wrapped)?,
            SubjectKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
            SubjectKeyLookup::Missing => self.create_key(ctx, subject).await?,
        };
        let (cipher, commitment) = field_keys(&key, tenant, subject, field.column)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(SUBJECT_FORMAT_V1);
        out.extend_from_slice(subject.as_bytes());
        out.extend_from_slice(commitment.as_ref());
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
        out.extend_from_slice(&nonce);
        let ad = associated_data(&out[..HEADER_LEN], tenant, field)?;
        let body = out.len();
        out.extend_from_slice(plaintext);
        let tag = primitives::seal_in_place(&cipher, &nonce, &ad, &mut out[body..])?;
        out.extend_from_slice(&tag);
        Ok(SubjectEnvelope { bytes: out })
    }

    /// Opens a field sealed for `subject` in this tenant, table, column and row.
    ///
    /// # Errors
    /// - [`CryptoError::Authentication`] when the envelope names another subject, belongs
    ///   to another tenant, table, column or row, or was changed;
    /// - [`CryptoError::KeyDestroyed`] when the subject or the tenant was crypto-shredded;
    /// - provider and store errors.
    pub async fn open(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
        field: &FieldRef<'_>,
        envelope: &SubjectEnvelope,
    ) -> Result<SecretBox<[u8]>, CryptoError> {
        if envelope.subject() != subject {
            return Err(CryptoError::Authentication);
        }
        self.handle(ctx, subject).await?.open(field, envelope)
    }

    /// Resolves one subject's key once (one store lookup), for a request that opens many of
    /// that subject's fields — a ticket's comments by the same author, an export. Opening
    /// through the handle then costs only the cryptography. The handle holds the key until
    /// dropped and does not see a shred made after it was resolved: keep it for one
    /// request, never for the life of the process.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use nova_crypto::{Column, InMemorySubjectKeyStore, InMemoryTenantKeyStore, Keyring,
    /// #     LocalKeyProvider, SubjectKeys};
    /// # use nova_tenancy::{TenantContext, TenantId};
    /// # use secrecy::ExposeSecret;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let keyring = Arc::new(Keyring::new(Arc::new(LocalKeyProvider::generated("root")?),
    /// #     Arc::new(InMemoryTenantKeyStore::new()), "root")?);
    /// # let subjects = SubjectKeys::new(keyring, Arc::new(InMemorySubjectKeyStore::new()));
    /// # let ctx = TenantContext::system(TenantId::new_v4(), "doc")?;
    /// let body = Column::new("comments", "body")?;
    /// let author = uuid::Uuid::new_v4();
    /// let sealed = [
    ///     subjects.seal(&ctx, author, &body.row(1_i64), b"first").await?,
    ///     subjects.seal(&ctx, author, &body.row(2_i64), b"second").await?,
    /// ];
    /// let key = subjects.handle(&ctx, author).await?; // one lookup for both
    /// assert_eq!(key.open(&body.row(2_i64), &sealed[1])?.expose_secret(), b"second");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Store errors, and errors unwrapping the stored key (a shredded tenant gives
    /// [`CryptoError::KeyDestroyed`]). A shredded or unknown subject is not an error here;
    /// opening through its handle is.
    pub async fn handle(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
    ) -> Result<SubjectHandle, CryptoError> {
        let key = match self.store.get(ctx.tenant(), subject).await? {
            SubjectKeyLookup::Found(wrapped) => {
                HandleKey::Key(self.unwrap_key(ctx, subject, &wrapped)?)
            }
            SubjectKeyLookup::Destroyed => HandleKey::Destroyed,
            SubjectKeyLookup::Missing => HandleKey::Missing,
        };
        Ok(SubjectHandle {
            tenant: ctx.tenant(),
            subject,
            key,
        })
    }

    /// [`SubjectKeys::open`] for text fields.
    ///
    /// # Errors
    /// As [`SubjectKeys::open`], and [`CryptoError::NotUtf8`] when the plaintext is not UTF-8.
    pub async fn open_string(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
        field: &FieldRef<'_>,
        envelope: &SubjectEnvelope,
    ) -> Result<SecretString, CryptoError> {
        let bytes = self.open(ctx, subject, field, envelope).await?;
        let text = std::str::from_utf8(bytes.expose_secret()).map_err(|_| CryptoError::NotUtf8)?;
        Ok(SecretString::from(text))
    }

    /// Crypto-shreds one subject of the context's tenant: erases its key, so every field
    /// sealed for it — in the database and in every backup of the data — is permanently
    /// unreadable ([`CryptoError::KeyDestroyed`]), and no new field can be sealed for it.
    /// The tenant's other subjects are untouched. Takes effect at once (nothing is cached).
    /// Returns whether the subject had a key; reported as a `warn` event on
    /// [`AUDIT_TARGET`] either way.
    ///
    /// # Errors
    /// Store errors.
    pub async fn shred(&self, ctx: &TenantContext, subject: Uuid) -> Result<bool, CryptoError> {
        let tenant = ctx.tenant();
        let existed = self.store.destroy(tenant, subject).await?;
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "subject_crypto_shred",
            tenant = %tenant,
            subject = %subject,
            request_id = %ctx.request_id(),
            existed,
            "subject key destroyed (crypto-shredding)"
        );
        let mut event = SecurityEvent::new("subject_crypto_shred")
            .tenant(tenant)
            .request_id(ctx.request_id());
        if let Some(user) = ctx.user() {
            event = event.actor(Actor::User(user));
        }
        nova_tenancy::report(&event.details(&[("subject", &subject), ("existed", &existed)]));
        Ok(existed)
    }

    /// Makes, wraps and stores a key for a subject that had none; returns the stored key,
    /// which is another writer's when one got there first.
    async fn create_key(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(fresh.as_mut()).map_err(|_| CryptoError::Rng)?;
        let wrapped = self
            .keyring
            .seal(ctx, &self.wrap_column.row(subject), fresh.as_ref())?
            .to_text();
        match self
            .store
            .insert_if_absent(ctx.tenant(), subject, wrapped)
            .await?
        {
            SubjectKeyLookup::Found(stored) => self.unwrap_key(ctx, subject, &stored),
            SubjectKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
            SubjectKeyLookup::Missing => Err(CryptoError::Store(
                "subject key store lost an inserted key".into(),
            )),
        }
    }

    /// Opens a wrapped subject key with the tenant keyring (which refuses a shredded tenant).
    fn unwrap_key(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
        wrapped: &str,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let malformed = || CryptoError::Store("malformed wrapped subject key".into());
        let envelope = Envelope::from_text(wrapped).map_err(|_| malformed())?;
        let opened = self
            .keyring
            .open(ctx, &self.wrap_column.row(subject), &envelope)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if opened.expose_secret().len() != KEY_LEN {
            return Err(malformed());
        }
        key.copy_from_slice(opened.expose_secret());
        Ok(key)
    }
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// The field key and commitment for one (tenant, subject, column), from the subject key.
enum HandleKey {
    Key(Zeroizing<[u8; KEY_LEN]>),
    Destroyed,
    Missing,
}

/// One subject's key in one tenant, resolved by [`SubjectKeys::handle`] for the length of
/// a request. Its `Debug` shows the tenant, the subject and whether the key was found,
/// never the key.
pub struct SubjectHandle {
    tenant: TenantId,
    subject: Uuid,
    key: HandleKey,
}

impl fmt::Debug for SubjectHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.key {
            HandleKey::Key(_) => "found",
            HandleKey::Destroyed => "destroyed",
            HandleKey::Missing => "missing",
        };
        f.debug_struct("SubjectHandle")
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("key", &state)
            .finish()
    }
}

impl SubjectHandle {
    /// The subject this handle opens.
    #[must_use]
    pub fn subject(&self) -> Uuid {
        self.subject
    }

    /// Opens a field sealed for this handle's subject, as [`SubjectKeys::open`] does.
    ///
    /// # Errors
    /// [`CryptoError::Authentication`] when the envelope names another subject, belongs
    /// elsewhere or was changed; [`CryptoError::KeyDestroyed`] when the subject was
    /// crypto-shredded before the handle was resolved.
    pub fn open(
        &self,
        field: &FieldRef<'_>,
        envelope: &SubjectEnvelope,
    ) -> Result<SecretBox<[u8]>, CryptoError> {
        if envelope.subject() != self.subject {
            return Err(CryptoError::Authentication);
        }
        let key = match &self.key {
            HandleKey::Key(key) => key,
            HandleKey::Destroyed => return Err(CryptoError::KeyDestroyed),
            // Nothing was ever sealed for this subject in this tenant: the envelope belongs
            // to another tenant (or to a store that was lost).
            HandleKey::Missing => return Err(CryptoError::Authentication),
        };
        let (cipher, commitment) = field_keys(key, self.tenant, self.subject, field.column)?;
        // Key commitment: the envelope names exactly one key; checked before decrypting.
        if !primitives::ct_eq_32(envelope.commitment(), &commitment) {
            return Err(CryptoError::Authentication);
        }
        let ad = associated_data(envelope.header(), self.tenant, field)?;
        let mut buf = primitives::open(
            &cipher,
            envelope.nonce(),
            &ad,
            envelope.ciphertext_and_tag(),
        )?;
        let plain = std::mem::take(&mut *buf);
        Ok(SecretBox::from(plain.into_boxed_slice()))
    }
}

fn field_keys(
    key: &[u8; KEY_LEN],
    tenant: TenantId,
    subject: Uuid,
    column: &Column,
) -> Result<(Aes256Gcm, Zeroizing<[u8; COMMITMENT_LEN]>), CryptoError> {
    let (table, column) = (column.table.as_str(), column.column.as_str());
    let mut info = Vec::with_capacity(KDF_LABEL.len() + 1 + 32 + 4 + table.len() + column.len());
    info.extend_from_slice(KDF_LABEL);
    info.push(0);
    info.extend_from_slice(tenant.as_uuid().as_bytes());
    info.extend_from_slice(subject.as_bytes());
    for part in [table, column] {
        // Identifiers are at most 63 bytes, so the cast cannot truncate.
        info.extend_from_slice(&(part.len() as u16).to_be_bytes());
        info.extend_from_slice(part.as_bytes());
    }
    let mut okm = Zeroizing::new([0u8; KEY_LEN + COMMITMENT_LEN]);
    primitives::hkdf_sha256(None, key, &info, okm.as_mut())?;
    let cipher = Aes256Gcm::new_from_slice(&okm[..KEY_LEN])
        .map_err(|_| CryptoError::InvalidKeyOperation("bad AES key length"))?;
    let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
    commitment.copy_from_slice(&okm[KEY_LEN..]);
    Ok((cipher, commitment))
}

/// Associated data: label, header, tenant, table, column and row, each length-delimited or
/// fixed-size so that no two locations share an encoding.
fn associated_data(
    header: &[u8],
    tenant: TenantId,
    field: &FieldRef<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let mut ad = Vec::with_capacity(AD_LABEL.len() + HEADER_LEN + 16 + 130 + 3 + ROW_ID_MAX_LEN);
    ad.extend_from_slice(AD_LABEL);
    ad.extend_from_slice(header);
    ad.extend_from_slice(tenant.as_uuid().as_bytes());
    for part in [field.column.table.as_str(), field.column.column.as_str()] {
        // Identifiers are at most 63 bytes.
        ad.push(part.len() as u8);
        ad.extend_from_slice(part.as_bytes());
    }
    let mut row = [0u8; 3 + ROW_ID_MAX_LEN];
    let n = field.row.encode_into(&mut row)?;
    ad.extend_from_slice(&row[..n]);
    Ok(ad)
}

// ----- PostgreSQL -----

#[cfg(feature = "sqlx")]
mod pg {
    //! Wrapped subject keys in PostgreSQL. Every call is one or two statements on the pool;
    //! nothing is mirrored in memory, so a shred is seen by every process at once.

    use std::fmt;
    use std::sync::Arc;

    use nova_tenancy::{Ident, TenantId};
    use sqlx::{AssertSqlSafe, PgPool};
    use uuid::Uuid;

    use super::{SubjectKeyLookup, SubjectKeyStore};
    use crate::error::CryptoError;
    use crate::tenant_keys::StoreFuture;

    fn db_err(e: sqlx::Error) -> CryptoError {
        CryptoError::Store(format!("postgres: {e}"))
    }

    /// Wrapped subject keys in a PostgreSQL table: one row per (tenant, subject), with the
    /// wrapped key or, once shredded, a tombstone.
    ///
    /// **This table is key material.** Exclude it from the backups of the data it protects
    /// (e.g. a separate schema left out of `pg_dump`, or a separate database with a short
    /// backup retention): that is what makes a restored data backup unreadable for erased
    /// subjects. A shred overwrites the wrapped key with `NULL`; PostgreSQL keeps the old
    /// row version until `VACUUM` reclaims it, and WAL archives keep it for their own
    /// retention, so erasure is complete once those have aged out.
    pub struct PgSubjectKeyStore {
        pool: PgPool,
        schema: Option<Ident>,
        table: String,
        get_sql: Arc<str>,
        insert_sql: Arc<str>,
        tombstone_sql: Arc<str>,
        erase_sql: Arc<str>,
    }

    impl PgSubjectKeyStore {
        /// A store over `schema.table` (or `table` on the search path when `schema` is
        /// `None`). Create the table with [`PgSubjectKeyStore::create_table_sql`].
        #[must_use]
        pub fn new(pool: PgPool, schema: Option<Ident>, table: Ident) -> Self {
            // Ident's Display quotes the name, and validation admits no quote characters.
            let table = match &schema {
                Some(s) => format!("{s}.{table}"),
                None => table.to_string(),
            };
            let get_sql = format!(
                "SELECT wrapped, destroyed_at IS NOT NULL FROM {table} WHERE tenant_id = $1 AND subject_id = $2"
            );
            let insert_sql = format!(
                "INSERT INTO {table} (tenant_id, subject_id, wrapped) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, subject_id) DO NOTHING"
            );
            let tombstone_sql = format!(
                "INSERT INTO {table} (tenant_id, subject_id, wrapped, destroyed_at) VALUES ($1, $2, NULL, now())
                 ON CONFLICT (tenant_id, subject_id) DO NOTHING"
            );
            let erase_sql = format!(
                "UPDATE {table} SET wrapped = NULL, destroyed_at = now()
                 WHERE tenant_id = $1 AND subject_id = $2 AND wrapped IS NOT NULL"
            );
            Self {
                pool,
                schema,
                table,
                get_sql: get_sql.into(),
                insert_sql: insert_sql.into(),
                tombstone_sql: tombstone_sql.into(),
                erase_sql: erase_sql.into(),
            }
        }

        /// DDL for the table (and its schema, if one was given). Idempotent.
        #[must_use]
        pub fn create_table_sql(&self) -> String {
            Self::ddl(self.schema.as_ref(), &self.table)
        }

        /// [`PgSubjectKeyStore::create_table_sql`] without a store (for migrations run
        /// before any pool exists): the table `schema.table`, or `table` on the search path.
        #[must_use]
        pub fn schema_sql(schema: Option<&Ident>, table: &Ident) -> String {
            let qualified = match schema {
                Some(schema) => format!("{schema}.{table}"),
                None => table.to_string(),
            };
            Self::ddl(schema, &qualified)
        }

        /// The DDL for the table named `qualified`, creating `schema` first if given.
        fn ddl(schema: Option<&Ident>, qualified: &str) -> String {
            let create_schema = match schema {
                Some(schema) => format!("CREATE SCHEMA IF NOT EXISTS {schema};\n"),
                None => String::new(),
            };
            format!(
                "{create_schema}CREATE TABLE IF NOT EXISTS {qualified} (
    tenant_id uuid NOT NULL,
    subject_id uuid NOT NULL,
    wrapped text,
    destroyed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_id),
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);
"
            )
        }

        async fn lookup(
            &self,
            tenant: TenantId,
            subject: Uuid,
        ) -> Result<SubjectKeyLookup, CryptoError> {
            let row: Option<(Option<String>, bool)> =
                sqlx::query_as(AssertSqlSafe(Arc::clone(&self.get_sql)))
                    .bind(tenant.as_uuid())
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
            Ok(match row {
                None => SubjectKeyLookup::Missing,
                Some((Some(wrapped), false)) => SubjectKeyLookup::Found(wrapped),
                Some((None, true)) => SubjectKeyLookup::Destroyed,
                Some(_) => {
                    return Err(CryptoError::Store("malformed subject key row".into()));
                }
            })
        }
    }

    impl SubjectKeyStore for PgSubjectKeyStore {
        fn get(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, SubjectKeyLookup> {
            Box::pin(self.lookup(tenant, subject))
        }

        fn insert_if_absent(
            &self,
            tenant: TenantId,
            subject: Uuid,
            wrapped: String,
        ) -> StoreFuture<'_, SubjectKeyLookup> {
            Box::pin(async move {
                // A conflicting insert in flight makes this one wait for it to commit; the
                // read that follows is a new statement (a new snapshot under READ
                // COMMITTED), so it sees the winner's key or tombstone.
                sqlx::query(AssertSqlSafe(Arc::clone(&self.insert_sql)))
                    .bind(tenant.as_uuid())
                    .bind(subject)
                    .bind(wrapped)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                self.lookup(tenant, subject).await
            })
        }

        fn destroy(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, bool> {
            Box::pin(async move {
                // First make sure a row exists (a tombstone, or a key committed by a racing
                // first seal, which the insert waits for), then erase whatever key it holds.
                // Done as one statement, a key inserted concurrently could escape the erase.
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                sqlx::query(AssertSqlSafe(Arc::clone(&self.tombstone_sql)))
                    .bind(tenant.as_uuid())
                    .bind(subject)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let erased = sqlx::query(AssertSqlSafe(Arc::clone(&self.erase_sql)))
                    .bind(tenant.as_uuid())
                    .bind(subject)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                tx.commit().await.map_err(db_err)?;
                Ok(erased > 0)
            })
        }
    }

    impl fmt::Debug for PgSubjectKeyStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("PgSubjectKeyStore")
                .field("table", &self.table)
                .finish_non_exhaustive()
        }
    }
}

#[cfg(feature = "sqlx")]
mod sqlx_impl {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
    use sqlx::{Decode, Encode, Type, TypeInfo as _, ValueRef as _};

    use super::SubjectEnvelope;

    /// Stored as `BYTEA` (binary form); also decodes from `TEXT` columns holding the text
    /// form. To write a `TEXT` column, bind [`SubjectEnvelope::to_text`].
    impl Type<Postgres> for SubjectEnvelope {
        fn type_info() -> PgTypeInfo {
            <Vec<u8> as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <Vec<u8> as Type<Postgres>>::compatible(ty)
                || <String as Type<Postgres>>::compatible(ty)
        }
    }

    impl Encode<'_, Postgres> for SubjectEnvelope {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <&[u8] as Encode<Postgres>>::encode(self.as_bytes(), buf)
        }
    }

    impl<'r> Decode<'r, Postgres> for SubjectEnvelope {
        fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
            if value.type_info().name() == "BYTEA" {
                let bytes = <Vec<u8> as Decode<Postgres>>::decode(value)?;
                Ok(SubjectEnvelope::from_bytes(&bytes)?)
            } else {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(SubjectEnvelope::from_text(text)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let mut b = vec![SUBJECT_FORMAT_V1];
        b.extend_from_slice(Uuid::from_u128(0x0102).as_bytes());
        b.extend_from_slice(&[0xAA; COMMITMENT_LEN + NONCE_LEN]);
        b.extend(std::iter::repeat_n(0xCC, n));
        b.extend_from_slice(&[0xBB; TAG_LEN]);
        b
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let e = SubjectEnvelope::from_bytes(&sample(10)).unwrap();
        assert_eq!(e.subject(), Uuid::from_u128(0x0102));
        assert_eq!(e.plaintext_len(), 10);
        assert_eq!(e.header(), &sample(10)[..17]);
        assert_eq!(e.commitment(), &[0xAA; 32]);
        assert_eq!(e.nonce(), &[0xAA; 12]);
        assert_eq!(e.ciphertext_and_tag().len(), 26);
        assert_eq!(OVERHEAD, 77);
    }

    #[test]
    fn every_truncation_and_unknown_version_is_a_typed_error() {
        let b = sample(0);
        for n in 0..b.len() {
            assert!(
                SubjectEnvelope::from_bytes(&b[..n]).is_err(),
                "accepted {n} bytes"
            );
        }
        assert!(SubjectEnvelope::from_bytes(&b).is_ok());
        let mut v2 = b;
        v2[0] = 2;
        assert_eq!(
            SubjectEnvelope::from_bytes(&v2),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn text_form_is_prefixed_base64url_and_refuses_others() {
        let e = SubjectEnvelope::from_bytes(&sample(3)).unwrap();
        let t = e.to_text();
        assert!(t.starts_with("ns1:"));
        assert!(!t.contains('=') && !t.contains('+') && !t.contains('/'));
        assert_eq!(SubjectEnvelope::from_text(&t).unwrap(), e);
        assert_eq!(
            SubjectEnvelope::from_text(&t.replacen("ns1:", "nv1:", 1)),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            SubjectEnvelope::from_text("ns1:!!!!"),
            Err(DecodeError::BadEncoding)
        );
        let big = format!("ns1:{}", "A".repeat(MAX_ENVELOPE_LEN / 3 * 4 + 8));
        assert_eq!(
            SubjectEnvelope::from_text(&big),
            Err(DecodeError::TooLong { what: "envelope" })
        );
    }

    #[test]
    fn derivation_info_separates_subjects_and_columns() {
        let key = [7u8; KEY_LEN];
        let t = TenantId::new_v4();
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let ab = Column::new("ab", "c").unwrap();
        let a_bc = Column::new("a", "bc").unwrap();
        let c1 = field_keys(&key, t, s1, &ab).unwrap().1;
        assert_ne!(*c1, *field_keys(&key, t, s2, &ab).unwrap().1);
        assert_ne!(*c1, *field_keys(&key, t, s1, &a_bc).unwrap().1);
        assert_ne!(
            *c1,
            *field_keys(&key, TenantId::new_v4(), s1, &ab).unwrap().1
        );
        assert_eq!(*c1, *field_keys(&key, t, s1, &ab).unwrap().1);
    }

    #[test]
    fn lookup_debug_hides_the_wrapped_key() {
        let l = SubjectKeyLookup::Found("nv1:secretwrappedbytes".into());
        assert!(!format!("{l:?}").contains("secretwrapped"));
    }
}

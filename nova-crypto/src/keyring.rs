//! The keyring: one object a service holds to seal and open fields, compute blind indexes,
//! rotate and shred keys. Derived keys are cached so the per-field cost is one AES-GCM call.
//!
//! This module must never use a key for a tenant other than the context's, never return
//! plaintext that failed authentication, and never keep a shredded tenant's keys in cache.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use hmac::{Hmac, Mac};
use nova_tenancy::{AUDIT_TARGET, TenantContext, TenantId};
use secrecy::{SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::derive::{self, Purpose};
use crate::envelope::{COMMITMENT_LEN, Envelope, MAX_ENVELOPE_LEN, NONCE_LEN};
use crate::error::CryptoError;
use crate::field::{Column, FieldRef};
use crate::keys::{KEY_LEN, KeyId, KeyProvider, KeyVersion, SecretKey};
use crate::primitives;
use crate::rotation::{KeyDue, RotationPolicy, RotationStatus, RotationSubject};
use crate::tenant_keys::{TenantKeyLookup, TenantKeyRecord, TenantKeyStore};

/// Default number of derived keys kept in memory.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Domain-separation label at the start of every field's associated data.
const FIELD_AD_LABEL: &[u8] = b"nova-crypto/v1/field";

pub(crate) struct FieldKeys {
    pub(crate) cipher: Aes256Gcm,
    pub(crate) commitment: Zeroizing<[u8; COMMITMENT_LEN]>,
}

// Boxed in an `Arc` in the cache, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum CachedKey {
    Field(FieldKeys),
    BlindIndex(Hmac<Sha256>),
    Stream(Zeroizing<[u8; KEY_LEN]>),
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    tenant: TenantId,
    version: KeyVersion,
    purpose: Purpose,
    name: Arc<str>,
}

/// A bounded map of derived keys. Evicted entries are dropped, and every cached key type
/// zeroizes on drop (`Aes256Gcm` and `Hmac` through the `zeroize` feature of the
/// RustCrypto crates, stream keys through `Zeroizing`).
struct KeyCache {
    map: RwLock<HashMap<CacheKey, Arc<CachedKey>>>,
    order: Mutex<VecDeque<CacheKey>>,
    capacity: usize,
}

impl KeyCache {
    fn get(&self, k: &CacheKey) -> Option<Arc<CachedKey>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(k)
            .cloned()
    }

    fn insert(&self, k: CacheKey, v: Arc<CachedKey>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if map.insert(k.clone(), v).is_none() {
            order.push_back(k);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    fn purge_tenant(&self, tenant: TenantId) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| k.tenant != tenant);
        order.retain(|k| k.tenant != tenant);
    }

    fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.order.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What crypto-shredding a tenant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredReport {
    /// The tenant whose keys were destroyed.
    pub tenant: TenantId,
    /// How many key versions were erased.
    pub versions_destroyed: usize,
    /// When.
    pub at: SystemTime,
}

/// Counters for a re-encryption job, updated batch by batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReencryptProgress {
    /// Envelopes looked at.
    pub scanned: u64,
    /// Envelopes re-sealed under the current key.
    pub rewritten: u64,
    /// Envelopes already under the current key.
    pub already_current: u64,
    /// Envelopes that could not be opened (left as they were).
    pub failed: u64,
}

/// A blind index value: a truncated keyed HMAC-SHA256 of a normalised plaintext.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BlindIndex {
    bytes: [u8; 32],
    len: u8,
}

impl BlindIndex {
    /// The index bytes (store them in a `BYTEA` column with a B-tree index).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindIndex(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Seals and opens tenant fields. Cheap to share: wrap it in an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use nova_crypto::{Column, InMemoryTenantKeyStore, Keyring, LocalKeyProvider};
/// use nova_tenancy::{TenantContext, TenantId};
/// use secrecy::ExposeSecret;
///
/// let keyring = Keyring::new(
///     Arc::new(LocalKeyProvider::generated("root")?),
///     Arc::new(InMemoryTenantKeyStore::new()),
///     "root",
/// )?;
/// let ctx = TenantContext::system(TenantId::new_v4(), "doc example")?;
/// let email = Column::new("users", "email")?;
///
/// let sealed = keyring.seal(&ctx, &email.row(7_i64), b"alice@example.com")?;
/// let opened = keyring.open(&ctx, &email.row(7_i64), &sealed)?;
/// assert_eq!(opened.expose_secret(), b"alice@example.com");
/// assert!(keyring.open(&ctx, &email.row(8_i64), &sealed).is_err()); // another row
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    store: Arc<dyn TenantKeyStore>,
    kek_id: KeyId,
    cache: KeyCache,
}

impl Keyring {
    /// A keyring that creates tenant keys under the primary version of KEK `kek_id`.
    ///
    /// # Errors
    /// [`CryptoError::Decode`] for an invalid key id; [`CryptoError::UnknownKek`] when the
    /// provider has no such key.
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        store: Arc<dyn TenantKeyStore>,
        kek_id: &str,
    ) -> Result<Self, CryptoError> {
        let kek_id = KeyId::new(kek_id)?;
        provider.primary(&kek_id)?;
        Ok(Self {
            provider,
            store,
            kek_id,
            cache: KeyCache {
                map: RwLock::new(HashMap::new()),
                order: Mutex::new(VecDeque::new()),
                capacity: DEFAULT_CACHE_CAPACITY,
            },
        })
    }

    /// Bounds the derived-key cache to `capacity` entries (at least 1).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache.capacity = capacity.max(1);
        self
    }

    /// Derived keys currently cached.
    #[must_use]
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// The tenant's current key version, creating version 1 on first use.
    fn current_record(&self, tenant: TenantId) -> Result<TenantKeyRecord, CryptoError> {
        match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => Ok(r),
            TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => {
                let record = self.new_record(tenant, KeyVersion::FIRST)?;
                match self.store.insert(record.clone()) {
                    Ok(()) => Ok(record),
                    // Another writer created it first: use theirs.
                    Err(CryptoError::InvalidKeyOperation(_)) => match self.store.current(tenant)? {
                        TenantKeyLookup::Found(r) => Ok(r),
                        TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
                        TenantKeyLookup::Missing => Err(CryptoError::InvalidKeyOperation(
                            "tenant key store lost a record",
                        )),
                    },
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn new_record(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<TenantKeyRecord, CryptoError> {
        Ok(TenantKeyRecord {
            tenant,
            version,
            kek_id: self.kek_id.clone(),
            kek_version: self.provider.primary(&self.kek_id)?,
            salt: SecretKey::generate()?,
            created_at: SystemTime::now(),
        })
    }

    fn record(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<TenantKeyRecord, CryptoError> {
        match self.store.get(tenant, version)? {
            TenantKeyLookup::Found(r) => Ok(r),
            TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => Err(CryptoError::UnknownTenantKey(version)),
        }
    }

    /// The cached key for (tenant, version, purpose, name), derived on a miss.
    pub(crate) fn derived(
        &self,
        record: &TenantKeyRecord,
        purpose: Purpose,
        name: &Arc<str>,
        table: &str,
        column: &str,
    ) -> Result<Arc<CachedKey>, CryptoError> {
        let key = CacheKey {
            tenant: record.tenant,
            version: record.version,
            purpose,
            name: Arc::clone(name),
        };
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let kek = self.provider.key(&record.kek_id, record.kek_version)?;
        let info = derive::info(purpose, record.tenant, table, column);
        let value = match purpose {
            Purpose::Field => {
                let mut okm = Zeroizing::new([0u8; KEY_LEN + COMMITMENT_LEN]);
                derive::derive(&kek, &record.salt, &info, okm.as_mut())?;
                let cipher = Aes256Gcm::new_from_slice(&okm[..KEY_LEN])
                    .map_err(|_| CryptoError::InvalidKeyOperation("bad AES key length"))?;
                let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
                commitment.copy_from_slice(&okm[KEY_LEN..]);
                CachedKey::Field(FieldKeys { cipher, commitment })
            }
            Purpose::BlindIndex => {
                let mut okm = Zeroizing::new([0u8; KEY_LEN]);
                derive::derive(&kek, &record.salt, &info, okm.as_mut())?;
                let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(okm.as_ref())
                    .map_err(|_| CryptoError::InvalidKeyOperation("bad HMAC key length"))?;
                CachedKey::BlindIndex(mac)
            }
            Purpose::Stream => {
                let mut okm = Zeroizing::new([0u8; KEY_LEN]);
                derive::derive(&kek, &record.salt, &info, okm.as_mut())?;
                CachedKey::Stream(okm)
            }
        };
        let value = Arc::new(value);
        self.cache.insert(key, Arc::clone(&value));
        Ok(value)
    }

    fn field_keys(
        &self,
        record: &TenantKeyRecord,
        column: &Column,
    ) -> Result<Arc<CachedKey>, CryptoError> {
        self.derived(
            record,
            Purpose::Field,
            &column.key,
            column.table.as_str(),
            column.column.as_str(),
        )
    }

    /// Seals `plaintext` for one field of the context's tenant, under the tenant's current
    /// key (created on first use).
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; [`CryptoError::TooLarge`] above
    /// 16 MiB; provider and store errors.
    pub fn seal(
        &self,
        ctx: &TenantContext,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        let record = self.current_record(ctx.tenant())?;
        self.seal_with(&record, ctx.tenant(), field, plaintext)
    }

    fn seal_with(
        &self,
        record: &TenantKeyRecord,
        tenant: TenantId,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        let overhead = Envelope::overhead(record.kek_id.as_str().len());
        if plaintext.len() > MAX_ENVELOPE_LEN - overhead {
            return Err(CryptoError::TooLarge(
                "field larger than 16 MiB; use a stream",
            ));
        }
        let keys = self.field_keys(record, field.column)?;
        let CachedKey::Field(keys) = &*keys else {
            return Err(CryptoError::InvalidKeyOperation(
                "cache returned a key of another purpose",
            ));
        };
        let mut out = Vec::with_capacity(overhead + plaintext.len());
        let header_len =
            Envelope::write_header(&mut out, &record.kek_id, record.kek_version, record.version);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(keys.commitment.as_ref());
        let ad = associated_data(&out[..header_len], tenant, field)?;
        let body = out.len();
        out.extend_from_slice(plaintext);
        let tag = primitives::seal_in_place(&keys.cipher, &nonce, &ad, &mut out[body..])?;
        out.extend_from_slice(&tag);
        Ok(Envelope::from_sealed(out, record.kek_id.as_str().len()))
    }

    /// Opens an envelope sealed for this tenant, table, column and row.
    ///
    /// # Errors
    /// - [`CryptoError::Authentication`] when the envelope belongs elsewhere or was changed;
    /// - [`CryptoError::KeyDestroyed`] when the tenant was crypto-shredded;
    /// - [`CryptoError::UnknownTenantKey`] when the tenant has no such key version;
    /// - [`CryptoError::KekDestroyed`] when the KEK version was destroyed.
    pub fn open(
        &self,
        ctx: &TenantContext,
        field: &FieldRef<'_>,
        envelope: &Envelope,
    ) -> Result<SecretBox<[u8]>, CryptoError> {
        let tenant = ctx.tenant();
        let record = self.record(tenant, envelope.key_version())?;
        if record.kek_id != envelope.kek_id() || record.kek_version != envelope.kek_version() {
            return Err(CryptoError::Authentication);
        }
        let keys = self.field_keys(&record, field.column)?;
        let CachedKey::Field(keys) = &*keys else {
            return Err(CryptoError::InvalidKeyOperation(
                "cache returned a key of another purpose",
            ));
        };
        // Key commitment: the envelope names exactly one key; checked before any decryption.
        if !bool::from(envelope.commitment().ct_eq(keys.commitment.as_ref())) {
            return Err(CryptoError::Authentication);
        }
        let ad = associated_data(envelope.header(), tenant, field)?;
        let mut buf = primitives::open(
            &keys.cipher,
            envelope.nonce(),
            &ad,
            envelope.ciphertext_and_tag(),
        )?;
        let plain = std::mem::take(&mut *buf);
        Ok(SecretBox::from(plain.into_boxed_slice()))
    }

    /// [`Keyring::open`] for text fields.
    ///
    /// # Errors
    /// As [`Keyring::open`], and [`CryptoError::NotUtf8`] when the plaintext is not UTF-8.
    pub fn open_string(
        &self,
        ctx: &TenantContext,
        field: &FieldRef<'_>,
        envelope: &Envelope,
    ) -> Result<SecretString, CryptoError> {
        use secrecy::ExposeSecret as _;
        let bytes = self.open(ctx, field, envelope)?;
        let text = std::str::from_utf8(bytes.expose_secret()).map_err(|_| CryptoError::NotUtf8)?;
        Ok(SecretString::from(text))
    }

    // ----- rotation -----

    /// Creates a new version of the tenant's key (under the KEK's primary version); new
    /// seals use it, older versions still open.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; provider and store errors.
    pub fn rotate_tenant(&self, tenant: TenantId) -> Result<KeyVersion, CryptoError> {
        let next = match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => r.version.next()?,
            TenantKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => KeyVersion::FIRST,
        };
        self.store.insert(self.new_record(tenant, next)?)?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "tenant_key_rotated",
            tenant = %tenant,
            version = next.get(),
            "tenant key rotated"
        );
        Ok(next)
    }

    /// Creates a new version of the KEK and makes it primary. Tenant keys created (or
    /// rotated) from now on use it; existing tenant keys keep the version they were made
    /// with until they are rotated.
    ///
    /// # Errors
    /// Provider errors.
    pub fn rotate_kek(&self) -> Result<KeyVersion, CryptoError> {
        let v = self.provider.rotate(&self.kek_id)?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "kek_rotated",
            kek = %self.kek_id,
            version = v.get(),
            "key-encryption key rotated"
        );
        Ok(v)
    }

    /// Destroys a version of the KEK (it must not be the primary) and drops every cached
    /// derived key, so nothing that depended on that version can be read afterwards
    /// ([`CryptoError::KekDestroyed`]). Rotate every tenant key and re-encrypt first.
    ///
    /// # Errors
    /// Provider errors, e.g. [`CryptoError::InvalidKeyOperation`] for the primary version.
    pub fn destroy_kek(&self, version: KeyVersion) -> Result<(), CryptoError> {
        self.provider.destroy(&self.kek_id, version)?;
        self.cache.clear();
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "kek_destroyed",
            kek = %self.kek_id,
            version = version.get(),
            "key-encryption key version destroyed"
        );
        Ok(())
    }

    /// The tenant's current key version, if it has one.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; store errors.
    pub fn current_version(&self, tenant: TenantId) -> Result<Option<KeyVersion>, CryptoError> {
        match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => Ok(Some(r.version)),
            TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => Ok(None),
        }
    }

    /// Re-seals an envelope under the tenant's current key; `None` when it already is.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub fn reencrypt(
        &self,
        ctx: &TenantContext,
        field: &FieldRef<'_>,
        envelope: &Envelope,
    ) -> Result<Option<Envelope>, CryptoError> {
        use secrecy::ExposeSecret as _;
        let current = self.current_record(ctx.tenant())?;
        if envelope.key_version() == current.version {
            return Ok(None);
        }
        let plain = self.open(ctx, field, envelope)?;
        self.seal_with(&current, ctx.tenant(), field, plain.expose_secret())
            .map(Some)
    }

    /// Re-seals a batch of stored envelopes, updating `progress` and calling `report` once
    /// for the batch. Each result is `Some(new)` to write back, `None` when already
    /// current, or the error for that item (counted as failed; the item is left alone).
    pub fn reencrypt_batch<'a>(
        &self,
        ctx: &TenantContext,
        items: impl IntoIterator<Item = (FieldRef<'a>, &'a Envelope)>,
        progress: &mut ReencryptProgress,
        mut report: impl FnMut(&ReencryptProgress),
    ) -> Vec<Result<Option<Envelope>, CryptoError>> {
        let results: Vec<_> = items
            .into_iter()
            .map(|(field, env)| {
                let r = self.reencrypt(ctx, &field, env);
                progress.scanned += 1;
                match &r {
                    Ok(Some(_)) => progress.rewritten += 1,
                    Ok(None) => progress.already_current += 1,
                    Err(_) => progress.failed += 1,
                }
                r
            })
            .collect();
        report(progress);
        results
    }

    /// Which keys are due (or nearly due) for rotation under `policy`: the KEK's primary
    /// version and every tenant's current key.
    ///
    /// # Errors
    /// Provider and store errors.
    pub fn rotation_report(
        &self,
        policy: &RotationPolicy,
        now: SystemTime,
    ) -> Result<Vec<KeyDue>, CryptoError> {
        let mut due = Vec::new();
        for info in self.provider.versions(&self.kek_id)? {
            if info.primary {
                let status = policy.status(info.created_at, now);
                if status != RotationStatus::Current {
                    due.push(KeyDue {
                        subject: RotationSubject::Kek {
                            id: self.kek_id.clone(),
                            version: info.version,
                        },
                        status,
                    });
                }
            }
        }
        for info in self.store.list_current()? {
            let status = policy.status(info.created_at, now);
            if status != RotationStatus::Current {
                due.push(KeyDue {
                    subject: RotationSubject::Tenant {
                        tenant: info.tenant,
                        version: info.version,
                    },
                    status,
                });
            }
        }
        Ok(due)
    }

    // ----- shredding -----

    /// Crypto-shreds a tenant: erases every version of its key, so every envelope, blind
    /// index and stream of that tenant becomes permanently unreadable
    /// ([`CryptoError::KeyDestroyed`]). Reported as a `warn` event on [`AUDIT_TARGET`];
    /// record the returned report in the audit log as the erasure.
    ///
    /// Every operation consults the [`TenantKeyStore`] before using a cached key, so when
    /// the store is shared (a database), other processes stop opening the tenant's data as
    /// soon as the store says it was destroyed.
    ///
    /// # Errors
    /// Store errors.
    pub fn shred_tenant(&self, tenant: TenantId) -> Result<ShredReport, CryptoError> {
        let versions_destroyed = self.store.destroy_tenant(tenant)?;
        self.cache.purge_tenant(tenant);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "crypto_shred",
            tenant = %tenant,
            versions_destroyed,
            "tenant keys destroyed (crypto-shredding)"
        );
        Ok(ShredReport {
            tenant,
            versions_destroyed,
            at: SystemTime::now(),
        })
    }

    // ----- blind indexes -----

    /// The blind index of `value` for this tenant and column under the tenant's current
    /// key: `HMAC-SHA256(k, normalise(value))` truncated to the column's index length.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; provider and store errors.
    pub fn blind_index(
        &self,
        ctx: &TenantContext,
        column: &Column,
        value: &str,
    ) -> Result<BlindIndex, CryptoError> {
        let record = self.current_record(ctx.tenant())?;
        self.blind_index_with(&record, column, value)
    }

    /// Blind indexes of `value` under every live version of the tenant's key, newest
    /// first: query with `WHERE col_bidx = ANY($1)` so rows written before a rotation are
    /// still found.
    ///
    /// # Errors
    /// As [`Keyring::blind_index`].
    pub fn blind_index_candidates(
        &self,
        ctx: &TenantContext,
        column: &Column,
        value: &str,
    ) -> Result<Vec<BlindIndex>, CryptoError> {
        let current = self.current_record(ctx.tenant())?;
        let mut out = Vec::new();
        let mut v = current.version.get();
        while v >= 1 {
            let version = KeyVersion::new(v)?;
            match self.store.get(ctx.tenant(), version)? {
                TenantKeyLookup::Found(r) => out.push(self.blind_index_with(&r, column, value)?),
                TenantKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
                TenantKeyLookup::Missing => {}
            }
            v -= 1;
        }
        Ok(out)
    }

    fn blind_index_with(
        &self,
        record: &TenantKeyRecord,
        column: &Column,
        value: &str,
    ) -> Result<BlindIndex, CryptoError> {
        let key = self.derived(
            record,
            Purpose::BlindIndex,
            &column.key,
            column.table.as_str(),
            column.column.as_str(),
        )?;
        let CachedKey::BlindIndex(mac) = &*key else {
            return Err(CryptoError::InvalidKeyOperation(
                "cache returned a key of another purpose",
            ));
        };
        let normalised = (column.normalizer)(value);
        let digest = mac
            .clone()
            .chain_update(normalised.as_bytes())
            .finalize()
            .into_bytes();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        // index_len is validated to 8..=32.
        Ok(BlindIndex {
            bytes,
            len: column.index_len as u8,
        })
    }

    // ----- streams (used by stream.rs) -----

    pub(crate) fn stream_root_current(
        &self,
        tenant: TenantId,
        label: &Arc<str>,
    ) -> Result<(TenantKeyRecord, Arc<CachedKey>), CryptoError> {
        let record = self.current_record(tenant)?;
        let key = self.derived(&record, Purpose::Stream, label, label, "")?;
        Ok((record, key))
    }

    pub(crate) fn stream_root_for(
        &self,
        tenant: TenantId,
        kek_id: &KeyId,
        kek_version: KeyVersion,
        version: KeyVersion,
        label: &Arc<str>,
    ) -> Result<Arc<CachedKey>, CryptoError> {
        let record = self.record(tenant, version)?;
        if &record.kek_id != kek_id || record.kek_version != kek_version {
            return Err(CryptoError::Authentication);
        }
        self.derived(&record, Purpose::Stream, label, label, "")
    }
}

/// Associated data for a field: label, envelope header, tenant, table, column and row, each
/// length-delimited so that no two locations share an encoding.
fn associated_data(
    header: &[u8],
    tenant: TenantId,
    field: &FieldRef<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let table = field.column.table.as_str();
    let column = field.column.column.as_str();
    let mut ad = Vec::with_capacity(
        FIELD_AD_LABEL.len() + header.len() + 16 + 4 + table.len() + column.len() + 24,
    );
    ad.extend_from_slice(FIELD_AD_LABEL);
    ad.extend_from_slice(header);
    ad.extend_from_slice(tenant.as_uuid().as_bytes());
    for part in [table, column] {
        // Identifiers are at most 63 bytes.
        ad.push(part.len() as u8);
        ad.extend_from_slice(part.as_bytes());
    }
    field.row.encode(&mut ad)?;
    Ok(ad)
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kek_id", &self.kek_id)
            .field("cached_keys", &self.cache.len())
            .finish_non_exhaustive()
    }
}

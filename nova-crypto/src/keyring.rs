//! The keyring: one object a service holds to seal and open fields, compute blind indexes,
//! rotate and shred keys. Derived keys are cached so the per-field cost is one AES-GCM call.
//!
//! This module must never use a key for a tenant other than the context's, never return
//! plaintext that failed authentication, and never keep a shredded tenant's keys in cache.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use hmac::{Hmac, Mac};
use nova_tenancy::{AUDIT_TARGET, SecurityEvent, TenantContext, TenantId};
use secrecy::{SecretBox, SecretString};
use sha2::Sha256;
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

/// A derived key and the key versions it came from.
pub(crate) struct Derived {
    pub(crate) kek_id: KeyId,
    pub(crate) kek_version: KeyVersion,
    pub(crate) version: KeyVersion,
    pub(crate) key: CachedKey,
}

/// What the store last said about a tenant's key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TenantState {
    Live(KeyVersion),
    Destroyed,
}

struct TenantEntry {
    /// The store generation at which `state` was read; `None` when it must be re-read.
    seen: Option<(u64, TenantState)>,
    /// Derived keys: (tenant key version, purpose, column or label id, key).
    keys: Vec<(KeyVersion, Purpose, u64, Arc<Derived>)>,
}

#[derive(Default)]
struct CacheInner {
    // foldhash with a per-process random seed: tenant ids come from verified credentials,
    // not from an attacker choosing hash collisions, and SipHash cost a measurable share
    // of a 64-byte seal.
    tenants: HashMap<TenantId, TenantEntry, foldhash::fast::RandomState>,
    order: VecDeque<TenantId>,
    keys: usize,
}

/// Derived keys per tenant, bounded in total. Evicted and purged entries are dropped, and
/// every cached key's material zeroizes on drop (`Aes256Gcm` through the `zeroize` feature of
/// `aes-gcm`; `Hmac<Sha256>`'s two keyed SHA-256 states through the `zeroize` feature of
/// `sha2` — its block buffer, which holds the last partial block of the *message* (a
/// normalised blind-index input), is not wiped; stream keys through `Zeroizing`). Eviction
/// drops the oldest tenant's keys first. Checked at compile time by
/// `cached_key_material_zeroizes_on_drop`.
struct KeyCache {
    inner: RwLock<CacheInner>,
    capacity: usize,
}

impl KeyCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(inner: &mut CacheInner, tenant: TenantId) -> &mut TenantEntry {
        if !inner.tenants.contains_key(&tenant) {
            inner.order.push_back(tenant);
        }
        inner.tenants.entry(tenant).or_insert_with(|| TenantEntry {
            seen: None,
            keys: Vec::new(),
        })
    }

    fn remember_state(&self, tenant: TenantId, generation: Option<u64>, state: TenantState) {
        let mut inner = self.write();
        let entry = Self::entry(&mut inner, tenant);
        entry.seen = generation.map(|g| (g, state));
        if state == TenantState::Destroyed {
            let dropped = entry.keys.len();
            entry.keys.clear();
            inner.keys -= dropped;
        }
    }

    fn insert(&self, tenant: TenantId, purpose: Purpose, id: u64, value: Arc<Derived>) {
        let mut inner = self.write();
        let entry = Self::entry(&mut inner, tenant);
        let version = value.version;
        if entry
            .keys
            .iter()
            .any(|(v, p, i, _)| *v == version && *p == purpose && *i == id)
        {
            return;
        }
        entry.keys.push((version, purpose, id, value));
        inner.keys += 1;
        while inner.keys > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.tenants.remove(&oldest) {
                inner.keys -= e.keys.len();
            }
        }
    }

    fn purge_tenant(&self, tenant: TenantId) {
        let mut inner = self.write();
        if let Some(e) = inner.tenants.remove(&tenant) {
            inner.keys -= e.keys.len();
        }
        inner.order.retain(|t| *t != tenant);
    }

    fn clear(&self) {
        *self.write() = CacheInner::default();
    }

    fn len(&self) -> usize {
        self.read().keys
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
    /// Bumped when a KEK version is destroyed, so live [`TenantKeys`] handles drop their keys.
    epoch: std::sync::atomic::AtomicU64,
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
                inner: RwLock::new(CacheInner::default()),
                capacity: DEFAULT_CACHE_CAPACITY,
            },
            epoch: std::sync::atomic::AtomicU64::new(0),
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

    /// The tenant's current key version. With `create`, a tenant without a key gets
    /// version 1. Answers from the cache while the store's generation is unchanged.
    fn current_version(&self, tenant: TenantId, create: bool) -> Result<KeyVersion, CryptoError> {
        let generation = self.store.generation();
        if let Some(g) = generation {
            let inner = self.cache.read();
            if let Some((seen, state)) = inner.tenants.get(&tenant).and_then(|e| e.seen)
                && seen == g
            {
                return match state {
                    TenantState::Live(v) => Ok(v),
                    TenantState::Destroyed => Err(CryptoError::KeyDestroyed),
                };
            }
        }
        let state = match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => TenantState::Live(r.version),
            TenantKeyLookup::Destroyed => TenantState::Destroyed,
            TenantKeyLookup::Missing if create => {
                let record = self.new_record(tenant, KeyVersion::FIRST)?;
                match self.store.insert_now(&record) {
                    // Inserted, or another writer created it first: read back either way.
                    Some(Ok(()) | Err(CryptoError::InvalidKeyOperation(_))) => {}
                    Some(Err(e)) => return Err(e),
                    // A store that needs I/O to write: the tenant must be provisioned first.
                    None => return Err(CryptoError::TenantNotProvisioned),
                }
                // The insert changed the generation; do not cache under the old one.
                return match self.store.current(tenant)? {
                    TenantKeyLookup::Found(r) => Ok(r.version),
                    TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
                    TenantKeyLookup::Missing => Err(CryptoError::InvalidKeyOperation(
                        "tenant key store lost a record",
                    )),
                };
            }
            TenantKeyLookup::Missing => {
                return Err(CryptoError::UnknownTenantKey(KeyVersion::FIRST));
            }
        };
        self.cache.remember_state(tenant, generation, state);
        match state {
            TenantState::Live(v) => Ok(v),
            TenantState::Destroyed => Err(CryptoError::KeyDestroyed),
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

    /// The hot path: one read lock and one lookup. Returns the cached key when the store's
    /// generation is unchanged since the tenant's state was read, the tenant is live, and
    /// the key (for the current version, or `version`) is cached; `None` otherwise.
    fn cached_live_key(
        &self,
        tenant: TenantId,
        version: Option<KeyVersion>,
        purpose: Purpose,
        id: u64,
    ) -> Option<Arc<Derived>> {
        let generation = self.store.generation()?;
        let inner = self.cache.read();
        let entry = inner.tenants.get(&tenant)?;
        let (seen, TenantState::Live(current)) = entry.seen? else {
            return None;
        };
        if seen != generation {
            return None;
        }
        let want = version.unwrap_or(current);
        entry
            .keys
            .iter()
            .find(|(v, p, i, _)| *v == want && *p == purpose && *i == id)
            .map(|k| Arc::clone(&k.3))
    }

    /// The key for the tenant's current version (creating the tenant's key on first use),
    /// or for `version` after checking the tenant is live.
    fn live_key(
        &self,
        tenant: TenantId,
        version: Option<KeyVersion>,
        purpose: Purpose,
        id: u64,
        table: &str,
        column: &str,
    ) -> Result<Arc<Derived>, CryptoError> {
        if let Some(hit) = self.cached_live_key(tenant, version, purpose, id) {
            return Ok(hit);
        }
        let current = self
            .current_version(tenant, version.is_none())
            .map_err(|e| match (e, version) {
                (CryptoError::UnknownTenantKey(_), Some(v)) => CryptoError::UnknownTenantKey(v),
                (e, _) => e,
            })?;
        self.derived(
            tenant,
            version.unwrap_or(current),
            purpose,
            id,
            table,
            column,
        )
    }

    /// The derived key for (tenant, version, purpose, id), from the cache or derived now.
    /// Callers must have checked the tenant is live ([`Keyring::current_version`]).
    pub(crate) fn derived(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        purpose: Purpose,
        id: u64,
        table: &str,
        column: &str,
    ) -> Result<Arc<Derived>, CryptoError> {
        {
            let inner = self.cache.read();
            if let Some(hit) = inner.tenants.get(&tenant).and_then(|e| {
                e.keys
                    .iter()
                    .find(|(v, p, i, _)| *v == version && *p == purpose && *i == id)
            }) {
                return Ok(Arc::clone(&hit.3));
            }
        }
        let record = match self.store.get(tenant, version)? {
            TenantKeyLookup::Found(r) => r,
            TenantKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => return Err(CryptoError::UnknownTenantKey(version)),
        };
        let kek = self.provider.key(&record.kek_id, record.kek_version)?;
        let info = derive::info(purpose, tenant, table, column);
        let key = match purpose {
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
        let value = Arc::new(Derived {
            kek_id: record.kek_id.clone(),
            kek_version: record.kek_version,
            version,
            key,
        });
        self.cache.insert(tenant, purpose, id, Arc::clone(&value));
        Ok(value)
    }

    fn field_keys(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        column: &Column,
    ) -> Result<Arc<Derived>, CryptoError> {
        self.derived(
            tenant,
            version,
            Purpose::Field,
            column.id,
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
        let tenant = ctx.tenant();
        let c = field.column;
        let keys = self.live_key(
            tenant,
            None,
            Purpose::Field,
            c.id,
            c.table.as_str(),
            c.column.as_str(),
        )?;
        seal_with(&keys, tenant, field, plaintext)
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
        // Consult the store (or its unchanged generation) first: a shredded tenant's data
        // must not open from a cached key.
        let c = field.column;
        let keys = self.live_key(
            tenant,
            Some(envelope.key_version()),
            Purpose::Field,
            c.id,
            c.table.as_str(),
            c.column.as_str(),
        )?;
        open_with(&keys, tenant, field, envelope)
    }

    /// Resolves the context's tenant once, for a request or batch that works on many fields
    /// of one tenant: each operation on the handle then costs a generation check, a short
    /// scan of the keys it already holds, and the cryptography. The handle holds derived
    /// keys until dropped; keep it for one request, not for the life of the process.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use nova_crypto::{Column, InMemoryTenantKeyStore, Keyring, LocalKeyProvider};
    /// # use nova_tenancy::{TenantContext, TenantId};
    /// # let keyring = Keyring::new(Arc::new(LocalKeyProvider::generated("root")?),
    /// #     Arc::new(InMemoryTenantKeyStore::new()), "root")?;
    /// # let ctx = TenantContext::system(TenantId::new_v4(), "doc")?;
    /// let email = Column::new("users", "email")?;
    /// let mut keys = keyring.tenant_keys(&ctx)?;
    /// let sealed: Vec<_> = (0..100_i64)
    ///     .map(|id| keys.seal(&email.row(id), format!("user{id}@example.com").as_bytes()))
    ///     .collect::<Result<_, _>>()?;
    /// # let _ = sealed;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; provider and store errors.
    pub fn tenant_keys(&self, ctx: &TenantContext) -> Result<TenantKeys<'_>, CryptoError> {
        let tenant = ctx.tenant();
        let generation = self.store.generation();
        let current = self.current_version(tenant, true)?;
        Ok(TenantKeys {
            keyring: self,
            tenant,
            generation,
            epoch: self.epoch.load(std::sync::atomic::Ordering::Acquire),
            current,
            keys: Vec::new(),
        })
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

    /// Gives a tenant its first key, durably, if it has none; returns its current version.
    /// Needed before the first seal with stores that write through I/O (PostgreSQL); the
    /// in-memory store creates keys on first use by itself.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; provider and store errors.
    pub async fn provision_tenant(&self, tenant: TenantId) -> Result<KeyVersion, CryptoError> {
        match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => return Ok(r.version),
            TenantKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => {}
        }
        match self
            .store
            .insert(self.new_record(tenant, KeyVersion::FIRST)?)
            .await
        {
            // Another writer may have provisioned it first.
            Ok(()) | Err(CryptoError::InvalidKeyOperation(_)) => {}
            Err(e) => return Err(e),
        }
        match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => Ok(r.version),
            TenantKeyLookup::Destroyed => Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => Err(CryptoError::InvalidKeyOperation(
                "tenant key store lost a record",
            )),
        }
    }

    /// Creates a new version of the tenant's key (under the KEK's primary version), durably;
    /// new seals use it, older versions still open.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; provider and store errors.
    pub async fn rotate_tenant(&self, tenant: TenantId) -> Result<KeyVersion, CryptoError> {
        let next = match self.store.current(tenant)? {
            TenantKeyLookup::Found(r) => r.version.next()?,
            TenantKeyLookup::Destroyed => return Err(CryptoError::KeyDestroyed),
            TenantKeyLookup::Missing => KeyVersion::FIRST,
        };
        self.store.insert(self.new_record(tenant, next)?).await?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "tenant_key_rotated",
            tenant = %tenant,
            version = next.get(),
            "tenant key rotated"
        );
        nova_tenancy::report(
            &SecurityEvent::new("tenant_key_rotated")
                .tenant(tenant)
                .details(&[("version", &next.get())]),
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
        nova_tenancy::report(
            &SecurityEvent::new("kek_rotated")
                .details(&[("kek", &self.kek_id), ("version", &v.get())]),
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
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "kek_destroyed",
            kek = %self.kek_id,
            version = version.get(),
            "key-encryption key version destroyed"
        );
        nova_tenancy::report(
            &SecurityEvent::new("kek_destroyed")
                .details(&[("kek", &self.kek_id), ("version", &version.get())]),
        );
        Ok(())
    }

    /// The tenant's current key version, if it has one.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; store errors.
    pub fn tenant_key_version(&self, tenant: TenantId) -> Result<Option<KeyVersion>, CryptoError> {
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
        let tenant = ctx.tenant();
        let current = self.current_version(tenant, true)?;
        // Open first, even when the envelope is already current: a forged or foreign
        // envelope must count as a failure, not as "already current".
        let plain = self.open(ctx, field, envelope)?;
        if envelope.key_version() == current {
            return Ok(None);
        }
        let keys = self.field_keys(tenant, current, field.column)?;
        seal_with(&keys, tenant, field, plain.expose_secret()).map(Some)
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
    pub async fn shred_tenant(&self, tenant: TenantId) -> Result<ShredReport, CryptoError> {
        let versions_destroyed = self.store.destroy_tenant(tenant).await?;
        self.cache.purge_tenant(tenant);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "crypto_shred",
            tenant = %tenant,
            versions_destroyed,
            "tenant keys destroyed (crypto-shredding)"
        );
        nova_tenancy::report(
            &SecurityEvent::new("crypto_shred")
                .tenant(tenant)
                .details(&[("versions_destroyed", &versions_destroyed)]),
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
        let key = self.live_key(
            ctx.tenant(),
            None,
            Purpose::BlindIndex,
            column.id,
            column.table.as_str(),
            column.column.as_str(),
        )?;
        blind_index_with(&key, column, value)
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
        let tenant = ctx.tenant();
        let current = self.current_version(tenant, true)?;
        let mut out = Vec::new();
        for v in (1..=current.get()).rev() {
            match self.blind_index_with(tenant, KeyVersion::new(v)?, column, value) {
                Ok(index) => out.push(index),
                // Versions are created in order, but a store may have pruned old ones.
                Err(CryptoError::UnknownTenantKey(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn blind_index_with(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        column: &Column,
        value: &str,
    ) -> Result<BlindIndex, CryptoError> {
        let key = self.derived(
            tenant,
            version,
            Purpose::BlindIndex,
            column.id,
            column.table.as_str(),
            column.column.as_str(),
        )?;
        blind_index_with(&key, column, value)
    }

    // ----- streams (used by stream.rs) -----

    /// The stream root key under the tenant's current key version.
    pub(crate) fn stream_root_current(
        &self,
        tenant: TenantId,
        label: &str,
    ) -> Result<Arc<Derived>, CryptoError> {
        let version = self.current_version(tenant, true)?;
        self.derived(tenant, version, Purpose::Stream, label_id(label), label, "")
    }

    /// The stream root key a stream header names, checking the header's KEK matches.
    pub(crate) fn stream_root_for(
        &self,
        tenant: TenantId,
        kek_id: &KeyId,
        kek_version: KeyVersion,
        version: KeyVersion,
        label: &str,
    ) -> Result<Arc<Derived>, CryptoError> {
        self.current_version(tenant, false).map_err(|e| match e {
            CryptoError::UnknownTenantKey(_) => CryptoError::UnknownTenantKey(version),
            other => other,
        })?;
        let root = self.derived(tenant, version, Purpose::Stream, label_id(label), label, "")?;
        if &root.kek_id != kek_id || root.kek_version != kek_version {
            return Err(CryptoError::Authentication);
        }
        Ok(root)
    }
}

/// The cache id of a stream label.
fn label_id(label: &str) -> u64 {
    crate::field::interned_id(1, label, "")
}

/// A tenant's keys, resolved once by [`Keyring::tenant_keys`].
///
/// Shredding still takes effect at once: every operation first compares the store's
/// generation with the one the handle was resolved at (or asks the store, for stores
/// without a generation) and drops its keys if the tenant was destroyed.
pub struct TenantKeys<'k> {
    keyring: &'k Keyring,
    tenant: TenantId,
    generation: Option<u64>,
    epoch: u64,
    current: KeyVersion,
    keys: Vec<(KeyVersion, Purpose, u64, Arc<Derived>)>,
}

impl TenantKeys<'_> {
    fn refresh(&mut self) -> Result<(), CryptoError> {
        let generation = self.keyring.store.generation();
        let epoch = self
            .keyring
            .epoch
            .load(std::sync::atomic::Ordering::Acquire);
        if epoch != self.epoch {
            // A KEK version was destroyed: keys derived from it must not be used again.
            self.keys.clear();
            self.epoch = epoch;
        } else if generation.is_some() && generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        match self.keyring.current_version(self.tenant, true) {
            Ok(v) => {
                self.current = v;
                Ok(())
            }
            Err(e) => {
                self.keys.clear();
                Err(e)
            }
        }
    }

    fn key(
        &mut self,
        version: KeyVersion,
        purpose: Purpose,
        id: u64,
        table: &str,
        column: &str,
    ) -> Result<&Derived, CryptoError> {
        let found = self
            .keys
            .iter()
            .position(|(v, p, i, _)| *v == version && *p == purpose && *i == id);
        let at = match found {
            Some(at) => at,
            None => {
                let d = self
                    .keyring
                    .derived(self.tenant, version, purpose, id, table, column)?;
                self.keys.push((version, purpose, id, d));
                self.keys.len() - 1
            }
        };
        Ok(&self.keys[at].3)
    }

    /// The tenant these keys belong to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// As [`Keyring::seal`], for this handle's tenant.
    ///
    /// # Errors
    /// As [`Keyring::seal`].
    pub fn seal(
        &mut self,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        self.refresh()?;
        let tenant = self.tenant;
        let version = self.current;
        let c = field.column;
        let keys = self.key(
            version,
            Purpose::Field,
            c.id,
            c.table.as_str(),
            c.column.as_str(),
        )?;
        seal_with(keys, tenant, field, plaintext)
    }

    /// As [`Keyring::open`], for this handle's tenant.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub fn open(
        &mut self,
        field: &FieldRef<'_>,
        envelope: &Envelope,
    ) -> Result<SecretBox<[u8]>, CryptoError> {
        self.refresh()?;
        let tenant = self.tenant;
        let c = field.column;
        let keys = self.key(
            envelope.key_version(),
            Purpose::Field,
            c.id,
            c.table.as_str(),
            c.column.as_str(),
        )?;
        open_with(keys, tenant, field, envelope)
    }

    /// As [`Keyring::blind_index`], for this handle's tenant.
    ///
    /// # Errors
    /// As [`Keyring::blind_index`].
    pub fn blind_index(&mut self, column: &Column, value: &str) -> Result<BlindIndex, CryptoError> {
        self.refresh()?;
        let version = self.current;
        let key = self.key(
            version,
            Purpose::BlindIndex,
            column.id,
            column.table.as_str(),
            column.column.as_str(),
        )?;
        blind_index_with(key, column, value)
    }
}

impl fmt::Debug for TenantKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("current", &self.current)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Opens under already-derived field keys.
fn open_with(
    keys: &Derived,
    tenant: TenantId,
    field: &FieldRef<'_>,
    envelope: &Envelope,
) -> Result<SecretBox<[u8]>, CryptoError> {
    let CachedKey::Field(fk) = &keys.key else {
        return Err(CryptoError::InvalidKeyOperation(
            "cache returned a key of another purpose",
        ));
    };
    if envelope.kek_id_bytes() != keys.kek_id.as_str().as_bytes()
        || envelope.kek_version() != keys.kek_version
    {
        return Err(CryptoError::Authentication);
    }
    // Key commitment: the envelope names exactly one key; checked before any decryption.
    if !primitives::ct_eq_32(envelope.commitment(), &fk.commitment) {
        return Err(CryptoError::Authentication);
    }
    let ad = AssociatedData::new(envelope.header(), tenant, field)?;
    let mut buf = primitives::open(
        &fk.cipher,
        envelope.nonce(),
        ad.as_slice(),
        envelope.ciphertext_and_tag(),
    )?;
    let plain = std::mem::take(&mut *buf);
    Ok(SecretBox::from(plain.into_boxed_slice()))
}

/// `HMAC-SHA256(k, normalise(value))`, truncated to the column's index length.
fn blind_index_with(
    key: &Derived,
    column: &Column,
    value: &str,
) -> Result<BlindIndex, CryptoError> {
    let CachedKey::BlindIndex(mac) = &key.key else {
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

/// Seals under already-derived field keys.
fn seal_with(
    keys: &Derived,
    tenant: TenantId,
    field: &FieldRef<'_>,
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    let CachedKey::Field(fk) = &keys.key else {
        return Err(CryptoError::InvalidKeyOperation(
            "cache returned a key of another purpose",
        ));
    };
    let kid_len = keys.kek_id.as_str().len();
    let overhead = Envelope::overhead(kid_len);
    if plaintext.len() > MAX_ENVELOPE_LEN - overhead {
        return Err(CryptoError::TooLarge(
            "field larger than 16 MiB; use a stream",
        ));
    }
    let mut out = Vec::with_capacity(overhead + plaintext.len());
    let header_len = Envelope::write_header(&mut out, &keys.kek_id, keys.kek_version, keys.version);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(fk.commitment.as_ref());
    let ad = AssociatedData::new(&out[..header_len], tenant, field)?;
    let body = out.len();
    out.extend_from_slice(plaintext);
    let tag = primitives::seal_in_place(&fk.cipher, &nonce, ad.as_slice(), &mut out[body..])?;
    out.extend_from_slice(&tag);
    Ok(Envelope::from_sealed(out, kid_len))
}

/// Largest associated data: label (20) + header (≤ 77) + tenant (16) + two names
/// (≤ 2 × 64) + row id (≤ 259).
const AD_MAX: usize = 512;

/// Associated data for a field, built on the stack: label, envelope header, tenant, table,
/// column and row, each length-delimited so that no two locations share an encoding.
struct AssociatedData {
    buf: [u8; AD_MAX],
    len: usize,
}

impl AssociatedData {
    fn new(header: &[u8], tenant: TenantId, field: &FieldRef<'_>) -> Result<Self, CryptoError> {
        let mut ad = Self {
            buf: [0u8; AD_MAX],
            len: 0,
        };
        ad.push(FIELD_AD_LABEL)?;
        ad.push(header)?;
        ad.push(tenant.as_uuid().as_bytes())?;
        for part in [field.column.table.as_str(), field.column.column.as_str()] {
            // Identifiers are at most 63 bytes.
            ad.push(&[part.len() as u8])?;
            ad.push(part.as_bytes())?;
        }
        let mut row = [0u8; 3 + crate::field::ROW_ID_MAX_LEN];
        let n = field.row.encode_into(&mut row)?;
        ad.push(&row[..n])?;
        Ok(ad)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), CryptoError> {
        let end = self.len + bytes.len();
        if end > AD_MAX {
            return Err(CryptoError::TooLarge("associated data"));
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kek_id", &self.kek_id)
            .field("cached_keys", &self.cache.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if the key material of every cached key type wipes itself on drop, as
    /// the cache docs say. `Hmac<Sha256>` keeps its key as two SHA-256 states (inner and
    /// outer pad), each a `<Sha256 as EagerHash>::Core`; the wrapper itself does not carry the
    /// marker, because its block buffer holds message bytes, not key bytes.
    #[test]
    fn cached_key_material_zeroizes_on_drop() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<Aes256Gcm>();
        zeroize_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
        zeroize_on_drop::<Zeroizing<[u8; KEY_LEN]>>();
    }
}

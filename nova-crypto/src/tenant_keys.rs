//! Per-tenant key records: a random 256-bit salt per tenant and version, naming the
//! key-encryption key it is used with. Destroying a tenant's records is crypto-shredding.
//!
//! A tenant's data keys are `HKDF-SHA256(salt = tenant salt, IKM = KEK)` (see
//! `derive.rs`), so reading a tenant's data needs both the KEK and the tenant's salt.
//! The salt is secret key material — store it as such (never in the same backup as the
//! data if shredding must survive backups). This module must never return a destroyed
//! record's salt.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nova_tenancy::TenantId;

use crate::error::CryptoError;
use crate::keys::{KeyId, KeyVersion, SecretKey};

/// One version of a tenant's key.
#[derive(Clone)]
pub struct TenantKeyRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// This record's version (starts at 1).
    pub version: KeyVersion,
    /// The key-encryption key it is used with.
    pub kek_id: KeyId,
    /// The KEK version it is used with.
    pub kek_version: KeyVersion,
    /// The random salt (secret).
    pub salt: SecretKey,
    /// When this version was created.
    pub created_at: SystemTime,
}

impl fmt::Debug for TenantKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKeyRecord")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("salt", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The answer to "give me version N of this tenant's key".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenantKeyLookup {
    /// The record exists and is usable.
    Found(TenantKeyRecord),
    /// The tenant was crypto-shredded.
    Destroyed,
    /// No such version was ever created for this tenant.
    Missing,
}

/// What a store knows about one tenant's current key, for rotation checks (no salt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyInfo {
    /// The tenant.
    pub tenant: TenantId,
    /// Its current version.
    pub version: KeyVersion,
    /// The KEK version it uses.
    pub kek_version: KeyVersion,
    /// When it was created.
    pub created_at: SystemTime,
}

/// A boxed future returned by the writing methods of [`TenantKeyStore`].
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CryptoError>> + Send + 'a>>;

/// Where tenant key records live. Reads are synchronous (stores keep what they serve in
/// memory); writes are asynchronous and must be durable before their future resolves, and
/// [`TenantKeyStore::destroy_tenant`] must erase the salts (not merely mark them).
pub trait TenantKeyStore: Send + Sync {
    /// A number that changes whenever any tenant's keys change (a version inserted, a
    /// tenant destroyed). While it stays the same, the keyring answers from its cache
    /// without asking the store. Return `None` (the default) when changes made elsewhere —
    /// another process sharing the store — cannot be seen this cheaply: the keyring then
    /// asks [`TenantKeyStore::current`] on every operation, so shredding takes effect
    /// everywhere at once.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// The newest version for a tenant: `Found`, `Destroyed` (shredded) or `Missing` (none yet).
    ///
    /// # Errors
    /// Store-specific failures.
    fn current(&self, tenant: TenantId) -> Result<TenantKeyLookup, CryptoError>;

    /// A specific version.
    ///
    /// # Errors
    /// Store-specific failures.
    fn get(&self, tenant: TenantId, version: KeyVersion) -> Result<TenantKeyLookup, CryptoError>;

    /// Adds a version durably. Fails if the version exists or the tenant was shredded.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] or [`CryptoError::KeyDestroyed`].
    fn insert(&self, record: TenantKeyRecord) -> StoreFuture<'_, ()>;

    /// Adds a version at once, for stores that can without waiting (in memory). `None` for
    /// stores that need I/O: their tenants are provisioned with
    /// [`crate::Keyring::provision_tenant`] before the first seal.
    fn insert_now(&self, _record: &TenantKeyRecord) -> Option<Result<(), CryptoError>> {
        None
    }

    /// Erases every version of a tenant's key and remembers that the tenant was shredded.
    /// Returns how many versions were erased.
    ///
    /// # Errors
    /// Store-specific failures.
    fn destroy_tenant(&self, tenant: TenantId) -> StoreFuture<'_, usize>;

    /// Every live tenant's current key, for rotation reports.
    ///
    /// # Errors
    /// Store-specific failures.
    fn list_current(&self) -> Result<Vec<TenantKeyInfo>, CryptoError>;
}

#[derive(Default)]
struct TenantEntry {
    versions: Vec<TenantKeyRecord>,
    shredded: bool,
}

/// A [`TenantKeyStore`] in process memory: for tests, and as the cache in front of a
/// durable store. Contents are lost when the process ends.
#[derive(Default)]
pub struct InMemoryTenantKeyStore {
    tenants: RwLock<HashMap<TenantId, TenantEntry>>,
    generation: AtomicU64,
}

impl InMemoryTenantKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a version (the synchronous core of [`TenantKeyStore::insert`]).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] for a version that is not newer than the
    /// existing ones; [`CryptoError::KeyDestroyed`] for a shredded tenant.
    pub fn insert_record(&self, record: TenantKeyRecord) -> Result<(), CryptoError> {
        let mut map = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(record.tenant).or_default();
        if entry.shredded {
            return Err(CryptoError::KeyDestroyed);
        }
        if entry.versions.iter().any(|r| r.version >= record.version) {
            return Err(CryptoError::InvalidKeyOperation(
                "tenant key versions must increase",
            ));
        }
        entry.versions.push(record);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Erases a tenant's versions (the synchronous core of
    /// [`TenantKeyStore::destroy_tenant`]); returns how many were erased.
    pub fn destroy_records(&self, tenant: TenantId) -> usize {
        let mut map = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(tenant).or_default();
        let n = entry.versions.len();
        // Dropping each record drops its SecretKey, which zeroizes the salt.
        entry.versions.clear();
        entry.versions.shrink_to_fit();
        entry.shredded = true;
        self.generation.fetch_add(1, Ordering::AcqRel);
        n
    }
}

impl TenantKeyStore for InMemoryTenantKeyStore {
    fn generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }

    fn current(&self, tenant: TenantId) -> Result<TenantKeyLookup, CryptoError> {
        let map = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        Ok(match map.get(&tenant) {
            None => TenantKeyLookup::Missing,
            Some(e) if e.shredded => TenantKeyLookup::Destroyed,
            Some(e) => e
                .versions
                .last()
                .cloned()
                .map_or(TenantKeyLookup::Missing, TenantKeyLookup::Found),
        })
    }

    fn get(&self, tenant: TenantId, version: KeyVersion) -> Result<TenantKeyLookup, CryptoError> {
        let map = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        Ok(match map.get(&tenant) {
            None => TenantKeyLookup::Missing,
            Some(e) if e.shredded => TenantKeyLookup::Destroyed,
            Some(e) => e
                .versions
                .iter()
                .find(|r| r.version == version)
                .cloned()
                .map_or(TenantKeyLookup::Missing, TenantKeyLookup::Found),
        })
    }

    fn insert(&self, record: TenantKeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.insert_record(record)))
    }

    fn insert_now(&self, record: &TenantKeyRecord) -> Option<Result<(), CryptoError>> {
        Some(self.insert_record(record.clone()))
    }

    fn destroy_tenant(&self, tenant: TenantId) -> StoreFuture<'_, usize> {
        Box::pin(std::future::ready(Ok(self.destroy_records(tenant))))
    }

    fn list_current(&self) -> Result<Vec<TenantKeyInfo>, CryptoError> {
        let map = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .values()
            .filter(|e| !e.shredded)
            .filter_map(|e| e.versions.last())
            .map(|r| TenantKeyInfo {
                tenant: r.tenant,
                version: r.version,
                kek_version: r.kek_version,
                created_at: r.created_at,
            })
            .collect())
    }
}

impl fmt::Debug for InMemoryTenantKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("InMemoryTenantKeyStore")
            .field("tenants", &map.len())
            .finish()
    }
}

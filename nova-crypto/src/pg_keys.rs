//! Tenant keys in PostgreSQL: the durable [`TenantKeyStore`].
//!
//! Every version is one row; reads are served from an in-memory mirror loaded by
//! [`PgTenantKeyStore::open`] and kept current by [`PgTenantKeyStore::refresh`] (call it on
//! a schedule, or when another process announces a rotation or shredding), so sealing and
//! opening never wait on the database. Writes go to the database first and to the mirror
//! only once committed.
//!
//! **Shredding in PostgreSQL.** [`TenantKeyStore::destroy_tenant`] overwrites the salts with
//! `NULL`. PostgreSQL keeps the old row versions until `VACUUM` reclaims them, and WAL
//! archives and backups keep them for their own retention: shredding is complete only once
//! those have aged out. Keep this table out of long-lived backups of the data it protects.
//! This module must never keep a shredded salt in the mirror.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nova_tenancy::{Ident, TenantId};
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::error::CryptoError;
use crate::keys::{KEY_LEN, KeyId, KeyVersion, SecretKey};
use crate::tenant_keys::{
    InMemoryTenantKeyStore, StoreFuture, TenantKeyInfo, TenantKeyLookup, TenantKeyRecord,
    TenantKeyStore,
};

/// Tenant key records in a PostgreSQL table, mirrored in memory.
#[derive(Debug)]
pub struct PgTenantKeyStore {
    pool: PgPool,
    table: String,
    mirror: std::sync::RwLock<std::sync::Arc<InMemoryTenantKeyStore>>,
    /// Incremented by every refresh, so the generation never repeats across mirrors.
    epoch: std::sync::atomic::AtomicU64,
}

fn db_err(e: sqlx::Error) -> CryptoError {
    CryptoError::Store(format!("postgres: {e}"))
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PgTenantKeyStore {
    /// DDL for the table in `schema`. Idempotent.
    #[must_use]
    pub fn schema_sql(schema: &Ident) -> String {
        format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.nova_tenant_keys (
    tenant_id uuid NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    kek_id text NOT NULL,
    kek_version integer NOT NULL CHECK (kek_version >= 1),
    salt bytea CHECK (salt IS NULL OR length(salt) = 32),
    created_ms bigint NOT NULL,
    destroyed_ms bigint,
    PRIMARY KEY (tenant_id, version),
    CHECK ((salt IS NULL) = (destroyed_ms IS NOT NULL))
);
"
        )
    }

    /// Opens the store over `schema.nova_tenant_keys` (create it with
    /// [`PgTenantKeyStore::schema_sql`]) and loads every record.
    ///
    /// # Errors
    /// [`CryptoError::Store`] when the table cannot be read or holds a malformed row.
    pub async fn open(pool: PgPool, schema: &Ident) -> Result<Self, CryptoError> {
        let store = Self {
            pool,
            table: format!("{schema}.nova_tenant_keys"),
            mirror: std::sync::RwLock::new(std::sync::Arc::new(InMemoryTenantKeyStore::new())),
            epoch: std::sync::atomic::AtomicU64::new(0),
        };
        store.refresh().await?;
        Ok(store)
    }

    /// Reloads every record, picking up rotations and shredding done by other processes.
    ///
    /// # Errors
    /// [`CryptoError::Store`] when the table cannot be read or holds a malformed row.
    pub async fn refresh(&self) -> Result<(), CryptoError> {
        let sql = format!(
            "SELECT tenant_id, version, kek_id, kek_version, salt, created_ms FROM {} ORDER BY tenant_id, version",
            self.table
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let fresh = InMemoryTenantKeyStore::new();
        let corrupt = || CryptoError::Store("malformed tenant key row".into());
        let mut shredded = Vec::new();
        for row in rows {
            let tenant = TenantId::from_uuid(row.try_get("tenant_id").map_err(db_err)?)
                .map_err(|_| corrupt())?;
            let salt: Option<Vec<u8>> = row.try_get("salt").map_err(db_err)?;
            let Some(salt) = salt else {
                shredded.push(tenant);
                continue;
            };
            let salt: [u8; KEY_LEN] = salt.as_slice().try_into().map_err(|_| corrupt())?;
            let version = KeyVersion::new(
                u32::try_from(row.try_get::<i32, _>("version").map_err(db_err)?)
                    .map_err(|_| corrupt())?,
            )
            .map_err(|_| corrupt())?;
            let kek_version = KeyVersion::new(
                u32::try_from(row.try_get::<i32, _>("kek_version").map_err(db_err)?)
                    .map_err(|_| corrupt())?,
            )
            .map_err(|_| corrupt())?;
            let kek_id = KeyId::new(&row.try_get::<String, _>("kek_id").map_err(db_err)?)
                .map_err(|_| corrupt())?;
            let created_ms: i64 = row.try_get("created_ms").map_err(db_err)?;
            fresh.insert_record(TenantKeyRecord {
                tenant,
                version,
                kek_id,
                kek_version,
                salt: SecretKey::from_bytes(salt),
                created_at: UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(created_ms).unwrap_or(0)),
            })?;
        }
        for tenant in shredded {
            fresh.destroy_records(tenant);
        }
        let mut mirror = self.mirror.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *mirror = std::sync::Arc::new(fresh);
        Ok(())
    }

    fn mirror(&self) -> std::sync::Arc<InMemoryTenantKeyStore> {
        std::sync::Arc::clone(&self.mirror.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Takes the tenant's key-write lock for the rest of the transaction.
async fn lock_tenant(tx: &mut sqlx::PgConnection, tenant: TenantId) -> Result<(), CryptoError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('nova_tenant_keys:' || $1::text, 0))",
    )
    .bind(tenant.as_uuid())
    .execute(tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

impl TenantKeyStore for PgTenantKeyStore {
    fn generation(&self) -> Option<u64> {
        // A mirror replaced by refresh starts counting again: combine its count with the
        // refresh epoch so that a refresh always invalidates caches.
        let mirror = self.mirror.read().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        mirror
            .generation()
            .map(|g| (epoch << 32) | (g & 0xFFFF_FFFF))
    }

    fn current(&self, tenant: TenantId) -> Result<TenantKeyLookup, CryptoError> {
        self.mirror().current(tenant)
    }

    fn get(&self, tenant: TenantId, version: KeyVersion) -> Result<TenantKeyLookup, CryptoError> {
        self.mirror().get(tenant, version)
    }

    fn list_current(&self) -> Result<Vec<TenantKeyInfo>, CryptoError> {
        self.mirror().list_current()
    }

    fn insert(&self, record: TenantKeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if matches!(
                self.mirror().current(record.tenant)?,
                TenantKeyLookup::Destroyed
            ) {
                return Err(CryptoError::KeyDestroyed);
            }
            let sql = format!(
                "INSERT INTO {t} (tenant_id, version, kek_id, kek_version, salt, created_ms)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE tenant_id = $1 AND (version >= $2 OR salt IS NULL))
                 ON CONFLICT (tenant_id, version) DO NOTHING",
                t = self.table
            );
            // Writes for one tenant are serialised (transaction-scoped advisory lock), so a
            // rotation cannot slip a new salt in beside a concurrent shredding, and two
            // provisioners cannot both see "no key yet".
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            lock_tenant(&mut tx, record.tenant).await?;
            let inserted = sqlx::query(AssertSqlSafe(sql))
                .bind(record.tenant.as_uuid())
                .bind(
                    i32::try_from(record.version.get())
                        .map_err(|_| CryptoError::InvalidKeyOperation("version too large"))?,
                )
                .bind(record.kek_id.as_str())
                .bind(
                    i32::try_from(record.kek_version.get())
                        .map_err(|_| CryptoError::InvalidKeyOperation("version too large"))?,
                )
                .bind(record.salt.expose().as_slice())
                .bind(ms(record.created_at))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            tx.commit().await.map_err(db_err)?;
            if inserted != 1 {
                // Another process rotated, provisioned or shredded first: reload and let the
                // caller read the winner.
                self.refresh().await?;
                return Err(CryptoError::InvalidKeyOperation(
                    "a newer tenant key version exists",
                ));
            }
            self.mirror().insert_record(record)
        })
    }

    fn destroy_tenant(&self, tenant: TenantId) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let sql = format!(
                "WITH erased AS (
                    UPDATE {t} SET salt = NULL, destroyed_ms = $2 WHERE tenant_id = $1 AND salt IS NOT NULL RETURNING 1
                 ), marker AS (
                    INSERT INTO {t} (tenant_id, version, kek_id, kek_version, salt, created_ms, destroyed_ms)
                    SELECT $1, 1, 'shredded', 1, NULL, $2, $2
                    WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE tenant_id = $1)
                    RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM erased) AS n",
                t = self.table
            );
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            lock_tenant(&mut tx, tenant).await?;
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(tenant.as_uuid())
                .bind(ms(SystemTime::now()))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            self.mirror().destroy_records(tenant);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }
}

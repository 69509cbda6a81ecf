//! PostgreSQL stores for API keys, refresh tokens and sessions.
//!
//! These tables hold credentials, which are looked up *before* a tenant context exists, so
//! they are not under tenant row-level security: give them to an auth role that the request
//! handlers' role cannot read. Times are stored as milliseconds since the epoch. This module
//! must never store a secret, only its SHA-256.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use nova_tenancy::{AuthMethod, Ident, Role, TenantId, UserId};
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

use crate::api_key::{ApiKeyRecord, ApiKeyStore, LockoutPolicy, TimeWindow};
use crate::error::AuthError;
use crate::refresh::{RefreshRecord, RefreshStore};
use crate::session::{SessionRecord, SessionStore};

/// The DDL for the three tables, in `schema`. Idempotent.
#[must_use]
pub fn schema_sql(schema: &Ident) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.nova_api_keys (
    key_id text PRIMARY KEY,
    tenant_id uuid NOT NULL,
    principal uuid NOT NULL,
    role text NOT NULL,
    scopes text[] NOT NULL,
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_ms bigint NOT NULL,
    expires_ms bigint,
    revoked_ms bigint,
    grace_until_ms bigint,
    allowed_cidrs text[] NOT NULL,
    window_start smallint,
    window_end smallint,
    last_used_ms bigint,
    failures integer NOT NULL DEFAULT 0,
    failure_window_start_ms bigint,
    locked_until_ms bigint
);
CREATE INDEX IF NOT EXISTS nova_api_keys_tenant_idx ON {schema}.nova_api_keys (tenant_id);
CREATE TABLE IF NOT EXISTS {schema}.nova_refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family uuid NOT NULL,
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    issued_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    used_ms bigint,
    revoked boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS nova_refresh_tokens_family_idx ON {schema}.nova_refresh_tokens (family);
CREATE TABLE IF NOT EXISTS {schema}.nova_sessions (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    ip text NOT NULL,
    user_agent text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    last_seen_ms bigint NOT NULL,
    idle_ms bigint NOT NULL
);
-- How the user authenticated and when a second factor was last verified (added after the
-- table's first version, so an existing table gains them).
ALTER TABLE {schema}.nova_sessions ADD COLUMN IF NOT EXISTS methods text[] NOT NULL DEFAULT '{{}}';
ALTER TABLE {schema}.nova_sessions ADD COLUMN IF NOT EXISTS mfa_ms bigint;
ALTER TABLE {schema}.nova_sessions ADD COLUMN IF NOT EXISTS roles text[] NOT NULL DEFAULT '{{}}';
CREATE INDEX IF NOT EXISTS nova_sessions_user_idx ON {schema}.nova_sessions (tenant_id, user_id);
"
    )
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn store_err(e: sqlx::Error) -> AuthError {
    AuthError::Store(format!("postgres: {e}"))
}

/// The row of `table` whose `token_hash` is `hash` (refresh tokens and sessions).
async fn row_by_token_hash(
    pool: &PgPool,
    table: &str,
    hash: &[u8; 32],
) -> Result<Option<sqlx::postgres::PgRow>, AuthError> {
    let sql = format!("SELECT * FROM {table} WHERE token_hash = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(hash.as_slice())
        .fetch_optional(pool)
        .await
        .map_err(store_err)
}

fn corrupt(what: &str) -> AuthError {
    AuthError::Store(format!("corrupt {what} row"))
}

/// API keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgApiKeyStore {
    pool: PgPool,
    table: String,
}

impl PgApiKeyStore {
    /// A store over `schema.nova_api_keys` (create it with [`schema_sql`]).
    #[must_use]
    pub fn new(pool: PgPool, schema: &Ident) -> Self {
        Self {
            pool,
            table: format!("{schema}.nova_api_keys"),
        }
    }
}

fn api_key_from_row(row: &sqlx::postgres::PgRow) -> Result<ApiKeyRecord, AuthError> {
    let get = |e: sqlx::Error| AuthError::Store(format!("api key row: {e}"));
    let hash: Vec<u8> = row.try_get("secret_hash").map_err(get)?;
    let scopes: Vec<String> = row.try_get("scopes").map_err(get)?;
    let cidrs: Vec<String> = row.try_get("allowed_cidrs").map_err(get)?;
    let ws: Option<i16> = row.try_get("window_start").map_err(get)?;
    let we: Option<i16> = row.try_get("window_end").map_err(get)?;
    let opt = |name: &str| -> Result<Option<SystemTime>, AuthError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)
            .map_err(get)?
            .map(from_ms))
    };
    Ok(ApiKeyRecord {
        key_id: row.try_get("key_id").map_err(get)?,
        tenant: TenantId::from_uuid(row.try_get("tenant_id").map_err(get)?)
            .map_err(|_| corrupt("api key"))?,
        principal: UserId::from_uuid(row.try_get("principal").map_err(get)?)
            .map_err(|_| corrupt("api key"))?,
        roles: std::sync::Arc::from([Role::new(&row.try_get::<String, _>("role").map_err(get)?)
            .map_err(|_| corrupt("api key"))?]),
        scopes: scopes
            .iter()
            .map(|s| Role::new(s).map_err(|_| corrupt("api key")))
            .collect::<Result<Vec<_>, _>>()?
            .into(),
        secret_hash: hash.try_into().map_err(|_| corrupt("api key"))?,
        created_at: from_ms(row.try_get("created_ms").map_err(get)?),
        expires_at: opt("expires_ms")?,
        revoked_at: opt("revoked_ms")?,
        grace_until: opt("grace_until_ms")?,
        allowed_cidrs: cidrs
            .iter()
            .map(|c| c.parse::<IpNet>().map_err(|_| corrupt("api key")))
            .collect::<Result<Vec<_>, _>>()?
            .into(),
        window: match (ws, we) {
            (Some(s), Some(e)) => Some(TimeWindow {
                start_minute: u16::try_from(s).map_err(|_| corrupt("api key"))?,
                end_minute: u16::try_from(e).map_err(|_| corrupt("api key"))?,
            }),
            _ => None,
        },
        last_used_at: opt("last_used_ms")?,
        failures: u32::try_from(row.try_get::<i32, _>("failures").map_err(get)?).unwrap_or(0),
        failure_window_start: opt("failure_window_start_ms")?,
        locked_until: opt("locked_until_ms")?,
    })
}

impl ApiKeyStore for PgApiKeyStore {
    async fn insert(&self, r: ApiKeyRecord) -> Result<(), AuthError> {
        let sql = format!(
            "INSERT INTO {} (key_id, tenant_id, principal, role, scopes, secret_hash, created_ms, expires_ms,
                revoked_ms, grace_until_ms, allowed_cidrs, window_start, window_end)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&r.key_id)
            .bind(r.tenant.as_uuid())
            .bind(r.principal.as_uuid())
            .bind(r.roles.first().map(Role::as_str).unwrap_or_default())
            .bind(
                r.scopes
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(r.secret_hash.as_slice())
            .bind(ms(r.created_at))
            .bind(r.expires_at.map(ms))
            .bind(r.revoked_at.map(ms))
            .bind(r.grace_until.map(ms))
            .bind(
                r.allowed_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .bind(r.window.map(|w| i16::try_from(w.start_minute).unwrap_or(0)))
            .bind(r.window.map(|w| i16::try_from(w.end_minute).unwrap_or(0)))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn get(&self, key_id: &str) -> Result<Option<std::sync::Arc<ApiKeyRecord>>, AuthError> {
        let sql = format!("SELECT * FROM {} WHERE key_id = $1", self.table);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(row
            .as_ref()
            .map(api_key_from_row)
            .transpose()?
            .map(std::sync::Arc::new))
    }

    async fn record_failure(
        &self,
        key_id: &str,
        at: SystemTime,
        policy: LockoutPolicy,
    ) -> Result<Option<SystemTime>, AuthError> {
        // One statement, so concurrent failures from several processes all count.
        let sql = format!(
            "UPDATE {} SET
                failures = CASE WHEN failure_window_start_ms > $2 - $3 THEN failures + 1 ELSE 1 END,
                failure_window_start_ms = CASE WHEN failure_window_start_ms > $2 - $3
                                               THEN failure_window_start_ms ELSE $2 END
             WHERE key_id = $1
             RETURNING failures",
            self.table
        );
        let window_ms = i64::try_from(policy.window.as_millis()).unwrap_or(i64::MAX);
        let failures: Option<i32> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(key_id)
            .bind(ms(at))
            .bind(window_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        let Some(failures) = failures else {
            return Ok(None);
        };
        if u32::try_from(failures).unwrap_or(0) >= policy.max_failures {
            let until = at + policy.lock_for;
            let sql = format!(
                "UPDATE {} SET locked_until_ms = $2, failures = 0, failure_window_start_ms = NULL WHERE key_id = $1",
                self.table
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(key_id)
                .bind(ms(until))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
            return Ok(Some(until));
        }
        Ok(None)
    }

    async fn record_success(&self, key_id: &str, at: SystemTime) -> Result<(), AuthError> {
        let sql = format!(
            "UPDATE {} SET last_used_ms = $2, failures = 0, failure_window_start_ms = NULL WHERE key_id = $1",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(key_id)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn revoke(&self, key_id: &str, at: SystemTime) -> Result<bool, AuthError> {
        let sql = format!(
            "UPDATE {} SET revoked_ms = $2 WHERE key_id = $1",
            self.table
        );
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(key_id)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn set_grace(&self, key_id: &str, until: SystemTime) -> Result<bool, AuthError> {
        let sql = format!(
            "UPDATE {} SET grace_until_ms = $2 WHERE key_id = $1",
            self.table
        );
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(key_id)
            .bind(ms(until))
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected();
        Ok(n == 1)
    }
}

/// Refresh tokens in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgRefreshStore {
    pool: PgPool,
    table: String,
}

impl PgRefreshStore {
    /// A store over `schema.nova_refresh_tokens` (create it with [`schema_sql`]).
    #[must_use]
    pub fn new(pool: PgPool, schema: &Ident) -> Self {
        Self {
            pool,
            table: format!("{schema}.nova_refresh_tokens"),
        }
    }
}

impl RefreshStore for PgRefreshStore {
    async fn insert(&self, r: RefreshRecord) -> Result<(), AuthError> {
        let sql = format!(
            "INSERT INTO {} (token_hash, family, tenant_id, user_id, issued_ms, expires_ms, used_ms, revoked)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(r.token_hash.as_slice())
            .bind(r.family)
            .bind(r.tenant.as_uuid())
            .bind(r.user.as_uuid())
            .bind(ms(r.issued_at))
            .bind(ms(r.expires_at))
            .bind(r.used_at.map(ms))
            .bind(r.revoked)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn get(&self, token_hash: &[u8; 32]) -> Result<Option<RefreshRecord>, AuthError> {
        let Some(row) = row_by_token_hash(&self.pool, &self.table, token_hash).await? else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| AuthError::Store(format!("refresh row: {e}"));
        let family: Uuid = row.try_get("family").map_err(get)?;
        Ok(Some(RefreshRecord {
            token_hash: *token_hash,
            family,
            tenant: TenantId::from_uuid(row.try_get("tenant_id").map_err(get)?)
                .map_err(|_| corrupt("refresh"))?,
            user: UserId::from_uuid(row.try_get("user_id").map_err(get)?)
                .map_err(|_| corrupt("refresh"))?,
            issued_at: from_ms(row.try_get("issued_ms").map_err(get)?),
            expires_at: from_ms(row.try_get("expires_ms").map_err(get)?),
            used_at: row
                .try_get::<Option<i64>, _>("used_ms")
                .map_err(get)?
                .map(from_ms),
            revoked: row.try_get("revoked").map_err(get)?,
        }))
    }

    async fn mark_used(&self, token_hash: &[u8; 32], at: SystemTime) -> Result<bool, AuthError> {
        // The WHERE used_ms IS NULL makes this a compare-and-set: of two concurrent uses,
        // exactly one updates a row.
        let sql = format!(
            "UPDATE {} SET used_ms = $2 WHERE token_hash = $1 AND used_ms IS NULL AND NOT revoked",
            self.table
        );
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(token_hash.as_slice())
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn family_revoked(&self, family: Uuid) -> Result<bool, AuthError> {
        let sql = format!(
            "SELECT coalesce(bool_or(revoked), false) FROM {} WHERE family = $1",
            self.table
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(family)
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn revoke_family(&self, family: Uuid) -> Result<u64, AuthError> {
        let sql = format!("UPDATE {} SET revoked = true WHERE family = $1", self.table);
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected())
    }
}

/// Sessions in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgSessionStore {
    pool: PgPool,
    table: String,
}

impl PgSessionStore {
    /// A store over `schema.nova_sessions` (create it with [`schema_sql`]).
    #[must_use]
    pub fn new(pool: PgPool, schema: &Ident) -> Self {
        Self {
            pool,
            table: format!("{schema}.nova_sessions"),
        }
    }
}

impl SessionStore for PgSessionStore {
    async fn create(&self, s: SessionRecord) -> Result<(), AuthError> {
        let sql = format!(
            "INSERT INTO {} (token_hash, tenant_id, user_id, ip, user_agent, created_ms, expires_ms, last_seen_ms, idle_ms, methods, mfa_ms, roles)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(s.token_hash.as_slice())
            .bind(s.tenant.as_uuid())
            .bind(s.user.as_uuid())
            .bind(s.ip.to_string())
            .bind(&s.user_agent)
            .bind(ms(s.created_at))
            .bind(ms(s.expires_at))
            .bind(ms(s.last_seen_at))
            .bind(i64::try_from(s.idle_timeout.as_millis()).unwrap_or(i64::MAX))
            .bind(&s.methods)
            .bind(s.mfa_at.map(ms))
            .bind(&s.roles)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn get(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>, AuthError> {
        let Some(row) = row_by_token_hash(&self.pool, &self.table, token_hash).await? else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| AuthError::Store(format!("session row: {e}"));
        Ok(Some(SessionRecord {
            token_hash: *token_hash,
            tenant: TenantId::from_uuid(row.try_get("tenant_id").map_err(get)?)
                .map_err(|_| corrupt("session"))?,
            user: UserId::from_uuid(row.try_get("user_id").map_err(get)?)
                .map_err(|_| corrupt("session"))?,
            // A role outside the name grammar does not decode: the row is corrupt.
            roles: row
                .try_get::<Vec<Role>, _>("roles")
                .map_err(|_| corrupt("session"))?,
            ip: row
                .try_get::<String, _>("ip")
                .map_err(get)?
                .parse::<IpAddr>()
                .map_err(|_| corrupt("session"))?,
            user_agent: row.try_get("user_agent").map_err(get)?,
            created_at: from_ms(row.try_get("created_ms").map_err(get)?),
            expires_at: from_ms(row.try_get("expires_ms").map_err(get)?),
            last_seen_at: from_ms(row.try_get("last_seen_ms").map_err(get)?),
            idle_timeout: Duration::from_millis(
                u64::try_from(row.try_get::<i64, _>("idle_ms").map_err(get)?).unwrap_or(0),
            ),
            // A method outside the name grammar does not decode: the row is corrupt.
            methods: row
                .try_get::<Vec<AuthMethod>, _>("methods")
                .map_err(|_| corrupt("session"))?,
            mfa_at: row
                .try_get::<Option<i64>, _>("mfa_ms")
                .map_err(get)?
                .map(from_ms),
        }))
    }

    async fn record_step_up(
        &self,
        token_hash: &[u8; 32],
        methods: &[AuthMethod],
        at: SystemTime,
    ) -> Result<bool, AuthError> {
        // One statement: the methods merge with what a concurrent step-up wrote.
        let sql = format!(
            "UPDATE {} SET methods = ARRAY(SELECT DISTINCT m FROM unnest(methods || $2::text[]) AS m ORDER BY m), \
             mfa_ms = greatest(coalesce(mfa_ms, $3), $3) WHERE token_hash = $1",
            self.table
        );
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(token_hash.as_slice())
            .bind(methods)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn touch(&self, token_hash: &[u8; 32], at: SystemTime) -> Result<(), AuthError> {
        let sql = format!(
            "UPDATE {} SET last_seen_ms = greatest(last_seen_ms, $2) WHERE token_hash = $1",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(token_hash.as_slice())
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn revoke(&self, token_hash: &[u8; 32]) -> Result<bool, AuthError> {
        let sql = format!("DELETE FROM {} WHERE token_hash = $1", self.table);
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(token_hash.as_slice())
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected()
            == 1)
    }

    async fn revoke_user(&self, tenant: TenantId, user: UserId) -> Result<u64, AuthError> {
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND user_id = $2",
            self.table
        );
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(store_err)?
            .rows_affected())
    }
}

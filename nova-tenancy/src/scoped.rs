//! Tenant-scoped transactions: the only way this crate hands out a connection for tenant data.
//!
//! [`TenantPool::begin`] opens a transaction and, in the same round trip, sets
//! `nova.tenant_id`, `nova.user_id` and `nova.request_id` transaction-locally (`SET LOCAL`,
//! the statement form of `set_config(.., true)`). A transaction-local setting disappears at
//! `COMMIT` or `ROLLBACK`, so a pooled connection never carries one request's tenant into
//! the next (PostgreSQL docs, "SET" and "System Administration Functions"). This module must
//! never hand out a pooled connection outside such a transaction.

use std::fmt;
use std::fmt::Write as _;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};

use crate::context::{AUDIT_TARGET, TenantContext};
use crate::error::Error;
use crate::ids::TenantId;

/// Name of the transaction-local setting that row-level security policies compare with.
pub const TENANT_SETTING: &str = "nova.tenant_id";
/// Name of the transaction-local setting holding the acting user (empty for system contexts).
pub const USER_SETTING: &str = "nova.user_id";
/// Name of the transaction-local setting holding the request id.
pub const REQUEST_SETTING: &str = "nova.request_id";
/// Name of the transaction-local setting that, for the roles a migration names as bypass
/// roles, turns off tenant filtering. It holds the reason for the bypass.
pub const BYPASS_SETTING: &str = "nova.bypass_reason";

static BYPASSES: AtomicU64 = AtomicU64::new(0);

/// Number of row-level security bypass transactions this process has begun, for metrics.
#[must_use]
pub fn rls_bypasses_started() -> u64 {
    BYPASSES.load(Ordering::Relaxed)
}

/// A PostgreSQL pool that only opens tenant-scoped transactions.
///
/// Wrap the pool your service already has; from then on the tenant-data path goes through
/// [`TenantPool::begin`]. Keep the raw `PgPool` out of request handlers.
///
/// ```no_run
/// # async fn demo(ctx: nova_tenancy::TenantContext) -> Result<(), nova_tenancy::Error> {
/// use nova_tenancy::TenantPool;
/// let pool = TenantPool::new(sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?);
/// let mut tx = pool.begin(&ctx).await?;
/// let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = 'open'")
///     .fetch_one(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// # let _ = open; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantPool {
    pool: PgPool,
}

impl TenantPool {
    /// Takes a pool whose connections log in as an application role subject to row-level
    /// security (never a superuser or a `BYPASSRLS` role, which PostgreSQL exempts even
    /// under `FORCE ROW LEVEL SECURITY`). Does no I/O; prefer [`TenantPool::checked`], which
    /// verifies the role.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes a pool after checking, on one of its connections, that the login role is
    /// neither a superuser nor `BYPASSRLS` — either would silently see every tenant's rows.
    ///
    /// # Errors
    /// [`Error::Config`] naming `role` when the role skips row-level security;
    /// [`Error::Database`] when the check cannot run.
    pub async fn checked(pool: PgPool) -> Result<Self, Error> {
        let skips_rls: bool = sqlx::query_scalar(
            "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&pool)
        .await?;
        if skips_rls {
            return Err(Error::Config {
                setting: "role",
                reason: "the pool logs in as a superuser or BYPASSRLS role, which row-level security does not filter",
            });
        }
        Ok(Self { pool })
    }

    /// Begins a transaction scoped to `ctx`'s tenant, user and request.
    ///
    /// One round trip: `BEGIN` and the three `SET LOCAL` statements travel as one
    /// simple-query message. The values are rendered from typed UUIDs, whose text form is
    /// `[0-9a-f-]{36}`; no caller-supplied text reaches the SQL.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had or the server refuses.
    pub async fn begin(&self, ctx: &TenantContext) -> Result<TenantTx, Error> {
        let sql = begin_statement(ctx, None);
        let tx = self.pool.begin_with(AssertSqlSafe(sql)).await?;
        Ok(TenantTx {
            tx,
            tenant: ctx.tenant(),
        })
    }

    /// Begins a transaction in which the migration's bypass roles see every tenant's rows.
    ///
    /// Only a system context may ask ([`TenantContext::system`]), and only connections that
    /// log in as a bypass role named in the migration gain anything: for every other role
    /// the setting has no effect. Each bypass is reported as a `warn` event on
    /// [`AUDIT_TARGET`] and counted in [`rls_bypasses_started`].
    ///
    /// # Errors
    /// [`Error::BypassRequiresSystemContext`] for a verified user's context;
    /// [`Error::Database`] when the server refuses.
    pub async fn begin_bypass(
        &self,
        ctx: &TenantContext,
        reason: &'static str,
    ) -> Result<TenantTx, Error> {
        if !ctx.is_system() {
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "rls_bypass_refused",
                tenant = %ctx.tenant(),
                request_id = %ctx.request_id(),
                "row-level security bypass refused for a non-system context"
            );
            crate::audit_hook::report(
                &crate::SecurityEvent::new("rls_bypass_refused")
                    .tenant(ctx.tenant())
                    .request_id(ctx.request_id()),
            );
            return Err(Error::BypassRequiresSystemContext);
        }
        if reason.trim().is_empty() {
            return Err(Error::Config {
                setting: "bypass reason",
                reason: "must not be empty",
            });
        }
        BYPASSES.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "rls_bypass",
            tenant = %ctx.tenant(),
            request_id = %ctx.request_id(),
            reason,
            "row-level security bypass begun"
        );
        crate::audit_hook::report(
            &crate::SecurityEvent::new("rls_bypass")
                .tenant(ctx.tenant())
                .request_id(ctx.request_id())
                .details(&[("reason", &reason)]),
        );
        let sql = begin_statement(ctx, Some(reason));
        let tx = self.pool.begin_with(AssertSqlSafe(sql)).await?;
        Ok(TenantTx {
            tx,
            tenant: ctx.tenant(),
        })
    }

    /// Connections currently open (idle or in use), for metrics.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's connect options hold a password; print only its shape.
        f.debug_struct("TenantPool")
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish_non_exhaustive()
    }
}

/// Renders `BEGIN; SET LOCAL ...` for one simple-query round trip.
///
/// `SET LOCAL` is the statement form of `set_config(name, value, true)`: the same
/// transaction-local setting. It is used because it is a utility command with nothing to
/// plan and no row to return; a `SELECT set_config(..)` added about 60 µs to each
/// transaction on the benchmark machine (see `BENCHMARKS.md`).
///
/// Safety of the splice: ids render as `[0-9a-f-]{36}` (see the properties in `ids.rs`) and
/// the bypass reason is a `&'static str` from code, escaped as a standard SQL literal anyway.
fn begin_statement(ctx: &TenantContext, bypass_reason: Option<&str>) -> String {
    let mut sql = String::with_capacity(200);
    let user = ctx.user().map(|u| u.to_text());
    let _ = write!(
        sql,
        "BEGIN; SET LOCAL {TENANT_SETTING} = '{}'; SET LOCAL {USER_SETTING} = '{}'; SET LOCAL {REQUEST_SETTING} = '{}'",
        ctx.tenant().to_text(),
        user.as_ref().map_or("", |u| u.as_str()),
        ctx.request_id().to_text(),
    );
    // Always written, so that a session-level `SET nova.bypass_reason` left on a pooled
    // connection (or set by `ALTER ROLE .. SET`) can never carry into a user's transaction.
    let reason = bypass_reason.map_or(String::new(), |r| r.replace('\'', "''").replace('\\', ""));
    let _ = write!(sql, "; SET LOCAL {BYPASS_SETTING} = '{reason}'");
    sql
}

/// A transaction scoped to one tenant. Use `&mut *tx` wherever sqlx wants an executor.
///
/// Dropping it without [`TenantTx::commit`] rolls back, as with `sqlx::Transaction`.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
}

impl TenantTx {
    /// The tenant this transaction is scoped to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Commits; the tenant settings end with the transaction.
    ///
    /// # Errors
    /// [`Error::Database`] when the commit fails (the transaction is then rolled back).
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await.map_err(Error::from)
    }

    /// Rolls back explicitly (dropping does the same, deferred to the connection's next use).
    ///
    /// # Errors
    /// [`Error::Database`] when the server cannot be reached.
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await.map_err(Error::from)
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{CredentialVerifier, VerifiedIdentity};
    use crate::ids::UserId;

    struct V;
    impl CredentialVerifier for V {
        fn verifier_name(&self) -> &'static str {
            "test"
        }
    }

    #[test]
    fn begin_statement_contains_only_rendered_ids() {
        let t = TenantId::new_v4();
        let u = UserId::new_v4();
        let ctx = TenantContext::from_verified(&V, VerifiedIdentity::new(t).user(u));
        let sql = begin_statement(&ctx, None);
        assert!(sql.starts_with("BEGIN; SET LOCAL nova.tenant_id = '"));
        assert!(sql.contains(&t.to_string()));
        assert!(sql.contains(&u.to_string()));
        assert!(sql.ends_with("SET LOCAL nova.bypass_reason = ''"), "{sql}");
        assert_eq!(sql.matches(';').count(), 4);
    }

    #[test]
    fn bypass_reason_is_escaped_as_a_literal() {
        let ctx = TenantContext::system(TenantId::new_v4(), "job").unwrap();
        let sql = begin_statement(&ctx, Some("it's'); DROP TABLE t; --"));
        assert!(sql.contains("'it''s''); DROP TABLE t; --'"));
        // the user id of a system context is the empty string, which policies read as NULL
        assert!(sql.contains("SET LOCAL nova.user_id = ''"));
    }
}

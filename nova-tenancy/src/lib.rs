//! # nova-tenancy
//!
//! The root of Nova: typed tenant identity that flows from a verified credential down to
//! PostgreSQL row-level security.
//!
//! - [`TenantId`], [`UserId`], [`RequestId`]: canonical UUIDs, parsed once and then trusted;
//!   with [`Role`] and [`Region`] they bind and decode in sqlx directly (`uuid` and `text`
//!   columns), validated on the way out of the database as on the way in.
//! - [`TenantContext`]: tenant, user, roles, request id, region and isolation mode, built only
//!   by a [`CredentialVerifier`] or through the reported [`TenantContext::system`] path.
//! - [`TenantPool::begin`]: the only way to a connection for tenant data — a transaction in
//!   which `nova.tenant_id`, `nova.user_id` and `nova.request_id` are set transaction-locally
//!   (`SET LOCAL`, the statement form of `set_config(.., true)`), in the same round trip as
//!   `BEGIN`.
//! - [`RlsMigration`]: the SQL that makes PostgreSQL enforce it — least-privilege roles,
//!   `ENABLE` and `FORCE ROW LEVEL SECURITY`, fail-closed tenant policies, the index that keeps
//!   them fast, bypass for named roles only.
//! - [`TenantRouter`]: logical, schema-per-tenant and database-per-tenant isolation and
//!   data-residency routing, refusing any context that does not match where it would land.
//! - [`ConnectionPolicy`]: `statement_timeout`, `idle_in_transaction_session_timeout`,
//!   `lock_timeout` (checked to be in force in every transaction), pool limits, TLS
//!   requirements, and
//!   whether a transaction-pooling PgBouncer sits in between.
//! - [`inspect`]: every way a live database defeats row-level security for the tables Nova
//!   protects; [`TenantPool::checked`] refuses a pool that would leak.
//! - [`privacy`]: data-subject rights over tenant-scoped data — export, erasure, retention
//!   rules and a consent ledger, each confined to one tenant by the same transaction.
//!
//! ## Example
//!
//! ```no_run
//! use nova_tenancy::{AppRoles, ConnectionPolicy, RlsMigration, TenantContext, TenantTable};
//!
//! # async fn demo(ctx: TenantContext) -> Result<(), nova_tenancy::Error> {
//! // Once, as a migration (run by the schema's owner role, never the service's login):
//! let migration = RlsMigration::new(AppRoles::standard())
//!     .table(TenantTable::new("tickets")?.index_with(["id"])?)
//!     .up();
//! # let _ = migration;
//!
//! // At start-up, connecting as a login role that is a member of `app_rw` (the default
//! // policy requires TLS with certificate verification: enable the `tls-rustls` feature).
//! // `connect` refuses a superuser or BYPASSRLS login, which RLS would not filter.
//! let pool = ConnectionPolicy::default()
//!     .connect("postgres://svc@db.internal/app".parse()?)
//!     .await?;
//!
//! // Per request, with the context the auth layer produced:
//! let mut tx = pool.begin(&ctx).await?;
//! let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM tickets ORDER BY id LIMIT 20")
//!     .fetch_all(&mut *tx) // only this tenant's rows, whatever the WHERE clause says
//!     .await?;
//! tx.commit().await?;
//! # let _ = titles; Ok(()) }
//! ```
//!
//! ## Security notes
//!
//! - **What row-level security covers.** Policies filter every query an application role
//!   runs, so a forgotten `WHERE tenant_id = ..` returns the current tenant's rows only, and
//!   no tenant set means no rows. It does not defend against SQL injection: a statement an
//!   attacker controls can call `set_config` itself. Keep using bind parameters.
//! - **Roles that skip it.** PostgreSQL exempts superusers and `BYPASSRLS` roles from every
//!   policy, even under `FORCE`. Connect the service as a plain login role that is a member
//!   of `app_rw` or `app_readonly`. [`RlsMigration::roles_sql`] refuses to proceed if an
//!   application role has either attribute, and [`TenantPool::checked`] (used by
//!   [`ConnectionPolicy::connect`]) refuses a pool whose login has one or can reach a role
//!   that has one through membership.
//! - **Bypass.** Only roles the migration names (default `admin_rw`) can bypass, only in a
//!   transaction begun with [`TenantPool::begin_bypass`] from a system context, and each
//!   bypass is reported on [`AUDIT_TARGET`]. Every other transaction resets the bypass
//!   setting, so a value left on a pooled session never carries over. Give user requests a
//!   login that is not a member of a bypass role.
//! - **Pooled connections.** A [`TenantTx`] owns its connection and returns it to the pool
//!   outside any transaction, as the login role, with the session reset (`RESET ALL`,
//!   `DISCARD TEMP`, ... in the same message as `COMMIT`), whatever happens to the futures
//!   that used it: a `begin` dropped half-way closes its connection instead. Each
//!   transaction also pins the login's role and `search_path` (and, behind PgBouncer, the
//!   timeouts), so state an earlier borrower left on a session cannot widen it. Counted in
//!   [`dirty_connections_closed`].
//! - **The schema around the tables.** A view without `security_invoker`, a `SECURITY
//!   DEFINER` function owned by a superuser, a permissive `true` policy, a `TRUNCATE` grant,
//!   the `TEMPORARY` privilege or a login that can `SET ROLE` to a `BYPASSRLS` role each
//!   defeat row-level security. [`inspect`] finds them; [`TenantPool::checked`] refuses a
//!   pool whose login reaches any, naming it. See [`RlsMigration`] for who should own the
//!   schema.
//! - **Behind PgBouncer** (transaction pooling): use [`Pooler::PgBouncerTransaction`] and
//!   run every query inside a tenant transaction with `.persistent(false)` (PgBouncer
//!   before 1.21 keeps no named statements across transactions); the README has the
//!   details. A statement that ends Nova's transaction itself (an injected `COMMIT`) hands
//!   the server session back to PgBouncer before Nova's reset: Nova's next transaction on
//!   that session is still pinned, a client that bypasses Nova is not.

//! ## Performance notes
//!
//! `begin` costs no extra round trip: `BEGIN`, the pins and the settings travel in one
//! message, and the session reset travels with `COMMIT`. The
//! policy compares the tenant column with a `STABLE` expression that the planner evaluates
//! once per scan, so an index that leads with the tenant column serves RLS-filtered queries
//! as well as an explicit `WHERE`. Measured figures are in the repository's `BENCHMARKS.md`.

#![forbid(unsafe_code)]

mod audit_hook;
mod context;
mod error;
mod ident;
mod ids;
mod names;
mod profile;
mod rls_sql;

#[cfg(feature = "postgres")]
mod connect;
#[cfg(feature = "postgres")]
pub mod inspect;
#[cfg(feature = "postgres")]
pub mod privacy;
#[cfg(feature = "postgres")]
mod routing;
#[cfg(feature = "postgres")]
mod scoped;
#[cfg(feature = "postgres")]
mod sql_types;

#[cfg(feature = "testing")]
pub mod testing;

pub use audit_hook::{Actor, AuditHook, SecurityEvent, report, set_audit_hook};
pub use context::{
    AUDIT_TARGET, ContextError, CredentialVerifier, Isolation, Origin, TenantContext,
    VerifiedIdentity, system_contexts_created,
};
pub use error::Error;
pub use ident::{IDENT_MAX_LEN, Ident, IdentError};
pub use ids::{ID_TEXT_LEN, IdError, IdText, RequestId, TenantId, UserId};
pub use names::{AuthMethod, NAME_MAX_LEN, NameError, Region, Role};
pub use profile::{Profile, UnknownProfile};
pub use rls_sql::{AppRole, AppRoles, RlsMigration, TenantTable};

#[cfg(feature = "postgres")]
pub use connect::{ConnectionPolicy, Pooler, TlsRequirement};
#[cfg(feature = "postgres")]
pub use routing::{
    DATABASE_TENANT_SETTING, Placement, REGION_SETTING, TenantRouter, TenantRouterBuilder,
    region_database_sql, tenant_database_sql, tenant_schema_sql,
};
#[cfg(feature = "postgres")]
pub use scoped::{
    BYPASS_SETTING, REQUEST_SETTING, SESSION_RESET, SessionTimeouts, TENANT_SETTING, TenantPool,
    TenantTx, USER_SETTING, dirty_connections_closed, rls_bypasses_started,
};

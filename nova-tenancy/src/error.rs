//! The crate's one error type. Variants say what went wrong and which setting or tenant is
//! involved; Nova's own variants carry no password, connection string or row contents.
//! [`Error::Database`] wraps the server's message, which can quote a value from the
//! statement (e.g. `invalid input syntax for type uuid: "…"`): log it, but do not send it
//! to a client.

use crate::context::{ContextError, Isolation};
use crate::ident::IdentError;
use crate::ids::{IdError, TenantId};
use crate::names::{NameError, Region};

/// Everything that can go wrong in `nova-tenancy`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An id failed validation.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A role or region name failed validation.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A SQL identifier failed validation.
    #[error(transparent)]
    Ident(#[from] IdentError),
    /// A context could not be built.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The router has no placement for this tenant, so there is nowhere safe to send it.
    #[error("tenant {tenant} is not placed in any pool")]
    UnknownTenant {
        /// The tenant the request named.
        tenant: TenantId,
    },
    /// The context expects one isolation mode and the tenant is provisioned with another.
    #[error(
        "tenant {tenant}: context expects {expected} isolation but the tenant is placed with {placed}"
    )]
    IsolationMismatch {
        /// The tenant the request named.
        tenant: TenantId,
        /// What the context said.
        expected: Isolation,
        /// What the tenant directory says.
        placed: Isolation,
    },
    /// The context is bound to one region and the tenant's data lives in another.
    #[error(
        "tenant {tenant}: context is bound to region {expected} but the tenant's data is placed in {placed}"
    )]
    ResidencyViolation {
        /// The tenant the request named.
        tenant: TenantId,
        /// The region the context is bound to.
        expected: Region,
        /// The region the tenant is placed in.
        placed: Region,
    },
    /// No pool is configured for the region a tenant is placed in.
    #[error("no pool is configured for region {region}")]
    NoRegionPool {
        /// The region without a pool.
        region: Region,
    },
    /// A database-per-tenant placement has no dedicated pool.
    #[error("tenant {tenant} is placed in its own database but no pool is configured for it")]
    NoTenantPool {
        /// The tenant without a pool.
        tenant: TenantId,
    },
    /// The schema or database a connection reached is not marked as belonging to the tenant
    /// (a routing or provisioning mistake). The transaction was rolled back.
    #[error("tenant {tenant}: the {isolation} reached is not provisioned for this tenant")]
    PlacementMismatch {
        /// The tenant the request named.
        tenant: TenantId,
        /// Which kind of placement failed its check.
        isolation: Isolation,
    },
    /// Row-level security bypass was requested from a context that is not a system context.
    #[error("row-level security bypass requires a system context")]
    BypassRequiresSystemContext,
    /// A connection or pool setting is unsafe or inconsistent.
    #[error("invalid connection setting `{setting}`: {reason}")]
    Config {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pool's login is, or can become through role membership, a superuser or
    /// `BYPASSRLS` role, which row-level security does not filter even under `FORCE`.
    #[error(
        "the pool's login can act as role {role}, a superuser or BYPASSRLS role that row-level security does not filter"
    )]
    LoginSkipsRls {
        /// The superuser or `BYPASSRLS` role (possibly the login itself).
        role: String,
    },
    /// The database has objects or grants that defeat row-level security for tables the
    /// pool's login can reach (see [`crate::inspect`]).
    #[cfg(feature = "postgres")]
    #[error("row-level security is defeated: {0}")]
    RlsDefeated(crate::inspect::Report),
    /// A region's pool reached a database that is not marked as that region's (see
    /// [`crate::region_database_sql`]): a pool registered under the wrong region.
    #[error("the pool registered for region {region} reached a database not marked for it")]
    RegionMismatch {
        /// The region the pool was registered under.
        region: Region,
    },
    /// A data-subject operation or its configuration was refused (see
    /// [`crate::privacy`]); nothing was changed.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Privacy(#[from] crate::privacy::PrivacyError),
    /// The database reported an error.
    #[cfg(feature = "postgres")]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

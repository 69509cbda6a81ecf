//! Routing a tenant to where its data lives: a shared pool (logical isolation), a schema in a
//! shared pool, or a database of its own, each in the region the tenant's data must stay in.
//!
//! The router checks that a context matches the tenant's placement before it opens anything,
//! and for schema and database placements it also checks, inside the new transaction, that
//! the schema or database it reached is marked as the tenant's (and, for a database, that
//! it is the configured one). These checks catch routing and provisioning mistakes; they
//! are not a defence against code that can run arbitrary SQL, which could spoof a marker.
//! In schema mode `search_path` only selects the tenant's tables: apply the RLS migration
//! inside every tenant schema too, so that a query naming another schema still sees nothing.
//! A context without a region is routed to wherever the directory places its tenant; a
//! context bound to a region is refused anywhere else. A region's pool must reach a
//! database marked for that region ([`region_database_sql`]): the router checks the
//! marker once per pool, before the pool's first transaction (a pool's connections all
//! reach the database its connect options name), so a pool registered under the wrong
//! region is refused instead of placing data outside its region; dedicated databases have
//! theirs checked on every transaction, with their tenant marker. Markers are read from the
//! catalogue (`pg_db_role_setting`), never from the session, so a `SET` left on a pooled
//! connection or a role-level default cannot spoof one. This
//! module must never send a request to a pool or schema it has not confirmed belongs to the
//! requesting tenant and region.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::context::{AUDIT_TARGET, Isolation, TenantContext};
use crate::error::Error;
use crate::ident::Ident;
use crate::ids::TenantId;
use crate::names::Region;
use crate::scoped::{TenantPool, TenantTx};

use sqlx::{AssertSqlSafe, Row as _};

/// The `COMMENT ON SCHEMA` text that marks a schema as a tenant's (see [`tenant_schema_sql`]).
fn schema_marker(tenant: TenantId) -> String {
    format!("nova:tenant={}", tenant.to_text())
}

/// Database-level setting that marks a database as a tenant's (see [`tenant_database_sql`]).
pub const DATABASE_TENANT_SETTING: &str = "nova.database_tenant";

/// Database-level setting that marks a database as a region's (see [`region_database_sql`]).
pub const REGION_SETTING: &str = "nova.region";

/// SQL that marks a database as holding a region's data. Run it as the database owner or a
/// superuser on every database a region's pool (or a dedicated tenant pool) connects to;
/// it takes effect for new sessions.
#[must_use]
pub fn region_database_sql(database: &Ident, region: &Region) -> String {
    // A region name is `[a-z0-9_.:-]` (see `names.rs`): nothing to escape in a literal.
    format!("ALTER DATABASE {database} SET {REGION_SETTING} = '{region}';\n")
}

/// A scalar subquery for a marker as the database stores it (`ALTER DATABASE .. SET`),
/// read from the catalogue rather than the session: a session-level `SET`, or a role-level
/// default, cannot stand in for it. `name` is one of this module's setting names.
fn database_setting_sql(name: &str) -> String {
    format!(
        "SELECT substr(c, length('{name}=') + 1) \
         FROM pg_catalog.pg_database d \
         JOIN pg_catalog.pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0, \
         unnest(s.setconfig) AS c \
         WHERE d.datname = current_database() AND starts_with(c, '{name}=')"
    )
}

/// SQL that creates a tenant's schema and marks it as the tenant's.
#[must_use]
pub fn tenant_schema_sql(schema: &Ident, tenant: TenantId) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\nCOMMENT ON SCHEMA {schema} IS '{}';\n",
        schema_marker(tenant)
    )
}

/// SQL that marks an existing database as a tenant's own. Run it as the database owner or a
/// superuser when provisioning the tenant.
#[must_use]
pub fn tenant_database_sql(database: &Ident, tenant: TenantId) -> String {
    format!(
        "ALTER DATABASE {database} SET {DATABASE_TENANT_SETTING} = '{}';\n",
        tenant.to_text()
    )
}

/// Where one tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Shared tables in the region's pool, separated by row-level security.
    Logical {
        /// The region whose pool holds the data.
        region: Region,
    },
    /// A schema of its own in the region's pool.
    Schema {
        /// The region whose pool holds the schema.
        region: Region,
        /// The tenant's schema, created with [`tenant_schema_sql`].
        schema: Ident,
    },
    /// A database of its own, with a pool registered by [`TenantRouterBuilder::dedicated_pool`].
    Database {
        /// The region the database is in.
        region: Region,
        /// The database's name, checked against `current_database()` on every transaction.
        database: Ident,
    },
}

impl Placement {
    /// The isolation mode of this placement.
    #[must_use]
    pub fn isolation(&self) -> Isolation {
        match self {
            Self::Logical { .. } => Isolation::Logical,
            Self::Schema { .. } => Isolation::Schema,
            Self::Database { .. } => Isolation::Database,
        }
    }

    /// The region the tenant's data lives in.
    #[must_use]
    pub fn region(&self) -> &Region {
        match self {
            Self::Logical { region }
            | Self::Schema { region, .. }
            | Self::Database { region, .. } => region,
        }
    }
}

/// Builds a [`TenantRouter`]; [`TenantRouterBuilder::build`] checks that every placement has
/// somewhere to go.
#[derive(Default)]
pub struct TenantRouterBuilder {
    placements: HashMap<TenantId, Placement>,
    regional: HashMap<Region, TenantPool>,
    dedicated: HashMap<TenantId, TenantPool>,
    /// One check of each region pool's marker, made before its first transaction.
    region_checked: HashMap<Region, tokio::sync::OnceCell<()>>,
}

impl TenantRouterBuilder {
    /// Registers the shared pool for a region (logical and schema placements use it).
    #[must_use]
    pub fn region_pool(mut self, region: Region, pool: TenantPool) -> Self {
        self.regional.insert(region, pool);
        self
    }

    /// Registers the pool of a tenant placed in its own database.
    #[must_use]
    pub fn dedicated_pool(mut self, tenant: TenantId, pool: TenantPool) -> Self {
        self.dedicated.insert(tenant, pool);
        self
    }

    /// Places a tenant.
    #[must_use]
    pub fn place(mut self, tenant: TenantId, placement: Placement) -> Self {
        self.placements.insert(tenant, placement);
        self
    }

    /// Checks the configuration and builds the router.
    ///
    /// # Errors
    /// [`Error::NoRegionPool`] or [`Error::NoTenantPool`] for a placement with no pool.
    pub fn build(mut self) -> Result<TenantRouter, Error> {
        for (tenant, placement) in &self.placements {
            match placement {
                Placement::Logical { region } | Placement::Schema { region, .. } => {
                    if !self.regional.contains_key(region) {
                        return Err(Error::NoRegionPool {
                            region: region.clone(),
                        });
                    }
                }
                Placement::Database { .. } => {
                    if !self.dedicated.contains_key(tenant) {
                        return Err(Error::NoTenantPool { tenant: *tenant });
                    }
                }
            }
        }
        self.region_checked = self
            .regional
            .keys()
            .map(|region| (region.clone(), tokio::sync::OnceCell::new()))
            .collect();
        Ok(TenantRouter {
            inner: Arc::new(self),
        })
    }
}

/// Sends each tenant's transactions to the pool (and schema) that holds its data.
///
/// ```no_run
/// # async fn demo(eu: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext)
/// #     -> Result<(), nova_tenancy::Error> {
/// use nova_tenancy::{Placement, Region, TenantRouter};
/// let eu_west = Region::new("eu-west")?;
/// let router = TenantRouter::builder()
///     .region_pool(eu_west.clone(), eu)
///     .place(ctx.tenant(), Placement::Logical { region: eu_west })
///     .build()?;
/// let tx = router.begin(&ctx).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantRouter {
    inner: Arc<TenantRouterBuilder>,
}

impl TenantRouter {
    /// Starts an empty configuration.
    #[must_use]
    pub fn builder() -> TenantRouterBuilder {
        TenantRouterBuilder::default()
    }

    /// Where `tenant` is placed, if anywhere.
    #[must_use]
    pub fn placement(&self, tenant: TenantId) -> Option<&Placement> {
        self.inner.placements.get(&tenant)
    }

    /// Begins a tenant-scoped transaction in the place the tenant's data lives.
    ///
    /// # Errors
    /// - [`Error::UnknownTenant`] when the tenant is not placed;
    /// - [`Error::IsolationMismatch`] when the context expects another isolation mode;
    /// - [`Error::ResidencyViolation`] when the context is bound to another region;
    /// - [`Error::RegionMismatch`] when the region's pool reaches a database not marked for
    ///   the region;
    /// - [`Error::PlacementMismatch`] when the schema or database reached is not marked as
    ///   the tenant's or the placement's region (the transaction is rolled back);
    /// - [`Error::Database`] when the server refuses.
    ///
    /// Every refusal is also reported as a `warn` event on [`AUDIT_TARGET`].
    pub async fn begin(&self, ctx: &TenantContext) -> Result<TenantTx, Error> {
        let result = self.begin_checked(ctx).await;
        if let Err(err) = &result
            && !matches!(err, Error::Database(_))
        {
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "tenant_routing_refused",
                tenant = %ctx.tenant(),
                request_id = %ctx.request_id(),
                error = %err,
                "tenant routing refused"
            );
            crate::audit_hook::report(
                &crate::SecurityEvent::new("tenant_routing_refused")
                    .tenant(ctx.tenant())
                    .request_id(ctx.request_id())
                    .details(&[("error", err)]),
            );
        }
        result
    }

    async fn begin_checked(&self, ctx: &TenantContext) -> Result<TenantTx, Error> {
        let tenant = ctx.tenant();
        let placement = self
            .placement(tenant)
            .ok_or(Error::UnknownTenant { tenant })?;
        if placement.isolation() != ctx.isolation() {
            return Err(Error::IsolationMismatch {
                tenant,
                expected: ctx.isolation(),
                placed: placement.isolation(),
            });
        }
        if let Some(bound) = ctx.region()
            && bound != placement.region()
        {
            return Err(Error::ResidencyViolation {
                tenant,
                expected: bound.clone(),
                placed: placement.region().clone(),
            });
        }
        match placement {
            Placement::Logical { region } => self.regional_pool(region).await?.begin(ctx).await,
            Placement::Schema { region, schema } => {
                let mut tx = self.regional_pool(region).await?.begin(ctx).await?;
                // One simple-query round trip (no prepared statement, so it also runs behind
                // a transaction-pooling PgBouncer). The schema is an `Ident`, `[a-z0-9_]`:
                // its quoted form is exact and nothing in it needs escaping in a literal.
                let marker: Option<String> = sqlx::raw_sql(AssertSqlSafe(format!(
                    "SELECT set_config('search_path', '{schema}', true), \
                     obj_description(to_regnamespace('{name}')::oid, 'pg_namespace')",
                    name = schema.as_str(),
                )))
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(1))?;
                if marker.as_deref() != Some(schema_marker(tenant).as_str()) {
                    tx.rollback().await?;
                    return Err(Error::PlacementMismatch {
                        tenant,
                        isolation: Isolation::Schema,
                    });
                }
                Ok(tx)
            }
            Placement::Database { database, .. } => {
                let pool = self
                    .inner
                    .dedicated
                    .get(&tenant)
                    .ok_or(Error::NoTenantPool { tenant })?;
                let mut tx = pool.begin(ctx).await?;
                // Three independent checks: the database is the one configured for the
                // tenant, and it carries the tenant's and the region's markers from
                // provisioning. Simple query protocol, as above.
                let (name, marker, marked_region): (String, Option<String>, Option<String>) =
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "SELECT current_database()::text, ({}), ({})",
                        database_setting_sql(DATABASE_TENANT_SETTING),
                        database_setting_sql(REGION_SETTING),
                    )))
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))?;
                if name != database.as_str()
                    || marker.as_deref() != Some(tenant.to_text().as_str())
                    || marked_region.as_deref() != Some(placement.region().as_str())
                {
                    tx.rollback().await?;
                    return Err(Error::PlacementMismatch {
                        tenant,
                        isolation: Isolation::Database,
                    });
                }
                Ok(tx)
            }
        }
    }

    /// The region's pool, once its database has been seen to carry the region's marker.
    async fn regional_pool(&self, region: &Region) -> Result<&TenantPool, Error> {
        let pool = self
            .inner
            .regional
            .get(region)
            .ok_or_else(|| Error::NoRegionPool {
                region: region.clone(),
            })?;
        let checked = self
            .inner
            .region_checked
            .get(region)
            .ok_or_else(|| Error::NoRegionPool {
                region: region.clone(),
            })?;
        // A failed check is not cached: every transaction is refused until the marker is
        // right, and then the pool is used without a further round trip.
        checked
            .get_or_try_init(|| async {
                let marked: Option<String> = sqlx::raw_sql(AssertSqlSafe(format!(
                    "SELECT ({})",
                    database_setting_sql(REGION_SETTING)
                )))
                .fetch_one(pool.raw())
                .await
                .and_then(|row| row.try_get(0))?;
                if marked.as_deref() == Some(region.as_str()) {
                    Ok(())
                } else {
                    Err(Error::RegionMismatch {
                        region: region.clone(),
                    })
                }
            })
            .await?;
        Ok(pool)
    }
}

impl fmt::Debug for TenantRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRouter")
            .field("tenants", &self.inner.placements.len())
            .field("regions", &self.inner.regional.len())
            .field("dedicated", &self.inner.dedicated.len())
            .finish()
    }
}

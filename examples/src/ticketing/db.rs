//! The service's tables, roles and row-level security, applied at start.
//!
//! Three login roles, each with only what it needs:
//! - `<prefix>svc` serves requests: a member of the guarded `app_rw` role, so every query
//!   it runs is confined to the transaction's tenant by PostgreSQL itself;
//! - `<prefix>keys_login` is Nova's own login: it owns credentials, key material and the
//!   audit outbox (`nova::migration_sql`), which are read before a tenant is known and must
//!   never be in a tenant's data backup;
//! - the set-up connection (a role that may create roles and schemas) is used for the
//!   migration only.

use nova::tenancy::privacy::ConsentLedger;
use nova::tenancy::{AppRole, AppRoles, Ident, RlsMigration, TenantTable};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool};

use super::Error;

/// Names of everything the migration creates, from one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    /// The schema of the tenant tables.
    pub app: Ident,
    /// The schema of credentials and key material.
    pub keys: Ident,
    /// Group roles.
    pub roles: AppRoles,
    /// The request-serving login.
    pub svc_login: Ident,
    /// The credentials login.
    pub keys_login: Ident,
    /// Owns the schema and its tables: neither a superuser nor a login (a table owned by a
    /// superuser would let every view or function it creates bypass row-level security).
    pub owner: Ident,
}

impl Names {
    /// Names under `prefix` (lower-case letters, digits and `_`).
    ///
    /// # Errors
    /// When the prefix makes an invalid identifier.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        Ok(Self {
            app: Ident::new(&format!("{prefix}helpdesk"))?,
            keys: Ident::new(&format!("{prefix}keys"))?,
            roles: AppRoles::prefixed(prefix)?,
            svc_login: Ident::new(&format!("{prefix}svc"))?,
            keys_login: Ident::new(&format!("{prefix}keys_login"))?,
            owner: Ident::new(&format!("{prefix}owner"))?,
        })
    }
}

/// The consent ledger's table.
pub fn consent_ledger(names: &Names) -> Result<ConsentLedger, Error> {
    Ok(ConsentLedger::new(Some(names.app.as_str()), "consents")?)
}

/// The two logins [`migrate`] created, with their fresh passwords.
pub struct Logins {
    svc: (Ident, String),
    keys: (Ident, String),
}

impl Logins {
    /// The request-serving login (row-level security applies).
    #[must_use]
    pub fn svc(&self, server: &PgConnectOptions) -> PgConnectOptions {
        server
            .clone()
            .username(self.svc.0.as_str())
            .password(&self.svc.1)
    }

    /// Nova's login.
    #[must_use]
    pub fn keys(&self, server: &PgConnectOptions) -> PgConnectOptions {
        server
            .clone()
            .username(self.keys.0.as_str())
            .password(&self.keys.1)
    }
}

/// Creates (idempotently) the roles, schemas, tables and policies, Nova's own tables, and
/// the two logins with fresh passwords; a login that existed before is made what it must
/// be, whatever it was. `admin` must be allowed to create roles and schemas.
///
/// # Errors
/// Database errors.
pub async fn migrate(admin: &PgPool, names: &Names) -> Result<Logins, Error> {
    let consents = consent_ledger(names)?;
    let m = RlsMigration::new(names.roles.clone())
        .schema(names.app.clone())
        .owner(names.owner.clone())
        .table(TenantTable::new("users")?.index_with(["id"])?)
        .table(TenantTable::new("tickets")?.index_with(["id"])?)
        .table(TenantTable::new("comments")?.index_with(["ticket_id"])?)
        .table(consents.tenant_table());
    let app = &names.app;
    let svc_password = uuid::Uuid::new_v4().simple().to_string();
    let keys_password = uuid::Uuid::new_v4().simple().to_string();
    let ddl = format!(
        "{roles}
        CREATE TABLE IF NOT EXISTS {app}.users (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL,
            display_name text,            -- sealed under the subject's own key
            email text,                   -- sealed under the subject's own key
            email_index bytea,            -- blind index, for lookups by email
            department text NOT NULL,
            queues text[] NOT NULL,
            role text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            erased_at timestamptz,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE INDEX IF NOT EXISTS users_email_index ON {app}.users (tenant_id, email_index);
        CREATE TABLE IF NOT EXISTS {app}.tickets (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL,
            queue text NOT NULL,
            department text NOT NULL,
            priority int NOT NULL CHECK (priority BETWEEN 1 AND 5),
            status text NOT NULL DEFAULT 'open',
            requester_id uuid NOT NULL,
            title text,                   -- cleared when the requester is erased
            body text,                    -- sealed under the requester's key
            created_at timestamptz NOT NULL DEFAULT now(),
            closed_at timestamptz,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE INDEX IF NOT EXISTS tickets_listing ON {app}.tickets (tenant_id, created_at DESC);
        CREATE TABLE IF NOT EXISTS {app}.comments (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL,
            ticket_id uuid NOT NULL,
            author_id uuid NOT NULL,
            body text,                    -- sealed under the author's key
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, id),
            FOREIGN KEY (tenant_id, ticket_id) REFERENCES {app}.tickets (tenant_id, id)
                ON DELETE CASCADE
        );
        {consents_sql}
        {tables}
        {svc}
        {keys}
        {nova_sql}",
        roles = m.roles_sql(),
        consents_sql = consents.create_table_sql(),
        tables = m.tables_sql(),
        svc = m.login_sql(&names.svc_login, &svc_password, Some(AppRole::AppRw)),
        keys = m.login_sql(&names.keys_login, &keys_password, None),
        nova_sql = nova::migration_sql(
            names.keys.as_str(),
            &[names.roles.get(AppRole::AppRw)],
            &names.keys_login
        )?,
    );
    admin.execute(AssertSqlSafe(ddl)).await?;
    Ok(Logins {
        svc: (names.svc_login.clone(), svc_password),
        keys: (names.keys_login.clone(), keys_password),
    })
}

/// Drops everything [`migrate`] created.
///
/// # Errors
/// Database errors.
pub async fn drop_all(admin: &PgPool, names: &Names) -> Result<(), Error> {
    let mut sql = format!(
        "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE;
         DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {};",
        names.app, names.keys, names.svc_login, names.keys_login, names.owner
    );
    for role in [
        AppRole::AppReadonly,
        AppRole::AppRw,
        AppRole::AdminRw,
        AppRole::Reporting,
        AppRole::Audit,
    ] {
        sql.push_str(&format!("DROP ROLE IF EXISTS {};", names.roles.get(role)));
    }
    admin.execute(AssertSqlSafe(sql)).await?;
    Ok(())
}

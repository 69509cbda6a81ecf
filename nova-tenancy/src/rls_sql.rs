//! SQL a service applies as a migration: least-privilege application roles, `ENABLE` and
//! `FORCE ROW LEVEL SECURITY`, a tenant-isolation policy per table that fails closed, the
//! index that keeps it fast, and bypass for named roles only.
//!
//! Every name is an [`Ident`] and is emitted double-quoted; values are never spliced. This
//! module must never generate a policy that shows rows when no tenant is set.
//!
//! # The policies, and why
//!
//! For each tenant table `t` with tenant column `tenant_id`:
//!
//! - `nova_tenant_isolation` (permissive, all roles):
//!   `tenant_id = NULLIF(current_setting('nova.tenant_id', true), '')::uuid`.
//!   With no tenant set, `current_setting(.., true)` is `NULL` (or `''` after an earlier
//!   transaction-local setting ended), the comparison is `NULL`, and no row matches; the
//!   same expression as `WITH CHECK` refuses inserts and updates into another tenant.
//!   A malformed value fails the cast and aborts the statement. The setting is `STABLE`,
//!   so the planner evaluates it once and uses the index on `(tenant_id, ..)`.
//! - `nova_tenant_guard` (restrictive, every application role that is not a bypass role):
//!   the same condition. Restrictive policies are AND-ed with everything else, so a
//!   permissive policy added later (for example one compiled by `nova-policy`) can narrow
//!   what a tenant sees but never widen it to another tenant. Because its expression is
//!   identical to the permissive one, the planner merges the two and filters each row
//!   once (measured: no per-row cost over an explicit `WHERE`). A login role that is a
//!   member of both a guarded role and a bypass role is guarded: it cannot bypass.
//! - `nova_bypass` (permissive, bypass roles only): visible when the transaction set
//!   `nova.bypass_reason` (see [`crate::TenantPool::begin_bypass`]). A role that is not
//!   named never bypasses, whatever it sets.
//!
//! `FORCE` makes the table owner subject to the policies too. Superusers and roles with
//! `BYPASSRLS` are exempt from all row-level security in PostgreSQL, so the generated role
//! DDL refuses to proceed if an application role has either attribute. `TRUNCATE` ignores
//! row-level security and is granted to nobody. The `TEMPORARY` privilege on the database
//! is revoked from `PUBLIC` and the application roles: a temporary table is searched before
//! every schema, so one created in a request would shadow a tenant table for the rest of
//! the pooled session.
//!
//! # Who owns the schema
//!
//! Run the migration as a dedicated owner role: `NOSUPERUSER NOBYPASSRLS`, not a member of
//! any application role, and never the login the service connects as. Three reasons:
//!
//! - The owner of a table can turn its row-level security off and rewrite its policies;
//!   a service login that owns (or can `SET ROLE` to the owner of) a tenant table is one
//!   injected statement away from every tenant. [`RlsMigration::inspection`] and
//!   [`crate::TenantPool::checked`] refuse it.
//! - Views run with their owner's rights unless created `WITH (security_invoker = true)`,
//!   and `SECURITY DEFINER` functions with their owner's: owned by a superuser or a
//!   `BYPASSRLS` role, either returns every tenant's rows. Owned by a plain owner role, they
//!   stay filtered by `FORCE ROW LEVEL SECURITY`. The inspection names every such object.
//! - Revoking `TEMPORARY` needs the database owner (or a superuser): run
//!   [`RlsMigration::tables_sql`] as the database owner, or have it revoke the privilege
//!   once; if it could not, the inspection reports the privilege and `checked` refuses the
//!   pool.

use std::fmt::Write as _;

use crate::ident::{Ident, IdentError};

/// The five application roles and their names. Role names are global to a PostgreSQL
/// cluster; [`AppRoles::prefixed`] gives each deployment (or test) its own set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRoles {
    app_readonly: Ident,
    app_rw: Ident,
    admin_rw: Ident,
    reporting: Ident,
    audit: Ident,
}

/// One of the five application roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppRole {
    /// Reads tenant rows (`SELECT`).
    AppReadonly,
    /// Reads and writes tenant rows (`SELECT`, `INSERT`, `UPDATE`, `DELETE`).
    AppRw,
    /// Like `app_rw`; the default bypass role, for audited system work.
    AdminRw,
    /// Reads tenant rows for reports (`SELECT`).
    Reporting,
    /// No access to tenant tables; `nova-audit` grants it `INSERT` on the audit log only.
    Audit,
}

impl AppRoles {
    /// The standard names: `app_readonly`, `app_rw`, `admin_rw`, `reporting`, `audit`.
    #[must_use]
    pub fn standard() -> Self {
        Self::prefixed("").unwrap_or_else(|_| unreachable!("standard role names are valid"))
    }

    /// The standard names with a prefix, e.g. `billing_app_rw`.
    ///
    /// # Errors
    /// [`IdentError`] when the prefix makes a name invalid or too long.
    pub fn prefixed(prefix: &str) -> Result<Self, IdentError> {
        let name = |base: &str| Ident::new(&format!("{prefix}{base}"));
        Ok(Self {
            app_readonly: name("app_readonly")?,
            app_rw: name("app_rw")?,
            admin_rw: name("admin_rw")?,
            reporting: name("reporting")?,
            audit: name("audit")?,
        })
    }

    /// The name of one role.
    #[must_use]
    pub fn get(&self, role: AppRole) -> &Ident {
        match role {
            AppRole::AppReadonly => &self.app_readonly,
            AppRole::AppRw => &self.app_rw,
            AppRole::AdminRw => &self.admin_rw,
            AppRole::Reporting => &self.reporting,
            AppRole::Audit => &self.audit,
        }
    }

    fn all(&self) -> [&Ident; 5] {
        [
            &self.app_readonly,
            &self.app_rw,
            &self.admin_rw,
            &self.reporting,
            &self.audit,
        ]
    }
}

/// A table holding tenant rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTable {
    table: Ident,
    tenant_column: Ident,
    index_columns: Vec<Ident>,
    index_name: Ident,
}

impl TenantTable {
    /// A table whose tenant column is `tenant_id` (type `uuid`).
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name, or one too long to derive the index name from.
    pub fn new(table: &str) -> Result<Self, IdentError> {
        let table = Ident::new(table)?;
        let index_name = table.with_suffix("_tenant_idx")?;
        Ok(Self {
            table,
            tenant_column: Ident::new("tenant_id")?,
            index_columns: Vec::new(),
            index_name,
        })
    }

    /// Uses another column (type `uuid`) as the tenant column.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn tenant_column(mut self, column: &str) -> Result<Self, IdentError> {
        self.tenant_column = Ident::new(column)?;
        Ok(self)
    }

    /// Extends the tenant index with further columns, so that the common lookups of this
    /// table (`(tenant_id, id)`, `(tenant_id, created_at)`) are one index scan.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn index_with<'a>(
        mut self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, IdentError> {
        for c in columns {
            self.index_columns.push(Ident::new(c)?);
        }
        Ok(self)
    }

    /// The table's name.
    #[must_use]
    pub fn name(&self) -> &Ident {
        &self.table
    }
}

/// A migration that puts tables under tenant isolation.
///
/// ```
/// use nova_tenancy::{AppRoles, RlsMigration, TenantTable};
///
/// let sql = RlsMigration::new(AppRoles::standard())
///     .table(TenantTable::new("tickets")?.index_with(["id"])?)
///     .up();
/// assert!(sql.contains(r#"ALTER TABLE "public"."tickets" FORCE ROW LEVEL SECURITY"#));
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RlsMigration {
    roles: AppRoles,
    schema: Ident,
    tables: Vec<TenantTable>,
    bypass: Vec<AppRole>,
    owner: Option<Ident>,
}

impl RlsMigration {
    /// A migration for the `public` schema with `admin_rw` as the only bypass role.
    #[must_use]
    pub fn new(roles: AppRoles) -> Self {
        Self {
            roles,
            schema: Ident::new("public").unwrap_or_else(|_| unreachable!("valid identifier")),
            tables: Vec::new(),
            bypass: vec![AppRole::AdminRw],
            owner: None,
        }
    }

    /// Has `owner` own the schema and every table (see "Who owns the schema" above):
    /// [`RlsMigration::roles_sql`] creates it `NOLOGIN NOSUPERUSER NOBYPASSRLS` when
    /// missing (refusing one that is a superuser or has `BYPASSRLS`) and creates the schema
    /// under it; [`RlsMigration::tables_sql`] hands it each table.
    ///
    /// ```
    /// use nova_tenancy::{AppRoles, Ident, RlsMigration, TenantTable};
    /// let sql = RlsMigration::new(AppRoles::standard())
    ///     .schema(Ident::new("helpdesk")?)
    ///     .owner(Ident::new("helpdesk_owner")?)
    ///     .table(TenantTable::new("tickets")?)
    ///     .up();
    /// assert!(sql.contains(r#"CREATE SCHEMA IF NOT EXISTS "helpdesk" AUTHORIZATION "helpdesk_owner""#));
    /// assert!(sql.contains(r#"ALTER TABLE "helpdesk"."tickets" OWNER TO "helpdesk_owner""#));
    /// # Ok::<(), nova_tenancy::IdentError>(())
    /// ```
    #[must_use]
    pub fn owner(mut self, owner: Ident) -> Self {
        self.owner = Some(owner);
        self
    }

    /// DDL that makes `login` a login that row-level security confines, whatever it was
    /// before: created when missing, then set `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
    /// NOCREATEROLE NOREPLICATION` with `password`. With `member_of`, it is granted that
    /// application role and its default search path becomes the migration's schema, so
    /// the service's SQL names tables unqualified (a pool from
    /// [`crate::TenantPool::checked`] pins that path in every transaction). Idempotent; run
    /// it after [`RlsMigration::roles_sql`].
    ///
    /// The password is spliced as an escape-string literal (`E'…'`, backslashes and quotes
    /// escaped): the returned text is a secret, to be executed, never logged; a server
    /// that logs DDL (`log_statement = 'ddl'`) writes it to its log.
    ///
    /// ```
    /// use nova_tenancy::{AppRole, AppRoles, Ident, RlsMigration};
    /// let m = RlsMigration::new(AppRoles::standard()).schema(Ident::new("helpdesk")?);
    /// let sql = m.login_sql(&Ident::new("helpdesk_svc")?, r"it's a\secret", Some(AppRole::AppRw));
    /// assert!(sql.contains(r"PASSWORD E'it\'s a\\secret'"));
    /// assert!(sql.contains(r#"ALTER ROLE "helpdesk_svc" SET search_path = "helpdesk""#));
    /// # Ok::<(), nova_tenancy::IdentError>(())
    /// ```
    #[must_use]
    pub fn login_sql(&self, login: &Ident, password: &str, member_of: Option<AppRole>) -> String {
        let lit = login.literal();
        // An escape string: its meaning does not depend on `standard_conforming_strings`.
        let password = password.replace('\\', "\\\\").replace('\'', "\\'");
        let mut sql = format!(
            "DO $nova$ BEGIN\n  \
             IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN\n    \
             CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS;\n  \
             END IF;\nEND $nova$;\n\
             ALTER ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION \
             PASSWORD E'{password}';\n"
        );
        if let Some(role) = member_of {
            let _ = writeln!(
                sql,
                "GRANT {} TO {login};\nALTER ROLE {login} SET search_path = {};",
                self.roles.get(role),
                self.schema
            );
        }
        sql
    }

    /// Targets another schema (for example a tenant's own, in schema-per-tenant mode).
    #[must_use]
    pub fn schema(mut self, schema: Ident) -> Self {
        self.schema = schema;
        self
    }

    /// Adds a tenant table.
    #[must_use]
    pub fn table(mut self, table: TenantTable) -> Self {
        self.tables.push(table);
        self
    }

    /// Replaces the set of roles that may bypass tenant filtering (possibly with none).
    /// `app_readonly` and `app_rw` serve user requests and are never accepted here.
    #[must_use]
    pub fn bypass_roles(mut self, roles: impl IntoIterator<Item = AppRole>) -> Self {
        self.bypass.clear();
        for role in roles {
            if !matches!(role, AppRole::AppReadonly | AppRole::AppRw)
                && !self.bypass.contains(&role)
            {
                self.bypass.push(role);
            }
        }
        self
    }

    /// The roles this migration creates.
    #[must_use]
    pub fn roles(&self) -> &AppRoles {
        &self.roles
    }

    /// DDL that creates the application roles if missing, and refuses to continue if an
    /// existing one is a superuser or has `BYPASSRLS` (those attributes defeat every
    /// policy below). Idempotent.
    #[must_use]
    pub fn roles_sql(&self) -> String {
        // A plain role, created when missing; an existing one that skips row-level
        // security stops the migration.
        let plain_role = |sql: &mut String, role: &Ident| {
            let lit = role.literal();
            let _ = writeln!(
                sql,
                "DO $nova$ BEGIN\n  \
                 IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN\n    \
                 CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;\n  \
                 ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit} AND (rolsuper OR rolbypassrls)) THEN\n    \
                 RAISE EXCEPTION 'nova: role % is a superuser or has BYPASSRLS; row-level security cannot protect it', {lit};\n  \
                 END IF;\nEND $nova$;"
            );
        };
        let mut sql = String::new();
        for role in self.roles.all() {
            plain_role(&mut sql, role);
        }
        if let Some(owner) = &self.owner {
            plain_role(&mut sql, owner);
            let _ = writeln!(
                sql,
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {owner};",
                self.schema
            );
        }
        sql
    }

    /// DDL for the schema grants and every table: RLS enabled and forced, the policies,
    /// the index and the grants. Idempotent (policies are dropped and re-created).
    #[must_use]
    pub fn tables_sql(&self) -> String {
        let mut sql = String::new();
        let s = &self.schema;
        let r = &self.roles;
        let all_roles = r.all().map(ToString::to_string).join(", ");
        let _ = writeln!(sql, "GRANT USAGE ON SCHEMA {s} TO {all_roles};");
        let _ = writeln!(
            sql,
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {}, {};",
            r.app_rw, r.admin_rw
        );
        // The database's name is only known on the server; `%I` quotes it there. The role
        // names are `Ident`s (`[a-z0-9_]`, double-quoted): no `%` for `format` to read.
        let _ = writeln!(
            sql,
            "DO $nova$ BEGIN\n  \
             EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, {all_roles}', current_database());\n\
             END $nova$;"
        );
        for t in &self.tables {
            self.table_sql(&mut sql, t);
        }
        sql
    }

    fn table_sql(&self, sql: &mut String, t: &TenantTable) {
        let qualified = format!("{}.{}", self.schema, t.table);
        let col = &t.tenant_column;
        let tenant_match =
            format!("{col} = NULLIF(current_setting('nova.tenant_id', true), '')::uuid");
        let bypass_active = "current_setting('nova.bypass_reason', true) <> ''";
        let bypass_roles: Vec<String> = self
            .bypass
            .iter()
            .map(|role| self.roles.get(*role).to_string())
            .collect();
        let guarded: Vec<String> = [
            AppRole::AppReadonly,
            AppRole::AppRw,
            AppRole::AdminRw,
            AppRole::Reporting,
            AppRole::Audit,
        ]
        .into_iter()
        .filter(|role| !self.bypass.contains(role))
        .map(|role| self.roles.get(role).to_string())
        .collect();
        let r = &self.roles;
        let mut index_cols = vec![col.to_string()];
        index_cols.extend(t.index_columns.iter().map(ToString::to_string));
        if let Some(owner) = &self.owner {
            let _ = writeln!(sql, "ALTER TABLE {qualified} OWNER TO {owner};");
        }
        let _ = write!(
            sql,
            "ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY;\n\
             ALTER TABLE {qualified} FORCE ROW LEVEL SECURITY;\n\
             DROP POLICY IF EXISTS nova_tenant_isolation ON {qualified};\n\
             CREATE POLICY nova_tenant_isolation ON {qualified} AS PERMISSIVE FOR ALL TO PUBLIC\n  \
             USING ({tenant_match})\n  WITH CHECK ({tenant_match});\n\
             DROP POLICY IF EXISTS nova_tenant_guard ON {qualified};\n\
             CREATE POLICY nova_tenant_guard ON {qualified} AS RESTRICTIVE FOR ALL TO {guarded}\n  \
             USING ({tenant_match})\n  WITH CHECK ({tenant_match});\n\
             DROP POLICY IF EXISTS nova_bypass ON {qualified};\n",
            guarded = guarded.join(", "),
        );
        if !bypass_roles.is_empty() {
            let _ = write!(
                sql,
                "CREATE POLICY nova_bypass ON {qualified} AS PERMISSIVE FOR ALL TO {}\n  \
                 USING ({bypass_active})\n  WITH CHECK ({bypass_active});\n",
                bypass_roles.join(", ")
            );
        }
        let _ = write!(
            sql,
            "CREATE INDEX IF NOT EXISTS {} ON {qualified} ({});\n\
             REVOKE ALL ON {qualified} FROM PUBLIC;\n\
             GRANT SELECT ON {qualified} TO {}, {};\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {}, {};\n",
            t.index_name,
            index_cols.join(", "),
            r.app_readonly,
            r.reporting,
            r.app_rw,
            r.admin_rw,
        );
    }

    /// An inspection of what this migration protects, as its application roles reach it:
    /// run it after the migration (the tests and the quickstart do) to find objects and
    /// grants that defeat row-level security.
    ///
    /// ```no_run
    /// # async fn demo(conn: &mut sqlx::PgConnection) -> Result<(), nova_tenancy::Error> {
    /// use nova_tenancy::{AppRoles, RlsMigration, TenantTable};
    /// let migration = RlsMigration::new(AppRoles::standard()).table(TenantTable::new("tickets")?);
    /// let report = migration.inspection().run(conn).await?;
    /// assert!(report.is_clean(), "{report}");
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn inspection(&self) -> crate::inspect::Inspection {
        let mut inspection = crate::inspect::Inspection::roles(self.roles.all());
        for t in &self.tables {
            inspection = inspection.table(&self.schema, &t.table);
        }
        inspection
    }

    /// The whole migration: roles, then tables.
    #[must_use]
    pub fn up(&self) -> String {
        let mut sql = self.roles_sql();
        sql.push_str(&self.tables_sql());
        sql
    }

    /// Reverses [`RlsMigration::tables_sql`]: drops the policies and revokes the grants.
    /// Row-level security stays enabled, so the tables fail closed (no rows for anyone but
    /// the owner... who is also filtered under `FORCE`) until new policies exist. Roles are
    /// left in place because other databases in the cluster may use them.
    #[must_use]
    pub fn down(&self) -> String {
        let mut sql = String::new();
        let all_roles = self.roles.all().map(ToString::to_string).join(", ");
        for t in &self.tables {
            let q = format!("{}.{}", self.schema, t.table);
            let _ = write!(
                sql,
                "DROP POLICY IF EXISTS nova_bypass ON {q};\n\
                 DROP POLICY IF EXISTS nova_tenant_guard ON {q};\n\
                 DROP POLICY IF EXISTS nova_tenant_isolation ON {q};\n\
                 REVOKE ALL ON {q} FROM {all_roles};\n"
            );
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration() -> RlsMigration {
        RlsMigration::new(AppRoles::standard()).table(
            TenantTable::new("tickets")
                .unwrap()
                .index_with(["id"])
                .unwrap(),
        )
    }

    #[test]
    fn enables_and_forces_rls_and_indexes_the_tenant_column_first() {
        let sql = migration().up();
        assert!(sql.contains(r#"ALTER TABLE "public"."tickets" ENABLE ROW LEVEL SECURITY;"#));
        assert!(sql.contains(r#"ALTER TABLE "public"."tickets" FORCE ROW LEVEL SECURITY;"#));
        assert!(sql.contains(r#"ON "public"."tickets" ("tenant_id", "id")"#));
    }

    #[test]
    fn policy_fails_closed_on_an_unset_or_empty_tenant() {
        let sql = migration().up();
        assert!(sql.contains("NULLIF(current_setting('nova.tenant_id', true), '')::uuid"));
        assert!(sql.contains("AS RESTRICTIVE"));
    }

    #[test]
    fn truncate_is_never_granted_and_public_is_revoked() {
        let sql = migration().up();
        assert!(!sql.to_uppercase().contains("TRUNCATE"));
        assert!(sql.contains(r#"REVOKE ALL ON "public"."tickets" FROM PUBLIC;"#));
    }

    #[test]
    fn temporary_is_revoked_from_public_and_every_app_role() {
        let sql = migration().tables_sql();
        assert!(sql.contains(
            r#"REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, "app_readonly", "app_rw", "admin_rw", "reporting", "audit"', current_database())"#
        ));
    }

    #[test]
    fn user_facing_roles_cannot_be_made_bypass_roles() {
        let sql = migration()
            .bypass_roles([AppRole::AppRw, AppRole::AppReadonly])
            .up();
        assert!(!sql.contains("CREATE POLICY nova_bypass"));
        assert!(sql.contains(r#"AS RESTRICTIVE FOR ALL TO "app_readonly", "app_rw", "admin_rw", "reporting", "audit""#));
    }

    #[test]
    fn role_ddl_refuses_superuser_or_bypassrls_roles() {
        let sql = migration().roles_sql();
        assert!(sql.contains("rolsuper OR rolbypassrls"));
        assert!(sql.contains("NOBYPASSRLS"));
        assert_eq!(sql.matches("CREATE ROLE").count(), 5);
    }

    #[test]
    fn names_are_validated_before_any_sql_exists() {
        assert!(TenantTable::new("tickets\"; DROP TABLE x; --").is_err());
        assert!(
            TenantTable::new("t")
                .unwrap()
                .tenant_column("tenant id")
                .is_err()
        );
        assert!(AppRoles::prefixed("x; ").is_err());
        assert!(
            TenantTable::new(&"a".repeat(60)).is_err(),
            "index name would exceed 63 bytes"
        );
    }
}

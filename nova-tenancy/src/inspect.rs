//! Schema inspection: every way a live database defeats row-level security for the tables
//! Nova protects, found by reading the catalogue.
//!
//! Row-level security is only as strong as the objects around the tables it protects. A
//! view evaluated with its owner's rights, a `SECURITY DEFINER` function owned by a
//! superuser, a permissive `true` policy, a `TRUNCATE` grant or a login that can
//! `SET ROLE` to a `BYPASSRLS` role each returns (or destroys) every tenant's rows inside a
//! perfectly scoped tenant transaction. [`Inspection::run`] lists them as [`Finding`]s;
//! [`crate::TenantPool::checked`] runs it for its login and refuses a pool that would leak,
//! and [`crate::RlsMigration::inspection`] checks what a migration set up.
//!
//! The protected tables are those a subject can reach (any table or column privilege,
//! ownership, or a view over them it holds a privilege on) that carry Nova's
//! `nova_tenant_isolation` policy, are partitions or inheritance children of one, or have
//! a `tenant_id` column; plus any named with [`Inspection::table`]. So a table whose
//! policy was dropped, or never made, is still checked. The *subjects* are the roles whose reach matters: the connection's login, or
//! the application roles of a migration. This module only reads; it must never report a
//! database as clean when a check could not run.

use std::fmt;

use sqlx::{Connection, PgConnection, Row};

use crate::error::Error;
use crate::ident::Ident;

/// One way the database defeats row-level security. Names are schema-qualified and quoted
/// as PostgreSQL prints them; no row data is ever included.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A table named for inspection does not exist.
    MissingTable {
        /// The table.
        table: String,
    },
    /// A role named for inspection does not exist (nothing about it could be checked).
    MissingRole {
        /// The role.
        role: String,
    },
    /// A protected table without `ENABLE ROW LEVEL SECURITY`: no policy applies at all.
    RlsNotEnabled {
        /// The table.
        table: String,
    },
    /// A protected table without `FORCE ROW LEVEL SECURITY`: its owner sees every row.
    RlsNotForced {
        /// The table.
        table: String,
    },
    /// A table without Nova's `nova_tenant_isolation` policy that should have one: named
    /// for inspection, a partition or inheritance child of a protected table (queried
    /// directly, only its own policies apply), or a table with a `tenant_id` column that a
    /// subject can reach.
    NoTenantPolicy {
        /// The table.
        table: String,
    },
    /// A protected table owned by a superuser or `BYPASSRLS` role: `FORCE` does not hold
    /// for such an owner, and every view or function it creates over the table bypasses
    /// row-level security.
    OwnedByBypassRole {
        /// The table.
        table: String,
        /// Its owner.
        owner: String,
    },
    /// A view over a protected table (possibly through other views) that runs with its
    /// owner's rights (no `security_invoker`), or a materialized view, which stores the
    /// rows its refresher could see. A subject holds some privilege on it (reading or
    /// writing through it, or on some of its columns).
    OwnerRightsView {
        /// The view.
        view: String,
        /// The protected table underneath.
        table: String,
    },
    /// A `SECURITY DEFINER` function a subject can execute, or a trigger on a protected
    /// table runs, owned by a superuser or `BYPASSRLS` role: inside it, row-level security
    /// does not apply. Every such function is reported, whatever its body names: dynamic
    /// SQL (`EXECUTE`) can read any table, so reading the body could only miss some.
    /// Functions of extensions are left out.
    BypassingFunction {
        /// The function's signature.
        function: String,
        /// Its owner.
        owner: String,
    },
    /// A permissive policy whose condition never reads the row (`true`, `1 = 1`, a test of
    /// the role or a setting): it admits every tenant's rows to those it admits. Nova's
    /// own `nova_bypass` policy, exactly as the migration writes it, is not reported.
    PermissiveTruePolicy {
        /// The table.
        table: String,
        /// The policy.
        policy: String,
    },
    /// A privilege that row-level security does not filter: `TRUNCATE` empties every
    /// tenant's rows, `REFERENCES` (on the table or any column) lets a foreign key probe
    /// for other tenants' keys, and `TRIGGER` runs a subject's code on every tenant's
    /// writes.
    UnfilteredPrivilege {
        /// The table.
        table: String,
        /// The role holding it.
        role: String,
        /// `TRUNCATE`, `REFERENCES` or `TRIGGER`.
        privilege: String,
    },
    /// A subject owns a protected table (or can become its owner), and an owner can turn
    /// row-level security off or rewrite the policies.
    OwnsProtectedTable {
        /// The table.
        table: String,
        /// The subject.
        role: String,
    },
    /// A subject may create temporary tables, which can shadow a tenant table for the
    /// rest of a pooled session.
    TemporaryPrivilege {
        /// The subject.
        role: String,
    },
    /// A subject is, or through membership can become, a superuser or `BYPASSRLS` role,
    /// which row-level security does not filter even under `FORCE`, or (before
    /// PostgreSQL 16) a `CREATEROLE` role, which can grant itself any such role.
    ReachesBypassRole {
        /// The subject.
        role: String,
        /// The superuser or `BYPASSRLS` role it reaches (possibly itself).
        bypass_role: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTable { table } => write!(f, "table {table} does not exist"),
            Self::MissingRole { role } => write!(f, "role {role} does not exist"),
            Self::OwnedByBypassRole { table, owner } => write!(
                f,
                "table {table} is owned by {owner}, a superuser or BYPASSRLS role"
            ),
            Self::RlsNotEnabled { table } => {
                write!(f, "table {table} does not have row-level security enabled")
            }
            Self::RlsNotForced { table } => write!(
                f,
                "table {table} does not force row-level security on its owner"
            ),
            Self::NoTenantPolicy { table } => write!(
                f,
                "table {table} should be under tenant isolation but has no nova_tenant_isolation policy"
            ),
            Self::OwnerRightsView { view, table } => write!(
                f,
                "view {view} reads {table} with its owner's rights (no security_invoker, or materialized)"
            ),
            Self::BypassingFunction { function, owner } => write!(
                f,
                "SECURITY DEFINER function {function} is owned by {owner}, which bypasses row-level security"
            ),
            Self::PermissiveTruePolicy { table, policy } => write!(
                f,
                "policy {policy} on {table} is permissive and never reads the row"
            ),
            Self::UnfilteredPrivilege {
                table,
                role,
                privilege,
            } => write!(
                f,
                "role {role} holds {privilege} on {table}, which row-level security does not filter"
            ),
            Self::OwnsProtectedTable { table, role } => {
                write!(f, "role {role} owns (or can become the owner of) {table}")
            }
            Self::TemporaryPrivilege { role } => write!(
                f,
                "role {role} may create temporary tables, which can shadow tenant tables"
            ),
            Self::ReachesBypassRole { role, bypass_role } if role == bypass_role => write!(
                f,
                "role {role} is a superuser or has BYPASSRLS or CREATEROLE, which row-level security cannot hold"
            ),
            Self::ReachesBypassRole { role, bypass_role } => write!(
                f,
                "role {role} can become {bypass_role}, a superuser, BYPASSRLS or CREATEROLE role"
            ),
        }
    }
}

/// What an [`Inspection`] found, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    findings: Vec<Finding>,
    tables: usize,
}

impl Report {
    /// Whether nothing defeats row-level security.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Every finding.
    #[must_use]
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// How many protected tables were inspected.
    #[must_use]
    pub fn tables_inspected(&self) -> usize {
        self.tables
    }

    /// The first superuser or `BYPASSRLS` role a subject reaches, if any.
    #[must_use]
    pub fn bypass_role(&self) -> Option<&str> {
        self.findings.iter().find_map(|f| match f {
            Finding::ReachesBypassRole { bypass_role, .. } => Some(bypass_role.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.findings.as_slice() {
            [] => write!(
                f,
                "{} protected tables, nothing defeats row-level security",
                self.tables
            ),
            [first] => write!(f, "{first}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

/// What to inspect: whose reach (subjects) over which tables.
///
/// ```no_run
/// # async fn demo(conn: &mut sqlx::PgConnection) -> Result<(), nova_tenancy::Error> {
/// use nova_tenancy::inspect::Inspection;
/// let report = Inspection::login().run(conn).await?;
/// for finding in report.findings() {
///     eprintln!("row-level security is defeated: {finding}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// `None`: the connection's login (`current_user`).
    subjects: Option<Vec<String>>,
    /// `schema.table`, quoted as `format('%I.%I')` prints it.
    tables: Vec<String>,
}

impl Inspection {
    /// Inspects what the connection's login (`session_user`: a `SET ROLE` left on the
    /// connection does not change who is inspected) can reach.
    #[must_use]
    pub fn login() -> Self {
        Self::default()
    }

    /// Inspects what these roles can reach (for example a migration's application roles).
    #[must_use]
    pub fn roles<'a>(roles: impl IntoIterator<Item = &'a Ident>) -> Self {
        Self {
            subjects: Some(roles.into_iter().map(|r| r.as_str().to_owned()).collect()),
            tables: Vec::new(),
        }
    }

    /// Also inspects this table, whether or not it carries Nova's policy.
    #[must_use]
    pub fn table(mut self, schema: &Ident, table: &Ident) -> Self {
        self.tables
            .push(format!("{}.{}", schema.as_str(), table.as_str()));
        self
    }

    /// Runs every check in one read-only transaction (unnamed statements, so it also runs
    /// behind a transaction-pooling PgBouncer). The transaction is sqlx's: if this future is
    /// dropped half-way, close `conn` rather than return it to a pool.
    /// [`crate::TenantPool::check`] runs the same checks in a Nova transaction instead.
    ///
    /// # Errors
    /// [`Error::Database`] when a check cannot run; never a partial report.
    pub async fn run(&self, conn: &mut PgConnection) -> Result<Report, Error> {
        let mut tx = conn.begin_with("BEGIN READ ONLY").await?;
        let report = self.run_in(&mut tx).await?;
        tx.rollback().await?;
        Ok(report)
    }

    /// Runs every check on a connection already inside a transaction (one statement, so
    /// it also runs behind a transaction-pooling PgBouncer).
    pub(crate) async fn run_in(&self, tx: &mut PgConnection) -> Result<Report, Error> {
        let rows = sqlx::query(INSPECTION_SQL)
            .persistent(false)
            .bind(self.subjects.as_deref())
            .bind(&self.tables)
            .bind(NOVA_BYPASS_CONDITION)
            .fetch_all(&mut *tx)
            .await?;
        let mut report = Report::default();
        for row in rows {
            let kind: String = row.try_get(0)?;
            let a: String = row.try_get(1)?;
            let b: Option<String> = row.try_get(2)?;
            let b = b.unwrap_or_default();
            let finding = match kind.as_str() {
                "tables" => {
                    report.tables = a.parse().unwrap_or(0);
                    continue;
                }
                "missing" => Finding::MissingTable { table: a },
                "missing_role" => Finding::MissingRole { role: a },
                "owned_by_bypass" => Finding::OwnedByBypassRole { table: a, owner: b },
                "not_enabled" => Finding::RlsNotEnabled { table: a },
                "not_forced" => Finding::RlsNotForced { table: a },
                "no_policy" => Finding::NoTenantPolicy { table: a },
                "view" => Finding::OwnerRightsView { view: a, table: b },
                "function" => Finding::BypassingFunction {
                    function: a,
                    owner: b,
                },
                "true_policy" => Finding::PermissiveTruePolicy {
                    table: a,
                    policy: b,
                },
                "owner" => Finding::OwnsProtectedTable { table: a, role: b },
                "temporary" => Finding::TemporaryPrivilege { role: a },
                "bypass" => Finding::ReachesBypassRole {
                    role: a,
                    bypass_role: b,
                },
                privilege => Finding::UnfilteredPrivilege {
                    table: a,
                    role: b,
                    privilege: privilege.to_owned(),
                },
            };
            report.findings.push(finding);
        }
        Ok(report)
    }
}

/// Inspects what the connection's login reaches, inside a transaction the caller holds;
/// used by [`crate::TenantPool::checked`].
pub(crate) async fn inspect_login(tx: &mut PgConnection) -> Result<Report, Error> {
    Inspection::login().run_in(tx).await
}

/// One statement, so the report is one consistent snapshot of the catalogue.
/// `$1`: the subjects (`NULL` for the session's login); `$2`: tables named for inspection.
/// Rows: (kind, object, detail), ordered for a stable report.
const INSPECTION_SQL: &str = r"
WITH RECURSIVE
subject_names AS (
    SELECT DISTINCT n AS name
    FROM unnest(coalesce($1::text[], ARRAY[session_user::text])) AS n
),
subjects AS (
    SELECT r.oid, r.rolname::text AS name
    FROM pg_catalog.pg_roles r JOIN subject_names s ON s.name = r.rolname
),
named AS (
    SELECT t.name, to_regclass(t.name) AS oid FROM unnest($2::text[]) AS t(name)
),
with_policy AS (
    SELECT DISTINCT p.polrelid AS oid FROM pg_catalog.pg_policy p
    WHERE p.polname = 'nova_tenant_isolation'
),
-- partitions and inheritance children of tables under Nova's policy: queried directly,
-- only their own policies apply
children (oid) AS (
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN with_policy w ON w.oid = i.inhparent
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN children c ON c.oid = i.inhparent
),
-- whatever a subject can touch: any table or column privilege, or the owner's role
reachable AS (
    SELECT c.oid
    FROM pg_catalog.pg_class c
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND EXISTS (SELECT 1 FROM subjects s
                  WHERE has_table_privilege(s.oid, c.oid,
                          'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                     OR has_any_column_privilege(s.oid, c.oid,
                          'SELECT, INSERT, UPDATE, REFERENCES')
                     OR pg_has_role(s.oid, c.relowner, 'MEMBER'))
),
-- views and materialized views over a relation, through any chain of views
over (view_oid, base_oid) AS (
    SELECT DISTINCT r.ev_class, d.refobjid
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND r.ev_class <> d.refobjid
    UNION
    SELECT r.ev_class, o.base_oid
    FROM over o
    JOIN pg_catalog.pg_depend d ON d.refobjid = o.view_oid
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND r.ev_class <> d.refobjid
),
tenant_column AS (
    SELECT DISTINCT a.attrelid AS oid FROM pg_catalog.pg_attribute a
    WHERE a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped
),
protected AS (
    SELECT c.oid,
           format('%I.%I', n.nspname, c.relname) AS name,
           c.relrowsecurity, c.relforcerowsecurity, c.relowner,
           c.oid IN (SELECT oid FROM with_policy) AS has_policy
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND (c.oid IN (SELECT oid FROM named)
           OR ((c.oid IN (SELECT oid FROM with_policy)
                OR c.oid IN (SELECT oid FROM children)
                -- a table with Nova's tenant column whose policy was dropped or never made
                OR c.oid IN (SELECT oid FROM tenant_column))
               AND (c.oid IN (SELECT oid FROM reachable)
                    OR EXISTS (SELECT 1 FROM over o JOIN reachable r ON r.oid = o.view_oid
                               WHERE o.base_oid = c.oid))))
),
bypassing AS (
    SELECT r.oid, r.rolname::text AS name
    FROM pg_catalog.pg_roles r
    WHERE r.rolsuper OR r.rolbypassrls
       -- before PostgreSQL 16, CREATEROLE can grant itself any role that is not a superuser
       OR (r.rolcreaterole AND current_setting('server_version_num')::int < 160000)
),
findings (kind, a, b) AS (
    SELECT 'tables', count(*)::text, NULL FROM protected
    UNION ALL
    SELECT 'missing_role', n.name, NULL FROM subject_names n
    WHERE NOT EXISTS (SELECT 1 FROM subjects s WHERE s.name = n.name)
    UNION ALL
    SELECT 'missing', n.name, NULL FROM named n WHERE n.oid IS NULL
    UNION ALL
    SELECT 'not_enabled', p.name, NULL FROM protected p WHERE NOT p.relrowsecurity
    UNION ALL
    SELECT 'not_forced', p.name, NULL FROM protected p WHERE NOT p.relforcerowsecurity
    UNION ALL
    SELECT 'no_policy', p.name, NULL FROM protected p WHERE NOT p.has_policy
    UNION ALL
    SELECT 'owned_by_bypass', p.name, b.name
    FROM protected p JOIN bypassing b ON b.oid = p.relowner
    UNION ALL
    SELECT DISTINCT 'view', format('%I.%I', n.nspname, v.relname), p.name
    FROM over o
    JOIN protected p ON p.oid = o.base_oid
    JOIN pg_catalog.pg_class v ON v.oid = o.view_oid
    JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
    WHERE (v.relkind = 'm'
           OR NOT EXISTS (SELECT 1 FROM unnest(coalesce(v.reloptions, '{}')) AS opt
                          WHERE lower(opt) IN ('security_invoker=true', 'security_invoker=on',
                                               'security_invoker=1', 'security_invoker=yes')))
      AND v.oid IN (SELECT oid FROM reachable)
    UNION ALL
    SELECT 'function',
           format('%I.%I(%s)', n.nspname, f.proname, pg_get_function_identity_arguments(f.oid)),
           o.name
    FROM pg_catalog.pg_proc f
    JOIN bypassing o ON o.oid = f.proowner
    JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace
    WHERE f.prosecdef
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                      WHERE e.classid = 'pg_catalog.pg_proc'::regclass
                        AND e.objid = f.oid AND e.deptype = 'e')
      AND (EXISTS (SELECT 1 FROM subjects s WHERE has_function_privilege(s.oid, f.oid, 'EXECUTE'))
           -- a trigger runs its function whatever the writer's EXECUTE privilege
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t JOIN protected p ON p.oid = t.tgrelid
                      WHERE t.tgfoid = f.oid))
    UNION ALL
    -- a permissive policy whose conditions never read the row (`true`, `1 = 1`, a test of
    -- the role) admits every tenant's rows; Nova's own bypass policy is the one exception
    SELECT 'true_policy', p.name, pol.polname::text
    FROM pg_catalog.pg_policy pol
    JOIN protected p ON p.oid = pol.polrelid
    WHERE pol.polpermissive
      AND ((pol.polqual IS NOT NULL AND pol.polqual::text NOT LIKE '%{VAR %')
           OR (pol.polwithcheck IS NOT NULL AND pol.polwithcheck::text NOT LIKE '%{VAR %'))
      AND NOT (pol.polname = 'nova_bypass'
               AND pg_get_expr(pol.polqual, pol.polrelid) = $3
               AND pg_get_expr(pol.polwithcheck, pol.polrelid) = $3)
    UNION ALL
    SELECT 'owner', p.name, s.name
    FROM protected p, subjects s
    WHERE pg_has_role(s.oid, p.relowner, 'MEMBER')
    UNION ALL
    SELECT priv, p.name, s.name
    FROM protected p, subjects s, unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS priv
    WHERE (has_table_privilege(s.oid, p.oid, priv)
           OR (priv = 'REFERENCES' AND has_any_column_privilege(s.oid, p.oid, 'REFERENCES')))
      AND NOT pg_has_role(s.oid, p.relowner, 'MEMBER')
    UNION ALL
    SELECT 'temporary', s.name, NULL
    FROM subjects s
    WHERE has_database_privilege(s.oid, current_database(), 'TEMPORARY')
    UNION ALL
    SELECT 'bypass', s.name, b.name
    FROM subjects s, bypassing b
    WHERE pg_has_role(s.oid, b.oid, 'MEMBER')
)
SELECT kind, a, b FROM findings ORDER BY kind = 'tables' DESC, kind, a, b
";

/// How PostgreSQL prints the condition of the `nova_bypass` policy the migration writes.
const NOVA_BYPASS_CONDITION: &str =
    "(current_setting('nova.bypass_reason'::text, true) <> ''::text)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_the_first_finding_and_counts_the_rest() {
        let report = Report {
            findings: vec![
                Finding::RlsNotForced {
                    table: "public.items".into(),
                },
                Finding::TemporaryPrivilege { role: "app".into() },
            ],
            tables: 1,
        };
        assert!(!report.is_clean());
        assert_eq!(
            report.to_string(),
            "table public.items does not force row-level security on its owner (and 1 more)"
        );
        assert_eq!(report.bypass_role(), None);
    }

    #[test]
    fn a_login_that_is_itself_a_bypass_role_is_named() {
        let f = Finding::ReachesBypassRole {
            role: "svc".into(),
            bypass_role: "svc".into(),
        };
        assert!(
            f.to_string()
                .contains("svc is a superuser or has BYPASSRLS")
        );
    }
}

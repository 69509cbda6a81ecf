//! Data-subject rights over tenant-scoped PostgreSQL data: export (GDPR Art. 15 and 20),
//! erasure (Art. 17), storage limitation by retention rules (Art. 5(1)(e)) and a consent
//! ledger (Art. 7(1)). This module must never run outside a [`TenantTx`], never splice a
//! caller's string into SQL, and never print row contents.
//!
//! # How it works
//!
//! Every function takes the [`TenantTx`] of the request, so PostgreSQL row-level security
//! confines it to that context's tenant: the same subject UUID in another tenant is another
//! person's data, and is neither exported nor erased. Table and column names are [`Ident`]s,
//! validated once and emitted double-quoted; the subject and every other value travel as
//! bind parameters.
//!
//! - [`SubjectMap`] declares where a subject's data lives: which table, which `uuid` column
//!   names the subject, what erasure does there ([`ErasureAction`]) and which columns an
//!   export includes.
//! - [`export_subject`] returns one [`SubjectExport`] per subject, ready to serialise as a
//!   single JSON document; [`SubjectExport::map_column`] lets the caller decrypt columns it
//!   stored encrypted before handing the document over.
//! - [`erase_subject`] deletes, anonymises or keeps (with a reason) each declared entry and
//!   returns an [`ErasureReport`].
//! - [`RetentionRule`]s, loadable from a `[privacy]` section of the application's TOML
//!   ([`PrivacyConfig`]), delete or anonymise rows older than a time limit ([`run_retention`]).
//! - [`ConsentLedger`] is an append-only table of consent decisions per subject and purpose,
//!   read fail-closed: no record means no consent.
//!
//! # Atomicity
//!
//! All statements of one call run in the caller's transaction, inside a savepoint: if any
//! entry fails (a constraint, a missing column, a lost connection), the savepoint is rolled
//! back and nothing the call did remains, even if the caller goes on to commit. On success
//! nothing is durable until the caller commits.
//!
//! ```no_run
//! use nova_tenancy::privacy::{self, ErasureAction, SubjectMap, SubjectTable};
//!
//! # async fn demo(pool: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext,
//! #               subject: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
//! let map = SubjectMap::new()
//!     .table(SubjectTable::new("users", "id")?)
//!     .table(
//!         SubjectTable::new("tickets", "requester_id")?
//!             .on_erase(ErasureAction::anonymise(["requester_id", "requester_email"])?),
//!     )
//!     .table(
//!         SubjectTable::new("invoices", "customer_id")?
//!             .on_erase(ErasureAction::keep("tax law: 10 years")),
//!     );
//!
//! let mut tx = pool.begin(&ctx).await?;
//! let document = privacy::export_subject(&mut tx, &map, subject).await?.to_json();
//! let report = privacy::erase_subject(&mut tx, &map, subject).await?;
//! tx.commit().await?;
//! # let _ = (document, report); Ok(()) }
//! ```
//!
//! # Security notes
//!
//! - **Row contents are personal data.** [`SubjectExport`]'s `Debug` prints table keys and
//!   row counts only; the error variants name tables, never values. [`Error::Database`]
//!   wraps the server's message, which can quote a value: log it, do not return it.
//! - **Cascades.** A `DELETE` fires the tables' foreign-key actions; rows removed by
//!   `ON DELETE CASCADE` are not counted in the report. Entries run in the order declared:
//!   declare referencing tables before the tables they reference.
//! - **Consistency.** `TenantPool::begin` opens a `READ COMMITTED` transaction, so each
//!   table of an export is read as of its own statement.
//! - **Behind PgBouncer.** Every statement here is unnamed (`persistent(false)`) and runs
//!   inside the caller's transaction, so it works behind a transaction-pooling PgBouncer,
//!   whose server sessions do not keep a client's named statements. These calls are rare;
//!   an unnamed statement costs one round trip more than a cached one.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Error;
use crate::ident::{Ident, IdentError};
use crate::ids::TenantId;
use crate::rls_sql::TenantTable;
use crate::scoped::TenantTx;

/// Longest consent purpose, in bytes. Purposes are short machine names such as
/// `marketing.email`, not prose.
pub const PURPOSE_MAX_LEN: usize = 64;

/// Longest consent source (where the decision was captured, e.g. `web:signup-form-v3`), in
/// bytes.
pub const SOURCE_MAX_LEN: usize = 256;

/// Longest retention period a rule may name, in days (100 years). Bounds the value bound to
/// `make_interval`, whose `days` argument is a 32-bit integer.
pub const RETENTION_MAX_DAYS: u32 = 36_600;

/// Why a data-subject operation or its configuration was refused. Names tables, never
/// row contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// A table, schema or column name failed validation.
    #[error(transparent)]
    Ident(#[from] IdentError),
    /// A consent purpose is empty, too long or uses characters outside `[a-z0-9_.-]`.
    #[error("consent purpose must be 1 to {PURPOSE_MAX_LEN} characters of [a-z0-9_.-]")]
    InvalidPurpose,
    /// A consent source is empty, too long or contains control characters.
    #[error("consent source must be 1 to {SOURCE_MAX_LEN} bytes without control characters")]
    InvalidSource,
    /// An anonymise action or an export allow-list names no column.
    #[error("{table}: {what} names no column")]
    NoColumns {
        /// The entry's key (`schema.table.column` or `table.column`).
        table: String,
        /// Which list is empty.
        what: &'static str,
    },
    /// An [`ErasureAction::Keep`] has an empty reason; the report must say why data stayed.
    #[error("{table}: data kept on erasure needs a reason")]
    KeepWithoutReason {
        /// The entry's key.
        table: String,
    },
    /// A retention period is zero or longer than [`RETENTION_MAX_DAYS`].
    #[error("retention rule {table}: keep_days must be 1 to {RETENTION_MAX_DAYS} (got {days})")]
    KeepDays {
        /// The rule's key.
        table: String,
        /// The period given.
        days: u32,
    },
    /// A retention rule from configuration names an invalid table, schema or column.
    #[error("retention rule for table {table:?}: {source}")]
    RuleIdent {
        /// The table as written.
        table: String,
        /// What failed.
        source: IdentError,
    },
    /// A retention rule lists `columns` but its action is `delete`.
    #[error("retention rule {table}: `columns` applies only to action = \"anonymise\"")]
    ColumnsWithDelete {
        /// The rule's key.
        table: String,
    },
    /// Two retention rules say different things about the same rows.
    #[error("retention rules {table}: {reason}")]
    ConflictingRules {
        /// The rules' key.
        table: String,
        /// What conflicts.
        reason: &'static str,
    },
    /// The server's JSON for a table's rows could not be decoded (for example a number
    /// beyond the range of an `f64`).
    #[error("{table}: exported rows could not be decoded as JSON objects")]
    ExportDecode {
        /// The entry's key.
        table: String,
    },
}

fn qualified(schema: Option<&Ident>, table: &Ident) -> String {
    match schema {
        Some(s) => format!("{s}.{table}"),
        None => table.to_string(),
    }
}

fn dotted(schema: Option<&Ident>, table: &Ident, column: &Ident) -> String {
    match schema {
        Some(s) => format!("{}.{}.{}", s.as_str(), table.as_str(), column.as_str()),
        None => format!("{}.{}", table.as_str(), column.as_str()),
    }
}

/// Validates names, dropping repeats (a repeated column in `SET` is a server error).
fn idents<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Ident>, IdentError> {
    let mut out: Vec<Ident> = Vec::new();
    for n in names {
        let ident = Ident::new(n)?;
        if !out.contains(&ident) {
            out.push(ident);
        }
    }
    Ok(out)
}

/// `"a" = NULL, "b" = NULL`, each column once.
fn null_assignments(columns: &[Ident]) -> String {
    let mut seen: Vec<&Ident> = Vec::new();
    for c in columns {
        if !seen.contains(&c) {
            seen.push(c);
        }
    }
    seen.iter()
        .map(|c| format!("{c} = NULL"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ends the savepoint that wraps one call: released on success, rolled back on failure, so
/// that a failure part-way leaves nothing behind even if the caller commits afterwards.
async fn end_savepoint<T>(
    savepoint: Transaction<'_, Postgres>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    match result {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // If even the rollback fails the connection is gone, and the server rolls back
            // the whole transaction; the first error is the one worth reporting.
            let _ = savepoint.rollback().await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Where a subject's data lives
// ---------------------------------------------------------------------------------------

/// What [`erase_subject`] does to a subject's rows in one table.
///
/// ```
/// use nova_tenancy::privacy::ErasureAction;
/// let a = ErasureAction::anonymise(["email", "display_name"])?;
/// assert!(matches!(a, ErasureAction::Anonymise(ref cols) if cols.len() == 2));
/// assert!(ErasureAction::anonymise(["email; DROP TABLE users"]).is_err());
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErasureAction {
    /// `DELETE` the rows (the default).
    #[default]
    Delete,
    /// `UPDATE .. SET` these columns to `NULL`; the rows stay. Naming the subject column
    /// itself unlinks the rows from the subject.
    Anonymise(Vec<Ident>),
    /// Change nothing, because a law requires keeping the data (GDPR Art. 17(3)); the rows
    /// are counted and the reason is reported.
    Keep {
        /// Why the data stays, for the report (for example `"tax law: 10 years"`).
        reason: String,
    },
}

impl ErasureAction {
    /// Anonymise these columns (set them to `NULL`).
    ///
    /// # Errors
    /// [`IdentError`] for an invalid column name.
    pub fn anonymise<'a>(columns: impl IntoIterator<Item = &'a str>) -> Result<Self, IdentError> {
        Ok(Self::Anonymise(idents(columns)?))
    }

    /// Keep the rows, for the reason given (reported; an empty reason is refused when the
    /// erasure runs).
    ///
    /// ```
    /// use nova_tenancy::privacy::ErasureAction;
    /// let keep = ErasureAction::keep("accounting records, HGB §257");
    /// assert!(matches!(keep, ErasureAction::Keep { .. }));
    /// ```
    #[must_use]
    pub fn keep(reason: impl Into<String>) -> Self {
        Self::Keep {
            reason: reason.into(),
        }
    }
}

/// One table in which a subject's data lives, found through one `uuid` column.
///
/// ```
/// use nova_tenancy::privacy::{ErasureAction, SubjectTable};
/// let t = SubjectTable::new("tickets", "requester_id")?
///     .schema("support")?
///     .export_columns(["id", "title", "created_at"])?
///     .on_erase(ErasureAction::anonymise(["requester_id"])?);
/// assert_eq!(t.key(), "support.tickets.requester_id");
/// assert!(SubjectTable::new("tickets", "Requester").is_err());
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTable {
    schema: Option<Ident>,
    table: Ident,
    column: Ident,
    erasure: ErasureAction,
    export_columns: Option<Vec<Ident>>,
}

impl SubjectTable {
    /// A table whose `subject_column` (type `uuid`) names the subject. Erasure deletes by
    /// default; an export includes every column.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn new(table: &str, subject_column: &str) -> Result<Self, IdentError> {
        Ok(Self {
            schema: None,
            table: Ident::new(table)?,
            column: Ident::new(subject_column)?,
            erasure: ErasureAction::Delete,
            export_columns: None,
        })
    }

    /// The table's name (without its schema).
    #[must_use]
    pub fn table_name(&self) -> &str {
        self.table.as_str()
    }

    /// The column that names the subject.
    #[must_use]
    pub fn subject_column(&self) -> &str {
        self.column.as_str()
    }

    /// Qualifies the table with a schema (otherwise the connection's `search_path` decides).
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn schema(mut self, schema: &str) -> Result<Self, IdentError> {
        self.schema = Some(Ident::new(schema)?);
        Ok(self)
    }

    /// What [`erase_subject`] does here.
    #[must_use]
    pub fn on_erase(mut self, action: ErasureAction) -> Self {
        self.erasure = action;
        self
    }

    /// Exports only these columns (an allow-list), for tables that hold internal data that
    /// is not the subject's, such as fraud scores or other people's notes.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn export_columns<'a>(
        mut self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, IdentError> {
        self.export_columns = Some(idents(columns)?);
        Ok(self)
    }

    /// The entry's key in exports and reports: `schema.table.column`, or `table.column`
    /// without a schema.
    #[must_use]
    pub fn key(&self) -> String {
        dotted(self.schema.as_ref(), &self.table, &self.column)
    }

    /// What erasure does here.
    #[must_use]
    pub fn erasure(&self) -> &ErasureAction {
        &self.erasure
    }

    fn check(&self) -> Result<(), PrivacyError> {
        if self.export_columns.as_ref().is_some_and(Vec::is_empty) {
            return Err(PrivacyError::NoColumns {
                table: self.key(),
                what: "the export allow-list",
            });
        }
        match &self.erasure {
            ErasureAction::Anonymise(cols) if cols.is_empty() => Err(PrivacyError::NoColumns {
                table: self.key(),
                what: "the anonymise action",
            }),
            ErasureAction::Keep { reason } if reason.trim().is_empty() => {
                Err(PrivacyError::KeepWithoutReason { table: self.key() })
            }
            _ => Ok(()),
        }
    }

    fn export_sql(&self) -> String {
        let columns = match &self.export_columns {
            None => "*".to_owned(),
            Some(cols) => cols
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        // Ordering by the row's canonical jsonb text makes the document deterministic
        // whatever the physical order (ctid changes with every update and VACUUM FULL).
        format!(
            "SELECT coalesce(json_agg(r ORDER BY to_jsonb(r)::text)::text, '[]') \
             FROM (SELECT {columns} FROM {} WHERE {} = $1) AS r",
            qualified(self.schema.as_ref(), &self.table),
            self.column,
        )
    }
}

/// Every place a subject's data lives. A table may appear more than once with different
/// subject columns (`tickets.requester_id` and `tickets.assignee_id`); declaring the same
/// table and column again replaces the earlier entry.
///
/// ```
/// use nova_tenancy::privacy::{SubjectMap, SubjectTable};
/// let map = SubjectMap::new()
///     .table(SubjectTable::new("users", "id")?)
///     .table(SubjectTable::new("comments", "author_id")?);
/// assert_eq!(map.entries().len(), 2);
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectMap {
    tables: Vec<SubjectTable>,
}

impl SubjectMap {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry. Entries are exported and erased in the order added.
    #[must_use]
    pub fn table(mut self, table: SubjectTable) -> Self {
        let key = table.key();
        if let Some(existing) = self.tables.iter_mut().find(|t| t.key() == key) {
            *existing = table;
        } else {
            self.tables.push(table);
        }
        self
    }

    /// The entries, in order.
    #[must_use]
    pub fn entries(&self) -> &[SubjectTable] {
        &self.tables
    }

    fn check(&self) -> Result<(), PrivacyError> {
        self.tables.iter().try_for_each(SubjectTable::check)
    }
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// Everything stored about one subject in one tenant, per [`SubjectMap`] entry.
///
/// `Debug` prints table keys and row counts, never row contents.
///
/// ```no_run
/// # async fn demo(tx: &mut nova_tenancy::TenantTx, map: &nova_tenancy::privacy::SubjectMap,
/// #               subject: uuid::Uuid) -> Result<(), nova_tenancy::Error> {
/// let export = nova_tenancy::privacy::export_subject(tx, map, subject).await?;
/// tracing::info!(export = ?export, "subject export prepared"); // keys and counts only
/// let body: String = export.to_json().to_string();
/// # let _ = body; Ok(()) }
/// ```
#[derive(Clone, PartialEq)]
pub struct SubjectExport {
    tenant: TenantId,
    subject: Uuid,
    exported_at: String,
    tables: BTreeMap<String, Vec<Map<String, Value>>>,
}

impl SubjectExport {
    /// The tenant the data was read from.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The subject.
    #[must_use]
    pub fn subject(&self) -> Uuid {
        self.subject
    }

    /// When the export was read: the transaction's start time in UTC, RFC 3339
    /// (`2025-01-31T12:00:00Z`).
    #[must_use]
    pub fn exported_at(&self) -> &str {
        &self.exported_at
    }

    /// The entry keys ([`SubjectTable::key`]), sorted. Every entry of the map is present,
    /// with no rows when the subject has none there.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The rows of one entry, in a deterministic order; empty for an unknown key.
    #[must_use]
    pub fn rows(&self, key: &str) -> &[Map<String, Value>] {
        self.tables.get(key).map_or(&[], Vec::as_slice)
    }

    /// Rows across all entries.
    #[must_use]
    pub fn row_count(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }

    /// The whole export as one JSON document:
    /// `{"tenant": .., "subject": .., "exported_at": .., "tables": {key: [row, ..], ..}}`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let tables: Map<String, Value> = self
            .tables
            .iter()
            .map(|(k, rows)| {
                let rows = rows.iter().cloned().map(Value::Object).collect();
                (k.clone(), Value::Array(rows))
            })
            .collect();
        serde_json::json!({
            "tenant": self.tenant.to_text().as_str(),
            "subject": self.subject.hyphenated().to_string(),
            "exported_at": self.exported_at,
            "tables": tables,
        })
    }

    /// Replaces the non-null values of `column` in the rows of `table_key` with what `f`
    /// returns, for example to decrypt a column stored encrypted. `f` receives the whole
    /// row (to read its primary key, say, for the encryption context) and the value.
    /// Returns how many values were replaced (0 for an unknown key or column).
    ///
    /// All or nothing: if `f` fails for any row, no row is changed.
    ///
    /// ```
    /// # fn demo(export: &mut nova_tenancy::privacy::SubjectExport) -> Result<(), String> {
    /// use serde_json::Value;
    /// let n = export.map_column("users.id", "email", |row, v| {
    ///     let _id = row.get("id"); // e.g. the associated data of an AEAD
    ///     match v {
    ///         Value::String(s) => Ok(Value::String(s.to_uppercase())),
    ///         _ => Err("email is not text".to_owned()),
    ///     }
    /// })?;
    /// # let _ = n; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The first error `f` returns.
    pub fn map_column<E>(
        &mut self,
        table_key: &str,
        column: &str,
        mut f: impl FnMut(&Map<String, Value>, &Value) -> Result<Value, E>,
    ) -> Result<usize, E> {
        let Some(rows) = self.tables.get_mut(table_key) else {
            return Ok(0);
        };
        let mut replaced = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if let Some(value) = row.get(column).filter(|v| !v.is_null()) {
                replaced.push((i, f(row, value)?));
            }
        }
        let n = replaced.len();
        for (i, value) in replaced {
            if let Some(row) = rows.get_mut(i) {
                row.insert(column.to_owned(), value);
            }
        }
        Ok(n)
    }
}

impl fmt::Debug for SubjectExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct RowCounts<'a>(&'a BTreeMap<String, Vec<Map<String, Value>>>);
        impl fmt::Debug for RowCounts<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, rows)| (k, rows.len())))
                    .finish()
            }
        }
        f.debug_struct("SubjectExport")
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("exported_at", &self.exported_at)
            .field("row_counts", &RowCounts(&self.tables))
            .finish()
    }
}

/// Reads every row the map declares for `subject` in the transaction's tenant (GDPR
/// Art. 15 access and Art. 20 portability). Changes nothing.
///
/// ```no_run
/// use nova_tenancy::privacy::{SubjectMap, SubjectTable, export_subject};
/// # async fn demo(pool: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext,
/// #               subject: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
/// let map = SubjectMap::new().table(SubjectTable::new("users", "id")?);
/// let mut tx = pool.begin(&ctx).await?;
/// let export = export_subject(&mut tx, &map, subject).await?;
/// tx.commit().await?;
/// assert!(export.rows("users.id").len() <= 1);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Privacy`] for an invalid map entry (checked before any SQL runs) or rows that
/// cannot be decoded; [`Error::Database`] when a statement fails (a missing table or
/// column, a subject column that is not `uuid`).
pub async fn export_subject(
    tx: &mut TenantTx,
    map: &SubjectMap,
    subject: Uuid,
) -> Result<SubjectExport, Error> {
    map.check()?;
    let exported_at: String = sqlx::query_scalar(
        r#"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#,
    )
    .persistent(false)
    .fetch_one(&mut **tx)
    .await?;
    let mut tables = BTreeMap::new();
    for entry in &map.tables {
        let json: String = sqlx::query_scalar(AssertSqlSafe(entry.export_sql()))
            .bind(subject)
            .persistent(false)
            .fetch_one(&mut **tx)
            .await?;
        let rows: Vec<Map<String, Value>> = serde_json::from_str(&json)
            .map_err(|_| PrivacyError::ExportDecode { table: entry.key() })?;
        tables.insert(entry.key(), rows);
    }
    Ok(SubjectExport {
        tenant: tx.tenant(),
        subject,
        exported_at,
        tables,
    })
}

// ---------------------------------------------------------------------------------------
// Erasure and retention reports
// ---------------------------------------------------------------------------------------

/// What happened to the rows of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActionTaken {
    /// The rows were deleted.
    Deleted,
    /// Columns of the rows were set to `NULL`.
    Anonymised,
    /// The rows were kept, for the reason reported.
    Kept,
}

/// One line of an [`ErasureReport`] or [`RetentionReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportEntry {
    /// The entry's key ([`SubjectTable::key`] or [`RetentionRule::key`]).
    pub key: String,
    /// What was done.
    pub action: ActionTaken,
    /// Rows deleted, anonymised or (for [`ActionTaken::Kept`]) found and kept.
    pub rows: u64,
    /// Why rows were kept, for [`ActionTaken::Kept`].
    pub reason: Option<String>,
}

fn changed(entries: &[ReportEntry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.action != ActionTaken::Kept)
        .map(|e| e.rows)
        .sum()
}

/// What [`erase_subject`] did, entry by entry. Holds no row contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReport {
    subject: Uuid,
    entries: Vec<ReportEntry>,
}

impl ErasureReport {
    /// The subject erased.
    #[must_use]
    pub fn subject(&self) -> Uuid {
        self.subject
    }

    /// One line per map entry, in the map's order.
    #[must_use]
    pub fn entries(&self) -> &[ReportEntry] {
        &self.entries
    }

    /// The line for one entry key.
    #[must_use]
    pub fn entry(&self, key: &str) -> Option<&ReportEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Rows deleted or anonymised, across all entries (kept rows are not counted; see
    /// [`ErasureReport::kept`]).
    #[must_use]
    pub fn total(&self) -> u64 {
        changed(&self.entries)
    }

    /// Rows kept for a legal reason, across all entries.
    #[must_use]
    pub fn kept(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.action == ActionTaken::Kept)
            .map(|e| e.rows)
            .sum()
    }
}

/// Erases `subject` in the transaction's tenant as each map entry declares (GDPR Art. 17):
/// `DELETE`, `UPDATE .. SET col = NULL`, or keep and count.
///
/// All or nothing: the entries run in a savepoint, and if any fails none of them leaves a
/// change behind. Nothing is durable until the caller commits.
///
/// ```no_run
/// use nova_tenancy::privacy::{ErasureAction, SubjectMap, SubjectTable, erase_subject};
/// # async fn demo(pool: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext,
/// #               subject: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
/// let map = SubjectMap::new()
///     .table(SubjectTable::new("comments", "author_id")?
///         .on_erase(ErasureAction::anonymise(["author_id", "signature"])?))
///     .table(SubjectTable::new("users", "id")?);
/// let mut tx = pool.begin(&ctx).await?;
/// let report = erase_subject(&mut tx, &map, subject).await?;
/// tx.commit().await?;
/// tracing::info!(?report, "subject erased");
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Privacy`] for an invalid map entry (an empty column list or keep reason,
/// checked before any SQL runs); [`Error::Database`] when a statement fails (for example
/// anonymising a `NOT NULL` column, or a foreign key that forbids the delete).
pub async fn erase_subject(
    tx: &mut TenantTx,
    map: &SubjectMap,
    subject: Uuid,
) -> Result<ErasureReport, Error> {
    map.check()?;
    let mut savepoint = (**tx).begin().await?;
    let result = erase_entries(&mut savepoint, map, subject).await;
    let entries = end_savepoint(savepoint, result).await?;
    Ok(ErasureReport { subject, entries })
}

async fn erase_entries(
    conn: &mut PgConnection,
    map: &SubjectMap,
    subject: Uuid,
) -> Result<Vec<ReportEntry>, Error> {
    let mut entries = Vec::with_capacity(map.tables.len());
    for t in &map.tables {
        let q = qualified(t.schema.as_ref(), &t.table);
        let col = &t.column;
        let (action, rows, reason) = match &t.erasure {
            ErasureAction::Delete => {
                let sql = format!("DELETE FROM {q} WHERE {col} = $1");
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(subject)
                    .persistent(false)
                    .execute(&mut *conn)
                    .await?;
                (ActionTaken::Deleted, done.rows_affected(), None)
            }
            ErasureAction::Anonymise(columns) => {
                let sql = format!(
                    "UPDATE {q} SET {} WHERE {col} = $1",
                    null_assignments(columns)
                );
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(subject)
                    .persistent(false)
                    .execute(&mut *conn)
                    .await?;
                (ActionTaken::Anonymised, done.rows_affected(), None)
            }
            ErasureAction::Keep { reason } => {
                let sql = format!("SELECT count(*) FROM {q} WHERE {col} = $1");
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(subject)
                    .persistent(false)
                    .fetch_one(&mut *conn)
                    .await?;
                (
                    ActionTaken::Kept,
                    u64::try_from(n).unwrap_or(0),
                    Some(reason.clone()),
                )
            }
        };
        entries.push(ReportEntry {
            key: t.key(),
            action,
            rows,
            reason,
        });
    }
    Ok(entries)
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum RetentionAction {
    Delete,
    Anonymise(Vec<Ident>),
}

/// Deletes or anonymises rows whose time column is older than `keep_days` (GDPR
/// Art. 5(1)(e), storage limitation).
///
/// Built in Rust or loaded from the application's TOML, where unknown keys and invalid
/// names are refused while parsing:
///
/// ```toml
/// [[privacy.retention]]
/// table = "sessions"
/// time_column = "created_at"
/// keep_days = 30
/// action = "delete"
///
/// [[privacy.retention]]
/// schema = "support"
/// table = "tickets"
/// time_column = "closed_at"
/// keep_days = 365
/// action = "anonymise"
/// columns = ["requester_email", "requester_name"]
/// ```
///
/// ```
/// use nova_tenancy::privacy::RetentionRule;
/// let sessions = RetentionRule::delete_after("sessions", "created_at", 30)?;
/// let tickets = RetentionRule::anonymise_after("tickets", "closed_at", 365, ["requester_email"])?
///     .schema("support")?;
/// assert_eq!(tickets.key(), "support.tickets.closed_at");
/// assert!(RetentionRule::delete_after("sessions", "created_at", 0).is_err());
/// # let _ = sessions;
/// # Ok::<(), nova_tenancy::privacy::PrivacyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RetentionRuleToml")]
pub struct RetentionRule {
    schema: Option<Ident>,
    table: Ident,
    time_column: Ident,
    keep_days: u32,
    action: RetentionAction,
}

impl RetentionRule {
    /// Deletes rows whose `time_column` is more than `days` days before the transaction's
    /// start.
    ///
    /// # Errors
    /// [`PrivacyError::Ident`] for an invalid name; [`PrivacyError::KeepDays`] for zero or
    /// more than [`RETENTION_MAX_DAYS`] days.
    pub fn delete_after(table: &str, time_column: &str, days: u32) -> Result<Self, PrivacyError> {
        Self::build(table, time_column, days, RetentionAction::Delete)
    }

    /// Sets `columns` to `NULL` in rows whose `time_column` is more than `days` days before
    /// the transaction's start (rows already `NULL` in every such column are left alone).
    ///
    /// # Errors
    /// [`PrivacyError::Ident`] for an invalid name; [`PrivacyError::KeepDays`] for zero or
    /// more than [`RETENTION_MAX_DAYS`] days; [`PrivacyError::NoColumns`] for no column.
    pub fn anonymise_after<'a>(
        table: &str,
        time_column: &str,
        days: u32,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PrivacyError> {
        let columns = idents(columns)?;
        let rule = Self::build(
            table,
            time_column,
            days,
            RetentionAction::Anonymise(columns.clone()),
        )?;
        if columns.is_empty() {
            return Err(PrivacyError::NoColumns {
                table: rule.key(),
                what: "the anonymise action",
            });
        }
        Ok(rule)
    }

    fn build(
        table: &str,
        time_column: &str,
        days: u32,
        action: RetentionAction,
    ) -> Result<Self, PrivacyError> {
        let rule = Self {
            schema: None,
            table: Ident::new(table)?,
            time_column: Ident::new(time_column)?,
            keep_days: days,
            action,
        };
        if days == 0 || days > RETENTION_MAX_DAYS {
            return Err(PrivacyError::KeepDays {
                table: rule.key(),
                days,
            });
        }
        Ok(rule)
    }

    /// Qualifies the table with a schema.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name.
    pub fn schema(mut self, schema: &str) -> Result<Self, IdentError> {
        self.schema = Some(Ident::new(schema)?);
        Ok(self)
    }

    /// The rule's key in reports: `schema.table.time_column`, or `table.time_column`.
    #[must_use]
    pub fn key(&self) -> String {
        dotted(self.schema.as_ref(), &self.table, &self.time_column)
    }

    /// The retention period in days.
    #[must_use]
    pub fn keep_days(&self) -> u32 {
        self.keep_days
    }

    fn sql(&self) -> String {
        let q = qualified(self.schema.as_ref(), &self.table);
        let older = format!("{} < now() - make_interval(days => $1)", self.time_column);
        match &self.action {
            RetentionAction::Delete => format!("DELETE FROM {q} WHERE {older}"),
            // Skipping rows already anonymised keeps reruns cheap and their counts honest.
            RetentionAction::Anonymise(cols) => format!(
                "UPDATE {q} SET {} WHERE {older} AND ({})",
                null_assignments(cols),
                cols.iter()
                    .map(|c| format!("{c} IS NOT NULL"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
        }
    }
}

/// The TOML shape of a [`RetentionRule`], before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionRuleToml {
    table: String,
    #[serde(default)]
    schema: Option<String>,
    time_column: String,
    keep_days: u32,
    action: RetentionActionToml,
    #[serde(default)]
    columns: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RetentionActionToml {
    Delete,
    #[serde(alias = "anonymize")]
    Anonymise,
}

impl TryFrom<RetentionRuleToml> for RetentionRule {
    type Error = PrivacyError;

    fn try_from(raw: RetentionRuleToml) -> Result<Self, PrivacyError> {
        let table = raw.table.clone();
        Self::from_raw(raw).map_err(|e| match e {
            PrivacyError::Ident(source) => PrivacyError::RuleIdent { table, source },
            other => other,
        })
    }
}

impl RetentionRule {
    fn from_raw(raw: RetentionRuleToml) -> Result<Self, PrivacyError> {
        let columns = raw.columns.as_deref().unwrap_or_default();
        let mut rule = match raw.action {
            RetentionActionToml::Delete => {
                let rule = Self::delete_after(&raw.table, &raw.time_column, raw.keep_days)?;
                if raw.columns.is_some() {
                    return Err(PrivacyError::ColumnsWithDelete { table: rule.key() });
                }
                rule
            }
            RetentionActionToml::Anonymise => Self::anonymise_after(
                &raw.table,
                &raw.time_column,
                raw.keep_days,
                columns.iter().map(String::as_str),
            )?,
        };
        if let Some(schema) = &raw.schema {
            rule = rule.schema(schema)?;
        }
        Ok(rule)
    }
}

/// What [`run_retention`] did, rule by rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    entries: Vec<ReportEntry>,
}

impl RetentionReport {
    /// One line per rule, in the rules' order.
    #[must_use]
    pub fn entries(&self) -> &[ReportEntry] {
        &self.entries
    }

    /// Rows deleted or anonymised across all rules.
    #[must_use]
    pub fn total(&self) -> u64 {
        changed(&self.entries)
    }
}

/// Applies retention rules in the transaction's tenant: rows whose time column is before
/// `now() - make_interval(days => keep_days)` are deleted or anonymised. `now()` is the
/// transaction's start time. Run it per tenant, from a scheduled job with a system context.
///
/// All or nothing, like [`erase_subject`].
///
/// ```no_run
/// use nova_tenancy::privacy::{RetentionRule, run_retention};
/// # async fn demo(pool: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// let rules = [RetentionRule::delete_after("sessions", "created_at", 30)?];
/// let mut tx = pool.begin(&ctx).await?;
/// let report = run_retention(&mut tx, &rules).await?;
/// tx.commit().await?;
/// tracing::info!(rows = report.total(), "retention applied");
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Database`] when a statement fails (a missing table or column, a `NOT NULL`
/// column to anonymise, a time column that cannot be compared with a timestamp).
pub async fn run_retention(
    tx: &mut TenantTx,
    rules: &[RetentionRule],
) -> Result<RetentionReport, Error> {
    let mut savepoint = (**tx).begin().await?;
    let result = retention_entries(&mut savepoint, rules).await;
    let entries = end_savepoint(savepoint, result).await?;
    Ok(RetentionReport { entries })
}

async fn retention_entries(
    conn: &mut PgConnection,
    rules: &[RetentionRule],
) -> Result<Vec<ReportEntry>, Error> {
    let mut entries = Vec::with_capacity(rules.len());
    for rule in rules {
        let days = i32::try_from(rule.keep_days).map_err(|_| PrivacyError::KeepDays {
            table: rule.key(),
            days: rule.keep_days,
        })?;
        let done = sqlx::query(AssertSqlSafe(rule.sql()))
            .bind(days)
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        entries.push(ReportEntry {
            key: rule.key(),
            action: match rule.action {
                RetentionAction::Delete => ActionTaken::Deleted,
                RetentionAction::Anonymise(_) => ActionTaken::Anonymised,
            },
            rows: done.rows_affected(),
            reason: None,
        });
    }
    Ok(entries)
}

/// The `[privacy]` section of an application's configuration.
///
/// ```
/// use nova_tenancy::privacy::PrivacyConfig;
/// let config: PrivacyConfig = serde_json::from_value(serde_json::json!({
///     "retention": [
///         { "table": "sessions", "time_column": "created_at", "keep_days": 30, "action": "delete" }
///     ]
/// }))?;
/// config.validate()?;
/// assert_eq!(config.retention.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrivacyConfig {
    /// Retention rules (`[[privacy.retention]]`), each validated while parsing.
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
}

impl PrivacyConfig {
    /// Checks the rules against each other: two `delete` rules on the same table and time
    /// column, or two `anonymise` rules naming the same column there, would leave the
    /// effective period to whichever is shorter, which is rarely what the author meant.
    ///
    /// # Errors
    /// [`PrivacyError::ConflictingRules`] naming the first conflict.
    pub fn validate(&self) -> Result<(), PrivacyError> {
        for (i, a) in self.retention.iter().enumerate() {
            for b in self.retention.iter().skip(i + 1) {
                if a.schema != b.schema || a.table != b.table || a.time_column != b.time_column {
                    continue;
                }
                let reason = match (&a.action, &b.action) {
                    (RetentionAction::Delete, RetentionAction::Delete) => {
                        "two delete rules on the same table and time column"
                    }
                    (RetentionAction::Anonymise(x), RetentionAction::Anonymise(y))
                        if x.iter().any(|c| y.contains(c)) =>
                    {
                        "two anonymise rules name the same column"
                    }
                    _ => continue,
                };
                return Err(PrivacyError::ConflictingRules {
                    table: a.key(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Consent
// ---------------------------------------------------------------------------------------

/// One recorded consent decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Consent {
    /// The data subject.
    pub subject: Uuid,
    /// What the consent is for, e.g. `marketing.email`.
    pub purpose: String,
    /// Whether consent was given (`false`: refused or withdrawn).
    pub granted: bool,
    /// Where the decision was captured, e.g. `web:settings-page`.
    pub source: String,
    /// When it was recorded, in Unix seconds (the recording transaction's start).
    pub recorded_at: i64,
}

fn check_purpose(purpose: &str) -> Result<(), PrivacyError> {
    let ok = !purpose.is_empty()
        && purpose.len() <= PURPOSE_MAX_LEN
        && purpose
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PrivacyError::InvalidPurpose)
    }
}

fn check_source(source: &str) -> Result<(), PrivacyError> {
    let ok = !source.trim().is_empty()
        && source.len() <= SOURCE_MAX_LEN
        && !source.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(PrivacyError::InvalidSource)
    }
}

type ConsentRow = (Uuid, String, bool, String, i64);

fn consent(row: ConsentRow) -> Consent {
    let (subject, purpose, granted, source, recorded_at) = row;
    Consent {
        subject,
        purpose,
        granted,
        source,
        recorded_at,
    }
}

const CONSENT_COLUMNS: &str = "subject_id, purpose, granted, source, \
     floor(extract(epoch FROM recorded_at))::bigint";

/// An append-only, tenant-scoped record of consent decisions (GDPR Art. 7(1): the
/// controller must be able to demonstrate consent). A withdrawal is a new record with
/// `granted = false`; nothing is updated or deleted, and a trigger refuses `UPDATE`,
/// `DELETE` and `TRUNCATE` for every role, whatever the grants. Declare the table as
/// [`ErasureAction::Keep`] in a [`SubjectMap`].
///
/// Reads fail closed: a purpose never asked about has no consent.
///
/// ```no_run
/// use nova_tenancy::{AppRoles, RlsMigration};
/// use nova_tenancy::privacy::ConsentLedger;
/// # async fn demo(pool: nova_tenancy::TenantPool, ctx: nova_tenancy::TenantContext,
/// #               subject: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
/// let ledger = ConsentLedger::new(None, "consents")?;
/// // As a migration: the table, then row-level security over it.
/// let ddl = ledger.create_table_sql();
/// let rls = RlsMigration::new(AppRoles::standard()).table(ledger.tenant_table()).up();
/// # let _ = (ddl, rls);
///
/// let mut tx = pool.begin(&ctx).await?;
/// ledger.record(&mut tx, subject, "marketing.email", true, "web:signup").await?;
/// assert!(ledger.has_consent(&mut tx, subject, "marketing.email").await?);
/// assert!(!ledger.has_consent(&mut tx, subject, "analytics").await?); // never asked
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentLedger {
    schema: Option<Ident>,
    table: Ident,
    guard_function: Ident,
    tenant_table: TenantTable,
}

impl ConsentLedger {
    /// A ledger in `table`, optionally schema-qualified.
    ///
    /// # Errors
    /// [`IdentError`] for an invalid name, or one too long to derive the index and trigger
    /// function names from.
    pub fn new(schema: Option<&str>, table: &str) -> Result<Self, IdentError> {
        let table_ident = Ident::new(table)?;
        Ok(Self {
            schema: schema.map(Ident::new).transpose()?,
            guard_function: table_ident.with_suffix("_append_only")?,
            tenant_table: TenantTable::new(table)?.index_with(["subject_id", "purpose", "id"])?,
            table: table_ident,
        })
    }

    fn qualified(&self) -> String {
        qualified(self.schema.as_ref(), &self.table)
    }

    /// DDL creating the table and its append-only trigger. Idempotent. Run it before the
    /// [`crate::RlsMigration`] that includes [`ConsentLedger::tenant_table`] (the migration
    /// grants the sequence and puts the table under row-level security).
    ///
    /// `tenant_id` defaults to the transaction's tenant; the ledger's own inserts also pass
    /// it explicitly.
    ///
    /// ```
    /// let ledger = nova_tenancy::privacy::ConsentLedger::new(Some("app"), "consents")?;
    /// let sql = ledger.create_table_sql();
    /// assert!(sql.contains(r#"CREATE TABLE IF NOT EXISTS "app"."consents""#));
    /// assert!(sql.contains("BEFORE UPDATE OR DELETE"));
    /// # Ok::<(), nova_tenancy::IdentError>(())
    /// ```
    #[must_use]
    pub fn create_table_sql(&self) -> String {
        let q = self.qualified();
        let guard = qualified(self.schema.as_ref(), &self.guard_function);
        format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n  \
             tenant_id uuid NOT NULL DEFAULT NULLIF(current_setting('nova.tenant_id', true), '')::uuid,\n  \
             id bigserial PRIMARY KEY,\n  \
             subject_id uuid NOT NULL,\n  \
             purpose text NOT NULL CHECK (purpose ~ '^[a-z0-9_.-]{{1,{PURPOSE_MAX_LEN}}}$'),\n  \
             granted boolean NOT NULL,\n  \
             source text NOT NULL CHECK (length(source) BETWEEN 1 AND {SOURCE_MAX_LEN}),\n  \
             recorded_at timestamptz NOT NULL DEFAULT now()\n);\n\
             CREATE OR REPLACE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $nova$\n\
             BEGIN\n  \
             RAISE EXCEPTION 'nova: % is append-only (% refused)', TG_TABLE_NAME, TG_OP\n    \
             USING ERRCODE = 'insufficient_privilege';\n\
             END $nova$;\n\
             DROP TRIGGER IF EXISTS nova_append_only ON {q};\n\
             CREATE TRIGGER nova_append_only BEFORE UPDATE OR DELETE ON {q}\n  \
             FOR EACH ROW EXECUTE FUNCTION {guard}();\n\
             DROP TRIGGER IF EXISTS nova_append_only_truncate ON {q};\n\
             CREATE TRIGGER nova_append_only_truncate BEFORE TRUNCATE ON {q}\n  \
             FOR EACH STATEMENT EXECUTE FUNCTION {guard}();\n"
        )
    }

    /// The table as a [`TenantTable`] for the [`crate::RlsMigration`] of the ledger's
    /// schema, indexed for the ledger's lookups (`tenant_id, subject_id, purpose, id`).
    #[must_use]
    pub fn tenant_table(&self) -> TenantTable {
        self.tenant_table.clone()
    }

    /// Records a decision for `subject` and `purpose` in the transaction's tenant.
    ///
    /// # Errors
    /// [`PrivacyError::InvalidPurpose`] unless the purpose is 1 to [`PURPOSE_MAX_LEN`]
    /// characters of `[a-z0-9_.-]`; [`PrivacyError::InvalidSource`] for an empty, overlong
    /// or control-character source; [`Error::Database`] when the insert fails.
    pub async fn record(
        &self,
        tx: &mut TenantTx,
        subject: Uuid,
        purpose: &str,
        granted: bool,
        source: &str,
    ) -> Result<Consent, Error> {
        check_purpose(purpose)?;
        check_source(source)?;
        let sql = format!(
            "INSERT INTO {} (tenant_id, subject_id, purpose, granted, source) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {CONSENT_COLUMNS}",
            self.qualified()
        );
        let tenant = *tx.tenant().as_uuid();
        let row: ConsentRow = sqlx::query_as(AssertSqlSafe(sql))
            .bind(tenant)
            .persistent(false)
            .bind(subject)
            .bind(purpose)
            .bind(granted)
            .bind(source)
            .fetch_one(&mut **tx)
            .await?;
        Ok(consent(row))
    }

    /// The latest decision for `subject` and `purpose`, or `None` if none was ever
    /// recorded — which means no consent: see [`ConsentLedger::has_consent`].
    ///
    /// # Errors
    /// [`PrivacyError::InvalidPurpose`] for an invalid purpose (never silently `None`);
    /// [`Error::Database`] when the query fails.
    pub async fn current(
        &self,
        tx: &mut TenantTx,
        subject: Uuid,
        purpose: &str,
    ) -> Result<Option<Consent>, Error> {
        check_purpose(purpose)?;
        // `id` is the insertion order; `recorded_at` is the transaction start and ties
        // within one transaction.
        let sql = format!(
            "SELECT {CONSENT_COLUMNS} FROM {} WHERE subject_id = $1 AND purpose = $2 \
             ORDER BY id DESC LIMIT 1",
            self.qualified()
        );
        let row: Option<ConsentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(subject)
            .persistent(false)
            .bind(purpose)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.map(consent))
    }

    /// Whether the latest decision for `subject` and `purpose` grants consent. Fails
    /// closed: `false` when no decision was ever recorded.
    ///
    /// # Errors
    /// As [`ConsentLedger::current`].
    pub async fn has_consent(
        &self,
        tx: &mut TenantTx,
        subject: Uuid,
        purpose: &str,
    ) -> Result<bool, Error> {
        Ok(self
            .current(tx, subject, purpose)
            .await?
            .is_some_and(|c| c.granted))
    }

    /// Every decision recorded for `subject`, oldest first.
    ///
    /// # Errors
    /// [`Error::Database`] when the query fails.
    pub async fn history(&self, tx: &mut TenantTx, subject: Uuid) -> Result<Vec<Consent>, Error> {
        let sql = format!(
            "SELECT {CONSENT_COLUMNS} FROM {} WHERE subject_id = $1 ORDER BY id",
            self.qualified()
        );
        let rows: Vec<ConsentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(subject)
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        Ok(rows.into_iter().map(consent).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_sql_quotes_every_name_and_binds_the_subject() {
        let t = SubjectTable::new("tickets", "requester_id")
            .unwrap()
            .schema("support")
            .unwrap()
            .export_columns(["id", "title", "id"])
            .unwrap();
        let sql = t.export_sql();
        assert!(
            sql.contains(
                r#"SELECT "id", "title" FROM "support"."tickets" WHERE "requester_id" = $1"#
            ),
            "{sql}"
        );
    }

    #[test]
    fn anonymise_assigns_each_column_once() {
        let cols = vec![Ident::new("a").unwrap(), Ident::new("a").unwrap()];
        assert_eq!(null_assignments(&cols), r#""a" = NULL"#);
    }

    #[test]
    fn empty_lists_and_reasons_are_refused_before_any_sql() {
        let empty = SubjectTable::new("t", "s")
            .unwrap()
            .on_erase(ErasureAction::Anonymise(Vec::new()));
        assert!(matches!(empty.check(), Err(PrivacyError::NoColumns { .. })));
        let keep = SubjectTable::new("t", "s")
            .unwrap()
            .on_erase(ErasureAction::keep("  "));
        assert!(matches!(
            keep.check(),
            Err(PrivacyError::KeepWithoutReason { .. })
        ));
        let none: [&str; 0] = [];
        assert!(
            SubjectTable::new("t", "s")
                .unwrap()
                .export_columns(none)
                .unwrap()
                .check()
                .is_err()
        );
    }

    #[test]
    fn purposes_are_short_lowercase_machine_names() {
        for ok in [
            "marketing",
            "marketing.email",
            "a",
            "x_1-2",
            &"a".repeat(64),
        ] {
            assert!(check_purpose(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Marketing", "a b", "a'b", "é", &"a".repeat(65)] {
            assert!(check_purpose(bad).is_err(), "{bad}");
        }
        assert!(check_source("web").is_ok());
        assert!(check_source("").is_err());
        assert!(check_source("a\nb").is_err());
        assert!(check_source(&"a".repeat(SOURCE_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn retention_anonymise_skips_rows_already_null() {
        let r = RetentionRule::anonymise_after("t", "at", 7, ["a", "b"]).unwrap();
        assert_eq!(
            r.sql(),
            r#"UPDATE "t" SET "a" = NULL, "b" = NULL WHERE "at" < now() - make_interval(days => $1) AND ("a" IS NOT NULL OR "b" IS NOT NULL)"#
        );
        assert!(RetentionRule::delete_after("t", "at", RETENTION_MAX_DAYS + 1).is_err());
        let none: [&str; 0] = [];
        assert!(RetentionRule::anonymise_after("t", "at", 7, none).is_err());
    }
}

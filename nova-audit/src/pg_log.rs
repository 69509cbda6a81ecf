//! The PostgreSQL sink: every tenant's log in two append-only tables, written by any number of
//! processes at once.
//!
//! ```text
//! <schema>.entries      (tenant, idx, event, leaf, time_ms)   PRIMARY KEY (tenant, idx)
//! <schema>.checkpoints  (tenant, size, note, frontier)        PRIMARY KEY (tenant, size)
//! ```
//!
//! **Append-only.** A trigger refuses `UPDATE`, `DELETE` and `TRUNCATE` on both tables for
//! every role that is subject to triggers, with one exception: retention may set an entry's
//! `event` to `NULL` while its leaf hash, index, tenant and time stay as they were. The
//! writer role may only `INSERT` (and read checkpoints); the reader role may only `SELECT`;
//! only the retention role may `UPDATE`, and only the `event` column.
//!
//! **Several writers.** A batch is one `INSERT` statement that writes its entries and the
//! checkpoint signed over them. Indices come from the writer's view of the log head; if
//! another process appended first, the primary keys make the statement fail as a whole
//! (no fork, no gap, nothing half-written), and the writer tries again. From then on it
//! takes a per-tenant advisory lock and reads the head under it before each batch, so
//! writers sharing a log queue up rather than collide; a writer alone on its log never
//! pays for the lock. A head whose signature, origin or stored tree edge does not match is
//! refused: the writer does not sign on top of a log that was tampered with.
//!
//! **Against the database's administrators.** A superuser can disable the trigger and edit
//! rows; what they cannot do is sign. [`PgLogSchema::verify`] replays a tenant's log from
//! the first entry and names the first entry that no longer matches its checkpoint, exactly
//! as for a file. Removing the newest entries together with their checkpoints is only
//! caught against a checkpoint kept elsewhere (`external`), as for a file.
//!
//! This module must never acknowledge a batch before its transaction committed, and never
//! build SQL from anything but validated identifiers and bound parameters.

use std::fmt::Write as _;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};

use nova_tenancy::{Ident, IdentError, TenantId};

use crate::checkpoint::{Checkpoint, CheckpointSigner, VerifierKey};
use crate::event::AuditEvent;
use crate::merkle::{CompactRange, leaf_hash};
use crate::redaction::RedactionPolicy;
use crate::verify::{At, Record, Replay, Verdict};
use crate::writer::Sink;

/// How often a writer retries a batch that lost a race with another writer.
const MAX_ATTEMPTS: u32 = 64;

/// The advisory-lock namespace of the audit writers: "NOVA" in ASCII.
const LOCK_CLASS: i32 = 0x4E4F_5641;

/// Rows read per round trip when verifying.
const PAGE: i64 = 5000;

/// PostgreSQL `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// Errors of the PostgreSQL sink and verifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgLogError {
    /// The database refused or failed a statement; nothing of the batch is acknowledged.
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored log head does not verify under the writer's key, names another origin, or
    /// its stored tree edge does not match its signed root: the log was tampered with, and
    /// the writer refuses to sign on top of it.
    #[error("audit log head is not trusted: {0}")]
    HeadNotTrusted(String),
    /// Other writers kept winning the race for the next index.
    #[error("audit batch lost the race for the log head {attempts} times in a row")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// An event's canonical encoding is larger than [`MAX_LINE_LEN`](crate::MAX_LINE_LEN)
    /// allows; the batch holding it is refused as a whole.
    #[error("audit event of {len} bytes is too large")]
    EventTooLarge {
        /// Encoded length.
        len: usize,
    },
    /// A table row is not in the shape this crate writes (verification only).
    #[error("audit table row is malformed: {0}")]
    Malformed(&'static str),
}

/// The tables, trigger and roles of the PostgreSQL sink, in one schema.
///
/// ```
/// use nova_audit::PgLogSchema;
/// use nova_tenancy::Ident;
///
/// let schema = PgLogSchema::new(Ident::new("audit")?, "nova_")?;
/// let ddl = schema.up();
/// assert!(ddl.contains("BEFORE UPDATE OR DELETE"));
/// assert!(ddl.contains(r#"GRANT INSERT ON "audit"."entries""#));
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgLogSchema {
    schema: Ident,
    writer: Ident,
    reader: Ident,
    retention: Ident,
}

impl PgLogSchema {
    /// The sink in `schema` with roles `<prefix>audit_writer`, `<prefix>audit_reader` and
    /// `<prefix>audit_retention` (for example `nova_audit_writer` with prefix `nova_`; roles
    /// are cluster-wide, so a prefix keeps deployments on one server apart).
    ///
    /// # Errors
    /// [`IdentError`] when a role name is not a valid identifier.
    pub fn new(schema: Ident, role_prefix: &str) -> Result<Self, IdentError> {
        Ok(Self {
            schema,
            writer: Ident::new(&format!("{role_prefix}audit_writer"))?,
            reader: Ident::new(&format!("{role_prefix}audit_reader"))?,
            retention: Ident::new(&format!("{role_prefix}audit_retention"))?,
        })
    }

    /// The role that may only append (grant it to the services' login roles).
    #[must_use]
    pub fn writer_role(&self) -> &Ident {
        &self.writer
    }

    /// The role that may only read (auditors, the verifier).
    #[must_use]
    pub fn reader_role(&self) -> &Ident {
        &self.reader
    }

    /// The role that may prune old events' content (the retention job).
    #[must_use]
    pub fn retention_role(&self) -> &Ident {
        &self.retention
    }

    fn entries(&self) -> String {
        format!("{}.\"entries\"", self.schema)
    }

    fn checkpoints(&self) -> String {
        format!("{}.\"checkpoints\"", self.schema)
    }

    /// DDL that creates the roles (refusing existing ones that are superusers or bypass
    /// row-level security), the schema, both tables, the append-only trigger and the grants.
    /// Idempotent; run it as the schema's owner, which must not be one of the three roles.
    #[must_use]
    pub fn up(&self) -> String {
        let s = &self.schema;
        let (w, r, ret) = (&self.writer, &self.reader, &self.retention);
        let (e, c) = (self.entries(), self.checkpoints());
        let mut sql = String::new();
        for role in [w, r, ret] {
            let lit = role.literal();
            let _ = writeln!(
                sql,
                "DO $nova$ BEGIN\n  \
                 IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN\n    \
                 CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;\n  \
                 ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit} AND (rolsuper OR rolbypassrls)) THEN\n    \
                 RAISE EXCEPTION 'nova: role % is a superuser or has BYPASSRLS', {lit};\n  \
                 END IF;\nEND $nova$;"
            );
        }
        let _ = write!(
            sql,
            r#"CREATE SCHEMA IF NOT EXISTS {s};
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
GRANT USAGE ON SCHEMA {s} TO {w}, {r}, {ret};
CREATE TABLE IF NOT EXISTS {e} (
  tenant uuid NOT NULL,
  idx bigint NOT NULL CHECK (idx >= 0),
  event bytea CHECK (octet_length(event) <= 1048576),
  leaf bytea NOT NULL CHECK (octet_length(leaf) = 32),
  time_ms bigint NOT NULL,
  PRIMARY KEY (tenant, idx)
);
CREATE TABLE IF NOT EXISTS {c} (
  tenant uuid NOT NULL,
  size bigint NOT NULL CHECK (size > 0),
  note text NOT NULL,
  frontier bytea NOT NULL,
  PRIMARY KEY (tenant, size)
);
CREATE OR REPLACE FUNCTION {s}."append_only"() RETURNS trigger LANGUAGE plpgsql AS $nova$
BEGIN
  IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'entries' THEN
    -- Retention: an entry's content may be removed; its place in the tree may not change.
    IF OLD.event IS NOT NULL AND NEW.event IS NULL AND NEW.tenant = OLD.tenant
       AND NEW.idx = OLD.idx AND NEW.leaf = OLD.leaf AND NEW.time_ms = OLD.time_ms THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'nova audit log %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$nova$;
REVOKE ALL ON FUNCTION {s}."append_only"() FROM PUBLIC;
DROP TRIGGER IF EXISTS "append_only" ON {e};
CREATE TRIGGER "append_only" BEFORE UPDATE OR DELETE ON {e} FOR EACH ROW EXECUTE FUNCTION {s}."append_only"();
DROP TRIGGER IF EXISTS "append_only_truncate" ON {e};
CREATE TRIGGER "append_only_truncate" BEFORE TRUNCATE ON {e} FOR EACH STATEMENT EXECUTE FUNCTION {s}."append_only"();
DROP TRIGGER IF EXISTS "append_only" ON {c};
CREATE TRIGGER "append_only" BEFORE UPDATE OR DELETE ON {c} FOR EACH ROW EXECUTE FUNCTION {s}."append_only"();
DROP TRIGGER IF EXISTS "append_only_truncate" ON {c};
CREATE TRIGGER "append_only_truncate" BEFORE TRUNCATE ON {c} FOR EACH STATEMENT EXECUTE FUNCTION {s}."append_only"();
REVOKE ALL ON {e}, {c} FROM PUBLIC, {w}, {r}, {ret};
GRANT INSERT ON {e}, {c} TO {w};
GRANT SELECT ON {c} TO {w};
GRANT SELECT ON {e}, {c} TO {r};
GRANT SELECT ON {e}, {c} TO {ret};
GRANT UPDATE (event) ON {e} TO {ret};
"#
        );
        sql
    }

    /// Verifies `tenant`'s log: replays every entry and checkpoint in order (in one
    /// consistent snapshot, a page at a time) with the same rules as
    /// [`verify_file`](crate::verify_file), and optionally against an externally kept
    /// checkpoint, which catches truncation.
    ///
    /// # Errors
    /// [`PgLogError::Database`] when the tables cannot be read.
    pub async fn verify(
        &self,
        conn: &mut PgConnection,
        tenant: TenantId,
        key: &VerifierKey,
        external: Option<&str>,
    ) -> Result<Verdict, PgLogError> {
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let entries_sql = format!(
            "SELECT idx, event, leaf FROM {} WHERE tenant = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
            self.entries()
        );
        let checkpoints_sql = format!(
            "SELECT size, note FROM {} WHERE tenant = $1 AND size > $2 ORDER BY size LIMIT $3",
            self.checkpoints()
        );
        let uuid = *tenant.as_uuid();
        let mut replay = Replay::new(key);
        let mut checkpoints: std::collections::VecDeque<(i64, String)> =
            std::collections::VecDeque::new();
        let mut checkpoints_done = false;
        let mut last_size = 0i64;
        let mut next_idx = 0i64;
        loop {
            let rows = sqlx::query(AssertSqlSafe(entries_sql.clone()))
                .bind(uuid)
                .bind(next_idx)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
            let last_page = (rows.len() as i64) < PAGE;
            for row in &rows {
                let idx: i64 = row.try_get(0)?;
                let event: Option<Vec<u8>> = row.try_get(1)?;
                let leaf: Vec<u8> = row.try_get(2)?;
                // Checkpoint `s` seals entries 0..s, so it goes before entry `s`.
                loop {
                    if checkpoints.is_empty() && !checkpoints_done {
                        checkpoints_done = next_checkpoints(
                            &mut tx,
                            &checkpoints_sql,
                            uuid,
                            &mut last_size,
                            &mut checkpoints,
                        )
                        .await?;
                    }
                    match checkpoints.front() {
                        Some((size, _)) if *size <= idx => {
                            if let Some((size, note)) = checkpoints.pop_front()
                                && let Err(v) = replay.feed(
                                    Record::Checkpoint(note.into()),
                                    At::CheckpointRow(size as u64),
                                )
                            {
                                return Ok(v);
                            }
                        }
                        _ => break,
                    }
                }
                let at = At::EntryRow(idx as u64);
                let record = match (u64::try_from(idx), event, <[u8; 32]>::try_from(leaf)) {
                    (Ok(index), Some(bytes), _) => {
                        if let Err(v) = replay.feed(
                            Record::Event {
                                index,
                                bytes: &bytes,
                            },
                            at,
                        ) {
                            return Ok(v);
                        }
                        continue;
                    }
                    (Ok(index), None, Ok(leaf)) => Record::Pruned { index, leaf },
                    _ => return Ok(replay.unreadable(at, "is not a valid entry")),
                };
                if let Err(v) = replay.feed(record, at) {
                    return Ok(v);
                }
            }
            if last_page {
                break;
            }
            next_idx = rows
                .last()
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()?
                .map_or(next_idx, |i| i + 1);
        }
        // Checkpoints after the last entry.
        loop {
            while let Some((size, note)) = checkpoints.pop_front() {
                if let Err(v) = replay.feed(
                    Record::Checkpoint(note.into()),
                    At::CheckpointRow(size as u64),
                ) {
                    return Ok(v);
                }
            }
            if checkpoints_done {
                break;
            }
            checkpoints_done = next_checkpoints(
                &mut tx,
                &checkpoints_sql,
                uuid,
                &mut last_size,
                &mut checkpoints,
            )
            .await?;
        }
        tx.rollback().await?;
        Ok(replay.finish(external))
    }

    /// The tenants that have a log in these tables (entries or checkpoints, so a tenant
    /// whose checkpoints were deleted is still listed, and fails verification).
    ///
    /// # Errors
    /// [`PgLogError::Database`] when the table cannot be read.
    pub async fn tenants(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>, PgLogError> {
        let sql = format!(
            "SELECT tenant FROM {} UNION SELECT tenant FROM {} ORDER BY tenant",
            self.checkpoints(),
            self.entries()
        );
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(conn)
            .await?;
        ids.into_iter()
            .map(|u| TenantId::from_uuid(u).map_err(|_| PgLogError::Malformed("tenant id")))
            .collect()
    }

    /// Retention: removes the content of `tenant`'s oldest entries whose `time_ms` is before
    /// `cutoff_ms`, stopping at the first entry that is not (so pruned entries stay the
    /// oldest), and keeps every leaf hash and checkpoint, so the log still verifies. Run it
    /// as a member of the retention role. Returns the entries pruned by this call.
    ///
    /// # Errors
    /// [`PgLogError::Database`] when the update is refused or fails.
    pub async fn prune_before(
        &self,
        conn: &mut PgConnection,
        tenant: TenantId,
        cutoff_ms: u64,
    ) -> Result<u64, PgLogError> {
        let e = self.entries();
        let sql = format!(
            "UPDATE {e} SET event = NULL WHERE tenant = $1 AND event IS NOT NULL AND idx < \
             COALESCE((SELECT min(idx) FROM {e} WHERE tenant = $1 AND time_ms >= $2), 9223372036854775807)"
        );
        let cutoff = i64::try_from(cutoff_ms).unwrap_or(i64::MAX);
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(*tenant.as_uuid())
            .bind(cutoff)
            .execute(conn)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Reads the next page of checkpoints after size `last_size` into `queue`; returns whether
/// it was the last page.
async fn next_checkpoints(
    conn: &mut PgConnection,
    sql: &str,
    tenant: uuid::Uuid,
    last_size: &mut i64,
    queue: &mut std::collections::VecDeque<(i64, String)>,
) -> Result<bool, PgLogError> {
    let page = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .bind(tenant)
        .bind(*last_size)
        .bind(PAGE)
        .fetch_all(conn)
        .await?;
    let done = (page.len() as i64) < PAGE;
    for r in page {
        let size: i64 = r.try_get(0)?;
        *last_size = size;
        queue.push_back((size, r.try_get(1)?));
    }
    Ok(done)
}

/// One tenant's log in PostgreSQL, as a [`Sink`] for [`AuditLog`](crate::AuditLog) or used
/// directly.
///
/// It connects lazily, on the runtime that first appends (the writer thread's, under
/// `AuditLog`), and reconnects after a failed batch. Connect as a login role that is a
/// member of [`PgLogSchema::writer_role`].
pub struct PgLog {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    tenant: TenantId,
    origin: String,
    signer: CheckpointSigner,
    key: VerifierKey,
    redaction: RedactionPolicy,
    head: Option<CompactRange>,
    insert_sql: String,
    head_sql: String,
    lock_sql: String,
    retries: u64,
    contended: bool,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog")
            .field("tenant", &self.tenant)
            .field("origin", &self.origin)
            .field("size", &self.head.as_ref().map(CompactRange::size))
            .finish_non_exhaustive()
    }
}

impl PgLog {
    /// A writer of `tenant`'s log in the tables of `schema`, signing checkpoints named
    /// `origin` with `signer`.
    ///
    /// # Errors
    /// [`PgLogError::HeadNotTrusted`] when the signer's public key cannot be read back.
    pub fn new(
        options: PgConnectOptions,
        schema: &PgLogSchema,
        tenant: TenantId,
        origin: &str,
        signer: CheckpointSigner,
    ) -> Result<Self, PgLogError> {
        let key = VerifierKey::parse(&signer.verifier_key())
            .map_err(|e| PgLogError::HeadNotTrusted(e.to_string()))?;
        // A stalled lock holder or server must not hold the writer (and every caller behind
        // it) forever: a batch that waits too long fails and its callers are told.
        let options = options.options([
            ("lock_timeout", "10s"),
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        Ok(Self {
            options,
            conn: None,
            tenant,
            origin: origin.to_owned(),
            signer,
            key,
            redaction: RedactionPolicy::new(),
            head: None,
            insert_sql: format!(
                "WITH e AS (INSERT INTO {} (tenant, idx, event, leaf, time_ms) \
                 SELECT $1, u.idx, u.event, u.leaf, u.time_ms \
                 FROM UNNEST($2::int8[], $3::bytea[], $4::bytea[], $5::int8[]) AS u(idx, event, leaf, time_ms)) \
                 INSERT INTO {} (tenant, size, note, frontier) VALUES ($1, $6, $7, $8)",
                schema.entries(),
                schema.checkpoints()
            ),
            head_sql: format!(
                "SELECT size, note, frontier FROM {} WHERE tenant = $1 ORDER BY size DESC LIMIT 1",
                schema.checkpoints()
            ),
            lock_sql: {
                // A per-tenant key in a namespace of Nova's own ("NOVA"); two tenants that
                // share a key only wait for each other.
                let id = tenant.as_uuid().as_bytes();
                let objid = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {objid})")
            },
            retries: 0,
            contended: false,
        })
    }

    /// Applies `policy` to every event before it is encoded (see
    /// [`FileLog::with_redaction`](crate::FileLog::with_redaction)).
    #[must_use]
    pub fn with_redaction(mut self, policy: RedactionPolicy) -> Self {
        self.redaction = policy;
        self
    }

    /// Batches that had to be retried because another writer appended first.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Entries in the log as this writer last saw it.
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        self.head.as_ref().map(CompactRange::size)
    }

    /// Reads and checks the signed head.
    async fn load_head(
        conn: &mut PgConnection,
        sql: &str,
        tenant: TenantId,
        key: &VerifierKey,
        origin: &str,
    ) -> Result<CompactRange, PgLogError> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(*tenant.as_uuid())
            .fetch_optional(conn)
            .await?;
        let Some(row) = row else {
            return Ok(CompactRange::default());
        };
        let size: i64 = row.try_get(0)?;
        let note: String = row.try_get(1)?;
        let frontier: Vec<u8> = row.try_get(2)?;
        let untrusted = |why: &str| PgLogError::HeadNotTrusted(why.to_owned());
        let cp = key
            .verify(&note)
            .map_err(|e| PgLogError::HeadNotTrusted(e.to_string()))?;
        if cp.origin != origin {
            return Err(untrusted("the head checkpoint names another origin"));
        }
        let size = u64::try_from(size).map_err(|_| untrusted("negative size"))?;
        if cp.size != size {
            return Err(untrusted(
                "the head row's size differs from its signed size",
            ));
        }
        let range = CompactRange::from_bytes(size, &frontier)
            .ok_or_else(|| untrusted("the stored tree edge does not fit the size"))?;
        if range.root() != cp.root {
            return Err(untrusted(
                "the stored tree edge does not match the signed root",
            ));
        }
        Ok(range)
    }

    /// Appends `events` as one batch; returns the index of the first once committed.
    ///
    /// # Errors
    /// [`PgLogError`]; on error nothing of the batch is in the log.
    pub async fn append_batch(&mut self, events: &[AuditEvent]) -> Result<u64, PgLogError> {
        let mut canonical = Vec::with_capacity(events.len());
        let mut leaves = Vec::with_capacity(events.len());
        let mut times = Vec::with_capacity(events.len());
        for e in events {
            let bytes = e.canonical_json_with(&self.redaction);
            if bytes.len() > crate::MAX_LINE_LEN - 64 {
                return Err(PgLogError::EventTooLarge { len: bytes.len() });
            }
            leaves.push(leaf_hash(&bytes));
            canonical.push(bytes);
            times.push(i64::try_from(e.time_ms).unwrap_or(i64::MAX));
        }
        let leaf_bytes: Vec<Vec<u8>> = leaves.iter().map(|l| l.to_vec()).collect();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => PgConnection::connect_with(&self.options).await?,
        };
        let result = self
            .append_encoded(&mut conn, &canonical, &leaves, &leaf_bytes, &times)
            .await;
        if result.is_ok() {
            self.conn = Some(conn);
        } else {
            // After an error the connection may be mid-transaction: drop it (the server
            // rolls back) and start afresh with the next batch.
            self.head = None;
        }
        result
    }

    async fn append_encoded(
        &mut self,
        conn: &mut PgConnection,
        canonical: &[Vec<u8>],
        leaves: &[[u8; 32]],
        leaf_bytes: &[Vec<u8>],
        times: &[i64],
    ) -> Result<u64, PgLogError> {
        for _ in 0..MAX_ATTEMPTS {
            // Alone on a log, a writer's cached head is current and a batch is one statement.
            // Once it has lost a race it serialises with the other writers under a
            // transaction-scoped advisory lock and reads the head under it, so writers that
            // share a log stop colliding instead of retrying in a storm.
            let locked = self.contended;
            if locked {
                sqlx::raw_sql(AssertSqlSafe(self.lock_sql.clone()))
                    .execute(&mut *conn)
                    .await?;
                self.head = None;
            }
            let head = match &self.head {
                Some(h) => h.clone(),
                None => {
                    Self::load_head(conn, &self.head_sql, self.tenant, &self.key, &self.origin)
                        .await?
                }
            };
            let first = head.size();
            let mut next = head;
            for leaf in leaves {
                next.push(*leaf);
            }
            let note = self.signer.sign(&Checkpoint {
                origin: self.origin.clone(),
                size: next.size(),
                root: next.root(),
            });
            let indices: Vec<i64> = (0..canonical.len() as u64)
                .map(|k| i64::try_from(first + k).unwrap_or(i64::MAX))
                .collect();
            let inserted = sqlx::query(AssertSqlSafe(self.insert_sql.clone()))
                .bind(*self.tenant.as_uuid())
                .bind(&indices)
                .bind(canonical)
                .bind(leaf_bytes)
                .bind(times)
                .bind(i64::try_from(next.size()).unwrap_or(i64::MAX))
                .bind(&note)
                .bind(next.to_bytes())
                .execute(&mut *conn)
                .await;
            let lost_race = match inserted {
                Ok(_) => false,
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                    true
                }
                Err(e) => return Err(e.into()),
            };
            if locked {
                let end = if lost_race { "ROLLBACK" } else { "COMMIT" };
                sqlx::raw_sql(end).execute(&mut *conn).await?;
            }
            if !lost_race {
                self.head = Some(next);
                return Ok(first);
            }
            // Another writer took these indices first: nothing of this attempt is stored.
            self.retries += 1;
            self.contended = true;
            self.head = None;
        }
        Err(PgLogError::Contended {
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl Sink for PgLog {
    type Error = PgLogError;

    fn append_batch(
        &mut self,
        events: &[AuditEvent],
    ) -> impl Future<Output = Result<u64, PgLogError>> + Send {
        PgLog::append_batch(self, events)
    }
}

//! The audit outbox: audit events written in the same PostgreSQL transaction as the data
//! they describe, and moved into the tamper-evident log by a relay.
//!
//! A request scope inserts each event into `<schema>.audit_outbox` inside the tenant
//! transaction, so the event and the write commit together: a failed commit leaves no
//! event, a committed write always has one. The relay (on Nova's own login) takes the
//! oldest events in batches, `FOR UPDATE SKIP LOCKED` so replicas share the work, appends
//! them to the log, waits until the log holds them durably, and only then deletes them. An
//! event is therefore in the log **at least once**: should the delete fail to commit after
//! the append, the batch is appended again; each event carries its outbox id
//! (`outbox_id`) so a reader can recognise the repeat.
//!
//! Events cross the table as records ([`AuditEvent::to_record`]): sensitive values are
//! treated under the log's redaction policy before they are written, so the table never
//! holds them in clear.
//!
//! Row-level security on the table: the application's roles may only `INSERT` rows of the
//! transaction's tenant (no `SELECT`, `UPDATE` or `DELETE`); Nova's login reads and deletes.

use std::sync::Arc;
use std::time::Duration;

use nova_audit::{AuditEvent, AuditLog, RedactionPolicy};
use nova_tenancy::{Ident, TenantId};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::error::Error;

/// Events the relay moves per batch.
pub const RELAY_BATCH: i64 = 256;

/// The outbox table of one schema.
#[derive(Debug, Clone)]
pub struct Outbox {
    table: String,
    insert: String,
    take: String,
    redaction: Arc<RedactionPolicy>,
}

impl Outbox {
    /// The outbox in `schema`, its records treated under `redaction` (the log's policy).
    #[must_use]
    pub fn new(schema: &Ident, redaction: Arc<RedactionPolicy>) -> Self {
        let table = format!("{schema}.audit_outbox");
        Self {
            insert: format!("INSERT INTO {table} (tenant_id, record) VALUES ($1, $2)"),
            take: format!(
                "WITH batch AS (SELECT id FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM {table} o USING batch WHERE o.id = batch.id \
                 RETURNING o.id, o.tenant_id, o.record"
            ),
            table,
            redaction,
        }
    }

    /// The table, qualified.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The DDL: the table, its row-level security, and its grants, in the shapes Nova's
    /// inspection accepts. `app_roles` may only insert rows of their transaction's tenant;
    /// `nova_login` owns the table and reads every tenant's rows only inside a transaction
    /// that names its reason (`nova.bypass_reason`, Nova's `nova_bypass` policy).
    #[must_use]
    pub fn create_sql(&self, app_roles: &[&Ident], nova_login: &Ident) -> String {
        let t = &self.table;
        let apps = app_roles
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant_id uuid NOT NULL,
                record bytea NOT NULL CHECK (octet_length(record) <= {max}),
                created_at timestamptz NOT NULL DEFAULT now()
            );
            ALTER TABLE {t} OWNER TO {nova_login};
            ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
            ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
            DROP POLICY IF EXISTS nova_tenant_isolation ON {t};
            CREATE POLICY nova_tenant_isolation ON {t} AS PERMISSIVE FOR ALL TO PUBLIC
                USING ({tenant}) WITH CHECK ({tenant});
            DROP POLICY IF EXISTS nova_bypass ON {t};
            CREATE POLICY nova_bypass ON {t} AS PERMISSIVE FOR ALL TO {nova_login}
                USING ({bypass}) WITH CHECK ({bypass});
            REVOKE ALL ON {t} FROM PUBLIC;
            GRANT INSERT ON {t} TO {apps};
            GRANT SELECT, DELETE ON {t} TO {nova_login};
            ",
            max = nova_audit::MAX_RECORD_LEN,
            tenant = "tenant_id = NULLIF(current_setting('nova.tenant_id', true), '')::uuid",
            bypass = "current_setting('nova.bypass_reason', true) <> ''",
        )
    }

    /// Writes `event` in the caller's transaction (a tenant transaction of the event's
    /// tenant: row-level security refuses any other).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn write(&self, conn: &mut PgConnection, event: &AuditEvent) -> Result<(), Error> {
        let record = event.to_record(&self.redaction);
        sqlx::query(AssertSqlSafe(self.insert.as_str()))
            .bind(event.tenant)
            .bind(record)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Moves one batch into `log`: takes the oldest events, appends them, waits until the
    /// log holds them, then commits the delete. Returns how many moved.
    ///
    /// A record that does not read (written by something other than Nova) is replaced in
    /// the log by an `audit.outbox_record_unreadable` event of its tenant, so it neither
    /// blocks the outbox nor vanishes unnoticed.
    ///
    /// # Errors
    /// [`Error::Database`] or [`Error::Audit`]; the batch then stays in the outbox.
    pub async fn relay_batch(&self, pool: &PgPool, log: &AuditLog) -> Result<usize, Error> {
        let mut tx = pool.begin().await?;
        bypass(&mut tx).await?;
        let rows = sqlx::query(AssertSqlSafe(self.take.as_str()))
            .bind(RELAY_BATCH)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            let tenant: TenantId = row.try_get(1)?;
            let record: Vec<u8> = row.try_get(2)?;
            let mut event = AuditEvent::from_record(&record).unwrap_or_else(|_| {
                AuditEvent::builder(tenant, "audit.outbox_record_unreadable", "audit.relay")
                    .outcome(nova_audit::Outcome::Error)
                    .build()
            });
            event
                .params
                .insert("outbox_id".into(), nova_audit::ParamValue::Int(id));
            batch.push((id, event));
        }
        batch.sort_by_key(|(id, _)| *id);
        let n = batch.len();
        // Queue the whole batch, then wait for each: the writer commits them together.
        let mut pending = Vec::with_capacity(n);
        for (_, event) in batch {
            match log.try_append(event.clone()) {
                Ok(fut) => pending.push(Box::pin(fut) as PendingAppend<'_>),
                Err(nova_audit::AppendError::Full) => {
                    let log_ref = log;
                    pending.push(Box::pin(async move { log_ref.append(event).await }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        for fut in pending {
            fut.await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Events waiting in the outbox (on Nova's login).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn pending(&self, pool: &PgPool) -> Result<i64, Error> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        let mut tx = pool.begin().await?;
        bypass(&mut tx).await?;
        let n = sqlx::query_scalar(AssertSqlSafe(sql))
            .persistent(false)
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(n)
    }
}

/// Lets Nova's login see every tenant's rows of the outbox, for this transaction only.
async fn bypass(tx: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT set_config('nova.bypass_reason', 'audit outbox relay', true)")
        .persistent(false)
        .execute(tx)
        .await?;
    Ok(())
}

type PendingAppend<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<u64, nova_audit::AppendError>> + Send + 'a>>;

/// The background task that moves the outbox into the log: woken by commits in this
/// process, and every `interval` for commits of other replicas.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub(crate) fn spawn(
        outbox: Outbox,
        pool: PgPool,
        log: Arc<AuditLog>,
        interval: Duration,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let woken = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            loop {
                match outbox.relay_batch(&pool, &log).await {
                    // A full batch: there may be more.
                    Ok(n) if n as i64 == RELAY_BATCH => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "nova::audit", error = %e, "audit outbox relay failed; retrying");
                    }
                }
                let _ = tokio::time::timeout(interval, woken.notified()).await;
            }
        });
        Self { wake, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

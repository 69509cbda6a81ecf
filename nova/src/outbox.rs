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
//! Each record ([`AuditEvent::to_record`], its sensitive values already treated under the
//! log's redaction policy) is sealed with AES-256-GCM under a key derived from the audit
//! signing seed, bound to its tenant and a unique record id. The table therefore holds no
//! actor, address or parameter in clear, and a row the application's SQL writes by itself
//! (an injection, say) does not open: the relay replaces it in the log by an
//! `audit.outbox_record_rejected` event of the row's tenant instead of trusting it.
//!
//! Row-level security on the table: the application's roles may only `INSERT` rows of the
//! transaction's tenant (no `SELECT`, `UPDATE` or `DELETE`); Nova's login owns the table
//! and reads every tenant's rows only inside a transaction that names its reason.

use std::sync::Arc;
use std::time::Duration;

use nova_audit::{AuditEvent, AuditLog, RedactionPolicy};
use nova_crypto::primitives::{aes256gcm_open, aes256gcm_seal, hkdf_sha256};
use nova_tenancy::{Ident, TenantId};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::Error;

/// Events the relay moves per batch.
pub const RELAY_BATCH: i64 = 256;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_INFO: &[u8] = b"nova/audit-outbox/v1";

/// The outbox table of one schema.
#[derive(Clone)]
pub struct Outbox {
    table: String,
    insert: String,
    take: String,
    redaction: Arc<RedactionPolicy>,
    key: Arc<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// The outbox in `schema`, its records treated under `redaction` (the log's policy)
    /// and sealed under a key derived from `secret` (the audit signing seed, which every
    /// replica shares).
    ///
    /// # Errors
    /// [`Error::Crypto`] if the key cannot be derived.
    pub fn new(
        schema: &Ident,
        redaction: Arc<RedactionPolicy>,
        secret: &[u8; 32],
    ) -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf_sha256(None, secret, KEY_INFO, key.as_mut_slice())?;
        let table = format!("{schema}.audit_outbox");
        Ok(Self {
            insert: format!(
                "INSERT INTO {table} (tenant_id, record_id, record) VALUES ($1, $2, $3)"
            ),
            take: format!(
                "WITH batch AS (SELECT id FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM {table} o USING batch WHERE o.id = batch.id \
                 RETURNING o.id, o.tenant_id, o.record_id, o.record"
            ),
            table,
            redaction,
            key: Arc::new(key),
        })
    }

    /// The DDL: the table in `schema`, its row-level security, and its grants, in the
    /// shapes Nova's inspection accepts. `app_roles` may only insert rows of their
    /// transaction's tenant; `nova_login` owns the table and reads every tenant's rows only
    /// inside a transaction that names its reason (`nova.bypass_reason`, Nova's
    /// `nova_bypass` policy).
    #[must_use]
    pub fn create_sql(schema: &Ident, app_roles: &[&Ident], nova_login: &Ident) -> String {
        let t = format!("{schema}.audit_outbox");
        let apps = app_roles
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant_id uuid NOT NULL,
                record_id uuid NOT NULL UNIQUE,
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
            ",
            max = nova_audit::MAX_RECORD_LEN + NONCE_LEN + TAG_LEN,
            tenant = "tenant_id = NULLIF(current_setting('nova.tenant_id', true), '')::uuid",
            bypass = "current_setting('nova.bypass_reason', true) <> ''",
        )
    }

    /// The table, qualified.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    fn ad(tenant: TenantId, record_id: Uuid) -> [u8; 52] {
        let mut ad = [0u8; 52];
        ad[..20].copy_from_slice(b"nova/audit-outbox/v1");
        ad[20..36].copy_from_slice(tenant.as_uuid().as_bytes());
        ad[36..].copy_from_slice(record_id.as_bytes());
        ad
    }

    fn seal(&self, tenant: TenantId, record_id: Uuid, record: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Error::Crypto(nova_crypto::CryptoError::Rng))?;
        let sealed = aes256gcm_seal(
            self.key.as_slice(),
            &nonce,
            &Self::ad(tenant, record_id),
            record,
        )?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, tenant: TenantId, record_id: Uuid, bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        aes256gcm_open(
            self.key.as_slice(),
            nonce,
            &Self::ad(tenant, record_id),
            sealed,
        )
        .ok()
    }

    /// Writes `event` in the caller's transaction (a tenant transaction of the event's
    /// tenant: row-level security refuses any other).
    ///
    /// # Errors
    /// [`Error::AuditRecordTooLarge`] before anything is sent (the transaction stays
    /// usable); [`Error::Database`].
    pub async fn write(&self, conn: &mut PgConnection, event: &AuditEvent) -> Result<(), Error> {
        let record = Zeroizing::new(event.to_record(&self.redaction));
        if record.len() > nova_audit::MAX_RECORD_LEN {
            return Err(Error::AuditRecordTooLarge);
        }
        let record_id = Uuid::new_v4();
        let sealed = self.seal(event.tenant, record_id, &record)?;
        sqlx::query(AssertSqlSafe(self.insert.as_str()))
            .bind(event.tenant)
            .bind(record_id)
            .bind(sealed)
            .persistent(false)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The event a row holds, or the event that reports why it was rejected.
    fn event_of(&self, id: i64, tenant: TenantId, record_id: Uuid, sealed: &[u8]) -> AuditEvent {
        let rejected = |why: &str| {
            AuditEvent::builder(tenant, "audit.outbox_record_rejected", "audit.relay")
                .outcome(nova_audit::Outcome::Error)
                .param("reason", why)
                .build()
        };
        let mut event = match self.open(tenant, record_id, sealed) {
            None => rejected("does not open under the outbox key (not written by Nova)"),
            Some(record) => match AuditEvent::from_record(&record) {
                Err(_) => rejected("unreadable record"),
                Ok(e) if e.tenant != tenant => rejected("the record names another tenant"),
                Ok(e) => e,
            },
        };
        event
            .params
            .insert("outbox_id".into(), nova_audit::ParamValue::Int(id));
        event
    }

    /// Moves one batch into `log`: takes the oldest events, appends them, waits until the
    /// log holds them, then commits the delete. Returns how many moved.
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
            let record_id: Uuid = row.try_get(2)?;
            let sealed: Vec<u8> = row.try_get(3)?;
            batch.push((id, self.event_of(id, tenant, record_id, &sealed)));
        }
        batch.sort_by_key(|(id, _)| *id);
        let n = batch.len();
        // Queue the whole batch, then wait for each: the writer commits them together.
        let mut pending = Vec::with_capacity(n);
        for (_, event) in batch {
            match log.try_append(event.clone()) {
                Ok(fut) => pending.push(Box::pin(fut) as PendingAppend<'_>),
                Err(nova_audit::AppendError::Full) => {
                    pending.push(Box::pin(async move { log.append(event).await }));
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
/// process, and every `interval` for commits of other replicas. It and
/// [`crate::Nova::flush_audit`] take turns through `turn`, so a flush never returns while
/// the relay holds a batch.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) wake: Arc<Notify>,
    pub(crate) turn: Arc<Mutex<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// The relay; with `retention_days`, it also applies the audit log's retention at
    /// start and every [`RETENTION_EVERY`].
    pub(crate) fn spawn(
        outbox: Outbox,
        pool: PgPool,
        log: Arc<AuditLog>,
        interval: Duration,
        retention_days: Option<u32>,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let turn = Arc::new(Mutex::new(()));
        let (woken, my_turn) = (Arc::clone(&wake), Arc::clone(&turn));
        let task = tokio::spawn(async move {
            let mut pruned_at: Option<tokio::time::Instant> = None;
            loop {
                if let Some(days) = retention_days
                    && pruned_at.is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
                {
                    pruned_at = Some(tokio::time::Instant::now());
                    if let Err(e) = apply_retention(&log, days).await {
                        tracing::warn!(target: "nova::audit", error = %e, "audit retention failed; retrying later");
                    }
                }
                let moved = {
                    let _turn = my_turn.lock().await;
                    outbox.relay_batch(&pool, &log).await
                };
                match moved {
                    // A full batch: there may be more.
                    Ok(n) if i64::try_from(n).is_ok_and(|n| n == RELAY_BATCH) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "nova::audit", error = %e, "audit outbox relay failed; retrying");
                    }
                }
                let _ = tokio::time::timeout(interval, woken.notified()).await;
            }
        });
        Self { wake, turn, task }
    }

    /// Stops the task; a batch it held is rolled back (its events stay in the outbox).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// How often the relay applies the audit log's retention.
pub(crate) const RETENTION_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Prunes the content of events older than `days` days from the log; the number of
/// entries pruned in total, or `None` for a log that cannot prune.
pub(crate) async fn apply_retention(log: &AuditLog, days: u32) -> Result<Option<u64>, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let cutoff = now_ms.saturating_sub(u64::from(days).saturating_mul(86_400_000));
    Ok(log.prune_before(cutoff).await?)
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_are_sealed_to_their_tenant_and_record_id() {
        let schema = Ident::new("nova").unwrap();
        let outbox = Outbox::new(&schema, Arc::new(RedactionPolicy::new()), &[7; 32]).unwrap();
        let (tenant, id) = (TenantId::new_v4(), Uuid::new_v4());
        let event = AuditEvent::builder(tenant, "data.write", "x")
            .actor("user:someone-in-particular")
            .param("note", "a-visible-parameter")
            .build();
        let record = event.to_record(&RedactionPolicy::new());
        let sealed = outbox.seal(tenant, id, &record).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("someone-in-particular") && !text.contains("a-visible-parameter"));
        assert_eq!(
            outbox.event_of(1, tenant, id, &sealed).event_type,
            "data.write"
        );
        // Another row's id, another tenant, another key, a flipped bit: rejected.
        let other = Outbox::new(&schema, Arc::new(RedactionPolicy::new()), &[8; 32]).unwrap();
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        for e in [
            outbox.event_of(1, tenant, Uuid::new_v4(), &sealed),
            outbox.event_of(1, TenantId::new_v4(), id, &sealed),
            other.event_of(1, tenant, id, &sealed),
            outbox.event_of(1, tenant, id, &flipped),
            outbox.event_of(1, tenant, id, &[]),
        ] {
            assert_eq!(e.event_type, "audit.outbox_record_rejected");
        }
        // A well-sealed record that names another tenant than its row: rejected.
        let foreign = AuditEvent::builder(TenantId::new_v4(), "x", "y").build();
        let sealed = outbox
            .seal(tenant, id, &foreign.to_record(&RedactionPolicy::new()))
            .unwrap();
        let e = outbox.event_of(1, tenant, id, &sealed);
        assert_eq!(e.event_type, "audit.outbox_record_rejected");
        assert_eq!(e.tenant, tenant);
    }
}

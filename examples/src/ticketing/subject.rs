//! Data-subject rights and backups, composed from the crates that hold the data:
//! `nova-tenancy` finds and erases a subject's rows (under row-level security),
//! `nova-crypto` opens or shreds the subject's sealed fields, `nova-audit` records it.

use std::collections::HashMap;

use nova_audit::AuditEvent;
use nova_crypto::{Column, CryptoError, SubjectEnvelope};
use nova_tenancy::TenantContext;
use nova_tenancy::privacy::{erase_subject, export_subject, run_retention};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::ApiError;
use super::{AppState, Error};

/// The label of backup streams: a backup opens only as a backup of its tenant.
pub const BACKUP_LABEL: &str = "backup";

type Result<T> = std::result::Result<T, ApiError>;

/// The sealed columns of the subject map: (table key, column, the column's key, the
/// column holding the subject whose key sealed it).
fn sealed(s: &AppState) -> [(&'static str, &'static str, &Column, &'static str); 4] {
    [
        ("users", "email", &s.cols.email, "id"),
        ("users", "display_name", &s.cols.name, "id"),
        ("tickets", "body", &s.cols.ticket_body, "requester_id"),
        ("comments", "body", &s.cols.comment_body, "author_id"),
    ]
}

/// Everything held about `subject` in the caller's tenant, as one JSON document, with the
/// subject's sealed fields opened. Fields sealed under someone else's key (another
/// person's comment on the subject's ticket) are not in it: only rows that name the
/// subject are exported.
pub(crate) async fn export(s: &AppState, ctx: &TenantContext, subject: Uuid) -> Result<Value> {
    let mut tx = s.tenants.begin(ctx).await?;
    let mut doc = export_subject(&mut tx, &s.subject_map, subject).await?;
    let consents = s.consents.history(&mut tx, subject).await?;
    tx.commit().await?;

    // Every exported row names the subject, so one key opens every sealed field; open
    // them all first, then put the plaintexts in place.
    let handle = s.subjects.handle(ctx, subject).await?;
    let mut opened: HashMap<(String, &'static str, Uuid), Value> = HashMap::new();
    for (table, column, col, owner) in sealed(s) {
        let key = table_key(s, table, owner);
        for row in doc.rows(&key) {
            let (Some(id), Some(owner_id)) = (uuid_field(row, "id"), uuid_field(row, owner)) else {
                continue;
            };
            let Some(Value::String(text)) = row.get(column) else {
                continue;
            };
            let value = match SubjectEnvelope::from_text(text) {
                Ok(env) if owner_id == subject => match handle.open(&col.row(id), &env) {
                    Ok(plain) => {
                        Value::String(String::from_utf8_lossy(plain.expose_secret()).into_owned())
                    }
                    Err(CryptoError::KeyDestroyed) => Value::Null,
                    Err(e) => return Err(e.into()),
                },
                Ok(_) => continue,
                Err(e) => return Err(CryptoError::from(e).into()),
            };
            opened.insert((key.clone(), column, id), value);
        }
    }
    for (table, column, _, _) in sealed(s) {
        let key = table_key(s, table, sealed_owner(table));
        doc.map_column(&key, column, |row, v| {
            Ok::<_, Error>(match uuid_field(row, "id") {
                Some(id) => opened
                    .remove(&(key.clone(), column, id))
                    .unwrap_or(Value::Null),
                None => v.clone(),
            })
        })?;
    }
    // The blind index is a keyed hash of the email: not useful to the subject, left out.
    let key = table_key(s, "users", "id");
    doc.map_column(&key, "email_index", |_, _| Ok::<_, Error>(Value::Null))?;

    let mut out = doc.to_json();
    out["consents"] = json!(
        consents
            .iter()
            .map(|c| json!({
                "purpose": c.purpose,
                "granted": c.granted,
                "source": c.source,
                "recorded_at": c.recorded_at,
            }))
            .collect::<Vec<_>>()
    );
    Ok(out)
}

fn sealed_owner(table: &str) -> &'static str {
    match table {
        "tickets" => "requester_id",
        "comments" => "author_id",
        _ => "id",
    }
}

fn table_key(s: &AppState, table: &str, column: &str) -> String {
    s.subject_map_key(table, column)
}

fn uuid_field(row: &serde_json::Map<String, Value>, name: &str) -> Option<Uuid> {
    row.get(name)?.as_str()?.parse().ok()
}

/// Erases `subject` in the caller's tenant: their rows are anonymised as the subject map
/// says (tickets and consents are kept, without the subject's text), their key is
/// destroyed so every field sealed under it (in the database and in every backup) is
/// unreadable, and the audit log records it. One transaction: nothing is half-erased.
pub(crate) async fn erase(
    s: &AppState,
    ctx: &TenantContext,
    subject: Uuid,
    event: &mut AuditEvent,
) -> Result<Value> {
    let mut tx = s.tenants.begin(ctx).await?;
    let report = erase_subject(&mut tx, &s.subject_map, subject).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {}.users SET erased_at = now() WHERE tenant_id = $1 AND id = $2",
        s.names.app
    )))
    .bind(*ctx.tenant().as_uuid())
    .bind(subject)
    .execute(&mut *tx)
    .await?;
    // The key goes before the commit: if the commit then fails, the fields are already
    // unreadable, which errs on the side of the erasure.
    let shredded = s.subjects.shred(ctx, subject).await?;
    event.rows = Some(report.total());
    s.audit.append(event.clone()).await?;
    tx.commit().await?;
    Ok(json!({
        "subject": subject,
        "key_destroyed": shredded,
        "tables": report
            .entries()
            .iter()
            .map(|e| json!({ "table": e.key, "action": format!("{:?}", e.action), "rows": e.rows }))
            .collect::<Vec<_>>(),
    }))
}

/// Runs the configured retention rules in the caller's tenant.
pub(crate) async fn retention(s: &AppState, ctx: &TenantContext) -> Result<Vec<(String, u64)>> {
    let mut tx = s.tenants.begin(ctx).await?;
    let report = run_retention(&mut tx, &s.retention).await?;
    tx.commit().await?;
    Ok(report
        .entries()
        .iter()
        .map(|e| (e.key.clone(), e.rows))
        .collect())
}

/// A backup of the caller's tenant: its rows as stored (sealed fields stay sealed under
/// their subjects' keys), encrypted as one stream under the tenant's key. Key material is
/// not in it, so a subject erased after the backup stays unreadable in it.
pub(crate) async fn backup(s: &AppState, ctx: &TenantContext) -> Result<Vec<u8>> {
    let mut tx = s.tenants.begin(ctx).await?;
    let app = &s.names.app;
    let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT json_build_object(
            'users', (SELECT coalesce(json_agg(u ORDER BY u.id), '[]') FROM {app}.users u),
            'tickets', (SELECT coalesce(json_agg(t ORDER BY t.id), '[]') FROM {app}.tickets t),
            'comments', (SELECT coalesce(json_agg(c ORDER BY c.id), '[]') FROM {app}.comments c)
        )::text"
    )))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(dump.len() + 1024);
    s.keyring
        .encrypt_stream(ctx, BACKUP_LABEL, dump.as_bytes(), &mut out)?;
    Ok(out)
}

/// Decrypts a backup made by the service for the context's tenant into its JSON tables.
///
/// # Errors
/// When the stream is not this tenant's backup, was changed, or the tenant was shredded.
pub fn restore_backup(
    s: &AppState,
    ctx: &TenantContext,
    bytes: &[u8],
) -> std::result::Result<Value, Error> {
    let mut plain = Vec::with_capacity(bytes.len());
    s.keyring
        .decrypt_stream(ctx, BACKUP_LABEL, bytes, &mut plain)?;
    Ok(serde_json::from_slice(&plain)?)
}

//! Data-subject rights and backups, composed from the crates that hold the data:
//! `nova-tenancy` finds and erases a subject's rows (under row-level security), the scope
//! opens the subject's sealed fields, `nova-crypto` shreds the subject's key, and the audit
//! event commits with the erasure.

use std::collections::HashMap;

use nova::tenancy::TenantContext;
use nova::tenancy::privacy::{erase_subject, export_subject, run_retention};
use nova::{Decision, KeyOf, Scope};
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::ApiError;
use super::{App, Error};

/// The label of the stream key backups are encrypted under.
pub const BACKUP_LABEL: &str = "backup";

type Result<T> = std::result::Result<T, ApiError>;

/// The columns sealed under a data subject's key (as declared to Nova once), with the
/// column naming each row's subject (as the subject map declares it).
fn sealed(app: &App) -> Vec<(String, String, String)> {
    let entries = app.inner.subject_map.entries();
    app.nova
        .sealed_columns()
        .into_iter()
        .filter(|(_, _, key)| *key == KeyOf::Subject)
        .filter_map(|(table, column, _)| {
            let owner = entries
                .iter()
                .find(|e| e.table_name() == table)?
                .subject_column();
            Some((table, column, owner.to_owned()))
        })
        .collect()
}

pub(crate) async fn export(app: &App, scope: &mut Scope, subject: Uuid) -> Result<Value> {
    let (mut doc, consents) = {
        let tx = scope.tx().await?;
        let doc = export_subject(tx, &app.inner.subject_map, subject).await?;
        let consents = app.inner.consents.history(tx, subject).await?;
        (doc, consents)
    };
    // Open every sealed field of the subject's rows; fields of other people stay out.
    let columns = sealed(app);
    let mut opened: HashMap<(String, &str, Uuid), Value> = HashMap::new();
    for (table, column, owner) in &columns {
        let key = app.subject_map_key(table, owner);
        let mut sealed = Vec::new();
        for row in doc.rows(&key) {
            if let (Some(id), Some(owner_id), Some(Value::String(text))) = (
                uuid_field(row, "id"),
                uuid_field(row, owner),
                row.get(column),
            ) && owner_id == subject
            {
                sealed.push((id, text.clone()));
            }
        }
        for (id, text) in sealed {
            let plain = scope.open(table, column, id, Some(&text)).await?;
            opened.insert((key.clone(), column.as_str(), id), json!(plain));
        }
    }
    for (table, column, owner) in &columns {
        let key = app.subject_map_key(table, owner);
        doc.map_column(&key, column, |row, _| {
            Ok::<_, std::convert::Infallible>(
                uuid_field(row, "id")
                    .and_then(|id| opened.remove(&(key.clone(), column.as_str(), id)))
                    .unwrap_or(Value::Null),
            )
        })?;
    }
    // The blind index is a keyed hash of the email: not useful to the subject, left out.
    let key = app.subject_map_key("users", "id");
    doc.map_column(&key, "email_index", |_, _| {
        Ok::<_, std::convert::Infallible>(Value::Null)
    })?;

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

fn uuid_field(row: &serde_json::Map<String, Value>, name: &str) -> Option<Uuid> {
    row.get(name)?.as_str()?.parse().ok()
}

/// Erases the subject's rows and shreds its key; the event commits with the erasure.
pub(crate) async fn erase(
    app: &App,
    mut scope: Scope,
    allowed: &Decision,
    subject: Uuid,
) -> Result<Value> {
    let tenant = scope.context().tenant();
    let report = {
        let tx = scope.tx().await?;
        let report = erase_subject(tx, &app.inner.subject_map, subject).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET erased_at = now() WHERE tenant_id = $1 AND id = $2",
            app.table("users")
        )))
        .bind(tenant)
        .bind(subject)
        .execute(&mut **tx)
        .await?;
        report
    };
    // The key goes before the commit: if the commit then fails, the fields are already
    // unreadable, which errs on the side of the erasure.
    let shredded = app.nova.subjects().shred(scope.context(), subject).await?;
    let event = scope
        .event_for(allowed, "privacy.erase", "subject.erase")
        .resource(&format!("subjects/{subject}"))
        .rows(report.total())
        .build();
    scope.record(event).await?;
    scope.commit().await?;
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

pub(crate) async fn retention(app: &App, scope: &mut Scope) -> Result<Vec<(String, u64)>> {
    let report = run_retention(scope.tx().await?, &app.inner.retention).await?;
    Ok(report
        .entries()
        .iter()
        .map(|e| (e.key.clone(), e.rows))
        .collect())
}

pub(crate) async fn backup(app: &App, scope: &mut Scope) -> Result<Vec<u8>> {
    let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT json_build_object(
            'users', (SELECT coalesce(json_agg(u ORDER BY u.id), '[]') FROM {users} u),
            'tickets', (SELECT coalesce(json_agg(t ORDER BY t.id), '[]') FROM {tickets} t),
            'comments', (SELECT coalesce(json_agg(c ORDER BY c.id), '[]') FROM {comments} c)
        )::text",
        users = app.table("users"),
        tickets = app.table("tickets"),
        comments = app.table("comments"),
    )))
    .fetch_one(&mut **scope.tx().await?)
    .await?;
    let mut out = Vec::with_capacity(dump.len() + 1024);
    app.nova
        .keyring()
        .encrypt_stream(scope.context(), BACKUP_LABEL, dump.as_bytes(), &mut out)?;
    Ok(out)
}

/// Opens a backup made by `GET /admin/backup` for the tenant of `ctx`.
///
/// # Errors
/// When the backup does not open under the tenant's key or is not JSON.
pub fn restore_backup(
    app: &App,
    ctx: &TenantContext,
    bytes: &[u8],
) -> std::result::Result<Value, Error> {
    let mut plain = Vec::with_capacity(bytes.len());
    app.nova
        .keyring()
        .decrypt_stream(ctx, BACKUP_LABEL, bytes, &mut plain)?;
    Ok(serde_json::from_slice(&plain)?)
}

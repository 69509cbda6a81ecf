//! Data-subject rights in a [`Scope`]: export with the subject's sealed fields opened,
//! erasure with the subject's key shredded, retention as configured, consent records.

use std::sync::Arc;

use nova_crypto::{CryptoError, SubjectEnvelope};
use nova_tenancy::privacy::{
    Consent, ErasureReport, RetentionReport, erase_subject, export_subject, run_retention,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::Error;
use crate::scope::{Decision, Scope};
use crate::sealed::KeyOf;

/// What [`Scope::erase_subject`] did.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// Rows erased, anonymised or kept, per table.
    pub report: ErasureReport,
    /// Whether the subject had a key, now destroyed.
    pub key_destroyed: bool,
}

impl Erasure {
    /// The erasure as JSON: `{subject, key_destroyed, tables: [{table, action, rows}]}`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.report.subject(),
            "key_destroyed": self.key_destroyed,
            "tables": self.report.entries().iter().map(|e| json!({
                "table": e.key,
                "action": format!("{:?}", e.action),
                "rows": e.rows,
            })).collect::<Vec<_>>(),
        })
    }
}

fn uuid_field(row: &serde_json::Map<String, Value>, name: &str) -> Option<Uuid> {
    row.get(name)?.as_str()?.parse().ok()
}

impl Scope {
    /// Everything the tenant holds on `subject` (GDPR Art. 15 and 20), as JSON: the rows
    /// of every table given to [`crate::NovaBuilder::data_subjects`], their sealed fields
    /// opened (each row found by its `id` column, the row id it was sealed for), and the
    /// consent history when a ledger was given. A field sealed under another person's key
    /// is not the subject's to read and is `null`, as is a blind index (a `<column>_index`
    /// beside an indexed column: a keyed hash, of no use to the subject). Changes nothing;
    /// record the export's event in the scope.
    ///
    /// # Errors
    /// Database and privacy errors; [`Error::Crypto`] for a field that does not open.
    pub async fn export_subject(&mut self, subject: Uuid) -> Result<Value, Error> {
        let inner = Arc::clone(&self.nova.inner);
        let (mut doc, consents) = {
            let tx = self.tx().await?;
            let doc = export_subject(tx, &inner.data_subjects, subject).await?;
            let consents = match &inner.consents {
                Some(ledger) => Some(ledger.history(tx, subject).await?),
                None => None,
            };
            (doc, consents)
        };
        for entry in inner.data_subjects.entries() {
            let (key, owner) = (entry.key(), entry.subject_column());
            for (table, column, sealed) in inner.sealed.list() {
                if table != entry.table_name() {
                    continue;
                }
                // Open the values of the subject's rows; a value sealed under another
                // person's key is not the subject's to read and stays null.
                let mut opened = std::collections::HashMap::new();
                let values: Vec<(Uuid, String)> = doc
                    .rows(&key)
                    .iter()
                    .filter(|row| uuid_field(row, owner) == Some(subject))
                    .filter_map(|row| {
                        Some((
                            uuid_field(row, "id")?,
                            row.get(&column)?.as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                for (id, text) in values {
                    if sealed == KeyOf::Subject {
                        let env = SubjectEnvelope::from_text(&text).map_err(CryptoError::from)?;
                        if env.subject() != subject {
                            continue;
                        }
                    }
                    let plain = self.open(&table, &column, id, Some(&text)).await?;
                    opened.insert(id, json!(plain));
                }
                doc.map_column(&key, &column, |row, _| {
                    Ok::<_, std::convert::Infallible>(
                        uuid_field(row, "id")
                            .and_then(|id| opened.remove(&id))
                            .unwrap_or(Value::Null),
                    )
                })
                .unwrap_or_else(|never| match never {});
                if inner.sealed.get(&table, &column).is_ok_and(|s| s.indexed) {
                    let index = format!("{column}_index");
                    doc.map_column(&key, &index, |_, _| {
                        Ok::<_, std::convert::Infallible>(Value::Null)
                    })
                    .unwrap_or_else(|never| match never {});
                }
            }
        }
        let mut out = doc.to_json();
        if let Some(consents) = consents {
            out["consents"] = consents
                .iter()
                .map(|c| {
                    json!({
                        "purpose": c.purpose,
                        "granted": c.granted,
                        "source": c.source,
                        "recorded_at": c.recorded_at,
                    })
                })
                .collect();
        }
        Ok(out)
    }

    /// Erases `subject` (GDPR Art. 17) in the transaction, as the tables given to
    /// [`crate::NovaBuilder::data_subjects`] say, and destroys the subject's key, so every
    /// field sealed under it is unreadable everywhere, backups included. The key goes
    /// before the commit: should the commit fail, the fields are already unreadable, which
    /// errs on the side of the erasure; and since that cannot be undone, an event
    /// `privacy.subject_key_destroyed` with `decision`'s reasons is in the log before the
    /// key goes. Record the erasure's own event in the scope and commit.
    ///
    /// # Errors
    /// Database and privacy errors; [`Error::Audit`] when the key's event cannot be
    /// recorded (the key is then kept); [`Error::Crypto`] when the key store fails.
    pub async fn erase_subject(
        &mut self,
        decision: &Decision,
        subject: Uuid,
    ) -> Result<Erasure, Error> {
        let inner = Arc::clone(&self.nova.inner);
        let report = erase_subject(self.tx().await?, &inner.data_subjects, subject).await?;
        let event = self
            .event_for(decision, "privacy.subject_key_destroyed", "subject.erase")
            .resource(&format!("subjects/{subject}"))
            .build();
        self.record_now(event).await?;
        let key_destroyed = inner.subjects.shred(&self.ctx, subject).await?;
        Ok(Erasure {
            report,
            key_destroyed,
        })
    }

    /// Runs the retention rules of `[security.privacy]` for the caller's tenant, in the
    /// transaction. Record the run's event in the scope and commit.
    ///
    /// # Errors
    /// Database and privacy errors.
    pub async fn run_retention(&mut self) -> Result<RetentionReport, Error> {
        let inner = Arc::clone(&self.nova.inner);
        Ok(run_retention(self.tx().await?, &inner.retention).await?)
    }

    /// Records a consent decision of `subject` in the ledger given to
    /// [`crate::NovaBuilder::consents`], in the transaction.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a purpose or source the ledger refuses; [`Error::Config`]
    /// without a ledger; database errors.
    pub async fn record_consent(
        &mut self,
        subject: Uuid,
        purpose: &str,
        granted: bool,
        source: &str,
    ) -> Result<Consent, Error> {
        let inner = Arc::clone(&self.nova.inner);
        let ledger = inner
            .consents
            .as_ref()
            .ok_or_else(|| Error::config("no consent ledger (NovaBuilder::consents)".into()))?;
        let tx = self.tx().await?;
        ledger
            .record(tx, subject, purpose, granted, source)
            .await
            .map_err(|e| match e {
                nova_tenancy::Error::Privacy(
                    nova_tenancy::privacy::PrivacyError::InvalidPurpose
                    | nova_tenancy::privacy::PrivacyError::InvalidSource,
                ) => Error::Invalid("purpose: 1-64 of [a-z0-9_.-]; source: 1-256 bytes"),
                e => e.into(),
            })
    }
}

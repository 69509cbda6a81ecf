//! A portable form of an event, for outboxes and queues that carry events to the log.
//!
//! An event written by one process and appended to the log by another (for example through
//! an outbox table written in the same database transaction as the data it describes) must
//! cross storage without its sensitive values in clear. [`AuditEvent::to_record`] treats
//! every [`ParamValue::Sensitive`] value as the log will (keyed hash or `"[REDACTED]"`,
//! under the log's [`RedactionPolicy`]) and keeps the rest as it is; [`AuditEvent::from_record`]
//! gives back an event whose treated values are [`ParamValue::Treated`], which the log
//! encodes as they are. So an event that goes through a record reaches the log with the
//! same canonical encoding as one appended directly.
//!
//! ```
//! use nova_audit::{AuditEvent, RedactionPolicy};
//! use nova_tenancy::TenantId;
//!
//! let policy = RedactionPolicy::with_hash_key([7; 32]);
//! let event = AuditEvent::builder(TenantId::new_v4(), "data.write", "tickets.update")
//!     .sensitive_param("email", "alice@example.com")
//!     .build();
//! let record = event.to_record(&policy);
//! assert!(!String::from_utf8_lossy(&record).contains("alice"));
//! let back = AuditEvent::from_record(&record)?;
//! assert_eq!(back.canonical_json_with(&policy), event.canonical_json_with(&policy));
//! # Ok::<(), nova_audit::RecordError>(())
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use nova_tenancy::{RequestId, TenantId};
use serde::{Deserialize, Serialize};

use crate::event::{AuditEvent, Outcome, ParamValue, SCHEMA_VERSION};
use crate::redaction::{RedactionPolicy, Treatment};

/// Largest record [`AuditEvent::from_record`] reads, in bytes.
pub const MAX_RECORD_LEN: usize = 64 * 1024;

/// Why a record was refused. Never echoes the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Longer than [`MAX_RECORD_LEN`].
    #[error("audit record longer than {MAX_RECORD_LEN} bytes")]
    TooLong,
    /// Not a record of this schema version.
    #[error("malformed audit record")]
    Malformed,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u64,
    time_ms: u64,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    tenant: TenantId,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    actor: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    resource: Option<Cow<'a, str>>,
    outcome: WireOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<String, WireParam>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WireOutcome {
    Success,
    Failure,
    Denied,
    Error,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum WireParam {
    Text(String),
    Int(i64),
    Bool(bool),
    /// A sensitive value after its treatment.
    Treated(String),
}

impl AuditEvent {
    /// This event as a record (JSON), its sensitive values treated under `policy`, which
    /// must be the log's: the log then encodes the event read back from the record as it
    /// would have encoded this one.
    #[must_use]
    pub fn to_record(&self, policy: &RedactionPolicy) -> Vec<u8> {
        let params = self
            .params
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ParamValue::Text(s) => WireParam::Text(s.clone()),
                    ParamValue::Int(n) => WireParam::Int(*n),
                    ParamValue::Bool(b) => WireParam::Bool(*b),
                    ParamValue::Sensitive(s) => {
                        let rule = policy.param_rule(name).unwrap_or(Treatment::KeyedHash);
                        WireParam::Treated(policy.treat(rule, self.tenant, s))
                    }
                    ParamValue::Treated(s) => WireParam::Treated(s.clone()),
                };
                (name.clone(), value)
            })
            .collect();
        let wire = Wire {
            v: SCHEMA_VERSION,
            time_ms: self.time_ms,
            event_type: Cow::Borrowed(&self.event_type),
            tenant: self.tenant,
            actor: self.actor.as_deref().map(Cow::Borrowed),
            ip: self.ip,
            action: Cow::Borrowed(&self.action),
            resource: self.resource.as_deref().map(Cow::Borrowed),
            outcome: match self.outcome {
                Outcome::Success => WireOutcome::Success,
                Outcome::Failure => WireOutcome::Failure,
                Outcome::Denied => WireOutcome::Denied,
                Outcome::Error => WireOutcome::Error,
            },
            rows: self.rows,
            duration_ms: self.duration_ms,
            policies: self.policies.clone(),
            request_id: self.request_id,
            params,
        };
        // Serializing this struct of strings, integers and maps cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a record written by [`AuditEvent::to_record`].
    ///
    /// # Errors
    /// [`RecordError`] for a record that is too long, malformed, or of another version.
    pub fn from_record(record: &[u8]) -> Result<Self, RecordError> {
        if record.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        let wire: Wire<'_> = serde_json::from_slice(record).map_err(|_| RecordError::Malformed)?;
        if wire.v != SCHEMA_VERSION {
            return Err(RecordError::Malformed);
        }
        Ok(Self {
            time_ms: wire.time_ms,
            event_type: wire.event_type.into_owned(),
            tenant: wire.tenant,
            actor: wire.actor.map(Cow::into_owned),
            ip: wire.ip,
            action: wire.action.into_owned(),
            resource: wire.resource.map(Cow::into_owned),
            outcome: match wire.outcome {
                WireOutcome::Success => Outcome::Success,
                WireOutcome::Failure => Outcome::Failure,
                WireOutcome::Denied => Outcome::Denied,
                WireOutcome::Error => Outcome::Error,
            },
            rows: wire.rows,
            duration_ms: wire.duration_ms,
            policies: wire.policies,
            request_id: wire.request_id,
            params: wire
                .params
                .into_iter()
                .map(|(name, value)| {
                    let value = match value {
                        WireParam::Text(s) => ParamValue::Text(s),
                        WireParam::Int(n) => ParamValue::Int(n),
                        WireParam::Bool(b) => ParamValue::Bool(b),
                        WireParam::Treated(s) => ParamValue::Treated(s),
                    };
                    (name, value)
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = AuditEvent> {
        (
            any::<u64>(),
            "\\PC{0,12}",
            any::<u128>(),
            proptest::option::of("\\PC{0,12}"),
            proptest::option::of(any::<[u8; 4]>()),
            proptest::collection::btree_map(
                "[a-z_\u{e000}-\u{e010}\u{10000}]{1,6}",
                (0u8..4, "\\PC{0,10}", any::<i64>()),
                0..5,
            ),
            proptest::collection::vec("\\PC{0,8}", 0..3),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(time, kind, tenant, actor, ip, params, policies, rows)| {
                let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(tenant | 1))
                    .unwrap_or_else(|_| TenantId::new_v4());
                let mut b = AuditEvent::builder(tenant, &kind, "act").time_ms(time);
                if let Some(a) = actor {
                    b = b.actor(&a);
                }
                if let Some(ip) = ip {
                    b = b.ip(IpAddr::from(ip));
                }
                if let Some(r) = rows {
                    b = b.rows(r);
                }
                for p in &policies {
                    b = b.policy(p);
                }
                for (name, (kind, text, n)) in params {
                    b = match kind {
                        0 => b.param(&name, &text),
                        1 => b.int_param(&name, n),
                        2 => b.sensitive_param(&name, &format!("secret-{text}")),
                        _ => b.param(&name, &n.to_string()),
                    };
                }
                b.request_id(RequestId::generate()).build()
            })
    }

    proptest! {
        /// Through a record, an event reaches the log with the encoding it would have had,
        /// under a keyed policy and a redacting one, and no sensitive value is in the record.
        #[test]
        fn a_record_keeps_the_canonical_encoding(e in event(), hash_actor in any::<bool>()) {
            let mut keyed = RedactionPolicy::with_hash_key([9; 32]).hash_param("b");
            if hash_actor {
                keyed = keyed.hash_actor().redact_ip();
            }
            for policy in [keyed, RedactionPolicy::new().redact_param("a")] {
                let record = e.to_record(&policy);
                let back = AuditEvent::from_record(&record).unwrap();
                prop_assert_eq!(back.canonical_json_with(&policy), e.canonical_json_with(&policy));
                // Idempotent: a record of a record is the same record.
                prop_assert_eq!(back.to_record(&policy), record.clone());
                // Sensitive values (all `secret-...`) never appear in the record.
                let text = String::from_utf8(record).unwrap();
                prop_assert!(!text.contains("secret-"), "a sensitive value in clear");
            }
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn arbitrary_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = AuditEvent::from_record(&bytes);
        }
    }

    #[test]
    fn malformed_records_are_refused() {
        let tenant = TenantId::new_v4();
        let good = AuditEvent::builder(tenant, "t", "a")
            .build()
            .to_record(&RedactionPolicy::new());
        assert!(AuditEvent::from_record(&good).is_ok());
        let text = String::from_utf8(good).unwrap();
        for bad in [
            text.replace("\"v\":1", "\"v\":2"),
            text.replace("\"outcome\"", "\"result\""),
            text.replace('}', ",\"extra\":1}"),
            text.replace("\"success\"", "\"maybe\""),
            String::new(),
        ] {
            assert_eq!(
                AuditEvent::from_record(bad.as_bytes()),
                Err(RecordError::Malformed),
                "{bad}"
            );
        }
        let long = vec![b' '; MAX_RECORD_LEN + 1];
        assert_eq!(AuditEvent::from_record(&long), Err(RecordError::TooLong));
    }
}

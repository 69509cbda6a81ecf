//! Audit events and their canonical encoding.
//!
//! # Canonical JSON (schema version 1)
//!
//! An event is encoded as one JSON object, so that any language can recompute its leaf
//! hash: members sorted by key in UTF-8 byte order, no whitespace, no `null` (absent
//! optional members are omitted), integers only (no fractions or exponents), strings with
//! the minimal escapes of RFC 8785 §3.2.2.2 (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! control characters as lower-case `\u00xx`), everything else as raw UTF-8. This is RFC
//! 8785 (JCS) restricted to the value types an event can hold, with two differences a
//! verifier in another language must follow: keys sort in UTF-8 byte order, where JCS uses
//! UTF-16 code units (the two differ only for parameter names that mix characters from
//! U+E000–U+FFFF with characters above U+FFFF), and integers are exact 64-bit values
//! (`u64`/`i64`), beyond the 2^53 of I-JSON. This module must never encode a value marked
//! sensitive in clear.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;

use nova_tenancy::{RequestId, TenantId};

use crate::redaction::{RedactionPolicy, Treatment};

/// The schema version written in every event (`"v"`).
pub const SCHEMA_VERSION: u64 = 1;

/// What became of the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed (bad credential, validation error).
    Failure,
    /// Policy denied it.
    Denied,
    /// The system failed.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// A parameter value. [`ParamValue::Sensitive`] is never encoded in clear: it becomes
/// `"[REDACTED]"`, or a keyed hash when the log has a redaction key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamValue {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A value that must not reach a sink in clear.
    Sensitive(String),
    /// A sensitive value already treated (keyed-hashed or redacted) by
    /// [`AuditEvent::to_record`]: encoded as it is, never treated again.
    Treated(String),
}

impl fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => write!(f, "Text({s:?})"),
            Self::Int(i) => write!(f, "Int({i})"),
            Self::Bool(b) => write!(f, "Bool({b})"),
            Self::Sensitive(_) => f.write_str("Sensitive([REDACTED])"),
            Self::Treated(_) => f.write_str("Treated([REDACTED])"),
        }
    }
}

/// One audit event. Build with [`AuditEvent::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Kind of event, e.g. `auth.login_failed`, `data.export`.
    pub event_type: String,
    /// The tenant it happened in.
    pub tenant: TenantId,
    /// Who acted (user id, service principal, `system`).
    pub actor: Option<String>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// What was attempted, e.g. `tickets.read`.
    pub action: String,
    /// On what, e.g. `ticket/42`.
    pub resource: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// Rows affected.
    pub rows: Option<u64>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// Policies that decided it.
    pub policies: Vec<String>,
    /// The request it belongs to.
    pub request_id: Option<RequestId>,
    /// Further parameters.
    pub params: BTreeMap<String, ParamValue>,
}

/// Builds an [`AuditEvent`].
///
/// ```
/// use nova_audit::{AuditEvent, Outcome};
/// use nova_tenancy::TenantId;
///
/// let event = AuditEvent::builder(TenantId::new_v4(), "auth.login_failed", "auth.login")
///     .time_ms(1_700_000_000_000)
///     .actor("user:42")
///     .outcome(Outcome::Failure)
///     .sensitive_param("email", "alice@example.com")
///     .build();
/// let json = String::from_utf8(event.canonical_json()).unwrap();
/// assert!(!json.contains("alice"));
/// ```
#[derive(Debug, Clone)]
pub struct AuditEventBuilder(AuditEvent);

impl AuditEvent {
    /// Starts an event; the time defaults to now and the outcome to success.
    #[must_use]
    pub fn builder(tenant: TenantId, event_type: &str, action: &str) -> AuditEventBuilder {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        AuditEventBuilder(AuditEvent {
            time_ms,
            event_type: event_type.to_owned(),
            tenant,
            actor: None,
            ip: None,
            action: action.to_owned(),
            resource: None,
            outcome: Outcome::Success,
            rows: None,
            duration_ms: None,
            policies: Vec::new(),
            request_id: None,
            params: BTreeMap::new(),
        })
    }

    /// The canonical JSON encoding (see the module docs). Sensitive parameters appear as
    /// `"[REDACTED]"`.
    #[must_use]
    pub fn canonical_json(&self) -> Vec<u8> {
        self.canonical_json_with(&RedactionPolicy::new())
    }

    /// The canonical JSON encoding with `policy` applied: sensitive parameters and every
    /// value a rule names are redacted or keyed-hashed (see [`RedactionPolicy`]).
    #[must_use]
    pub fn canonical_json_with(&self, policy: &RedactionPolicy) -> Vec<u8> {
        let tenant = self.tenant;
        // Keys in sorted order, written by hand so that no serializer setting can change it.
        let mut out = String::with_capacity(512);
        out.push('{');
        let mut first = true;
        let mut key = |out: &mut String, k: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            push_str(out, k);
            out.push(':');
        };
        key(&mut out, "action");
        push_str(&mut out, &self.action);
        if let Some(a) = &self.actor {
            key(&mut out, "actor");
            match policy.actor_rule() {
                Some(rule) => push_str(&mut out, &policy.treat(rule, tenant, a)),
                None => push_str(&mut out, a),
            }
        }
        if let Some(d) = self.duration_ms {
            key(&mut out, "duration_ms");
            let _ = write!(out, "{d}");
        }
        key(&mut out, "event_type");
        push_str(&mut out, &self.event_type);
        if let Some(ip) = &self.ip {
            key(&mut out, "ip");
            let text = ip.to_string();
            match policy.ip_rule() {
                Some(rule) => push_str(&mut out, &policy.treat(rule, tenant, &text)),
                None => push_str(&mut out, &text),
            }
        }
        key(&mut out, "outcome");
        push_str(&mut out, self.outcome.as_str());
        if !self.params.is_empty() {
            key(&mut out, "params");
            out.push('{');
            for (i, (k, v)) in self.params.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(&mut out, k);
                out.push(':');
                let rule = policy.param_rule(k);
                match (v, rule) {
                    (ParamValue::Treated(s), _) => push_str(&mut out, s),
                    (ParamValue::Sensitive(s), rule) => {
                        let rule = rule.unwrap_or(Treatment::KeyedHash);
                        push_str(&mut out, &policy.treat(rule, tenant, s));
                    }
                    (ParamValue::Text(s), Some(rule)) => {
                        push_str(&mut out, &policy.treat(rule, tenant, s));
                    }
                    (ParamValue::Int(n), Some(rule)) => {
                        push_str(&mut out, &policy.treat(rule, tenant, &n.to_string()));
                    }
                    (ParamValue::Bool(b), Some(rule)) => {
                        push_str(&mut out, &policy.treat(rule, tenant, &b.to_string()));
                    }
                    (ParamValue::Text(s), None) => push_str(&mut out, s),
                    (ParamValue::Int(n), None) => {
                        let _ = write!(out, "{n}");
                    }
                    (ParamValue::Bool(b), None) => {
                        out.push_str(if *b { "true" } else { "false" });
                    }
                }
            }
            out.push('}');
        }
        if !self.policies.is_empty() {
            key(&mut out, "policies");
            out.push('[');
            for (i, p) in self.policies.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(&mut out, p);
            }
            out.push(']');
        }
        if let Some(r) = &self.request_id {
            key(&mut out, "request_id");
            push_str(&mut out, r.to_text().as_str());
        }
        if let Some(r) = &self.resource {
            key(&mut out, "resource");
            push_str(&mut out, r);
        }
        if let Some(r) = self.rows {
            key(&mut out, "rows");
            let _ = write!(out, "{r}");
        }
        key(&mut out, "tenant");
        push_str(&mut out, self.tenant.to_text().as_str());
        key(&mut out, "time_ms");
        let _ = write!(out, "{}", self.time_ms);
        key(&mut out, "v");
        let _ = write!(out, "{SCHEMA_VERSION}");
        out.push('}');
        out.into_bytes()
    }
}

/// A JSON string with RFC 8785 escaping. Copies runs of bytes that need no escape in one
/// go; every byte it escapes is ASCII, so each slice boundary is a character boundary.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl AuditEventBuilder {
    /// Sets the time.
    #[must_use]
    pub fn time_ms(mut self, ms: u64) -> Self {
        self.0.time_ms = ms;
        self
    }
    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        self.0.actor = Some(actor.to_owned());
        self
    }
    /// Sets the client address.
    #[must_use]
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.0.ip = Some(ip);
        self
    }
    /// Sets the resource.
    #[must_use]
    pub fn resource(mut self, resource: &str) -> Self {
        self.0.resource = Some(resource.to_owned());
        self
    }
    /// Sets the outcome.
    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.0.outcome = outcome;
        self
    }
    /// Sets the rows affected.
    #[must_use]
    pub fn rows(mut self, rows: u64) -> Self {
        self.0.rows = Some(rows);
        self
    }
    /// Sets the duration.
    #[must_use]
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.0.duration_ms = Some(ms);
        self
    }
    /// Adds a policy that decided the action.
    #[must_use]
    pub fn policy(mut self, policy: &str) -> Self {
        self.0.policies.push(policy.to_owned());
        self
    }
    /// Sets the request id.
    #[must_use]
    pub fn request_id(mut self, id: RequestId) -> Self {
        self.0.request_id = Some(id);
        self
    }
    /// Adds a text parameter.
    #[must_use]
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.0
            .params
            .insert(name.to_owned(), ParamValue::Text(value.to_owned()));
        self
    }
    /// Adds an integer parameter.
    #[must_use]
    pub fn int_param(mut self, name: &str, value: i64) -> Self {
        self.0
            .params
            .insert(name.to_owned(), ParamValue::Int(value));
        self
    }
    /// Adds a parameter that must never reach a sink in clear.
    #[must_use]
    pub fn sensitive_param(mut self, name: &str, value: &str) -> Self {
        self.0
            .params
            .insert(name.to_owned(), ParamValue::Sensitive(value.to_owned()));
        self
    }
    /// The event.
    #[must_use]
    pub fn build(self) -> AuditEvent {
        self.0
    }
}

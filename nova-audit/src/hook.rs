//! [`HookRecorder`]: nova-audit's implementation of the root crate's
//! [`AuditHook`](nova_tenancy::AuditHook), the small trait every Nova crate reports its
//! security events through. Installed with [`nova_tenancy::set_audit_hook`], it turns each
//! [`SecurityEvent`] into an [`AuditEvent`] and hands it to a callback (queue it on an
//! [`AuditLog`](crate::AuditLog), feed a [`Detector`](crate::Detector)), so no crate
//! depends on this one to be audited.
//!
//! Use the hook or the [`AuditLayer`](crate::AuditLayer) `tracing` bridge, not both: every
//! event reaches each of them, so installing both records it twice.

use std::fmt;

use nova_tenancy::{Actor, AuditHook, SecurityEvent, TenantId};

use crate::detect::event_types;
use crate::event::{AuditEvent, Outcome};

/// The event type and outcome a Nova event name maps to (shared with the `tracing`
/// bridge, so both paths record the same event types).
pub(crate) fn classify(name: &str) -> (String, Outcome) {
    match name {
        "crypto_shred" | "kek_destroyed" => (event_types::KEY_DESTROYED.into(), Outcome::Success),
        "rls_bypass" => (event_types::RLS_BYPASS.into(), Outcome::Success),
        "cross_tenant_attempt" => (event_types::CROSS_TENANT.into(), Outcome::Denied),
        "api_key_failure" | "api_key_unknown" => {
            (event_types::LOGIN_FAILED.into(), Outcome::Failure)
        }
        "refresh_token_reuse" => ("nova.refresh_token_reuse".into(), Outcome::Failure),
        n if n.ends_with("_refused") || n.ends_with("_denied") => {
            (format!("nova.{n}"), Outcome::Denied)
        }
        n => (format!("nova.{n}"), Outcome::Success),
    }
}

/// An [`AuditHook`] that records every Nova security event as an [`AuditEvent`] through a
/// callback. Events that name no tenant (KEK rotation, an unknown API key) are recorded
/// under the operator tenant with the parameter `tenant_field` = `absent`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use nova_audit::HookRecorder;
/// use nova_tenancy::{AuditHook, SecurityEvent, TenantId};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let recorder = HookRecorder::new(TenantId::new_v4(), move |e| sink.lock().unwrap().push(e));
/// // In a service: nova_tenancy::set_audit_hook(Arc::new(recorder)).
/// let tenant = TenantId::new_v4();
/// recorder.record(&SecurityEvent::new("rls_bypass").tenant(tenant));
/// let events = seen.lock().unwrap();
/// assert_eq!((events[0].tenant, events[0].event_type.as_str()), (tenant, "db.rls_bypass"));
/// ```
pub struct HookRecorder<F> {
    operator_tenant: TenantId,
    on_event: F,
}

impl<F> fmt::Debug for HookRecorder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRecorder")
            .field("operator_tenant", &self.operator_tenant)
            .finish_non_exhaustive()
    }
}

impl<F: Fn(AuditEvent) + Send + Sync + 'static> HookRecorder<F> {
    /// A recorder that passes each event to `on_event`.
    pub fn new(operator_tenant: TenantId, on_event: F) -> Self {
        Self {
            operator_tenant,
            on_event,
        }
    }

    /// The audit event a security event becomes.
    #[must_use]
    pub fn to_audit_event(&self, event: &SecurityEvent<'_>) -> AuditEvent {
        let name = event.name();
        let (event_type, outcome) = classify(name);
        let tenant = event.tenant_id().unwrap_or(self.operator_tenant);
        let mut b = AuditEvent::builder(tenant, &event_type, name).outcome(outcome);
        match event.actor_of() {
            Some(Actor::User(u)) => b = b.actor(&format!("user:{u}")),
            Some(Actor::ApiKey(k)) => b = b.actor(&format!("api_key:{k}")),
            Some(_) | None => {}
        }
        if let Some(id) = event.request() {
            b = b.request_id(id);
        }
        for (k, v) in event.detail_values() {
            b = b.param(k, &v.to_string());
        }
        // The recorder's own marker goes last, so no detail can overwrite it.
        if event.tenant_id().is_none() {
            b = b.param("tenant_field", "absent");
        }
        b.build()
    }
}

impl<F: Fn(AuditEvent) + Send + Sync + 'static> AuditHook for HookRecorder<F> {
    fn record(&self, event: &SecurityEvent<'_>) {
        (self.on_event)(self.to_audit_event(event));
    }
}

//! The `tracing` bridge: every Nova crate reports security events as `tracing` events on
//! the `nova::audit` target (system contexts, RLS bypasses, routing refusals, API-key
//! failures and cross-tenant attempts, refresh-token reuse, key rotation and shredding).
//! [`AuditLayer`] turns them, and an application's own events on that target, into
//! [`AuditEvent`]s for a sink, without any crate depending on this one.
//!
//! Mapping: the `event` field names the event; `tenant` (else `requested_tenant`, as in a
//! cross-tenant attempt) must be a tenant id (events without one, such as KEK rotation, are
//! recorded under the layer's operator tenant with the parameter `tenant_field` = `absent`,
//! or `invalid` when it does not parse, in which case the value is not recorded); `user` becomes
//! the actor `user:<id>`, else `key_id` becomes `api_key:<id>`; `request_id` is parsed;
//! every other field, and the message, becomes a parameter. Event names the detection
//! rules watch are mapped to [`event_types`](crate::event_types); the rest become
//! `nova.<event>`.

use std::fmt;

use nova_tenancy::{AUDIT_TARGET, RequestId, TenantId};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use crate::event::AuditEvent;
use crate::hook::classify;

/// A `tracing_subscriber` layer that records `nova::audit` events through a callback.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use nova_audit::AuditLayer;
/// use nova_tenancy::{TenantContext, TenantId};
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let operator = TenantId::new_v4();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let layer = AuditLayer::new(operator, move |event| sink.lock().unwrap().push(event));
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     // nova-tenancy reports every system context on `nova::audit`.
///     let _ctx = TenantContext::system(TenantId::new_v4(), "nightly export").unwrap();
/// });
/// assert_eq!(seen.lock().unwrap()[0].event_type, "nova.system_context");
/// ```
pub struct AuditLayer<F> {
    operator_tenant: TenantId,
    on_event: F,
}

impl<F> fmt::Debug for AuditLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("operator_tenant", &self.operator_tenant)
            .finish_non_exhaustive()
    }
}

impl<F: Fn(AuditEvent) + Send + Sync + 'static> AuditLayer<F> {
    /// A layer that passes each recorded event to `on_event`. Events that name no tenant are
    /// recorded under `operator_tenant`.
    pub fn new(operator_tenant: TenantId, on_event: F) -> Self {
        Self {
            operator_tenant,
            on_event,
        }
    }
}

#[derive(Default)]
struct Fields {
    event: Option<String>,
    tenant: Option<String>,
    user: Option<String>,
    key_id: Option<String>,
    request_id: Option<String>,
    message: Option<String>,
    text: Vec<(String, String)>,
    ints: Vec<(String, i64)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        let slot = match field.name() {
            "event" => &mut self.event,
            "tenant" => &mut self.tenant,
            "user" => &mut self.user,
            "key_id" => &mut self.key_id,
            "request_id" => &mut self.request_id,
            "message" => &mut self.message,
            name => {
                self.text.push((name.to_owned(), value));
                return;
            }
        };
        *slot = Some(value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.ints.push((field.name().to_owned(), value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.ints.push((field.name().to_owned(), v)),
            Err(_) => self.put(field, value.to_string()),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl<S, F> Layer<S> for AuditLayer<F>
where
    S: tracing::Subscriber,
    F: Fn(AuditEvent) + Send + Sync + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != AUDIT_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = fields.event.take().unwrap_or_else(|| "unnamed".into());
        let (event_type, outcome) = classify(&name);
        // nova-auth names a cross-tenant attempt by the tenant it tried to reach.
        let tenant_text = fields.tenant.clone().or_else(|| {
            fields
                .text
                .iter()
                .find(|(k, _)| k == "requested_tenant")
                .map(|(_, v)| v.clone())
        });
        let (tenant, tenant_field) = match tenant_text.as_deref().map(str::parse::<TenantId>) {
            Some(Ok(t)) => (t, None),
            Some(Err(_)) => (self.operator_tenant, Some("invalid")),
            None => (self.operator_tenant, Some("absent")),
        };
        let mut builder = AuditEvent::builder(tenant, &event_type, &name).outcome(outcome);
        if let Some(user) = &fields.user {
            builder = builder.actor(&format!("user:{user}"));
        } else if let Some(key) = &fields.key_id {
            builder = builder.actor(&format!("api_key:{key}"));
        }
        let mut request_field = None;
        match fields.request_id.as_deref().map(str::parse::<RequestId>) {
            Some(Ok(id)) => builder = builder.request_id(id),
            Some(Err(_)) => request_field = Some("invalid"),
            None => {}
        }
        for (k, v) in &fields.text {
            builder = builder.param(k, v);
        }
        for (k, v) in &fields.ints {
            builder = builder.int_param(k, *v);
        }
        // The bridge's own markers go last, so that no emitted field can overwrite them.
        if let Some(message) = &fields.message {
            builder = builder.param("message", message);
        }
        if let Some(why) = tenant_field {
            builder = builder.param("tenant_field", why);
        }
        if let Some(why) = request_field {
            builder = builder.param("request_id_field", why);
        }
        (self.on_event)(builder.build());
    }
}

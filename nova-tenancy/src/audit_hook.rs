//! The small trait through which every Nova crate reports security events (system contexts,
//! RLS bypasses, routing refusals, authentication failures, cross-tenant attempts, key
//! rotation and destruction, policy denials) to whatever records them.
//!
//! It lives in the root crate so that no Nova crate depends on another to be audited:
//! `nova-audit` implements [`AuditHook`] (`nova_audit::HookRecorder`), an application can
//! implement it for its own pipeline, and a service installs one hook for the process with
//! [`set_audit_hook`]. Every event is also emitted as a `tracing` event on
//! [`AUDIT_TARGET`](crate::AUDIT_TARGET), so a service that records through `tracing`
//! needs no hook. This module must never let a hook's failure change the outcome of the
//! operation being reported.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::ids::{RequestId, TenantId, UserId};

/// Receives the security events of every Nova crate in the process.
///
/// `record` runs on the thread of the operation being reported, inside it: keep it short
/// and never block (queue the event, as `nova_audit::AuditLog::try_append` does).
pub trait AuditHook: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &SecurityEvent<'_>);
}

/// Who acted, when a Nova crate knows.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Actor<'a> {
    /// A user.
    User(UserId),
    /// An API key, by its public key id.
    ApiKey(&'a dyn fmt::Display),
}

impl fmt::Debug for Actor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "User({u})"),
            Self::ApiKey(k) => write!(f, "ApiKey({k})"),
        }
    }
}

/// One security event, as a Nova crate reports it. Its `name` is the same as the `event`
/// field of the `tracing` event emitted beside it (`rls_bypass`, `api_key_failure`,
/// `crypto_shred`, ...); `details` never hold secrets.
#[derive(Clone, Copy)]
pub struct SecurityEvent<'a> {
    name: &'static str,
    tenant: Option<TenantId>,
    actor: Option<Actor<'a>>,
    request_id: Option<RequestId>,
    details: &'a [(&'static str, &'a dyn fmt::Display)],
}

impl fmt::Debug for SecurityEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details: Vec<String> = self
            .details
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.debug_struct("SecurityEvent")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("actor", &self.actor)
            .field("request_id", &self.request_id)
            .field("details", &details)
            .finish()
    }
}

impl<'a> SecurityEvent<'a> {
    /// An event named `name`.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            tenant: None,
            actor: None,
            request_id: None,
            details: &[],
        }
    }

    /// The tenant concerned.
    #[must_use]
    pub const fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Who acted.
    #[must_use]
    pub const fn actor(mut self, actor: Actor<'a>) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The request it happened in.
    #[must_use]
    pub const fn request_id(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Further named values (never secrets).
    #[must_use]
    pub const fn details(mut self, details: &'a [(&'static str, &'a dyn fmt::Display)]) -> Self {
        self.details = details;
        self
    }

    /// The event's name.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The tenant concerned, if any.
    #[must_use]
    pub const fn tenant_id(&self) -> Option<TenantId> {
        self.tenant
    }

    /// Who acted, if known.
    #[must_use]
    pub const fn actor_of(&self) -> Option<Actor<'a>> {
        self.actor
    }

    /// The request, if known.
    #[must_use]
    pub const fn request(&self) -> Option<RequestId> {
        self.request_id
    }

    /// The further named values.
    #[must_use]
    pub const fn detail_values(&self) -> &'a [(&'static str, &'a dyn fmt::Display)] {
        self.details
    }
}

static HOOK: OnceLock<Arc<dyn AuditHook>> = OnceLock::new();

/// Installs the process's audit hook. It can be set once, like a global `tracing`
/// subscriber, so that no later code can silently replace the recorder.
///
/// # Errors
/// Gives the hook back when one is already installed.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use nova_tenancy::{AuditHook, SecurityEvent, TenantContext, TenantId, set_audit_hook};
///
/// struct Count(AtomicUsize);
/// impl AuditHook for Count {
///     fn record(&self, event: &SecurityEvent<'_>) {
///         if event.name() == "system_context" {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let count = Arc::new(Count(AtomicUsize::new(0)));
/// set_audit_hook(count.clone()).ok().expect("first hook");
/// let _ctx = TenantContext::system(TenantId::new_v4(), "nightly export")?;
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), nova_tenancy::ContextError>(())
/// ```
pub fn set_audit_hook(hook: Arc<dyn AuditHook>) -> Result<(), Arc<dyn AuditHook>> {
    HOOK.set(hook)
}

/// Reports `event` to the installed hook, if any. Nova's crates call this beside each
/// `tracing` event on [`AUDIT_TARGET`](crate::AUDIT_TARGET); applications may call it for
/// their own security events.
pub fn report(event: &SecurityEvent<'_>) {
    if let Some(hook) = HOOK.get() {
        // A hook's panic must not turn the reported operation into a failure (or abort a
        // half-done one): it is caught here and the operation goes on.
        let recorded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.record(event)));
        if recorded.is_err() {
            tracing::error!(target: "nova_tenancy::audit_hook", event = event.name(), "audit hook panicked; event not recorded");
        }
    }
}

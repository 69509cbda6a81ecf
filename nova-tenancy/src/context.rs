//! The tenant context: who is acting, for which tenant, under which isolation — built only
//! from a verified credential or through the explicit, reported system path.
//!
//! There is no `Default`, no `Deserialize` and no public field: a `TenantContext` cannot be
//! conjured from strings a request supplied. This module must never gain a constructor
//! that skips [`CredentialVerifier`] or [`TenantContext::system`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::ids::{RequestId, TenantId, UserId};
use crate::names::{AuthMethod, FactorKind, Region, Role};

/// The `tracing` target under which Nova reports security-relevant events (system contexts,
/// RLS bypasses, refused cross-tenant attempts). `nova-audit`'s tracing bridge records
/// events with this target.
pub const AUDIT_TARGET: &str = "nova::audit";

/// How a tenant's data is separated from other tenants'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Isolation {
    /// Shared tables; PostgreSQL row-level security separates tenants.
    Logical,
    /// One schema per tenant in a shared database (row-level security still applies).
    Schema,
    /// One database per tenant, reached through its own pool.
    Database,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Logical => "logical",
            Self::Schema => "schema",
            Self::Database => "database",
        })
    }
}

/// Where a context came from. Kept in the context so that every later layer (policy, audit,
/// database) can tell a user's request from a system job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Built from a credential that a [`CredentialVerifier`] checked.
    Verified {
        /// The verifier's stable name, e.g. `nova-auth/jwt`.
        verifier: &'static str,
    },
    /// Built by [`TenantContext::system`] for work no user asked for (migrations, jobs).
    System {
        /// Why the system acted, as written in the calling code.
        reason: &'static str,
    },
}

/// Implemented by the components that check credentials (`nova-auth`'s JWT verifier and API
/// key store). Only they should call [`TenantContext::from_verified`]; the verifier's name is
/// stamped into every context it creates, so an unexpected source is visible in audit logs.
///
/// Rust cannot stop another crate from implementing this trait; what it guarantees is that
/// every context names the component that vouched for it.
pub trait CredentialVerifier {
    /// A stable, human-readable name for this verifier, e.g. `nova-auth/jwt`.
    fn verifier_name(&self) -> &'static str;
}

/// What a verifier established about the caller. Consumed by [`TenantContext::from_verified`].
///
/// ```
/// use nova_tenancy::{CredentialVerifier, Role, TenantContext, TenantId, UserId, VerifiedIdentity};
///
/// struct MyVerifier;
/// impl CredentialVerifier for MyVerifier {
///     fn verifier_name(&self) -> &'static str { "example/verifier" }
/// }
///
/// let tenant = TenantId::new_v4();
/// let identity = VerifiedIdentity::new(tenant)
///     .user(UserId::new_v4())
///     .roles([Role::new("agent")?]);
/// let ctx = TenantContext::from_verified(&MyVerifier, identity);
/// assert_eq!(ctx.tenant(), tenant);
/// assert!(ctx.has_role("agent"));
/// # Ok::<(), nova_tenancy::NameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    tenant: TenantId,
    user: Option<UserId>,
    roles: Vec<Role>,
    permissions: Vec<Role>,
    shared_roles: Option<Arc<[Role]>>,
    shared_permissions: Option<Arc<[Role]>>,
    request_id: Option<RequestId>,
    region: Option<Region>,
    isolation: Isolation,
    auth_time: Option<SystemTime>,
    factor_time: Option<SystemTime>,
    methods: Vec<AuthMethod>,
}

impl VerifiedIdentity {
    /// The verified tenant; everything else starts empty and [`Isolation::Logical`].
    #[must_use]
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            user: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            shared_roles: None,
            shared_permissions: None,
            request_id: None,
            region: None,
            isolation: Isolation::Logical,
            auth_time: None,
            factor_time: None,
            methods: Vec::new(),
        }
    }

    /// When a second factor (something held or something the user is) was last verified,
    /// when that differs from [`VerifiedIdentity::authenticated_at`] (a session stepped up
    /// after its login). Without it, a context whose methods include a second factor, or
    /// `mfa`, counts its second factor from the authentication time.
    #[must_use]
    pub fn second_factor_at(mut self, at: SystemTime) -> Self {
        self.factor_time = Some(at);
        self
    }

    /// When the user last authenticated (OpenID Connect `auth_time`): the moment the
    /// methods below were used, not when the credential was issued.
    #[must_use]
    pub fn authenticated_at(mut self, at: SystemTime) -> Self {
        self.auth_time = Some(at);
        self
    }

    /// How the user authenticated (RFC 8176 `amr` values), sorted, duplicates dropped.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        self.methods.extend(methods);
        self.methods.sort_unstable();
        self.methods.dedup();
        self
    }

    /// The verified user or service principal.
    #[must_use]
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// The roles the credential grants (sorted; duplicates are dropped).
    #[must_use]
    pub fn roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles.extend(roles);
        self.roles.sort_unstable();
        self.roles.dedup();
        self
    }

    /// Fine-grained permissions or scopes the credential grants (e.g. `tickets:read`),
    /// sorted, duplicates dropped.
    #[must_use]
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = Role>) -> Self {
        self.permissions.extend(permissions);
        self.permissions.sort_unstable();
        self.permissions.dedup();
        self
    }

    /// Roles as a shared list (sorted and de-duplicated here if needed), for verifiers that
    /// build many contexts from one stored credential: the list is shared, not copied.
    #[must_use]
    pub fn shared_roles(mut self, roles: Arc<[Role]>) -> Self {
        self.shared_roles = Some(normalise(roles));
        self
    }

    /// Permissions as a shared list; see [`VerifiedIdentity::shared_roles`].
    #[must_use]
    pub fn shared_permissions(mut self, permissions: Arc<[Role]>) -> Self {
        self.shared_permissions = Some(normalise(permissions));
        self
    }

    /// The request id to correlate with; a fresh one is generated when absent.
    #[must_use]
    pub fn request_id(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The data-residency region the credential is bound to.
    #[must_use]
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// The isolation mode the tenant is provisioned with.
    #[must_use]
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }
}

fn normalise(list: Arc<[Role]>) -> Arc<[Role]> {
    if list.windows(2).all(|w| w[0] < w[1]) {
        list
    } else {
        let mut v = list.to_vec();
        v.sort_unstable();
        v.dedup();
        v.into()
    }
}

/// A shared list alone is used as it is; otherwise the lists are merged, sorted, deduplicated.
fn merge(shared: Option<Arc<[Role]>>, own: Vec<Role>) -> Arc<[Role]> {
    match shared {
        Some(s) if own.is_empty() => s,
        Some(s) => {
            let mut v = own;
            v.extend(s.iter().cloned());
            v.sort_unstable();
            v.dedup();
            v.into()
        }
        None => own.into(),
    }
}

/// Why [`TenantContext::system`] refused to build a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A system context needs a reason an auditor can read.
    #[error("a system context needs a non-empty reason")]
    MissingReason,
    /// Only a system context may be re-pointed at another isolation mode or region.
    #[error("only a system context can change its isolation mode or region")]
    NotSystem,
    /// A step-up belongs to a user's context, not a system context or a service's.
    #[error("a step-up needs a user's context")]
    StepUpNeedsUser,
    /// A step-up needs something held or something the user is.
    #[error("a step-up needs a second factor (something held or something the user is)")]
    NotASecondFactor,
}

static SYSTEM_CONTEXTS: AtomicU64 = AtomicU64::new(0);

/// Number of system contexts created by this process, for metrics.
#[must_use]
pub fn system_contexts_created() -> u64 {
    SYSTEM_CONTEXTS.load(Ordering::Relaxed)
}

/// The verified identity of a request within one tenant. Cheap to clone.
///
/// A context is the only key to tenant data: [`crate::TenantPool::begin`] takes one and
/// scopes the database transaction to its tenant.
///
/// It cannot be built from request data directly:
///
/// ```compile_fail
/// let ctx: nova_tenancy::TenantContext = serde_json::from_str("{}").unwrap();
/// ```
#[derive(Clone)]
pub struct TenantContext {
    tenant: TenantId,
    user: Option<UserId>,
    roles: Arc<[Role]>,
    permissions: Arc<[Role]>,
    request_id: RequestId,
    region: Option<Region>,
    isolation: Isolation,
    origin: Origin,
    auth_time: Option<SystemTime>,
    /// When a second factor was last verified (see [`TenantContext::mfa_within`]).
    factor_time: Option<SystemTime>,
    methods: Arc<[AuthMethod]>,
}

impl TenantContext {
    /// Builds a context from what `verifier` established about the caller.
    #[must_use]
    pub fn from_verified<V: CredentialVerifier + ?Sized>(
        verifier: &V,
        identity: VerifiedIdentity,
    ) -> Self {
        Self {
            tenant: identity.tenant,
            user: identity.user,
            roles: merge(identity.shared_roles, identity.roles),
            permissions: merge(identity.shared_permissions, identity.permissions),
            request_id: identity.request_id.unwrap_or_else(RequestId::generate),
            region: identity.region,
            isolation: identity.isolation,
            origin: Origin::Verified {
                verifier: verifier.verifier_name(),
            },
            factor_time: identity.factor_time.or_else(|| {
                identity
                    .methods
                    .iter()
                    .any(|m| m.is_second_factor() || m.as_str() == "mfa")
                    .then_some(identity.auth_time)
                    .flatten()
            }),
            auth_time: identity.auth_time,
            methods: identity.methods.into(),
        }
    }

    /// This context after a second factor that `verifier` checked (a TOTP code, a security
    /// key): `method` joins the authentication methods, and both the authentication time
    /// and the second factor's time become `at`. Everything else (tenant, user, roles,
    /// request id, and the origin's verifier) is kept; the step-up is reported as an
    /// `mfa_step_up` event naming `verifier` and the method. Whether the result is a
    /// multi-factor authentication still depends on the methods' kinds: a step-up with
    /// `otp` after a login with `otp` is one kind, not two.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use nova_tenancy::{AuthMethod, CredentialVerifier, TenantContext, TenantId, UserId, VerifiedIdentity};
    /// # struct Totp;
    /// # impl CredentialVerifier for Totp { fn verifier_name(&self) -> &'static str { "totp" } }
    /// let now = SystemTime::now();
    /// let ctx = TenantContext::from_verified(&Totp, VerifiedIdentity::new(TenantId::new_v4())
    ///     .user(UserId::new_v4())
    ///     .methods([AuthMethod::new("pwd")?])
    ///     .authenticated_at(now - Duration::from_secs(3600)));
    /// assert!(!ctx.has_mfa());
    /// let stepped = ctx.stepped_up(&Totp, AuthMethod::new("otp").unwrap(), now)?;
    /// assert!(stepped.mfa_within(Duration::from_secs(900), now));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ContextError::StepUpNeedsUser`] for a system context or one without a user;
    /// [`ContextError::NotASecondFactor`] when `method` is not something held or something
    /// the user is (a password re-entered is not a second factor).
    pub fn stepped_up<V: CredentialVerifier + ?Sized>(
        &self,
        verifier: &V,
        method: AuthMethod,
        at: SystemTime,
    ) -> Result<Self, ContextError> {
        if self.is_system() || self.user.is_none() {
            return Err(ContextError::StepUpNeedsUser);
        }
        if !method.is_second_factor() {
            return Err(ContextError::NotASecondFactor);
        }
        let verifier = verifier.verifier_name();
        tracing::info!(
            target: AUDIT_TARGET,
            event = "mfa_step_up",
            tenant = %self.tenant,
            request_id = %self.request_id,
            verifier,
            method = %method,
            "second factor verified"
        );
        crate::audit_hook::report(
            &crate::SecurityEvent::new("mfa_step_up")
                .tenant(self.tenant)
                .request_id(self.request_id)
                .details(&[("verifier", &verifier), ("method", &method.as_str())]),
        );
        let mut methods = self.methods.to_vec();
        methods.push(method);
        methods.sort_unstable();
        methods.dedup();
        Ok(Self {
            auth_time: Some(at),
            factor_time: Some(at),
            methods: methods.into(),
            ..self.clone()
        })
    }

    /// A context for work that no verified caller asked for: migrations, scheduled jobs,
    /// data-subject erasure. It has no user and no roles, is marked [`Origin::System`], and
    /// its creation is reported as a `warn` event on [`AUDIT_TARGET`] and counted in
    /// [`system_contexts_created`].
    ///
    /// `reason` is a `&'static str` on purpose: it is written in code, where a reviewer sees
    /// it, and it cannot carry request data into the audit trail.
    ///
    /// ```
    /// use nova_tenancy::{TenantContext, TenantId};
    /// let ctx = TenantContext::system(TenantId::new_v4(), "nightly retention job")?;
    /// assert!(ctx.is_system());
    /// assert!(ctx.user().is_none());
    /// # Ok::<(), nova_tenancy::ContextError>(())
    /// ```
    ///
    /// # Errors
    /// [`ContextError::MissingReason`] when `reason` is blank.
    pub fn system(tenant: TenantId, reason: &'static str) -> Result<Self, ContextError> {
        if reason.trim().is_empty() {
            return Err(ContextError::MissingReason);
        }
        let request_id = RequestId::generate();
        SYSTEM_CONTEXTS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "system_context",
            tenant = %tenant,
            request_id = %request_id,
            reason,
            "system context created"
        );
        crate::audit_hook::report(
            &crate::SecurityEvent::new("system_context")
                .tenant(tenant)
                .request_id(request_id)
                .details(&[("reason", &reason)]),
        );
        Ok(Self {
            tenant,
            user: None,
            roles: Arc::from([]),
            permissions: Arc::from([]),
            request_id,
            region: None,
            isolation: Isolation::Logical,
            origin: Origin::System { reason },
            auth_time: None,
            factor_time: None,
            methods: Arc::from([]),
        })
    }

    /// A copy of this system context addressing a tenant provisioned with another
    /// isolation mode. Verified contexts carry what their credential said and cannot be
    /// re-pointed.
    ///
    /// # Errors
    /// [`ContextError::NotSystem`] for a verified context.
    pub fn with_isolation(&self, isolation: Isolation) -> Result<Self, ContextError> {
        if !self.is_system() {
            return Err(ContextError::NotSystem);
        }
        Ok(Self {
            isolation,
            ..self.clone()
        })
    }

    /// A copy of this system context bound to a data-residency region. Verified contexts
    /// carry what their credential said and cannot be re-bound.
    ///
    /// # Errors
    /// [`ContextError::NotSystem`] for a verified context.
    pub fn with_region(&self, region: Region) -> Result<Self, ContextError> {
        if !self.is_system() {
            return Err(ContextError::NotSystem);
        }
        Ok(Self {
            region: Some(region),
            ..self.clone()
        })
    }

    /// The tenant every action in this context is confined to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The acting user or service principal; `None` for system contexts.
    #[must_use]
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// The roles granted by the credential.
    #[must_use]
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Whether the credential granted `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }

    /// The permissions (scopes) granted by the credential.
    #[must_use]
    pub fn permissions(&self) -> &[Role] {
        &self.permissions
    }

    /// Whether the credential granted `permission`.
    #[must_use]
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p.as_str() == permission)
    }

    /// The request this context belongs to.
    #[must_use]
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// When the user last authenticated, if the credential said (`auth_time`).
    #[must_use]
    pub fn auth_time(&self) -> Option<SystemTime> {
        self.auth_time
    }

    /// When a second factor was last verified, if the authentication had one.
    #[must_use]
    pub fn second_factor_time(&self) -> Option<SystemTime> {
        self.factor_time
    }

    /// How the user authenticated (RFC 8176 `amr` values), sorted.
    #[must_use]
    pub fn auth_methods(&self) -> &[AuthMethod] {
        &self.methods
    }

    /// Whether the authentication used more than one factor: the methods include `mfa`,
    /// or methods from two of the three kinds RFC 8176 §2 names — something known (`pwd`,
    /// `pin`, `kba`), something held (`otp`, `hwk`, `swk`, `sms`, `tel`, `sc`) and
    /// something the user is (`face`, `fpt`, `iris`, `retina`, `vbm`). Unknown methods
    /// count for nothing; no methods means no.
    #[must_use]
    pub fn has_mfa(&self) -> bool {
        let mut kinds = [false; 3];
        for m in self.methods.iter() {
            if m.as_str() == "mfa" {
                return true;
            }
            match m.factor_kind() {
                Some(FactorKind::Knowledge) => kinds[0] = true,
                Some(FactorKind::Possession) => kinds[1] = true,
                Some(FactorKind::Inherence) => kinds[2] = true,
                None => {}
            }
        }
        kinds.iter().filter(|k| **k).count() >= 2
    }

    /// Whether the authentication is multi-factor ([`TenantContext::has_mfa`]) and its
    /// second factor was verified no longer than `max_age` before `now` (a minute of clock
    /// skew into the future is allowed). Fails closed: no second factor, or no time for it,
    /// is `false`; a later re-authentication with a password does not refresh it.
    #[must_use]
    pub fn mfa_within(&self, max_age: Duration, now: SystemTime) -> bool {
        const SKEW: Duration = Duration::from_secs(60);
        self.has_mfa()
            && self
                .factor_time
                .is_some_and(|at| match now.duration_since(at) {
                    Ok(age) => age <= max_age,
                    Err(ahead) => ahead.duration() <= SKEW,
                })
    }

    /// The data-residency region the credential is bound to, if any.
    #[must_use]
    pub fn region(&self) -> Option<&Region> {
        self.region.as_ref()
    }

    /// The isolation mode the caller expects the tenant to have.
    #[must_use]
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Where this context came from.
    #[must_use]
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether this is a system context rather than a verified caller.
    #[must_use]
    pub fn is_system(&self) -> bool {
        matches!(self.origin, Origin::System { .. })
    }
}

impl fmt::Debug for TenantContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantContext")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("roles", &self.roles)
            .field("permissions", &self.permissions)
            .field("request_id", &self.request_id)
            .field("region", &self.region)
            .field("isolation", &self.isolation)
            .field("origin", &self.origin)
            .field("auth_time", &self.auth_time)
            .field("auth_methods", &self.methods)
            .finish()
    }
}

#[cfg(test)]
mod mfa_tests {
    use super::*;

    struct V;
    impl CredentialVerifier for V {
        fn verifier_name(&self) -> &'static str {
            "test/mfa"
        }
    }

    fn with(methods: &[&str], at: Option<SystemTime>) -> TenantContext {
        let mut id = VerifiedIdentity::new(TenantId::new_v4())
            .user(crate::ids::UserId::new_v4())
            .methods(methods.iter().map(|m| AuthMethod::new(m).unwrap()));
        if let Some(at) = at {
            id = id.authenticated_at(at);
        }
        TenantContext::from_verified(&V, id)
    }

    #[test]
    fn two_kinds_of_factor_or_mfa_make_a_multi_factor_authentication() {
        assert!(with(&["pwd", "otp"], None).has_mfa());
        assert!(with(&["mfa"], None).has_mfa());
        assert!(with(&["hwk", "fpt"], None).has_mfa());
        assert!(!with(&["pwd"], None).has_mfa());
        assert!(
            !with(&["otp", "sms"], None).has_mfa(),
            "two held factors are one kind"
        );
        assert!(!with(&["pwd", "pin", "kba"], None).has_mfa());
        assert!(!with(&["pwd", "unknown"], None).has_mfa());
        assert!(!with(&[], None).has_mfa());
    }

    #[test]
    fn freshness_fails_closed_without_a_time_and_allows_a_minute_of_skew() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let fifteen = Duration::from_secs(900);
        assert!(!with(&["mfa"], None).mfa_within(fifteen, now));
        assert!(with(&["mfa"], Some(now - fifteen)).mfa_within(fifteen, now));
        assert!(
            !with(&["mfa"], Some(now - fifteen - Duration::from_secs(1))).mfa_within(fifteen, now)
        );
        assert!(with(&["mfa"], Some(now + Duration::from_secs(60))).mfa_within(fifteen, now));
        assert!(!with(&["mfa"], Some(now + Duration::from_secs(61))).mfa_within(fifteen, now));
        assert!(!with(&["pwd"], Some(now)).mfa_within(fifteen, now));
    }

    #[test]
    fn a_step_up_adds_its_method_and_time_and_keeps_the_rest() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let ctx = with(&["pwd"], Some(now - Duration::from_secs(7200)));
        let up = ctx
            .stepped_up(&V, AuthMethod::new("otp").unwrap(), now)
            .unwrap();
        assert_eq!(up.tenant(), ctx.tenant());
        assert_eq!(up.request_id(), ctx.request_id());
        assert_eq!(up.auth_time(), Some(now));
        let names: Vec<&str> = up.auth_methods().iter().map(AuthMethod::as_str).collect();
        assert_eq!(names, ["otp", "pwd"]);
        assert!(up.mfa_within(Duration::from_secs(1), now));
        assert!(!ctx.has_mfa());
    }

    #[test]
    fn a_step_up_needs_a_user_and_a_second_factor_and_adds_no_kind_it_lacks() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let m = |s: &str| AuthMethod::new(s).unwrap();
        let user_ctx = |methods: &[&str]| {
            TenantContext::from_verified(
                &V,
                VerifiedIdentity::new(TenantId::new_v4())
                    .user(crate::ids::UserId::new_v4())
                    .methods(methods.iter().map(|s| m(s)))
                    .authenticated_at(now - Duration::from_secs(3600)),
            )
        };
        // A password again is not a second factor; nor are non-factor values.
        for not_a_factor in ["pwd", "pin", "user", "geo", "mfa", "custom"] {
            assert_eq!(
                user_ctx(&["pwd"])
                    .stepped_up(&V, m(not_a_factor), now)
                    .unwrap_err(),
                ContextError::NotASecondFactor,
                "{not_a_factor}"
            );
        }
        // otp after an otp login is still one kind.
        let same = user_ctx(&["otp"]).stepped_up(&V, m("otp"), now).unwrap();
        assert!(!same.has_mfa());
        // A session whose login methods are unknown gains one kind only.
        let unknown = user_ctx(&[]).stepped_up(&V, m("otp"), now).unwrap();
        assert!(!unknown.mfa_within(Duration::from_secs(900), now));
        // No step-up for system contexts or services.
        let system = TenantContext::system(TenantId::new_v4(), "job").unwrap();
        assert_eq!(
            system.stepped_up(&V, m("otp"), now).unwrap_err(),
            ContextError::StepUpNeedsUser
        );
        let service = TenantContext::from_verified(&V, VerifiedIdentity::new(TenantId::new_v4()));
        assert_eq!(
            service.stepped_up(&V, m("hwk"), now).unwrap_err(),
            ContextError::StepUpNeedsUser
        );
    }

    #[test]
    fn a_second_factor_ages_from_its_own_time_not_a_later_login() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let m = |s: &str| AuthMethod::new(s).unwrap();
        let ctx = TenantContext::from_verified(
            &V,
            VerifiedIdentity::new(TenantId::new_v4())
                .methods([m("pwd"), m("otp")])
                .authenticated_at(now)
                .second_factor_at(now - Duration::from_secs(3600)),
        );
        assert!(ctx.has_mfa());
        assert!(!ctx.mfa_within(Duration::from_secs(900), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestVerifier;
    impl CredentialVerifier for TestVerifier {
        fn verifier_name(&self) -> &'static str {
            "test/verifier"
        }
    }

    #[test]
    fn verified_context_records_its_verifier_and_dedups_roles() {
        let t = TenantId::new_v4();
        let agent = Role::new("agent").unwrap();
        let ctx = TenantContext::from_verified(
            &TestVerifier,
            VerifiedIdentity::new(t).roles([agent.clone(), agent]),
        );
        assert_eq!(
            ctx.origin(),
            Origin::Verified {
                verifier: "test/verifier"
            }
        );
        assert_eq!(ctx.roles().len(), 1);
        assert!(!ctx.is_system());
        assert!(!ctx.has_role("admin"));
    }

    #[test]
    fn verified_context_cannot_be_re_pointed() {
        let ctx =
            TenantContext::from_verified(&TestVerifier, VerifiedIdentity::new(TenantId::new_v4()));
        assert_eq!(
            ctx.with_isolation(Isolation::Schema).unwrap_err(),
            ContextError::NotSystem
        );
        let eu = Region::new("eu").unwrap();
        assert_eq!(
            ctx.with_region(eu.clone()).unwrap_err(),
            ContextError::NotSystem
        );
        let sys = TenantContext::system(TenantId::new_v4(), "job").unwrap();
        assert_eq!(
            sys.with_region(eu).unwrap().region().map(Region::as_str),
            Some("eu")
        );
    }

    #[test]
    fn system_context_is_visibly_different_and_counted() {
        let before = system_contexts_created();
        let ctx = TenantContext::system(TenantId::new_v4(), "test job").unwrap();
        assert!(ctx.is_system());
        assert!(ctx.roles().is_empty());
        assert_eq!(ctx.origin(), Origin::System { reason: "test job" });
        assert!(system_contexts_created() > before);
        assert!(format!("{ctx:?}").contains("System"));
    }

    #[test]
    fn system_context_refuses_blank_reason() {
        assert_eq!(
            TenantContext::system(TenantId::new_v4(), "  ").unwrap_err(),
            ContextError::MissingReason
        );
    }
}

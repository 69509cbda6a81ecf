//! Server-side sessions: an opaque token (stored as a hash) tied to tenant, user, client
//! address and user agent, with an absolute expiry and an idle timeout; revoke one session
//! or all of a user's. This module must never return a session past either limit.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use nova_tenancy::{
    AUDIT_TARGET, Actor, AuthMethod, CredentialVerifier, Role, SecurityEvent, TenantContext,
    TenantId, UserId, VerifiedIdentity, report,
};

use crate::error::AuthError;
use crate::opaque::{IssuedSecret, new_bearer, parse_bearer};

/// Prefix of every Nova session token.
pub const SESSION_PREFIX: &str = "nova_ss_";

/// Checks a session token's format and checksum (no lookup); returns the SHA-256 of its
/// secret part, the store key.
///
/// # Errors
/// [`AuthError::MalformedCredential`].
pub fn parse_session_token(token: &str) -> Result<[u8; 32], AuthError> {
    parse_bearer(SESSION_PREFIX, token)
}

/// One stored session (token hash only).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the token's secret part.
    pub token_hash: [u8; 32],
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// The roles the sign-in resolved; every context of the session carries them.
    pub roles: Vec<Role>,
    /// The client address at login.
    pub ip: IpAddr,
    /// The user agent at login.
    pub user_agent: String,
    /// When created.
    pub created_at: SystemTime,
    /// Absolute expiry.
    pub expires_at: SystemTime,
    /// Last request seen.
    pub last_seen_at: SystemTime,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// How the user authenticated (RFC 8176 `amr` values), including any step-up.
    pub methods: Vec<AuthMethod>,
    /// When the last step-up (a second factor) was verified, if any.
    pub mfa_at: Option<SystemTime>,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// Where sessions live.
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    fn create(&self, session: SessionRecord) -> impl Future<Output = Result<(), AuthError>> + Send;
    /// The session for a token hash.
    fn get(
        &self,
        token_hash: &[u8; 32],
    ) -> impl Future<Output = Result<Option<SessionRecord>, AuthError>> + Send;
    /// Records activity.
    fn touch(
        &self,
        token_hash: &[u8; 32],
        at: SystemTime,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
    /// Revokes one session; `true` if it existed.
    fn revoke(&self, token_hash: &[u8; 32])
    -> impl Future<Output = Result<bool, AuthError>> + Send;
    /// Revokes all of a user's sessions in a tenant; returns how many.
    fn revoke_user(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<u64, AuthError>> + Send;
    /// Records a verified step-up: adds `methods` to the session's methods and sets its
    /// step-up time to `at`. `false` when the session does not exist (any more). A store
    /// that does not implement it refuses every step-up.
    fn record_step_up(
        &self,
        token_hash: &[u8; 32],
        methods: &[AuthMethod],
        at: SystemTime,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send {
        let _ = (token_hash, methods, at);
        async { Err(AuthError::NotASecondFactor) }
    }
}

/// Proof that a second factor of one user was just verified: what
/// [`Sessions::step_up`] takes, so that a step-up is never recorded on someone's word.
/// [`crate::totp::TotpVerifier::verify_factor`] makes one for a TOTP code; a factor another
/// library verified (a security key) is declared with [`VerifiedFactor::attested`], by
/// name, where a reviewer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "record it with Sessions::step_up"]
pub struct VerifiedFactor {
    tenant: TenantId,
    user: UserId,
    method: AuthMethod,
}

impl VerifiedFactor {
    pub(crate) fn new(tenant: TenantId, user: UserId, method: AuthMethod) -> Self {
        Self {
            tenant,
            user,
            method,
        }
    }

    /// A factor verified outside Nova (a WebAuthn assertion, say) for `user` of `tenant`,
    /// with its RFC 8176 method (`hwk`, `swk`, `fpt`, ...).
    ///
    /// # Errors
    /// [`AuthError::NotASecondFactor`] for a method that is not something held or
    /// something the user is (a password is not a second factor).
    pub fn attested(tenant: TenantId, user: UserId, method: AuthMethod) -> Result<Self, AuthError> {
        if !method.is_second_factor() {
            return Err(AuthError::NotASecondFactor);
        }
        Ok(Self::new(tenant, user, method))
    }

    /// The method verified.
    #[must_use]
    pub fn method(&self) -> &AuthMethod {
        &self.method
    }
}

/// Who signed in, and how: what every context of a new session carries.
///
/// ```
/// use nova_auth::SessionLogin;
/// use nova_tenancy::{AuthMethod, Role, TenantId, UserId};
/// let login = SessionLogin::new(TenantId::new_v4(), UserId::new_v4())
///     .roles([Role::new("agent")?])
///     .methods([AuthMethod::new("pwd")?]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SessionLogin {
    tenant: TenantId,
    user: UserId,
    roles: Vec<Role>,
    methods: Vec<AuthMethod>,
}

impl SessionLogin {
    /// A sign-in of `user` in `tenant`, with no role and no recorded method yet.
    #[must_use]
    pub fn new(tenant: TenantId, user: UserId) -> Self {
        Self {
            tenant,
            user,
            roles: Vec::new(),
            methods: Vec::new(),
        }
    }

    /// The user's roles (as the application resolved them at sign-in).
    #[must_use]
    pub fn roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }

    /// How the user authenticated (`pwd`; `pwd` and `otp` for a sign-in that already
    /// asked for a second factor).
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }
}

/// Creates and validates sessions.
pub struct Sessions<S: SessionStore> {
    store: S,
    lifetime: Duration,
    idle_timeout: Duration,
}

impl<S: SessionStore> CredentialVerifier for Sessions<S> {
    fn verifier_name(&self) -> &'static str {
        "nova-auth/session"
    }
}

impl<S: SessionStore> Sessions<S> {
    /// Sessions in `store` lasting at most `lifetime`, ended after `idle_timeout` without use.
    pub fn new(store: S, lifetime: Duration, idle_timeout: Duration) -> Self {
        Self {
            store,
            lifetime,
            idle_timeout,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Starts a session for `login` from `ip`; the token is shown once. The session's
    /// contexts carry the login's roles and methods, with the sign-in time as their
    /// authentication time (and, for a sign-in with two kinds of factor, as the second
    /// factor's time only after a [`Sessions::step_up`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn start(
        &self,
        login: SessionLogin,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<IssuedSecret, AuthError> {
        let SessionLogin {
            tenant,
            user,
            mut roles,
            mut methods,
        } = login;
        roles.sort_unstable();
        roles.dedup();
        methods.sort_unstable();
        methods.dedup();
        let now = SystemTime::now();
        let (token, token_hash) = new_bearer(SESSION_PREFIX)?;
        let user_agent: String = user_agent
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        self.store
            .create(SessionRecord {
                token_hash,
                tenant,
                user,
                roles,
                ip,
                user_agent,
                created_at: now,
                expires_at: now.checked_add(self.lifetime).ok_or(AuthError::Store(
                    "session lifetime overflows the clock".into(),
                ))?,
                last_seen_at: now,
                idle_timeout: self.idle_timeout,
                methods,
                mfa_at: None,
            })
            .await?;
        Ok(IssuedSecret::new(token))
    }

    /// Starts a session with no role; the token is shown once.
    ///
    /// # Errors
    /// Store errors.
    pub async fn create(
        &self,
        tenant: TenantId,
        user: UserId,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<IssuedSecret, AuthError> {
        self.create_with_methods(tenant, user, ip, user_agent, &[])
            .await
    }

    /// [`Sessions::create`] for a login made with `methods` (`pwd`, or `pwd` and `otp`
    /// for a login that already asked for a second factor): the session's contexts carry
    /// them, with the login time as their authentication time.
    ///
    /// # Errors
    /// Store errors.
    pub async fn create_with_methods(
        &self,
        tenant: TenantId,
        user: UserId,
        ip: IpAddr,
        user_agent: &str,
        methods: &[AuthMethod],
    ) -> Result<IssuedSecret, AuthError> {
        let login = SessionLogin::new(tenant, user).methods(methods.iter().cloned());
        self.start(login, ip, user_agent).await
    }

    /// Records a second factor the caller has just verified for this session (a TOTP code
    /// checked with [`crate::totp::Totp`], a security key) and returns the session's
    /// context after it: `method` joins the methods and its time is now, so
    /// [`crate::totp::MfaPolicy::check_context`] counts the second factor's age from now.
    /// Whether that makes the session multi-factor depends on the login's methods
    /// ([`Sessions::create_with_methods`]): `otp` after a `pwd` login is two kinds.
    ///
    /// # Errors
    /// [`AuthError::NotASecondFactor`] for a method that is not something held or
    /// something the user is; [`AuthError::InvalidCredential`] for a factor verified for
    /// another user or tenant than the session's, or a session revoked meanwhile; as
    /// [`Sessions::validate`] otherwise.
    pub async fn step_up(
        &self,
        presented: &str,
        factor: VerifiedFactor,
    ) -> Result<TenantContext, AuthError> {
        self.step_up_at(presented, factor, SystemTime::now()).await
    }

    /// [`Sessions::step_up`] at a given time (the session is checked, and the factor
    /// recorded, as of `now`).
    ///
    /// # Errors
    /// As [`Sessions::step_up`].
    pub async fn step_up_at(
        &self,
        presented: &str,
        factor: VerifiedFactor,
        now: SystemTime,
    ) -> Result<TenantContext, AuthError> {
        let VerifiedFactor {
            tenant,
            user,
            method,
        } = factor;
        if !method.is_second_factor() {
            return Err(AuthError::NotASecondFactor);
        }
        // The session must be valid (not expired, not idle) to be stepped up, and its own.
        let before = self.validate_at(presented, now).await?;
        if before.tenant() != tenant || before.user() != Some(user) {
            return Err(AuthError::InvalidCredential);
        }
        let hash = parse_session_token(presented)?;
        if !self
            .store
            .record_step_up(&hash, std::slice::from_ref(&method), now)
            .await?
        {
            return Err(AuthError::InvalidCredential);
        }
        let ctx = self.validate_at(presented, now).await?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "mfa_step_up",
            tenant = %ctx.tenant(),
            request_id = %ctx.request_id(),
            method = %method,
            "second factor verified for a session"
        );
        report(
            &SecurityEvent::new("mfa_step_up")
                .tenant(ctx.tenant())
                .request_id(ctx.request_id())
                .details(&[("method", &method.as_str())]),
        );
        Ok(ctx)
    }

    /// Validates a session token and records the activity.
    ///
    /// # Errors
    /// [`AuthError::MalformedCredential`], [`AuthError::InvalidCredential`] (unknown or
    /// revoked), [`AuthError::CredentialExpired`], [`AuthError::SessionIdle`].
    pub async fn validate(&self, presented: &str) -> Result<TenantContext, AuthError> {
        self.validate_at(presented, SystemTime::now()).await
    }

    /// [`Sessions::validate`] at a given time.
    ///
    /// # Errors
    /// As [`Sessions::validate`].
    pub async fn validate_at(
        &self,
        presented: &str,
        now: SystemTime,
    ) -> Result<TenantContext, AuthError> {
        let hash = parse_session_token(presented)?;
        let s = self
            .store
            .get(&hash)
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        if now >= s.expires_at {
            self.store.revoke(&hash).await?;
            return Err(AuthError::CredentialExpired);
        }
        if now
            .duration_since(s.last_seen_at)
            .is_ok_and(|idle| idle >= s.idle_timeout)
        {
            self.store.revoke(&hash).await?;
            return Err(AuthError::SessionIdle);
        }
        self.store.touch(&hash, now).await?;
        let mut identity = VerifiedIdentity::new(s.tenant)
            .user(s.user)
            .roles(s.roles)
            .methods(s.methods)
            .authenticated_at(s.mfa_at.unwrap_or(s.created_at));
        if let Some(at) = s.mfa_at {
            identity = identity.second_factor_at(at);
        }
        Ok(TenantContext::from_verified(self, identity))
    }

    /// Ends one session.
    ///
    /// # Errors
    /// Malformed token or store errors.
    pub async fn revoke(&self, presented: &str) -> Result<bool, AuthError> {
        let hash = parse_session_token(presented)?;
        self.store.revoke(&hash).await
    }

    /// Ends every session of a user in a tenant (after a password change, or on suspicion).
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke_all(&self, tenant: TenantId, user: UserId) -> Result<u64, AuthError> {
        let n = self.store.revoke_user(tenant, user).await?;
        tracing::info!(target: AUDIT_TARGET, event = "sessions_revoked", tenant = %tenant, user = %user, count = n, "all sessions of a user revoked");
        report(
            &SecurityEvent::new("sessions_revoked")
                .tenant(tenant)
                .actor(Actor::User(user))
                .details(&[("count", &n)]),
        );
        Ok(n)
    }
}

impl<S: SessionStore> fmt::Debug for Sessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

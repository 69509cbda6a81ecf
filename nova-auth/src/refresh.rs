//! Refresh tokens (OAuth 2.0 Security BCP, RFC 9700 §4.14): opaque, high-entropy, stored
//! only as a hash, grouped in a family; each use rotates to a new token, and a second use
//! of a spent token revokes the whole family — whoever holds the stolen copy and the
//! legitimate client are both logged out, and the reuse is reported.
//!
//! This module must never rotate a token that was already used, and never accept a token
//! of a revoked family.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use nova_tenancy::{AUDIT_TARGET, Actor, SecurityEvent, TenantId, UserId, report};
use uuid::Uuid;

use crate::error::AuthError;
use crate::opaque::{IssuedSecret, new_bearer, parse_bearer};

/// Prefix of every Nova refresh token.
pub const REFRESH_PREFIX: &str = "nova_rt_";
/// Default refresh-token lifetime: 7 days.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a refresh token's format and checksum (no lookup); returns the SHA-256 of its
/// secret part, the store key.
///
/// # Errors
/// [`AuthError::MalformedCredential`].
pub fn parse_refresh_token(token: &str) -> Result<[u8; 32], AuthError> {
    parse_bearer(REFRESH_PREFIX, token)
}

/// One stored refresh token (hash only).
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token's secret part.
    pub token_hash: [u8; 32],
    /// The family (one login) this token belongs to.
    pub family: Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// When issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// When it was used (rotated), if it was.
    pub used_at: Option<SystemTime>,
    /// Whether its family was revoked.
    pub revoked: bool,
}

impl fmt::Debug for RefreshRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRecord")
            .field("family", &self.family)
            .field("tenant", &self.tenant)
            .field("used", &self.used_at.is_some())
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// Where refresh tokens live.
pub trait RefreshStore: Send + Sync {
    /// Stores a new token.
    fn insert(&self, record: RefreshRecord) -> impl Future<Output = Result<(), AuthError>> + Send;
    /// The record for a token hash.
    fn get(
        &self,
        token_hash: &[u8; 32],
    ) -> impl Future<Output = Result<Option<RefreshRecord>, AuthError>> + Send;
    /// Marks a token used, atomically: `true` only for the one caller that found it unused.
    fn mark_used(
        &self,
        token_hash: &[u8; 32],
        at: SystemTime,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send;
    /// Revokes every token of a family; returns how many.
    fn revoke_family(&self, family: Uuid) -> impl Future<Output = Result<u64, AuthError>> + Send;
    /// Whether any token of the family is revoked. A family is revoked as a whole, and its
    /// oldest tokens always exist when it is, so this stays true even for a successor that
    /// a concurrent rotation inserted while the revocation ran.
    fn family_revoked(&self, family: Uuid) -> impl Future<Output = Result<bool, AuthError>> + Send;
}

/// The result of a successful rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The new refresh token (replace the old one with it).
    pub token: IssuedSecret,
    /// The tenant the family belongs to.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// The family.
    pub family: Uuid,
}

/// Issues and rotates refresh tokens.
pub struct RefreshTokens<S: RefreshStore> {
    store: S,
    ttl: Duration,
}

impl<S: RefreshStore> RefreshTokens<S> {
    /// Refresh tokens in `store`, valid for 7 days.
    pub fn new(store: S) -> Self {
        Self {
            store,
            ttl: DEFAULT_REFRESH_TTL,
        }
    }

    /// Changes the lifetime of new tokens.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Starts a new family (a login) and returns its first token.
    ///
    /// # Errors
    /// Store errors.
    pub async fn issue(&self, tenant: TenantId, user: UserId) -> Result<IssuedSecret, AuthError> {
        self.issue_in(Uuid::new_v4(), tenant, user, SystemTime::now())
            .await
    }

    async fn issue_in(
        &self,
        family: Uuid,
        tenant: TenantId,
        user: UserId,
        now: SystemTime,
    ) -> Result<IssuedSecret, AuthError> {
        let (token, token_hash) = new_bearer(REFRESH_PREFIX)?;
        self.store
            .insert(RefreshRecord {
                token_hash,
                family,
                tenant,
                user,
                issued_at: now,
                expires_at: now.checked_add(self.ttl).ok_or(AuthError::Store(
                    "refresh token lifetime overflows the clock".into(),
                ))?,
                used_at: None,
                revoked: false,
            })
            .await?;
        Ok(IssuedSecret::new(token))
    }

    /// Spends a refresh token and returns its successor.
    ///
    /// # Errors
    /// - [`AuthError::MalformedCredential`] for a token of the wrong shape or checksum;
    /// - [`AuthError::InvalidCredential`] for an unknown token;
    /// - [`AuthError::Revoked`] for a token of a revoked family;
    /// - [`AuthError::CredentialExpired`] for an expired token;
    /// - [`AuthError::RefreshReuse`] for a token used before — the family is now revoked.
    pub async fn rotate(&self, presented: &str) -> Result<Rotated, AuthError> {
        self.rotate_at(presented, SystemTime::now()).await
    }

    /// [`RefreshTokens::rotate`] at a given time.
    ///
    /// # Errors
    /// As [`RefreshTokens::rotate`].
    pub async fn rotate_at(&self, presented: &str, now: SystemTime) -> Result<Rotated, AuthError> {
        let hash = parse_refresh_token(presented)?;
        let record = self
            .store
            .get(&hash)
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        // The family flag is checked on every use: a successor inserted while a concurrent
        // reuse revoked the family (a race the insert cannot see under READ COMMITTED) is
        // refused here, because the family's older tokens are revoked.
        if record.revoked || self.store.family_revoked(record.family).await? {
            return Err(AuthError::Revoked);
        }
        // Reuse is checked before expiry, so replaying a spent token revokes the family
        // even when that token has since expired.
        let reused = record.used_at.is_some();
        if !reused && now >= record.expires_at {
            return Err(AuthError::CredentialExpired);
        }
        if reused || !self.store.mark_used(&hash, now).await? {
            let revoked = self.store.revoke_family(record.family).await?;
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "refresh_token_reuse",
                tenant = %record.tenant,
                user = %record.user,
                family = %record.family,
                revoked,
                "refresh token reused; token family revoked"
            );
            report(
                &SecurityEvent::new("refresh_token_reuse")
                    .tenant(record.tenant)
                    .actor(Actor::User(record.user))
                    .details(&[("family", &record.family), ("revoked", &revoked)]),
            );
            return Err(AuthError::RefreshReuse);
        }
        let token = self
            .issue_in(record.family, record.tenant, record.user, now)
            .await?;
        // A concurrent reuse may have revoked the family between our mark_used and the
        // insert above, missing the new token. Re-read: if the family is revoked, revoke
        // again (now including the new token) and refuse.
        if self.store.get(&hash).await?.is_none_or(|r| r.revoked) {
            self.store.revoke_family(record.family).await?;
            return Err(AuthError::Revoked);
        }
        Ok(Rotated {
            token,
            tenant: record.tenant,
            user: record.user,
            family: record.family,
        })
    }

    /// Revokes a whole family (logout everywhere for that login).
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke_family(&self, family: Uuid) -> Result<u64, AuthError> {
        self.store.revoke_family(family).await
    }
}

impl<S: RefreshStore> fmt::Debug for RefreshTokens<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A [`RefreshStore`] in memory, for tests.
#[derive(Debug, Default)]
pub struct InMemoryRefreshStore {
    tokens: std::sync::Mutex<std::collections::HashMap<[u8; 32], RefreshRecord>>,
}

impl InMemoryRefreshStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl RefreshStore for InMemoryRefreshStore {
    async fn insert(&self, record: RefreshRecord) -> Result<(), AuthError> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.token_hash, record);
        Ok(())
    }

    async fn get(&self, token_hash: &[u8; 32]) -> Result<Option<RefreshRecord>, AuthError> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_hash)
            .cloned())
    }

    async fn mark_used(&self, token_hash: &[u8; 32], at: SystemTime) -> Result<bool, AuthError> {
        let mut m = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match m.get_mut(token_hash) {
            Some(r) if r.used_at.is_none() => {
                r.used_at = Some(at);
                true
            }
            _ => false,
        })
    }

    async fn revoke_family(&self, family: Uuid) -> Result<u64, AuthError> {
        let mut m = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for r in m.values_mut().filter(|r| r.family == family) {
            r.revoked = true;
            n += 1;
        }
        Ok(n)
    }

    async fn family_revoked(&self, family: Uuid) -> Result<bool, AuthError> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|r| r.family == family && r.revoked))
    }
}

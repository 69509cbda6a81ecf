//! Scoped API keys for service principals: `nova_sk_<key id>_<secret>_<checksum>`.
//!
//! The key id (16 characters) finds the record; the secret (43 base62 characters, ~256
//! bits) is stored only as a SHA-256 hash and compared in constant time; the checksum
//! (CRC32) lets scanners recognise a leaked key and refuses typos before any lookup. A key
//! belongs to one tenant, one role and a set of scopes, and may be limited to CIDR ranges
//! and a daily time window. Repeated failures lock the key id. This module must never
//! return a context for a key that is revoked, expired, locked, or used from outside its
//! network or time window.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use nova_tenancy::{
    AUDIT_TARGET, Actor, CredentialVerifier, Role, SecurityEvent, TenantContext, TenantId, UserId,
    VerifiedIdentity, report,
};

use crate::error::AuthError;
use crate::opaque::{
    CHECKSUM_LEN, IssuedSecret, SECRET_LEN, checksum, checksum_digits, hash_secret, hashes_equal,
    is_base62, random_base62,
};

/// How precisely the last-used time of an API key is tracked.
pub const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Prefix of every Nova API key.
pub const API_KEY_PREFIX: &str = "nova_sk_";
/// Length of the key id part.
pub const KEY_ID_LEN: usize = 16;
/// Total length of an API key.
pub const API_KEY_LEN: usize =
    API_KEY_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + 1 + CHECKSUM_LEN;

/// The parts of a well-formed API key. (No `PartialEq`: the secret hash is compared only in
/// constant time, inside verification.)
#[derive(Clone)]
pub struct ParsedApiKey<'k> {
    /// The key id (not secret).
    pub key_id: &'k str,
    secret_hash: [u8; 32],
}

impl fmt::Debug for ParsedApiKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Checks an API key's format and checksum, without any lookup.
///
/// # Errors
/// [`AuthError::MalformedCredential`] naming what is wrong.
pub fn parse_api_key(key: &str) -> Result<ParsedApiKey<'_>, AuthError> {
    // ASCII first: the splits below are by byte offset and must fall on char boundaries.
    if !key.is_ascii() {
        return Err(AuthError::MalformedCredential(
            "API key has unexpected characters",
        ));
    }
    if key.len() != API_KEY_LEN {
        return Err(AuthError::MalformedCredential(
            "API key has the wrong length",
        ));
    }
    let rest = key
        .strip_prefix(API_KEY_PREFIX)
        .ok_or(AuthError::MalformedCredential(
            "API key must start with nova_sk_",
        ))?;
    let (kid, rest) = rest.split_at(KEY_ID_LEN);
    let (sep1, rest) = rest.split_at(1);
    let (secret, rest) = rest.split_at(SECRET_LEN);
    let (sep2, sum) = rest.split_at(1);
    let kid_ok = kid
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !kid_ok || sep1 != "_" || sep2 != "_" || !is_base62(secret) || !is_base62(sum) {
        return Err(AuthError::MalformedCredential(
            "API key has unexpected characters",
        ));
    }
    if checksum_digits(&key[..key.len() - CHECKSUM_LEN - 1]) != sum.as_bytes() {
        return Err(AuthError::MalformedCredential(
            "API key checksum mismatch (typo or truncated copy)",
        ));
    }
    Ok(ParsedApiKey {
        key_id: kid,
        secret_hash: hash_secret(secret),
    })
}

/// A daily window (UTC, minutes since midnight) in which a key may be used. A window whose
/// end is before its start wraps past midnight; a window whose start equals its end is
/// empty (the key is never usable). Minutes above 1440 are refused at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// First minute allowed (0–1439).
    pub start_minute: u16,
    /// First minute no longer allowed (0–1440).
    pub end_minute: u16,
}

impl TimeWindow {
    fn contains(&self, at: SystemTime) -> bool {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // Minutes since midnight, always below 1440.
        let minute = ((secs / 60) % 1440) as u16;
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// Everything stored about one API key. The secret is present only as its hash.
#[derive(Clone)]
pub struct ApiKeyRecord {
    /// The key id.
    pub key_id: String,
    /// The tenant the key acts in.
    pub tenant: TenantId,
    /// The service principal the key acts as.
    pub principal: UserId,
    /// The role it grants (a one-element list, shared by every context the key produces).
    pub roles: Arc<[Role]>,
    /// The scopes it grants (sorted, shared by every context the key produces).
    pub scopes: Arc<[Role]>,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// For a rotated key: the end of its grace period.
    pub grace_until: Option<SystemTime>,
    /// If non-empty, the only client networks allowed.
    pub allowed_cidrs: Arc<[IpNet]>,
    /// If set, the only time of day allowed.
    pub window: Option<TimeWindow>,
    /// Last successful use.
    pub last_used_at: Option<SystemTime>,
    /// Failed attempts in the current window.
    pub failures: u32,
    /// Start of the current failure-counting window.
    pub failure_window_start: Option<SystemTime>,
    /// Locked until this time after repeated failures.
    pub locked_until: Option<SystemTime>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("roles", &self.roles)
            .field("revoked", &self.revoked_at.is_some())
            .finish_non_exhaustive()
    }
}

/// Stands in for "forever" where a configured duration would overflow the clock.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How many failures lock a key id, counted over what window, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that trigger a lock. Default 5.
    pub max_failures: u32,
    /// Window failures are counted in. Default 15 minutes.
    pub window: Duration,
    /// How long the lock lasts. Default 15 minutes.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

/// Where API key records live.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new record.
    fn insert(&self, record: ApiKeyRecord) -> impl Future<Output = Result<(), AuthError>> + Send;
    /// The record for a key id.
    fn get(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<Arc<ApiKeyRecord>>, AuthError>> + Send;
    /// Records a failed attempt atomically; returns the lock expiry if the key is now locked.
    fn record_failure(
        &self,
        key_id: &str,
        at: SystemTime,
        policy: LockoutPolicy,
    ) -> impl Future<Output = Result<Option<SystemTime>, AuthError>> + Send;
    /// Records a successful use (last-used time, failures cleared).
    fn record_success(
        &self,
        key_id: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
    /// Revokes a key.
    fn revoke(
        &self,
        key_id: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send;
    /// Sets the end of a rotated key's grace period.
    fn set_grace(
        &self,
        key_id: &str,
        until: SystemTime,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send;
}

/// What a new key may do.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// The service principal it acts as.
    pub principal: UserId,
    /// The role it grants.
    pub role: Role,
    /// The scopes it grants.
    pub scopes: Vec<Role>,
    /// How long it lives, if limited.
    pub ttl: Option<Duration>,
    /// Client networks allowed (empty: any).
    pub allowed_cidrs: Vec<IpNet>,
    /// Time of day allowed (none: any).
    pub window: Option<TimeWindow>,
}

impl NewApiKey {
    /// A key for a principal of a tenant with one role, no other limits.
    #[must_use]
    pub fn new(tenant: TenantId, principal: UserId, role: Role) -> Self {
        Self {
            tenant,
            principal,
            role,
            scopes: Vec::new(),
            ttl: None,
            allowed_cidrs: Vec::new(),
            window: None,
        }
    }
}

/// Creates, verifies, rotates and revokes API keys.
pub struct ApiKeys<S: ApiKeyStore> {
    store: S,
    lockout: LockoutPolicy,
}

impl<S: ApiKeyStore> CredentialVerifier for ApiKeys<S> {
    fn verifier_name(&self) -> &'static str {
        "nova-auth/api-key"
    }
}

impl<S: ApiKeyStore> ApiKeys<S> {
    /// API keys kept in `store`, with the default lockout policy.
    pub fn new(store: S) -> Self {
        Self {
            store,
            lockout: LockoutPolicy::default(),
        }
    }

    /// Changes the lockout policy.
    #[must_use]
    pub fn with_lockout(mut self, lockout: LockoutPolicy) -> Self {
        self.lockout = lockout;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Creates a key. The returned secret is the only copy: show it once.
    ///
    /// # Errors
    /// Store errors.
    pub async fn create(&self, spec: NewApiKey) -> Result<(String, IssuedSecret), AuthError> {
        self.create_at(spec, SystemTime::now()).await
    }

    async fn create_at(
        &self,
        spec: NewApiKey,
        now: SystemTime,
    ) -> Result<(String, IssuedSecret), AuthError> {
        if spec
            .window
            .is_some_and(|w| w.start_minute >= 1440 || w.end_minute > 1440)
        {
            return Err(AuthError::Store(
                "time window minutes must be within a day".into(),
            ));
        }
        let key_id = random_base62(KEY_ID_LEN)?.to_ascii_lowercase();
        let secret = random_base62(SECRET_LEN)?;
        let body = format!("{API_KEY_PREFIX}{key_id}_{secret}");
        let full = format!("{body}_{}", checksum(&body));
        self.store
            .insert(ApiKeyRecord {
                key_id: key_id.clone(),
                tenant: spec.tenant,
                principal: spec.principal,
                roles: Arc::from([spec.role]),
                scopes: {
                    let mut scopes = spec.scopes;
                    scopes.sort_unstable();
                    scopes.dedup();
                    scopes.into()
                },
                secret_hash: hash_secret(&secret),
                created_at: now,
                expires_at: match spec.ttl {
                    Some(t) => Some(
                        now.checked_add(t)
                            .ok_or(AuthError::Store("key lifetime overflows the clock".into()))?,
                    ),
                    None => None,
                },
                revoked_at: None,
                grace_until: None,
                allowed_cidrs: spec.allowed_cidrs.into(),
                window: spec.window,
                last_used_at: None,
                failures: 0,
                failure_window_start: None,
                locked_until: None,
            })
            .await?;
        tracing::info!(target: AUDIT_TARGET, event = "api_key_created", key_id = %key_id, tenant = %spec.tenant, "API key created");
        report(
            &SecurityEvent::new("api_key_created")
                .tenant(spec.tenant)
                .actor(Actor::ApiKey(&key_id)),
        );
        Ok((key_id, IssuedSecret::new(full)))
    }

    /// Verifies a presented key from `client` now.
    ///
    /// # Errors
    /// [`AuthError::MalformedCredential`], [`AuthError::InvalidCredential`],
    /// [`AuthError::Locked`], [`AuthError::Revoked`], [`AuthError::CredentialExpired`],
    /// [`AuthError::AddressNotAllowed`], [`AuthError::OutsideTimeWindow`].
    pub async fn verify(
        &self,
        presented: &str,
        client: IpAddr,
    ) -> Result<TenantContext, AuthError> {
        self.verify_at(presented, client, SystemTime::now()).await
    }

    /// Verifies a key and also requires it to belong to `tenant` (for requests that name a
    /// tenant in their path or host).
    ///
    /// # Errors
    /// As [`ApiKeys::verify`], and [`AuthError::InvalidCredential`] for another tenant's key.
    pub async fn verify_for_tenant(
        &self,
        presented: &str,
        tenant: TenantId,
        client: IpAddr,
    ) -> Result<TenantContext, AuthError> {
        let ctx = self.verify(presented, client).await?;
        if ctx.tenant() != tenant {
            tracing::warn!(target: AUDIT_TARGET, event = "cross_tenant_attempt", key_tenant = %ctx.tenant(), requested_tenant = %tenant, "API key used for another tenant");
            report(
                &SecurityEvent::new("cross_tenant_attempt")
                    .tenant(tenant)
                    .request_id(ctx.request_id())
                    .details(&[("key_tenant", &ctx.tenant())]),
            );
            return Err(AuthError::InvalidCredential);
        }
        Ok(ctx)
    }

    /// [`ApiKeys::verify`] at a given time.
    ///
    /// # Errors
    /// As [`ApiKeys::verify`].
    pub async fn verify_at(
        &self,
        presented: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> Result<TenantContext, AuthError> {
        let parsed = parse_api_key(presented)?;
        let Some(record) = self.store.get(parsed.key_id).await? else {
            // Compare against a dummy so an unknown id costs about what a known one does.
            let _ = hashes_equal(&parsed.secret_hash, &[0u8; 32]);
            tracing::warn!(target: AUDIT_TARGET, event = "api_key_unknown", key_id = %parsed.key_id, "API key with an unknown id presented");
            report(&SecurityEvent::new("api_key_unknown").actor(Actor::ApiKey(&parsed.key_id)));
            return Err(AuthError::InvalidCredential);
        };
        if record.locked_until.is_some_and(|t| now < t) {
            return Err(AuthError::Locked);
        }
        if !hashes_equal(&parsed.secret_hash, &record.secret_hash) {
            let locked = self
                .store
                .record_failure(&record.key_id, now, self.lockout)
                .await?;
            tracing::warn!(target: AUDIT_TARGET, event = "api_key_failure", key_id = %record.key_id, tenant = %record.tenant, locked = locked.is_some(), "API key secret mismatch");
            report(
                &SecurityEvent::new("api_key_failure")
                    .tenant(record.tenant)
                    .actor(Actor::ApiKey(&record.key_id))
                    .details(&[("locked", &locked.is_some())]),
            );
            return Err(if locked.is_some() {
                AuthError::Locked
            } else {
                AuthError::InvalidCredential
            });
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_at.is_some_and(|t| now >= t)
            || record.grace_until.is_some_and(|t| now >= t)
        {
            return Err(AuthError::CredentialExpired);
        }
        // An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
        let client = client.to_canonical();
        if !record.allowed_cidrs.is_empty()
            && !record.allowed_cidrs.iter().any(|n| n.contains(&client))
        {
            return Err(AuthError::AddressNotAllowed);
        }
        if record.window.is_some_and(|w| !w.contains(now)) {
            return Err(AuthError::OutsideTimeWindow);
        }
        // Last-used is kept to the minute: a write per request would cost more than the
        // whole verification. Failures are always cleared at once.
        let stale = record.last_used_at.is_none_or(|t| {
            now.duration_since(t)
                .is_ok_and(|d| d >= LAST_USED_RESOLUTION)
        });
        if stale || record.failures > 0 {
            self.store.record_success(&record.key_id, now).await?;
        }
        let identity = VerifiedIdentity::new(record.tenant)
            .user(record.principal)
            .shared_roles(Arc::clone(&record.roles))
            .shared_permissions(Arc::clone(&record.scopes));
        Ok(TenantContext::from_verified(self, identity))
    }

    /// Revokes a key at once.
    ///
    /// # Errors
    /// Store errors; [`AuthError::InvalidCredential`] for an unknown key id.
    pub async fn revoke(&self, key_id: &str) -> Result<(), AuthError> {
        if !self.store.revoke(key_id, SystemTime::now()).await? {
            return Err(AuthError::InvalidCredential);
        }
        tracing::info!(target: AUDIT_TARGET, event = "api_key_revoked", key_id = %key_id, "API key revoked");
        report(&SecurityEvent::new("api_key_revoked").actor(Actor::ApiKey(&key_id)));
        Ok(())
    }

    /// Replaces a key: a new key with the same tenant, role, scopes and limits, while the
    /// old one keeps working for `grace` and then expires.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredential`] for an unknown key id; store errors.
    pub async fn rotate(
        &self,
        key_id: &str,
        grace: Duration,
    ) -> Result<(String, IssuedSecret), AuthError> {
        let now = SystemTime::now();
        let old = self
            .store
            .get(key_id)
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        // Only a live key can be rotated: rotating a revoked, expired or already-rotated key
        // must not mint a working successor or extend the old key's life.
        if old.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if old.expires_at.is_some_and(|t| now >= t) || old.grace_until.is_some() {
            return Err(AuthError::CredentialExpired);
        }
        let spec = NewApiKey {
            tenant: old.tenant,
            principal: old.principal,
            role: old
                .roles
                .first()
                .cloned()
                .ok_or(AuthError::Store("API key record without a role".into()))?,
            scopes: old.scopes.to_vec(),
            // The successor expires when the old key would have (never, if it never would).
            ttl: match old.expires_at {
                Some(t) => Some(
                    t.duration_since(now)
                        .map_err(|_| AuthError::CredentialExpired)?,
                ),
                None => None,
            },
            allowed_cidrs: old.allowed_cidrs.to_vec(),
            window: old.window,
        };
        let until = now
            .checked_add(grace)
            .ok_or(AuthError::Store("grace period overflows the clock".into()))?;
        let created = self.create_at(spec, now).await?;
        self.store.set_grace(key_id, until).await?;
        tracing::info!(target: AUDIT_TARGET, event = "api_key_rotated", old_key_id = %key_id, new_key_id = %created.0, "API key rotated");
        report(
            &SecurityEvent::new("api_key_rotated")
                .actor(Actor::ApiKey(&key_id))
                .details(&[("new_key_id", &created.0)]),
        );
        Ok(created)
    }
}

impl<S: ApiKeyStore> fmt::Debug for ApiKeys<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("lockout", &self.lockout)
            .finish_non_exhaustive()
    }
}

/// Applies a failure to a record under `policy`; shared by the stores.
pub(crate) fn apply_failure(
    r: &mut ApiKeyRecord,
    at: SystemTime,
    policy: LockoutPolicy,
) -> Option<SystemTime> {
    let in_window = r
        .failure_window_start
        .is_some_and(|start| at.duration_since(start).is_ok_and(|d| d < policy.window));
    if in_window {
        r.failures += 1;
    } else {
        r.failures = 1;
        r.failure_window_start = Some(at);
    }
    if r.failures >= policy.max_failures {
        // A lock too long to represent lasts as long as time can be told.
        r.locked_until = Some(at.checked_add(policy.lock_for).unwrap_or(at + FAR_FUTURE));
        r.failures = 0;
        r.failure_window_start = None;
    }
    r.locked_until.filter(|t| *t > at)
}

/// An [`ApiKeyStore`] in memory, for tests and single-process tools.
#[derive(Debug, Default)]
pub struct InMemoryApiKeyStore {
    // foldhash: lookups use the presented key id, but collisions can only lengthen chains of
    // keys the service itself created, so an attacker cannot degrade them.
    keys: std::sync::RwLock<KeyMap>,
}

type KeyMap = std::collections::HashMap<String, Arc<ApiKeyRecord>, foldhash::fast::RandomState>;

impl InMemoryApiKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut KeyMap) -> T) -> T {
        f(&mut self.keys.write().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ApiKeyStore for InMemoryApiKeyStore {
    async fn insert(&self, record: ApiKeyRecord) -> Result<(), AuthError> {
        self.with(|m| {
            if m.contains_key(&record.key_id) {
                return Err(AuthError::Store("duplicate key id".into()));
            }
            m.insert(record.key_id.clone(), Arc::new(record));
            Ok(())
        })
    }

    async fn get(&self, key_id: &str) -> Result<Option<Arc<ApiKeyRecord>>, AuthError> {
        Ok(self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .cloned())
    }

    async fn record_failure(
        &self,
        key_id: &str,
        at: SystemTime,
        policy: LockoutPolicy,
    ) -> Result<Option<SystemTime>, AuthError> {
        Ok(self.with(|m| {
            m.get_mut(key_id)
                .and_then(|r| apply_failure(Arc::make_mut(r), at, policy))
        }))
    }

    async fn record_success(&self, key_id: &str, at: SystemTime) -> Result<(), AuthError> {
        self.with(|m| {
            if let Some(r) = m.get_mut(key_id) {
                let r = Arc::make_mut(r);
                r.last_used_at = Some(at);
                r.failures = 0;
                r.failure_window_start = None;
            }
        });
        Ok(())
    }

    async fn revoke(&self, key_id: &str, at: SystemTime) -> Result<bool, AuthError> {
        Ok(self.with(|m| {
            m.get_mut(key_id)
                .map(|r| Arc::make_mut(r).revoked_at = Some(at))
                .is_some()
        }))
    }

    async fn set_grace(&self, key_id: &str, until: SystemTime) -> Result<bool, AuthError> {
        Ok(self.with(|m| {
            m.get_mut(key_id)
                .map(|r| Arc::make_mut(r).grace_until = Some(until))
                .is_some()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_input_of_the_right_length_is_refused_not_a_panic() {
        // Found by the auth_opaque_credentials fuzz target: a multi-byte character across
        // a separator's offset made `split_at` panic.
        for at in 8..API_KEY_LEN - 1 {
            let mut s = "a".repeat(API_KEY_LEN - 1);
            s.replace_range(0..8, API_KEY_PREFIX);
            s.insert(at, 'é');
            s.truncate(API_KEY_LEN);
            if s.len() == API_KEY_LEN {
                assert!(parse_api_key(&s).is_err());
            }
        }
        let multibyte = format!(
            "nova_sk_{}é{}",
            "a".repeat(15),
            "b".repeat(API_KEY_LEN - 8 - 15 - 2)
        );
        assert_eq!(multibyte.len(), API_KEY_LEN);
        assert!(parse_api_key(&multibyte).is_err());
    }
}

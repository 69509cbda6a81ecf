//! JWT access-token verification into a [`TenantContext`].
//!
//! Order: structure and header ([`crate::jws::parse_compact`]), key by `kid`, algorithm
//! must equal the key's, signature, then claims — `iss`, `aud`, `exp`, `nbf`, `iat` with
//! leeway, required `sub` and `tenant_id` as typed ids, optional `roles`, `scope`,
//! `region`, and `auth_time` and `amr` (when and how the user authenticated, carried into
//! the context for MFA checks: [`TenantContext::mfa_within`]). Claims are read only after the signature verifies, and duplicate claim names
//! are refused. This module must never return a context for a token that failed any check.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nova_tenancy::{
    AuthMethod, CredentialVerifier, Region, Role, TenantContext, TenantId, UserId, VerifiedIdentity,
};
use serde::Deserialize;
use serde_json::Value;

use crate::error::AuthError;
use crate::jwks::{KeySet, KeySource};
use crate::jws::{
    Alg, Compact, DEFAULT_MAX_TOKEN_LEN, VerifyingKey, b64_decode, parse_compact, verify_parsed,
};

/// Most roles or scopes accepted in one token.
pub const MAX_ROLES: usize = 64;

/// Most authentication methods (`amr` values) accepted in one token.
pub const MAX_AUTH_METHODS: usize = 16;

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// Algorithms accepted; HS256 only if listed here *and* an HMAC secret is in the keys.
    pub algorithms: Vec<Alg>,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`. Default 60 s.
    pub leeway: Duration,
    /// Oldest `iat` accepted, if set.
    pub max_age: Option<Duration>,
    /// Longest token accepted. Default 8 KiB.
    pub max_token_len: usize,
}

impl JwtConfig {
    /// RS256, ES256 and EdDSA, 60 s leeway, 8 KiB limit.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: vec![Alg::RS256, Alg::ES256, Alg::EdDSA],
            leeway: Duration::from_secs(60),
            max_age: None,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }
}

/// Verifies access tokens and turns them into tenant contexts.
///
/// ```
/// use nova_auth::{JwtConfig, JwtVerifier, SigningKey, StaticKeys, TokenIssuer, AccessClaims};
/// use nova_tenancy::{TenantId, UserId};
///
/// let issuer = TokenIssuer::new("https://auth.example", "nova-api", SigningKey::generate_es256("k1")?);
/// let verifier = JwtVerifier::new(
///     JwtConfig::new("https://auth.example", "nova-api"),
///     StaticKeys::new(issuer.key_set()?),
/// );
/// let tenant = TenantId::new_v4();
/// let token = issuer.issue(&AccessClaims::new(tenant, UserId::new_v4()))?;
/// let ctx = verifier.verify_cached(&token)?;
/// assert_eq!(ctx.tenant(), tenant);
/// # Ok::<(), nova_auth::AuthError>(())
/// ```
pub struct JwtVerifier<K: KeySource> {
    config: JwtConfig,
    keys: K,
}

impl<K: KeySource> CredentialVerifier for JwtVerifier<K> {
    fn verifier_name(&self) -> &'static str {
        "nova-auth/jwt"
    }
}

/// Claim members as present in the JSON; `Some(Value::Null)` for an explicit `null`, so
/// that `"tenant_id": null` is an invalid claim, not a missing one.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    tenant_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    roles: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    region: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    auth_time: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    amr: Option<Value>,
}

use crate::jws::present;

impl<K: KeySource> JwtVerifier<K> {
    /// A verifier with a configuration and a key source.
    pub fn new(config: JwtConfig, keys: K) -> Self {
        Self { config, keys }
    }

    /// The configuration.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Verifies with the keys at hand; on an unknown `kid`, lets the key source refresh
    /// (rate-limited) and tries once more.
    ///
    /// # Errors
    /// Any [`AuthError`] describing why the token was refused.
    pub async fn verify(&self, token: &str) -> Result<TenantContext, AuthError> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// [`JwtVerifier::verify`] at a given time.
    ///
    /// # Errors
    /// As [`JwtVerifier::verify`].
    pub async fn verify_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<TenantContext, AuthError> {
        self.keys.refresh_if_stale().await;
        let keys = self.keys.current();
        match self.verify_with(token, now, &keys) {
            Err(AuthError::UnknownKid) => {
                if self.keys.refresh_on_unknown_kid(&keys).await {
                    self.verify_with(token, now, &self.keys.current())
                } else {
                    Err(AuthError::UnknownKid)
                }
            }
            other => other,
        }
    }

    /// Verifies with the keys at hand, without refreshing (synchronous; the hot path).
    ///
    /// # Errors
    /// As [`JwtVerifier::verify`].
    pub fn verify_cached(&self, token: &str) -> Result<TenantContext, AuthError> {
        self.verify_cached_at(token, SystemTime::now())
    }

    /// [`JwtVerifier::verify_cached`] at a given time.
    ///
    /// # Errors
    /// As [`JwtVerifier::verify`].
    pub fn verify_cached_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<TenantContext, AuthError> {
        self.verify_with(token, now, &self.keys.current())
    }

    fn verify_with(
        &self,
        token: &str,
        now: SystemTime,
        keys: &KeySet,
    ) -> Result<TenantContext, AuthError> {
        let compact = parse_compact(token, self.config.max_token_len)?;
        if !self.config.algorithms.contains(&compact.header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let key = select_key(keys, &compact)?;
        verify_parsed(&compact, &key)?;
        let payload = b64_decode(compact.payload_b64, "payload is not base64url")?;
        let claims: RawClaims = serde_json::from_slice(&payload).map_err(|_| {
            AuthError::Malformed("claims are not a JSON object with unique members")
        })?;
        self.check(claims, now)
    }

    fn check(&self, c: RawClaims, now: SystemTime) -> Result<TenantContext, AuthError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let leeway = self.config.leeway.as_secs_f64();

        match c.iss {
            None => return Err(AuthError::MissingClaim("iss")),
            Some(Value::String(ref iss)) if *iss == self.config.issuer => {}
            Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
            Some(_) => return Err(AuthError::InvalidClaim("iss")),
        }
        let aud_ok = match c.aud {
            None => return Err(AuthError::MissingClaim("aud")),
            Some(Value::String(ref a)) => *a == self.config.audience,
            Some(Value::Array(ref list)) => {
                if list.iter().any(|a| !a.is_string()) {
                    return Err(AuthError::InvalidClaim("aud"));
                }
                list.iter()
                    .any(|a| a.as_str() == Some(&self.config.audience))
            }
            Some(_) => return Err(AuthError::InvalidClaim("aud")),
        };
        if !aud_ok {
            return Err(AuthError::WrongAudience);
        }
        let exp = numeric_date(c.exp, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
        if now > exp + leeway {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(c.nbf, "nbf")?
            && now + leeway < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        let iat = numeric_date(c.iat, "iat")?.ok_or(AuthError::MissingClaim("iat"))?;
        if iat > now + leeway {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(max) = self.config.max_age
            && now - iat > max.as_secs_f64() + leeway
        {
            return Err(AuthError::TooOld);
        }
        let user: UserId = typed_id(c.sub, "sub")?;
        let tenant: TenantId = typed_id(c.tenant_id, "tenant_id")?;
        let roles = match c.roles {
            None => Vec::new(),
            Some(Value::Array(list)) => names(list.iter().map(Value::as_str), "roles")?,
            Some(_) => return Err(AuthError::InvalidClaim("roles")),
        };
        let permissions = match c.scope {
            None => Vec::new(),
            Some(Value::String(s)) => {
                names(s.split(' ').filter(|p| !p.is_empty()).map(Some), "scope")?
            }
            Some(_) => return Err(AuthError::InvalidClaim("scope")),
        };
        let mut identity = VerifiedIdentity::new(tenant)
            .user(user)
            .roles(roles)
            .permissions(permissions);
        match c.region {
            None => {}
            Some(Value::String(r)) => {
                identity = identity
                    .region(Region::new(&r).map_err(|_| AuthError::InvalidClaim("region"))?);
            }
            Some(_) => return Err(AuthError::InvalidClaim("region")),
        }
        // OpenID Connect Core §2 `auth_time` and RFC 8176 `amr`: when and how the user
        // authenticated, which the context carries for MFA checks. An authentication in
        // the future, or a method outside the name grammar, makes the token invalid rather
        // than quietly losing the facts.
        if let Some(at) = numeric_date(c.auth_time, "auth_time")? {
            if at > now + leeway {
                return Err(AuthError::InvalidClaim("auth_time"));
            }
            let at = Duration::try_from_secs_f64(at)
                .ok()
                .and_then(|d| UNIX_EPOCH.checked_add(d))
                .ok_or(AuthError::InvalidClaim("auth_time"))?;
            identity = identity.authenticated_at(at);
        }
        match c.amr {
            None => {}
            Some(Value::Array(list)) => {
                let mut methods = Vec::with_capacity(list.len());
                for m in &list {
                    let m = m
                        .as_str()
                        .and_then(|m| AuthMethod::new(m).ok())
                        .ok_or(AuthError::InvalidClaim("amr"))?;
                    methods.push(m);
                    if methods.len() > MAX_AUTH_METHODS {
                        return Err(AuthError::InvalidClaim("amr"));
                    }
                }
                identity = identity.methods(methods);
            }
            Some(_) => return Err(AuthError::InvalidClaim("amr")),
        }
        Ok(TenantContext::from_verified(self, identity))
    }
}

fn select_key(keys: &KeySet, c: &Compact<'_>) -> Result<Arc<VerifyingKey>, AuthError> {
    match &c.header.kid {
        Some(kid) => keys.get(kid).cloned().ok_or(AuthError::UnknownKid),
        None => keys.sole().cloned().ok_or(AuthError::MissingKid),
    }
}

/// RFC 7519 §2 NumericDate: seconds since the epoch, a JSON number.
fn numeric_date(v: Option<Value>, name: &'static str) -> Result<Option<f64>, AuthError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
            _ => Err(AuthError::InvalidClaim(name)),
        },
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn typed_id<T: std::str::FromStr>(v: Option<Value>, name: &'static str) -> Result<T, AuthError> {
    match v {
        None => Err(AuthError::MissingClaim(name)),
        Some(Value::String(s)) => s.parse().map_err(|_| AuthError::InvalidClaim(name)),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn names<'a>(
    items: impl Iterator<Item = Option<&'a str>>,
    name: &'static str,
) -> Result<Vec<Role>, AuthError> {
    let mut out = Vec::new();
    for item in items {
        let s = item.ok_or(AuthError::InvalidClaim(name))?;
        out.push(Role::new(s).map_err(|_| AuthError::InvalidClaim(name))?);
        if out.len() > MAX_ROLES {
            return Err(AuthError::InvalidClaim(name));
        }
    }
    Ok(out)
}

impl<K: KeySource> fmt::Debug for JwtVerifier<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

//! Key sets: JWKS documents parsed strictly into keys bound to one algorithm each, and a
//! remote key set that refreshes on an unknown `kid` at most once per interval.
//!
//! This module must never accept a symmetric key from a JWKS, a key whose declared
//! algorithm disagrees with its type, or an RSA modulus under 2048 bits.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::error::AuthError;
use crate::jws::{Alg, Prepared, VerifyingKey, b64_decode};

/// Largest JWKS document accepted.
pub const MAX_JWKS_LEN: usize = 64 * 1024;
/// Most keys accepted in one JWKS.
pub const MAX_JWKS_KEYS: usize = 64;
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash output size).
pub const MIN_HMAC_SECRET_LEN: usize = 32;
/// Smallest RSA modulus accepted, in bytes (2048 bits, RFC 7518 §3.3).
pub const MIN_RSA_MODULUS_LEN: usize = 256;

/// Verification keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JWKS document (`{"keys": [...]}`). Keys for other uses (`use: enc`) or of
    /// types Nova does not verify with are skipped; a key that claims to be a signature key
    /// of a supported type but is malformed rejects the whole document, as do duplicate
    /// `kid`s and symmetric (`oct`) keys.
    ///
    /// # Errors
    /// [`AuthError::KeySet`] naming the problem.
    pub fn from_jwks_json(json: &str) -> Result<Self, AuthError> {
        if json.len() > MAX_JWKS_LEN {
            return Err(AuthError::KeySet("JWKS document too large"));
        }
        let doc: Value =
            serde_json::from_str(json).map_err(|_| AuthError::KeySet("JWKS is not JSON"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(AuthError::KeySet("JWKS has no keys array"))?;
        if keys.len() > MAX_JWKS_KEYS {
            return Err(AuthError::KeySet("JWKS has too many keys"));
        }
        let mut set = Self::new();
        for jwk in keys {
            if let Some(key) = verifying_key_from_jwk(jwk)? {
                set.insert(key)?;
            }
        }
        Ok(set)
    }

    /// Adds a key.
    ///
    /// # Errors
    /// [`AuthError::KeySet`] when the `kid` is already present.
    pub fn insert(&mut self, key: VerifyingKey) -> Result<(), AuthError> {
        if self.keys.contains_key(&key.kid) {
            return Err(AuthError::KeySet("duplicate kid"));
        }
        self.keys.insert(key.kid.clone(), Arc::new(key));
        Ok(())
    }

    /// Adds an HMAC-SHA256 secret under `kid`. Symmetric keys never come from a JWKS: a
    /// service that uses HS256 configures the secret explicitly, here.
    ///
    /// # Errors
    /// [`AuthError::WeakHmacSecret`] below [`MIN_HMAC_SECRET_LEN`] bytes;
    /// [`AuthError::KeySet`] for a duplicate `kid`.
    pub fn insert_hmac_secret(&mut self, kid: &str, secret: &[u8]) -> Result<(), AuthError> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(AuthError::WeakHmacSecret {
                min: MIN_HMAC_SECRET_LEN,
            });
        }
        self.insert(VerifyingKey {
            kid: check_kid(kid)?,
            alg: Alg::HS256,
            key: DecodingKey::from_secret(secret),
            prepared: Prepared::Generic,
        })
    }

    /// Removes a key; returns whether it was present.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    /// The key with `kid`.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    /// The only key, when there is exactly one (tokens without `kid` are accepted only then).
    #[must_use]
    pub fn sole(&self) -> Option<&Arc<VerifyingKey>> {
        if self.keys.len() == 1 {
            self.keys.values().next()
        } else {
            None
        }
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

fn check_kid(kid: &str) -> Result<String, AuthError> {
    if kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control) {
        return Err(AuthError::KeySet(
            "kid must be 1 to 256 printable characters",
        ));
    }
    Ok(kid.to_owned())
}

fn str_member<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, AuthError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::KeySet("JWK member has the wrong type")),
    }
}

fn required<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, AuthError> {
    str_member(jwk, name)?.ok_or(AuthError::KeySet("JWK lacks a required member"))
}

/// Builds a verifying key from one JWK. `Ok(None)` for keys that are not for signature
/// verification with an algorithm Nova supports.
///
/// # Errors
/// [`AuthError::KeySet`] for a malformed signature key or a symmetric key.
pub fn verifying_key_from_jwk(jwk: &Value) -> Result<Option<VerifyingKey>, AuthError> {
    if !jwk.is_object() {
        return Err(AuthError::KeySet("JWK is not an object"));
    }
    if let Some(u) = str_member(jwk, "use")?
        && u != "sig"
    {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Ok(None);
        }
    }
    let kty = required(jwk, "kty")?;
    let declared = str_member(jwk, "alg")?;
    let (alg, key, prepared) = match kty {
        "RSA" => {
            let n = required(jwk, "n")?;
            let e = required(jwk, "e")?;
            let modulus = b64_decode(n, "RSA n is not base64url")
                .map_err(|_| AuthError::KeySet("RSA n is not base64url"))?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_LEN {
                return Err(AuthError::KeySet("RSA modulus shorter than 2048 bits"));
            }
            let exponent = b64_decode(e, "RSA e is not base64url")
                .map_err(|_| AuthError::KeySet("RSA e is not base64url"))?;
            if exponent.is_empty()
                || exponent.len() > 8
                || exponent.last().is_none_or(|b| b & 1 == 0)
            {
                return Err(AuthError::KeySet("RSA exponent is invalid"));
            }
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|_| AuthError::KeySet("RSA key is invalid"))?;
            (Alg::RS256, key, Prepared::Generic)
        }
        "EC" => {
            if required(jwk, "crv")? != "P-256" {
                return Ok(None);
            }
            let x = required(jwk, "x")?;
            let y = required(jwk, "y")?;
            let (xb, yb) = (
                b64_decode(x, "EC x").map_err(|_| AuthError::KeySet("EC x is not base64url"))?,
                b64_decode(y, "EC y").map_err(|_| AuthError::KeySet("EC y is not base64url"))?,
            );
            if xb.len() != 32 || yb.len() != 32 {
                return Err(AuthError::KeySet("P-256 coordinates must be 32 bytes"));
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(4);
            sec1.extend_from_slice(&xb);
            sec1.extend_from_slice(&yb);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| AuthError::KeySet("P-256 point is not on the curve"))?;
            let key = DecodingKey::from_ec_components(x, y)
                .map_err(|_| AuthError::KeySet("EC key is invalid"))?;
            (Alg::ES256, key, Prepared::Es(vk))
        }
        "OKP" => {
            if required(jwk, "crv")? != "Ed25519" {
                return Ok(None);
            }
            let x = required(jwk, "x")?;
            let xb =
                b64_decode(x, "OKP x").map_err(|_| AuthError::KeySet("OKP x is not base64url"))?;
            let arr: [u8; 32] = xb
                .as_slice()
                .try_into()
                .map_err(|_| AuthError::KeySet("Ed25519 key must be 32 bytes"))?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&arr)
                .map_err(|_| AuthError::KeySet("Ed25519 key is invalid"))?;
            let key = DecodingKey::from_ed_components(x)
                .map_err(|_| AuthError::KeySet("Ed25519 key is invalid"))?;
            (Alg::EdDSA, key, Prepared::Ed(vk))
        }
        "oct" => return Err(AuthError::KeySet("symmetric keys do not belong in a JWKS")),
        _ => return Ok(None),
    };
    if let Some(d) = declared
        && d != alg.name()
    {
        if matches!(
            d,
            "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES384" | "ES512"
        ) {
            return Ok(None);
        }
        return Err(AuthError::KeySet("JWK alg does not match its key type"));
    }
    let kid = check_kid(required(jwk, "kid")?)?;
    Ok(Some(VerifyingKey {
        kid,
        alg,
        key,
        prepared,
    }))
}

/// Fetches a JWKS document (over HTTPS in production; from memory in tests).
pub trait JwksFetcher: Send + Sync + 'static {
    /// The current JWKS document.
    fn fetch(&self) -> impl Future<Output = Result<String, AuthError>> + Send;
}

/// Where a verifier gets its keys.
pub trait KeySource: Send + Sync {
    /// The keys to verify with now.
    fn current(&self) -> Arc<KeySet>;

    /// Called before each (asynchronous) verification: refresh if the keys are older than
    /// the source allows, so a key the issuer withdrew stops verifying within that age.
    fn refresh_if_stale(&self) -> impl Future<Output = ()> + Send;

    /// Called on an unknown `kid`, with the key set that was used: refresh if allowed, and
    /// return `true` if a newer key set than `seen` is now available.
    fn refresh_on_unknown_kid(&self, seen: &Arc<KeySet>) -> impl Future<Output = bool> + Send;
}

/// A fixed key set (keys configured in code or loaded once).
#[derive(Debug, Clone)]
pub struct StaticKeys(Arc<KeySet>);

impl StaticKeys {
    /// Wraps a key set.
    #[must_use]
    pub fn new(set: KeySet) -> Self {
        Self(Arc::new(set))
    }
}

impl KeySource for StaticKeys {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.0)
    }

    async fn refresh_if_stale(&self) {}

    async fn refresh_on_unknown_kid(&self, _seen: &Arc<KeySet>) -> bool {
        false
    }
}

/// Default longest a fetched key set is trusted before it is fetched again: 10 minutes.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Longest a JWKS fetch may take before it counts as failed.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key set fetched from a JWKS endpoint. It is fetched again when it is older than
/// `max_age` (so withdrawn keys stop verifying) and when a token names an unknown `kid` —
/// at most once per `min_interval`, by one caller at a time, each fetch bounded by
/// [`JWKS_FETCH_TIMEOUT`], so a flood of tokens with random `kid`s cannot become a flood of
/// fetches or a queue of stalled requests. A failed fetch keeps the current keys.
pub struct RemoteKeySet<F: JwksFetcher> {
    fetcher: F,
    current: RwLock<(Arc<KeySet>, Instant)>,
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
    max_age: Duration,
}

impl<F: JwksFetcher> RemoteKeySet<F> {
    /// Fetches the initial key set.
    ///
    /// # Errors
    /// The fetcher's error (or a timeout), or [`AuthError::KeySet`] for a bad document.
    pub async fn new(fetcher: F, min_interval: Duration) -> Result<Self, AuthError> {
        let set = fetch_set(&fetcher).await?;
        Ok(Self {
            fetcher,
            current: RwLock::new((Arc::new(set), Instant::now())),
            last_attempt: tokio::sync::Mutex::new(Some(Instant::now())),
            min_interval,
            max_age: DEFAULT_JWKS_MAX_AGE,
        })
    }

    /// Changes how long a fetched key set is trusted.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    fn install(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(set), Instant::now());
    }

    /// Fetches now, whatever the interval (for a scheduled refresh). A failed fetch keeps
    /// the current keys.
    ///
    /// # Errors
    /// The fetcher's error (or a timeout), or [`AuthError::KeySet`] for a bad document.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        let set = fetch_set(&self.fetcher).await?;
        self.install(set);
        Ok(())
    }

    async fn rate_limited_fetch(&self) -> bool {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match fetch_set(&self.fetcher).await {
            Ok(set) => {
                self.install(set);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the current keys");
                false
            }
        }
    }
}

async fn fetch_set<F: JwksFetcher>(fetcher: &F) -> Result<KeySet, AuthError> {
    let json = tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetcher.fetch())
        .await
        .map_err(|_| AuthError::KeyFetch("timed out".into()))??;
    KeySet::from_jwks_json(&json)
}

impl<F: JwksFetcher> KeySource for RemoteKeySet<F> {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).0)
    }

    async fn refresh_if_stale(&self) {
        let age = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .elapsed();
        if age > self.max_age {
            self.rate_limited_fetch().await;
        }
    }

    async fn refresh_on_unknown_kid(&self, seen: &Arc<KeySet>) -> bool {
        // Someone refreshed since this verification read the keys: use theirs.
        if !Arc::ptr_eq(&self.current(), seen) {
            return true;
        }
        let fetched = self.rate_limited_fetch().await;
        fetched || !Arc::ptr_eq(&self.current(), seen)
    }
}

impl<F: JwksFetcher> fmt::Debug for RemoteKeySet<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKeySet")
            .field("current", &self.current())
            .field("min_interval", &self.min_interval)
            .finish_non_exhaustive()
    }
}

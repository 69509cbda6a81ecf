//! Issuing access tokens: for services that are their own identity provider, and for tests.
//! Signing keys rotate: the newest key signs, older keys stay in the published key set
//! until retired, so tokens already issued keep verifying.
//!
//! This module must never publish private key material in a JWKS.

use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use nova_tenancy::{AuthMethod, Region, Role, TenantId, UserId};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::AuthError;
use crate::jwks::{KeySet, MIN_HMAC_SECRET_LEN, verifying_key_from_jwk};
use crate::jws::{Alg, VerifyingKey};

/// Default access-token lifetime: 15 minutes.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A private signing key with its id and algorithm. `Debug` shows neither.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    encoding: EncodingKey,
    public_jwk: Option<Value>,
    hmac_secret: Option<Zeroizing<Vec<u8>>>,
}

impl SigningKey {
    /// A fresh ECDSA P-256 key (ES256).
    ///
    /// # Errors
    /// [`AuthError::Signing`] if the random number generator fails.
    pub fn generate_es256(kid: &str) -> Result<Self, AuthError> {
        let secret = loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(bytes.as_mut())
                .map_err(|_| AuthError::Signing("random number generator failed"))?;
            // Rejection sampling: about 2^-32 of 32-byte strings are not valid scalars.
            if let Ok(k) = p256::SecretKey::from_slice(bytes.as_ref()) {
                break k;
            }
        };
        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(AuthError::Signing("P-256 public key encoding"));
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|_| AuthError::Signing("P-256 PKCS#8 encoding"))?;
        Ok(Self {
            kid: kid.to_owned(),
            alg: Alg::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            public_jwk: Some(
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y), "kid": kid, "alg": "ES256", "use": "sig"}),
            ),
            hmac_secret: None,
        })
    }

    /// A fresh Ed25519 key (EdDSA).
    ///
    /// # Errors
    /// [`AuthError::Signing`] if the random number generator fails.
    pub fn generate_ed25519(kid: &str) -> Result<Self, AuthError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())
            .map_err(|_| AuthError::Signing("random number generator failed"))?;
        Ok(Self::ed25519_from_seed(kid, &seed))
    }

    /// An Ed25519 key from its 32-byte seed (RFC 8032 private key).
    #[must_use]
    pub fn ed25519_from_seed(kid: &str, seed: &[u8; 32]) -> Self {
        let public = ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes();
        // RFC 8410 §7 PKCS#8 v1 encoding of an Ed25519 private key: fixed 16-byte prefix.
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]);
        der.extend_from_slice(seed);
        Self {
            kid: kid.to_owned(),
            alg: Alg::EdDSA,
            encoding: EncodingKey::from_ed_der(&der),
            public_jwk: Some(
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": kid, "alg": "EdDSA", "use": "sig"}),
            ),
            hmac_secret: None,
        }
    }

    /// An RSA key (RS256) from PKCS#1 or PKCS#8 PEM.
    ///
    /// # Errors
    /// [`AuthError::Signing`] for an unreadable key.
    pub fn rs256_from_pem(kid: &str, pem: &[u8]) -> Result<Self, AuthError> {
        let encoding = EncodingKey::from_rsa_pem(pem).map_err(|_| AuthError::Signing("RSA PEM"))?;
        Self::rs256(kid, encoding)
    }

    /// An RSA key (RS256) from PKCS#1 DER.
    ///
    /// # Errors
    /// [`AuthError::Signing`] for an unreadable key.
    pub fn rs256_from_der(kid: &str, der: &[u8]) -> Result<Self, AuthError> {
        Self::rs256(kid, EncodingKey::from_rsa_der(der))
    }

    fn rs256(kid: &str, encoding: EncodingKey) -> Result<Self, AuthError> {
        let jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::RS256)
                .map_err(|_| AuthError::Signing("RSA public key"))?;
        let mut public =
            serde_json::to_value(&jwk).map_err(|_| AuthError::Signing("RSA public key"))?;
        if let Some(obj) = public.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
            obj.insert("use".into(), json!("sig"));
        }
        Ok(Self {
            kid: kid.to_owned(),
            alg: Alg::RS256,
            encoding,
            public_jwk: Some(public),
            hmac_secret: None,
        })
    }

    /// An HMAC-SHA256 secret (HS256), for services that share a secret with themselves.
    ///
    /// # Errors
    /// [`AuthError::WeakHmacSecret`] below 32 bytes.
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(AuthError::WeakHmacSecret {
                min: MIN_HMAC_SECRET_LEN,
            });
        }
        Ok(Self {
            kid: kid.to_owned(),
            alg: Alg::HS256,
            encoding: EncodingKey::from_secret(secret),
            public_jwk: None,
            hmac_secret: Some(Zeroizing::new(secret.to_vec())),
        })
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    #[must_use]
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK (`None` for HMAC keys, which are never published).
    #[must_use]
    pub fn public_jwk(&self) -> Option<&Value> {
        self.public_jwk.as_ref()
    }

    /// The key that verifies this key's signatures.
    ///
    /// # Errors
    /// [`AuthError::KeySet`] if the public key cannot be rebuilt.
    pub fn verifying_key(&self) -> Result<VerifyingKey, AuthError> {
        match (&self.public_jwk, &self.hmac_secret) {
            (Some(jwk), _) => verifying_key_from_jwk(jwk)?.ok_or(AuthError::KeySet("public key")),
            (None, Some(secret)) => Ok(VerifyingKey {
                kid: self.kid.clone(),
                alg: Alg::HS256,
                key: DecodingKey::from_secret(secret),
                prepared: crate::jws::Prepared::Generic,
            }),
            (None, None) => Err(AuthError::KeySet("public key")),
        }
    }

    /// Signs a JWS signing input (`base64url(header) '.' base64url(payload)`) and returns
    /// the base64url signature — for protocols that build their own header.
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn sign_signing_input(&self, input: &[u8]) -> Result<String, AuthError> {
        jsonwebtoken::crypto::sign(input, &self.encoding, self.alg.jwt())
            .map_err(|_| AuthError::Signing("sign"))
    }

    /// Signs a compact JWS over `claims` with header `{"alg", "kid", "typ": "JWT"}`.
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        let mut header = jsonwebtoken::Header::new(self.alg.jwt());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|_| AuthError::Signing("encode"))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &"[REDACTED]")
            .finish()
    }
}

/// The claims of an access token Nova issues.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    /// `tenant_id`.
    pub tenant: TenantId,
    /// `sub`.
    pub user: UserId,
    /// `roles`.
    pub roles: Vec<Role>,
    /// `scope` (space-separated).
    pub permissions: Vec<Role>,
    /// `region`.
    pub region: Option<Region>,
    /// `auth_time`: when the user authenticated (OpenID Connect Core §2).
    pub auth_time: Option<SystemTime>,
    /// `amr`: how (RFC 8176), written as given; [`AccessClaims::authenticated`] sorts and
    /// de-duplicates.
    pub methods: Vec<AuthMethod>,
}

impl AccessClaims {
    /// Claims for a user of a tenant, with no roles.
    #[must_use]
    pub fn new(tenant: TenantId, user: UserId) -> Self {
        Self {
            tenant,
            user,
            roles: Vec::new(),
            permissions: Vec::new(),
            region: None,
            auth_time: None,
            methods: Vec::new(),
        }
    }

    /// Records how and when the user authenticated, so verifiers can tell a second factor
    /// and its age ([`nova_tenancy::TenantContext::mfa_within`]).
    #[must_use]
    pub fn authenticated(
        mut self,
        at: SystemTime,
        methods: impl IntoIterator<Item = AuthMethod>,
    ) -> Self {
        self.auth_time = Some(at);
        self.methods.extend(methods);
        self.methods.sort_unstable();
        self.methods.dedup();
        self
    }

    /// Adds roles.
    #[must_use]
    pub fn roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles.extend(roles);
        self
    }

    /// Adds permissions (scopes).
    #[must_use]
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = Role>) -> Self {
        self.permissions.extend(permissions);
        self
    }
}

struct IssuerKeys {
    signing: usize,
    keys: Vec<SigningKey>,
}

/// Issues access tokens with rotating keys.
pub struct TokenIssuer {
    issuer: String,
    audience: String,
    ttl: Duration,
    keys: RwLock<IssuerKeys>,
}

impl TokenIssuer {
    /// An issuer signing with `key`, tokens valid for 15 minutes.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, key: SigningKey) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: DEFAULT_ACCESS_TTL,
            keys: RwLock::new(IssuerKeys {
                signing: 0,
                keys: vec![key],
            }),
        }
    }

    /// Changes the token lifetime.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Makes `key` the signing key. The previous keys stay published (and verifying) until
    /// [`TokenIssuer::retire`]d.
    pub fn rotate(&self, key: SigningKey) {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        k.keys.push(key);
        k.signing = k.keys.len() - 1;
    }

    /// Stops publishing a key that no longer signs. Tokens it signed stop verifying once
    /// verifiers refresh their key set.
    ///
    /// # Errors
    /// [`AuthError::Signing`] when asked to retire the current signing key or an unknown one.
    pub fn retire(&self, kid: &str) -> Result<(), AuthError> {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let pos = k
            .keys
            .iter()
            .position(|key| key.kid == kid)
            .ok_or(AuthError::Signing("unknown kid"))?;
        if pos == k.signing {
            return Err(AuthError::Signing(
                "the signing key cannot be retired; rotate first",
            ));
        }
        k.keys.remove(pos);
        if pos < k.signing {
            k.signing -= 1;
        }
        Ok(())
    }

    /// The public JWKS document to serve to verifiers (HMAC keys are never included).
    #[must_use]
    pub fn jwks_json(&self) -> String {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<&Value> = k.keys.iter().filter_map(SigningKey::public_jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// The verifying keys for every published key (HMAC keys included, for a service that
    /// verifies its own HS256 tokens).
    ///
    /// # Errors
    /// [`AuthError::KeySet`] if a key cannot be rebuilt.
    pub fn key_set(&self) -> Result<KeySet, AuthError> {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut set = KeySet::new();
        for key in &k.keys {
            set.insert(key.verifying_key()?)?;
        }
        Ok(set)
    }

    /// Issues an access token now.
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn issue(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        self.issue_at(claims, SystemTime::now())
    }

    /// Issues an access token as of `now`.
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn issue_at(&self, claims: &AccessClaims, now: SystemTime) -> Result<String, AuthError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut body = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": claims.user.to_string(),
            "tenant_id": claims.tenant.to_string(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.ttl.as_secs(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(obj) = body.as_object_mut() {
            if !claims.roles.is_empty() {
                obj.insert(
                    "roles".into(),
                    json!(claims.roles.iter().map(Role::as_str).collect::<Vec<_>>()),
                );
            }
            if !claims.permissions.is_empty() {
                let scope: Vec<&str> = claims.permissions.iter().map(Role::as_str).collect();
                obj.insert("scope".into(), json!(scope.join(" ")));
            }
            if let Some(r) = &claims.region {
                obj.insert("region".into(), json!(r.as_str()));
            }
            if let Some(at) = claims.auth_time {
                let at = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                obj.insert("auth_time".into(), json!(at));
            }
            if !claims.methods.is_empty() {
                obj.insert(
                    "amr".into(),
                    json!(
                        claims
                            .methods
                            .iter()
                            .map(AuthMethod::as_str)
                            .collect::<Vec<_>>()
                    ),
                );
            }
        }
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        k.keys[k.signing].sign(&body)
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("signing_kid", &k.keys[k.signing].kid)
            .field("published", &k.keys.len())
            .finish()
    }
}

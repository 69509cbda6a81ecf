//! # nova-auth
//!
//! Every request arrives as a verified [`nova_tenancy::TenantContext`] or is refused. This
//! crate turns credentials into contexts:
//!
//! - **JWT access tokens** — [`JwtVerifier`]: an explicit algorithm allow-list (RS256,
//!   ES256, EdDSA; HS256 only when configured, with secrets of at least 32 bytes), `kid`
//!   lookup in a [`KeySet`] with several keys live for rotation, a [`RemoteKeySet`] that
//!   refreshes on an unknown `kid` at most once per interval through a [`JwksFetcher`],
//!   `iss`/`aud`/`exp`/`nbf`/`iat` checks with leeway, required `sub` and `tenant_id` as
//!   typed ids, `roles` and `scope`.
//! - **Issuing** — [`TokenIssuer`]: 15-minute access tokens, key rotation (new key signs,
//!   old keys keep verifying until retired), and the public JWKS to serve.
//! - **Refresh tokens** — [`RefreshTokens`]: opaque, stored as hashes, rotated on every use;
//!   reuse of a spent token revokes the whole family (RFC 9700 §4.14).
//! - **Sessions** — [`Sessions`]: hashed tokens, absolute expiry and idle timeout, revoke
//!   one or all; PostgreSQL ([`PgSessionStore`]) and Redis ([`RedisSessionStore`]) stores.
//! - **Scoped API keys** — [`ApiKeys`]: `nova_sk_…` with a checksum that scanners and typo
//!   checks use before any lookup, stored as hashes, tied to tenant, role and scopes, with
//!   expiry, revocation, rotation with a grace period, CIDR allow-lists, time windows,
//!   last-used time and lockout after repeated failures.
//!
//! ```
//! use nova_auth::{AccessClaims, JwtConfig, JwtVerifier, SigningKey, StaticKeys, TokenIssuer};
//! use nova_tenancy::{Role, TenantId, UserId};
//!
//! // The identity provider side (or a test):
//! let issuer = TokenIssuer::new("https://auth.example", "tickets-api", SigningKey::generate_ed25519("2026-11")?);
//! let tenant = TenantId::new_v4();
//! let token = issuer.issue(&AccessClaims::new(tenant, UserId::new_v4()).roles([Role::new("agent").unwrap()]))?;
//!
//! // The service side: keys from the issuer's JWKS (`RemoteKeySet` in production).
//! let verifier = JwtVerifier::new(
//!     JwtConfig::new("https://auth.example", "tickets-api"),
//!     StaticKeys::new(issuer.key_set()?),
//! );
//! let ctx = verifier.verify_cached(&token)?;
//! assert_eq!(ctx.tenant(), tenant);
//! assert!(ctx.has_role("agent"));
//! # Ok::<(), nova_auth::AuthError>(())
//! ```
//!
//! ## Security notes
//!
//! - Verification order is fixed: size limit, structure, header (`crit`, `jku`, `jwk`,
//!   `x5u`, `x5c` and unknown `typ` refused), algorithm allow-list, key by `kid`, the key's
//!   own algorithm must equal the token's (no RSA key ever used as an HMAC secret), then the
//!   signature, and only then the claims (RFC 8725).
//! - Errors name the check that failed and never echo token, key or secret content.
//! - Opaque secrets are stored as SHA-256 hashes and compared in constant time; the
//!   secret appears once, in an [`IssuedSecret`] whose `Debug` is redacted.
//! - Credential tables are read before any tenant is known, so they are not under tenant
//!   row-level security: keep them in a schema only the auth role can read.
//!
//! ## Performance notes
//!
//! Verification costs about what `jsonwebtoken::decode` costs with the same key, and less
//! for EdDSA, because key sets keep parsed keys (figures and their run-to-run spread in
//! `BENCHMARKS.md`); an API key check costs under three SHA-256 computations of the key.
//!
//! ## Known limits
//!
//! - API key lockout is per key id, as specified; key ids are not secret, so anyone who
//!   knows one can keep that key locked by sending wrong secrets. Rate-limit failed
//!   attempts per client address in front of it (nova-auth part 2), and prefer rotating a
//!   key whose id has leaked.
//! - `verify_cached` never refreshes keys; the asynchronous `verify` refreshes a stale or
//!   incomplete key set.
//! - `iat` is required (Nova's issuer always sets it); tokens from an issuer that omits it
//!   are refused.

#![forbid(unsafe_code)]

mod api_key;
#[cfg(feature = "http")]
pub mod config;
mod error;
pub mod ip_rules;
mod issuer;
mod jwks;
mod jws;
mod jwt;
#[cfg(feature = "http")]
pub mod layer;
pub mod lockout;
mod opaque;
pub mod password;
#[cfg(feature = "postgres")]
mod pg;
pub mod rate_limit;
#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "redis")]
mod redis_session;
mod refresh;
mod session;
pub mod totp;

pub use api_key::{
    API_KEY_LEN, API_KEY_PREFIX, ApiKeyRecord, ApiKeyStore, ApiKeys, InMemoryApiKeyStore,
    KEY_ID_LEN, LAST_USED_RESOLUTION, LockoutPolicy, NewApiKey, ParsedApiKey, TimeWindow,
    parse_api_key,
};
pub use error::AuthError;
pub use issuer::{AccessClaims, DEFAULT_ACCESS_TTL, SigningKey, TokenIssuer};
pub use jwks::{
    DEFAULT_JWKS_MAX_AGE, JWKS_FETCH_TIMEOUT, JwksFetcher, KeySet, KeySource, MAX_JWKS_KEYS,
    MAX_JWKS_LEN, MIN_HMAC_SECRET_LEN, MIN_RSA_MODULUS_LEN, RemoteKeySet, StaticKeys,
    verifying_key_from_jwk,
};
pub use jws::{
    Alg, Compact, DEFAULT_MAX_TOKEN_LEN, Header, VerifyingKey, parse_compact, verify_compact,
    verify_signature,
};
pub use jwt::{JwtConfig, JwtVerifier, MAX_AUTH_METHODS, MAX_ROLES};
pub use opaque::{CHECKSUM_LEN, IssuedSecret, SECRET_LEN, hash_secret};
#[cfg(feature = "postgres")]
pub use pg::{PgApiKeyStore, PgRefreshStore, PgSessionStore, schema_sql};
#[cfg(feature = "redis")]
pub use redis_session::RedisSessionStore;
pub use refresh::{
    DEFAULT_REFRESH_TTL, InMemoryRefreshStore, REFRESH_PREFIX, RefreshRecord, RefreshStore,
    RefreshTokens, Rotated, parse_refresh_token,
};
pub use session::{
    SESSION_PREFIX, SessionLogin, SessionRecord, SessionStore, Sessions, VerifiedFactor,
    parse_session_token,
};

//! # nova-auth
//!
//! Verified credentials into a [`nova_tenancy::TenantContext`]. (Manual below.)

#![forbid(unsafe_code)]

mod api_key;
mod error;
mod issuer;
mod jwks;
mod jws;
mod jwt;
mod opaque;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "redis")]
mod redis_session;
mod refresh;
mod session;

pub use api_key::{
    API_KEY_LEN, API_KEY_PREFIX, ApiKeyRecord, ApiKeyStore, ApiKeys, InMemoryApiKeyStore,
    KEY_ID_LEN, LAST_USED_RESOLUTION, LockoutPolicy, NewApiKey, ParsedApiKey, TimeWindow,
    parse_api_key,
};
pub use error::AuthError;
pub use issuer::{AccessClaims, DEFAULT_ACCESS_TTL, SigningKey, TokenIssuer};
pub use jwks::{
    JwksFetcher, KeySet, KeySource, MAX_JWKS_KEYS, MAX_JWKS_LEN, MIN_HMAC_SECRET_LEN,
    MIN_RSA_MODULUS_LEN, RemoteKeySet, StaticKeys, verifying_key_from_jwk,
};
pub use jws::{
    Alg, Compact, DEFAULT_MAX_TOKEN_LEN, Header, VerifyingKey, parse_compact, verify_compact,
    verify_signature,
};
pub use jwt::{JwtConfig, JwtVerifier, MAX_ROLES};
pub use opaque::{CHECKSUM_LEN, IssuedSecret, SECRET_LEN, hash_secret};
#[cfg(feature = "postgres")]
pub use pg::{PgApiKeyStore, PgRefreshStore, PgSessionStore, schema_sql};
#[cfg(feature = "redis")]
pub use redis_session::RedisSessionStore;
pub use refresh::{
    DEFAULT_REFRESH_TTL, InMemoryRefreshStore, REFRESH_PREFIX, RefreshRecord, RefreshStore,
    RefreshTokens, Rotated, parse_refresh_token,
};
pub use session::{SESSION_PREFIX, SessionRecord, SessionStore, Sessions, parse_session_token};

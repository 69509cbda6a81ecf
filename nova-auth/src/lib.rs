//! # nova-auth
//!
//! Verified credentials into a [`nova_tenancy::TenantContext`]. (Manual below.)

#![forbid(unsafe_code)]

mod error;
mod issuer;
mod jwks;
mod jws;
mod jwt;

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

//! # nova-auth
//!
//! **Status: not yet implemented.** This crate reserves its place in the Nova workspace and
//! exposes no API yet. When built it will provide verified credentials for Nova: JWT/JWKS verification, API keys, refresh tokens, sessions, TOTP, passwords, rate limits, IP rules and a tower layer that turns a request into a `nova_tenancy::TenantContext`.
//!
//! See the workspace `README.md` for what is available today.

#![forbid(unsafe_code)]

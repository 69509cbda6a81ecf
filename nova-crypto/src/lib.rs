//! # nova-crypto
//!
//! **Status: not yet implemented.** This crate reserves its place in the Nova workspace and
//! exposes no API yet. When built it will provide per-tenant field encryption for Nova: keys held only in zeroizing types, HKDF per-tenant data keys, versioned AES-256-GCM envelopes bound to tenant, table, column and row, rotation, crypto-shredding, blind indexes and streaming encryption.
//!
//! See the workspace `README.md` for what is available today.

#![forbid(unsafe_code)]

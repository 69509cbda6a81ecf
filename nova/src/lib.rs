//! Nova for applications: one configuration file, one [`Nova`] that wires every part,
//! and one [`Scope`] per request that carries a verified caller from the credential to the
//! commit.
//!
//! ```text
//! credential ──guard──▶ TenantContext ──Scope──▶ policy decision (MFA, reasons)
//!                                            ├──▶ tenant transaction (row-level security)
//!                                            ├──▶ sealed columns (tenant or subject keys)
//!                                            └──▶ audit event, committed with the data
//! ```
//!
//! - [`Config`] reads one TOML file: every part's `[security.*]` section, typed, checked
//!   against one profile; strict profiles refuse plaintext database connections, a
//!   made-up key-encryption key, and unsigned audit checkpoints.
//! - [`Nova::builder`] connects the application login (refused when it can skip row-level
//!   security), Nova's own login, the keyring, the policy store, the audit log and its
//!   outbox relay, and the guard layer with every configured setting applied.
//! - [`Scope`] (also an axum extractor) opens the tenant transaction when first needed,
//!   authorizes through the policy store, seals and opens declared columns, and writes
//!   audit events into the transaction, so that a failed commit leaves no event; denials
//!   are audited at once.
//!
//! The five parts are re-exported: [`tenancy`], [`crypto`], [`auth`], [`policy`],
//! [`audit`]. `examples/axum_service.rs` is a whole service on this crate.
#![forbid(unsafe_code)]

mod app;
pub mod config;
mod error;
mod outbox;
mod principal;
mod privacy;
mod scope;
mod sealed;
#[cfg(feature = "axum")]
mod web;

pub use app::{Nova, NovaBuilder, NovaCredentials, migrate, migration_sql};
pub use config::{Config, ConfigError};
pub use error::Error;
pub use outbox::{Outbox, RELAY_BATCH};
pub use principal::Principals;
pub use privacy::Erasure;
pub use scope::{Decision, Scope, Target, bind_filter};
pub use sealed::{KeyOf, SealedTable};

/// `nova-audit`: the tamper-evident log.
pub use nova_audit as audit;
/// `nova-auth`: credentials and the guard.
pub use nova_auth as auth;
/// `nova-crypto`: keys and envelopes.
pub use nova_crypto as crypto;
/// `nova-policy`: the policy language and store.
pub use nova_policy as policy;
/// `nova-tenancy`: tenant contexts and transactions.
pub use nova_tenancy as tenancy;
pub use nova_tenancy::Profile;

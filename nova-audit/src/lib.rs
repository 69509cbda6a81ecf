//! # nova-audit
//!
//! **Status: in development.** Today this crate provides:
//!
//! - RFC 6962 Merkle tree hashing with inclusion and consistency proofs, verified against the
//!   Certificate Transparency reference vectors;
//! - C2SP signed-note checkpoints signed with Ed25519;
//! - the typed [`AuditEvent`] with its documented canonical JSON encoding, in which
//!   sensitive parameters never appear in clear;
//! - [`FileLog`], a crash-safe JSON-lines log that signs a checkpoint after every batch, and
//!   [`verify_file`], which names the first bad entry;
//! - [`InclusionBundle`] and [`prove_file`]: self-contained proofs that one entry is in a
//!   signed log;
//! - the `nova-audit` command: `verify <file> --key <key> [--checkpoint <file>]`,
//!   `prove <file> --key <key> --index <n>` and `check-proof <file> --key <key>`, which exit
//!   0 when everything verifies, 1 when verification fails and 2 for usage errors.
//!
//! - [`RedactionPolicy`]: values marked sensitive, and parameters, actors or addresses a
//!   policy names, are redacted or keyed-hashed before the log encodes them.
//!
//! - [`Detector`]: rules over the event stream (repeated failed logins, cross-tenant
//!   attempts, RLS bypass, key destruction) that raise alerts through a callback, and
//!   counters in the Prometheus text format.
//!
//! - [`AuditLayer`] (feature `tracing-bridge`, on by default): the `tracing` bridge that
//!   records the `nova::audit` events every Nova crate emits (RLS bypass, API-key failures,
//!   cross-tenant attempts, refresh-token reuse, key rotation and shredding) as audit
//!   events, so no crate depends on this one to be audited.
//!
//! Not built yet: the PostgreSQL sink, a background writer with back-pressure, and
//! retention.

#![forbid(unsafe_code)]

#[cfg(feature = "tracing-bridge")]
mod bridge;
mod checkpoint;
mod detect;
mod event;
mod file_log;
mod merkle;
#[cfg(feature = "postgres")]
mod pg_log;
mod proof;
mod redaction;
mod verify;
mod writer;

#[cfg(feature = "tracing-bridge")]
pub use bridge::AuditLayer;
pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, MAX_CHECKPOINT_LEN, MAX_SIGNATURES, VerifierKey,
};
pub use detect::{Alert, Detector, DetectorConfig, Rule, event_types};
pub use event::{AuditEvent, AuditEventBuilder, Outcome, ParamValue, SCHEMA_VERSION};
pub use file_log::{FileLog, FsyncPolicy, LogError, MAX_LINE_LEN, verify_file, verify_reader};
pub use merkle::{
    Hash, MAX_PROOF_LEN, MerkleTree, ProofError, empty_root, leaf_hash, mth, node_hash,
    verify_consistency, verify_inclusion,
};
#[cfg(feature = "postgres")]
pub use pg_log::{PgLog, PgLogError, PgLogSchema};
pub use proof::{BundleError, InclusionBundle, MAX_BUNDLE_LEN, prove_file};
pub use redaction::{REDACTED, RedactionPolicy, Treatment};
pub use verify::Verdict;
pub use writer::{AppendError, AuditLog, Sink, WriterConfig};

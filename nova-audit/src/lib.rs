//! # nova-audit
//!
//! A tamper-evident audit log that applications link directly: a service appends events in
//! one call, and anyone holding the log's public key can verify it offline.
//!
//! - [`AuditEvent`]: the typed event with its documented canonical JSON encoding, in which
//!   sensitive parameters never appear in clear; [`RedactionPolicy`] redacts or keyed-hashes
//!   parameters, actors and addresses before anything is encoded.
//! - RFC 6962 Merkle trees ([`MerkleTree`], inclusion and consistency proofs, checked
//!   against the Certificate Transparency vectors) and C2SP signed-note checkpoints signed
//!   with Ed25519 ([`CheckpointSigner`], [`VerifierKey`]).
//! - [`AuditLog`]: the one-call writer. A background thread commits queued events in
//!   batches (group commit) and answers each caller with its index once durable; a bounded
//!   queue pushes back when the sink falls behind.
//! - Sinks: [`FileLog`], a crash-safe JSON-lines file (torn tails repaired on open, a
//!   signed checkpoint per batch), and `PgLog` (feature `postgres`, on by default),
//!   append-only PostgreSQL tables guarded by a trigger and safe with several writer
//!   processes; any [`Sink`] of your own.
//! - Verification: [`verify_file`] / [`verify_reader`] and `PgLogSchema::verify` name the
//!   first bad entry; [`InclusionBundle`] / [`prove_file`] make self-contained proofs; the
//!   `nova-audit` command (`verify <file|postgres-url>`, `prove`, `check-proof`) exits 0
//!   when everything verifies, 1 when verification fails and 2 for usage errors.
//! - Retention: [`FileLog::prune_before`] and `PgLogSchema::prune_before` remove old events'
//!   content but keep their leaf hashes, so the tree and every checkpoint still verify
//!   ([`Verdict::pruned`] says how many entries can no longer be read).
//! - [`Detector`]: rules over the event stream (repeated failed logins, cross-tenant
//!   attempts, RLS bypass, key destruction) raising alerts through a callback, with
//!   counters in the Prometheus text format.
//! - Integration without dependencies: every Nova crate reports its security events through
//!   `nova_tenancy::AuditHook` (recorded by [`HookRecorder`]) and as `tracing` events on
//!   `nova::audit` (recorded by [`AuditLayer`], feature `tracing-bridge`, on by default).
//!
//! ## Security notes
//!
//! A checkpoint proves what a log held when it was signed. Verification finds any modified,
//! dropped, inserted, duplicated or reordered entry; removing the newest entries together
//! with their checkpoints is found only against a checkpoint kept elsewhere (pass it as
//! `external`). The signing key is the root of trust: keep it out of the database and off
//! the hosts whose administrators the log must hold to account.

#![forbid(unsafe_code)]

#[cfg(feature = "tracing-bridge")]
mod bridge;
mod checkpoint;
mod config;
mod detect;
mod event;
mod file_log;
mod hook;
mod merkle;
#[cfg(feature = "postgres")]
mod pg_log;
mod proof;
mod record;
mod redaction;
mod verify;
mod writer;

#[cfg(feature = "tracing-bridge")]
pub use bridge::AuditLayer;
pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, MAX_CHECKPOINT_LEN, MAX_SIGNATURES, VerifierKey,
};
pub use config::{
    AuditConfig, AuditConfigError, FsyncSetting, HIPAA_RETENTION_DAYS, MIN_STRICT_RETENTION_DAYS,
};
pub use detect::{Alert, Detector, DetectorConfig, Rule, event_types};
pub use event::{AuditEvent, AuditEventBuilder, Outcome, ParamValue, SCHEMA_VERSION};
pub use file_log::{FileLog, FsyncPolicy, LogError, MAX_LINE_LEN, verify_file, verify_reader};
pub use hook::HookRecorder;
pub use merkle::{
    Hash, MAX_PROOF_LEN, MerkleTree, ProofError, empty_root, leaf_hash, mth, node_hash,
    verify_consistency, verify_inclusion,
};
#[cfg(feature = "postgres")]
pub use pg_log::{PgLog, PgLogError, PgLogSchema};
pub use proof::{BundleError, InclusionBundle, MAX_BUNDLE_LEN, prove_file};
pub use record::{MAX_RECORD_LEN, RecordError};
pub use redaction::{REDACTED, RedactionPolicy, Treatment};
pub use verify::Verdict;
pub use writer::{AppendError, AuditLog, Sink, WriterConfig};

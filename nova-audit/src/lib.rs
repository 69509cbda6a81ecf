//! # nova-audit
//!
//! **Status: in development.** Today this crate provides the tamper-evidence core: RFC 6962
//! Merkle tree hashing with inclusion and consistency proofs (verified against the
//! Certificate Transparency reference vectors), C2SP signed-note checkpoints signed with
//! Ed25519, and the typed [`AuditEvent`] with its documented canonical JSON encoding, in
//! which sensitive parameters never appear in clear. The log writer, sinks (JSON lines,
//! PostgreSQL, `tracing`), keyed-hash redaction, the verifier command, retention and
//! detection rules are not built yet.

#![forbid(unsafe_code)]

mod checkpoint;
mod event;
mod file_log;
mod merkle;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, MAX_CHECKPOINT_LEN, MAX_SIGNATURES, VerifierKey,
};
pub use event::{AuditEvent, AuditEventBuilder, Outcome, ParamValue, SCHEMA_VERSION};
pub use file_log::{FileLog, FsyncPolicy, LogError, MAX_LINE_LEN, Verdict, verify_file};
pub use merkle::{
    Hash, MAX_PROOF_LEN, MerkleTree, ProofError, empty_root, leaf_hash, mth, node_hash,
    verify_consistency, verify_inclusion,
};

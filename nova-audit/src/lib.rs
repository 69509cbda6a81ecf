//! # nova-audit
//!
//! **Status: in development.** Today this crate provides the tamper-evidence core: RFC 6962
//! Merkle tree hashing with inclusion and consistency proofs (verified against the
//! Certificate Transparency reference vectors) and C2SP signed-note checkpoints signed with
//! Ed25519. Audit events, redaction, sinks, the verifier command and retention are not
//! built yet.

#![forbid(unsafe_code)]

mod checkpoint;
mod merkle;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, MAX_CHECKPOINT_LEN, MAX_SIGNATURES, VerifierKey,
};
pub use merkle::{
    Hash, MAX_PROOF_LEN, MerkleTree, ProofError, empty_root, leaf_hash, mth, node_hash,
    verify_consistency, verify_inclusion,
};

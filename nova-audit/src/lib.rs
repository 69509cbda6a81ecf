//! # nova-audit
//!
//! **Status: not yet implemented.** This crate reserves its place in the Nova workspace and
//! exposes no API yet. When built it will provide a tamper-evident audit log for Nova: typed events, redaction, an RFC 6962 Merkle tree with signed checkpoints, sinks and an offline verifier.
//!
//! See the workspace `README.md` for what is available today.

#![forbid(unsafe_code)]

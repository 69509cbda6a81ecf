//! Self-contained inclusion proofs: one entry of a log, its Merkle path and the signed
//! checkpoint the path leads to, so anyone holding the log's public key can check offline
//! that the entry is in the log without seeing any other entry.
//!
//! The bundle is one JSON object with exactly these members (any other member, a duplicate or
//! a wrong type is refused):
//!
//! ```text
//! {"v":1,
//!  "index":<entry index>,
//!  "entry":"<standard base64 of the canonical event bytes, exactly as stored>",
//!  "path":["<standard base64 of a 32-byte hash>", ...],
//!  "checkpoint":"<signed checkpoint note>"}
//! ```
//!
//! [`InclusionBundle::verify`] checks the checkpoint's signature, then the RFC 9162 inclusion
//! proof of `SHA-256(0x00 || entry)` at `index` against the checkpoint's root. Parsing is
//! bounded ([`MAX_BUNDLE_LEN`]) and never panics. This module must never report an entry as
//! included unless both the signature and the path verify.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{Checkpoint, CheckpointError, VerifierKey};
use crate::file_log::{LogError, MAX_LINE_LEN, parse_line, read_line, verify_file};
use crate::merkle::{Hash, MAX_PROOF_LEN, MerkleTree, ProofError, leaf_hash, verify_inclusion};
use crate::verify::Record;

/// Largest bundle accepted (2 MiB: one entry of at most [`MAX_LINE_LEN`] in base64, a path and
/// a checkpoint).
pub const MAX_BUNDLE_LEN: usize = 2 << 20;

/// Why an inclusion bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle is not in the documented format.
    #[error("malformed inclusion proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint in the bundle does not carry a valid signature from the key.
    #[error("inclusion proof checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The path does not lead from the entry to the signed root.
    #[error("entry is not proven to be in the log: {0}")]
    Proof(#[from] ProofError),
    /// The log file failed verification, so no proof is made from it.
    #[error("the log does not verify: {0}")]
    LogNotTrusted(String),
    /// The entry exists but no signed checkpoint covers it yet.
    #[error("entry {index} is not covered by a signed checkpoint (the log seals {sealed})")]
    NotSealed {
        /// The requested entry.
        index: u64,
        /// Entries covered by the last checkpoint.
        sealed: u64,
    },
    /// The entry was removed by retention: only its hash remains, so there is nothing to
    /// prove.
    #[error("entry {index} was pruned by retention")]
    Pruned {
        /// The requested entry.
        index: u64,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// An entry with the proof that it is in a signed log.
///
/// Its JSON form has exactly the members `v` (1), `index`, `entry` (standard base64 of the
/// canonical event bytes as stored), `path` (standard base64 32-byte hashes, leaf to root)
/// and `checkpoint` (the signed note); anything else is refused by
/// [`InclusionBundle::parse`].
///
/// ```
/// use nova_audit::{AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, VerifierKey, prove_file};
/// # let dir = std::env::temp_dir().join(format!("nova-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("audit.jsonl");
/// let signer = CheckpointSigner::from_seed("audit.example", &[7; 32]).unwrap();
/// let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
/// let mut log = FileLog::open(&path, "audit.example/t", signer, FsyncPolicy::Always).unwrap();
/// let tenant = nova_tenancy::TenantId::new_v4();
/// log.append(&AuditEvent::builder(tenant, "data.read", "tickets.read").build()).unwrap();
///
/// let proof = prove_file(&path, &key, 0).unwrap();
/// let text = proof.to_json(); // hand this to an auditor...
/// let checkpoint = nova_audit::InclusionBundle::parse(&text).unwrap().verify(&key).unwrap();
/// assert_eq!(checkpoint.size, 1);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionBundle {
    /// The entry's index in the log.
    pub index: u64,
    /// The canonical event bytes, exactly as the log stores them.
    pub entry: Vec<u8>,
    /// The RFC 9162 inclusion path, leaf to root.
    pub path: Vec<Hash>,
    /// The signed checkpoint note whose root the path leads to.
    pub checkpoint: String,
}

impl InclusionBundle {
    /// Verifies the bundle with the log's public key and returns the checkpoint it is proven
    /// against.
    ///
    /// # Errors
    /// [`BundleError::Checkpoint`] for a bad signature, [`BundleError::Proof`] when the path
    /// does not lead to the signed root, [`BundleError::Malformed`] when the entry is not a
    /// JSON object.
    pub fn verify(&self, key: &VerifierKey) -> Result<Checkpoint, BundleError> {
        let checkpoint = key.verify(&self.checkpoint)?;
        if !self.entry.starts_with(b"{")
            || serde_json::from_slice::<serde_json::Value>(&self.entry)
                .map_or(true, |v| !v.is_object())
        {
            return Err(BundleError::Malformed("entry is not a JSON object"));
        }
        verify_inclusion(
            &leaf_hash(&self.entry),
            self.index,
            checkpoint.size,
            &self.path,
            &checkpoint.root,
        )?;
        Ok(checkpoint)
    }

    /// The bundle as its JSON text (one line).
    #[must_use]
    pub fn to_json(&self) -> String {
        let path: Vec<String> = self.path.iter().map(|h| STANDARD.encode(h)).collect();
        serde_json::json!({
            "v": 1,
            "index": self.index,
            "entry": STANDARD.encode(&self.entry),
            "path": path,
            "checkpoint": self.checkpoint,
        })
        .to_string()
    }

    /// Parses a bundle from its JSON text. This checks the format only; call
    /// [`InclusionBundle::verify`] before trusting it.
    ///
    /// # Errors
    /// [`BundleError::Malformed`] for anything but the documented format.
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        if text.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::Malformed("too large"));
        }
        // serde_json keeps the last of duplicate keys; refuse them rather than guess.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| BundleError::Malformed("not a JSON object"))?;
        let obj = value
            .as_object()
            .ok_or(BundleError::Malformed("not a JSON object"))?;
        if obj.len() != 5 || count_top_level_keys(text) != Some(5) {
            return Err(BundleError::Malformed(
                "expected exactly v, index, entry, path and checkpoint",
            ));
        }
        if obj.get("v").and_then(serde_json::Value::as_u64) != Some(1) {
            return Err(BundleError::Malformed("unsupported version"));
        }
        let index =
            obj.get("index")
                .and_then(serde_json::Value::as_u64)
                .ok_or(BundleError::Malformed(
                    "index must be a non-negative integer",
                ))?;
        let entry = obj
            .get("entry")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or(BundleError::Malformed("entry must be standard base64"))?;
        if entry.len() > MAX_LINE_LEN {
            return Err(BundleError::Malformed("entry too large"));
        }
        let items = obj
            .get("path")
            .and_then(serde_json::Value::as_array)
            .ok_or(BundleError::Malformed("path must be an array"))?;
        if items.len() > MAX_PROOF_LEN {
            return Err(BundleError::Malformed("path too long"));
        }
        let path = items
            .iter()
            .map(|item| {
                item.as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or(BundleError::Malformed(
                        "path items must be base64 32-byte hashes",
                    ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint = obj
            .get("checkpoint")
            .and_then(serde_json::Value::as_str)
            .ok_or(BundleError::Malformed("checkpoint must be a string"))?
            .to_owned();
        Ok(Self {
            index,
            entry,
            path,
            checkpoint,
        })
    }
}

/// Counts the members of the top-level object, duplicates included (`None` if the text is
/// not one JSON object). Used to refuse duplicate members, which `serde_json` would merge.
fn count_top_level_keys(text: &str) -> Option<usize> {
    struct Count(usize);
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            mut self,
            mut map: A,
        ) -> Result<usize, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {
                self.0 += 1;
            }
            Ok(self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let n = serde::Deserializer::deserialize_map(&mut de, Count(0)).ok()?;
    de.end().ok()?;
    Some(n)
}

/// Makes an inclusion bundle for entry `index` of the log file at `path`, against the first
/// signed checkpoint in the file that covers the entry. The whole file is verified first, and the bundle is
/// verified before it is returned.
///
/// # Errors
/// [`BundleError::LogNotTrusted`] when the file fails verification,
/// [`BundleError::NotSealed`] when no checkpoint covers the entry yet, [`BundleError::Log`]
/// for I/O errors.
pub fn prove_file(
    path: impl AsRef<Path>,
    key: &VerifierKey,
    index: u64,
) -> Result<InclusionBundle, BundleError> {
    let path = path.as_ref();
    let verdict = verify_file(path, key, None)?;
    if verdict.first_bad.is_some() {
        return Err(BundleError::LogNotTrusted(
            verdict.reason.unwrap_or_default(),
        ));
    }
    if index >= verdict.sealed {
        return Err(BundleError::NotSealed {
            index,
            sealed: verdict.sealed,
        });
    }
    let mut reader = BufReader::new(File::open(path).map_err(LogError::Io)?);
    let mut tree = MerkleTree::new();
    let mut entry = None;
    let mut sealing_note = None;
    let mut buf = Vec::new();
    loop {
        let n = read_line(&mut reader, &mut buf).map_err(LogError::Io)?;
        let Some(line) = buf.strip_suffix(b"\n") else {
            break;
        };
        if n == 0 {
            break;
        }
        match parse_line(line) {
            Some(Record::Event { index: i, bytes }) if i == tree.size() => {
                if i == index {
                    entry = Some(bytes.to_vec());
                }
                tree.push(leaf_hash(bytes));
            }
            Some(Record::Pruned { index: i, leaf }) if i == tree.size() => {
                if i == index {
                    return Err(BundleError::Pruned { index });
                }
                tree.push(leaf);
            }
            Some(Record::Checkpoint(note)) => {
                if key.verify(&note).is_ok_and(|cp| cp.size > index) {
                    sealing_note = Some(note.into_owned());
                    break;
                }
            }
            // Changed since it was verified; reported below.
            _ => break,
        }
    }
    let (Some(entry), Some(checkpoint)) = (entry, sealing_note) else {
        return Err(BundleError::LogNotTrusted(
            "the log changed while the proof was made".into(),
        ));
    };
    let size = key.verify(&checkpoint)?.size;
    let path = tree
        .inclusion_proof(index, size)
        .ok_or(BundleError::LogNotTrusted(
            "the log changed while the proof was made".into(),
        ))?;
    let bundle = InclusionBundle {
        index,
        entry,
        path,
        checkpoint,
    };
    bundle.verify(key)?;
    Ok(bundle)
}

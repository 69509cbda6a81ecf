//! A tamper-evident audit log in a JSON-lines file, one per tenant.
//!
//! ```text
//! {"i":0,"e":{...canonical event...}}\n
//! {"i":1,"e":{...}}\n
//! {"c":"<signed checkpoint note>"}\n        ← after every batch
//! ```
//!
//! The leaf hash of entry *i* is `SHA-256(0x00 || canonical event bytes)`, the bytes exactly
//! as stored between `"e":` and the line's closing `}`. After each batch the writer appends a
//! checkpoint signed with the log's Ed25519 key, so that a reader holding only the public key
//! can tell whether anything up to that point changed.
//!
//! **Durability.** [`FsyncPolicy::Always`] (the default) syncs the file before
//! [`FileLog::append`] returns, so an acknowledged event survives a crash or `SIGKILL`. On
//! open, a torn last line (a crash mid-write) is detected and cut off, and the tree is rebuilt
//! from the file. This module must never acknowledge an event before it is as durable as the
//! policy promises, and never silently drop a complete line when repairing.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointSigner, VerifierKey};
use crate::event::AuditEvent;
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::redaction::RedactionPolicy;

/// Longest line the reader accepts (1 MiB): bounds memory on a hostile file.
pub const MAX_LINE_LEN: usize = 1 << 20;

/// When the writer forces data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Before every append returns (no acknowledged event is ever lost).
    Always,
    /// Once per batch ([`FileLog::append_batch`]); single appends behave like `Always`.
    PerBatch,
    /// Never (the OS decides): for tests and benchmarks only.
    Never,
}

/// Errors of the file log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Reading or writing the file failed.
    #[error("audit log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A complete line in the middle of the file is not a valid entry: the file was edited.
    #[error("audit log line {line} is not a valid entry")]
    Corrupt {
        /// 1-based line number.
        line: u64,
    },
}

/// An open log file with its Merkle tree.
pub struct FileLog {
    path: PathBuf,
    file: File,
    tree: MerkleTree,
    origin: String,
    signer: CheckpointSigner,
    fsync: FsyncPolicy,
    repaired_bytes: u64,
    redaction: RedactionPolicy,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog")
            .field("path", &self.path)
            .field("size", &self.tree.size())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Reads the next line into `buf` (cleared first), at most [`MAX_LINE_LEN`] + 1 bytes so a
/// hostile file cannot exhaust memory; returns the bytes read (0 at the end of the file).
pub(crate) fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    reader
        .by_ref()
        .take(MAX_LINE_LEN as u64 + 1)
        .read_until(b'\n', buf)
}

/// Splits an entry line into its index and the raw canonical event bytes.
pub(crate) fn parse_entry(line: &[u8]) -> Option<(u64, &[u8])> {
    let rest = line.strip_prefix(br#"{"i":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let event = rest[digits..]
        .strip_prefix(br#","e":"#)?
        .strip_suffix(b"}")?;
    if !event.starts_with(b"{") || !event.ends_with(b"}") {
        return None;
    }
    Some((index, event))
}

pub(crate) fn parse_checkpoint_line(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("c")?.as_str().map(str::to_owned)
}

impl FileLog {
    /// Opens (or creates) the log at `path`, repairing a torn last line and rebuilding the
    /// tree. Entries and checkpoints are not verified here; use [`verify_file`].
    ///
    /// # Errors
    /// [`LogError::Io`], or [`LogError::Corrupt`] for a malformed complete line.
    pub fn open(
        path: impl AsRef<Path>,
        origin: &str,
        signer: CheckpointSigner,
        fsync: FsyncPolicy,
    ) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut tree = MerkleTree::new();
        let mut good_len = 0u64;
        let mut line_no = 0u64;
        {
            let mut reader = BufReader::new(&mut file);
            reader.seek(SeekFrom::Start(0))?;
            let mut buf = Vec::new();
            loop {
                let n = read_line(&mut reader, &mut buf)?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                if buf.last() != Some(&b'\n') {
                    // A line without its newline can only be the torn last write of a crash.
                    break;
                }
                let line = &buf[..buf.len() - 1];
                if let Some((index, event)) = parse_entry(line) {
                    if index != tree.size() {
                        return Err(LogError::Corrupt { line: line_no });
                    }
                    tree.push(leaf_hash(event));
                } else if parse_checkpoint_line(line).is_none() {
                    return Err(LogError::Corrupt { line: line_no });
                }
                good_len += n as u64;
            }
        }
        let total = file.metadata()?.len();
        let repaired_bytes = total - good_len;
        if repaired_bytes > 0 {
            file.set_len(good_len)?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), repaired_bytes, "torn audit log tail removed");
        }
        Ok(Self {
            path,
            file,
            tree,
            origin: origin.to_owned(),
            signer,
            fsync,
            repaired_bytes,
            redaction: RedactionPolicy::new(),
        })
    }

    /// Applies `policy` to every event this log writes from now on, before the event is
    /// encoded or hashed: no value the policy names reaches the file in clear. Without a
    /// policy, parameters marked sensitive are redacted.
    #[must_use]
    pub fn with_redaction(mut self, policy: RedactionPolicy) -> Self {
        self.redaction = policy;
        self
    }

    /// Bytes of a torn tail removed when the log was opened.
    #[must_use]
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired_bytes
    }

    /// Number of entries.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The current Merkle root.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The tree (for proofs).
    #[must_use]
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    fn encode(&self, event: &AuditEvent, index: u64, out: &mut Vec<u8>) -> Hash {
        let canonical = event.canonical_json_with(&self.redaction);
        let leaf = leaf_hash(&canonical);
        out.extend_from_slice(format!(r#"{{"i":{index},"e":"#).as_bytes());
        out.extend_from_slice(&canonical);
        out.extend_from_slice(b"}\n");
        leaf
    }

    /// Appends one event and a checkpoint; returns its index once durable per the policy.
    ///
    /// # Errors
    /// [`LogError::Io`]; on error nothing is acknowledged.
    pub fn append(&mut self, event: &AuditEvent) -> Result<u64, LogError> {
        let first = self.append_batch(std::slice::from_ref(event))?;
        Ok(first)
    }

    /// Appends events in one write, one sync and one checkpoint (group commit); returns the
    /// index of the first.
    ///
    /// # Errors
    /// [`LogError::Io`]; on error nothing is acknowledged and the in-memory tree is unchanged.
    pub fn append_batch(&mut self, events: &[AuditEvent]) -> Result<u64, LogError> {
        let first = self.tree.size();
        let mut buf = Vec::with_capacity(events.len() * 320 + 400);
        let mut leaves = Vec::with_capacity(events.len());
        for (k, e) in events.iter().enumerate() {
            leaves.push(self.encode(e, first + k as u64, &mut buf));
        }
        // Sign the root the tree will have, without touching the tree until the batch is
        // durable (cloning the tree here made each batch O(log size) → O(size)).
        let note = self.signer.sign(&Checkpoint {
            origin: self.origin.clone(),
            size: first + leaves.len() as u64,
            root: self.tree.root_with(&leaves),
        });
        let line = serde_json::json!({ "c": note }).to_string();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
        }
        for leaf in leaves {
            self.tree.push(leaf);
        }
        Ok(first)
    }
}

/// The outcome of verifying a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries read.
    pub entries: u64,
    /// Entries covered by a valid checkpoint.
    pub sealed: u64,
    /// The first entry that cannot be trusted, if any: a line that is not a valid entry, an
    /// out-of-sequence index (deleted, inserted, duplicated or reordered entries), or the
    /// first entry after the last valid checkpoint when a later checkpoint fails (a changed
    /// entry somewhere in that batch).
    pub first_bad: Option<u64>,
    /// Why, in words.
    pub reason: Option<String>,
    /// The origin line every valid checkpoint in the log carries (which log this is), when
    /// the log verified and has a checkpoint. A log whose checkpoints name two origins fails.
    pub origin: Option<String>,
}

impl Verdict {
    /// Whether every entry verified and nothing is unsealed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.first_bad.is_none() && self.sealed == self.entries
    }
}

/// Verifies a log file with the log's public key, and optionally against an externally kept
/// checkpoint (which catches truncation: a log shorter than a checkpoint it once had).
///
/// # Errors
/// [`LogError::Io`] when the file cannot be read.
pub fn verify_file(
    path: impl AsRef<Path>,
    key: &VerifierKey,
    external: Option<&str>,
) -> Result<Verdict, LogError> {
    verify_reader(File::open(path)?, key, external)
}

/// [`verify_file`] over any reader of a log's bytes (a download, a backup stream). Memory
/// stays bounded whatever the input: lines are read at most [`MAX_LINE_LEN`] + 1 bytes at a
/// time and the tree keeps 32 bytes per entry.
///
/// # Errors
/// [`LogError::Io`] when reading fails.
pub fn verify_reader(
    reader: impl std::io::Read,
    key: &VerifierKey,
    external: Option<&str>,
) -> Result<Verdict, LogError> {
    let mut reader = BufReader::new(reader);
    let mut tree = MerkleTree::new();
    let mut sealed = 0u64;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let bad = |index: u64, sealed: u64, why: String| Verdict {
        entries: index,
        sealed,
        first_bad: Some(index),
        reason: Some(why),
        origin: None,
    };
    let mut origin: Option<String> = None;
    loop {
        let n = read_line(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Ok(bad(
                tree.size(),
                sealed,
                format!("line {line_no} is incomplete (torn write)"),
            ));
        };
        if let Some((index, event)) = parse_entry(line) {
            if index != tree.size() {
                return Ok(bad(
                    tree.size(),
                    sealed,
                    format!(
                        "line {line_no} has index {index} where {} was expected (entries deleted, inserted, duplicated or reordered)",
                        tree.size()
                    ),
                ));
            }
            if serde_json::from_slice::<serde_json::Value>(event).is_err() {
                return Ok(bad(
                    index,
                    sealed,
                    format!("entry {index} is not valid JSON"),
                ));
            }
            tree.push(leaf_hash(event));
        } else if let Some(note) = parse_checkpoint_line(line) {
            match key.verify(&note) {
                Ok(cp) if origin.as_ref().is_some_and(|o| *o != cp.origin) => {
                    return Ok(bad(
                        sealed,
                        sealed,
                        format!(
                            "checkpoint at line {line_no} is for another log (its origin differs from the earlier checkpoints')"
                        ),
                    ));
                }
                Ok(cp) if cp.size == tree.size() && cp.root == tree.root() => {
                    sealed = cp.size;
                    origin = Some(cp.origin);
                }
                Ok(cp) if cp.size != tree.size() => {
                    return Ok(bad(
                        sealed,
                        sealed,
                        format!(
                            "checkpoint at line {line_no} covers {} entries but {} precede it",
                            cp.size,
                            tree.size()
                        ),
                    ));
                }
                Ok(_) => {
                    return Ok(bad(
                        sealed,
                        sealed,
                        format!(
                            "checkpoint at line {line_no} does not match entries {sealed}..{}: an entry in that range was changed",
                            tree.size()
                        ),
                    ));
                }
                Err(e) => {
                    return Ok(bad(
                        sealed,
                        sealed,
                        format!("checkpoint at line {line_no}: {e}"),
                    ));
                }
            }
        } else {
            return Ok(bad(
                tree.size(),
                sealed,
                format!("line {line_no} is not a valid entry or checkpoint"),
            ));
        }
    }
    if let Some(note) = external {
        match key.verify(note) {
            Ok(cp) if origin.as_ref().is_some_and(|o| *o != cp.origin) => {
                return Ok(bad(
                    0,
                    sealed,
                    "the external checkpoint is for another log (its origin differs)".into(),
                ));
            }
            Ok(cp) if cp.size > tree.size() => {
                return Ok(bad(
                    tree.size(),
                    sealed,
                    format!(
                        "log has {} entries but a checkpoint signed for {} (truncated)",
                        tree.size(),
                        cp.size
                    ),
                ));
            }
            Ok(cp) if tree.root_at(cp.size) != Some(cp.root) => {
                return Ok(bad(
                    0,
                    sealed,
                    "the log's first entries do not match the external checkpoint".into(),
                ));
            }
            Ok(_) => {}
            Err(e) => return Ok(bad(0, sealed, format!("external checkpoint: {e}"))),
        }
    }
    let entries = tree.size();
    Ok(Verdict {
        entries,
        sealed,
        first_bad: None,
        reason: (sealed < entries)
            .then(|| format!("entries {sealed}..{entries} are not covered by a checkpoint")),
        origin,
    })
}

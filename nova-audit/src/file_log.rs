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

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointSigner, VerifierKey};
use crate::event::AuditEvent;
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::redaction::RedactionPolicy;
use crate::verify::{At, Record, Replay, Verdict};

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
    /// The file does not match its own last checkpoint (an entry before it was changed,
    /// or the checkpoint is not this log's): the writer refuses to sign on top of it.
    /// [`verify_file`] names the first bad entry.
    #[error("audit log is not trusted: {0}")]
    Untrusted(String),
    /// An event's encoding is longer than [`MAX_LINE_LEN`]; nothing of its batch is
    /// written.
    #[error("audit event of {len} bytes is too large")]
    EventTooLarge {
        /// Encoded length.
        len: usize,
    },
    /// An earlier write failed and the partly written batch could not be cut off again, so
    /// the log refuses further appends rather than write after unacknowledged bytes. Reopen
    /// it (which repairs the tail) to go on.
    #[error("audit log is unusable after a failed write; reopen it")]
    Poisoned,
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
    poisoned: bool,
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

/// Parses one line (without its newline) into a record: an entry
/// `{"i":N,"e":{...}}`, a pruned entry `{"i":N,"h":"<64 hex digits>"}` or a checkpoint
/// `{"c":"<note>"}`.
pub(crate) fn parse_line(line: &[u8]) -> Option<Record<'_>> {
    let Some(rest) = line.strip_prefix(br#"{"i":"#) else {
        return parse_checkpoint_line(line).map(Record::Checkpoint);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = &rest[digits..];
    if let Some(hex) = rest.strip_prefix(br#","h":""#) {
        let hex = hex.strip_suffix(br#""}"#)?;
        return Some(Record::Pruned {
            index,
            leaf: decode_leaf_hex(hex)?,
        });
    }
    let event = rest.strip_prefix(br#","e":"#)?.strip_suffix(b"}")?;
    if !event.starts_with(b"{") || !event.ends_with(b"}") {
        return None;
    }
    Some(Record::Event {
        index,
        bytes: event,
    })
}

/// 64 lowercase hex digits (the only form the writer produces) into a hash.
fn decode_leaf_hex(hex: &[u8]) -> Option<Hash> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *o = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(out)
}

fn parse_checkpoint_line(line: &[u8]) -> Option<Cow<'static, str>> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("c")?.as_str().map(|s| Cow::Owned(s.to_owned()))
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
        let key = VerifierKey::parse(&signer.verifier_key())
            .map_err(|e| LogError::Untrusted(e.to_string()))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if !existed {
            // A new file is durable only once its directory entry is.
            sync_parent(&path)?;
        }
        let mut leaves = Vec::new();
        let (mut sealed_size, mut sealed_len, mut pos) = (0usize, 0u64, 0u64);
        let mut last_note: Option<String> = None;
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
                    if n > MAX_LINE_LEN {
                        // Not a torn write but a line longer than any the writer makes:
                        // cutting here could drop acknowledged entries after it.
                        return Err(LogError::Corrupt { line: line_no });
                    }
                    // A short line without its newline is the torn last write of a crash.
                    break;
                }
                let line = &buf[..buf.len() - 1];
                match parse_line(line) {
                    Some(Record::Event { index, bytes }) if index == leaves.len() as u64 => {
                        leaves.push(leaf_hash(bytes));
                    }
                    Some(Record::Pruned { index, leaf }) if index == leaves.len() as u64 => {
                        leaves.push(leaf);
                    }
                    Some(Record::Checkpoint(note)) => {
                        last_note = Some(note.into_owned());
                        sealed_size = leaves.len();
                        sealed_len = pos + n as u64;
                    }
                    _ => return Err(LogError::Corrupt { line: line_no }),
                }
                pos += n as u64;
            }
        }
        // A batch and its checkpoint go out in one write, synced before any of it is
        // acknowledged, so entries after the last checkpoint were never acknowledged: they
        // are cut off with the torn tail rather than sealed by the next checkpoint (which
        // would also seal anything appended to the file behind the writer's back).
        leaves.truncate(sealed_size);
        let tree = MerkleTree::from_leaf_hashes(leaves);
        // Never sign on top of a file that was changed: the last checkpoint must be this
        // log's and match the entries before it (any edit before it changes that root).
        if let Some(note) = &last_note {
            let cp = key
                .verify(note)
                .map_err(|e| LogError::Untrusted(format!("last checkpoint: {e}")))?;
            if cp.origin != origin {
                return Err(LogError::Untrusted(
                    "the last checkpoint names another origin".into(),
                ));
            }
            if cp.size != tree.size() || cp.root != tree.root() {
                return Err(LogError::Untrusted(
                    "the last checkpoint does not match the entries before it".into(),
                ));
            }
        }
        let total = file.metadata()?.len();
        let repaired_bytes = total - sealed_len;
        if repaired_bytes > 0 {
            file.set_len(sealed_len)?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), repaired_bytes, "torn or unsealed audit log tail removed");
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
            poisoned: false,
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
            let start = buf.len();
            leaves.push(self.encode(e, first + k as u64, &mut buf));
            if buf.len() - start > MAX_LINE_LEN {
                // The reader refuses longer lines; writing one would make the log
                // unreadable past it.
                return Err(LogError::EventTooLarge {
                    len: buf.len() - start,
                });
            }
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
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let len_before = self.file.metadata()?.len();
        let written = self.file.write_all(&buf).and_then(|()| {
            if self.fsync == FsyncPolicy::Never {
                Ok(())
            } else {
                self.file.sync_data()
            }
        });
        if let Err(e) = written {
            // Nothing of this batch is acknowledged: cut it off so the next batch does not
            // land after it (which would give two entries the same index), or refuse to go
            // on if even that fails.
            if self.file.set_len(len_before).is_err() {
                self.poisoned = true;
            }
            return Err(e.into());
        }
        for leaf in leaves {
            self.tree.push(leaf);
        }
        Ok(first)
    }
}

impl FileLog {
    /// Retention: removes the content of the oldest entries whose `time_ms` is before
    /// `cutoff_ms`, keeping each one's leaf hash (`{"i":N,"h":"<hex>"}`) and every
    /// checkpoint, so the tree, every checkpoint and every later entry still verify and
    /// later entries can still be proven. Pruning stops at the first entry that is not
    /// older than the cutoff (pruned entries are always the oldest, which the verifier
    /// checks), so an entry with an out-of-order timestamp is kept a little longer rather
    /// than leaving a hole. Returns the number of entries now pruned in total.
    ///
    /// The file is rewritten beside itself, synced and renamed over the original, so a
    /// crash leaves either the old or the new file, never a mix. Only this writer may have
    /// the file open meanwhile.
    ///
    /// What a verifier can still check after pruning: the order and count of all entries,
    /// every checkpoint's signature and root, the content of every kept entry, and
    /// inclusion proofs of kept entries. What it can no longer check: the content of pruned
    /// entries (only their hashes remain; [`Verdict::pruned`] says how many).
    ///
    /// # Errors
    /// [`LogError::Io`], or [`LogError::Corrupt`] when a line cannot be read back; the
    /// original file is then left untouched.
    pub fn prune_before(&mut self, cutoff_ms: u64) -> Result<u64, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let tmp_path = {
            let mut name = self.path.file_name().unwrap_or_default().to_os_string();
            name.push(".prune-tmp");
            self.path.with_file_name(name)
        };
        let mut reader = BufReader::new(File::open(&self.path)?);
        let mut out = std::io::BufWriter::new(File::create(&tmp_path)?);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        let mut pruned = 0u64;
        let mut pruning = true;
        let result = (|| -> Result<(), LogError> {
            loop {
                if read_line(&mut reader, &mut buf)? == 0 {
                    break;
                }
                line_no += 1;
                let Some(line) = buf.strip_suffix(b"\n") else {
                    return Err(LogError::Corrupt { line: line_no });
                };
                match parse_line(line) {
                    Some(Record::Pruned { .. }) => pruned += 1,
                    Some(Record::Event { index, bytes }) if pruning => {
                        if event_time_ms(bytes).ok_or(LogError::Corrupt { line: line_no })?
                            < cutoff_ms
                        {
                            let leaf = leaf_hash(bytes);
                            writeln!(out, r#"{{"i":{index},"h":"{}"}}"#, hex(&leaf))?;
                            pruned += 1;
                            continue;
                        }
                        pruning = false;
                    }
                    Some(_) => {}
                    None => return Err(LogError::Corrupt { line: line_no }),
                }
                out.write_all(&buf)?;
            }
            let file = out
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            file.sync_all()?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
        let permissions = self.file.metadata()?.permissions();
        std::fs::set_permissions(&tmp_path, permissions)?;
        std::fs::rename(&tmp_path, &self.path)?;
        // From here the open handle points at the replaced file: appending through it would
        // acknowledge events into a file nobody reads, so any failure poisons the log.
        let reopened = sync_parent(&self.path)
            .and_then(|()| OpenOptions::new().read(true).append(true).open(&self.path));
        match reopened {
            Ok(file) => {
                self.file = file;
                Ok(pruned)
            }
            Err(e) => {
                self.poisoned = true;
                Err(e.into())
            }
        }
    }
}

/// Syncs the directory holding `path`, so that a created or renamed file survives a crash.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// The `time_ms` member of a canonical event.
fn event_time_ms(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Time {
        time_ms: u64,
    }
    serde_json::from_slice::<Time>(bytes)
        .ok()
        .map(|t| t.time_ms)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
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
    let mut replay = Replay::new(key);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let n = read_line(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let at = At::Line(line_no);
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Ok(replay.unreadable(at, "is incomplete (torn write)"));
        };
        let Some(record) = parse_line(line) else {
            return Ok(replay.unreadable(at, "is not a valid entry or checkpoint"));
        };
        if let Err(verdict) = replay.feed(record, at) {
            return Ok(verdict);
        }
    }
    Ok(replay.finish(external))
}

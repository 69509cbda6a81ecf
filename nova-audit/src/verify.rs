//! Log verification shared by every sink: replays a log's records (entries, pruned entries
//! and signed checkpoints, in log order) and names the first record that cannot be trusted.
//!
//! A sink only turns its storage (JSON lines, table rows) into [`Record`]s; the rules live
//! here once, so a file and a PostgreSQL log are judged the same way. This module must never
//! report a log as good when any record in it failed a check.

use std::borrow::Cow;
use std::fmt;

use crate::checkpoint::VerifierKey;
use crate::merkle::{Hash, MerkleTree, leaf_hash};

/// The outcome of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    /// Entries read.
    pub entries: u64,
    /// Entries covered by a valid checkpoint.
    pub sealed: u64,
    /// Entries `0..pruned` were removed by retention: only their leaf hashes remain, so the
    /// tree and every checkpoint still verify but their contents can no longer be checked.
    pub pruned: u64,
    /// The first entry that cannot be trusted, if any: a record that is not a valid entry, an
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

/// One record of a log, in log order.
#[derive(Debug, Clone)]
pub(crate) enum Record<'a> {
    /// Entry `index` with its canonical event bytes.
    Event { index: u64, bytes: &'a [u8] },
    /// Entry `index` removed by retention, with the leaf hash it had.
    Pruned { index: u64, leaf: Hash },
    /// A signed checkpoint note covering every entry before it.
    Checkpoint(Cow<'a, str>),
}

/// Where a record sits in its storage, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum At {
    /// 1-based line of a file.
    Line(u64),
    /// A table row: an entry, or the checkpoint of a tree size.
    EntryRow(u64),
    CheckpointRow(u64),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Line(n) => write!(f, "line {n}"),
            At::EntryRow(i) => write!(f, "entry row {i}"),
            At::CheckpointRow(s) => write!(f, "checkpoint row for size {s}"),
        }
    }
}

/// The replay state: the tree so far, what is sealed and by which log.
pub(crate) struct Replay<'k> {
    key: &'k VerifierKey,
    tree: MerkleTree,
    sealed: u64,
    pruned: u64,
    origin: Option<String>,
}

impl<'k> Replay<'k> {
    pub(crate) fn new(key: &'k VerifierKey) -> Self {
        Self {
            key,
            tree: MerkleTree::new(),
            sealed: 0,
            pruned: 0,
            origin: None,
        }
    }

    fn bad(&self, index: u64, why: String) -> Verdict {
        Verdict {
            entries: index,
            sealed: self.sealed,
            pruned: self.pruned.min(index),
            first_bad: Some(index),
            reason: Some(why),
            origin: None,
        }
    }

    /// A record that could not be read as an entry or a checkpoint.
    pub(crate) fn unreadable(&self, at: At, what: &str) -> Verdict {
        self.bad(self.tree.size(), format!("{at} {what}"))
    }

    /// Feeds the next record; `Err` carries the failing verdict.
    pub(crate) fn feed(&mut self, record: Record<'_>, at: At) -> Result<(), Verdict> {
        let expected = self.tree.size();
        match record {
            Record::Event { index, .. } | Record::Pruned { index, .. } if index != expected => {
                Err(self.bad(
                    expected,
                    format!(
                        "{at} has index {index} where {expected} was expected (entries deleted, inserted, duplicated or reordered)"
                    ),
                ))
            }
            Record::Event { index, bytes } => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                    return Err(self.bad(index, format!("entry {index} is not valid JSON")));
                }
                self.tree.push(leaf_hash(bytes));
                Ok(())
            }
            Record::Pruned { index, leaf } => {
                // Retention removes the oldest entries, so pruned entries form a prefix; a
                // hash stub after a kept entry is content hidden, not retention.
                if self.pruned != index {
                    return Err(self.bad(
                        index,
                        format!("entry {index} was pruned after a kept entry (pruned entries must be the oldest)"),
                    ));
                }
                self.pruned += 1;
                self.tree.push(leaf);
                Ok(())
            }
            Record::Checkpoint(note) => self.checkpoint(&note, at),
        }
    }

    fn checkpoint(&mut self, note: &str, at: At) -> Result<(), Verdict> {
        let size = self.tree.size();
        let sealed = self.sealed;
        match self.key.verify(note) {
            Ok(cp) if self.origin.as_ref().is_some_and(|o| *o != cp.origin) => Err(self.bad(
                sealed,
                format!(
                    "checkpoint at {at} is for another log (its origin differs from the earlier checkpoints')"
                ),
            )),
            Ok(cp) if cp.size == size && cp.root == self.tree.root() => {
                self.sealed = cp.size;
                self.origin = Some(cp.origin);
                Ok(())
            }
            Ok(cp) if cp.size != size => Err(self.bad(
                sealed,
                format!(
                    "checkpoint at {at} covers {} entries but {size} precede it",
                    cp.size
                ),
            )),
            Ok(_) => Err(self.bad(
                sealed,
                format!(
                    "checkpoint at {at} does not match entries {sealed}..{size}: an entry in that range was changed"
                ),
            )),
            Err(e) => Err(self.bad(sealed, format!("checkpoint at {at}: {e}"))),
        }
    }

    /// Ends the replay, checking an externally kept checkpoint (which catches truncation).
    pub(crate) fn finish(self, external: Option<&str>) -> Verdict {
        let size = self.tree.size();
        if let Some(note) = external {
            match self.key.verify(note) {
                Ok(cp) if self.origin.as_ref().is_some_and(|o| *o != cp.origin) => {
                    return self.bad(
                        0,
                        "the external checkpoint is for another log (its origin differs)".into(),
                    );
                }
                Ok(cp) if cp.size > size => {
                    return self.bad(
                        size,
                        format!(
                            "log has {size} entries but a checkpoint signed for {} (truncated)",
                            cp.size
                        ),
                    );
                }
                Ok(cp) if self.tree.root_at(cp.size) != Some(cp.root) => {
                    return self.bad(
                        0,
                        "the log's first entries do not match the external checkpoint".into(),
                    );
                }
                Ok(_) => {}
                Err(e) => return self.bad(0, format!("external checkpoint: {e}")),
            }
        }
        let sealed = self.sealed;
        Verdict {
            entries: size,
            sealed,
            pruned: self.pruned,
            first_bad: None,
            reason: (sealed < size)
                .then(|| format!("entries {sealed}..{size} are not covered by a checkpoint")),
            origin: self.origin,
        }
    }
}

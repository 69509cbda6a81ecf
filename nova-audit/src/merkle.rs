//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.
//!
//! ```text
//! leaf hash  = SHA-256(0x00 || entry)           (RFC 6962 §2.1, domain separation)
//! node hash  = SHA-256(0x01 || left || right)
//! MTH({})    = SHA-256("")
//! MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])),  k = largest power of two < n
//! ```
//!
//! Proof verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency),
//! which never recurse and never allocate beyond the proof itself. This module must never
//! accept a proof longer than the tree can have, or one with unused elements.

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 hash.
pub type Hash = [u8; 32];

/// Longest proof for any tree of at most 2^64 leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// The hash of an empty tree: SHA-256 of the empty string.
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || entry)`.
#[must_use]
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (`n >= 2`): RFC 6962's split point.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only tree over leaf hashes, kept in memory. Roots and proofs for any prefix
/// size are computed from the stored leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    leaves: Vec<Hash>,
    /// Roots of the perfect subtrees along the right edge (a compact range), so the current
    /// root costs O(log n) to produce after each append.
    frontier: Vec<(u64, Hash)>,
}

impl MerkleTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over existing leaf hashes.
    #[must_use]
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut t = Self::new();
        t.leaves.reserve(leaves.len());
        for h in leaves {
            t.push(h);
        }
        t
    }

    /// Appends a leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.leaves.len() as u64;
        self.leaves.push(leaf);
        push_frontier(&mut self.frontier, leaf);
        index
    }

    /// The root the tree would have after appending `more`, without changing it (for
    /// signing a checkpoint before the batch is durable). Costs O(batch + log n).
    #[must_use]
    pub fn root_with(&self, more: &[Hash]) -> Hash {
        let mut frontier = self.frontier.clone();
        for leaf in more {
            push_frontier(&mut frontier, *leaf);
        }
        fold_frontier(&frontier)
    }

    /// Number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The leaf hashes.
    #[must_use]
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// The root of the whole tree, from the compact range.
    #[must_use]
    pub fn root(&self) -> Hash {
        fold_frontier(&self.frontier)
    }

    /// The root of the first `size` leaves (`None` if `size` exceeds the tree).
    #[must_use]
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        let size = usize::try_from(size).ok()?;
        let leaves = self.leaves.get(..size)?;
        Some(mth(leaves))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    #[must_use]
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let leaves = &self.leaves[..usize::try_from(size).ok()?];
        let mut proof = Vec::new();
        path(usize::try_from(index).ok()?, leaves, &mut proof);
        Some(proof)
    }

    /// The consistency proof between the trees of the first `old` and `new` leaves.
    #[must_use]
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old > new || new > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        if old == 0 || old == new {
            return Some(proof);
        }
        let leaves = &self.leaves[..usize::try_from(new).ok()?];
        subproof(usize::try_from(old).ok()?, leaves, true, &mut proof);
        Some(proof)
    }
}

/// The right edge of a tree without its leaves (a compact range): enough to append and to
/// compute the root, 32 bytes per set bit of the size. Writers that share a log through a
/// database keep only this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CompactRange {
    size: u64,
    nodes: Vec<(u64, Hash)>,
}

impl CompactRange {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn push(&mut self, leaf: Hash) {
        push_frontier(&mut self.nodes, leaf);
        self.size += 1;
    }

    pub(crate) fn root(&self) -> Hash {
        fold_frontier(&self.nodes)
    }

    /// The subtree roots, largest first, concatenated.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.nodes.iter().flat_map(|(_, h)| *h).collect()
    }

    /// Rebuilds the range of a tree of `size` leaves from [`CompactRange::to_bytes`];
    /// `None` when the byte count does not match the size.
    pub(crate) fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let widths = (0..64u32)
            .rev()
            .map(|b| 1u64 << b)
            .filter(|w| size & w != 0);
        let nodes = widths
            .zip(bytes.chunks_exact(32))
            .map(|(w, h)| Some((w, Hash::try_from(h).ok()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { size, nodes })
    }
}

fn push_frontier(frontier: &mut Vec<(u64, Hash)>, leaf: Hash) {
    let mut node = (1u64, leaf);
    while let Some(&(size, left)) = frontier.last() {
        if size != node.0 {
            break;
        }
        frontier.pop();
        node = (size * 2, node_hash(&left, &node.1));
    }
    frontier.push(node);
}

fn fold_frontier(frontier: &[(u64, Hash)]) -> Hash {
    let mut iter = frontier.iter().rev();
    match iter.next() {
        None => empty_root(),
        Some(&(_, first)) => iter.fold(first, |acc, (_, left)| node_hash(left, &acc)),
    }
}

/// RFC 6962 §2.1 MTH over leaf hashes.
#[must_use]
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 PATH(m, D[n]).
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(m, &leaves[..k], out);
        out.push(mth(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(mth(&leaves[..k]));
    }
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[n], b).
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(mth(leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(mth(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(mth(&leaves[..k]));
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Index or sizes out of range.
    #[error("index or tree size out of range")]
    OutOfRange,
    /// The proof has the wrong number of elements for these sizes.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root")]
    Mismatch,
}

/// RFC 9162 §2.1.3.2: verifies that `leaf` is at `index` in the tree of `size` with `root`.
///
/// # Errors
/// [`ProofError`] describing the failure.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r == root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// RFC 9162 §2.1.4.2: verifies that the tree of `new_size` with `new_root` extends the tree
/// of `old_size` with `old_root`.
///
/// # Errors
/// [`ProofError`] describing the failure.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange);
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    if old_size == new_size {
        return if proof.is_empty() {
            if old_root == new_root {
                Ok(())
            } else {
                Err(ProofError::Mismatch)
            }
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree; RFC 9162 gives no proof for it.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    // RFC 9162 §2.1.4.2 step 1: an empty path fails.
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: &[Hash] = proof;
    // Step 2: if old_size is a power of two, prepend old_root to the path.
    let prepended;
    if old_size.is_power_of_two() {
        let mut v = Vec::with_capacity(proof.len() + 1);
        v.push(*old_root);
        v.extend_from_slice(proof);
        prepended = v;
        path = &prepended;
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr == old_root && &sr == new_root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_compact_range_has_the_full_trees_root_and_survives_its_byte_form(
            n in 0usize..300, extra in 0usize..40,
        ) {
            let leaves: Vec<Hash> = (0..n + extra).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let mut range = CompactRange::default();
            for leaf in &leaves[..n] {
                range.push(*leaf);
            }
            prop_assert_eq!(range.root(), mth(&leaves[..n]));
            let mut back = CompactRange::from_bytes(n as u64, &range.to_bytes()).unwrap();
            prop_assert_eq!(&back, &range);
            for leaf in &leaves[n..] {
                back.push(*leaf);
            }
            prop_assert_eq!(back.root(), mth(&leaves));
            if n > 0 {
                prop_assert!(CompactRange::from_bytes(n as u64, &range.to_bytes()[1..]).is_none());
                prop_assert!(CompactRange::from_bytes(n as u64, &[range.to_bytes(), vec![0; 32]].concat()).is_none());
            }
        }
    }
}

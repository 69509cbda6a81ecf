//! RFC 6962 tree hashes, inclusion and consistency proofs against the Certificate
//! Transparency reference vectors (transparency-dev/merkle `testonly`), and properties over
//! every tree size up to a bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nova_audit::{
    Checkpoint, CheckpointError, CheckpointSigner, Hash, MerkleTree, ProofError, VerifierKey,
    empty_root, leaf_hash, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
// Node hashes of the 8-leaf reference tree, by level.
const L0: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];
const L1: [&str; 4] = [
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
];
const L2: [&str; 2] = [
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
];

fn reference_tree() -> MerkleTree {
    let mut t = MerkleTree::new();
    for l in LEAVES {
        t.push(leaf_hash(&unhex(l)));
    }
    t
}

#[test]
fn tree_heads_match_the_reference_for_every_size() {
    assert_eq!(empty_root(), h(ROOTS[0]));
    let mut t = MerkleTree::new();
    assert_eq!(t.root(), h(ROOTS[0]));
    for (i, l) in LEAVES.iter().enumerate() {
        t.push(leaf_hash(&unhex(l)));
        assert_eq!(t.leaves()[i], h(L0[i]), "leaf hash {i}");
        assert_eq!(
            t.root(),
            h(ROOTS[i + 1]),
            "incremental root at size {}",
            i + 1
        );
        assert_eq!(t.root_at(i as u64 + 1).unwrap(), h(ROOTS[i + 1]));
    }
}

#[test]
fn inclusion_proofs_match_the_reference() {
    let t = reference_tree();
    let cases: [(u64, u64, Vec<&str>); 5] = [
        (0, 8, vec![L0[1], L1[1], L2[1]]),
        (5, 8, vec![L0[4], L1[3], L2[0]]),
        (2, 3, vec![L1[0]]),
        (1, 5, vec![L0[0], L1[1], L0[4]]),
        (0, 1, vec![]),
    ];
    for (index, size, expected) in cases {
        let proof = t.inclusion_proof(index, size).unwrap();
        let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
        assert_eq!(proof, expected, "index {index} size {size}");
        verify_inclusion(
            &t.leaves()[index as usize],
            index,
            size,
            &proof,
            &h(ROOTS[size as usize]),
        )
        .unwrap();
    }
}

#[test]
fn consistency_proofs_match_the_reference() {
    let t = reference_tree();
    let cases: [(u64, u64, Vec<&str>); 4] = [
        (1, 1, vec![]),
        (1, 8, vec![L0[1], L1[1], L2[1]]),
        (6, 8, vec![L1[2], L1[3], L2[0]]),
        (2, 5, vec![L1[1], L0[4]]),
    ];
    for (old, new, expected) in cases {
        let proof = t.consistency_proof(old, new).unwrap();
        let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
        assert_eq!(proof, expected, "{old} -> {new}");
        verify_consistency(
            old,
            new,
            &h(ROOTS[old as usize]),
            &h(ROOTS[new as usize]),
            &proof,
        )
        .unwrap();
    }
}

#[test]
fn malformed_proofs_are_errors_not_panics() {
    let t = reference_tree();
    let root = h(ROOTS[8]);
    let proof = t.inclusion_proof(3, 8).unwrap();
    let leaf = t.leaves()[3];
    assert_eq!(
        verify_inclusion(&leaf, 8, 8, &proof, &root),
        Err(ProofError::OutOfRange)
    );
    assert_eq!(
        verify_inclusion(&leaf, 3, 8, &proof[..2], &root),
        Err(ProofError::WrongLength)
    );
    let mut long = proof.clone();
    long.push([0; 32]);
    assert_eq!(
        verify_inclusion(&leaf, 3, 8, &long, &root),
        Err(ProofError::WrongLength)
    );
    assert!(verify_inclusion(&leaf, u64::MAX - 1, u64::MAX, &vec![[0; 32]; 200], &root).is_err());
    assert_eq!(
        verify_consistency(5, 3, &h(ROOTS[5]), &h(ROOTS[3]), &[]),
        Err(ProofError::OutOfRange)
    );
    assert!(verify_consistency(3, 8, &h(ROOTS[3]), &h(ROOTS[8]), &[]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_inclusion_proof_verifies_and_wrong_inputs_fail(n in 1u64..70, seed in any::<u64>()) {
        let t = MerkleTree::from_leaf_hashes((0..n).map(|i| leaf_hash(&(i ^ seed).to_be_bytes())).collect());
        let root = t.root();
        prop_assert_eq!(root, t.root_at(n).unwrap());
        for i in 0..n {
            let proof = t.inclusion_proof(i, n).unwrap();
            let leaf = t.leaves()[i as usize];
            prop_assert!(verify_inclusion(&leaf, i, n, &proof, &root).is_ok());
            prop_assert!(verify_inclusion(&leaf_hash(b"other"), i, n, &proof, &root).is_err());
            if n > 1 {
                prop_assert!(verify_inclusion(&leaf, (i + 1) % n, n, &proof, &root).is_err());
            }
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                prop_assert!(verify_inclusion(&leaf, i, n, &bad, &root).is_err(), "{:?}", first);
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_history_fails(n in 1u64..60, seed in any::<u64>(), flip in any::<u64>()) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&(i ^ seed).to_be_bytes())).collect();
        let t = MerkleTree::from_leaf_hashes(leaves.clone());
        for m in 0..=n {
            let proof = t.consistency_proof(m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &t.root_at(m).unwrap(), &t.root(), &proof).is_ok());
        }
        // Rewrite one old entry: no consistency proof from the honest old root can verify
        // against the rewritten tree's root.
        let m = 1 + flip % n;
        let victim = (flip / 7) % m;
        let mut forged = leaves;
        forged[victim as usize] = leaf_hash(b"rewritten");
        let ft = MerkleTree::from_leaf_hashes(forged);
        let proof = ft.consistency_proof(m, n).unwrap();
        prop_assert!(verify_consistency(m, n, &t.root_at(m).unwrap(), &ft.root(), &proof).is_err());
    }
}

// ----- checkpoints -----

#[test]
fn signed_checkpoint_round_trips_and_any_change_is_refused() {
    let signer = CheckpointSigner::from_seed("audit.nova.example", &[7; 32]).unwrap();
    let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
    let cp = Checkpoint {
        origin: "audit.nova.example/t/1".into(),
        size: 8,
        root: h(ROOTS[8]),
    };
    let note = signer.sign(&cp);
    assert!(note.starts_with("audit.nova.example/t/1\n8\nXcnaeacGWamtVZy3Ad7Zoqudgjqt"));
    assert!(note.contains("\n\n\u{2014} audit.nova.example "));
    assert_eq!(key.verify(&note).unwrap(), cp);
    // Truncation claim: change the size or the root and the signature fails.
    for tampered in [
        note.replacen("\n8\n", "\n7\n", 1),
        note.replacen("Xcna", "Xcnb", 1),
    ] {
        assert_eq!(key.verify(&tampered), Err(CheckpointError::BadSignature));
    }
    // Another key's signature is not enough.
    let other = CheckpointSigner::from_seed("audit.nova.example", &[8; 32]).unwrap();
    assert_eq!(
        key.verify(&other.sign(&cp)),
        Err(CheckpointError::BadSignature)
    );
    for bad in [
        "",
        "x",
        "a\n1\nAAAA\n",
        &"a".repeat(9000),
        "o\n01\nAAAA\n\n\u{2014} k AAAA\n",
    ] {
        assert!(key.verify(bad).is_err());
    }
    assert!(VerifierKey::parse("name+00000000+AQ==").is_err());
}

proptest! {
    #[test]
    fn root_with_predicts_the_root_after_appending(n in 0u64..40, m in 0u64..40) {
        let mut t = MerkleTree::from_leaf_hashes((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect());
        let more: Vec<Hash> = (0..m).map(|i| leaf_hash(&(1000 + i).to_be_bytes())).collect();
        let predicted = t.root_with(&more);
        for l in more {
            t.push(l);
        }
        prop_assert_eq!(predicted, t.root());
    }
}

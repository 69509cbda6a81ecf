//! Inclusion and consistency proof verification on arbitrary indexes, sizes and paths:
//! never a panic, never an unbounded loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_audit::{Hash, verify_consistency, verify_inclusion};

fuzz_target!(|data: &[u8]| {
    if data.len() < 48 {
        return;
    }
    let a = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let b = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let leaf: Hash = data[16..48].try_into().unwrap_or_default();
    let proof: Vec<Hash> = data[48..]
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap_or_default())
        .collect();
    let _ = verify_inclusion(&leaf, a, b, &proof, &leaf);
    let _ = verify_consistency(a, b, &leaf, &leaf, &proof);
});

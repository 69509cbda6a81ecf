//! Checkpoint and verifier-key parsing on arbitrary input: typed errors, never a panic,
//! and never a checkpoint accepted without the key's signature.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nova_audit::{CheckpointSigner, VerifierKey};

fn key() -> &'static VerifierKey {
    static K: OnceLock<VerifierKey> = OnceLock::new();
    K.get_or_init(|| {
        let signer = CheckpointSigner::from_seed("fuzz.example", &[3; 32]).expect("signer");
        VerifierKey::parse(&signer.verifier_key()).expect("key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The fuzzer cannot forge an Ed25519 signature.
    assert!(key().verify(text).is_err());
    let _ = VerifierKey::parse(text);
});

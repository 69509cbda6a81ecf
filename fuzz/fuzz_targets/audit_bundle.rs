//! Inclusion-bundle parsing and verification on arbitrary text: never a panic, and a parsed
//! bundle re-encodes to an equal one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_audit::{CheckpointSigner, InclusionBundle, VerifierKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bundle) = InclusionBundle::parse(text) else {
        return;
    };
    let again = InclusionBundle::parse(&bundle.to_json()).expect("re-encoded bundle parses");
    assert_eq!(again, bundle);
    let signer = CheckpointSigner::from_seed("fuzz.test", &[1; 32]).expect("valid name");
    let key = VerifierKey::parse(&signer.verifier_key()).expect("own key parses");
    let _ = bundle.verify(&key);
});

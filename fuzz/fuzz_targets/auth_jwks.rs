//! JWKS documents and single JWKs on arbitrary input: typed errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_auth::{KeySet, verifying_key_from_jwk};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = KeySet::from_jwks_json(text) {
        assert!(set.len() <= nova_auth::MAX_JWKS_KEYS);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = verifying_key_from_jwk(&value);
    }
});

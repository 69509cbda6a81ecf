//! Compact JWT parsing and full verification on arbitrary input: typed errors, never a
//! panic, and never a context for a token the issuer did not sign.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nova_auth::{JwtConfig, JwtVerifier, SigningKey, StaticKeys, TokenIssuer, parse_compact};

fn verifier() -> &'static JwtVerifier<StaticKeys> {
    static V: OnceLock<JwtVerifier<StaticKeys>> = OnceLock::new();
    V.get_or_init(|| {
        let issuer = TokenIssuer::new("iss", "aud", SigningKey::generate_ed25519("k").expect("key"));
        JwtVerifier::new(JwtConfig::new("iss", "aud"), StaticKeys::new(issuer.key_set().expect("keys")))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_compact(token, 8192);
    // The fuzzer cannot forge an Ed25519 signature: every input must be refused.
    assert!(verifier().verify_cached(token).is_err());
});

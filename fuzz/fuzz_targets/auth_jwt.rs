//! Compact JWT parsing and verification on arbitrary input (every input refused: the
//! fuzzer cannot forge a signature), and arbitrary claim payloads signed inside the harness,
//! so the claims parser sees fuzzed JSON behind a valid signature.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use nova_auth::{JwtConfig, JwtVerifier, SigningKey, StaticKeys, TokenIssuer, parse_compact};

struct Fixture {
    key: SigningKey,
    verifier: JwtVerifier<StaticKeys>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let issuer = TokenIssuer::new("iss", "aud", SigningKey::ed25519_from_seed("k", &[5; 32]));
        let verifier = JwtVerifier::new(
            JwtConfig::new("iss", "aud"),
            StaticKeys::new(issuer.key_set().expect("keys")),
        );
        Fixture {
            key: SigningKey::ed25519_from_seed("k", &[5; 32]),
            verifier,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = parse_compact(token, 8192);
        assert!(f.verifier.verify_cached(token).is_err());
    }
    // The same bytes as a claims payload behind a valid signature.
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(br#"{"alg":"EdDSA","kid":"k"}"#), b64(data));
    let sig = f.key.sign_signing_input(input.as_bytes()).expect("sign");
    let token = format!("{input}.{sig}");
    if let Ok(ctx) = f.verifier.verify_cached(&token) {
        // Accepted only with the required claims present and well-typed.
        let text = std::str::from_utf8(data).expect("accepted claims are JSON text");
        assert!(text.contains("tenant_id") && text.contains("sub"));
        let _ = ctx.tenant();
    }
});

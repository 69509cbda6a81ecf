//! JWT verification: published vectors (RFC 7515, RFC 7520, RFC 8037, Wycheproof) and a
//! named test for every attack the verifier must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nova_auth::{
    AccessClaims, Alg, AuthError, JwksFetcher, JwtConfig, JwtVerifier, KeySet, RemoteKeySet,
    SigningKey, StaticKeys, TokenIssuer, verify_compact, verify_signature, verifying_key_from_jwk,
};
use nova_tenancy::{Origin, Role, TenantId, UserId};
use proptest::prelude::*;
use serde_json::{Value, json};

const ISS: &str = "https://auth.nova.example";
const AUD: &str = "nova-api";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(tenant: TenantId, user: UserId) -> Value {
    let t = now();
    json!({"iss": ISS, "aud": AUD, "sub": user.to_string(), "tenant_id": tenant.to_string(),
           "iat": t, "exp": t + 900, "roles": ["agent"], "scope": "tickets:read tickets:write"})
}

struct Fixture {
    es: SigningKey,
    ed: SigningKey,
    rs: SigningKey,
    verifier: JwtVerifier<StaticKeys>,
}

fn fixture() -> Fixture {
    let es = SigningKey::generate_es256("es-1").unwrap();
    let ed = SigningKey::generate_ed25519("ed-1").unwrap();
    let rs = common::rfc7520_rsa_signing_key("rs-1");
    let mut set = KeySet::new();
    for k in [&es, &ed, &rs] {
        set.insert(k.verifying_key().unwrap()).unwrap();
    }
    let verifier = JwtVerifier::new(JwtConfig::new(ISS, AUD), StaticKeys::new(set));
    Fixture {
        es,
        ed,
        rs,
        verifier,
    }
}

/// Builds a token with an arbitrary header and payload and a real signature by `key`.
fn forge(header: &Value, payload: &str, key: &SigningKey) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.as_bytes())
    );
    let sig = key.sign_signing_input(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{sig}")
}

#[test]
fn valid_tokens_for_every_algorithm_become_a_tenant_context() {
    let f = fixture();
    let (tenant, user) = (TenantId::new_v4(), UserId::new_v4());
    for key in [&f.es, &f.ed, &f.rs] {
        let token = key.sign(&claims(tenant, user)).unwrap();
        let ctx = f.verifier.verify_cached(&token).unwrap();
        assert_eq!(ctx.tenant(), tenant);
        assert_eq!(ctx.user(), Some(user));
        assert!(ctx.has_role("agent"));
        assert!(ctx.has_permission("tickets:write"));
        assert_eq!(
            ctx.origin(),
            Origin::Verified {
                verifier: "nova-auth/jwt"
            }
        );
    }
}

#[test]
fn rejects_alg_none_in_any_spelling() {
    let f = fixture();
    let body = b64(claims(TenantId::new_v4(), UserId::new_v4())
        .to_string()
        .as_bytes());
    for alg in ["none", "None", "NONE"] {
        let h = b64(json!({"alg": alg, "kid": "es-1"}).to_string().as_bytes());
        for sig in ["", "AAAA"] {
            let token = format!("{h}.{body}.{sig}");
            let err = f.verifier.verify_cached(&token).unwrap_err();
            assert!(
                matches!(err, AuthError::AlgNone | AuthError::Malformed(_)),
                "{alg}/{sig}: {err:?}"
            );
        }
        let token = format!("{h}.{body}.AAAA");
        assert_eq!(
            f.verifier.verify_cached(&token).unwrap_err(),
            AuthError::AlgNone
        );
    }
}

#[test]
fn rejects_token_signed_with_rsa_public_key_as_hmac_secret() {
    let f = fixture();
    let claims = claims(TenantId::new_v4(), UserId::new_v4());
    // The classic confusion: HS256 with the RSA public key's bytes as the secret, naming the
    // RSA key's kid. Tried with the JWK JSON, the modulus, and the DER, as attackers do.
    let public_jwk = f.rs.public_jwk().unwrap().to_string();
    for secret in [
        public_jwk.as_bytes().to_vec(),
        common::RFC7520_RSA_N.as_bytes().to_vec(),
    ] {
        let hmac = SigningKey::hs256("rs-1", &secret).unwrap();
        let token = hmac.sign(&claims).unwrap();
        let err = f.verifier.verify_cached(&token).unwrap_err();
        assert_eq!(
            err,
            AuthError::AlgorithmNotAllowed,
            "HS256 is not on the default list"
        );
    }
    // Even with HS256 allowed, the RSA key's kid binds it to RS256.
    let mut set = KeySet::new();
    set.insert(f.rs.verifying_key().unwrap()).unwrap();
    let mut cfg = JwtConfig::new(ISS, AUD);
    cfg.algorithms.push(Alg::HS256);
    let v = JwtVerifier::new(cfg, StaticKeys::new(set));
    let hmac = SigningKey::hs256("rs-1", public_jwk.as_bytes()).unwrap();
    assert_eq!(
        v.verify_cached(&hmac.sign(&claims).unwrap()).unwrap_err(),
        AuthError::AlgorithmKeyMismatch
    );
}

#[test]
fn rejects_expired_and_not_yet_valid_and_future_issued_tokens() {
    let f = fixture();
    let (t, u) = (TenantId::new_v4(), UserId::new_v4());
    let n = now();
    let mut c = claims(t, u);
    c["exp"] = json!(n - 120);
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::Expired
    );
    // Within leeway (60 s) still passes.
    c["exp"] = json!(n - 30);
    assert!(f.verifier.verify_cached(&f.es.sign(&c).unwrap()).is_ok());
    let mut c = claims(t, u);
    c["nbf"] = json!(n + 600);
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::NotYetValid
    );
    let mut c = claims(t, u);
    c["iat"] = json!(n + 600);
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::IssuedInFuture
    );
    // A max age refuses old tokens.
    let mut set = KeySet::new();
    set.insert(f.es.verifying_key().unwrap()).unwrap();
    let mut cfg = JwtConfig::new(ISS, AUD);
    cfg.max_age = Some(Duration::from_secs(300));
    let v = JwtVerifier::new(cfg, StaticKeys::new(set));
    let mut c = claims(t, u);
    c["iat"] = json!(n - 3600);
    assert_eq!(
        v.verify_cached(&f.es.sign(&c).unwrap()).unwrap_err(),
        AuthError::TooOld
    );
}

#[test]
fn rejects_wrong_issuer_and_wrong_audience() {
    let f = fixture();
    let mut c = claims(TenantId::new_v4(), UserId::new_v4());
    c["iss"] = json!("https://evil.example");
    assert_eq!(
        f.verifier
            .verify_cached(&f.ed.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::WrongIssuer
    );
    let mut c = claims(TenantId::new_v4(), UserId::new_v4());
    c["aud"] = json!(["other-api"]);
    assert_eq!(
        f.verifier
            .verify_cached(&f.ed.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::WrongAudience
    );
    c["aud"] = json!(["other-api", AUD]);
    assert!(f.verifier.verify_cached(&f.ed.sign(&c).unwrap()).is_ok());
}

#[test]
fn rejects_missing_tenant_and_tenant_claim_of_wrong_type() {
    let f = fixture();
    let mut c = claims(TenantId::new_v4(), UserId::new_v4());
    c.as_object_mut().unwrap().remove("tenant_id");
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::MissingClaim("tenant_id")
    );
    for bad in [
        json!(42),
        json!(["a"]),
        json!("acme"),
        json!("00000000-0000-0000-0000-000000000000"),
        json!(null),
    ] {
        let mut c = claims(TenantId::new_v4(), UserId::new_v4());
        c["tenant_id"] = bad.clone();
        assert_eq!(
            f.verifier
                .verify_cached(&f.es.sign(&c).unwrap())
                .unwrap_err(),
            AuthError::InvalidClaim("tenant_id"),
            "{bad}"
        );
    }
    let mut c = claims(TenantId::new_v4(), UserId::new_v4());
    c["sub"] = json!("alice");
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::InvalidClaim("sub")
    );
    let mut c = claims(TenantId::new_v4(), UserId::new_v4());
    c["roles"] = json!(["Admin; DROP"]);
    assert_eq!(
        f.verifier
            .verify_cached(&f.es.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::InvalidClaim("roles")
    );
}

#[test]
fn rejects_duplicate_claims_and_headers() {
    let f = fixture();
    let (t1, t2) = (TenantId::new_v4(), TenantId::new_v4());
    let n = now();
    let payload = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{}","tenant_id":"{t1}","tenant_id":"{t2}","iat":{n},"exp":{}}}"#,
        UserId::new_v4(),
        n + 600
    );
    let token = forge(&json!({"alg": "ES256", "kid": "es-1"}), &payload, &f.es);
    assert!(matches!(
        f.verifier.verify_cached(&token).unwrap_err(),
        AuthError::Malformed(_)
    ));
    let header = r#"{"alg":"ES256","kid":"es-1","kid":"ed-1"}"#;
    let body = b64(claims(t1, UserId::new_v4()).to_string().as_bytes());
    let token = format!("{}.{body}.AAAA", b64(header.as_bytes()));
    assert!(matches!(
        f.verifier.verify_cached(&token).unwrap_err(),
        AuthError::Malformed(_)
    ));
}

#[test]
fn rejects_unknown_kid_missing_kid_with_several_keys_and_embedded_keys() {
    let f = fixture();
    let stranger = SigningKey::generate_es256("stranger").unwrap();
    let c = claims(TenantId::new_v4(), UserId::new_v4());
    assert_eq!(
        f.verifier
            .verify_cached(&stranger.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::UnknownKid
    );
    let token = forge(&json!({"alg": "ES256"}), &c.to_string(), &f.es);
    assert_eq!(
        f.verifier.verify_cached(&token).unwrap_err(),
        AuthError::MissingKid
    );
    for (name, extra) in [
        ("jwk", json!({"kty": "EC"})),
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/cert")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
        ("b64", json!(false)),
        ("typ", json!("JOSE+JSON")),
        ("crit", json!(null)),
    ] {
        let mut h = json!({"alg": "ES256", "kid": "es-1"});
        h[name] = extra;
        let token = forge(&h, &c.to_string(), &f.es);
        assert_eq!(
            f.verifier.verify_cached(&token).unwrap_err(),
            AuthError::UnsupportedHeader(name)
        );
    }
}

#[test]
fn rejects_oversized_and_malformed_tokens_without_echoing_them() {
    let f = fixture();
    let huge = format!("eyJhbGciOiJFUzI1NiJ9.{}.AAAA", "A".repeat(9000));
    assert_eq!(
        f.verifier.verify_cached(&huge).unwrap_err(),
        AuthError::TokenTooLarge { limit: 8192 }
    );
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        "a..c",
        "!!.!!.!!",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "e30.e30.AAAA",
    ] {
        let err = f.verifier.verify_cached(bad).unwrap_err();
        assert!(!format!("{err}").contains("e30"), "{err}");
    }
}

#[test]
fn issued_tokens_last_fifteen_minutes_by_default() {
    let issuer = TokenIssuer::new(ISS, AUD, SigningKey::generate_ed25519("d").unwrap());
    let token = issuer
        .issue(&AccessClaims::new(TenantId::new_v4(), UserId::new_v4()))
        .unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
}

#[test]
fn tampered_signature_or_payload_fails() {
    let f = fixture();
    let token =
        f.ed.sign(&claims(TenantId::new_v4(), UserId::new_v4()))
            .unwrap();
    let (rest, sig) = token.rsplit_once('.').unwrap();
    let mut sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    sig_bytes[0] ^= 1;
    let bad = format!("{rest}.{}", b64(&sig_bytes));
    assert_eq!(
        f.verifier.verify_cached(&bad).unwrap_err(),
        AuthError::BadSignature
    );
}

struct Jwks(std::sync::Mutex<String>, std::sync::atomic::AtomicUsize);

#[derive(Clone)]
struct SharedJwks(std::sync::Arc<Jwks>);

impl JwksFetcher for SharedJwks {
    async fn fetch(&self) -> Result<String, AuthError> {
        self.0.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.0.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn key_rotation_unknown_kid_refresh_is_rate_limited_and_removed_keys_stop_verifying() {
    let issuer = TokenIssuer::new(ISS, AUD, SigningKey::generate_es256("k1").unwrap());
    let remote = std::sync::Arc::new(Jwks(
        std::sync::Mutex::new(issuer.jwks_json()),
        Default::default(),
    ));
    let keys = RemoteKeySet::new(SharedJwks(remote.clone()), Duration::from_millis(300))
        .await
        .unwrap()
        .with_max_age(Duration::from_millis(600));
    let v = JwtVerifier::new(JwtConfig::new(ISS, AUD), keys);
    let tenant = TenantId::new_v4();
    let old = issuer
        .issue(&AccessClaims::new(tenant, UserId::new_v4()))
        .unwrap();
    assert!(v.verify(&old).await.is_ok());

    // Rotate: the new key signs; the JWKS publishes both.
    issuer.rotate(SigningKey::generate_ed25519("k2").unwrap());
    *remote.0.lock().unwrap() = issuer.jwks_json();
    let new = issuer
        .issue(&AccessClaims::new(tenant, UserId::new_v4()))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fetches = remote.1.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        v.verify(&new).await.is_ok(),
        "unknown kid triggers one refresh"
    );
    assert_eq!(
        remote.1.load(std::sync::atomic::Ordering::SeqCst),
        fetches + 1
    );
    assert!(
        v.verify(&old).await.is_ok(),
        "the old key still verifies until retired"
    );

    // A burst of unknown kids fetches at most once per interval.
    let stranger = SigningKey::generate_es256("k9").unwrap();
    let c = claims(tenant, UserId::new_v4());
    let before = remote.1.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            v.verify(&stranger.sign(&c).unwrap()).await.unwrap_err(),
            AuthError::UnknownKid
        );
    }
    assert!(remote.1.load(std::sync::atomic::Ordering::SeqCst) - before <= 1);

    // Retire k1: once the key set is older than its max age it is fetched again, and
    // k1's tokens fail — no unknown kid is needed to notice a withdrawn key.
    issuer.retire("k1").unwrap();
    *remote.0.lock().unwrap() = issuer.jwks_json();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        v.verify(&old).await.unwrap_err(),
        AuthError::UnknownKid,
        "key removed from JWKS"
    );
    assert!(v.verify(&new).await.is_ok());
}

#[test]
fn jwks_refuses_symmetric_small_rsa_and_mismatched_keys_and_skips_foreign_ones() {
    assert!(KeySet::from_jwks_json(r#"{"keys":[{"kty":"oct","kid":"h","k":"AAAA"}]}"#).is_err());
    let small = json!({"keys":[{"kty":"RSA","kid":"r","n": b64(&[0xC5; 128]),"e":"AQAB"}]});
    assert!(KeySet::from_jwks_json(&small.to_string()).is_err());
    let f = fixture();
    let mut ec = f.es.public_jwk().unwrap().clone();
    ec["alg"] = json!("RS256");
    assert!(KeySet::from_jwks_json(&json!({"keys":[ec]}).to_string()).is_err());
    let mut not_on_curve = f.es.public_jwk().unwrap().clone();
    not_on_curve["y"] = json!(b64(&[7u8; 32]));
    assert!(KeySet::from_jwks_json(&json!({"keys":[not_on_curve]}).to_string()).is_err());
    let mut enc = f.es.public_jwk().unwrap().clone();
    enc["use"] = json!("enc");
    let set =
        KeySet::from_jwks_json(&json!({"keys":[enc, f.ed.public_jwk().unwrap()]}).to_string())
            .unwrap();
    assert_eq!(set.len(), 1);
    assert!(
        KeySet::from_jwks_json(
            &json!({"keys":[f.ed.public_jwk().unwrap(), f.ed.public_jwk().unwrap()]}).to_string()
        )
        .is_err()
    );
    assert!(KeySet::new().insert_hmac_secret("h", b"short").is_err());
}

// ----- published vectors -----

const RFC7520_PAYLOAD: &str = "It\u{2019}s a dangerous business, Frodo, going out your door. You step onto the road, and if you don't keep your feet, there\u{2019}s no knowing where you might be swept off to.";

#[test]
fn rfc7520_4_1_rs256_signature_verifies() {
    let jwk = json!({"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig",
                     "n": common::RFC7520_RSA_N, "e": common::RFC7520_RSA_E});
    let key = verifying_key_from_jwk(&jwk).unwrap().unwrap();
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";
    let payload = verify_compact(token, &key, 8192).unwrap();
    assert_eq!(payload, RFC7520_PAYLOAD.as_bytes());
    // Our own RS256 signature over the same input is byte-identical (PKCS#1 v1.5 is deterministic).
    let signer = common::rfc7520_rsa_signing_key("bilbo.baggins@hobbiton.example");
    let (input, sig) = token.rsplit_once('.').unwrap();
    assert_eq!(signer.sign_signing_input(input.as_bytes()).unwrap(), sig);
}

#[test]
fn rfc7520_4_4_hs256_integrity_protection_verifies() {
    let mut set = KeySet::new();
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode("hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg")
        .unwrap();
    set.insert_hmac_secret("018c0ae5-4d9b-471b-bfd6-eef314bc7037", &k)
        .unwrap();
    let key = set.get("018c0ae5-4d9b-471b-bfd6-eef314bc7037").unwrap();
    let token = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";
    assert_eq!(
        verify_compact(token, key, 8192).unwrap(),
        RFC7520_PAYLOAD.as_bytes()
    );
    let bad = token.replace("s0h6K", "s0h6L");
    assert_eq!(
        verify_compact(&bad, key, 8192).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn rfc7515_a3_es256_signature_verifies() {
    let jwk = json!({"kty":"EC","crv":"P-256","kid":"rfc7515-a3",
                     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                     "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let key = verifying_key_from_jwk(&jwk).unwrap().unwrap();
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let payload = verify_compact(token, &key, 8192).unwrap();
    assert_eq!(
        payload,
        b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
    );
    let tampered = format!("{}A", &token[..token.len() - 1]);
    assert_eq!(
        verify_compact(&tampered, &key, 8192).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn rfc8037_a4_ed25519_signature_verifies_and_a5_signing_matches() {
    let jwk = json!({"kty":"OKP","crv":"Ed25519","kid":"rfc8037","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let key = verifying_key_from_jwk(&jwk).unwrap().unwrap();
    let token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    assert_eq!(
        verify_compact(token, &key, 8192).unwrap(),
        b"Example of Ed25519 signing"
    );
    // Ed25519 is deterministic: signing with the RFC's private key reproduces the signature.
    let seed: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap()
        .try_into()
        .unwrap();
    let signer = SigningKey::ed25519_from_seed("rfc8037", &seed);
    assert_eq!(signer.public_jwk().unwrap()["x"], jwk["x"]);
    let (input, sig) = token.rsplit_once('.').unwrap();
    assert_eq!(signer.sign_signing_input(input.as_bytes()).unwrap(), sig);
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363_through_the_jws_path() {
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363)
            .unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for g in &set.test_groups {
        let point = &g.key.key;
        let jwk = json!({"kty":"EC","crv":"P-256","kid":"w","x": b64(&point[1..33]),"y": b64(&point[33..65])});
        let key = verifying_key_from_jwk(&jwk).unwrap().unwrap();
        for t in &g.tests {
            let r = verify_signature(&key, &t.msg, &t.sig);
            match t.result {
                wycheproof::TestResult::Valid => {
                    assert!(r.is_ok(), "tc {}", t.tc_id);
                    valid += 1;
                }
                wycheproof::TestResult::Invalid => {
                    assert!(r.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    invalid += 1;
                }
                wycheproof::TestResult::Acceptable => {}
            }
        }
    }
    assert!(
        valid > 50 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_ed25519_through_the_jws_path() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for g in &set.test_groups {
        let jwk = json!({"kty":"OKP","crv":"Ed25519","kid":"w","x": b64(&g.key.pk)});
        let Some(key) = verifying_key_from_jwk(&jwk).ok().flatten() else {
            continue;
        };
        for t in &g.tests {
            let r = verify_signature(&key, &t.msg, &t.sig);
            match t.result {
                wycheproof::TestResult::Valid => {
                    assert!(r.is_ok(), "tc {}", t.tc_id);
                    valid += 1;
                }
                wycheproof::TestResult::Invalid => {
                    assert!(r.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    invalid += 1;
                }
                wycheproof::TestResult::Acceptable => {}
            }
        }
    }
    assert!(
        valid > 20 && invalid > 20,
        "{valid} valid, {invalid} invalid"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_token_the_issuer_produces_verifies_and_any_byte_change_fails(
        roles in prop::collection::vec("[a-z][a-z0-9_]{0,10}", 0..4),
        flip in any::<prop::sample::Index>(),
        which in 0usize..3,
    ) {
        let key = match which {
            0 => SigningKey::generate_es256("p").unwrap(),
            1 => SigningKey::generate_ed25519("p").unwrap(),
            _ => common::rfc7520_rsa_signing_key("p"),
        };
        let issuer = TokenIssuer::new(ISS, AUD, key);
        let v = JwtVerifier::new(JwtConfig::new(ISS, AUD), StaticKeys::new(issuer.key_set().unwrap()));
        let tenant = TenantId::new_v4();
        let roles: Vec<Role> = roles.iter().map(|r| Role::new(r).unwrap()).collect();
        let token = issuer.issue(&AccessClaims::new(tenant, UserId::new_v4()).roles(roles.clone())).unwrap();
        let ctx = v.verify_cached(&token).unwrap();
        prop_assert_eq!(ctx.tenant(), tenant);
        for r in &roles {
            prop_assert!(ctx.has_role(r.as_str()));
        }
        let mut bytes = token.into_bytes();
        let i = flip.index(bytes.len());
        let original = bytes[i];
        bytes[i] = if original == b'A' { b'B' } else { b'A' };
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(v.verify_cached(&changed).is_err());
        }
    }
}

#[test]
fn auth_time_and_amr_reach_the_context_for_mfa_checks() {
    let f = fixture();
    let (tenant, user) = (TenantId::new_v4(), UserId::new_v4());
    let at = now() - 300;
    let mut c = claims(tenant, user);
    c["auth_time"] = json!(at);
    c["amr"] = json!(["pwd", "otp"]);
    let ctx = f.verifier.verify_cached(&f.ed.sign(&c).unwrap()).unwrap();
    assert_eq!(ctx.auth_time(), Some(UNIX_EPOCH + Duration::from_secs(at)));
    let methods: Vec<&str> = ctx.auth_methods().iter().map(|m| m.as_str()).collect();
    assert_eq!(methods, ["otp", "pwd"]);
    assert!(ctx.has_mfa());
    assert!(ctx.mfa_within(Duration::from_secs(900), SystemTime::now()));
    assert!(!ctx.mfa_within(Duration::from_secs(60), SystemTime::now()));
    // Without the claims there is no MFA, and no authentication time to be fresh.
    let plain = f
        .verifier
        .verify_cached(&f.ed.sign(&claims(tenant, user)).unwrap())
        .unwrap();
    assert!(plain.auth_time().is_none());
    assert!(!plain.mfa_within(Duration::from_secs(900), SystemTime::now()));
}

#[test]
fn malformed_auth_time_or_amr_make_the_token_invalid() {
    let f = fixture();
    let (tenant, user) = (TenantId::new_v4(), UserId::new_v4());
    let too_many: Vec<String> = (0..17).map(|i| format!("m{i}")).collect();
    let cases: [(&str, Value); 7] = [
        ("auth_time", json!("yesterday")),
        ("auth_time", json!(-5)),
        ("auth_time", json!(now() + 3600)),
        ("amr", json!("pwd")),
        ("amr", json!(["pwd", 3])),
        ("amr", json!(["Pwd"])),
        ("amr", json!(too_many)),
    ];
    for (claim, value) in cases {
        let mut c = claims(tenant, user);
        c[claim] = value.clone();
        let err = f
            .verifier
            .verify_cached(&f.ed.sign(&c).unwrap())
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidClaim(claim), "{claim} = {value}");
    }
    // A huge auth_time in the past direction cannot exist; one far in the future is refused
    // before any conversion could overflow.
    let mut c = claims(tenant, user);
    c["auth_time"] = json!(1e300);
    assert_eq!(
        f.verifier
            .verify_cached(&f.ed.sign(&c).unwrap())
            .unwrap_err(),
        AuthError::InvalidClaim("auth_time")
    );
}

#[test]
fn issued_tokens_carry_how_and_when_the_user_authenticated() {
    let key = SigningKey::generate_ed25519("ed-issuer").unwrap();
    let mut set = KeySet::new();
    set.insert(key.verifying_key().unwrap()).unwrap();
    let verifier = JwtVerifier::new(JwtConfig::new(ISS, AUD), StaticKeys::new(set));
    let issuer = TokenIssuer::new(ISS, AUD, key);
    let at = UNIX_EPOCH + Duration::from_secs(now() - 120);
    let method = |m: &str| nova_tenancy::AuthMethod::new(m).unwrap();
    let claims = AccessClaims::new(TenantId::new_v4(), UserId::new_v4())
        .authenticated(at, [method("pwd"), method("otp"), method("pwd")]);
    let ctx = verifier
        .verify_cached(&issuer.issue(&claims).unwrap())
        .unwrap();
    assert_eq!(ctx.auth_time(), Some(at));
    assert_eq!(ctx.auth_methods().len(), 2);
    assert!(ctx.mfa_within(Duration::from_secs(900), SystemTime::now()));
    // A token issued without them carries neither.
    let plain = AccessClaims::new(TenantId::new_v4(), UserId::new_v4());
    let ctx = verifier
        .verify_cached(&issuer.issue(&plain).unwrap())
        .unwrap();
    assert!(ctx.auth_time().is_none() && ctx.auth_methods().is_empty());
}

//! JWT verification through Nova versus raw `jsonwebtoken::decode` with the same key and
//! the same checks (algorithm, `iss`, `aud`, `exp`, leeway), for ES256, EdDSA and RS256.
//! Goal: ratio ≤ 1.10 each.
//!
//! Also: API key verification (parse, checksum, SHA-256 of the secret part, constant-time
//! compare, in-memory lookup, context) versus one raw SHA-256 of the whole key. Goal: ratio
//! ≤ 3. (The last-used write happens at most once a minute, so it is not in the loop; and
//! Nova hashes the 43-byte secret — one SHA-256 block — where the baseline hashes the whole
//! 82-byte key — two blocks.)
//!
//! Run: `cargo bench -p nova-auth --bench verify`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use nova_auth::{
    AccessClaims, ApiKeys, InMemoryApiKeyStore, JwtConfig, JwtVerifier, NewApiKey, SigningKey,
    StaticKeys, TokenIssuer,
};
use nova_tenancy::testing::paired_medians;
use nova_tenancy::{Role, TenantId, UserId};
use serde::Deserialize;
use sha2::Digest as _;

const ISS: &str = "https://auth.nova.example";
const AUD: &str = "nova-api";

#[derive(Deserialize)]
#[allow(dead_code)]
struct PeerClaims {
    sub: String,
    tenant_id: String,
    roles: Vec<String>,
}

struct Case {
    name: &'static str,
    token: String,
    nova: JwtVerifier<StaticKeys>,
    raw_key: DecodingKey,
    raw_validation: Validation,
}

fn case(name: &'static str, key: SigningKey, alg: Algorithm) -> Case {
    let jwk = key.public_jwk().unwrap().clone();
    let issuer = TokenIssuer::new(ISS, AUD, key);
    let token = issuer
        .issue(
            &AccessClaims::new(TenantId::new_v4(), UserId::new_v4())
                .roles([Role::new("agent").unwrap()]),
        )
        .unwrap();
    let nova = JwtVerifier::new(
        JwtConfig::new(ISS, AUD),
        StaticKeys::new(issuer.key_set().unwrap()),
    );
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
    let raw_key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut raw_validation = Validation::new(alg);
    raw_validation.set_issuer(&[ISS]);
    raw_validation.set_audience(&[AUD]);
    raw_validation.leeway = 60;
    Case {
        name,
        token,
        nova,
        raw_key,
        raw_validation,
    }
}

/// Polls a future that completes without waiting (the in-memory store never waits), so the
/// benchmark measures verification and not an executor.
fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("in-memory store future was pending"),
    }
}

fn benches(c: &mut Criterion) {
    let cases = [
        case(
            "ES256",
            SigningKey::generate_es256("es").unwrap(),
            Algorithm::ES256,
        ),
        case(
            "EdDSA",
            SigningKey::generate_ed25519("ed").unwrap(),
            Algorithm::EdDSA,
        ),
        case(
            "RS256",
            common::rfc7520_rsa_signing_key("rs"),
            Algorithm::RS256,
        ),
    ];
    for k in &cases {
        let mut g = c.benchmark_group(format!("jwt_verify_{}", k.name));
        g.bench_function("nova", |b| {
            b.iter(|| black_box(k.nova.verify_cached(&k.token).unwrap()))
        });
        g.bench_function("raw_jsonwebtoken", |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<PeerClaims>(&k.token, &k.raw_key, &k.raw_validation)
                        .unwrap(),
                )
            })
        });
        g.finish();
    }
    let keys = ApiKeys::new(InMemoryApiKeyStore::new());
    for _ in 0..1000 {
        now_or_never(keys.create(NewApiKey::new(
            TenantId::new_v4(),
            UserId::new_v4(),
            Role::new("service").unwrap(),
        )))
        .unwrap();
    }
    let (_, secret) = now_or_never(keys.create(NewApiKey::new(
        TenantId::new_v4(),
        UserId::new_v4(),
        Role::new("service").unwrap(),
    )))
    .unwrap();
    let key = secret.expose().to_owned();
    let client: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let mut g = c.benchmark_group("api_key_verify");
    g.bench_function("nova", |b| {
        b.iter(|| black_box(now_or_never(keys.verify(&key, client)).unwrap()))
    });
    g.bench_function("raw_sha256", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(key.as_bytes())))
    });
    g.finish();

    println!("\npaired medians (alternating batches, order swapped each round):");
    for k in &cases {
        let (n, r) = paired_medians(
            20,
            200,
            || {
                black_box(k.nova.verify_cached(&k.token).unwrap());
            },
            || {
                black_box(
                    jsonwebtoken::decode::<PeerClaims>(&k.token, &k.raw_key, &k.raw_validation)
                        .unwrap(),
                );
            },
        );
        println!(
            "  {:<6} nova {:9.1} µs  raw jsonwebtoken {:9.1} µs  ratio {:.3}  (goal ≤ 1.10)",
            k.name,
            n / 1000.0,
            r / 1000.0,
            n / r
        );
    }
    let (n, r) = paired_medians(
        40,
        5000,
        || {
            black_box(now_or_never(keys.verify(&key, client)).unwrap());
        },
        || {
            black_box(sha2::Sha256::digest(key.as_bytes()));
        },
    );
    println!(
        "  API key (1,001 keys in store)  nova {n:7.1} ns  raw SHA-256 {r:7.1} ns  ratio {:.2}  (goal ≤ 3)",
        n / r
    );
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
}

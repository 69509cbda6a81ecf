//! nova-crypto against raw RustCrypto primitives, side by side in one run:
//!
//! - `field_64B`: `Keyring::seal` + `Keyring::open` of a 64-byte field with a cached tenant
//!   key, versus raw `aes-gcm` (`Aes256Gcm` built once) encrypting and decrypting the same
//!   bytes with a fresh random nonce from the same RNG. Goal: ratio ≤ 1.5.
//! - `payload_16KiB`: the same at 16 KiB. Goal: Nova ≥ 0.9 of raw throughput.
//! - `blind_index`: `Keyring::blind_index` versus raw HMAC-SHA256 with the key schedule
//!   already done (a cloned keyed state). Goal: ratio ≤ 1.2.
//!
//! Run: `cargo bench -p nova-crypto --bench envelope`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, Throughput, criterion_group};
use hmac::{Hmac, Mac};
use nova_crypto::{Column, InMemoryTenantKeyStore, Keyring, LocalKeyProvider};
use nova_tenancy::testing::paired_medians;
use nova_tenancy::{TenantContext, TenantId};
use sha2::Sha256;

struct World {
    kr: Keyring,
    ctx: TenantContext,
    col: Column,
    raw: Aes256Gcm,
    mac: Hmac<Sha256>,
}

fn world() -> World {
    let kr = Keyring::new(
        Arc::new(LocalKeyProvider::generated("root").unwrap()),
        Arc::new(InMemoryTenantKeyStore::new()),
        "root",
    )
    .unwrap();
    let ctx = TenantContext::system(TenantId::new_v4(), "bench").unwrap();
    let col = Column::new("users", "email").unwrap();
    // Warm the cache: per-field cost must exclude derivation.
    let e = kr.seal(&ctx, &col.row(1_i64), b"warm").unwrap();
    kr.open(&ctx, &col.row(1_i64), &e).unwrap();
    kr.blind_index(&ctx, &col, "warm").unwrap();
    World {
        kr,
        ctx,
        col,
        raw: Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap(),
        mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&[9u8; 32]).unwrap(),
    }
}

fn nova_round_trip(w: &World, pt: &[u8]) {
    let field = w.col.row(42_i64);
    let env = w.kr.seal(&w.ctx, &field, pt).unwrap();
    let out = w.kr.open(&w.ctx, &field, &env).unwrap();
    black_box(out);
}

fn raw_round_trip(w: &World, pt: &[u8]) {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).unwrap();
    let nonce = Nonce::from(nonce);
    let ad = b"users.email:42";
    let ct = w.raw.encrypt(&nonce, Payload { msg: pt, aad: ad }).unwrap();
    let out = w
        .raw
        .decrypt(&nonce, Payload { msg: &ct, aad: ad })
        .unwrap();
    black_box(out);
}

fn handle_round_trip(keys: &mut nova_crypto::TenantKeys<'_>, col: &Column, pt: &[u8]) {
    let field = col.row(42_i64);
    let env = keys.seal(&field, pt).unwrap();
    let out = keys.open(&field, &env).unwrap();
    black_box(out);
}

fn nova_index(w: &World, v: &str) {
    black_box(w.kr.blind_index(&w.ctx, &w.col, v).unwrap());
}

fn raw_index(w: &World, v: &str) {
    black_box(
        w.mac
            .clone()
            .chain_update(v.as_bytes())
            .finalize()
            .into_bytes(),
    );
}

fn benches(c: &mut Criterion) {
    let w = world();
    let small = [0x41u8; 64];
    let big = vec![0x42u8; 16 * 1024];
    let email = "alice@example.com";

    let mut keys = w.kr.tenant_keys(&w.ctx).unwrap();
    let mut g = c.benchmark_group("field_64B");
    g.throughput(Throughput::Bytes(64));
    g.bench_function("nova_seal_open", |b| b.iter(|| nova_round_trip(&w, &small)));
    g.bench_function("nova_tenant_keys_seal_open", |b| {
        b.iter(|| handle_round_trip(&mut keys, &w.col, &small))
    });
    g.bench_function("raw_aes_gcm", |b| b.iter(|| raw_round_trip(&w, &small)));
    g.finish();

    let mut g = c.benchmark_group("payload_16KiB");
    g.throughput(Throughput::Bytes(16 * 1024));
    g.bench_function("nova_seal_open", |b| b.iter(|| nova_round_trip(&w, &big)));
    g.bench_function("raw_aes_gcm", |b| b.iter(|| raw_round_trip(&w, &big)));
    g.finish();

    let mut g = c.benchmark_group("blind_index");
    g.bench_function("nova_blind_index", |b| b.iter(|| nova_index(&w, email)));
    g.bench_function("nova_tenant_keys_blind_index", |b| {
        b.iter(|| black_box(keys.blind_index(&w.col, email).unwrap()))
    });
    g.bench_function("raw_hmac_sha256", |b| b.iter(|| raw_index(&w, email)));
    g.finish();

    #[cfg(target_arch = "x86_64")]
    println!(
        "\nCPU features: aes={} pclmulqdq={} sha={} avx2={}",
        std::arch::is_x86_feature_detected!("aes"),
        std::arch::is_x86_feature_detected!("pclmulqdq"),
        std::arch::is_x86_feature_detected!("sha"),
        std::arch::is_x86_feature_detected!("avx2"),
    );
    let (rng, _) = paired_medians(
        20,
        2000,
        || {
            let mut n = [0u8; 12];
            getrandom::fill(&mut n).unwrap();
            black_box(n);
        },
        || {},
    );
    println!(
        "one 96-bit nonce from the OS RNG (getrandom): {rng:.1} ns (both sides pay it per seal)"
    );
    println!("paired medians (alternating batches, order swapped each round):");
    let report = |name: &str, goal: &str, (n, r): (f64, f64)| {
        println!(
            "  {name:<36} nova {n:8.1} ns  raw {r:8.1} ns  ratio {:.3}  (goal {goal})",
            n / r
        );
    };
    report(
        "field_64B Keyring::seal+open",
        "≤ 1.5",
        paired_medians(
            40,
            2000,
            || nova_round_trip(&w, &small),
            || raw_round_trip(&w, &small),
        ),
    );
    report(
        "field_64B TenantKeys::seal+open",
        "≤ 1.5",
        paired_medians(
            40,
            2000,
            || handle_round_trip(&mut keys, &w.col, &small),
            || raw_round_trip(&w, &small),
        ),
    );
    let (n, r) = paired_medians(
        30,
        100,
        || nova_round_trip(&w, &big),
        || raw_round_trip(&w, &big),
    );
    let mib = |ns: f64| 2.0 * 16.0 * 1024.0 / (ns * 1e-9) / (1024.0 * 1024.0);
    println!(
        "  {:<36} nova {:6.0} MiB/s  raw {:6.0} MiB/s  throughput ratio {:.3}  (goal ≥ 0.9)",
        "payload_16KiB Keyring::seal+open",
        mib(n),
        mib(r),
        r / n
    );
    report(
        "blind_index Keyring::blind_index",
        "≤ 1.2",
        paired_medians(40, 5000, || nova_index(&w, email), || raw_index(&w, email)),
    );
    report(
        "blind_index TenantKeys::blind_index",
        "≤ 1.2",
        paired_medians(
            40,
            5000,
            || {
                black_box(keys.blind_index(&w.col, email).unwrap());
            },
            || raw_index(&w, email),
        ),
    );
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
}

//! The price of tamper evidence, side by side in one run:
//!
//! - `file_append`: batches of 256 events to the JSON-lines [`FileLog`] (canonical encoding,
//!   Merkle leaf hashing, a signed checkpoint per batch) versus plain JSON-lines appends of
//!   the same events (`serde_json` of the same fields, no hashing, no checkpoint), both
//!   without fsync so the comparison is of CPU, not of the disk. Goal ≤ 1.3.
//! - `memory_append`: canonical encoding + leaf hash + tree append in memory, in events per
//!   second on one core. Goal ≥ 500,000/s.
//! - `verify`: [`verify_file`] throughput in MB/s.
//!
//! Run: `cargo bench -p nova-audit --bench append`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use nova_audit::{
    AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, MerkleTree, RedactionPolicy, VerifierKey,
    leaf_hash, verify_file,
};
use nova_tenancy::TenantId;
use nova_tenancy::testing::paired_medians;

mod common;
use common::{BATCH, events, plain_line};

fn benches(c: &mut Criterion) {
    let tenant = TenantId::new_v4();
    let batch = events(tenant);
    // In memory: encode, hash, append to the tree. Measured first, before the file
    // benchmarks leave hundreds of MB of dirty pages for the kernel to write back, and as
    // the median of 9 runs of 100 batches each.
    let rate = |encode: &dyn Fn(&AuditEvent) -> Vec<u8>| {
        let mut rates: Vec<f64> = (0..9)
            .map(|_| {
                let mut tree = MerkleTree::new();
                let start = Instant::now();
                for _ in 0..100 {
                    for e in &batch {
                        black_box(tree.push(leaf_hash(&encode(e))));
                    }
                }
                (100 * BATCH) as f64 / start.elapsed().as_secs_f64()
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let per_sec = rate(&|e| e.canonical_json());
    // The same with a keyed-hash policy: the sensitive parameter and the actor hashed.
    let policy = RedactionPolicy::with_hash_key([9; 32]).hash_actor();
    let hashed_per_sec = rate(&|e| e.canonical_json_with(&policy));

    let dir = std::env::temp_dir().join(format!("nova-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let signer = || CheckpointSigner::from_seed("bench", &[1; 32]).unwrap();
    let mut nova = FileLog::open(
        dir.join("nova.jsonl"),
        "bench/t",
        signer(),
        FsyncPolicy::Never,
    )
    .unwrap();
    let mut plain = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("plain.jsonl"))
        .unwrap();

    let mut g = c.benchmark_group("file_append_256");
    g.bench_function("nova_merkle_checkpointed", |b| {
        b.iter(|| nova.append_batch(&batch).unwrap())
    });
    g.bench_function("plain_jsonl", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(BATCH * 320);
            for e in &batch {
                buf.extend_from_slice(&plain_line(e));
            }
            plain.write_all(&buf).unwrap();
        })
    });
    g.finish();

    let (n, p) = paired_medians(
        20,
        20,
        || {
            nova.append_batch(&batch).unwrap();
        },
        || {
            let mut buf = Vec::with_capacity(BATCH * 320);
            for e in &batch {
                buf.extend_from_slice(&plain_line(e));
            }
            plain.write_all(&buf).unwrap();
        },
    );

    // Verification throughput over the file written above.
    let key = VerifierKey::parse(&signer().verifier_key()).unwrap();
    let path = dir.join("nova.jsonl");
    let bytes = std::fs::metadata(&path).unwrap().len() as f64;
    let start = Instant::now();
    let verdict = verify_file(&path, &key, None).unwrap();
    let mb_s = bytes / start.elapsed().as_secs_f64() / 1e6;
    assert!(verdict.ok(), "{verdict:?}");

    println!("\npaired medians per 256-event batch (alternating, order swapped each round):");
    println!(
        "  file append   nova {:8.1} µs  plain JSON lines {:8.1} µs  ratio {:.3}  (goal ≤ 1.3)",
        n / 1000.0,
        p / 1000.0,
        n / p
    );
    println!("  memory append {per_sec:.0} events/s on one core (goal ≥ 500,000)");
    println!(
        "  memory append with keyed-hash redaction (2 values/event) {hashed_per_sec:.0} events/s"
    );
    println!(
        "  verification  {mb_s:.1} MB/s over {:.1} MB ({} entries)",
        bytes / 1e6,
        verdict.entries
    );
    let _ = std::fs::remove_dir_all(&dir);
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

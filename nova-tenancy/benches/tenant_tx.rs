//! The price of tenant scoping, against the same PostgreSQL server in one run:
//!
//! 1. `pk_select`: a tenant-scoped transaction (`TenantPool::begin`, one primary-key select,
//!    commit) versus a plain sqlx transaction doing the same select on an identical table
//!    without row-level security. Goal: ratio ≤ 1.10. Nova's side includes its connection
//!    hygiene (session pins at begin, the session reset with commit); the paired pass runs
//!    it twice, without and with the three timeouts `ConnectionPolicy::connect` pins.
//! 2. `listing`: an RLS-filtered indexed query over 100 tenants × 1,000 rows versus the same
//!    query with an explicit `WHERE tenant_id = $1` on the table without RLS. Goal ≤ 1.20.
//!
//! Both sides connect as the same non-superuser role. After criterion's report, a paired
//! pass alternates the two sides in batches and prints the ratio of their medians, which is
//! robust to drift on a busy machine.
//!
//! Run: `cargo bench -p nova-tenancy --bench tenant_tx` (PostgreSQL on 127.0.0.1:5432).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use nova_tenancy::testing::PgFixture;
use nova_tenancy::{
    AppRole, CredentialVerifier, RlsMigration, TenantContext, TenantId, TenantPool, TenantTable,
    UserId, VerifiedIdentity,
};
use sqlx::PgPool;

const TENANTS: usize = 100;
const ROWS_PER_TENANT: i64 = 1_000;

struct BenchVerifier;
impl CredentialVerifier for BenchVerifier {
    fn verifier_name(&self) -> &'static str {
        "bench"
    }
}

struct World {
    fx: PgFixture,
    nova: TenantPool,
    nova_timeouts: TenantPool,
    plain: PgPool,
    ctx: TenantContext,
    tenant: TenantId,
    ids: Vec<i64>,
}

async fn world() -> Option<World> {
    let mut fx = PgFixture::new("bench").await?;
    let migration = RlsMigration::new(fx.roles().clone()).table(
        TenantTable::new("items")
            .unwrap()
            .index_with(["created_at"])
            .unwrap(),
    );
    fx.exec(&migration.roles_sql()).await;
    let app_rw = fx.roles().get(AppRole::AppRw).clone();
    let app = fx.login_role("app", &[&app_rw]).await;
    fx.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, amount int NOT NULL,
                             created_at timestamptz NOT NULL, body text NOT NULL);
         CREATE TABLE items_plain (LIKE items INCLUDING ALL);
         CREATE INDEX items_plain_tenant_idx ON items_plain (tenant_id, created_at);",
    )
    .await;
    fx.exec(&migration.tables_sql()).await;
    fx.exec(&format!("GRANT SELECT ON items_plain TO {app_rw}"))
        .await;

    let tenants: Vec<uuid::Uuid> = (0..TENANTS)
        .map(|_| *TenantId::new_v4().as_uuid())
        .collect();
    for table in ["items", "items_plain"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} SELECT g, ($1::uuid[])[(g % {TENANTS}) + 1], (g * 7) % 1000,
                 timestamptz '2026-01-01' + g * interval '1 second', md5(g::text)
             FROM generate_series(1, {}) AS g",
            TENANTS as i64 * ROWS_PER_TENANT
        )))
        .bind(&tenants)
        .execute(fx.admin())
        .await
        .unwrap();
    }
    fx.exec("ANALYZE items; ANALYZE items_plain;").await;

    let tenant = TenantId::from_uuid(tenants[0]).unwrap();
    let ids: Vec<i64> = (1..=TENANTS as i64 * ROWS_PER_TENANT)
        .filter(|g| g % TENANTS as i64 == 0)
        .collect();
    let ctx = TenantContext::from_verified(
        &BenchVerifier,
        VerifiedIdentity::new(tenant).user(UserId::new_v4()),
    );
    // One connection shared by both sides: same backend process, same socket, so the
    // comparison is not skewed by which backend the scheduler favours.
    let plain = fx.pool_as(&app, 1).await;
    let nova = TenantPool::new(plain.clone());
    let nova_timeouts = TenantPool::new(plain.clone())
        .with_timeouts(nova_tenancy::ConnectionPolicy::default().timeouts());
    Some(World {
        fx,
        nova,
        nova_timeouts,
        plain,
        ctx,
        tenant,
        ids,
    })
}

async fn nova_pk(w: &World, nova: &TenantPool, i: usize) {
    let mut tx = nova.begin(&w.ctx).await.unwrap();
    let amount: i32 = sqlx::query_scalar("SELECT amount FROM items WHERE id = $1")
        .bind(w.ids[i % w.ids.len()])
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    std::hint::black_box(amount);
    tx.commit().await.unwrap();
}

async fn plain_pk(w: &World, i: usize) {
    let mut tx = w.plain.begin().await.unwrap();
    let amount: i32 = sqlx::query_scalar("SELECT amount FROM items_plain WHERE id = $1")
        .bind(w.ids[i % w.ids.len()])
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    std::hint::black_box(amount);
    tx.commit().await.unwrap();
}

const CUTOFF: &str = "2026-01-01 12:00:00+00";

async fn nova_listing(tx: &mut nova_tenancy::TenantTx) {
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT id, amount FROM items WHERE created_at >= $1::timestamptz ORDER BY created_at LIMIT 50",
    )
    .bind(CUTOFF)
    .fetch_all(&mut **tx)
    .await
    .unwrap();
    assert_eq!(rows.len(), 50);
}

async fn plain_listing(tx: &mut sqlx::PgConnection, tenant: TenantId) {
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT id, amount FROM items_plain WHERE tenant_id = $1 AND created_at >= $2::timestamptz ORDER BY created_at LIMIT 50",
    )
    .bind(tenant.as_uuid())
    .bind(CUTOFF)
    .fetch_all(tx)
    .await
    .unwrap();
    assert_eq!(rows.len(), 50);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates batches of the RLS listing and the explicit-WHERE listing (swapping which goes
/// first each round; each batch in one transaction) and returns the median per-query time
/// of each in microseconds.
async fn paired_listing(w: &World) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let mut tx = w.nova.begin(&w.ctx).await.unwrap();
                let start = Instant::now();
                for _ in 0..BATCH {
                    nova_listing(&mut tx).await;
                }
                a.push(start.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
                tx.commit().await.unwrap();
            } else {
                let mut tx = w.plain.begin().await.unwrap();
                let start = Instant::now();
                for _ in 0..BATCH {
                    plain_listing(&mut tx, w.tenant).await;
                }
                b.push(start.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
                tx.commit().await.unwrap();
            }
        }
    }
    (median(a), median(b))
}

const ROUNDS: usize = 30;
const BATCH: usize = 100;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(w) = rt.block_on(world()) else {
        eprintln!("PostgreSQL unavailable: no tenancy benchmarks run");
        return;
    };

    let mut g = c.benchmark_group("pk_select");
    g.bench_function("nova_tenant_tx", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let w = &w;
            async move {
                let start = Instant::now();
                for i in 0..iters as usize {
                    nova_pk(w, &w.nova, i).await;
                }
                start.elapsed()
            }
        })
    });
    g.bench_function("plain_tx", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let w = &w;
            async move {
                let start = Instant::now();
                for i in 0..iters as usize {
                    plain_pk(w, i).await;
                }
                start.elapsed()
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("listing_100x1000");
    g.bench_function("nova_rls", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let w = &w;
            async move {
                let mut tx = w.nova.begin(&w.ctx).await.unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    nova_listing(&mut tx).await;
                }
                let elapsed = start.elapsed();
                tx.commit().await.unwrap();
                elapsed
            }
        })
    });
    g.bench_function("explicit_where_no_rls", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let w = &w;
            async move {
                let mut tx = w.plain.begin().await.unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    plain_listing(&mut tx, w.tenant).await;
                }
                let elapsed = start.elapsed();
                tx.commit().await.unwrap();
                elapsed
            }
        })
    });
    g.finish();

    let (pk, pk_timeouts, listing) = rt.block_on(async {
        let pk = paired_pk(&w, &w.nova).await;
        let pk_timeouts = paired_pk(&w, &w.nova_timeouts).await;
        let listing = paired_listing(&w).await;
        (pk, pk_timeouts, listing)
    });
    println!("\npaired medians (alternating batches of 100, 30 rounds):");
    println!(
        "  pk_select   nova {:8.1} µs  plain {:8.1} µs  ratio {:.3}  (goal ≤ 1.10)",
        pk.0,
        pk.1,
        pk.0 / pk.1
    );
    println!(
        "  pk_select, timeouts pinned   nova {:8.1} µs  plain {:8.1} µs  ratio {:.3}  (goal ≤ 1.10)",
        pk_timeouts.0,
        pk_timeouts.1,
        pk_timeouts.0 / pk_timeouts.1
    );
    println!(
        "  listing     nova {:8.1} µs  plain {:8.1} µs  ratio {:.3}  (goal ≤ 1.20)",
        listing.0,
        listing.1,
        listing.0 / listing.1
    );
    rt.block_on(async {
        w.nova.close().await;
        w.plain.close().await;
        w.fx.cleanup().await;
    });
}

/// Alternates batches of scoped and plain transactions; median per-transaction µs of each.
async fn paired_pk(w: &World, nova: &TenantPool) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            let start = Instant::now();
            for i in 0..BATCH {
                if side == 0 {
                    nova_pk(w, nova, i).await;
                } else {
                    plain_pk(w, i).await;
                }
            }
            let per_op = start.elapsed().as_secs_f64() * 1e6 / BATCH as f64;
            if side == 0 {
                a.push(per_op)
            } else {
                b.push(per_op)
            }
        }
    }
    (median(a), median(b))
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
}

//! The price of tamper evidence in PostgreSQL, side by side in one run: batches appended
//! through [`PgLog`] (canonical encoding, leaf hashes, a signed checkpoint and its tree edge
//! in the same statement, the append-only trigger in place) versus plain batched `INSERT`s of
//! the same events (`serde_json`, one `INSERT .. SELECT FROM UNNEST` per batch, autocommit,
//! no trigger), both over one connection as a non-superuser role. Goal ≤ 1.3.
//!
//! Needs the PostgreSQL server of the test suite (`NOVA_TEST_PG_ADMIN_URL`).
//!
//! Run: `cargo bench -p nova-audit --bench pg_append`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use nova_audit::{CheckpointSigner, PgLog, PgLogSchema};
use nova_tenancy::testing::{PgFixture, paired_medians};
use nova_tenancy::{Ident, TenantId};
use sqlx::{Connection, PgConnection};

mod common;
use common::{events_n, plain_line};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(mut fx) = rt.block_on(PgFixture::new("auditbench")) else {
        return;
    };
    let schema = PgLogSchema::new(Ident::new("audit").unwrap(), fx.prefix()).unwrap();
    rt.block_on(fx.exec(&schema.up()));
    rt.block_on(fx.exec(
        "CREATE TABLE plain_events (tenant uuid NOT NULL, idx bigint NOT NULL, event bytea NOT NULL, \
         time_ms bigint NOT NULL, PRIMARY KEY (tenant, idx))",
    ));
    let writer = rt.block_on(fx.login_role("w", &[schema.writer_role()]));
    rt.block_on(fx.exec(&format!("GRANT INSERT ON plain_events TO \"{writer}\"")));

    println!("\npaired medians per batch (alternating, order swapped each round):");
    for batch_len in [256usize, 32] {
        let tenant = TenantId::new_v4();
        let batch = events_n(tenant, batch_len);
        let signer = CheckpointSigner::from_seed("bench", &[1; 32]).unwrap();
        let mut nova = PgLog::new(
            fx.connect_options(&writer),
            &schema,
            tenant,
            "bench/t",
            signer,
        )
        .unwrap();
        let mut conn = rt
            .block_on(PgConnection::connect_with(&fx.connect_options(&writer)))
            .unwrap();
        let mut next_idx = 0i64;
        let mut plain = || {
            let lines: Vec<Vec<u8>> = batch.iter().map(plain_line).collect();
            let idx: Vec<i64> = (next_idx..next_idx + batch.len() as i64).collect();
            next_idx += batch.len() as i64;
            let times: Vec<i64> = batch.iter().map(|e| e.time_ms as i64).collect();
            rt.block_on(
                sqlx::query(
                    "INSERT INTO plain_events (tenant, idx, event, time_ms) \
                     SELECT $1, u.idx, u.event, u.time_ms \
                     FROM UNNEST($2::int8[], $3::bytea[], $4::int8[]) AS u(idx, event, time_ms)",
                )
                .bind(*tenant.as_uuid())
                .bind(&idx)
                .bind(&lines)
                .bind(&times)
                .execute(&mut conn),
            )
            .unwrap();
        };
        // Warm both sides (connections, prepared statements, buffers).
        for _ in 0..5 {
            rt.block_on(nova.append_batch(&batch)).unwrap();
            plain();
        }
        let (n, p) = paired_medians(
            15,
            6,
            || {
                rt.block_on(nova.append_batch(&batch)).unwrap();
            },
            &mut plain,
        );
        println!(
            "  postgres append, {batch_len:3} events/batch   nova {:8.1} µs  plain INSERT {:8.1} µs  ratio {:.3}  (goal ≤ 1.3)",
            n / 1000.0,
            p / 1000.0,
            n / p
        );

        // Two writers sharing one tenant's log: after their first collision both take the
        // advisory lock and read the head under it for every batch.
        let shared = TenantId::new_v4();
        let shared_batch = events_n(shared, batch_len);
        let writer_of = |_| {
            PgLog::new(
                fx.connect_options(&writer),
                &schema,
                shared,
                "bench/shared",
                CheckpointSigner::from_seed("bench", &[1; 32]).unwrap(),
            )
            .unwrap()
        };
        let mut pair = [writer_of(0), writer_of(1)];
        let mut turn = 0usize;
        let mut both = || {
            rt.block_on(pair[turn % 2].append_batch(&shared_batch))
                .unwrap();
            turn += 1;
        };
        for _ in 0..4 {
            both();
        }
        let (l, p) = paired_medians(15, 6, &mut both, &mut plain);
        println!(
            "  postgres append, {batch_len:3} events/batch, two writers on one log (locked)  nova {:8.1} µs  plain INSERT {:8.1} µs  ratio {:.3}",
            l / 1000.0,
            p / 1000.0,
            l / p
        );
        assert!(
            pair.iter().all(|w| w.retries() <= 1),
            "locked writers do not collide"
        );
    }
    rt.block_on(fx.cleanup());
}

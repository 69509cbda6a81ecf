//! Envelopes stored in PostgreSQL through sqlx (`BYTEA` and `TEXT` columns), key rotation
//! with batched re-encryption, and crypto-shredding one tenant while another is untouched —
//! against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use nova_crypto::{
    Column, CryptoError, Envelope, InMemoryTenantKeyStore, Keyring, LocalKeyProvider,
    ReencryptProgress, normalize,
};
use nova_tenancy::testing::PgFixture;
use nova_tenancy::{TenantContext, TenantId};
use secrecy::ExposeSecret;

const ROWS: i64 = 250;
const BATCH: i64 = 40;

#[tokio::test]
async fn envelopes_survive_storage_rotation_batched_reencryption_and_shredding() {
    let Some(fx) = PgFixture::new("cryptopg").await else {
        return;
    };
    fx.exec(
        "CREATE TABLE people (
            tenant_id uuid NOT NULL,
            id bigint NOT NULL,
            email bytea NOT NULL,
            email_bidx bytea NOT NULL,
            note text NOT NULL,
            PRIMARY KEY (tenant_id, id)
        )",
    )
    .await;
    let db = fx.admin();
    let keyring = Keyring::new(
        Arc::new(LocalKeyProvider::generated("root").unwrap()),
        Arc::new(InMemoryTenantKeyStore::new()),
        "root",
    )
    .unwrap();
    let email = Column::new("people", "email")
        .unwrap()
        .with_normalizer(normalize::email);
    let note = Column::new("people", "note").unwrap();
    let (a, b) = (
        TenantContext::system(TenantId::new_v4(), "crypto pg test").unwrap(),
        TenantContext::system(TenantId::new_v4(), "crypto pg test").unwrap(),
    );

    for ctx in [&a, &b] {
        for id in 0..ROWS {
            let addr = format!("user{id}@example.com");
            let e = keyring.seal(ctx, &email.row(id), addr.as_bytes()).unwrap();
            let n = keyring
                .seal(ctx, &note.row(id), format!("note {id}").as_bytes())
                .unwrap();
            let bidx = keyring.blind_index(ctx, &email, &addr).unwrap();
            sqlx::query("INSERT INTO people VALUES ($1, $2, $3, $4, $5)")
                .bind(ctx.tenant().as_uuid())
                .bind(id)
                .bind(&e) // BYTEA through Encode
                .bind(bidx.as_bytes())
                .bind(n.to_text()) // TEXT form
                .execute(db)
                .await
                .unwrap();
        }
    }

    // Equality lookup through the blind index, then decrypt.
    let probe = keyring
        .blind_index(&a, &email, "  USER7@example.com")
        .unwrap();
    let (id, found): (i64, Envelope) =
        sqlx::query_as("SELECT id, email FROM people WHERE tenant_id = $1 AND email_bidx = $2")
            .bind(a.tenant().as_uuid())
            .bind(probe.as_bytes())
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(id, 7);
    assert_eq!(
        keyring
            .open(&a, &email.row(id), &found)
            .unwrap()
            .expose_secret(),
        b"user7@example.com"
    );

    // Rotate tenant A's key and re-encrypt its rows in batches, reporting progress.
    let v2 = keyring.rotate_tenant(a.tenant()).unwrap();
    let mut progress = ReencryptProgress::default();
    let mut reports = Vec::new();
    let mut after = -1_i64;
    loop {
        let rows: Vec<(i64, Envelope, Envelope)> = sqlx::query_as(
            "SELECT id, email, note FROM people WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(a.tenant().as_uuid())
        .bind(after)
        .bind(BATCH)
        .fetch_all(db)
        .await
        .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.0;
        let items: Vec<_> = rows
            .iter()
            .flat_map(|(id, e, n)| [(email.row(*id), e), (note.row(*id), n)])
            .collect();
        let results = keyring.reencrypt_batch(&a, items, &mut progress, |p| reports.push(*p));
        let mut tx = db.begin().await.unwrap();
        for ((id, _, _), pair) in rows.iter().zip(results.chunks(2)) {
            let new_email = pair[0].as_ref().unwrap().as_ref().unwrap();
            let new_note = pair[1].as_ref().unwrap().as_ref().unwrap();
            sqlx::query("UPDATE people SET email = $3, note = $4 WHERE tenant_id = $1 AND id = $2")
                .bind(a.tenant().as_uuid())
                .bind(id)
                .bind(new_email)
                .bind(new_note.to_text())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert_eq!(progress.rewritten, 2 * ROWS as u64);
    assert_eq!(progress.failed, 0);
    assert_eq!(reports.len(), (ROWS as usize).div_ceil(BATCH as usize));
    assert!(reports.windows(2).all(|w| w[0].scanned < w[1].scanned));

    // Read everything back: A under version 2, B untouched under version 1.
    for (ctx, version) in [(&a, v2.get()), (&b, 1)] {
        let rows: Vec<(i64, Envelope, Envelope)> =
            sqlx::query_as("SELECT id, email, note FROM people WHERE tenant_id = $1 ORDER BY id")
                .bind(ctx.tenant().as_uuid())
                .fetch_all(db)
                .await
                .unwrap();
        assert_eq!(rows.len(), ROWS as usize);
        for (id, e, n) in rows {
            assert_eq!(e.key_version().get(), version);
            assert_eq!(
                keyring
                    .open(ctx, &email.row(id), &e)
                    .unwrap()
                    .expose_secret(),
                format!("user{id}@example.com").as_bytes()
            );
            assert_eq!(
                keyring
                    .open_string(ctx, &note.row(id), &n)
                    .unwrap()
                    .expose_secret(),
                format!("note {id}")
            );
        }
    }

    // Shred tenant A: its rows are still in the table, and none opens; B is unaffected.
    let report = keyring.shred_tenant(a.tenant()).unwrap();
    assert_eq!(report.versions_destroyed, 2);
    let rows: Vec<(i64, Envelope)> =
        sqlx::query_as("SELECT id, email FROM people WHERE tenant_id = $1")
            .bind(a.tenant().as_uuid())
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(rows.len(), ROWS as usize);
    for (id, e) in &rows {
        assert!(matches!(
            keyring.open(&a, &email.row(*id), e),
            Err(CryptoError::KeyDestroyed)
        ));
    }
    let (id, e): (i64, Envelope) =
        sqlx::query_as("SELECT id, email FROM people WHERE tenant_id = $1 AND id = 42")
            .bind(b.tenant().as_uuid())
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(
        keyring
            .open(&b, &email.row(id), &e)
            .unwrap()
            .expose_secret(),
        b"user42@example.com"
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn a_malformed_stored_envelope_is_a_decode_error_not_a_panic() {
    let Some(fx) = PgFixture::new("cryptobad").await else {
        return;
    };
    let r: Result<Envelope, _> = sqlx::query_scalar("SELECT '\\x4e5601'::bytea")
        .fetch_one(fx.admin())
        .await;
    assert!(r.is_err());
    let r: Result<Envelope, _> = sqlx::query_scalar("SELECT 'nv1:AAAA'::text")
        .fetch_one(fx.admin())
        .await;
    assert!(r.is_err());
    fx.cleanup().await;
}

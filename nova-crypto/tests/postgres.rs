//! Envelopes stored in PostgreSQL through sqlx (`BYTEA` and `TEXT` columns), key rotation
//! with batched re-encryption, and crypto-shredding one tenant while another is untouched —
//! against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use nova_crypto::{
    Column, CryptoError, Envelope, InMemoryTenantKeyStore, Keyring, LocalKeyProvider,
    PgTenantKeyStore, ReencryptProgress, normalize,
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
    let v2 = keyring.rotate_tenant(a.tenant()).await.unwrap();
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
    let report = keyring.shred_tenant(a.tenant()).await.unwrap();
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

fn provider() -> Arc<LocalKeyProvider> {
    // The same KEK in every "process", as a KMS would give it.
    Arc::new(
        LocalKeyProvider::from_base64("root", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .unwrap(),
    )
}

#[tokio::test]
async fn tenant_keys_in_postgres_survive_a_restart_and_shredding_reaches_other_processes() {
    let Some(fx) = PgFixture::new("cryptokeys").await else {
        return;
    };
    let schema = nova_tenancy::Ident::new("keys").unwrap();
    fx.exec(&PgTenantKeyStore::schema_sql(&schema)).await;
    let col = Column::new("people", "email").unwrap();
    let (a, b) = (
        TenantContext::system(TenantId::new_v4(), "pg key store test").unwrap(),
        TenantContext::system(TenantId::new_v4(), "pg key store test").unwrap(),
    );

    // Process 1.
    let store1 = Arc::new(
        PgTenantKeyStore::open(fx.admin().clone(), &schema)
            .await
            .unwrap(),
    );
    let kr1 = Keyring::new(provider(), store1.clone(), "root").unwrap();
    assert!(matches!(
        kr1.seal(&a, &col.row(1_i64), b"x"),
        Err(CryptoError::TenantNotProvisioned)
    ));
    assert_eq!(kr1.provision_tenant(a.tenant()).await.unwrap().get(), 1);
    assert_eq!(
        kr1.provision_tenant(a.tenant()).await.unwrap().get(),
        1,
        "idempotent"
    );
    kr1.provision_tenant(b.tenant()).await.unwrap();
    let e1 = kr1.seal(&a, &col.row(1_i64), b"v1 secret").unwrap();
    assert_eq!(kr1.rotate_tenant(a.tenant()).await.unwrap().get(), 2);
    let e2 = kr1.seal(&a, &col.row(2_i64), b"v2 secret").unwrap();
    let eb = kr1.seal(&b, &col.row(1_i64), b"b secret").unwrap();

    // Process 2, after a "restart": everything still opens.
    let store2 = Arc::new(
        PgTenantKeyStore::open(fx.admin().clone(), &schema)
            .await
            .unwrap(),
    );
    let kr2 = Keyring::new(provider(), store2.clone(), "root").unwrap();
    assert_eq!(
        kr2.open(&a, &col.row(1_i64), &e1).unwrap().expose_secret(),
        b"v1 secret"
    );
    assert_eq!(
        kr2.open(&a, &col.row(2_i64), &e2).unwrap().expose_secret(),
        b"v2 secret"
    );

    // Process 2 shreds tenant A; process 1 sees it after a refresh.
    assert_eq!(
        kr2.shred_tenant(a.tenant())
            .await
            .unwrap()
            .versions_destroyed,
        2
    );
    assert!(matches!(
        kr2.open(&a, &col.row(1_i64), &e1),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(
        kr1.open(&a, &col.row(1_i64), &e1).is_ok(),
        "not refreshed yet"
    );
    store1.refresh().await.unwrap();
    assert!(matches!(
        kr1.open(&a, &col.row(1_i64), &e1),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        kr1.rotate_tenant(a.tenant()).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        kr1.open(&b, &col.row(1_i64), &eb).unwrap().expose_secret(),
        b"b secret"
    );
    let salts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM keys.nova_tenant_keys WHERE tenant_id = $1 AND salt IS NOT NULL",
    )
    .bind(a.tenant().as_uuid())
    .fetch_one(fx.admin())
    .await
    .unwrap();
    assert_eq!(
        salts, 0,
        "the salts are erased in the database, not only in memory"
    );

    // Two processes provisioning a new tenant at once agree on one key (repeated, so the
    // race actually happens).
    for _ in 0..20 {
        let c = TenantId::new_v4();
        let (r1, r2) = tokio::join!(kr1.provision_tenant(c), kr2.provision_tenant(c));
        assert_eq!(r1.unwrap(), r2.unwrap());
        store1.refresh().await.unwrap();
        store2.refresh().await.unwrap();
        let cc = TenantContext::system(c, "pg key store test").unwrap();
        let ec = kr1.seal(&cc, &col.row(1_i64), b"c").unwrap();
        assert_eq!(
            kr2.open(&cc, &col.row(1_i64), &ec).unwrap().expose_secret(),
            b"c"
        );
        // Rotation racing shredding never leaves a live salt behind a shredded tenant.
        let (rot, shred) = tokio::join!(kr1.rotate_tenant(c), kr2.shred_tenant(c));
        shred.unwrap();
        let _ = rot;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM keys.nova_tenant_keys WHERE tenant_id = $1 AND salt IS NOT NULL",
        )
        .bind(c.as_uuid())
        .fetch_one(fx.admin())
        .await
        .unwrap();
        assert_eq!(live, 0, "a shredded tenant kept a salt");
    }
    fx.cleanup().await;
}

#[tokio::test]
async fn both_envelope_kinds_bind_to_and_read_from_text_columns() {
    use nova_crypto::{InMemorySubjectKeyStore, SubjectEnvelope, SubjectKeys, TextColumn};
    let Some(fx) = PgFixture::new("cryptotext").await else {
        return;
    };
    fx.exec(
        "CREATE TABLE sealed (id bigint PRIMARY KEY, field text NOT NULL, personal text NOT NULL)",
    )
    .await;
    let keyring = Arc::new(
        Keyring::new(
            Arc::new(LocalKeyProvider::generated("root").unwrap()),
            Arc::new(InMemoryTenantKeyStore::new()),
            "root",
        )
        .unwrap(),
    );
    let subjects = SubjectKeys::new(keyring.clone(), Arc::new(InMemorySubjectKeyStore::new()));
    let ctx = TenantContext::system(TenantId::new_v4(), "text columns").unwrap();
    let field = Column::new("sealed", "field").unwrap();
    let personal = Column::new("sealed", "personal").unwrap();
    let alice = uuid::Uuid::new_v4();
    let e = keyring
        .seal(&ctx, &field.row(1_i64), b"tenant secret")
        .unwrap();
    let p = subjects
        .seal(&ctx, alice, &personal.row(1_i64), b"alice's phone")
        .await
        .unwrap();
    sqlx::query("INSERT INTO sealed VALUES (1, $1, $2)")
        .bind(TextColumn(&e))
        .bind(TextColumn(&p))
        .execute(fx.admin())
        .await
        .unwrap();
    // Stored in the text forms, which are what the envelopes print.
    let (raw_field, raw_personal): (String, String) =
        sqlx::query_as("SELECT field, personal FROM sealed WHERE id = 1")
            .fetch_one(fx.admin())
            .await
            .unwrap();
    assert_eq!(raw_field, e.to_text());
    assert_eq!(raw_personal, p.to_text());
    let (TextColumn(back_e), TextColumn(back_p)): (
        TextColumn<Envelope>,
        TextColumn<SubjectEnvelope>,
    ) = sqlx::query_as("SELECT field, personal FROM sealed WHERE id = 1")
        .fetch_one(fx.admin())
        .await
        .unwrap();
    let opened = keyring.open(&ctx, &field.row(1_i64), &back_e).unwrap();
    assert_eq!(opened.expose_secret(), b"tenant secret");
    let opened = subjects
        .open(&ctx, alice, &personal.row(1_i64), &back_p)
        .await
        .unwrap();
    assert_eq!(opened.expose_secret(), b"alice's phone");
    // A text column that holds something else does not decode.
    let bad = sqlx::query_scalar::<_, TextColumn<Envelope>>("SELECT 'nv1:not-an-envelope'::text")
        .fetch_one(fx.admin())
        .await;
    assert!(
        matches!(bad, Err(sqlx::Error::ColumnDecode { .. })),
        "{bad:?}"
    );
    fx.cleanup().await;
}

//! Per-subject crypto-shredding through the public API: a subject's fields open only in
//! their own tenant, subject, table, column and row; shredding one subject destroys exactly
//! that subject's fields (and refuses new ones); shredding the tenant takes its subjects
//! with it; racing first seals converge on one key; and the PostgreSQL store does the same
//! against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use nova_crypto::{
    Column, CryptoError, DecodeError, Envelope, InMemorySubjectKeyStore, InMemoryTenantKeyStore,
    Keyring, LocalKeyProvider, PgSubjectKeyStore, SUBJECT_TEXT_PREFIX, StoreFuture,
    SubjectEnvelope, SubjectKeyLookup, SubjectKeyStore, SubjectKeys,
};
use nova_tenancy::testing::PgFixture;
use nova_tenancy::{AuditHook, Ident, SecurityEvent, TenantContext, TenantId};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use uuid::Uuid;

/// Fixed part of a subject envelope: version, subject, commitment, nonce, tag.
const OVERHEAD: usize = 1 + 16 + 32 + 12 + 16;

fn keyring() -> Arc<Keyring> {
    Arc::new(
        Keyring::new(
            Arc::new(LocalKeyProvider::generated("root").unwrap()),
            Arc::new(InMemoryTenantKeyStore::new()),
            "root",
        )
        .unwrap(),
    )
}

fn ctx() -> TenantContext {
    TenantContext::system(TenantId::new_v4(), "subject test").unwrap()
}

struct Setup {
    keyring: Arc<Keyring>,
    store: Arc<InMemorySubjectKeyStore>,
    subjects: SubjectKeys,
}

fn setup() -> Setup {
    let keyring = keyring();
    let store = Arc::new(InMemorySubjectKeyStore::new());
    let subjects = SubjectKeys::new(keyring.clone(), store.clone());
    Setup {
        keyring,
        store,
        subjects,
    }
}

/// The subject's key in the clear, recovered the way an attacker holding every key would.
async fn unwrapped_subject_key(s: &Setup, ctx: &TenantContext, subject: Uuid) -> (String, Vec<u8>) {
    let SubjectKeyLookup::Found(wrapped) = s.store.get(ctx.tenant(), subject).await.unwrap() else {
        panic!("subject has no key");
    };
    let wrap_col = Column::new("nova_subject_keys", "key").unwrap();
    let key = s
        .keyring
        .open(
            ctx,
            &wrap_col.row(subject),
            &Envelope::from_text(&wrapped).unwrap(),
        )
        .unwrap();
    (wrapped, key.expose_secret().to_vec())
}

#[tokio::test]
async fn a_sealed_field_opens_for_its_subject_tenant_and_location() {
    let s = setup();
    let ctx = ctx();
    let phone = Column::new("patients", "phone").unwrap();
    let alice = Uuid::new_v4();

    let env = s
        .subjects
        .seal(&ctx, alice, &phone.row(7_i64), b"+44 20 7946 0000")
        .await
        .unwrap();
    assert_eq!(env.subject(), alice);
    assert_eq!(env.plaintext_len(), 16);
    assert_eq!(env.as_bytes().len(), OVERHEAD + 16);
    assert!(env.to_text().starts_with(SUBJECT_TEXT_PREFIX));

    let opened = s
        .subjects
        .open(&ctx, alice, &phone.row(7_i64), &env)
        .await
        .unwrap();
    assert_eq!(opened.expose_secret(), b"+44 20 7946 0000");
    let text = s
        .subjects
        .open_string(&ctx, alice, &phone.row(7_i64), &env)
        .await
        .unwrap();
    assert_eq!(text.expose_secret(), "+44 20 7946 0000");

    // Through both stored forms.
    let from_text = SubjectEnvelope::from_text(&env.to_text()).unwrap();
    let from_bytes = SubjectEnvelope::from_bytes(env.as_bytes()).unwrap();
    assert_eq!(from_text, env);
    assert_eq!(from_bytes, env);

    // A second field of the same subject reuses the subject's one key; the nonce is fresh.
    let again = s
        .subjects
        .seal(&ctx, alice, &phone.row(7_i64), b"+44 20 7946 0000")
        .await
        .unwrap();
    assert_ne!(again.as_bytes(), env.as_bytes());
    assert_eq!(
        again.as_bytes()[..49],
        env.as_bytes()[..49],
        "same commitment"
    );
}

#[tokio::test]
async fn an_empty_field_round_trips_and_an_oversized_one_is_refused() {
    let s = setup();
    let ctx = ctx();
    let col = Column::new("t", "c").unwrap();
    let subject = Uuid::new_v4();
    let env = s
        .subjects
        .seal(&ctx, subject, &col.row(1_i64), b"")
        .await
        .unwrap();
    assert_eq!(env.plaintext_len(), 0);
    assert!(
        s.subjects
            .open(&ctx, subject, &col.row(1_i64), &env)
            .await
            .unwrap()
            .expose_secret()
            .is_empty()
    );
    let big = vec![0u8; (16 << 20) - OVERHEAD + 1];
    assert!(matches!(
        s.subjects.seal(&ctx, subject, &col.row(1_i64), &big).await,
        Err(CryptoError::TooLarge(_))
    ));
}

#[tokio::test]
async fn an_envelope_does_not_open_for_another_tenant_subject_row_or_column_or_when_changed() {
    let s = setup();
    let (a, b) = (ctx(), ctx());
    let email = Column::new("people", "email").unwrap();
    let phone = Column::new("people", "phone").unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let env = s
        .subjects
        .seal(&a, alice, &email.row(1_i64), b"alice@example.com")
        .await
        .unwrap();
    // Bob has a key in tenant A, and Alice's id has a key in tenant B too.
    s.subjects
        .seal(&a, bob, &email.row(2_i64), b"bob@example.com")
        .await
        .unwrap();
    let in_b = s
        .subjects
        .seal(&b, alice, &email.row(1_i64), b"other tenant")
        .await
        .unwrap();

    let auth = |r: Result<secrecy::SecretBox<[u8]>, CryptoError>| {
        matches!(r, Err(CryptoError::Authentication))
    };
    assert!(auth(
        s.subjects.open(&b, alice, &email.row(1_i64), &env).await
    ));
    assert!(auth(
        s.subjects.open(&a, alice, &email.row(1_i64), &in_b).await
    ));
    assert!(auth(
        s.subjects.open(&a, bob, &email.row(1_i64), &env).await
    ));
    assert!(auth(
        s.subjects.open(&a, alice, &email.row(2_i64), &env).await
    ));
    assert!(auth(
        s.subjects.open(&a, alice, &email.row("1"), &env).await
    ));
    assert!(auth(
        s.subjects.open(&a, alice, &phone.row(1_i64), &env).await
    ));
    // A tenant that never saw this subject.
    let c = ctx();
    assert!(auth(
        s.subjects.open(&c, alice, &email.row(1_i64), &env).await
    ));

    // Every single-bit change in every byte is refused: by the decoder (version) or by
    // the subject check, the key commitment or GCM.
    let bytes = env.as_bytes().to_vec();
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        match SubjectEnvelope::from_bytes(&changed) {
            Err(e) => assert_eq!(e, DecodeError::UnsupportedVersion(0), "byte {i}"),
            Ok(forged) => assert!(
                auth(s.subjects.open(&a, alice, &email.row(1_i64), &forged).await),
                "byte {i} accepted"
            ),
        }
    }
    // Re-labelling the envelope as Bob's does not make it Bob's.
    let mut relabelled = bytes.clone();
    relabelled[1..17].copy_from_slice(bob.as_bytes());
    let relabelled = SubjectEnvelope::from_bytes(&relabelled).unwrap();
    assert!(auth(
        s.subjects
            .open(&a, bob, &email.row(1_i64), &relabelled)
            .await
    ));
    // Cut short: a decode error.
    assert!(SubjectEnvelope::from_bytes(&bytes[..OVERHEAD - 1]).is_err());
}

#[tokio::test]
async fn a_wrapped_subject_key_copied_to_another_subject_does_not_open() {
    let s = setup();
    let ctx = ctx();
    let col = Column::new("t", "c").unwrap();
    let (alice, mallory) = (Uuid::new_v4(), Uuid::new_v4());
    let env = s
        .subjects
        .seal(&ctx, alice, &col.row(1_i64), b"alice's secret")
        .await
        .unwrap();
    let SubjectKeyLookup::Found(wrapped) = s.store.get(ctx.tenant(), alice).await.unwrap() else {
        panic!("no key for alice");
    };
    // Someone with write access to the key store plants Alice's wrapped key under Mallory.
    s.store
        .insert_if_absent(ctx.tenant(), mallory, wrapped)
        .await
        .unwrap();
    let mut as_mallory = env.as_bytes().to_vec();
    as_mallory[1..17].copy_from_slice(mallory.as_bytes());
    let as_mallory = SubjectEnvelope::from_bytes(&as_mallory).unwrap();
    assert!(matches!(
        s.subjects
            .open(&ctx, mallory, &col.row(1_i64), &as_mallory)
            .await,
        Err(CryptoError::Authentication)
    ));
}

#[tokio::test]
async fn shredding_a_subject_destroys_its_fields_refuses_new_ones_and_spares_the_others() {
    let s = setup();
    let (ctx, other_tenant) = (ctx(), ctx());
    let col = Column::new("people", "name").unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let a1 = s
        .subjects
        .seal(&ctx, alice, &col.row(1_i64), b"Alice")
        .await
        .unwrap();
    let b1 = s
        .subjects
        .seal(&ctx, bob, &col.row(2_i64), b"Bob")
        .await
        .unwrap();
    let a_elsewhere = s
        .subjects
        .seal(&other_tenant, alice, &col.row(1_i64), b"Alice elsewhere")
        .await
        .unwrap();
    // Open once first, so that a cache (if there were one) would hold the key.
    s.subjects
        .open(&ctx, alice, &col.row(1_i64), &a1)
        .await
        .unwrap();

    assert!(s.subjects.shred(&ctx, alice).await.unwrap());

    assert!(matches!(
        s.subjects.open(&ctx, alice, &col.row(1_i64), &a1).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        s.subjects
            .open_string(&ctx, alice, &col.row(1_i64), &a1)
            .await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        s.subjects
            .seal(&ctx, alice, &col.row(3_i64), b"Alice again")
            .await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        s.store.get(ctx.tenant(), alice).await.unwrap(),
        SubjectKeyLookup::Destroyed
    );
    assert_eq!(
        s.subjects
            .open(&ctx, bob, &col.row(2_i64), &b1)
            .await
            .unwrap()
            .expose_secret(),
        b"Bob"
    );
    assert_eq!(
        s.subjects
            .open(&other_tenant, alice, &col.row(1_i64), &a_elsewhere)
            .await
            .unwrap()
            .expose_secret(),
        b"Alice elsewhere",
        "the same subject id in another tenant is another subject"
    );
    // Shredding again, or shredding a subject that never had a key, leaves a tombstone
    // and says nothing was erased.
    assert!(!s.subjects.shred(&ctx, alice).await.unwrap());
    let never = Uuid::new_v4();
    assert!(!s.subjects.shred(&ctx, never).await.unwrap());
    assert!(matches!(
        s.subjects.seal(&ctx, never, &col.row(9_i64), b"x").await,
        Err(CryptoError::KeyDestroyed)
    ));
}

#[tokio::test]
async fn shredding_the_tenant_takes_its_subjects_with_it() {
    let s = setup();
    let (a, b) = (ctx(), ctx());
    let col = Column::new("people", "name").unwrap();
    let alice = Uuid::new_v4();
    let in_a = s
        .subjects
        .seal(&a, alice, &col.row(1_i64), b"Alice in A")
        .await
        .unwrap();
    let in_b = s
        .subjects
        .seal(&b, alice, &col.row(1_i64), b"Alice in B")
        .await
        .unwrap();

    s.keyring.shred_tenant(a.tenant()).await.unwrap();

    assert!(matches!(
        s.subjects.open(&a, alice, &col.row(1_i64), &in_a).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        s.subjects
            .seal(&a, Uuid::new_v4(), &col.row(2_i64), b"new subject")
            .await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        s.subjects
            .open(&b, alice, &col.row(1_i64), &in_b)
            .await
            .unwrap()
            .expose_secret(),
        b"Alice in B"
    );
}

/// An in-memory store whose first two lookups wait for each other, so two first seals
/// both see "no key yet" and both try to insert one.
struct RacingStore {
    inner: InMemorySubjectKeyStore,
    barrier: tokio::sync::Barrier,
    gets: AtomicUsize,
    inserts: AtomicUsize,
}

impl SubjectKeyStore for RacingStore {
    fn get(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, SubjectKeyLookup> {
        Box::pin(async move {
            let found = self.inner.get(tenant, subject).await;
            if self.gets.fetch_add(1, Ordering::SeqCst) < 2 {
                self.barrier.wait().await;
            }
            found
        })
    }

    fn insert_if_absent(
        &self,
        tenant: TenantId,
        subject: Uuid,
        wrapped: String,
    ) -> StoreFuture<'_, SubjectKeyLookup> {
        self.inserts.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_if_absent(tenant, subject, wrapped)
    }

    fn destroy(&self, tenant: TenantId, subject: Uuid) -> StoreFuture<'_, bool> {
        self.inner.destroy(tenant, subject)
    }
}

#[tokio::test]
async fn two_racing_first_seals_for_one_subject_converge_on_one_key() {
    let keyring = keyring();
    let store = Arc::new(RacingStore {
        inner: InMemorySubjectKeyStore::new(),
        barrier: tokio::sync::Barrier::new(2),
        gets: AtomicUsize::new(0),
        inserts: AtomicUsize::new(0),
    });
    let subjects = SubjectKeys::new(keyring.clone(), store.clone());
    let ctx = ctx();
    let col = Column::new("people", "name").unwrap();
    let subject = Uuid::new_v4();

    let (row1, row2) = (col.row(1_i64), col.row(2_i64));
    let (one, two) = tokio::join!(
        subjects.seal(&ctx, subject, &row1, b"first replica"),
        subjects.seal(&ctx, subject, &row2, b"second replica"),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(
        store.inserts.load(Ordering::SeqCst),
        2,
        "both seals raced to create the key"
    );

    // A fresh handle (another replica) opens both with the one stored key.
    let other = SubjectKeys::new(keyring, store.clone());
    assert_eq!(
        other
            .open(&ctx, subject, &col.row(1_i64), &one)
            .await
            .unwrap()
            .expose_secret(),
        b"first replica"
    );
    assert_eq!(
        other
            .open(&ctx, subject, &col.row(2_i64), &two)
            .await
            .unwrap()
            .expose_secret(),
        b"second replica"
    );
}

fn contains_bytes_in_any_common_form(haystack: &str, bytes: &[u8]) -> bool {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let list = format!("{bytes:?}");
    let list = &list[1..list.len() - 1]; // without brackets
    [hex.as_str(), &hex.to_uppercase(), &b64, &b64url, list]
        .iter()
        .any(|form| haystack.contains(form))
}

#[tokio::test]
async fn debug_output_never_shows_key_bytes_wrapped_keys_or_plaintext() {
    let s = setup();
    let ctx = ctx();
    let col = Column::new("people", "diagnosis").unwrap();
    let subject = Uuid::new_v4();
    let env = s
        .subjects
        .seal(&ctx, subject, &col.row(1_i64), b"very private diagnosis")
        .await
        .unwrap();
    let (wrapped, key) = unwrapped_subject_key(&s, &ctx, subject).await;
    assert_eq!(key.len(), 32);
    let lookup = s.store.get(ctx.tenant(), subject).await.unwrap();

    for (what, debug) in [
        ("SubjectKeys", format!("{:?}", s.subjects)),
        ("SubjectKeys (pretty)", format!("{:#?}", s.subjects)),
        ("SubjectEnvelope", format!("{env:?}")),
        ("SubjectEnvelope (pretty)", format!("{env:#?}")),
        ("InMemorySubjectKeyStore", format!("{:?}", s.store)),
        ("SubjectKeyLookup", format!("{lookup:?}")),
    ] {
        assert!(
            !contains_bytes_in_any_common_form(&debug, &key),
            "{what} shows the subject key: {debug}"
        );
        assert!(!debug.contains(&wrapped), "{what} shows the wrapped key");
        assert!(
            !debug.contains(&wrapped[4..24]),
            "{what} shows part of the wrapped key"
        );
        assert!(!debug.contains("very private"), "{what} shows plaintext");
        assert!(
            !contains_bytes_in_any_common_form(&debug, &env.as_bytes()[49..]),
            "{what} shows ciphertext"
        );
    }
    // What Debug does show is the useful part.
    assert!(format!("{env:?}").contains(&subject.to_string()));
    assert_eq!(format!("{lookup:?}"), "Found([REDACTED])");
}

/// Records `subject_crypto_shred` events (the hook is process-wide, so set once).
struct Recorder(Mutex<Vec<String>>);

impl AuditHook for Recorder {
    fn record(&self, event: &SecurityEvent<'_>) {
        if event.name() == "subject_crypto_shred" {
            let details: Vec<String> = event
                .detail_values()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.0.lock().unwrap().push(format!(
                "{:?} {}",
                event.tenant_id().map(|t| t.to_string()),
                details.join(" ")
            ));
        }
    }
}

fn recorder() -> &'static Arc<Recorder> {
    static R: OnceLock<Arc<Recorder>> = OnceLock::new();
    R.get_or_init(|| {
        let r = Arc::new(Recorder(Mutex::new(Vec::new())));
        nova_tenancy::set_audit_hook(r.clone())
            .ok()
            .expect("no other hook in this test binary");
        r
    })
}

#[tokio::test]
async fn shredding_a_subject_is_reported_as_a_security_event() {
    let recorder = recorder();
    let s = setup();
    let ctx = ctx();
    let col = Column::new("t", "c").unwrap();
    let subject = Uuid::new_v4();
    s.subjects
        .seal(&ctx, subject, &col.row(1_i64), b"x")
        .await
        .unwrap();
    assert!(s.subjects.shred(&ctx, subject).await.unwrap());
    let events = recorder.0.lock().unwrap().clone();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.contains(&subject.to_string()))
        .collect();
    assert_eq!(ours.len(), 1, "{events:?}");
    assert!(ours[0].contains(&ctx.tenant().to_string()));
    assert!(ours[0].contains("existed=true"));
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let decoded = SubjectEnvelope::from_bytes(&bytes);
        prop_assert_eq!(decoded.is_ok(), bytes.len() >= OVERHEAD && bytes[0] == 1);
        if let Ok(env) = decoded {
            prop_assert_eq!(env.as_bytes(), &bytes[..]);
            prop_assert_eq!(env.plaintext_len(), bytes.len() - OVERHEAD);
        }
    }

    #[test]
    fn decoding_arbitrary_text_never_panics(
        text in ".{0,200}",
        body in "[A-Za-z0-9_=+/-]{0,200}",
        near in "A[Q-T][A-Za-z0-9_-]{100,160}",
    ) {
        prop_assert!(SubjectEnvelope::from_text(&text).is_err() || text.starts_with("ns1:"));
        // Bodies of the right alphabet and size, starting with version 1 (`AQ`..`AT`), so
        // that a good share decode and the round trip below is exercised.
        for body in [body, near] {
            let framed = format!("ns1:{body}");
            if let Ok(env) = SubjectEnvelope::from_text(&framed) {
                // Only canonical base64url decodes, so what decodes re-encodes identically.
                prop_assert_eq!(env.to_text(), framed);
            }
        }
    }

    #[test]
    fn valid_envelopes_round_trip_through_both_forms(
        subject in any::<u128>(),
        rest in proptest::collection::vec(any::<u8>(), OVERHEAD - 17..300),
    ) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(Uuid::from_u128(subject).as_bytes());
        bytes.extend_from_slice(&rest);
        let env = SubjectEnvelope::from_bytes(&bytes).unwrap();
        prop_assert_eq!(env.subject(), Uuid::from_u128(subject));
        let text = env.to_text();
        let back = SubjectEnvelope::from_text(&text).unwrap();
        prop_assert_eq!(back.as_bytes(), &bytes[..]);
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(SubjectEnvelope::from_bytes(back.as_bytes()).unwrap(), env.clone());
        prop_assert_eq!(env.into_bytes(), bytes);
    }
}

#[tokio::test]
async fn postgres_subject_store_converges_racing_inserts_keeps_tombstones_and_shreds() {
    let Some(fx) = PgFixture::new("cryptosubject").await else {
        return;
    };
    let store = Arc::new(PgSubjectKeyStore::new(
        fx.admin().clone(),
        Some(Ident::new("keys").unwrap()),
        Ident::new("subject_keys").unwrap(),
    ));
    fx.exec(&store.create_table_sql()).await;
    fx.exec(&store.create_table_sql()).await; // idempotent
    let db = fx.admin();
    let tenant = TenantId::new_v4();

    // The store alone: two racing inserts both come back with the one stored value.
    let s1 = Uuid::new_v4();
    assert_eq!(
        store.get(tenant, s1).await.unwrap(),
        SubjectKeyLookup::Missing
    );
    let (x, y) = tokio::join!(
        store.insert_if_absent(tenant, s1, "nv1:first".into()),
        store.insert_if_absent(tenant, s1, "nv1:second".into()),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert!(matches!(&x, SubjectKeyLookup::Found(w) if w == "nv1:first" || w == "nv1:second"));
    assert_eq!(store.get(tenant, s1).await.unwrap(), x);
    assert_eq!(
        store.get(TenantId::new_v4(), s1).await.unwrap(),
        SubjectKeyLookup::Missing,
        "keyed by tenant and subject"
    );

    // Destroy leaves a tombstone that refuses new keys.
    assert!(store.destroy(tenant, s1).await.unwrap());
    assert!(!store.destroy(tenant, s1).await.unwrap());
    assert_eq!(
        store.get(tenant, s1).await.unwrap(),
        SubjectKeyLookup::Destroyed
    );
    assert_eq!(
        store
            .insert_if_absent(tenant, s1, "nv1:third".into())
            .await
            .unwrap(),
        SubjectKeyLookup::Destroyed
    );
    let never = Uuid::new_v4();
    assert!(!store.destroy(tenant, never).await.unwrap());
    assert_eq!(
        store
            .insert_if_absent(tenant, never, "nv1:late".into())
            .await
            .unwrap(),
        SubjectKeyLookup::Destroyed
    );
    let (wrapped_left, tombstones): (i64, i64) = sqlx::query_as(
        "SELECT count(wrapped), count(destroyed_at) FROM keys.subject_keys WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((wrapped_left, tombstones), (0, 2));

    // Through SubjectKeys: racing first seals, storage in BYTEA, shredding.
    let keyring = keyring();
    let subjects = SubjectKeys::new(keyring.clone(), store.clone());
    let ctx = ctx();
    let col = Column::new("people", "name").unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (row1, row2) = (col.row(1_i64), col.row(2_i64));
    let (a1, a2) = tokio::join!(
        subjects.seal(&ctx, alice, &row1, b"Alice one"),
        subjects.seal(&ctx, alice, &row2, b"Alice two"),
    );
    let (a1, a2) = (a1.unwrap(), a2.unwrap());
    let b1 = subjects
        .seal(&ctx, bob, &col.row(3_i64), b"Bob")
        .await
        .unwrap();
    let restored: SubjectEnvelope = sqlx::query_scalar("SELECT $1::bytea")
        .bind(&a1)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(restored, a1);
    let restored_text: SubjectEnvelope = sqlx::query_scalar("SELECT $1::text")
        .bind(a2.to_text())
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(restored_text, a2);

    let replica = SubjectKeys::new(keyring.clone(), store.clone());
    for (row, env, want) in [(1_i64, &a1, "Alice one"), (2, &a2, "Alice two")] {
        assert_eq!(
            replica
                .open_string(&ctx, alice, &col.row(row), env)
                .await
                .unwrap()
                .expose_secret(),
            want
        );
    }
    assert!(replica.shred(&ctx, alice).await.unwrap());
    // The other handle sees it at once: nothing is cached.
    assert!(matches!(
        subjects.open(&ctx, alice, &col.row(1_i64), &a1).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        subjects.seal(&ctx, alice, &col.row(4_i64), b"again").await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        subjects
            .open(&ctx, bob, &col.row(3_i64), &b1)
            .await
            .unwrap()
            .expose_secret(),
        b"Bob"
    );
    let alice_row: (Option<String>, bool) = sqlx::query_as(
        "SELECT wrapped, destroyed_at IS NOT NULL FROM keys.subject_keys WHERE tenant_id = $1 AND subject_id = $2",
    )
    .bind(ctx.tenant().as_uuid())
    .bind(alice)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(alice_row, (None, true));
    assert!(!format!("{store:?}").contains("postgres://"));

    fx.cleanup().await;
}

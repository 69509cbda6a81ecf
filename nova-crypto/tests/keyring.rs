//! The keyring's guarantees, through the public API only: round trips, binding to tenant,
//! table, column and row, tamper detection, key commitment, rotation and shredding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nova_crypto::{
    Column, CryptoError, Envelope, InMemoryTenantKeyStore, KeyProvider, Keyring, LocalKeyProvider,
    ReencryptProgress, RotationPolicy, RotationSubject, RowId, normalize,
};
use nova_tenancy::{TenantContext, TenantId};
use proptest::prelude::*;
use secrecy::ExposeSecret;

/// Drives an async key-management call from a synchronous test.
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn keyring() -> (Keyring, Arc<LocalKeyProvider>) {
    let provider = Arc::new(LocalKeyProvider::generated("root").unwrap());
    let keyring = Keyring::new(
        Arc::clone(&provider) as Arc<dyn KeyProvider>,
        Arc::new(InMemoryTenantKeyStore::new()),
        "root",
    )
    .unwrap();
    (keyring, provider)
}

fn ctx(t: TenantId) -> TenantContext {
    TenantContext::system(t, "keyring tests").unwrap()
}

#[test]
fn sealed_field_opens_only_at_its_own_tenant_table_column_and_row() {
    let (kr, _) = keyring();
    let (a, b) = (ctx(TenantId::new_v4()), ctx(TenantId::new_v4()));
    let email = Column::new("users", "email").unwrap();
    let phone = Column::new("users", "phone").unwrap();
    let other_table = Column::new("contacts", "email").unwrap();
    let env = kr
        .seal(&a, &email.row(1_i64), b"alice@example.com")
        .unwrap();
    assert_eq!(
        kr.open(&a, &email.row(1_i64), &env)
            .unwrap()
            .expose_secret(),
        b"alice@example.com"
    );
    // Tenant B has its own key (create one so the failure is not just "no key").
    kr.seal(&b, &email.row(1_i64), b"x").unwrap();
    for (c, field) in [
        (&b, email.row(1_i64)),
        (&a, email.row(2_i64)),
        (&a, email.row("1")),
        (&a, phone.row(1_i64)),
        (&a, other_table.row(1_i64)),
    ] {
        let err = kr.open(c, &field, &env).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication), "{err:?}");
    }
}

#[test]
fn envelope_for_a_tenant_without_that_key_version_is_a_typed_error() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let env = kr.seal(&a, &col.row(1_i64), b"x").unwrap();
    let fresh = ctx(TenantId::new_v4());
    assert!(matches!(
        kr.open(&fresh, &col.row(1_i64), &env),
        Err(CryptoError::UnknownTenantKey(_))
    ));
}

#[test]
fn commitment_is_checked_so_one_envelope_cannot_open_under_two_keys() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let env = kr.seal(&a, &col.row(1_i64), b"secret").unwrap();
    // Re-point the envelope at the tenant's second key version: header, AD and commitment
    // all name version 1, so version 2 refuses it.
    run(kr.rotate_tenant(a.tenant())).unwrap();
    let mut bytes = env.as_bytes().to_vec();
    let at = 5 + 4 + 4; // magic..key id "root", KEK version; tenant key version follows
    bytes[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
    let moved = Envelope::from_bytes(&bytes).unwrap();
    assert!(matches!(
        kr.open(&a, &col.row(1_i64), &moved),
        Err(CryptoError::Authentication)
    ));
    // And a changed commitment alone is refused before decryption.
    let mut bytes = env.as_bytes().to_vec();
    let commit_at = 17 + 12;
    bytes[commit_at] ^= 1;
    assert!(matches!(
        kr.open(&a, &col.row(1_i64), &Envelope::from_bytes(&bytes).unwrap()),
        Err(CryptoError::Authentication)
    ));
}

#[test]
fn text_form_and_serde_round_trip() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let env = kr.seal(&a, &col.row(9_i64), b"hello").unwrap();
    let text = env.to_text();
    assert!(text.starts_with("nv1:"));
    let json = serde_json::to_string(&env).unwrap();
    let back: Envelope = serde_json::from_str(&json).unwrap();
    assert_eq!(back, env);
    assert_eq!(
        kr.open_string(&a, &col.row(9_i64), &Envelope::from_text(&text).unwrap())
            .unwrap()
            .expose_secret(),
        "hello"
    );
}

#[test]
fn rotation_new_versions_seal_old_versions_open_and_batches_report_progress() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let old: Vec<Envelope> = (0..5_i64)
        .map(|i| {
            kr.seal(&a, &col.row(i), format!("v{i}").as_bytes())
                .unwrap()
        })
        .collect();
    let v2 = run(kr.rotate_tenant(a.tenant())).unwrap();
    assert_eq!(v2.get(), 2);
    let new = kr.seal(&a, &col.row(99_i64), b"new").unwrap();
    assert_eq!(new.key_version(), v2);
    for (i, e) in old.iter().enumerate() {
        assert_eq!(e.key_version().get(), 1);
        let p = kr.open(&a, &col.row(i as i64), e).unwrap();
        assert_eq!(p.expose_secret(), format!("v{i}").as_bytes());
    }
    let mut progress = ReencryptProgress::default();
    let mut reports = 0;
    let mut items: Vec<_> = old
        .iter()
        .enumerate()
        .map(|(i, e)| (col.row(i as i64), e))
        .collect();
    items.push((col.row(99_i64), &new));
    let out = kr.reencrypt_batch(&a, items, &mut progress, |_| reports += 1);
    assert_eq!(reports, 1);
    assert_eq!(
        progress,
        ReencryptProgress {
            scanned: 6,
            rewritten: 5,
            already_current: 1,
            failed: 0
        }
    );
    for (i, r) in out.iter().take(5).enumerate() {
        let e = r.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(e.key_version(), v2);
        assert_eq!(
            kr.open(&a, &col.row(i as i64), e).unwrap().expose_secret(),
            format!("v{i}").as_bytes()
        );
    }
}

#[test]
fn kek_rotation_keeps_old_tenant_keys_and_new_tenant_keys_use_the_new_kek() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let e1 = kr.seal(&a, &col.row(1_i64), b"x").unwrap();
    let kek2 = kr.rotate_kek().unwrap();
    assert_eq!(kek2.get(), 2);
    assert_eq!(e1.kek_version().get(), 1);
    assert!(
        kr.open(&a, &col.row(1_i64), &e1).is_ok(),
        "old KEK version still decrypts"
    );
    run(kr.rotate_tenant(a.tenant())).unwrap();
    let e2 = kr.seal(&a, &col.row(1_i64), b"y").unwrap();
    assert_eq!(e2.kek_version(), kek2);
    // Re-encrypt, then retire KEK version 1: the old envelope is gone, the new one opens.
    let e1_new = kr.reencrypt(&a, &col.row(1_i64), &e1).unwrap().unwrap();
    assert!(matches!(
        kr.destroy_kek(kek2),
        Err(CryptoError::InvalidKeyOperation(_))
    ));
    kr.destroy_kek(e1.kek_version()).unwrap();
    assert!(matches!(
        kr.open(&a, &col.row(1_i64), &e1),
        Err(CryptoError::KekDestroyed { .. })
    ));
    assert_eq!(
        kr.open(&a, &col.row(1_i64), &e1_new)
            .unwrap()
            .expose_secret(),
        b"x"
    );
}

#[test]
fn shredding_a_tenant_makes_its_data_unreadable_and_leaves_others_alone() {
    let (kr, _) = keyring();
    let (a, b) = (ctx(TenantId::new_v4()), ctx(TenantId::new_v4()));
    let col = Column::new("t", "c").unwrap();
    let ea = kr.seal(&a, &col.row(1_i64), b"a").unwrap();
    run(kr.rotate_tenant(a.tenant())).unwrap();
    let ea2 = kr.seal(&a, &col.row(2_i64), b"a2").unwrap();
    let eb = kr.seal(&b, &col.row(1_i64), b"b").unwrap();
    let mut backup = Vec::new();
    kr.encrypt_stream(&a, "backup", &b"tenant a backup"[..], &mut backup)
        .unwrap();

    let report = run(kr.shred_tenant(a.tenant())).unwrap();
    assert_eq!(report.versions_destroyed, 2);
    for (row, e) in [(1_i64, &ea), (2, &ea2)] {
        assert!(matches!(
            kr.open(&a, &col.row(row), e),
            Err(CryptoError::KeyDestroyed)
        ));
    }
    assert!(matches!(
        kr.decrypt_stream(&a, "backup", &backup[..], &mut Vec::new()),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        kr.seal(&a, &col.row(3_i64), b"z"),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        kr.blind_index(&a, &col, "z"),
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        kr.open(&b, &col.row(1_i64), &eb).unwrap().expose_secret(),
        b"b"
    );
}

#[test]
fn blind_index_is_per_tenant_and_column_normalised_and_survives_rotation_via_candidates() {
    let (kr, _) = keyring();
    let (a, b) = (ctx(TenantId::new_v4()), ctx(TenantId::new_v4()));
    let email = Column::new("users", "email")
        .unwrap()
        .with_normalizer(normalize::email);
    let backup_email = Column::new("users", "backup_email")
        .unwrap()
        .with_normalizer(normalize::email);
    let i1 = kr.blind_index(&a, &email, "Alice@Example.com ").unwrap();
    assert_eq!(i1, kr.blind_index(&a, &email, "alice@example.com").unwrap());
    assert_eq!(i1.as_bytes().len(), 16);
    assert_ne!(i1, kr.blind_index(&b, &email, "alice@example.com").unwrap());
    assert_ne!(
        i1,
        kr.blind_index(&a, &backup_email, "alice@example.com")
            .unwrap()
    );
    assert_ne!(i1, kr.blind_index(&a, &email, "bob@example.com").unwrap());
    run(kr.rotate_tenant(a.tenant())).unwrap();
    let candidates = kr
        .blind_index_candidates(&a, &email, "alice@example.com")
        .unwrap();
    assert_eq!(candidates.len(), 2);
    assert_eq!(
        candidates[1], i1,
        "the old version's index is still searchable"
    );
    let short = Column::new("users", "email")
        .unwrap()
        .with_index_len(8)
        .unwrap();
    assert_eq!(kr.blind_index(&a, &short, "x").unwrap().as_bytes().len(), 8);
    assert!(
        Column::new("users", "email")
            .unwrap()
            .with_index_len(4)
            .is_err()
    );
}

#[test]
fn rotation_report_names_due_keys() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    kr.seal(&a, &Column::new("t", "c").unwrap().row(1_i64), b"x")
        .unwrap();
    let policy = RotationPolicy::days(90, 14);
    assert!(
        kr.rotation_report(&policy, SystemTime::now())
            .unwrap()
            .is_empty()
    );
    let later = SystemTime::now() + Duration::from_secs(100 * 86_400);
    let due = kr.rotation_report(&policy, later).unwrap();
    assert_eq!(due.len(), 2);
    assert!(
        due.iter()
            .any(|d| matches!(d.subject, RotationSubject::Kek { .. }))
    );
    assert!(due.iter().any(
        |d| matches!(d.subject, RotationSubject::Tenant { tenant, .. } if tenant == a.tenant())
    ));
}

#[test]
fn nothing_secret_reaches_debug_output() {
    let (kr, provider) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let env = kr
        .seal(&a, &col.row(1_i64), b"very secret plaintext")
        .unwrap();
    let opened = kr.open(&a, &col.row(1_i64), &env).unwrap();
    for s in [
        format!("{kr:?}"),
        format!("{provider:?}"),
        format!("{env:?}"),
        format!("{opened:?}"),
    ] {
        assert!(!s.contains("very secret"), "{s}");
    }
    assert!(format!("{opened:?}").contains("REDACTED"));
}

#[test]
fn cache_is_bounded() {
    let (kr, _) = keyring();
    let kr = kr.with_cache_capacity(4);
    let a = ctx(TenantId::new_v4());
    for i in 0..10 {
        let col = Column::new("t", &format!("c{i}")).unwrap();
        let e = kr.seal(&a, &col.row(1_i64), b"x").unwrap();
        assert!(kr.open(&a, &col.row(1_i64), &e).is_ok());
    }
    assert!(kr.cached_keys() <= 4);
}

fn table_strategy() -> impl Strategy<Value = (String, String, RowId)> {
    (
        prop::sample::select(vec!["users", "tickets", "notes"]),
        prop::sample::select(vec!["email", "body", "ssn"]),
        prop_oneof![
            any::<i64>().prop_map(RowId::Int),
            any::<[u8; 16]>().prop_map(|b| RowId::Uuid(uuid::Uuid::from_bytes(b))),
            "[a-z0-9]{0,20}".prop_map(RowId::Text),
        ],
    )
        .prop_map(|(t, c, r)| (t.to_owned(), c.to_owned(), r))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_plaintext_round_trips_in_any_location(
        pt in prop::collection::vec(any::<u8>(), 0..2048),
        (table, column, row) in table_strategy(),
    ) {
        let (kr, _) = keyring();
        let a = ctx(TenantId::new_v4());
        let col = Column::new(&table, &column).unwrap();
        let env = kr.seal(&a, &col.row(row.clone()), &pt).unwrap();
        let back = Envelope::from_bytes(env.as_bytes()).unwrap();
        let opened = kr.open(&a, &col.row(row), &back).unwrap();
        prop_assert_eq!(opened.expose_secret(), &pt[..]);
    }

    #[test]
    fn flipping_any_bit_of_an_envelope_fails(
        pt in prop::collection::vec(any::<u8>(), 0..256),
        bit in any::<prop::sample::Index>(),
    ) {
        let (kr, _) = keyring();
        let a = ctx(TenantId::new_v4());
        let col = Column::new("t", "c").unwrap();
        let env = kr.seal(&a, &col.row(1_i64), &pt).unwrap();
        let mut bytes = env.as_bytes().to_vec();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        match Envelope::from_bytes(&bytes) {
            Err(_) => {}
            Ok(tampered) => prop_assert!(kr.open(&a, &col.row(1_i64), &tampered).is_err()),
        }
    }

    #[test]
    fn moving_an_envelope_to_any_other_location_fails(
        (t1, c1, r1) in table_strategy(),
        (t2, c2, r2) in table_strategy(),
        other_tenant in any::<bool>(),
    ) {
        let same_place = t1 == t2 && c1 == c2 && r1 == r2;
        prop_assume!(other_tenant || !same_place);
        let (kr, _) = keyring();
        let a = ctx(TenantId::new_v4());
        let b = ctx(TenantId::new_v4());
        let from = Column::new(&t1, &c1).unwrap();
        let to = Column::new(&t2, &c2).unwrap();
        let env = kr.seal(&a, &from.row(r1), b"payload").unwrap();
        kr.seal(&b, &to.row(1_i64), b"give b a key").unwrap();
        let target = if other_tenant { &b } else { &a };
        prop_assert!(kr.open(target, &to.row(r2), &env).is_err());
    }

    #[test]
    fn rotation_then_open_returns_the_same_plaintext(
        pt in prop::collection::vec(any::<u8>(), 0..512),
        rotations in 1usize..4,
    ) {
        let (kr, _) = keyring();
        let a = ctx(TenantId::new_v4());
        let col = Column::new("t", "c").unwrap();
        let env = kr.seal(&a, &col.row(5_i64), &pt).unwrap();
        for _ in 0..rotations {
            run(kr.rotate_tenant(a.tenant())).unwrap();
        }
        let opened = kr.open(&a, &col.row(5_i64), &env).unwrap();
        prop_assert_eq!(opened.expose_secret(), &pt[..]);
        let re = kr.reencrypt(&a, &col.row(5_i64), &env).unwrap().unwrap();
        prop_assert_eq!(re.key_version().get() as usize, rotations + 1);
        let opened = kr.open(&a, &col.row(5_i64), &re).unwrap();
        prop_assert_eq!(opened.expose_secret(), &pt[..]);
    }

    #[test]
    fn shredded_keys_never_open(pt in prop::collection::vec(any::<u8>(), 0..128), n in 1usize..5) {
        let (kr, _) = keyring();
        let a = ctx(TenantId::new_v4());
        let col = Column::new("t", "c").unwrap();
        let envs: Vec<_> = (0..n as i64).map(|i| kr.seal(&a, &col.row(i), &pt).unwrap()).collect();
        run(kr.shred_tenant(a.tenant())).unwrap();
        for (i, e) in envs.iter().enumerate() {
            prop_assert!(matches!(kr.open(&a, &col.row(i as i64), e), Err(CryptoError::KeyDestroyed)));
        }
    }
}

#[test]
fn tenant_handle_matches_the_keyring_and_stops_at_once_when_the_tenant_is_shredded() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let mut keys = kr.tenant_keys(&a).unwrap();
    let via_handle = keys.seal(&col.row(1_i64), b"one").unwrap();
    let via_keyring = kr.seal(&a, &col.row(2_i64), b"two").unwrap();
    assert_eq!(
        kr.open(&a, &col.row(1_i64), &via_handle)
            .unwrap()
            .expose_secret(),
        b"one"
    );
    assert_eq!(
        keys.open(&col.row(2_i64), &via_keyring)
            .unwrap()
            .expose_secret(),
        b"two"
    );
    assert_eq!(
        keys.blind_index(&col, "x").unwrap(),
        kr.blind_index(&a, &col, "x").unwrap()
    );
    // A rotation seen through the store's generation: the handle seals under the new key.
    let v2 = run(kr.rotate_tenant(a.tenant())).unwrap();
    assert_eq!(
        keys.seal(&col.row(3_i64), b"three").unwrap().key_version(),
        v2
    );
    run(kr.shred_tenant(a.tenant())).unwrap();
    assert!(matches!(
        keys.open(&col.row(1_i64), &via_handle),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        keys.seal(&col.row(4_i64), b"x"),
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(format!("{keys:?}").contains("keys: 0"));
}

#[test]
fn a_column_built_per_request_reuses_the_cached_keys() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    for i in 0..50_i64 {
        let col = Column::new("users", "email").unwrap();
        kr.seal(&a, &col.row(i), b"x").unwrap();
    }
    assert_eq!(kr.cached_keys(), 1);
}

#[test]
fn reencrypt_counts_a_forged_current_envelope_as_a_failure() {
    let (kr, _) = keyring();
    let a = ctx(TenantId::new_v4());
    let col = Column::new("t", "c").unwrap();
    let env = kr.seal(&a, &col.row(1_i64), b"x").unwrap();
    let mut progress = ReencryptProgress::default();
    let out = kr.reencrypt_batch(&a, [(col.row(2_i64), &env)], &mut progress, |_| {});
    assert!(out[0].is_err());
    assert_eq!(progress.failed, 1);
    assert_eq!(progress.already_current, 0);
}

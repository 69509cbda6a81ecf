//! Subject envelope decoders (binary and text) on arbitrary input: typed errors, never a
//! panic; anything accepted re-encodes identically, and opening it fails cleanly (typed
//! error), whether or not the subject it names has a key.
#![no_main]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use nova_crypto::{
    Column, InMemorySubjectKeyStore, InMemoryTenantKeyStore, Keyring, LocalKeyProvider,
    SubjectEnvelope, SubjectKeys,
};
use nova_tenancy::{TenantContext, TenantId, UserId};

struct Fixture {
    subjects: SubjectKeys,
    ctx: TenantContext,
    col: Column,
    /// The one data subject with a key (a user, as subjects usually are).
    known: UserId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keyring = Arc::new(
            Keyring::new(
                Arc::new(LocalKeyProvider::generated("root").expect("rng")),
                Arc::new(InMemoryTenantKeyStore::new()),
                "root",
            )
            .expect("keyring"),
        );
        let subjects = SubjectKeys::new(keyring, Arc::new(InMemorySubjectKeyStore::new()));
        let ctx = TenantContext::system(TenantId::new_v4(), "fuzz").expect("ctx");
        let col = Column::new("t", "c").expect("column");
        // Give one subject a key, so that envelopes naming it reach the cryptography.
        let known = UserId::new_v4();
        now(subjects.seal(&ctx, *known.as_uuid(), &col.row(1_i64), b"x")).expect("seal");
        Fixture {
            subjects,
            ctx,
            col,
            known,
        }
    })
}

/// Runs a future that never waits: the in-memory store answers at once, so no runtime is
/// needed (and a future that did wait would be a bug worth a crash).
fn now<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory subject key store future was pending"),
    }
}

/// Whatever decoded must re-encode to the same bytes and text, and must not open — as the
/// subject it names, nor as the one subject that has a key.
fn check(f: &Fixture, env: &SubjectEnvelope) {
    let again = SubjectEnvelope::from_text(&env.to_text()).expect("text form of a valid envelope");
    assert_eq!(&again, env);
    let again =
        SubjectEnvelope::from_bytes(env.as_bytes()).expect("binary form of a valid envelope");
    assert_eq!(&again, env);
    let opened = now(f
        .subjects
        .open(&f.ctx, env.subject(), &f.col.row(1_i64), env));
    assert!(opened.is_err());
    let opened = now(f
        .subjects
        .open(&f.ctx, *f.known.as_uuid(), &f.col.row(1_i64), env));
    assert!(opened.is_err());
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(env) = SubjectEnvelope::from_bytes(data) {
        assert_eq!(env.as_bytes(), data);
        check(f, &env);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(env) = SubjectEnvelope::from_text(text) {
            assert_eq!(env.to_text(), text);
            check(f, &env);
        }
    }
});

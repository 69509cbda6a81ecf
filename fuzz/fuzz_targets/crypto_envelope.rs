//! Envelope decoders (binary and text) on arbitrary input: typed errors, never a panic;
//! anything accepted re-encodes identically, and opening it with an unrelated keyring fails
//! cleanly.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use nova_crypto::{Column, Envelope, InMemoryTenantKeyStore, Keyring, LocalKeyProvider};
use nova_tenancy::{TenantContext, TenantId};

fn fixture() -> &'static (Keyring, TenantContext, Column) {
    static F: OnceLock<(Keyring, TenantContext, Column)> = OnceLock::new();
    F.get_or_init(|| {
        let kr = Keyring::new(
            Arc::new(LocalKeyProvider::generated("root").expect("rng")),
            Arc::new(InMemoryTenantKeyStore::new()),
            "root",
        )
        .expect("keyring");
        let ctx = TenantContext::system(TenantId::new_v4(), "fuzz").expect("ctx");
        let col = Column::new("t", "c").expect("column");
        // Give the tenant keys so that opens reach the cryptography.
        kr.seal(&ctx, &col.row(1_i64), b"x").expect("seal");
        (kr, ctx, col)
    })
}

fuzz_target!(|data: &[u8]| {
    let (kr, ctx, col) = fixture();
    if let Ok(env) = Envelope::from_bytes(data) {
        assert_eq!(env.as_bytes(), data);
        let again = Envelope::from_text(&env.to_text()).expect("text form of a valid envelope");
        assert_eq!(again, env);
        assert!(kr.open(ctx, &col.row(1_i64), &env).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(env) = Envelope::from_text(text) {
            assert!(kr.open(ctx, &col.row(1_i64), &env).is_err());
        }
    }
});

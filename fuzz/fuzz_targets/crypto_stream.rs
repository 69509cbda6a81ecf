//! Stream decryption on arbitrary input, and on a valid stream damaged by the input
//! (flipped bytes, truncation, appended bytes): typed errors, never a panic, and a damaged
//! stream never decrypts to the original completely.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use nova_crypto::{InMemoryTenantKeyStore, Keyring, LocalKeyProvider};
use nova_tenancy::{TenantContext, TenantId};

const PLAINTEXT: &[u8] = &[0x5a; 300];

fn fixture() -> &'static (Keyring, TenantContext, Vec<u8>) {
    static F: OnceLock<(Keyring, TenantContext, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let kr = Keyring::new(
            Arc::new(LocalKeyProvider::generated("root").expect("rng")),
            Arc::new(InMemoryTenantKeyStore::new()),
            "root",
        )
        .expect("keyring");
        let ctx = TenantContext::system(TenantId::new_v4(), "fuzz").expect("ctx");
        let mut stream = Vec::new();
        kr.encrypt_stream_chunked(&ctx, "backup", 64, PLAINTEXT, &mut stream)
            .expect("encrypt");
        (kr, ctx, stream)
    })
}

fuzz_target!(|data: &[u8]| {
    let (kr, ctx, stream) = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        // Damage the valid stream: pairs (position, xor) then optional truncation/extension.
        let mut s = stream.clone();
        for pair in rest.chunks(3) {
            match pair {
                [hi, lo, x] => {
                    let at = (usize::from(*hi) << 8 | usize::from(*lo)) % s.len();
                    s[at] ^= x;
                }
                [n] => {
                    let cut = usize::from(*n) % s.len();
                    s.truncate(s.len() - cut);
                }
                [n, extra] => {
                    s.extend(std::iter::repeat_n(*extra, usize::from(*n)));
                }
                _ => {}
            }
        }
        if s == *stream {
            return;
        }
        s
    };
    let mut out = Vec::new();
    let result = kr.decrypt_stream(ctx, "backup", &input[..], &mut out);
    if mode % 2 == 1 {
        assert!(result.is_err(), "a damaged stream decrypted");
    }
});

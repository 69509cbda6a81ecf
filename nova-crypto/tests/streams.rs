//! Streaming encryption: round trips at every boundary, and detection of truncation,
//! reordering, chunk swapping, trailing data, and a foreign tenant or label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use nova_crypto::{CryptoError, InMemoryTenantKeyStore, Keyring, LocalKeyProvider, StreamHeader};
use nova_tenancy::{TenantContext, TenantId};
use proptest::prelude::*;

const CHUNK: usize = 64;
const TAG: usize = 16;

fn setup() -> (Keyring, TenantContext) {
    let kr = Keyring::new(
        Arc::new(LocalKeyProvider::generated("root").unwrap()),
        Arc::new(InMemoryTenantKeyStore::new()),
        "root",
    )
    .unwrap();
    (
        kr,
        TenantContext::system(TenantId::new_v4(), "stream tests").unwrap(),
    )
}

fn seal(kr: &Keyring, ctx: &TenantContext, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    kr.encrypt_stream_chunked(ctx, "backup", CHUNK, data, &mut out)
        .unwrap();
    out
}

fn header_len(stream: &[u8]) -> usize {
    let mut r = stream;
    StreamHeader::read_from(&mut r).unwrap();
    stream.len() - r.len()
}

fn open(kr: &Keyring, ctx: &TenantContext, stream: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    kr.decrypt_stream(ctx, "backup", stream, &mut out)?;
    Ok(out)
}

#[test]
fn round_trips_at_every_chunk_boundary() {
    let (kr, ctx) = setup();
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let s = seal(&kr, &ctx, &data);
        let chunks = len / CHUNK + 1 - usize::from(len > 0 && len % CHUNK == 0);
        assert_eq!(s.len(), header_len(&s) + len + chunks * TAG, "len {len}");
        assert_eq!(open(&kr, &ctx, &s).unwrap(), data, "len {len}");
    }
}

#[test]
fn dropping_the_final_chunk_is_detected() {
    let (kr, ctx) = setup();
    for len in [3 * CHUNK, 3 * CHUNK + 10] {
        let data = vec![7u8; len];
        let s = seal(&kr, &ctx, &data);
        let h = header_len(&s);
        let last_len = if len % CHUNK == 0 {
            CHUNK + TAG
        } else {
            len % CHUNK + TAG
        };
        let cut = &s[..s.len() - last_len];
        let err = open(&kr, &ctx, cut).unwrap_err();
        assert!(
            matches!(err, CryptoError::StreamTruncated),
            "len {len}: {err:?}"
        );
        // Cutting inside a chunk, or down to the header, also fails.
        assert!(open(&kr, &ctx, &s[..s.len() - 5]).is_err());
        assert!(open(&kr, &ctx, &s[..h]).is_err());
        assert!(open(&kr, &ctx, &s[..h - 1]).is_err());
    }
}

#[test]
fn reordered_chunks_fail() {
    let (kr, ctx) = setup();
    let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| i as u8).collect();
    let s = seal(&kr, &ctx, &data);
    let h = header_len(&s);
    let full = CHUNK + TAG;
    let mut swapped = s.clone();
    swapped[h..h + full].copy_from_slice(&s[h + full..h + 2 * full]);
    swapped[h + full..h + 2 * full].copy_from_slice(&s[h..h + full]);
    assert!(matches!(
        open(&kr, &ctx, &swapped),
        Err(CryptoError::Authentication)
    ));
}

#[test]
fn chunks_from_another_stream_fail() {
    let (kr, ctx) = setup();
    let data = vec![1u8; 2 * CHUNK + 3];
    let s1 = seal(&kr, &ctx, &data);
    let s2 = seal(&kr, &ctx, &data);
    let h = header_len(&s1);
    let mut mixed = s1.clone();
    mixed[h..h + CHUNK + TAG].copy_from_slice(&s2[h..h + CHUNK + TAG]);
    assert!(matches!(
        open(&kr, &ctx, &mixed),
        Err(CryptoError::Authentication)
    ));
}

#[test]
fn trailing_data_wrong_label_and_other_tenant_fail() {
    let (kr, ctx) = setup();
    let s = seal(&kr, &ctx, b"hello stream");
    let mut extended = s.clone();
    extended.extend_from_slice(&[0u8; 40]);
    assert!(open(&kr, &ctx, &extended).is_err());
    let mut out = Vec::new();
    assert!(matches!(
        kr.decrypt_stream(&ctx, "export", &s[..], &mut out),
        Err(CryptoError::Authentication)
    ));
    let other = TenantContext::system(TenantId::new_v4(), "other").unwrap();
    kr.encrypt_stream(&other, "backup", &b"give it a key"[..], &mut Vec::new())
        .unwrap();
    assert!(open(&kr, &other, &s).is_err());
}

#[test]
fn bad_headers_are_typed_errors() {
    let (kr, ctx) = setup();
    assert!(matches!(open(&kr, &ctx, b""), Err(CryptoError::Decode(_))));
    assert!(matches!(
        open(&kr, &ctx, b"XX\x01\x01\x04root"),
        Err(CryptoError::Decode(_))
    ));
    let mut s = seal(&kr, &ctx, b"x");
    let h = header_len(&s);
    // Chunk size field set to 16 GiB-ish: refused before allocating.
    let cs_at = h - 32 - 7 - 32 - 4;
    s[cs_at..cs_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(open(&kr, &ctx, &s), Err(CryptoError::Decode(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_data_round_trips_and_any_byte_flip_fails(
        data in prop::collection::vec(any::<u8>(), 0..600),
        chunk in 64usize..200,
        flip in any::<prop::sample::Index>(),
    ) {
        let (kr, ctx) = setup();
        let mut s = Vec::new();
        kr.encrypt_stream_chunked(&ctx, "export", chunk, &data[..], &mut s).unwrap();
        let mut out = Vec::new();
        kr.decrypt_stream(&ctx, "export", &s[..], &mut out).unwrap();
        prop_assert_eq!(&out, &data);
        let i = flip.index(s.len());
        s[i] ^= 0x80;
        prop_assert!(kr.decrypt_stream(&ctx, "export", &s[..], &mut Vec::new()).is_err());
    }
}

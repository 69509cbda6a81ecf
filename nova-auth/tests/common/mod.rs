//! Shared fixtures for nova-auth's tests and benchmarks: published keys and helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use nova_auth::SigningKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;

/// RFC 7520 §3.4: the RSA key "bilbo.baggins@hobbiton.example" (public JWK members).
pub(crate) const RFC7520_RSA_N: &str = "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw";
pub(crate) const RFC7520_RSA_E: &str = "AQAB";
pub(crate) const RFC7520_RSA_D: &str = "bWUC9B-EFRIo8kpGfh0ZuyGPvMNKvYWNtB_ikiH9k20eT-O1q_I78eiZkpXxXQ0UTEs2LsNRS-8uJbvQ-A1irkwMSMkK1J3XTGgdrhCku9gRldY7sNA_AKZGh-Q661_42rINLRCe8W-nZ34ui_qOfkLnK9QWDDqpaIsA-bMwWWSDFu2MUBYwkHTMEzLYGqOe04noqeq1hExBTHBOBdkMXiuFhUq1BU6l-DqEiWxqg82sXt2h-LMnT3046AOYJoRioz75tSUQfGCshWTBnP5uDjd18kKhyv07lhfSJdrPdM5Plyl21hsFf4L_mHCuoFau7gdsPfHPxxjVOcOpBrQzwQ";
pub(crate) const RFC7520_RSA_P: &str = "3Slxg_DwTXJcb6095RoXygQCAZ5RnAvZlno1yhHtnUex_fp7AZ_9nRaO7HX_-SFfGQeutao2TDjDAWU4Vupk8rw9JR0AzZ0N2fvuIAmr_WCsmGpeNqQnev1T7IyEsnh8UMt-n5CafhkikzhEsrmndH6LxOrvRJlsPp6Zv8bUq0k";
pub(crate) const RFC7520_RSA_Q: &str = "uKE2dh-cTf6ERF4k4e_jy78GfPYUIaUyoSSJuBzp3Cubk3OCqs6grT8bR_cu0Dm1MZwWmtdqDyI95HrUeq3MP15vMMON8lHTeZu2lmKvwqW7anV5UzhM1iZ7z4yMkuUwFWoBvyY898EXvRD-hdqRxHlSqAZ192zB3pVFJ0s7pFc";

fn big(b64: &str) -> rsa::BigUint {
    use base64::Engine as _;
    rsa::BigUint::from_bytes_be(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap(),
    )
}

/// The RFC 7520 RSA key as an RS256 signing key (so tests can sign RS256 tokens).
pub(crate) fn rfc7520_rsa_signing_key(kid: &str) -> SigningKey {
    let key = rsa::RsaPrivateKey::from_components(
        big(RFC7520_RSA_N),
        big(RFC7520_RSA_E),
        big(RFC7520_RSA_D),
        vec![big(RFC7520_RSA_P), big(RFC7520_RSA_Q)],
    )
    .unwrap();
    let der = key.to_pkcs1_der().unwrap();
    SigningKey::rs256_from_der(kid, der.as_bytes()).unwrap()
}

/// A well-formed API key (valid checksum) for key id `kid` with a secret nobody issued.
pub(crate) fn forge_secret(kid: &str) -> String {
    let secret: String = (0..43)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect::<String>();
    let secret = format!(
        "{}{}",
        &secret[..40],
        &uuid::Uuid::new_v4().simple().to_string()[..3]
    );
    let body = format!("nova_sk_{kid}_{secret}");
    let sum = {
        // Same checksum as the crate: CRC32 in 6 base62 digits.
        const B: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut v = u64::from(crc32fast::hash(body.as_bytes()));
        let mut d = [b'0'; 6];
        for x in d.iter_mut().rev() {
            *x = B[(v % 62) as usize];
            v /= 62;
        }
        String::from_utf8(d.to_vec()).unwrap()
    };
    let key = format!("{body}_{sum}");
    assert!(
        nova_auth::parse_api_key(&key).is_ok(),
        "forged key must be well-formed"
    );
    key
}

//! Published test vectors, run offline: Project Wycheproof AES-GCM and HKDF-SHA256, and
//! RFC 5869's HKDF-SHA256 examples, through the functions the keyring calls for sealing,
//! opening and key derivation; Wycheproof HMAC-SHA256 through `primitives::hmac_sha256`,
//! which uses the same `hmac` crate and key schedule as the blind-index path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nova_crypto::primitives::{aes256gcm_open, aes256gcm_seal, hkdf_sha256, hmac_sha256};
use wycheproof::TestResult;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn wycheproof_aes_gcm_every_valid_case_opens_and_every_invalid_one_is_rejected() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let (mut valid, mut invalid, mut other_params) = (0, 0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            let mut ct_and_tag = t.ct.to_vec();
            ct_and_tag.extend_from_slice(&t.tag);
            let nova_params =
                group.key_size == 256 && group.nonce_size == 96 && group.tag_size == 128;
            let opened = aes256gcm_open(&t.key, &t.nonce, &t.aad, &ct_and_tag);
            if !nova_params {
                // Nova uses only AES-256 with 96-bit nonces and 128-bit tags; anything else
                // must be refused, whatever Wycheproof says about the primitive.
                assert!(
                    opened.is_err(),
                    "tc {} with other parameters was accepted",
                    t.tc_id
                );
                other_params += 1;
                continue;
            }
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let pt =
                        opened.unwrap_or_else(|e| panic!("tc {} failed to open: {e}", t.tc_id));
                    assert_eq!(pt.as_slice(), &t.pt[..], "tc {}", t.tc_id);
                    let sealed = aes256gcm_seal(&t.key, &t.nonce, &t.aad, &t.pt).unwrap();
                    assert_eq!(sealed, ct_and_tag, "tc {} seal differs", t.tc_id);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tc {} ({}) opened", t.tc_id, t.comment);
                    invalid += 1;
                }
            }
        }
    }
    assert!(valid >= 30, "only {valid} valid AES-256-GCM/96 cases");
    assert!(invalid >= 10, "only {invalid} invalid cases");
    eprintln!(
        "wycheproof aes_gcm: {valid} valid, {invalid} invalid, {other_params} other-parameter cases"
    );
}

#[test]
fn wycheproof_hmac_sha256_including_truncated_tags() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        let tag_bytes = group.tag_size / 8;
        for t in &group.tests {
            let full = hmac_sha256(&t.key, &t.msg);
            let matches = full[..tag_bytes] == t.tag[..];
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(matches, "tc {}", t.tc_id);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(!matches, "tc {} ({}) matched", t.tc_id, t.comment);
                    invalid += 1;
                }
            }
        }
    }
    assert!(
        valid >= 50 && invalid >= 10,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let mut okm = vec![0u8; t.size];
            let salt = if t.salt.is_empty() {
                None
            } else {
                Some(&t.salt[..])
            };
            let r = hkdf_sha256(salt, &t.ikm, &t.info, &mut okm);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    r.unwrap();
                    assert_eq!(okm, &t.okm[..], "tc {}", t.tc_id);
                }
                TestResult::Invalid => assert!(r.is_err(), "tc {} accepted", t.tc_id),
            }
            n += 1;
        }
    }
    assert!(n >= 50);
}

/// RFC 5869 Appendix A.1–A.3 (the SHA-256 cases), transcribed.
#[test]
fn rfc5869_hkdf_sha256_test_cases() {
    struct Case {
        ikm: Vec<u8>,
        salt: Option<Vec<u8>>,
        info: Vec<u8>,
        okm: &'static str,
    }
    let cases = [
        Case {
            ikm: vec![0x0b; 22],
            salt: Some(hex("000102030405060708090a0b0c")),
            info: hex("f0f1f2f3f4f5f6f7f8f9"),
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        },
        Case {
            ikm: (0x00..=0x4f).collect(),
            salt: Some((0x60..=0xaf).collect()),
            info: (0xb0..=0xff).collect(),
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
        },
        Case {
            ikm: vec![0x0b; 22],
            salt: None,
            info: Vec::new(),
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let expected = hex(c.okm);
        let mut okm = vec![0u8; expected.len()];
        hkdf_sha256(c.salt.as_deref(), &c.ikm, &c.info, &mut okm).unwrap();
        assert_eq!(okm, expected, "RFC 5869 A.{}", i + 1);
    }
}

//! Second factors on arbitrary input: `otpauth://` URIs, Base32, TOTP codes, recovery
//! codes (typed and stored) and remember-device tokens give typed errors, never a panic;
//! anything accepted is written out again and parses equal.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use nova_auth::totp::{
    Algorithm, DeviceTokens, Enrolment, RecoveryCodes, Totp, TotpError, TotpSecret, base32_decode,
    base32_encode,
};
use nova_tenancy::{TenantId, UserId};

/// RFC 6238's SHA-1 seed, "12345678901234567890", in Base32.
const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

struct Fixture {
    secret: TotpSecret,
    configs: Vec<Totp>,
    recovery: RecoveryCodes,
    tokens: DeviceTokens,
    tenant: TenantId,
    user: UserId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut configs = Vec::new();
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256] {
            for digits in 6..=8 {
                configs.push(Totp::new(algorithm, digits).expect("digits"));
            }
        }
        // A fixed stored set (zero salt, arbitrary hashes), so runs are reproducible.
        // (A final 'A': the unused low bits of 43 base64url symbols must be zero.)
        let hash = |c: &str| format!("{}A", c.repeat(42));
        let stored = format!("nova-rc1${}${},{}", hash("A"), hash("B"), hash("C"));
        Fixture {
            secret: TotpSecret::from_base32(SECRET_B32).expect("secret"),
            configs,
            recovery: RecoveryCodes::from_stored(&stored).expect("stored codes"),
            tokens: DeviceTokens::new(&[9u8; 32]).expect("key"),
            tenant: "0192a4e0-7c4f-7a3e-9d2b-5f1e8c3a6b70"
                .parse()
                .expect("tenant"),
            user: "0192a4e0-7c4f-7a3e-9d2b-5f1e8c3a6b71"
                .parse()
                .expect("user"),
        }
    })
}

/// Parses `uri`; whatever parses is written out, and that parses equal and writes the same.
fn check_uri(uri: &str) {
    if let Ok(enrolment) = Enrolment::parse_uri(uri) {
        let written = enrolment.to_uri();
        let again = Enrolment::parse_uri(&written).expect("a written URI parses");
        assert_eq!(again, enrolment);
        assert_eq!(*again.to_uri(), *written);
    }
}

fn check_code(f: &Fixture, code: &str, now: SystemTime) {
    let current = Totp::step_at(now).expect("after the epoch");
    for totp in &f.configs {
        let well_formed =
            code.len() == usize::from(totp.digits()) && code.bytes().all(|b| b.is_ascii_digit());
        match totp.check_at(&f.secret, code, now) {
            Ok(step) => {
                assert!(well_formed && step.abs_diff(current) <= 1);
                let then = UNIX_EPOCH + Duration::from_secs(step * 30);
                assert_eq!(*totp.code_at(&f.secret, then).expect("code"), code);
            }
            Err(TotpError::InvalidCode) => assert!(well_formed),
            Err(TotpError::MalformedCode { digits }) => {
                assert!(!well_formed && digits == totp.digits());
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // otpauth URIs: the whole input, the input as label and query, and the input as more
    // parameters after a valid secret (so the fuzzer need not find the prefix itself).
    check_uri(text);
    check_uri(&format!("otpauth://totp/{text}"));
    check_uri(&format!(
        "otpauth://totp/ACME:jo?secret={SECRET_B32}&{text}"
    ));

    // Base32: what decodes is canonical, and its encoding decodes to the same bytes.
    if let Ok(bytes) = base32_decode(text) {
        let encoded = base32_encode(&bytes);
        assert_eq!(encoded, text.trim_end_matches('=').to_ascii_uppercase());
        assert_eq!(*base32_decode(&encoded).expect("re-decodes"), *bytes);
    }
    if let Ok(secret) = TotpSecret::from_base32(text) {
        assert_eq!(TotpSecret::from_base32(&secret.to_base32()), Ok(secret));
    }

    // Codes, at a fixed time and at a time taken from the input.
    check_code(f, text, UNIX_EPOCH + Duration::from_secs(1_111_111_111));
    if let Some(head) = data.get(..8) {
        let secs = u64::from_le_bytes(head.try_into().expect("8 bytes")) % (1 << 40);
        if let Ok(code) = std::str::from_utf8(&data[8..]) {
            check_code(f, code, UNIX_EPOCH + Duration::from_secs(secs));
        }
    }

    // Recovery codes: typed input against a fixed set, and stored sets.
    let mut recovery = f.recovery.clone();
    match recovery.consume(text) {
        Ok(left) => assert_eq!(left, f.recovery.remaining() - 1),
        Err(TotpError::MalformedRecoveryCode | TotpError::InvalidRecoveryCode) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
    if let Ok(set) = RecoveryCodes::from_stored(text) {
        let stored = set.to_stored();
        let again = RecoveryCodes::from_stored(&stored).expect("a written set parses");
        assert_eq!(again.to_stored(), stored);
    }

    // Device tokens: the fuzzer cannot forge a tag.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert!(
        f.tokens
            .verify_at(text, f.tenant, f.user, "device", now)
            .is_err()
    );
});

//! Second factors through the public API only: RFC 6238 Appendix B, the ±1 step window,
//! replay refusal, malformed codes, Base32 (RFC 4648 §10 and a round-trip property),
//! `otpauth://` URIs, recovery codes, "remember this device" tokens and the MFA policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nova_auth::totp::{
    Algorithm, DEVICE_TOKEN_PREFIX, DeviceTokens, Enrolment, InMemoryReplayGuard, MAX_DEVICE_TTL,
    MAX_RECOVERY_CODES, MAX_URI_LEN, MfaPolicy, RecoveryCodes, Sensitive, Totp, TotpError,
    TotpSecret, TotpVerifier, base32_decode, base32_encode,
};
use nova_tenancy::{Actor, AuditHook, SecurityEvent, TenantId, UserId, set_audit_hook};
use proptest::prelude::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 6238 Appendix B seeds: the ASCII digits "1234567890" repeated to the key length of
/// each hash (20 bytes for SHA-1, 32 for SHA-256).
const SHA1_SEED: &[u8] = b"12345678901234567890";
const SHA256_SEED: &[u8] = b"12345678901234567890123456789012";

/// RFC 6238 Appendix B, Table 1 (8 digits, X = 30 s, T0 = 0): time in seconds, the value of
/// T, the SHA-1 TOTP and the SHA-256 TOTP.
const RFC6238_TABLE: [(u64, u64, &str, &str); 6] = [
    (59, 0x0000_0000_0000_0001, "94287082", "46119246"),
    (1_111_111_109, 0x0000_0000_0235_23EC, "07081804", "68084774"),
    (1_111_111_111, 0x0000_0000_0235_23ED, "14050471", "67062674"),
    (1_234_567_890, 0x0000_0000_0273_EF07, "89005924", "91819424"),
    (2_000_000_000, 0x0000_0000_03F9_40AA, "69279037", "90698825"),
    (
        20_000_000_000,
        0x0000_0000_27BC_86AA,
        "65353130",
        "77737706",
    ),
];

fn rfc_sha1() -> (Totp, TotpSecret) {
    (
        Totp::new(Algorithm::Sha1, 8).unwrap(),
        TotpSecret::from_bytes(SHA1_SEED).unwrap(),
    )
}

fn ids() -> (TenantId, UserId) {
    (TenantId::new_v4(), UserId::new_v4())
}

// ----- RFC 6238 -----

#[test]
fn rfc6238_appendix_b_sha1_and_sha256_eight_digit_codes() {
    let sha1 = Totp::new(Algorithm::Sha1, 8).unwrap();
    let sha256 = Totp::new(Algorithm::Sha256, 8).unwrap();
    let seed1 = TotpSecret::from_bytes(SHA1_SEED).unwrap();
    let seed256 = TotpSecret::from_bytes(SHA256_SEED).unwrap();
    for (time, t, code1, code256) in RFC6238_TABLE {
        assert_eq!(Totp::step_at(at(time)).unwrap(), t, "T at {time}");
        assert_eq!(
            *sha1.code_at(&seed1, at(time)).unwrap(),
            code1,
            "SHA-1 at {time}"
        );
        assert_eq!(
            *sha256.code_at(&seed256, at(time)).unwrap(),
            code256,
            "SHA-256 at {time}"
        );
        assert_eq!(sha1.check_at(&seed1, code1, at(time)), Ok(t));
        assert_eq!(sha256.check_at(&seed256, code256, at(time)), Ok(t));
        // A code is bound to its hash: the other algorithm's code for the same time fails.
        assert_eq!(
            sha1.check_at(&seed1, code256, at(time)),
            Err(TotpError::InvalidCode)
        );
    }
}

#[test]
fn six_digit_codes_are_the_last_six_digits_of_the_eight_digit_ones() {
    // RFC 4226 §5.3: the code is the truncated value modulo 10^digits.
    let six = Totp::new(Algorithm::Sha1, 6).unwrap();
    let seed = TotpSecret::from_bytes(SHA1_SEED).unwrap();
    for (time, _, code8, _) in RFC6238_TABLE {
        assert_eq!(*six.code_at(&seed, at(time)).unwrap(), code8[2..]);
    }
}

#[test]
fn codes_one_step_either_side_are_accepted_and_two_steps_away_refused() {
    let (totp, secret) = rfc_sha1();
    let now = at(1_234_567_890);
    let current = Totp::step_at(now).unwrap();
    let shifted = |secs: i64| {
        let by = Duration::from_secs(secs.unsigned_abs());
        if secs < 0 { now - by } else { now + by }
    };
    for (offset, expected) in [
        (-30, Ok(current - 1)),
        (0, Ok(current)),
        (30, Ok(current + 1)),
        (-60, Err(TotpError::InvalidCode)),
        (60, Err(TotpError::InvalidCode)),
        (-90, Err(TotpError::InvalidCode)),
    ] {
        let code = totp.code_at(&secret, shifted(offset)).unwrap();
        assert_eq!(
            totp.check_at(&secret, &code, now),
            expected,
            "offset {offset} s"
        );
    }
}

#[test]
fn the_window_at_the_epoch_has_no_step_before_zero() {
    let (totp, secret) = rfc_sha1();
    let code = totp.code_at(&secret, at(0)).unwrap();
    assert_eq!(totp.check_at(&secret, &code, at(10)), Ok(0));
    assert_eq!(
        totp.check_at(&secret, &code, UNIX_EPOCH - Duration::from_secs(1)),
        Err(TotpError::ClockBeforeEpoch)
    );
}

#[test]
fn digits_outside_six_to_eight_are_refused() {
    for digits in [0, 5, 9, 10, 255] {
        assert_eq!(
            Totp::new(Algorithm::Sha1, digits),
            Err(TotpError::UnsupportedDigits)
        );
    }
    for digits in 6..=8 {
        assert_eq!(
            Totp::new(Algorithm::Sha256, digits).unwrap().digits(),
            digits
        );
    }
    assert_eq!(Totp::default(), Totp::new(Algorithm::Sha1, 6).unwrap());
}

#[test]
fn codes_that_are_not_exactly_the_digits_are_refused_before_any_comparison() {
    let totp = Totp::default();
    let secret = TotpSecret::from_bytes(SHA1_SEED).unwrap();
    let now = at(1_111_111_111);
    let good = totp.code_at(&secret, now).unwrap();
    assert!(totp.check_at(&secret, &good, now).is_ok());
    for bad in [
        "12345".to_owned(),
        "1234567".to_owned(),
        "12a456".to_owned(),
        "１２３４５６".to_owned(), // full-width digits
        "١٢٣٤٥٦".to_owned(),       // Arabic-Indic digits
        format!(" {}", &*good),
        format!("{} ", &*good),
        format!("{}\n", &*good),
        format!("+{}", &good[1..]),
        format!("-{}", &good[1..]),
        format!("{} {}", &good[..3], &good[3..]),
        String::new(),
    ] {
        assert_eq!(
            totp.check_at(&secret, &bad, now),
            Err(TotpError::MalformedCode { digits: 6 }),
            "{bad:?}"
        );
    }
    // An 8-digit configuration refuses a 6-digit code.
    let (eight, seed) = rfc_sha1();
    assert_eq!(
        eight.check_at(&seed, "123456", now),
        Err(TotpError::MalformedCode { digits: 8 })
    );
}

// ----- replay -----

#[tokio::test]
async fn a_code_is_accepted_once_per_user() {
    let (totp, secret) = rfc_sha1();
    let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
    let (tenant, user) = ids();
    let now = at(2_000_000_000);
    let code = totp.code_at(&secret, now).unwrap();
    let step = verifier
        .verify_at(tenant, user, &totp, &secret, &code, now)
        .await
        .unwrap();
    assert_eq!(step, 0x03F9_40AA);
    // Same code, same step, ten seconds later: replay.
    assert_eq!(
        verifier
            .verify_at(
                tenant,
                user,
                &totp,
                &secret,
                &code,
                now + Duration::from_secs(10)
            )
            .await,
        Err(TotpError::Replayed)
    );
    // Same code, still in the window one step later: still a replay.
    assert_eq!(
        verifier
            .verify_at(
                tenant,
                user,
                &totp,
                &secret,
                &code,
                now + Duration::from_secs(30)
            )
            .await,
        Err(TotpError::Replayed)
    );
    // The next step's code is fresh.
    let next = now + Duration::from_secs(30);
    let next_code = totp.code_at(&secret, next).unwrap();
    assert_eq!(
        verifier
            .verify_at(tenant, user, &totp, &secret, &next_code, next)
            .await,
        Ok(step + 1)
    );
}

#[tokio::test]
async fn an_earlier_step_is_refused_after_a_later_one_was_accepted() {
    let (totp, secret) = rfc_sha1();
    let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
    let (tenant, user) = ids();
    let now = at(1_234_567_890);
    let ahead = totp
        .code_at(&secret, now + Duration::from_secs(30))
        .unwrap();
    let behind = totp
        .code_at(&secret, now - Duration::from_secs(30))
        .unwrap();
    let current = totp.code_at(&secret, now).unwrap();
    verifier
        .verify_at(tenant, user, &totp, &secret, &ahead, now)
        .await
        .unwrap();
    for code in [&behind, &current] {
        assert_eq!(
            verifier
                .verify_at(tenant, user, &totp, &secret, code, now)
                .await,
            Err(TotpError::Replayed)
        );
    }
}

#[tokio::test]
async fn replay_state_is_per_tenant_and_user() {
    let (totp, secret) = rfc_sha1();
    let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
    let (tenant, user) = ids();
    let now = at(1_111_111_111);
    let code = totp.code_at(&secret, now).unwrap();
    for (t, u) in [
        (tenant, user),
        (tenant, UserId::new_v4()),
        (TenantId::new_v4(), user),
    ] {
        assert!(
            verifier
                .verify_at(t, u, &totp, &secret, &code, now)
                .await
                .is_ok()
        );
    }
}

#[tokio::test]
async fn refused_codes_do_not_spend_the_step() {
    let (totp, secret) = rfc_sha1();
    let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
    let (tenant, user) = ids();
    let now = at(59);
    for bad in ["00000000", "1234567"] {
        assert!(
            verifier
                .verify_at(tenant, user, &totp, &secret, bad, now)
                .await
                .is_err()
        );
    }
    assert_eq!(
        verifier
            .verify_at(tenant, user, &totp, &secret, "94287082", now)
            .await,
        Ok(1)
    );
}

/// (event name, tenant, user) of the events reported in this test binary.
type Seen = (String, Option<TenantId>, Option<UserId>);

#[derive(Default)]
struct Collect(Mutex<Vec<Seen>>);

impl AuditHook for Collect {
    fn record(&self, event: &SecurityEvent<'_>) {
        let user = match event.actor_of() {
            Some(Actor::User(u)) => Some(u),
            _ => None,
        };
        self.0
            .lock()
            .unwrap()
            .push((event.name().to_owned(), event.tenant_id(), user));
    }
}

#[tokio::test]
async fn failures_replays_and_refused_device_tokens_reach_the_audit_hook() {
    let hook = Arc::new(Collect::default());
    assert!(set_audit_hook(hook.clone()).is_ok());
    let (totp, secret) = rfc_sha1();
    let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
    let (tenant, user) = ids();
    let now = at(59);
    let _ = verifier
        .verify_at(tenant, user, &totp, &secret, "00000000", now)
        .await;
    let _ = verifier
        .verify_at(tenant, user, &totp, &secret, "9428708", now)
        .await;
    verifier
        .verify_at(tenant, user, &totp, &secret, "94287082", now)
        .await
        .unwrap();
    let _ = verifier
        .verify_at(tenant, user, &totp, &secret, "94287082", now)
        .await;
    let tokens = DeviceTokens::new(&[1u8; 32]).unwrap();
    let token = tokens
        .issue_at(tenant, user, "laptop", Duration::from_secs(3600), now)
        .unwrap();
    let _ = tokens.verify_at(token.expose(), tenant, user, "phone", now);

    let seen: Vec<String> = hook
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t, u)| *t == Some(tenant) && *u == Some(user))
        .map(|(name, _, _)| name.clone())
        .collect();
    assert_eq!(
        seen,
        [
            "totp_failure",
            "totp_failure",
            "totp_replay",
            "device_token_refused"
        ]
    );
}

// ----- secrets and Base32 -----

#[test]
fn rfc4648_section_10_base32_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "MY======"),
        ("fo", "MZXQ===="),
        ("foo", "MZXW6==="),
        ("foob", "MZXW6YQ="),
        ("fooba", "MZXW6YTB"),
        ("foobar", "MZXW6YTBOI======"),
    ] {
        let unpadded = encoded.trim_end_matches('=');
        assert_eq!(base32_encode(plain.as_bytes()), unpadded);
        assert_eq!(
            *base32_decode(encoded).unwrap(),
            plain.as_bytes(),
            "{encoded}"
        );
        assert_eq!(*base32_decode(unpadded).unwrap(), plain.as_bytes());
        assert_eq!(
            *base32_decode(&unpadded.to_lowercase()).unwrap(),
            plain.as_bytes()
        );
    }
}

#[test]
fn non_canonical_base32_is_refused() {
    for (text, why) in [
        ("M", "impossible length"),
        ("MZX", "impossible length"),
        ("MZXW6Y", "impossible length"),
        ("MY=", "wrong padding"),
        ("MY=======", "wrong padding"),
        ("MZXW6YTB========", "wrong padding"),
        ("========", "wrong padding"),
        ("MB", "non-zero trailing bits"),
        ("MZXW6YR", "non-zero trailing bits"),
        ("M8", "invalid character"),
        ("M1", "invalid character"),
        ("MY=Q====", "invalid character"),
        ("MZ W6YQ", "invalid character"),
        ("MÉA", "invalid character"),
    ] {
        assert_eq!(base32_decode(text), Err(TotpError::Base32(why)), "{text:?}");
    }
}

proptest! {
    #[test]
    fn base32_round_trips_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let text = base32_encode(&bytes);
        prop_assert_eq!(text.len(), (bytes.len() * 8).div_ceil(5));
        prop_assert_eq!(&*base32_decode(&text).unwrap(), &bytes);
        prop_assert_eq!(&*base32_decode(&text.to_lowercase()).unwrap(), &bytes);
    }

    #[test]
    fn base32_text_that_decodes_is_canonical(text in "[A-Za-z2-7]{0,40}") {
        if let Ok(bytes) = base32_decode(&text) {
            prop_assert_eq!(base32_encode(&bytes), text.to_uppercase());
        }
    }
}

#[test]
fn secrets_are_random_of_the_hash_length_and_never_printed() {
    let a = TotpSecret::generate(Algorithm::Sha1).unwrap();
    let b = TotpSecret::generate(Algorithm::Sha256).unwrap();
    assert_eq!(a.expose().len(), 20);
    assert_eq!(b.expose().len(), 32);
    assert_ne!(a, TotpSecret::generate(Algorithm::Sha1).unwrap());
    assert_eq!(format!("{a:?}"), "TotpSecret([REDACTED])");
    assert_eq!(TotpSecret::from_base32(&b.to_base32()).unwrap(), b);
    let enrolment = Enrolment::new("ACME", "jo", a.clone(), Totp::default()).unwrap();
    let shown = format!("{enrolment:?}");
    assert!(!shown.contains(a.to_base32().as_str()), "{shown}");
    assert!(shown.contains("[REDACTED]"));
}

#[test]
fn secrets_outside_16_to_64_bytes_are_refused() {
    for len in [0, 10, 15, 65, 200] {
        assert_eq!(
            TotpSecret::from_bytes(&vec![7; len]),
            Err(TotpError::SecretLength),
            "{len}"
        );
    }
    for len in [16, 20, 32, 64] {
        assert!(TotpSecret::from_bytes(&vec![7; len]).is_ok());
    }
    // 80-bit secrets (16 Base32 symbols), still issued by some services, are too short.
    assert_eq!(
        TotpSecret::from_base32("JBSWY3DPEHPK3PXP"),
        Err(TotpError::SecretLength)
    );
    assert_eq!(
        TotpSecret::from_base32(&"A".repeat(10_000)),
        Err(TotpError::SecretLength)
    );
}

// ----- otpauth URIs -----

fn rfc_enrolment(issuer: &str, account: &str) -> Enrolment {
    Enrolment::new(
        issuer,
        account,
        TotpSecret::from_bytes(SHA1_SEED).unwrap(),
        Totp::default(),
    )
    .unwrap()
}

#[test]
fn enrolment_uri_has_every_parameter_and_percent_encodes_names() {
    let enrolment = rfc_enrolment("ACME Co & Sons+", "jo+tag@example.com");
    assert_eq!(
        *enrolment.to_uri(),
        "otpauth://totp/ACME%20Co%20%26%20Sons%2B:jo%2Btag%40example.com\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%20Co%20%26%20Sons%2B\
         &algorithm=SHA1&digits=6&period=30"
    );
}

#[test]
fn enrolment_uris_round_trip() {
    let names = [
        ("ACME", "alice"),
        ("ACME Co & Sons+", "jo+tag@example.com"),
        ("Société Générale", "zoë:ops@例え.jp"),
        ("a/b?c#d=e%f", "x y\u{a0}z"),
    ];
    for (issuer, account) in names {
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256] {
            for digits in 6..=8 {
                let totp = Totp::new(algorithm, digits).unwrap();
                let enrolment = Enrolment::generate(issuer, account, totp).unwrap();
                let parsed = Enrolment::parse_uri(&enrolment.to_uri()).unwrap();
                assert_eq!(parsed, enrolment);
                assert_eq!(parsed.issuer(), issuer);
                assert_eq!(parsed.account(), account);
                assert_eq!(parsed.secret(), enrolment.secret());
                assert_eq!(*parsed.totp(), totp);
            }
        }
    }
}

#[test]
fn enrolment_uri_variants_written_by_other_issuers_are_read() {
    let expected = rfc_enrolment("ACME Co", "jo@example.com");
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    for uri in [
        // Minimal: issuer only in the label, defaults for the rest.
        format!("otpauth://totp/ACME%20Co:jo@example.com?secret={secret}"),
        // Issuer only as a parameter ('+' is a space in a query value).
        format!("otpauth://totp/jo%40example.com?issuer=ACME+Co&secret={secret}"),
        // Encoded colon with spaces after it; scheme and type in capitals.
        format!(
            "OTPAUTH://TOTP/ACME%20Co%3A%20%20jo%40example.com?secret={secret}&issuer=ACME%20Co"
        ),
        // Lower-case, padded secret; unknown parameters; explicit defaults; empty pairs.
        format!(
            "otpauth://totp/ACME%20Co:jo%40example.com?secret={}&image=https%3A%2F%2Fx&&algorithm=sha1&digits=6&period=30&",
            secret.to_lowercase()
        ),
        // An unencoded space in the label, as some generators write it.
        format!("otpauth://totp/ACME Co:jo@example.com?secret={secret}"),
    ] {
        assert_eq!(Enrolment::parse_uri(&uri), Ok(expected.clone()), "{uri}");
    }
    // 20 bytes fill whole 8-symbol groups: a '=' after them is not canonical.
    assert_eq!(
        Enrolment::parse_uri(&format!("otpauth://totp/ACME:jo?secret={secret}%3D")),
        Err(TotpError::Base32("wrong padding"))
    );
    // A secret whose Base32 needs padding (17 bytes), with the padding percent-encoded.
    let odd = TotpSecret::from_bytes(&[9u8; 17]).unwrap();
    let padded = format!("{}%3D%3D%3D%3D", &*odd.to_base32());
    let parsed = Enrolment::parse_uri(&format!("otpauth://totp/ACME:jo?secret={padded}")).unwrap();
    assert_eq!(*parsed.secret(), odd);
}

#[test]
fn malformed_or_unsupported_enrolment_uris_are_refused_with_typed_errors() {
    let s = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let cases: Vec<(String, TotpError)> = vec![
        (
            format!("https://totp/A:b?secret={s}"),
            TotpError::Uri("scheme is not otpauth"),
        ),
        (
            format!("otpauth://hotp/A:b?secret={s}&counter=0"),
            TotpError::Uri("counter-based (hotp) URIs are not supported"),
        ),
        (
            format!("otpauth://xotp/A:b?secret={s}"),
            TotpError::Uri("type is not totp"),
        ),
        ("otpauth://totp".to_owned(), TotpError::Uri("missing label")),
        (
            "otpauth://totp/A:b?issuer=A".to_owned(),
            TotpError::Uri("missing secret"),
        ),
        (
            "otpauth://totp/A:b".to_owned(),
            TotpError::Uri("missing secret"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&secret=AAAA"),
            TotpError::Uri("repeated parameter"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&issuer=B"),
            TotpError::Uri("label issuer and issuer parameter differ"),
        ),
        (
            format!("otpauth://totp/b?secret={s}"),
            TotpError::Uri("missing issuer"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&algorithm=SHA512"),
            TotpError::Uri("unsupported algorithm"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&digits=9"),
            TotpError::UnsupportedDigits,
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&digits=06"),
            TotpError::UnsupportedDigits,
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&period=60"),
            TotpError::Uri("period is not 30 seconds"),
        ),
        (
            format!("otpauth://totp/A%G1:b?secret={s}"),
            TotpError::Uri("bad percent-encoding"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&issuer=A%4"),
            TotpError::Uri("bad percent-encoding"),
        ),
        (
            format!("otpauth://totp/A%FF:b?secret={s}"),
            TotpError::Uri("not UTF-8 after percent-decoding"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}#frag"),
            TotpError::Uri("fragment not allowed"),
        ),
        (
            format!("otpauth://totp/A:b?secret={s}&digits"),
            TotpError::Uri("parameter without '='"),
        ),
        (
            "otpauth://totp/A:b?secret=JBSWY3DPEHPK3PXP".to_owned(),
            TotpError::SecretLength,
        ),
        (
            "otpauth://totp/A:b?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1".to_owned(),
            TotpError::Base32("invalid character"),
        ),
        (
            format!("otpauth://totp/A:?secret={s}"),
            TotpError::Name("empty"),
        ),
        (
            format!("otpauth://totp/A:b%0Ac?secret={s}"),
            TotpError::Name("control character"),
        ),
        (
            format!("otpauth://totp/A%20:b?secret={s}"),
            TotpError::Name("leading or trailing white space"),
        ),
        (
            format!(
                "otpauth://totp/A:b?secret={s}&x={}",
                "y".repeat(MAX_URI_LEN)
            ),
            TotpError::Uri("longer than MAX_URI_LEN"),
        ),
    ];
    for (uri, expected) in cases {
        assert_eq!(Enrolment::parse_uri(&uri), Err(expected), "{uri}");
    }
}

#[test]
fn names_that_cannot_appear_in_a_label_are_refused() {
    let secret = || TotpSecret::from_bytes(SHA1_SEED).unwrap();
    for (issuer, account, why) in [
        ("ACME:Ops", "jo", "issuer contains ':'"),
        ("", "jo", "empty"),
        ("ACME", "", "empty"),
        (" ACME", "jo", "leading or trailing white space"),
        ("ACME", "jo\u{2003}", "leading or trailing white space"),
        ("AC\u{7}ME", "jo", "control character"),
    ] {
        assert_eq!(
            Enrolment::new(issuer, account, secret(), Totp::default()),
            Err(TotpError::Name(why)),
            "{issuer:?} {account:?}"
        );
    }
    assert_eq!(
        Enrolment::new(&"x".repeat(257), "jo", secret(), Totp::default()),
        Err(TotpError::Name("longer than MAX_NAME_LEN"))
    );
}

// ----- recovery codes -----

fn is_crockford_group(s: &str) -> bool {
    s.len() == 5
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

#[test]
fn recovery_codes_are_grouped_distinct_and_each_works_once() {
    let (mut set, codes) = RecoveryCodes::generate(10).unwrap();
    assert_eq!(codes.len(), 10);
    assert_eq!(set.remaining(), 10);
    let texts: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
    for text in &texts {
        let (a, b) = text.split_once('-').unwrap();
        assert!(is_crockford_group(a) && is_crockford_group(b), "{text}");
    }
    let mut unique = texts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 10);

    // Every way a person might type a code, one per code.
    let typed = |i: usize, code: &str| -> String {
        match i % 5 {
            0 => code.to_owned(),
            1 => code.to_lowercase(),
            2 => code.replace('-', ""),
            3 => format!("  {}\n", code.replace('-', " ")),
            _ => code.replace('0', "o").replace('1', "I").to_lowercase(),
        }
    };
    for (i, code) in texts.iter().enumerate() {
        assert_eq!(set.consume(&typed(i, code)), Ok(9 - i), "{code}");
        assert_eq!(set.consume(code), Err(TotpError::InvalidRecoveryCode));
    }
    assert_eq!(set.remaining(), 0);
}

#[test]
fn recovery_codes_of_another_set_or_malformed_ones_are_refused() {
    let (mut set, _) = RecoveryCodes::generate(3).unwrap();
    let (_, other) = RecoveryCodes::generate(3).unwrap();
    assert_eq!(
        set.consume(other[0].expose()),
        Err(TotpError::InvalidRecoveryCode)
    );
    for bad in [
        "",
        "ABCDE",
        "ABCDE-FGHJK-M",
        "ABCDE_FGHJK",
        "ABCDU-FGHJK",
        "ÄBCDE-FGHJK",
    ] {
        assert_eq!(
            set.consume(bad),
            Err(TotpError::MalformedRecoveryCode),
            "{bad}"
        );
    }
    assert_eq!(
        set.consume(&"-".repeat(100)),
        Err(TotpError::MalformedRecoveryCode)
    );
    assert_eq!(set.remaining(), 3);
}

#[test]
fn a_stored_recovery_set_keeps_its_codes_and_spent_ones_stay_spent() {
    let (mut set, codes) = RecoveryCodes::generate(4).unwrap();
    set.consume(codes[1].expose()).unwrap();
    let stored = set.to_stored();
    assert!(stored.starts_with("nova-rc1$"));
    for code in &codes {
        assert!(!stored.contains(code.expose()));
    }
    let mut loaded = RecoveryCodes::from_stored(&stored).unwrap();
    assert_eq!(loaded.remaining(), 3);
    assert_eq!(
        loaded.consume(codes[1].expose()),
        Err(TotpError::InvalidRecoveryCode)
    );
    assert_eq!(loaded.consume(codes[3].expose()), Ok(2));
    let shown = format!("{loaded:?}");
    assert!(shown.contains("remaining: 2"), "{shown}");

    // All spent: still a valid stored set.
    for i in [0, 2] {
        loaded.consume(codes[i].expose()).unwrap();
    }
    let empty = RecoveryCodes::from_stored(&loaded.to_stored()).unwrap();
    assert_eq!(empty.remaining(), 0);
}

#[test]
fn malformed_stored_recovery_sets_and_counts_are_refused() {
    let (set, _) = RecoveryCodes::generate(2).unwrap();
    let stored = set.to_stored();
    let (salt_part, _) = stored.rsplit_once('$').unwrap();
    for (text, why) in [
        ("", "unknown format"),
        ("nova-rc2$x$y", "unknown format"),
        ("nova-rc1$x", "wrong number of fields"),
        (&format!("{stored}$"), "wrong number of fields"),
        ("nova-rc1$short$", "bad salt"),
        (&format!("{salt_part}$AAAA"), "bad hash"),
        (&format!("{stored},"), "bad hash"),
    ] {
        assert_eq!(
            RecoveryCodes::from_stored(text).map(|s| s.remaining()),
            Err(TotpError::MalformedStoredCodes(why)),
            "{text}"
        );
    }
    let hash = stored.rsplit_once(',').unwrap().1;
    let too_many = format!(
        "{salt_part}${}",
        vec![hash; MAX_RECOVERY_CODES + 1].join(",")
    );
    assert_eq!(
        RecoveryCodes::from_stored(&too_many).map(|s| s.remaining()),
        Err(TotpError::MalformedStoredCodes("too many codes"))
    );
    for count in [0, MAX_RECOVERY_CODES + 1] {
        assert_eq!(
            RecoveryCodes::generate(count).map(|(s, _)| s.remaining()),
            Err(TotpError::RecoveryCodeCount)
        );
    }
}

// ----- remember this device -----

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn a_device_token_verifies_for_its_user_and_device_until_it_expires() {
    let tokens = DeviceTokens::new(&[3u8; 32]).unwrap();
    let (tenant, user) = ids();
    let now = at(1_700_000_000);
    let token = tokens
        .issue_at(tenant, user, "laptop-1", 30 * DAY, now)
        .unwrap();
    assert!(token.expose().starts_with(DEVICE_TOKEN_PREFIX));
    assert_eq!(format!("{token:?}"), "IssuedSecret([REDACTED])");
    assert_eq!(format!("{tokens:?}"), "DeviceTokens([REDACTED])");

    let device = tokens
        .verify_at(token.expose(), tenant, user, "laptop-1", now + DAY)
        .unwrap();
    assert_eq!(device.issued_at, now);
    assert_eq!(device.expires_at, now + 30 * DAY);
    let last_second = now + 30 * DAY - Duration::from_secs(1);
    assert!(
        tokens
            .verify_at(token.expose(), tenant, user, "laptop-1", last_second)
            .is_ok()
    );
    for later in [now + 30 * DAY, now + 365 * DAY] {
        assert_eq!(
            tokens.verify_at(token.expose(), tenant, user, "laptop-1", later),
            Err(TotpError::DeviceTokenExpired)
        );
    }
}

#[test]
fn a_device_token_for_another_user_tenant_device_or_key_is_refused() {
    let tokens = DeviceTokens::new(&[3u8; 32]).unwrap();
    let (tenant, user) = ids();
    let now = at(1_700_000_000);
    let token = tokens.issue_at(tenant, user, "laptop-1", DAY, now).unwrap();
    let t = token.expose();
    assert_eq!(
        tokens.verify_at(t, tenant, UserId::new_v4(), "laptop-1", now),
        Err(TotpError::DeviceTokenWrongUser)
    );
    assert_eq!(
        tokens.verify_at(t, TenantId::new_v4(), user, "laptop-1", now),
        Err(TotpError::DeviceTokenWrongUser)
    );
    assert_eq!(
        tokens.verify_at(t, tenant, user, "laptop-2", now),
        Err(TotpError::DeviceTokenInvalid)
    );
    let other_key = DeviceTokens::new(&[4u8; 32]).unwrap();
    assert_eq!(
        other_key.verify_at(t, tenant, user, "laptop-1", now),
        Err(TotpError::DeviceTokenInvalid)
    );
}

#[test]
fn every_single_character_change_to_a_device_token_is_refused() {
    let tokens = DeviceTokens::new(&[3u8; 32]).unwrap();
    let (tenant, user) = ids();
    let now = at(1_700_000_000);
    let token = tokens.issue_at(tenant, user, "d", DAY, now).unwrap();
    let t = token.expose();
    for i in DEVICE_TOKEN_PREFIX.len()..t.len() {
        let mut bytes = t.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        let result = tokens.verify_at(&changed, tenant, user, "d", now);
        assert!(
            matches!(
                result,
                Err(TotpError::DeviceTokenInvalid | TotpError::MalformedDeviceToken)
            ),
            "position {i}: {result:?}"
        );
    }
    for malformed in [
        String::new(),
        t[..t.len() - 1].to_owned(),
        format!("{t}A"),
        t.replacen(DEVICE_TOKEN_PREFIX, "nova_rt_", 1),
        format!("{}=", &t[..t.len() - 1]),
        t.replace('A', "+"),
    ] {
        if malformed == t {
            continue;
        }
        assert_eq!(
            tokens.verify_at(&malformed, tenant, user, "d", now),
            Err(TotpError::MalformedDeviceToken),
            "{malformed}"
        );
    }
}

#[test]
fn device_token_keys_lifetimes_and_device_ids_are_checked() {
    assert_eq!(
        DeviceTokens::new(&[1u8; 31]).map(|_| ()),
        Err(TotpError::WeakDeviceKey)
    );
    let tokens = DeviceTokens::new(&[1u8; 32]).unwrap();
    let (tenant, user) = ids();
    let now = at(1_700_000_000);
    for ttl in [Duration::ZERO, MAX_DEVICE_TTL + Duration::from_secs(1)] {
        assert_eq!(
            tokens.issue_at(tenant, user, "d", ttl, now).map(|_| ()),
            Err(TotpError::DeviceTokenTtl)
        );
    }
    assert!(
        tokens
            .issue_at(tenant, user, "d", MAX_DEVICE_TTL, now)
            .is_ok()
    );
    for device in [String::new(), "d".repeat(257)] {
        assert_eq!(
            tokens.issue_at(tenant, user, &device, DAY, now).map(|_| ()),
            Err(TotpError::DeviceId)
        );
    }
}

// ----- MFA policy -----

#[test]
fn admin_actions_and_rls_bypass_need_a_fresh_second_factor() {
    let policy = MfaPolicy::default();
    assert!(policy.requires_mfa(Sensitive::AdminAction));
    assert!(policy.requires_mfa(Sensitive::RlsBypass));
    assert!(!policy.requires_mfa(Sensitive::Other));
    assert!(
        MfaPolicy::new()
            .for_every_action()
            .requires_mfa(Sensitive::Other)
    );

    let now = at(1_700_000_000);
    let minutes = |m: u64| Duration::from_secs(60 * m);
    for action in [Sensitive::AdminAction, Sensitive::RlsBypass] {
        assert_eq!(policy.check(action, Some(now - minutes(14)), now), Ok(()));
        assert_eq!(policy.check(action, Some(now - minutes(15)), now), Ok(()));
        for stale in [None, Some(now - minutes(16)), Some(now + minutes(2))] {
            assert_eq!(
                policy.check(action, stale, now),
                Err(TotpError::MfaRequired),
                "{stale:?}"
            );
        }
    }
    assert_eq!(policy.check(Sensitive::Other, None, now), Ok(()));
    let strict = MfaPolicy::new().max_age(minutes(5)).for_every_action();
    assert_eq!(
        strict.check(Sensitive::Other, Some(now - minutes(6)), now),
        Err(TotpError::MfaRequired)
    );
}

#[test]
fn the_policy_reads_the_second_factor_from_the_requests_context() {
    struct Login;
    impl nova_tenancy::CredentialVerifier for Login {
        fn verifier_name(&self) -> &'static str {
            "test/login"
        }
    }
    let now = at(1_700_000_000);
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let method = |m: &str| nova_tenancy::AuthMethod::new(m).unwrap();
    let password_only = nova_tenancy::TenantContext::from_verified(
        &Login,
        nova_tenancy::VerifiedIdentity::new(TenantId::new_v4())
            .user(UserId::new_v4())
            .methods([method("pwd")])
            .authenticated_at(now - minutes(1)),
    );
    let hipaa = MfaPolicy::new().max_age(minutes(15));
    assert_eq!(
        hipaa.check_context(Sensitive::AdminAction, &password_only, now),
        Err(TotpError::MfaRequired)
    );
    assert_eq!(
        hipaa.check_context(Sensitive::Other, &password_only, now),
        Ok(())
    );
    // A TOTP step-up now: admin actions for fifteen minutes, then a new step-up.
    let stepped = password_only
        .stepped_up(&Login, method("otp"), now)
        .unwrap();
    assert_eq!(
        hipaa.check_context(Sensitive::AdminAction, &stepped, now),
        Ok(())
    );
    assert_eq!(
        hipaa.check_context(Sensitive::RlsBypass, &stepped, now + minutes(15)),
        Ok(())
    );
    assert_eq!(
        hipaa.check_context(Sensitive::AdminAction, &stepped, now + minutes(16)),
        Err(TotpError::MfaRequired)
    );
}

#[test]
fn error_messages_name_the_limits() {
    for (e, text) in [
        (TotpError::UnsupportedDigits, "a code has 6 to 8 digits"),
        (TotpError::SecretLength, "a secret has 16 to 64 bytes"),
        (
            TotpError::MalformedCode { digits: 7 },
            "a code must be exactly 7 ASCII digits",
        ),
        (
            TotpError::RecoveryCodeCount,
            "a recovery code set has 1 to 32 codes",
        ),
        (TotpError::DeviceId, "a device id has 1 to 256 bytes"),
        (
            TotpError::WeakDeviceKey,
            "device token key shorter than 32 bytes",
        ),
    ] {
        assert_eq!(e.to_string(), text);
    }
}

#[test]
fn errors_never_echo_the_presented_code() {
    let (totp, secret) = rfc_sha1();
    for code in ["94287083", "9428708x"] {
        let e = totp.check_at(&secret, code, at(59)).unwrap_err();
        assert!(!e.to_string().contains(code) && !format!("{e:?}").contains(code));
    }
}

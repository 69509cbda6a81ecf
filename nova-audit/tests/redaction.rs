//! Redaction policies: no value a policy names, and no value marked sensitive, reaches the
//! log file in clear; keyed hashes match an independent HMAC computation, are stable within a
//! tenant and differ across tenants and keys; a hash rule without a key redacts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hmac::{Hmac, KeyInit, Mac};
use nova_audit::{
    AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, RedactionPolicy, VerifierKey, verify_file,
};
use nova_tenancy::TenantId;
use proptest::prelude::*;
use sha2::Sha256;

const KEY: [u8; 32] = [0x5a; 32];

/// The documented hash, computed here from the specification rather than through Nova.
fn expected_hash(key: &[u8; 32], tenant: TenantId, value: &str) -> String {
    let mut msg = b"nova-audit/redaction/v1\0".to_vec();
    msg.extend_from_slice(tenant.as_uuid().as_bytes());
    msg.push(0);
    msg.extend_from_slice(value.as_bytes());
    let tag = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap()
        .chain_update(&msg)
        .finalize()
        .into_bytes();
    let hex: String = tag[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("hmac-sha256:{hex}")
}

fn full_policy(key: Option<[u8; 32]>) -> RedactionPolicy {
    key.map_or_else(RedactionPolicy::new, RedactionPolicy::with_hash_key)
        .hash_param("email")
        .redact_param("card")
        .hash_param("account")
        .hash_actor()
        .redact_ip()
}

fn event(tenant: TenantId) -> AuditEvent {
    AuditEvent::builder(tenant, "auth.login_failed", "auth.login")
        .time_ms(1_700_000_000_000)
        .actor("carol@globex.example")
        .ip("203.0.113.77".parse().unwrap())
        .param("email", "carol@globex.example")
        .param("card", "4111111111111111")
        .int_param("account", 98_765_432_123)
        .sensitive_param("password", "hunter2-correct-horse")
        .param("reason", "bad_password")
        .build()
}

const CLEAR_VALUES: [&str; 5] = [
    "carol@globex.example",
    "203.0.113.77",
    "4111111111111111",
    "98765432123",
    "hunter2-correct-horse",
];

#[test]
fn clear_values_never_reach_the_file_sink() {
    let dir = std::env::temp_dir().join(format!(
        "nova-audit-redaction-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.jsonl");
    let signer = CheckpointSigner::from_seed("audit.test", &[3; 32]).unwrap();
    let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
    let tenant = TenantId::new_v4();
    let mut log = FileLog::open(&path, "audit.test/t", signer, FsyncPolicy::Always)
        .unwrap()
        .with_redaction(full_policy(Some(KEY)));
    log.append_batch(&[event(tenant), event(tenant)]).unwrap();
    drop(log);

    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    for clear in CLEAR_VALUES {
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{clear} reached the file"
        );
    }
    // What did reach it: the documented hashes and markers, and the untouched parameter.
    let email = expected_hash(&KEY, tenant, "carol@globex.example");
    assert_eq!(text.matches(&email).count(), 4, "actor and email, twice");
    assert!(text.contains(&expected_hash(&KEY, tenant, "98765432123")));
    assert!(text.contains(&expected_hash(&KEY, tenant, "hunter2-correct-horse")));
    assert!(text.contains(r#""card":"[REDACTED]""#));
    assert!(text.contains(r#""ip":"[REDACTED]""#));
    assert!(text.contains(r#""reason":"bad_password""#));
    // The redacted log is still a verifiable log.
    assert!(verify_file(&path, &key, None).unwrap().ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hashes_are_stable_per_tenant_and_differ_across_tenants_and_keys() {
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let policy = full_policy(Some(KEY));
    let encode =
        |p: &RedactionPolicy, t| String::from_utf8(event(t).canonical_json_with(p)).unwrap();
    let (a1, a2, b1) = (encode(&policy, a), encode(&policy, a), encode(&policy, b));
    assert_eq!(a1, a2);
    let ha = expected_hash(&KEY, a, "carol@globex.example");
    let hb = expected_hash(&KEY, b, "carol@globex.example");
    assert_ne!(ha, hb);
    assert!(a1.contains(&ha) && !a1.contains(&hb));
    assert!(b1.contains(&hb) && !b1.contains(&ha));
    let other = encode(&full_policy(Some([0x5b; 32])), a);
    assert!(!other.contains(&ha));
}

#[test]
fn a_hash_rule_without_a_key_redacts_and_the_default_redacts_sensitive_values() {
    let tenant = TenantId::new_v4();
    let keyless = String::from_utf8(event(tenant).canonical_json_with(&full_policy(None))).unwrap();
    for clear in CLEAR_VALUES {
        assert!(!keyless.contains(clear), "{clear} in {keyless}");
    }
    assert!(!keyless.contains("hmac-sha256:"));
    assert_eq!(keyless.matches("[REDACTED]").count(), 6);

    let plain = String::from_utf8(event(tenant).canonical_json()).unwrap();
    assert!(!plain.contains("hunter2"));
    assert!(plain.contains(r#""password":"[REDACTED]""#));
    assert!(
        plain.contains("carol@globex.example"),
        "without a policy only marked values change"
    );
}

#[test]
fn a_rule_can_redact_a_value_marked_sensitive_instead_of_hashing_it() {
    let tenant = TenantId::new_v4();
    let policy = RedactionPolicy::with_hash_key(KEY).redact_param("password");
    let json = String::from_utf8(event(tenant).canonical_json_with(&policy)).unwrap();
    assert!(json.contains(r#""password":"[REDACTED]""#));
}

#[test]
fn the_policy_debug_output_hides_the_key() {
    let debug = format!("{:?}", full_policy(Some(KEY)));
    assert_eq!(
        debug,
        r#"RedactionPolicy { key: Some("[REDACTED]"), params: {"account": KeyedHash, "card": Redact, "email": KeyedHash}, actor: Some(KeyedHash), ip: Some(Redact) }"#
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the value and wherever a policy names it, it never appears in the encoding.
    #[test]
    fn no_named_value_appears_in_clear(
        secret in "[A-Za-z0-9@._+-]{12,40}",
        name in "[a-z_]{1,12}",
        with_key in any::<bool>(),
        slot in 0u8..4,
    ) {
        let tenant = TenantId::new_v4();
        let base = if with_key { RedactionPolicy::with_hash_key(KEY) } else { RedactionPolicy::new() };
        let builder = AuditEvent::builder(tenant, "data.read", "tickets.read").param("note", "ok");
        let (policy, event) = match slot {
            0 => (base.hash_param(&name), builder.param(&name, &secret).build()),
            1 => (base.redact_param(&name), builder.param(&name, &secret).build()),
            2 => (base.hash_actor(), builder.actor(&secret).build()),
            _ => (base, builder.sensitive_param(&name, &secret).build()),
        };
        let json = String::from_utf8(event.canonical_json_with(&policy)).unwrap();
        prop_assert!(!json.contains(&secret), "{} in {}", secret, json);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    }
}

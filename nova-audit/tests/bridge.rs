//! The `tracing` bridge: `nova::audit` events from Nova crates become audit events with the
//! right tenant, type, outcome and actor; they reach a signed log and the detector; other
//! targets are ignored; events without a valid tenant are kept, under the operator tenant.

#![cfg(feature = "tracing-bridge")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use nova_audit::{
    AuditEvent, AuditLayer, CheckpointSigner, Detector, FileLog, FsyncPolicy, Outcome, Rule,
    VerifierKey, event_types, verify_file,
};
use nova_tenancy::{AUDIT_TARGET, TenantContext, TenantId};
use tracing_subscriber::layer::SubscriberExt as _;

/// Runs `f` with an [`AuditLayer`] installed and returns what it recorded.
fn record(operator: TenantId, f: impl FnOnce()) -> Vec<AuditEvent> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let layer = AuditLayer::new(operator, move |e| sink.lock().unwrap().push(e));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    seen.lock().unwrap().clone()
}

/// A parameter of the event's canonical encoding, as text.
fn param(e: &AuditEvent, name: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&e.canonical_json()).unwrap();
    match &json["params"][name] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[test]
fn a_system_context_from_nova_tenancy_is_recorded_under_its_tenant() {
    let (operator, tenant) = (TenantId::new_v4(), TenantId::new_v4());
    let mut request = None;
    let events = record(operator, || {
        let ctx = TenantContext::system(tenant, "nightly export").unwrap();
        request = Some(ctx.request_id());
    });
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.tenant, tenant);
    assert_eq!(e.event_type, "nova.system_context");
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.request_id, request);
    assert_eq!(param(e, "reason").as_deref(), Some("nightly export"));
    assert_eq!(
        param(e, "message").as_deref(),
        Some("system context created")
    );
}

#[test]
fn events_shaped_like_the_other_crates_map_to_the_detection_types() {
    let (operator, tenant) = (TenantId::new_v4(), TenantId::new_v4());
    let events = record(operator, || {
        // As nova-crypto and nova-auth emit them.
        tracing::warn!(target: AUDIT_TARGET, event = "crypto_shred", tenant = %tenant, versions_destroyed = 2u64, "tenant keys destroyed (crypto-shredding)");
        tracing::warn!(target: AUDIT_TARGET, event = "api_key_failure", key_id = "k_abc", tenant = %tenant, locked = false, "API key secret mismatch");
        tracing::warn!(target: AUDIT_TARGET, event = "rls_bypass_refused", tenant = %tenant, "row-level security bypass refused");
        tracing::info!(target: AUDIT_TARGET, event = "kek_rotated", kek = "main", version = 3u64, "key-encryption key rotated");
        tracing::warn!(target: AUDIT_TARGET, event = "cross_tenant_attempt", key_tenant = %operator, requested_tenant = %tenant, "API key used for another tenant");
        tracing::warn!(target: AUDIT_TARGET, event = "rls_bypass", tenant = "not-a-tenant", tenant_field = "forged", "row-level security bypass begun");
        // Not on the audit target: ignored.
        tracing::warn!(target: "app", event = "crypto_shred", tenant = %tenant);
    });
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[0].event_type, event_types::KEY_DESTROYED);
    assert_eq!(
        param(&events[0], "versions_destroyed").as_deref(),
        Some("2")
    );
    assert_eq!(events[1].event_type, event_types::LOGIN_FAILED);
    assert_eq!(events[1].outcome, Outcome::Failure);
    assert_eq!(events[1].actor.as_deref(), Some("api_key:k_abc"));
    assert_eq!(events[2].event_type, "nova.rls_bypass_refused");
    assert_eq!(events[2].outcome, Outcome::Denied);
    // No tenant field: kept, under the operator tenant, and marked.
    assert_eq!(events[3].tenant, operator);
    assert_eq!(param(&events[3], "tenant_field").as_deref(), Some("absent"));
    assert_eq!(param(&events[3], "kek").as_deref(), Some("main"));
    // nova-auth's cross-tenant shape: filed under the tenant that was targeted.
    assert_eq!(events[4].tenant, tenant);
    assert_eq!(events[4].event_type, event_types::CROSS_TENANT);
    assert_eq!(events[4].outcome, Outcome::Denied);
    assert_eq!(param(&events[4], "key_tenant"), Some(operator.to_string()));
    // A tenant field that does not parse: kept under the operator tenant, its value not
    // recorded, and an emitted field cannot overwrite the bridge's marker.
    assert_eq!(events[5].tenant, operator);
    assert_eq!(events[5].event_type, event_types::RLS_BYPASS);
    assert_eq!(
        param(&events[5], "tenant_field").as_deref(),
        Some("invalid")
    );
    let json = String::from_utf8(events[5].canonical_json()).unwrap();
    assert!(
        !json.contains("not-a-tenant") && !json.contains("forged"),
        "{json}"
    );
}

#[test]
fn bridged_events_reach_a_signed_log_and_the_detector() {
    let dir = std::env::temp_dir().join(format!("nova-audit-bridge-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let signer = CheckpointSigner::from_seed("audit.test", &[4; 32]).unwrap();
    let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
    let log =
        Mutex::new(FileLog::open(&path, "audit.test/t", signer, FsyncPolicy::Always).unwrap());
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let alert_sink = Arc::clone(&alerts);
    let detector = Detector::new(move |a| alert_sink.lock().unwrap().push(a.rule));
    let (operator, tenant) = (TenantId::new_v4(), TenantId::new_v4());
    let layer = AuditLayer::new(operator, move |e| {
        detector.observe(&e);
        log.lock().unwrap().append(&e).unwrap();
    });
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for _ in 0..6 {
            tracing::warn!(target: AUDIT_TARGET, event = "api_key_failure", key_id = "k_1", tenant = %tenant, "API key secret mismatch");
        }
        tracing::warn!(target: AUDIT_TARGET, event = "crypto_shred", tenant = %tenant, versions_destroyed = 1u64, "tenant keys destroyed");
    });
    assert_eq!(
        *alerts.lock().unwrap(),
        [Rule::RepeatedLoginFailures, Rule::KeyDestroyed]
    );
    let verdict = verify_file(&path, &key, None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The audit hook end to end: security events reported by Nova crates through the root
//! crate's `AuditHook` become audit events in a verified log and reach the detection rules,
//! without any crate depending on nova-audit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use nova_audit::{
    Alert, AuditLog, Detector, FileLog, FsyncPolicy, HookRecorder, Rule, WriterConfig, verify_file,
};
use nova_tenancy::{Actor, SecurityEvent, TenantContext, TenantId, report, set_audit_hook};

mod common;
use common::{key, signer, temp};

#[test]
fn reported_security_events_are_logged_and_detected() {
    let path = temp("hook.jsonl");
    let file = FileLog::open(&*path, "audit.test/t", signer(), FsyncPolicy::Always).unwrap();
    let log = Arc::new(AuditLog::spawn(file, WriterConfig::default()).unwrap());
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let sink = Arc::clone(&alerts);
    let detector = Detector::new(move |a| sink.lock().unwrap().push(a.clone()));
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let (writer, seen) = (Arc::clone(&log), Arc::clone(&recorded));
    let operator = TenantId::new_v4();
    let recorder = HookRecorder::new(operator, move |event| {
        detector.observe(&event);
        seen.lock().unwrap().push(event.clone());
        // Queue without waiting: the hook runs inside the operation being reported.
        drop(writer.try_append(event).unwrap());
    });
    assert!(set_audit_hook(Arc::new(recorder)).is_ok());

    // nova-tenancy reports a system context on its own.
    let tenant = TenantId::new_v4();
    let _ctx = TenantContext::system(tenant, "nightly export").unwrap();
    // Six failed API-key checks by one key, as nova-auth reports them.
    let key_id = "k1";
    for _ in 0..6 {
        report(
            &SecurityEvent::new("api_key_failure")
                .tenant(tenant)
                .actor(Actor::ApiKey(&key_id)),
        );
    }
    // An event without a tenant is filed under the operator tenant.
    report(&SecurityEvent::new("kek_rotated").details(&[("kek", &"root"), ("version", &2)]));

    let events = recorded.lock().unwrap().clone();
    assert_eq!(events.len(), 8);
    assert_eq!(events[0].event_type, "nova.system_context");
    assert_eq!(events[0].tenant, tenant);
    assert_eq!(events[1].event_type, "auth.login_failed");
    assert_eq!(events[1].actor.as_deref(), Some("api_key:k1"));
    assert_eq!(events[7].tenant, operator);
    assert!(
        String::from_utf8(events[7].canonical_json())
            .unwrap()
            .contains(r#""tenant_field":"absent""#)
    );
    let fired: Vec<Rule> = alerts.lock().unwrap().iter().map(|a| a.rule).collect();
    assert_eq!(fired, [Rule::RepeatedLoginFailures]);

    // The hook holds the log for the life of the process: flush instead of close.
    log.flush_blocking().unwrap();
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 8);
}

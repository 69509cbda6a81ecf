//! `PolicyStore::authorize` reports denials and delegation uses to the process's audit hook.
//! (Its own test binary: the hook is process-global and set once.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use nova_policy::{Attrs, Grant, PolicySet, PolicyStore, Request, Schema};
use nova_tenancy::{
    AuditHook, CredentialVerifier, Role, SecurityEvent, TenantContext, TenantId, UserId,
    VerifiedIdentity, set_audit_hook,
};

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl AuditHook for Recorder {
    fn record(&self, event: &SecurityEvent<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

struct TestVerifier;
impl CredentialVerifier for TestVerifier {
    fn verifier_name(&self) -> &'static str {
        "nova-policy tests"
    }
}

#[test]
fn denials_and_delegation_uses_are_reported_and_plain_allows_are_not() {
    let recorder = Arc::new(Recorder::default());
    assert!(set_audit_hook(recorder.clone()).is_ok());
    let schema =
        Schema::parse("entity User {}; entity Ticket { hr: Bool }; principal User;").unwrap();
    let store = PolicyStore::new(
        schema,
        PolicySet::parse(
            "role agent; role admin; allow agent to read on Ticket when !resource.hr;",
        )
        .unwrap(),
    )
    .unwrap();
    let tenant = TenantId::new_v4();
    store
        .grant(
            tenant,
            Grant::to_role("hr-1", "admin", ["read"], "Ticket", u64::MAX, "carol"),
        )
        .unwrap();
    let ctx = |role: &str| {
        TenantContext::from_verified(
            &TestVerifier,
            VerifiedIdentity::new(tenant)
                .user(UserId::new_v4())
                .roles([Role::new(role).unwrap()]),
        )
    };
    let (agent, admin) = (ctx("agent"), ctx("admin"));
    let me = Attrs::new();
    let plain = Attrs::new().with("hr", false);
    let hr = Attrs::new().with("hr", true);

    let ok = store.authorize(
        &agent,
        &Request::new("read", "Ticket")
            .principal_from(&agent, "a", &me)
            .resource(&plain),
    );
    assert!(ok.is_allowed());
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "a plain allow is not an event"
    );

    let no = store.authorize(
        &agent,
        &Request::new("read", "Ticket")
            .principal_from(&agent, "a", &me)
            .resource(&hr),
    );
    assert!(!no.is_allowed());
    let delegated = store.authorize(
        &admin,
        &Request::new("read", "Ticket")
            .principal_from(&admin, "b", &me)
            .resource(&hr),
    );
    assert!(delegated.used_delegation());

    let events = recorder.0.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].contains("policy_denied") && events[0].contains(&tenant.to_string()),
        "{}",
        events[0]
    );
    assert!(events[0].contains("condition is false"), "{}", events[0]);
    assert!(
        events[1].contains("policy_delegation_used")
            && events[1].contains("hr-1")
            && events[1].contains("carol"),
        "{}",
        events[1]
    );
}

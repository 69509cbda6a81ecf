//! Audit records (the outbox form of an event) from arbitrary bytes: never a panic, and a
//! record that reads re-encodes to one that reads back to an equal event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_audit::{AuditEvent, RedactionPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = AuditEvent::from_record(data) else {
        return;
    };
    let policy = RedactionPolicy::with_hash_key([3; 32]);
    let again = AuditEvent::from_record(&event.to_record(&policy)).expect("re-encoded record reads");
    assert_eq!(again, event);
    assert_eq!(again.canonical_json_with(&policy), event.canonical_json_with(&policy));
});

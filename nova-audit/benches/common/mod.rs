//! The events both audit benchmarks append, and the plain JSON encoding of the peers.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use nova_audit::AuditEvent;
use nova_tenancy::TenantId;

pub const BATCH: usize = 256;

pub fn events(tenant: TenantId) -> Vec<AuditEvent> {
    events_n(tenant, BATCH)
}

pub fn events_n(tenant: TenantId, n: usize) -> Vec<AuditEvent> {
    (0..n as u64)
        .map(|i| {
            AuditEvent::builder(tenant, "data.read", "tickets.read")
                .time_ms(1_700_000_000_000 + i)
                .actor("user:5f0c2a7e-1111-4c55-9a59-0a4b3c2d1e0f")
                .ip("10.1.2.3".parse().unwrap())
                .resource(&format!("ticket/{i}"))
                .rows(1)
                .duration_ms(3)
                .policy("agents-read-queue")
                .param("queue", "billing")
                .sensitive_param("email", "alice@example.com")
                .build()
        })
        .collect()
}

pub fn plain_line(e: &AuditEvent) -> Vec<u8> {
    let v = serde_json::json!({
        "time_ms": e.time_ms, "event_type": e.event_type, "tenant": e.tenant.to_string(),
        "actor": e.actor, "ip": e.ip.map(|i| i.to_string()), "action": e.action,
        "resource": e.resource, "rows": e.rows, "duration_ms": e.duration_ms,
        "policies": e.policies, "params": {"queue": "billing", "email": "[REDACTED]"},
    });
    let mut line = serde_json::to_vec(&v).unwrap();
    line.push(b'\n');
    line
}

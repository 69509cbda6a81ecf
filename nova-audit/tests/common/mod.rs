//! Fixtures shared by nova-audit's integration tests: throwaway log paths, the test signing
//! key and a standard event.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use nova_audit::{AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, VerifierKey};
use nova_tenancy::TenantId;

/// A log path in a fresh directory, removed when the test ends (pass or fail).
pub struct TempLog(PathBuf);

impl std::ops::Deref for TempLog {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempLog {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn temp(name: &str) -> TempLog {
    temp_in(std::env::temp_dir(), name)
}

pub fn temp_in(base: PathBuf, name: &str) -> TempLog {
    let dir = base.join(format!(
        "nova-audit-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempLog(dir.join(name))
}

pub fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed("audit.test", &[9; 32]).unwrap()
}

pub fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier_key()).unwrap()
}

pub fn event(tenant: TenantId, i: u64) -> AuditEvent {
    AuditEvent::builder(tenant, "data.read", "tickets.read")
        .time_ms(1_700_000_000_000 + i)
        .actor("user:1")
        .resource(&format!("ticket/{i}"))
        .sensitive_param("email", "alice@example.com")
        .build()
}

pub fn write_log(path: &Path, n: u64, batch: u64) -> TenantId {
    let tenant = TenantId::new_v4();
    let mut log = FileLog::open(path, "audit.test/t", signer(), FsyncPolicy::Always).unwrap();
    let mut i = 0;
    while i < n {
        let events: Vec<_> = (i..(i + batch).min(n)).map(|k| event(tenant, k)).collect();
        assert_eq!(log.append_batch(&events).unwrap(), i);
        i += batch;
    }
    tenant
}

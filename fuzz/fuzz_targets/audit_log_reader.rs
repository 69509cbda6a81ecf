//! The JSON-lines log reader on arbitrary bytes: `verify_reader` never panics, and a
//! verdict never claims more sealed entries than it read. Half the time the input is
//! prefixed with a real, signed log so that the fuzzer mutates deep into valid files.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nova_audit::{AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, VerifierKey, verify_reader};
use nova_tenancy::TenantId;

fn key() -> &'static VerifierKey {
    static KEY: OnceLock<VerifierKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let signer = CheckpointSigner::from_seed("fuzz.test", &[2; 32]).expect("valid name");
        VerifierKey::parse(&signer.verifier_key()).expect("own key parses")
    })
}

/// A small valid log (5 entries in two batches), written once.
fn seed_log() -> &'static [u8] {
    static LOG: OnceLock<Vec<u8>> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nova-fuzz-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.jsonl");
        let _ = std::fs::remove_file(&path);
        let signer = CheckpointSigner::from_seed("fuzz.test", &[2; 32]).expect("valid name");
        let mut log =
            FileLog::open(&path, "fuzz/t", signer, FsyncPolicy::Never).expect("log opens");
        let tenant = TenantId::new_v4();
        let events: Vec<AuditEvent> = (0..5u64)
            .map(|i| {
                AuditEvent::builder(tenant, "data.read", "tickets.read")
                    .time_ms(i)
                    .build()
            })
            .collect();
        log.append_batch(&events[..3]).expect("append");
        log.append_batch(&events[3..]).expect("append");
        let bytes = std::fs::read(&path).expect("read back");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

fuzz_target!(|data: &[u8]| {
    let input: Vec<u8> = match data.split_first() {
        Some((flag, rest)) if flag & 1 == 1 => {
            let mut v = seed_log().to_vec();
            // Overwrite part of the valid log with the fuzz bytes at a fuzz-chosen offset.
            let at = rest.first().map_or(0, |&b| usize::from(b) * v.len() / 256);
            v.truncate(at);
            v.extend_from_slice(rest.get(1..).unwrap_or_default());
            v
        }
        _ => data.to_vec(),
    };
    if let Ok(verdict) = verify_reader(input.as_slice(), key(), None) {
        assert!(verdict.sealed <= verdict.entries);
        if let Some(bad) = verdict.first_bad {
            assert!(bad <= verdict.entries);
        }
    }
});

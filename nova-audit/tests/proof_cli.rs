//! Inclusion bundles and the `nova-audit` command: proofs made from a real log verify for
//! every entry, any change to a bundle is refused, and the binary's verdicts and exit
//! statuses are right for good, tampered and truncated logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nova_audit::{
    AuditEvent, BundleError, CheckpointSigner, FileLog, FsyncPolicy, InclusionBundle, VerifierKey,
    prove_file,
};
use nova_tenancy::TenantId;
use proptest::prelude::*;

/// A fresh directory, removed when the test ends (pass or fail).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "nova-audit-cli-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed("audit.test", &[7; 32]).unwrap()
}

fn key_text() -> String {
    signer().verifier_key()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&key_text()).unwrap()
}

/// Writes `n` events in batches of `batch`, each batch sealed by a checkpoint.
fn write_log(path: &Path, n: u64, batch: u64) {
    let tenant = TenantId::new_v4();
    let mut log = FileLog::open(path, "audit.test/t", signer(), FsyncPolicy::Never).unwrap();
    let mut i = 0;
    while i < n {
        let events: Vec<_> = (i..(i + batch).min(n))
            .map(|k| {
                AuditEvent::builder(tenant, "data.read", "tickets.read")
                    .time_ms(1_700_000_000_000 + k)
                    .resource(&format!("ticket/{k}"))
                    .sensitive_param("email", "alice@example.com")
                    .build()
            })
            .collect();
        log.append_batch(&events).unwrap();
        i += batch;
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nova-audit"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_sealed_entry_has_a_bundle_that_verifies_and_round_trips() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 23, 5);
    for index in 0..23 {
        let bundle = prove_file(&log, &key(), index).unwrap();
        assert_eq!(bundle.index, index);
        let cp = bundle.verify(&key()).unwrap();
        assert!(cp.size > index);
        let text = bundle.to_json();
        assert_eq!(InclusionBundle::parse(&text).unwrap(), bundle);
        assert!(String::from_utf8_lossy(&bundle.entry).contains(&format!("ticket/{index}")));
        assert!(
            !text.contains("alice"),
            "a bundle carries no clear sensitive value"
        );
    }
    assert!(matches!(
        prove_file(&log, &key(), 23),
        Err(BundleError::NotSealed {
            index: 23,
            sealed: 23
        })
    ));
}

#[test]
fn a_bundle_from_a_tampered_log_is_refused() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 8, 4);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replace("ticket/6", "ticket/9")).unwrap();
    assert!(matches!(
        prove_file(&log, &key(), 1),
        Err(BundleError::LogNotTrusted(_))
    ));
}

#[test]
fn a_bundle_under_another_key_or_with_a_changed_entry_or_path_is_refused() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 9, 9);
    let bundle = prove_file(&log, &key(), 4).unwrap();

    let other = CheckpointSigner::from_seed("audit.test", &[8; 32]).unwrap();
    let other = VerifierKey::parse(&other.verifier_key()).unwrap();
    assert!(matches!(
        bundle.verify(&other),
        Err(BundleError::Checkpoint(_))
    ));

    let mut changed = bundle.clone();
    changed.entry = String::from_utf8(changed.entry)
        .unwrap()
        .replace("ticket/4", "ticket/5")
        .into_bytes();
    assert!(matches!(changed.verify(&key()), Err(BundleError::Proof(_))));

    let mut moved = bundle.clone();
    moved.index = 5;
    assert!(matches!(moved.verify(&key()), Err(BundleError::Proof(_))));

    let mut short = bundle.clone();
    short.path.pop();
    assert!(short.verify(&key()).is_err());

    let mut not_json = bundle;
    not_json.entry = b"not an event".to_vec();
    assert!(matches!(
        not_json.verify(&key()),
        Err(BundleError::Malformed(_))
    ));
}

#[test]
fn malformed_bundles_are_typed_errors() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 3, 3);
    let good = prove_file(&log, &key(), 1).unwrap().to_json();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let duplicate = good.replacen('{', "{\"index\":0,", 1);
    assert_ne!(
        duplicate, good,
        "the duplicate-member case must really be built"
    );
    let mut extra = v.clone();
    extra["extra"] = serde_json::json!(1);
    let mut version = v.clone();
    version["v"] = serde_json::json!(2);
    let mut bad_hash = v.clone();
    bad_hash["path"] = serde_json::json!(["AAAA"]);
    let mut negative = v;
    negative["index"] = serde_json::json!(-1);
    for text in [
        String::new(),
        "[]".into(),
        "{}".into(),
        duplicate,
        extra.to_string(),
        version.to_string(),
        bad_hash.to_string(),
        negative.to_string(),
        format!("{good} trailing"),
    ] {
        assert!(
            matches!(
                InclusionBundle::parse(&text),
                Err(BundleError::Malformed(_))
            ),
            "accepted: {text}"
        );
    }
}

#[test]
fn cli_verify_reports_ok_and_the_first_bad_entry_with_exit_statuses() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 12, 4);
    let log_s = log.to_str().unwrap();
    let key = key_text();

    let out = cli(&["verify", log_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("OK: 12 entries of audit.test/t"),
        "{}",
        stdout(&out)
    );
    // The right log by name passes; the same valid log expected under another name fails.
    let out = cli(&["verify", log_s, "--key", &key, "--origin", "audit.test/t"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = cli(&[
        "verify",
        log_s,
        "--key",
        &key,
        "--origin",
        "audit.test/other",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("not the one expected"));

    // The key can also come from a file.
    let key_file = dir.0.join("log.pub");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let at_key = format!("@{}", key_file.display());
    let out = cli(&["verify", log_s, "--key", &at_key]);
    assert_eq!(out.status.code(), Some(0));

    // Keep the last checkpoint aside, then truncate the log to its first batch.
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    let note: serde_json::Value = serde_json::from_str(last).unwrap();
    let cp_file = dir.0.join("checkpoint");
    std::fs::write(&cp_file, note["c"].as_str().unwrap()).unwrap();
    let cp_s = cp_file.to_str().unwrap();
    let out = cli(&["verify", log_s, "--key", &key, "--checkpoint", cp_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let first_batch: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&log, format!("{}\n", first_batch.join("\n"))).unwrap();
    let out = cli(&["verify", log_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "a clean prefix verifies alone");
    let out = cli(&["verify", log_s, "--key", &key, "--checkpoint", cp_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("truncated"), "{}", stdout(&out));

    // A deleted entry is named by its index.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(7); // entry 6 (lines: e0 e1 e2 e3 c e4 e5 e6 ...)
    std::fs::write(&log, format!("{}\n", lines.join("\n"))).unwrap();
    let out = cli(&["verify", log_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("FAILED: first bad entry is 6"),
        "{}",
        stdout(&out)
    );

    // An empty log proves nothing: incomplete, not OK.
    let empty = dir.0.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = cli(&["verify", empty.to_str().unwrap(), "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("INCOMPLETE"), "{}", stdout(&out));

    // Usage and I/O errors exit 2.
    assert_eq!(
        cli(&[
            "prove",
            "/nonexistent/nova.log",
            "--key",
            &key,
            "--index",
            "0"
        ])
        .status
        .code(),
        Some(2)
    );
    let big = dir.0.join("big.proof");
    std::fs::write(&big, vec![b' '; nova_audit::MAX_BUNDLE_LEN + 1]).unwrap();
    assert_eq!(
        cli(&["check-proof", big.to_str().unwrap(), "--key", &key])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(cli(&["verify", log_s]).status.code(), Some(2));
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        cli(&["verify", "/nonexistent/nova.log", "--key", &key])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        cli(&["verify", log_s, "--key", "not-a-key"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_log_spliced_from_two_logs_under_one_key_fails_at_the_splice() {
    let dir = temp_dir();
    // Two logs under one key with the same first four events, so that the second log's
    // checkpoint matches the spliced tree and only its origin gives the splice away.
    let tenant = TenantId::new_v4();
    let events: Vec<_> = (0..8)
        .map(|k| {
            AuditEvent::builder(tenant, "data.read", "tickets.read")
                .time_ms(k)
                .build()
        })
        .collect();
    let write = |name: &str, origin: &str| {
        let path = dir.0.join(name);
        let mut log = FileLog::open(&path, origin, signer(), FsyncPolicy::Never).unwrap();
        log.append_batch(&events[..4]).unwrap();
        log.append_batch(&events[4..]).unwrap();
        std::fs::read_to_string(&path).unwrap()
    };
    let a_text = write("a.jsonl", "audit.test/t");
    let b_text = write("b.jsonl", "audit.test/other");
    // a's entries 0-3 and checkpoint, then b's entries 4-7 and checkpoint.
    let a_head: Vec<&str> = a_text.lines().take(5).collect();
    let b_tail: Vec<&str> = b_text.lines().skip(5).collect();
    let spliced = dir.0.join("spliced.jsonl");
    std::fs::write(
        &spliced,
        format!("{}\n{}\n", a_head.join("\n"), b_tail.join("\n")),
    )
    .unwrap();
    let v = nova_audit::verify_file(&spliced, &key(), None).unwrap();
    assert_eq!(v.first_bad, Some(4), "{v:?}");
    assert!(v.reason.unwrap().contains("another log"));
    assert_eq!(v.origin, None);
    let v = nova_audit::verify_file(dir.0.join("a.jsonl"), &key(), None).unwrap();
    assert!(v.ok());
    assert_eq!(v.origin.as_deref(), Some("audit.test/t"));
}

#[test]
fn cli_prove_then_check_proof_and_a_tampered_proof_fails() {
    let dir = temp_dir();
    let log = dir.0.join("log.jsonl");
    write_log(&log, 10, 3);
    let log_s = log.to_str().unwrap();
    let key = key_text();

    let out = cli(&["prove", log_s, "--key", &key, "--index", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let proof = dir.0.join("proof.json");
    std::fs::write(&proof, &out.stdout).unwrap();
    let proof_s = proof.to_str().unwrap();

    let out = cli(&["check-proof", proof_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("OK: entry 7 is in audit.test/t at size 9"));
    assert!(stdout(&out).contains("ticket/7"));
    let out = cli(&[
        "check-proof",
        proof_s,
        "--key",
        &key,
        "--origin",
        "audit.test/t",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = cli(&[
        "check-proof",
        proof_s,
        "--key",
        &key,
        "--origin",
        "audit.test/u",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    // Without its checkpoint line the last batch (entry 9) is unsealed: verify reports it
    // as incomplete and prove refuses.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.pop().unwrap().starts_with("{\"c\":"));
    std::fs::write(&log, format!("{}\n", lines.join("\n"))).unwrap();
    let out = cli(&["verify", log_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("INCOMPLETE"), "{}", stdout(&out));
    let out = cli(&["prove", log_s, "--key", &key, "--index", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("not covered"), "{}", stdout(&out));

    // Claiming the proven entry sits at another index fails.
    let text = std::fs::read_to_string(&proof).unwrap();
    std::fs::write(&proof, text.replace("\"index\":7", "\"index\":6")).unwrap();
    let out = cli(&["check-proof", proof_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("FAILED"), "{}", stdout(&out));

    // Garbage is a verification failure, not a crash.
    std::fs::write(&proof, "{\"v\":1}").unwrap();
    let out = cli(&["check-proof", proof_s, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The parser never panics and anything it accepts re-encodes to an equal bundle.
    #[test]
    fn parse_never_panics_and_accepted_bundles_round_trip(text in "\\PC{0,300}") {
        if let Ok(bundle) = InclusionBundle::parse(&text) {
            prop_assert_eq!(InclusionBundle::parse(&bundle.to_json()).unwrap(), bundle);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Mutating a real bundle's text never panics, and whatever still parses and verifies is
    /// the very same bundle: no edit makes a different claim verify.
    #[test]
    fn an_edited_bundle_never_verifies_as_a_different_claim(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let original = fixture_bundle();
        let mut text = original.to_json().into_bytes();
        for (at, byte, kind) in edits {
            let at = at % (text.len() + 1);
            match kind {
                0 if at < text.len() => text[at] = byte,
                1 if at < text.len() => { text.remove(at); }
                _ => text.insert(at, byte),
            }
        }
        let Ok(text) = String::from_utf8(text) else { return Ok(()); };
        if let Ok(parsed) = InclusionBundle::parse(&text)
            && parsed.verify(&key()).is_ok()
        {
            prop_assert_eq!(parsed, original);
        }
    }
}

/// One bundle from a 13-entry log, made once for the mutation property.
fn fixture_bundle() -> InclusionBundle {
    static BUNDLE: std::sync::OnceLock<InclusionBundle> = std::sync::OnceLock::new();
    BUNDLE
        .get_or_init(|| {
            let dir = temp_dir();
            let log = dir.0.join("log.jsonl");
            write_log(&log, 13, 5);
            prove_file(&log, &key(), 6).unwrap()
        })
        .clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For any log size and entry, the bundle verifies, and flipping any one bit of the entry
    /// or of the path is refused.
    #[test]
    fn any_bit_flip_in_a_bundle_is_refused(n in 1u64..40, pick in any::<u64>(), bit in any::<u64>()) {
        let dir = temp_dir();
        let log = dir.0.join("log.jsonl");
        write_log(&log, n, 7);
        let index = pick % n;
        let bundle = prove_file(&log, &key(), index).unwrap();
        prop_assert!(bundle.verify(&key()).is_ok());
        let mut flipped = bundle.clone();
        let entry_bits = flipped.entry.len() as u64 * 8;
        let total = entry_bits + flipped.path.len() as u64 * 256;
        let at = bit % total;
        if at < entry_bits {
            flipped.entry[(at / 8) as usize] ^= 1 << (at % 8);
        } else {
            let k = at - entry_bits;
            flipped.path[(k / 256) as usize][((k % 256) / 8) as usize] ^= 1 << (k % 8);
        }
        prop_assert!(flipped.verify(&key()).is_err());
    }
}

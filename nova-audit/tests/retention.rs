//! Retention on the file log: the oldest entries lose their content but keep their hashes, so
//! the tree, every checkpoint (including one kept outside the log before pruning) and every
//! later entry still verify, and a hash stub cannot be used to hide a recent entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nova_audit::{BundleError, FileLog, FsyncPolicy, prove_file, verify_file};
use nova_tenancy::TenantId;

mod common;
use common::{event, key, signer, temp, write_log};

const T0: u64 = 1_700_000_000_000;

fn open(path: &std::path::Path) -> FileLog {
    FileLog::open(path, "audit.test/t", signer(), FsyncPolicy::Always).unwrap()
}

fn last_checkpoint(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().rfind(|l| l.starts_with(r#"{"c":"#)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["c"].as_str().unwrap().to_owned()
}

#[test]
fn pruned_entries_keep_the_tree_and_every_checkpoint_verifiable() {
    let path = temp("retention.jsonl");
    write_log(&path, 20, 5); // times T0 + 0 .. T0 + 19
    let before = last_checkpoint(&path);
    let size_before = std::fs::metadata(&*path).unwrap().len();

    let mut log = open(&path);
    assert_eq!(log.prune_before(T0 + 10).unwrap(), 10);
    let text = std::fs::read_to_string(&*path).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains(r#","h":""#)).count(), 10);
    assert!(!text.contains("ticket/9\""), "pruned content is gone");
    assert!(text.contains("ticket/10\""), "kept content stays");
    assert!(std::fs::metadata(&*path).unwrap().len() < size_before);

    let verdict = verify_file(&*path, &key(), Some(&before)).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!((verdict.entries, verdict.pruned), (20, 10));

    // Kept entries can still be proven; pruned ones cannot.
    prove_file(&*path, &key(), 15)
        .unwrap()
        .verify(&key())
        .unwrap();
    assert!(matches!(
        prove_file(&*path, &key(), 3),
        Err(BundleError::Pruned { index: 3 })
    ));

    // The writer goes on after pruning, and a reopened log rebuilds the same tree.
    let tenant = TenantId::new_v4();
    assert_eq!(log.append(&event(tenant, 20)).unwrap(), 20);
    let root = log.root();
    drop(log);
    let reopened = open(&path);
    assert_eq!((reopened.size(), reopened.root()), (21, root));
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!((verdict.entries, verdict.pruned), (21, 10));
}

#[test]
fn pruning_again_is_idempotent_and_extends_the_prefix() {
    let path = temp("again.jsonl");
    write_log(&path, 12, 4);
    let mut log = open(&path);
    assert_eq!(log.prune_before(T0 + 4).unwrap(), 4);
    assert_eq!(log.prune_before(T0 + 4).unwrap(), 4);
    assert_eq!(log.prune_before(T0 + 8).unwrap(), 8);
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.pruned, 8);
}

#[test]
fn an_entry_with_a_later_time_stops_pruning_so_no_hole_is_left() {
    let path = temp("order.jsonl");
    let tenant = TenantId::new_v4();
    let mut log = open(&path);
    let times = [1, 2, 50, 3, 4];
    for (i, t) in times.iter().enumerate() {
        let mut e = event(tenant, i as u64);
        e.time_ms = T0 + t;
        log.append(&e).unwrap();
    }
    // Entries 0 and 1 are older than the cutoff; entry 2 is not, so 3 and 4 wait.
    assert_eq!(log.prune_before(T0 + 10).unwrap(), 2);
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.pruned, 2);
}

#[test]
fn a_hash_stub_after_a_kept_entry_is_refused() {
    let path = temp("hide.jsonl");
    write_log(&path, 10, 5);
    let mut log = open(&path);
    log.prune_before(T0 + 2).unwrap();
    drop(log);
    // Replace entry 7 with a correct hash stub: the tree still matches every checkpoint,
    // but content was hidden out of order, which retention never does.
    let text = std::fs::read_to_string(&*path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(r#"{"i":7,"e":"#) {
                let event = &l[r#"{"i":7,"e":"#.len()..l.len() - 1];
                let leaf = nova_audit::leaf_hash(event.as_bytes());
                let hex: String = leaf.iter().map(|b| format!("{b:02x}")).collect();
                format!(r#"{{"i":7,"h":"{hex}"}}"#)
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&*path, lines.join("\n") + "\n").unwrap();
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert_eq!(verdict.first_bad, Some(7), "{verdict:?}");
    assert!(
        verdict
            .reason
            .unwrap()
            .contains("pruned after a kept entry")
    );
}

#[test]
fn a_changed_hash_stub_is_caught_by_its_checkpoint() {
    let path = temp("stub.jsonl");
    write_log(&path, 10, 5);
    let mut log = open(&path);
    log.prune_before(T0 + 3).unwrap();
    drop(log);
    let text = std::fs::read_to_string(&*path).unwrap();
    let stub = text
        .lines()
        .find(|l| l.starts_with(r#"{"i":1,"h":"#))
        .unwrap();
    // One hex digit changed: still a well-formed stub, but another hash.
    let mut bytes = stub.as_bytes().to_vec();
    let pos = stub.find(r#""h":""#).unwrap() + 5;
    bytes[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(bytes).unwrap();
    std::fs::write(&*path, text.replacen(stub, &flipped, 1)).unwrap();
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert_eq!(verdict.first_bad, Some(0), "{verdict:?}");
    assert!(verdict.reason.unwrap().contains("was changed"));
}

#[test]
fn a_malformed_stub_is_not_a_valid_entry() {
    let path = temp("bad-stub.jsonl");
    write_log(&path, 4, 4);
    let mut log = open(&path);
    log.prune_before(T0 + 1).unwrap();
    drop(log);
    let text = std::fs::read_to_string(&*path).unwrap();
    for bad in [r#"{"i":0,"h":"zz"}"#, r#"{"i":0,"h":"ABCDEF"}"#] {
        let stub = text.lines().next().unwrap();
        std::fs::write(&*path, text.replacen(stub, bad, 1)).unwrap();
        let verdict = verify_file(&*path, &key(), None).unwrap();
        assert_eq!(verdict.first_bad, Some(0), "{verdict:?}");
        assert!(FileLog::open(&*path, "audit.test/t", signer(), FsyncPolicy::Always).is_err());
    }
}

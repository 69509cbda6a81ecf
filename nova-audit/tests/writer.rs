//! `AuditLog`, the background writer: every acknowledged event is in the log at the index it
//! was given, batches form under load (group commit), a full queue pushes back instead of
//! growing, a failed batch is reported to each of its callers, and close commits the queue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nova_audit::{
    AppendError, AuditEvent, AuditLog, FileLog, FsyncPolicy, Sink, WriterConfig, verify_file,
};
use nova_tenancy::TenantId;

mod common;
use common::{event, key, signer, temp};

/// A sink that records batch sizes, can be held shut by a gate, and fails a chosen batch.
#[derive(Clone, Default)]
struct Probe {
    state: Arc<(Mutex<ProbeState>, Condvar)>,
}

#[derive(Default)]
struct ProbeState {
    batches: Vec<usize>,
    committed: Vec<String>,
    gate_closed: bool,
    fail_batch: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("probe sink refused the batch")]
struct ProbeError;

impl Probe {
    fn close_gate(&self) {
        self.state.0.lock().unwrap().gate_closed = true;
    }
    fn open_gate(&self) {
        self.state.0.lock().unwrap().gate_closed = false;
        self.state.1.notify_all();
    }
    fn batches(&self) -> Vec<usize> {
        self.state.0.lock().unwrap().batches.clone()
    }
    fn committed(&self) -> Vec<String> {
        self.state.0.lock().unwrap().committed.clone()
    }
}

impl Sink for Probe {
    type Error = ProbeError;

    async fn append_batch(&mut self, events: &[AuditEvent]) -> Result<u64, ProbeError> {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        while s.gate_closed {
            s = cv.wait(s).unwrap();
        }
        let n = s.batches.len();
        s.batches.push(events.len());
        if s.fail_batch == Some(n) {
            return Err(ProbeError);
        }
        let first = s.committed.len() as u64;
        s.committed.extend(
            events
                .iter()
                .map(|e| e.resource.clone().unwrap_or_default()),
        );
        Ok(first)
    }
}

fn numbered(tenant: TenantId, i: u64) -> AuditEvent {
    AuditEvent::builder(tenant, "data.read", "tickets.read")
        .time_ms(1_700_000_000_000 + i)
        .resource(&format!("ticket/{i}"))
        .build()
}

#[test]
fn concurrent_appends_get_distinct_consecutive_indices_and_the_file_verifies() {
    let path = temp("writer.jsonl");
    let file = FileLog::open(&*path, "audit.test/t", signer(), FsyncPolicy::Always).unwrap();
    let log = Arc::new(AuditLog::spawn(file, WriterConfig::default()).unwrap());
    let tenant = TenantId::new_v4();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| log.append_blocking(event(tenant, t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let indices: BTreeSet<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(indices, (0..800).collect::<BTreeSet<_>>());
    Arc::into_inner(log).unwrap().close_blocking().unwrap();

    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 800);
    // One checkpoint per batch: with eight writers and a sync per batch, batches form.
    let checkpoints = std::fs::read_to_string(&*path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(r#"{"c":"#))
        .count();
    assert!(checkpoints < 800, "no group commit: {checkpoints} batches");
}

#[test]
fn each_acknowledged_index_holds_that_callers_event() {
    let probe = Probe::default();
    let log = AuditLog::spawn(probe.clone(), WriterConfig::new(64, 16)).unwrap();
    let tenant = TenantId::new_v4();
    let acks: Vec<(u64, u64)> = (0..200u64)
        .map(|i| (i, log.append_blocking(numbered(tenant, i)).unwrap()))
        .collect();
    log.close_blocking().unwrap();
    let committed = probe.committed();
    for (i, index) in acks {
        assert_eq!(committed[index as usize], format!("ticket/{i}"));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn events_queued_while_the_sink_is_busy_are_committed_as_batches() {
    let probe = Probe::default();
    probe.close_gate();
    let log = AuditLog::spawn(probe.clone(), WriterConfig::new(256, 64)).unwrap();
    let tenant = TenantId::new_v4();
    let first = log.try_append(numbered(tenant, 0)).unwrap();
    // Give the writer time to take the first event and block in the sink.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rest: Vec<_> = (1..100u64)
        .map(|i| log.try_append(numbered(tenant, i)).unwrap())
        .collect();
    probe.open_gate();
    assert_eq!(first.await.unwrap(), 0);
    for (k, pending) in rest.into_iter().enumerate() {
        assert_eq!(pending.await.unwrap(), k as u64 + 1);
    }
    log.close().await.unwrap();
    let batches = probe.batches();
    assert_eq!(batches.iter().sum::<usize>(), 100);
    assert_eq!(batches[0], 1);
    // 99 queued events, at most 64 per batch: two batches, not 99.
    assert_eq!(&batches[1..], &[64, 35]);
}

#[test]
fn a_full_queue_pushes_back_instead_of_growing() {
    let probe = Probe::default();
    probe.close_gate();
    let log = AuditLog::spawn(probe.clone(), WriterConfig::new(4, 1)).unwrap();
    let tenant = TenantId::new_v4();
    let mut pending = vec![log.try_append(numbered(tenant, 0)).unwrap()];
    std::thread::sleep(Duration::from_millis(50)); // the writer holds event 0 in the sink
    for i in 1..=4 {
        pending.push(log.try_append(numbered(tenant, i)).unwrap());
    }
    assert_eq!(log.queued(), 4);
    assert!(matches!(
        log.try_append(numbered(tenant, 5)),
        Err(AppendError::Full)
    ));
    probe.open_gate();
    for (i, p) in pending.into_iter().enumerate() {
        let index = futures_executor(p).unwrap();
        assert_eq!(index, i as u64);
    }
    log.close_blocking().unwrap();
}

#[test]
fn a_failed_batch_fails_each_of_its_callers_and_the_log_goes_on() {
    let probe = Probe::default();
    probe.state.0.lock().unwrap().fail_batch = Some(1);
    let log = AuditLog::spawn(probe.clone(), WriterConfig::new(16, 1)).unwrap();
    let tenant = TenantId::new_v4();
    assert_eq!(log.append_blocking(numbered(tenant, 0)).unwrap(), 0);
    let err = log.append_blocking(numbered(tenant, 1)).unwrap_err();
    assert!(matches!(err, AppendError::Sink(_)), "{err:?}");
    assert_eq!(log.append_blocking(numbered(tenant, 2)).unwrap(), 1);
    log.close_blocking().unwrap();
    assert_eq!(probe.committed(), ["ticket/0", "ticket/2"]);
}

#[test]
fn close_commits_everything_already_queued() {
    let path = temp("close.jsonl");
    let file = FileLog::open(&*path, "audit.test/t", signer(), FsyncPolicy::PerBatch).unwrap();
    let log = AuditLog::spawn(file, WriterConfig::new(1024, 128)).unwrap();
    let tenant = TenantId::new_v4();
    let pending: Vec<_> = (0..500u64)
        .map(|i| log.try_append(event(tenant, i)).unwrap())
        .collect();
    log.close_blocking().unwrap();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(futures_executor(p).unwrap(), i as u64);
    }
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 500);
}

/// Waits for a future on a throwaway current-thread runtime.
fn futures_executor<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn flush_waits_for_everything_queued_before_it() {
    let probe = Probe::default();
    let log = AuditLog::spawn(probe.clone(), WriterConfig::new(256, 8)).unwrap();
    let tenant = TenantId::new_v4();
    for i in 0..50u64 {
        drop(log.try_append(numbered(tenant, i)).unwrap());
    }
    log.flush_blocking().unwrap();
    assert_eq!(probe.committed().len(), 50);
    log.close_blocking().unwrap();
}

/// Retention through the writer: it runs after the events queued before it, the log keeps
/// verifying, appends go on afterwards; a sink that cannot prune says so.
#[tokio::test]
async fn retention_runs_in_the_writer_after_what_was_queued_before_it() {
    let path = temp("writer-retention.jsonl");
    let file = FileLog::open(&path, "audit.test/t", signer(), FsyncPolicy::Always).unwrap();
    let log = AuditLog::spawn(file, WriterConfig::default()).unwrap();
    let tenant = TenantId::new_v4();
    let pending: Vec<_> = (0..10)
        .map(|i| log.try_append(event(tenant, i)).unwrap())
        .collect();
    // Queued after the ten appends, before they are awaited: it must see them all.
    assert_eq!(
        log.prune_before(1_700_000_000_000 + 6).await.unwrap(),
        Some(6)
    );
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(log.append(event(tenant, 10)).await.unwrap(), 10);
    log.close().await.unwrap();
    let verdict = verify_file(&*path, &key(), None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!((verdict.entries, verdict.pruned), (11, 6));

    let probe = AuditLog::spawn(Probe::default(), WriterConfig::default()).unwrap();
    assert_eq!(probe.prune_before(u64::MAX).await.unwrap(), None);
    probe.close().await.unwrap();
}

//! [`AuditLog`]: the one-call writer. A background thread owns the sink and commits whatever
//! has queued up as one batch (group commit); a bounded queue makes callers wait when the
//! sink falls behind, so memory stays bounded.
//!
//! `append` returns an event's index only after the sink reported the batch holding it as
//! durable. This module must never acknowledge an event the sink did not accept, and never
//! drop a queued event without answering its caller.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::{mpsc, oneshot};

use crate::event::AuditEvent;
use crate::file_log::{FileLog, LogError};

/// Storage a log's batches are appended to: [`FileLog`], `PgLog` (feature `postgres`), or
/// your own.
///
/// A sink must make a batch durable (as durable as it promises) before returning `Ok`, must
/// assign consecutive indices starting at the returned one, and on error must leave nothing
/// of the batch acknowledged.
pub trait Sink: Send + 'static {
    /// The sink's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Appends `events` as one batch and returns the index of the first.
    fn append_batch(
        &mut self,
        events: &[AuditEvent],
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Retention: removes the content of events older than `cutoff_ms`, keeping what the
    /// log needs to verify. `Ok(None)` for a sink that cannot prune (the caller must not
    /// take that for a pruned log).
    fn prune_before(
        &mut self,
        cutoff_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send {
        let _ = cutoff_ms;
        std::future::ready(Ok(None))
    }
}

impl Sink for FileLog {
    type Error = LogError;

    fn append_batch(
        &mut self,
        events: &[AuditEvent],
    ) -> impl Future<Output = Result<u64, LogError>> + Send {
        // The writer thread is dedicated to this sink, so blocking file I/O is fine here.
        std::future::ready(FileLog::append_batch(self, events))
    }

    fn prune_before(
        &mut self,
        cutoff_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, LogError>> + Send {
        std::future::ready(FileLog::prune_before(self, cutoff_ms).map(Some))
    }
}

/// Settings of the background writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterConfig {
    /// Events that may wait in the queue; further callers wait for room (back-pressure).
    pub queue: usize,
    /// Most events committed as one batch.
    pub max_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            max_batch: 512,
        }
    }
}

impl WriterConfig {
    /// A configuration with the given queue length and batch size (each at least 1).
    #[must_use]
    pub fn new(queue: usize, max_batch: usize) -> Self {
        Self {
            queue: queue.max(1),
            max_batch: max_batch.max(1),
        }
    }
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The sink failed the batch holding this event; the event is not in the log.
    #[error("audit sink failed: {0}")]
    Sink(Arc<dyn std::error::Error + Send + Sync>),
    /// The writer has stopped (closed, or its thread ended).
    #[error("audit writer has stopped")]
    Closed,
    /// [`AuditLog::try_append`] found the queue full.
    #[error("audit queue is full")]
    Full,
}

type Reply = oneshot::Sender<Result<u64, AppendError>>;
type PruneReply = oneshot::Sender<Result<Option<u64>, AppendError>>;

// Flushes are rare; boxing every event instead would cost an allocation per append.
#[allow(clippy::large_enum_variant)]
enum Job {
    Append(AuditEvent, Reply),
    /// Answered once everything queued before it has been through the sink.
    Flush(oneshot::Sender<()>),
    /// Retention, run after everything queued before it.
    Prune(u64, PruneReply),
}

/// A tamper-evident log with a background writer.
///
/// ```
/// use nova_audit::{AuditEvent, AuditLog, CheckpointSigner, FileLog, FsyncPolicy, WriterConfig};
/// use nova_tenancy::TenantId;
///
/// let path = std::env::temp_dir().join(format!("nova-doc-writer-{}.jsonl", std::process::id()));
/// let signer = CheckpointSigner::from_seed("example.com/audit/t1", &[7; 32])?;
/// let file = FileLog::open(&path, "example.com/audit/t1", signer, FsyncPolicy::Always)?;
/// let log = AuditLog::spawn(file, WriterConfig::default())?;
///
/// let tenant: TenantId = "0b0e4c3e-7c5a-4f0e-9d1a-2f6e8b1c9a01".parse()?;
/// let event = AuditEvent::builder(tenant, "ticket.read", "read").build();
/// let index = log.append_blocking(event)?;  // in async code: log.append(event).await
/// assert_eq!(index, 0);
/// log.close_blocking()?;
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    done: oneshot::Receiver<()>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer thread for `sink`.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be started.
    pub fn spawn<S: Sink>(sink: S, config: WriterConfig) -> std::io::Result<Self> {
        let config = WriterConfig::new(config.queue, config.max_batch);
        let (tx, rx) = mpsc::channel(config.queue);
        let (done_tx, done) = oneshot::channel();
        // A runtime of its own, so the writer works for synchronous callers too and a
        // PostgreSQL sink's connections live and die with the thread that uses them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("nova-audit-writer".into())
            .spawn(move || {
                runtime.block_on(run(sink, rx, config.max_batch));
                let _ = done_tx.send(());
            })?;
        Ok(Self { tx, done })
    }

    /// Appends `event` and returns its index once the sink holds it durably. Waits for
    /// room when the queue is full.
    ///
    /// # Errors
    /// [`AppendError::Sink`] when the batch failed (the event is not in the log),
    /// [`AppendError::Closed`] when the writer has stopped.
    pub async fn append(&self, event: AuditEvent) -> Result<u64, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Append(event, reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// [`AuditLog::append`] for synchronous code: blocks the calling thread. Do not call it
    /// from an async task (it would block that task's worker thread); use `append` there.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_blocking(&self, event: AuditEvent) -> Result<u64, AppendError> {
        block_on(self.append(event))
    }

    /// Queues `event` without waiting for room, and returns a future for its index; for
    /// callers that would rather shed load than wait.
    ///
    /// # Errors
    /// [`AppendError::Full`] when the queue is full, [`AppendError::Closed`] when the
    /// writer has stopped.
    pub fn try_append(
        &self,
        event: AuditEvent,
    ) -> Result<impl Future<Output = Result<u64, AppendError>> + use<>, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job::Append(event, reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::Full,
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?;
        Ok(async move { answer.await.map_err(|_| AppendError::Closed)? })
    }

    /// Waits until every event queued before this call has been through the sink
    /// (committed, or failed and reported to its caller). For a log shared by many callers,
    /// such as one behind a process-wide audit hook, where `close` is not possible.
    ///
    /// # Errors
    /// [`AppendError::Closed`] when the writer has stopped.
    pub async fn flush(&self) -> Result<(), AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Flush(reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)
    }

    /// Retention: once every event queued before this call is through the sink, removes
    /// the content of events older than `cutoff_ms` (see [`FileLog::prune_before`]) and
    /// returns how many entries are pruned in total; `None` for a sink that cannot prune.
    /// Appends wait meanwhile (a file log is rewritten).
    ///
    /// # Errors
    /// [`AppendError::Sink`] when pruning failed (the log is left as it was);
    /// [`AppendError::Closed`] when the writer has stopped.
    pub async fn prune_before(&self, cutoff_ms: u64) -> Result<Option<u64>, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Prune(cutoff_ms, reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// [`AuditLog::flush`] for synchronous code.
    ///
    /// # Errors
    /// As [`AuditLog::flush`].
    pub fn flush_blocking(&self) -> Result<(), AppendError> {
        block_on(self.flush())
    }

    /// Events queued and not yet committed.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Stops accepting events, commits everything queued, and waits for the writer to end.
    ///
    /// # Errors
    /// [`AppendError::Closed`] when the writer thread ended abnormally.
    pub async fn close(self) -> Result<(), AppendError> {
        drop(self.tx);
        self.done.await.map_err(|_| AppendError::Closed)
    }

    /// [`AuditLog::close`] for synchronous code.
    ///
    /// # Errors
    /// As [`AuditLog::close`].
    pub fn close_blocking(self) -> Result<(), AppendError> {
        block_on(self.close())
    }
}

async fn run<S: Sink>(mut sink: S, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut events = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    let mut flushes = Vec::new();
    let mut prunes: Vec<(u64, PruneReply)> = Vec::new();
    // `recv_many` returns 0 only once every sender is gone and the queue is empty, so
    // events queued before `close` are still committed.
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        for job in jobs.drain(..) {
            match job {
                Job::Append(event, reply) => {
                    events.push(event);
                    replies.push(reply);
                }
                Job::Flush(done) => flushes.push(done),
                Job::Prune(cutoff, reply) => prunes.push((cutoff, reply)),
            }
        }
        if !events.is_empty() {
            match sink.append_batch(&events).await {
                Ok(first) => {
                    for (k, reply) in (0u64..).zip(replies.drain(..)) {
                        // A caller that stopped waiting still has its event in the log.
                        let _ = reply.send(Ok(first + k));
                    }
                }
                Err(e) => {
                    let e: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
                    // Not on `nova::audit`: the tracing bridge would record this
                    // message through this very writer, looping on every failure.
                    tracing::error!(target: "nova_audit::writer", error = %e, events = events.len(), "audit batch failed");
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(AppendError::Sink(Arc::clone(&e))));
                    }
                }
            }
            events.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        for (cutoff, reply) in prunes.drain(..) {
            let result = sink.prune_before(cutoff).await.map_err(|e| {
                tracing::error!(target: "nova_audit::writer", error = %e, "audit retention failed");
                let e: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
                AppendError::Sink(e)
            });
            let _ = reply.send(result);
        }
    }
}

/// Runs a future to completion on the calling thread, parking between polls. Unlike
/// tokio's `blocking_*` helpers it never panics inside a runtime; the writer lives on its
/// own thread, so waiting here cannot deadlock it.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

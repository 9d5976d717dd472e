//! Group commit: one thread applies queued operations in a single write transaction and
//! commits once. Each operation must check everything that can fail *before* it writes,
//! so a refused operation leaves nothing in the shared transaction.

use std::sync::{Arc, mpsc};

use redb::WriteTransaction;
use tokio::sync::oneshot;

use crate::audit::Unflushed;
use crate::{CatalogError, Result};

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// An operation, and whether its commit must reach the disk before it is answered.
type Op = (
    bool,
    Box<dyn FnOnce(&WriteTransaction) -> Completion + Send>,
);

/// Most operations in one transaction; bounds the latency of the first one.
const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub(crate) struct WriterHandle {
    writer: Arc<Writer>,
}

/// The writer thread and its queue. When the last handle goes, the queue closes and
/// the drop waits for the thread to finish, so the database file is released when the
/// last `Catalog` is dropped (a process may open it again at once: a restarted node).
struct Writer {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl WriterHandle {
    /// `ledger`: the buffer of the catalog's audit log, None when it is off.
    pub(crate) fn start(db: Arc<redb::Database>, ledger: Option<Arc<Unflushed>>) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let thread = std::thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || {
                crate::audit::attach_to_this_thread(ledger);
                run(db, rx)
            })
            .expect("spawn catalog writer");
        WriterHandle {
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
            }),
        }
    }

    /// Runs `f` inside a group-committed write transaction; returns after the commit
    /// is on disk.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// `write`; with `durable` false the commit may stay in memory until a later durable
    /// one (a crash then rolls it back: for changes replayed from the Raft log).
    pub(crate) async fn write_with<R, F>(&self, durable: bool, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    {
        let (done, rx) = oneshot::channel();
        let op: Op = (
            durable,
            Box::new(move |txn| {
                let result = f(txn);
                Box::new(move |commit: Result<()>| {
                    let _ = done.send(commit.and(result));
                }) as Completion
            }),
        );
        // Unbounded queue: callers await their result, which is the backpressure.
        self.writer
            .tx
            .as_ref()
            .ok_or_else(|| CatalogError::Db("catalog writer stopped".into()))?
            .send(op)
            .map_err(|_| CatalogError::Db("catalog writer stopped".into()))?;
        rx.await
            .map_err(|_| CatalogError::Db("catalog writer stopped".into()))?
    }
}

fn run(db: Arc<redb::Database>, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let durable = ops.iter().any(|(d, _)| *d);
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "catalog: cannot begin a write transaction");
                for op in ops {
                    drop(op); // dropping the sender reports "writer stopped" to the caller
                }
                continue;
            }
        };
        if !durable && let Err(e) = txn.set_durability(redb::Durability::None) {
            tracing::warn!(error = %e, "catalog: cannot skip the sync; committing durably");
        }
        let completions: Vec<Completion> = ops.into_iter().map(|(_, op)| op(&txn)).collect();
        let commit = commit_with_records(txn, durable);
        if let Err(e) = &commit {
            tracing::error!(error = %e, "catalog commit failed");
        }
        for c in completions {
            c(commit.clone());
        }
    }
    // The queue closed: the last `Catalog` is going. Ledger records of commits that
    // did not reach the disk wait in memory; redb keeps those commits on a clean close,
    // so their records must go in now, durably, or the log would miss them.
    let closing = db
        .begin_write()
        .map_err(|e| CatalogError::Db(e.to_string()))
        .and_then(|txn| commit_with_records(txn, true));
    if let Err(e) = closing {
        tracing::error!(error = %e, "catalog: cannot write the last ledger records at close");
    }
}

/// Inserts the ledger records this commit must carry (all that wait, when `durable`)
/// and commits; if they cannot be written, nothing of `txn` is kept.
fn commit_with_records(txn: WriteTransaction, durable: bool) -> Result<()> {
    let commit = match crate::audit::flush(&txn, durable) {
        Ok(()) => txn
            .commit()
            .map_err(|e| CatalogError::Db(format!("commit failed: {e}"))),
        Err(e) => {
            let _ = txn.abort();
            Err(CatalogError::Db(format!(
                "cannot write the ledger records: {e}"
            )))
        }
    };
    crate::audit::finish(commit.is_ok());
    commit
}

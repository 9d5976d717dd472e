//! The Raft log and vote, in their own redb file (`DATA/raft-log.redb`): entries by index,
//! plus the vote, the committed id and the last purged id. Every write commits with
//! fsync before Raft is told it is done.
//!
//! openraft hands over one client write at a time, so appends go to a writer thread
//! that commits whatever queued meanwhile in one transaction (group commit) and then
//! reports each as flushed; entries queued but not yet committed are read from memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

type NodeId = u64;
type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The Raft log and vote, in a redb file.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<redb::Database>,
    jobs: std::sync::mpsc::Sender<Job>,
    pending: Arc<Mutex<Pending>>,
}

/// Entries handed to the writer and not yet committed (readers see them from here).
#[derive(Default)]
struct Pending {
    /// index -> (append number, entry bytes)
    entries: BTreeMap<u64, (u64, Vec<u8>)>,
    /// A truncation not yet committed: stored entries from here on are gone.
    truncated_from: Option<(u64, u64)>,
    next: u64,
}

type Op = Box<dyn FnOnce(&redb::WriteTransaction) -> std::result::Result<(), AnyError> + Send>;

enum Job {
    Append {
        rows: Vec<(u64, u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    Write {
        op: Op,
        done: tokio::sync::oneshot::Sender<std::result::Result<(), AnyError>>,
    },
}

/// Most jobs per transaction.
const MAX_BATCH: usize = 1024;

fn run_writer(
    db: Arc<redb::Database>,
    jobs: std::sync::mpsc::Receiver<Job>,
    pending: Arc<Mutex<Pending>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let result = (|| {
            let txn = db.begin_write().map_err(io)?;
            for job in &mut batch {
                match job {
                    Job::Append { rows, .. } => {
                        let mut t = txn.open_table(LOG).map_err(io)?;
                        for (i, _, b) in rows.iter() {
                            t.insert(*i, b.as_slice()).map_err(io)?;
                        }
                    }
                    Job::Write { op, .. } => {
                        let op = std::mem::replace(op, Box::new(|_| Ok(())));
                        op(&txn)?;
                    }
                }
            }
            txn.commit().map_err(io)
        })();
        if let Err(e) = &result {
            tracing::error!("cannot write the Raft log: {e}");
        }
        {
            // Committed: readers find these in the database now.
            let mut p = pending.lock().expect("pending lock");
            for job in &batch {
                if let Job::Append { rows, .. } = job {
                    for (i, n, _) in rows {
                        if p.entries.get(i).is_some_and(|(m, _)| m == n) {
                            p.entries.remove(i);
                        }
                    }
                }
            }
        }
        for job in batch {
            match job {
                Job::Append { done, .. } => done.log_io_completed(
                    result
                        .clone()
                        .map_err(|e| std::io::Error::other(e.to_string())),
                ),
                Job::Write { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

fn io(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log file.
    pub fn open(path: &Path) -> std::result::Result<LogStore, crate::ConsensusError> {
        let failed = |e: redb::Error| crate::ConsensusError::Log {
            path: path.to_path_buf(),
            source: e,
        };
        let db = redb::Database::create(path).map_err(|e| failed(e.into()))?;
        let txn = db.begin_write().map_err(|e| failed(e.into()))?;
        txn.open_table(LOG).map_err(|e| failed(e.into()))?;
        txn.open_table(STATE).map_err(|e| failed(e.into()))?;
        txn.commit().map_err(|e| failed(e.into()))?;
        let db = Arc::new(db);
        let (jobs, rx) = std::sync::mpsc::channel();
        let pending: Arc<Mutex<Pending>> = Default::default();
        let (d, p) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run_writer(d, rx, p))
            .map_err(|e| failed(redb::Error::Io(e)))?;
        Ok(LogStore { db, jobs, pending })
    }

    /// Runs `op` in the writer's next transaction; returns once it is committed.
    async fn write(&self, op: Op) -> std::result::Result<(), AnyError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Write { op, done })
            .map_err(|_| io("the Raft log writer stopped"))?;
        rx.await.map_err(|_| io("the Raft log writer stopped"))?
    }

    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> std::result::Result<T, AnyError> + Send + 'static,
    ) -> std::result::Result<T, AnyError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io)?
    }

    async fn get_state<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io)?;
            let t = txn.open_table(STATE).map_err(io)?;
            match t.get(key).map_err(io)? {
                Some(v) => postcard::from_bytes(v.value()).map(Some).map_err(io),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| StorageIOError::read(e).into())
    }

    async fn set_state<T: Serialize>(&self, key: &'static str, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(|e| StorageIOError::write(io(e)))?;
        self.write(Box::new(move |txn| {
            txn.open_table(STATE)
                .map_err(io)?
                .insert(key, bytes.as_slice())
                .map_err(io)?;
            Ok(())
        }))
        .await
        .map_err(|e| StorageIOError::write(e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        let stored: BTreeMap<u64, Vec<u8>> = self
            .blocking(move |db| {
                let txn = db.begin_read().map_err(io)?;
                let t = txn.open_table(LOG).map_err(io)?;
                let mut out = BTreeMap::new();
                for e in t.range::<u64>((start, end)).map_err(io)? {
                    let (k, v) = e.map_err(io)?;
                    out.insert(k.value(), v.value().to_vec());
                }
                Ok(out)
            })
            .await
            .map_err(StorageIOError::read_logs)?;
        // Overlay what the writer has not committed yet.
        let mut all = stored;
        {
            let p = self.pending.lock().expect("pending lock");
            if let Some((from, _)) = p.truncated_from {
                all.retain(|i, _| *i < from);
            }
            for (i, (_, b)) in p.entries.range((start, end)) {
                all.insert(*i, b.clone());
            }
        }
        all.values()
            .map(|b| postcard::from_bytes(b).map_err(|e| StorageIOError::read_logs(io(e)).into()))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_state("purged").await?;
        let last = self
            .blocking(|db| {
                let txn = db.begin_read().map_err(io)?;
                let t = txn.open_table(LOG).map_err(io)?;
                match t.last().map_err(io)? {
                    Some((_, v)) => {
                        let e: Entry<TypeConfig> = postcard::from_bytes(v.value()).map_err(io)?;
                        Ok(Some(e.log_id))
                    }
                    None => Ok(None),
                }
            })
            .await
            .map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.set_state("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_state("vote").await
    }

    // The committed index is not kept (openraft's default): keeping it would cost a
    // synced write per commit, and a restarted node learns it from the leader again.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, u64, Vec<u8>)> = {
            let mut p = self.pending.lock().expect("pending lock");
            let rows: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    p.next += 1;
                    let bytes = postcard::to_stdvec(&e).expect("log entries serialize");
                    (e.log_id.index, p.next, bytes)
                })
                .collect();
            for (i, n, b) in &rows {
                p.entries.insert(*i, (*n, b.clone()));
            }
            rows
        };
        // Flushed (and reported to Raft) by the writer, with whatever else queued.
        self.jobs
            .send(Job::Append {
                rows,
                done: callback,
            })
            .map_err(|_| StorageIOError::write_logs(io("the Raft log writer stopped")).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let from = log_id.index;
        let mark = {
            let mut p = self.pending.lock().expect("pending lock");
            p.entries.retain(|i, _| *i < from);
            p.next += 1;
            let mark = p.next;
            p.truncated_from = Some((from, mark));
            mark
        };
        let r = self.remove_range(from..).await;
        let mut p = self.pending.lock().expect("pending lock");
        if p.truncated_from.is_some_and(|(_, m)| m == mark) {
            p.truncated_from = None;
        }
        r
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.set_state("purged", &Some(log_id)).await?;
        self.remove_range(..=log_id.index).await
    }
}

impl LogStore {
    async fn remove_range(&self, range: impl RangeBounds<u64> + Send + 'static) -> Result<()> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.write(Box::new(move |txn| {
            let mut t = txn.open_table(LOG).map_err(io)?;
            t.retain_in::<u64, _>((start, end), |_, _| false)
                .map_err(io)?;
            Ok(())
        }))
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

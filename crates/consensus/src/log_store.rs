//! The Raft log and vote, in their own redb file (`DATA/raft-log.redb`): entries by index,
//! plus the vote, the committed id and the last purged id. Every write commits with
//! fsync before Raft is told it is done.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

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

#[derive(Clone)]
pub struct LogStore {
    db: Arc<redb::Database>,
}

fn io(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    pub fn open(path: &Path) -> anyhow::Result<LogStore> {
        let db = redb::Database::create(path)
            .map_err(|e| anyhow::anyhow!("cannot open the Raft log {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(STATE)?;
        txn.commit()?;
        Ok(LogStore { db: Arc::new(db) })
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
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io)?;
            txn.open_table(STATE)
                .map_err(io)?
                .insert(key, bytes.as_slice())
                .map_err(io)?;
            txn.commit().map_err(io)
        })
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
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io)?;
            let t = txn.open_table(LOG).map_err(io)?;
            let mut out = Vec::new();
            for e in t.range::<u64>((start, end)).map_err(io)? {
                let (_, v) = e.map_err(io)?;
                out.push(postcard::from_bytes(v.value()).map_err(io)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
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

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.set_state("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.get_state("committed").await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| {
                let bytes = postcard::to_stdvec(&e).expect("log entries serialize");
                (e.log_id.index, bytes)
            })
            .collect();
        let result = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(io)?;
                {
                    let mut t = txn.open_table(LOG).map_err(io)?;
                    for (i, b) in &rows {
                        t.insert(*i, b.as_slice()).map_err(io)?;
                    }
                }
                txn.commit().map_err(io)
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove_range(log_id.index..).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.set_state("purged", &Some(log_id)).await?;
        self.remove_range(..=log_id.index).await
    }
}

impl LogStore {
    async fn remove_range(&self, range: impl RangeBounds<u64> + Send + 'static) -> Result<()> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut t = txn.open_table(LOG).map_err(io)?;
                t.retain_in::<u64, _>((start, end), |_, _| false)
                    .map_err(io)?;
            }
            txn.commit().map_err(io)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

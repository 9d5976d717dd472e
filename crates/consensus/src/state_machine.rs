//! The state machine is the catalog itself: committed entries are applied to the
//! catalog's redb database through its group-commit writer, together with the id of the
//! last applied entry and the Raft membership (table `raft_applied`), in one
//! transaction, so a crash never leaves the two apart. Snapshots are the catalog's
//! tables copied whole (`Catalog::dump`), kept in `DATA/raft-snapshot.bin`.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use catalog::{Catalog, CatalogError, Proposal};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Member, Reply, TypeConfig};

type NodeId = u64;
type Result<T> = std::result::Result<T, StorageError<NodeId>>;

const APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_applied");

/// How far the catalog has applied the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

/// Applies committed entries to the catalog; snapshots are the catalog's file.
#[derive(Clone)]
pub struct StateMachine {
    catalog: Catalog,
    snapshot_path: PathBuf,
    current: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
}

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn save_applied(txn: &redb::WriteTransaction, a: &Applied) -> catalog::Result<()> {
    let bytes = postcard::to_stdvec(a).expect("applied state serializes");
    txn.open_table(APPLIED)
        .map_err(|e| CatalogError::Db(e.to_string()))?
        .insert("applied", bytes.as_slice())
        .map_err(|e| CatalogError::Db(e.to_string()))?;
    Ok(())
}

fn read_applied(txn: &redb::ReadTransaction) -> std::result::Result<Applied, AnyError> {
    let t = match txn.open_table(APPLIED) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Applied::default()),
        Err(e) => return Err(any(e)),
    };
    match t.get("applied").map_err(any)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(any),
        None => Ok(Applied::default()),
    }
}

/// `read_applied`, inside the writer's transaction (snapshots).
fn read_applied_in(txn: &redb::WriteTransaction) -> std::result::Result<Applied, AnyError> {
    let t = txn.open_table(APPLIED).map_err(any)?;
    match redb::ReadableTable::get(&t, "applied").map_err(any)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(any),
        None => Ok(Applied::default()),
    }
}

impl StateMachine {
    /// A state machine over `catalog`, snapshotting to `snapshot_path`.
    pub fn new(catalog: Catalog, snapshot_path: PathBuf) -> StateMachine {
        let current = std::fs::read(&snapshot_path)
            .ok()
            .and_then(|b| postcard::from_bytes::<StoredSnapshot>(&b).ok())
            .map(Arc::new);
        StateMachine {
            catalog,
            snapshot_path,
            current: Arc::new(Mutex::new(current)),
        }
    }

    fn keep(&self, s: StoredSnapshot) -> std::result::Result<Arc<StoredSnapshot>, AnyError> {
        let bytes = postcard::to_stdvec(&s).map_err(any)?;
        let tmp = self.snapshot_path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(any)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(any)?;
        std::fs::rename(&tmp, &self.snapshot_path).map_err(any)?;
        let s = Arc::new(s);
        *self.current.lock().expect("snapshot lock") = Some(s.clone());
        Ok(s)
    }
}

fn to_snapshot(s: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: s.meta.clone(),
        snapshot: Box::new(Cursor::new(s.data.clone())),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let fail = |e: AnyError| StorageIOError::write_snapshot(None, e);
        let (data, applied) = self
            .catalog
            .dump_with(read_applied_in)
            .await
            .map_err(|e| fail(any(e)))?;
        let applied = applied.map_err(fail)?;
        let id = format!(
            "{}-{}",
            applied.last.map_or(0, |l| l.index),
            catalog::Stamp::now().nonce
        );
        let meta = SnapshotMeta {
            last_log_id: applied.last,
            last_membership: applied.membership,
            snapshot_id: id,
        };
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || this.keep(StoredSnapshot { meta, data }))
            .await
            .map_err(any)
            .and_then(|r| r)
            .map_err(fail)?;
        Ok(to_snapshot(&stored))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let db = self.catalog.database().clone();
        let a = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(any)?;
            read_applied(&txn)
        })
        .await
        .map_err(any)
        .and_then(|r| r)
        .map_err(StorageIOError::read_state_machine)?;
        Ok((a.last, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Reply>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let db = self.catalog.database().clone();
        let mut applied =
            tokio::task::spawn_blocking(move || read_applied(&db.begin_read().map_err(any)?))
                .await
                .map_err(any)
                .and_then(|r| r)
                .map_err(StorageIOError::read_state_machine)?;
        // How many proposals each entry carries (0: blank or membership entries).
        let mut per_entry = Vec::new();
        let mut proposals: Vec<Proposal> = Vec::new();
        for e in entries {
            applied.last = Some(e.log_id);
            match e.payload {
                EntryPayload::Normal(batch) => {
                    per_entry.push(batch.len());
                    proposals.extend(batch);
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(e.log_id), m);
                    per_entry.push(0);
                }
                EntryPayload::Blank => per_entry.push(0),
            }
        }
        let last = applied.last;
        let outcomes = self
            .catalog
            .apply_ordered(proposals, move |txn| save_applied(txn, &applied))
            .await
            .map_err(|e| match last {
                Some(l) => StorageIOError::apply(l, any(e)),
                None => StorageIOError::write_state_machine(any(e)),
            })?;
        let mut outcomes = outcomes.into_iter();
        Ok(per_entry
            .into_iter()
            .map(|n| outcomes.by_ref().take(n).collect::<Vec<Reply>>())
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let sig = meta.signature();
        self.catalog
            .restore(data.clone(), move |txn| save_applied(txn, &applied))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(sig.clone()), any(e)))?;
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.keep(StoredSnapshot { meta, data }))
            .await
            .map_err(any)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        tracing::info!("catalog replaced by a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let cur = self.current.lock().expect("snapshot lock").clone();
        Ok(cur.map(|s| to_snapshot(&s)))
    }
}

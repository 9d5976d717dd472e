//! The catalog: buckets, keys, versions, manifests, multipart uploads and chunk
//! reference counts, in one embedded redb database.
//!
//! All writes go through one writer thread that applies many operations in one
//! transaction and commits (fsync) once: group commit. An operation's result is returned
//! only after its transaction is durable, so an acknowledged write survives `kill -9`
//! and a half-done one is never visible. Reads use snapshot transactions and never wait
//! for the writer. This crate knows nothing of shards or disks.

mod access;
pub mod audit;
mod buckets;
mod chunks;
pub mod command;
mod list;
pub mod lock;
mod multipart;
mod objects;
mod records;
mod snapshot;
mod table_keys;
mod writer;

use std::path::Path;

use redb::ReadableDatabase;
use std::sync::Arc;

pub use access::{AccessKey, Permission, generate_key_pair};
pub use command::{Command, Outcome, Proposal, Stamp};
pub use list::{ListPage, ListQuery, VersionsPage, VersionsQuery};
pub use objects::{DeleteOutcome, PutCondition, VersionSel};
pub use records::*;

/// The bucket setting that holds its lifecycle rules (JSON); changes to it are
/// recorded in the ledger.
pub const LIFECYCLE_SETTING: &str = "lifecycle";

/// Everything the catalog can refuse or fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CatalogError {
    /// The bucket does not exist.
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// A bucket with that name exists.
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    /// The bucket still holds objects or uploads.
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    /// The key does not exist (or its current version is gone).
    #[error("key {0:?} does not exist")]
    NoSuchKey(String),
    /// The key has no such version.
    #[error("version {version:?} of {key:?} does not exist")]
    NoSuchVersion {
        /// The object's key.
        key: String,
        /// The version id asked for.
        version: String,
    },
    /// The multipart upload does not exist (completed, aborted or never started).
    #[error("multipart upload {0:?} does not exist")]
    NoSuchUpload(String),
    /// A part named at completion is missing or has another ETag.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// A part other than the last is smaller than the minimum.
    #[error("part {part} is {size} bytes; every part but the last must be at least {min}")]
    EntityTooSmall {
        /// The part's number.
        part: u32,
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// A write's condition (If-Match, If-None-Match) did not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A chunk the write refers to was collected meanwhile: write it again.
    #[error("a chunk this write relies on was collected meanwhile; retry the write")]
    ChunkVanished,
    /// The record changed since the proposer read it: read and try again.
    #[error("the record changed while this change was prepared; retry")]
    Conflict,
    /// No leader or majority answered: try again later.
    #[error("the catalog cannot take changes now: {0}")]
    Unavailable(String),
    /// An argument the catalog does not accept.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The database (redb) failed.
    #[error("catalog database error: {0}")]
    Db(String),
    /// A stored record does not decode.
    #[error("catalog record {table}/{key} is corrupt: {reason}")]
    Corrupt {
        /// The table it is in.
        table: String,
        /// Its key, printable.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// Object lock keeps the version: it is retained or under legal hold.
    #[error("object lock: {0}")]
    Locked(String),
    /// The bucket is not in a state that allows the change (object lock and versioning).
    #[error("{0}")]
    InvalidState(String),
}

macro_rules! db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogError {
            fn from(e: $t) -> Self { CatalogError::Db(e.to_string()) }
        }
    )*};
}
db_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The catalog's result type.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// How the catalog applies changes.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// Minimum size of every multipart part but the last (S3: 5 MiB).
    pub min_part_size: u64,
    /// Append a ledger record with every change. Off only in `edgecloud bench`, to
    /// measure what the log costs; `serve` never turns it off.
    pub audit_log: bool,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            audit_log: true,
            min_part_size: 5 << 20,
        }
    }
}

/// Where changes go before they are applied: by default straight to this node's
/// writer; in a cluster through a replicated log, applied by every replica (the
/// `consensus` crate).
pub trait Consensus: Send + Sync + 'static {
    /// Orders `p` among all changes, applies it, and answers its outcome.
    fn propose(&self, p: Proposal) -> BoxFuture<'_, Result<Outcome>>;
    /// Returns once this replica has applied every change acknowledged before the
    /// call, so that a read that follows sees them (read-after-write).
    fn read_barrier(&self) -> BoxFuture<'_, Result<()>>;
}

/// A boxed future, for the object-safe `Consensus` trait.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    db: Arc<redb::Database>,
    writer: writer::WriterHandle,
    /// Ledger records committed but not yet in their table (`audit`).
    unflushed: Arc<audit::Unflushed>,
    opts: CatalogOptions,
    consensus: Arc<std::sync::OnceLock<Arc<dyn Consensus>>>,
    /// Bumped after every commit that may have changed a cluster record.
    cluster_changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Catalog {
    /// Opens (or creates) the catalog database at `path`.
    pub fn open(path: &Path, opts: CatalogOptions) -> Result<Self> {
        let db = Arc::new(redb::Database::create(path).map_err(|e| {
            CatalogError::Db(format!("cannot open catalog {}: {e}", path.display()))
        })?);
        records::init_tables(&db)?;
        let unflushed = Arc::new(audit::Unflushed::default());
        let writer =
            writer::WriterHandle::start(db.clone(), opts.audit_log.then(|| unflushed.clone()));
        Ok(Catalog {
            db,
            writer,
            unflushed,
            opts,
            consensus: Default::default(),
            cluster_changed: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Sends every later change through `c` (once, at start-up, before serving).
    pub fn replicate_with(&self, c: Arc<dyn Consensus>) {
        if self.consensus.set(c).is_err() {
            tracing::warn!("catalog: consensus already set; keeping the first");
        }
    }

    /// Proposes one change and answers its outcome once it is durable (and, in a
    /// cluster, committed by a quorum).
    pub async fn execute(&self, command: Command) -> Result<Outcome> {
        let p = Proposal {
            stamp: Stamp::now(),
            command,
        };
        let cluster = matches!(p.command, Command::PutClusterRecord { .. });
        let r = match self.consensus.get() {
            Some(c) => c.propose(p).await,
            None => self.writer.write(move |txn| command::apply(txn, p)).await,
        };
        if cluster && self.consensus.get().is_none() {
            self.cluster_changed.send_modify(|v| *v += 1);
        }
        r
    }

    /// A record of the cluster layer, as this replica has applied it.
    pub fn cluster_record(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let t = self.read()?.open_table(records::CLUSTER)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Every record of the cluster layer whose name starts with `prefix`, in name order.
    pub fn cluster_records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let t = self.read()?.open_table(records::CLUSTER)?;
        let mut out = Vec::new();
        for e in t.range(prefix..)? {
            let (k, v) = e?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Changes whenever cluster records may have changed here (applied or restored).
    pub fn watch_cluster(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cluster_changed.subscribe()
    }

    /// Applies changes already ordered by consensus, in one transaction, together with
    /// `also` (which records how far the log is applied); answers each outcome. The
    /// commit need not reach the disk at once: after a crash the catalog is back at an
    /// earlier applied position, and the changes since are applied again from the log.
    pub async fn apply_ordered(
        &self,
        proposals: Vec<Proposal>,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<()> + Send + 'static,
    ) -> Result<Vec<Result<Outcome>>> {
        let cluster = proposals
            .iter()
            .any(|p| matches!(p.command, Command::PutClusterRecord { .. }));
        let r = self
            .writer
            .write_with(false, move |txn| {
                let outcomes = proposals
                    .into_iter()
                    .map(|p| command::apply(txn, p))
                    .collect();
                also(txn)?;
                Ok(outcomes)
            })
            .await;
        if cluster {
            self.cluster_changed.send_modify(|v| *v += 1);
        }
        r
    }

    /// Waits until reads here see every change acknowledged anywhere before the call.
    pub async fn read_barrier(&self) -> Result<()> {
        match self.consensus.get() {
            Some(c) => c.read_barrier().await,
            None => Ok(()),
        }
    }

    /// The database, for the replication layer's own tables and snapshots.
    pub fn database(&self) -> &Arc<redb::Database> {
        &self.db
    }

    /// Read-modify-write of one record: `read` it, let `edit` change a copy, and
    /// propose `command(before, after)`, which is refused with `Conflict` if the record
    /// changed meanwhile; then read again and retry.
    async fn read_modify_write<T: Clone>(
        &self,
        read: impl Fn() -> Result<T>,
        edit: impl Fn(&mut T) -> Result<()>,
        command: impl Fn(T, T) -> Command,
    ) -> Result<Outcome> {
        let mut attempt = 0u32;
        loop {
            let before = read()?;
            let mut after = before.clone();
            edit(&mut after)?;
            match self.execute(command(before, after)).await {
                Err(CatalogError::Conflict) if attempt < 50 => {
                    attempt += 1;
                    let _ = self.read_barrier().await;
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5))
                        .await;
                }
                r => return r,
            }
        }
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }
}

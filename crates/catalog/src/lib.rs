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
mod keys;
mod list;
mod multipart;
mod objects;
mod records;
mod writer;

use std::path::Path;

use redb::ReadableDatabase;
use std::sync::Arc;

pub use access::{AccessKey, Permission, generate_key_pair};
pub use list::{ListPage, ListQuery, VersionsPage, VersionsQuery};
pub use objects::{DeleteOutcome, PutCondition, VersionSel};
pub use records::*;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CatalogError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("key {0:?} does not exist")]
    NoSuchKey(String),
    #[error("version {version:?} of {key:?} does not exist")]
    NoSuchVersion { key: String, version: String },
    #[error("multipart upload {0:?} does not exist")]
    NoSuchUpload(String),
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("part {part} is {size} bytes; every part but the last must be at least {min}")]
    EntityTooSmall { part: u32, size: u64, min: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("a chunk this write relies on was collected meanwhile; retry the write")]
    ChunkVanished,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("catalog database error: {0}")]
    Db(String),
    #[error("catalog record {table}/{key} is corrupt: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
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

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

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

/// Handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    db: Arc<redb::Database>,
    writer: writer::WriterHandle,
    opts: CatalogOptions,
}

impl Catalog {
    pub fn open(path: &Path, opts: CatalogOptions) -> Result<Self> {
        let db = Arc::new(redb::Database::create(path).map_err(|e| {
            CatalogError::Db(format!("cannot open catalog {}: {e}", path.display()))
        })?);
        records::init_tables(&db)?;
        let writer = writer::WriterHandle::start(db.clone(), opts.audit_log);
        Ok(Catalog { db, writer, opts })
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }
}

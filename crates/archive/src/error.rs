use std::path::Path;

use catalog::CatalogError;

/// Everything the archive can fail with; each gateway maps it to its protocol's answer.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The catalog refused or failed (no such bucket, conflict, unavailable, ...).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The current version of `key` is a delete marker.
    #[error("{key:?} is deleted (its current version {version_id} is a delete marker)")]
    DeleteMarker {
        /// The object's key.
        key: String,
        /// The delete marker's version id.
        version_id: String,
    },
    /// A bucket or key name the archive does not accept.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The range lies outside an object of `size` bytes.
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// The body does not match its Content-MD5.
    #[error("the body's MD5 does not match the Content-MD5 the client sent")]
    BadDigest,
    /// An argument the archive does not accept.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A chunk of the object cannot be read or rebuilt.
    #[error("cannot read object {bucket}/{key}: chunk {chunk}: {reason}")]
    DataLoss {
        /// The object's bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The chunk's id (hex).
        chunk: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// Too few shards of a chunk could be placed or written; the message lists why
    /// each one failed.
    #[error("storage write failed: {0}")]
    Storage(String),
    /// A shard disk of this node failed.
    #[error(transparent)]
    Shard(#[from] shards::ShardError),
    /// Another node failed a shard request.
    #[error(transparent)]
    Rpc(#[from] cluster::RpcError),
    /// The audit log failed.
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
    /// A task running part of the work (encoding, hashing, listing) failed.
    #[error("the {what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why it ended.
        source: tokio::task::JoinError,
    },
    /// Reading the client's body failed (the client went away or sent garbage).
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The object would have more than `max` chunks.
    #[error(
        "an object may have at most {max} chunks (its chunk list is one catalog record); \
         store it with larger chunks (the bucket's chunk size) or as several objects"
    )]
    TooManyChunks {
        /// The most chunks an object may have.
        max: usize,
    },
    /// The body passed `max` bytes.
    #[error(
        "the body passed {max} bytes, the most allowed here (the node's --max-object-size; \
         over S3, 5 GiB per PUT or part: use a multipart upload)"
    )]
    ObjectTooLarge {
        /// The most bytes allowed.
        max: u64,
    },
    /// The request's customer key (SSE-C) does not fit the object: missing, not
    /// expected, or another key.
    #[error("{0}")]
    CustomerKey(String),
    /// A bucket's data key cannot be unwrapped.
    #[error("bucket key cannot be unwrapped: {0} (is this the right master key?)")]
    Key(String),
}

impl ArchiveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ArchiveError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

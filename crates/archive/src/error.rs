use std::path::Path;

use catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{key:?} is deleted (its current version {version_id} is a delete marker)")]
    DeleteMarker { key: String, version_id: String },
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("the body's MD5 does not match the Content-MD5 the client sent")]
    BadDigest,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cannot read object {bucket}/{key}: chunk {chunk}: {reason}")]
    DataLoss {
        bucket: String,
        key: String,
        chunk: String,
        reason: String,
    },
    #[error("storage write failed: {0}")]
    Storage(String),
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "an object may have at most {max} chunks (its chunk list is one catalog record); \
         store it with larger chunks (the bucket's chunk size) or as several objects"
    )]
    TooManyChunks { max: usize },
    #[error(
        "the body passed {max} bytes, the most allowed here (the node's --max-object-size; \
         over S3, 5 GiB per PUT or part: use a multipart upload)"
    )]
    ObjectTooLarge { max: u64 },
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

impl From<shards::ShardError> for ArchiveError {
    fn from(e: shards::ShardError) -> Self {
        ArchiveError::Storage(e.to_string())
    }
}

//! Buckets as a file system, for the file gateways (WebDAV, FTP and NFS). One place decides, for every protocol alike: how paths map to buckets
//! and keys (`path`), who is logged in and what they may do (the S3 access keys and
//! permissions), what a directory is (a key prefix; `mkdir` stores an S3-style folder
//! marker `dir/`), and that the past is read-only (`/BUCKET/.snapshots/INSTANT/`).
//! Every write is an ordinary archive write: versioned, deduplicated, logged.

pub mod path;
mod session;
mod snapshots;

use std::time::SystemTime;

pub use path::{Instant, Place};
pub use session::{Session, WriteOptions};

use archive::{Archive, ArchiveError, CatalogError};

/// Errors in file-system terms; each gateway maps them to its protocol's codes.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or folder.
    #[error("no such file or directory")]
    NotFound,
    /// Something by that name exists.
    #[error("already exists")]
    Exists,
    /// The folder is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// The key may not do this.
    #[error("permission denied")]
    Denied,
    /// A snapshot (the past) cannot change.
    #[error("read-only: snapshots show the past and cannot change")]
    ReadOnly,
    /// A file where a folder was needed.
    #[error("not a directory")]
    NotADirectory,
    /// A folder where a file was needed.
    #[error("is a directory")]
    IsADirectory,
    /// A name longer than S3 keys allow.
    #[error("name too long")]
    NameTooLong,
    /// An argument the store does not accept.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The file passed the size limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The transfer was cut off; nothing was stored.
    #[error("the transfer was cut short; nothing was stored")]
    Aborted,
    /// The store failed (unavailable, data loss, disk error).
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<ArchiveError> for FsError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Catalog(CatalogError::NoSuchBucket(_) | CatalogError::NoSuchKey(_))
            | ArchiveError::Catalog(CatalogError::NoSuchVersion { .. })
            | ArchiveError::DeleteMarker { .. } => FsError::NotFound,
            ArchiveError::Catalog(CatalogError::BucketExists(_)) => FsError::Exists,
            ArchiveError::Catalog(CatalogError::BucketNotEmpty(_)) => FsError::NotEmpty,
            ArchiveError::Catalog(CatalogError::PreconditionFailed) => FsError::Exists,
            // Object lock, or an SSE-C object: its key comes only over S3.
            ArchiveError::Catalog(CatalogError::Locked(_)) | ArchiveError::CustomerKey(_) => {
                FsError::Denied
            }
            ArchiveError::InvalidName(m) | ArchiveError::Invalid(m) => FsError::Invalid(m),
            e @ (ArchiveError::TooManyChunks { .. } | ArchiveError::ObjectTooLarge { .. }) => {
                FsError::TooLarge(e.to_string())
            }
            ArchiveError::Body(_) => FsError::Aborted,
            other => FsError::Storage(other.to_string()),
        }
    }
}

/// The file layer's result type.
pub type Result<T> = std::result::Result<T, FsError>;

/// One directory entry or stat result.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name (the last path segment).
    pub name: String,
    /// True for a folder.
    pub dir: bool,
    /// Size in bytes (0 for a folder).
    pub size: u64,
    /// When it last changed.
    pub modified: SystemTime,
    /// The object's ETag (as S3 shows it), for files.
    pub etag: Option<String>,
    /// Snapshots and the snapshot list cannot be written.
    pub read_only: bool,
}

impl Entry {
    /// A file being written (not stored yet): empty, modified now.
    pub fn file_stub(name: &str) -> Entry {
        Entry {
            name: name.to_string(),
            dir: false,
            size: 0,
            modified: SystemTime::now(),
            etag: None,
            read_only: false,
        }
    }

    fn dir(name: &str, modified: SystemTime, read_only: bool) -> Entry {
        Entry {
            name: name.to_string(),
            dir: true,
            size: 0,
            modified,
            etag: None,
            read_only,
        }
    }
}

/// The key every gateway accepts besides the catalog's access keys (the one given at
/// start, as for S3).
#[derive(Clone)]
pub struct RootKey {
    /// The access key (the login name).
    pub access_key: String,
    /// Its secret (the password).
    pub secret: String,
}

/// The file view of one node's archive; `login` opens a session.
#[derive(Clone)]
pub struct Files {
    archive: Archive,
    root: RootKey,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Files") // no secrets in logs
    }
}

impl Files {
    /// A file view of `archive`; `root` logs in as the admin.
    pub fn new(archive: Archive, root: RootKey) -> Self {
        Files { archive, root }
    }

    /// The archive it views.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Checks an access key and its secret (protocols send them as user name and
    /// password). The same error for an unknown key and a wrong secret.
    pub fn login(&self, access_key: &str, secret: &str) -> Result<Session> {
        if access_key == self.root.access_key {
            return if constant_time_eq(secret.as_bytes(), self.root.secret.as_bytes()) {
                Ok(Session::new(self.archive.clone(), None))
            } else {
                Err(FsError::Denied)
            };
        }
        match self.archive.access_key(access_key)? {
            Some(k) if constant_time_eq(secret.as_bytes(), k.secret.as_bytes()) => {
                Ok(Session::new(self.archive.clone(), Some(k)))
            }
            _ => Err(FsError::Denied),
        }
    }

    /// `login`, up to date: a key created through another node a moment ago is looked
    /// up again once this node has caught up (as the S3 gateway does).
    pub async fn login_fresh(&self, access_key: &str, secret: &str) -> Result<Session> {
        let unknown = access_key != self.root.access_key
            && matches!(self.archive.access_key(access_key), Ok(None));
        if unknown {
            catch_up(&self.archive).await?;
        }
        self.login(access_key, secret)
    }

    /// A session for an access key whose secret the protocol library already checked
    /// with [`Files::login`] (FTP's login is split into "authenticate" and "load user").
    pub fn session_after_login(&self, access_key: &str) -> Result<Session> {
        if access_key == self.root.access_key {
            return Ok(Session::new(self.archive.clone(), None));
        }
        match self.archive.access_key(access_key)? {
            Some(k) => Ok(Session::new(self.archive.clone(), Some(k))),
            None => Err(FsError::Denied),
        }
    }
}

/// Waits until this node's replica holds every change acknowledged anywhere before the
/// call: in a cluster, a round trip to the leader (a read barrier); alone, at once.
pub(crate) async fn catch_up(archive: &Archive) -> Result<()> {
    archive
        .catalog()
        .read_barrier()
        .await
        .map_err(|e| FsError::Storage(format!("cannot catch up with the cluster: {e}")))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn time_of(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns)
}

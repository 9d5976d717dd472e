//! The shard store: a node's shards on its local disks.
//!
//! Each disk is a folder of append-only segment files (see docs/format.md). Writes go
//! through one writer thread per disk that batches them, so many writes share one fsync
//! (group commit); a write is acknowledged only after its batch is fsynced. Every read
//! verifies the record's BLAKE3 checksum. This crate never sees plaintext or keys.

mod disk;
mod record;
mod uploading;

use std::path::PathBuf;
use std::sync::Arc;

pub use disk::{CompactReport, Disk, DiskHealth};
pub use record::{Policy, RECORD_HEADER_LEN, ShardKey, ShardMeta};
pub use uploading::{UploadHold, Uploading};

/// Everything the shard store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The disk does not hold the shard.
    #[error("shard {key} not found on disk {disk}")]
    NotFound {
        /// The disk's folder.
        disk: String,
        /// The shard.
        key: ShardKey,
    },
    /// A stored record failed its checksum or does not parse.
    #[error("corrupt shard record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The disk's writer thread stopped.
    #[error("the writer for disk {0} has stopped")]
    WriterGone(String),
}

impl ShardError {
    /// True when the shard is simply absent (lost disk, never written), not damaged.
    pub fn is_missing(&self) -> bool {
        match self {
            ShardError::NotFound { .. } => true,
            ShardError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// How disks store shards.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Most bytes one group commit writes before its fsync.
    pub batch_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: 1 << 30,
            batch_bytes: 64 << 20,
        }
    }
}

/// All disks of this node, addressed by their position in the list the node started with.
pub struct ShardStore {
    disks: Vec<Arc<Disk>>,
    uploading: Arc<Uploading>,
}

impl ShardStore {
    /// Opens the disks at `paths`.
    pub fn open(paths: &[PathBuf], opts: StoreOptions) -> Result<Self, ShardError> {
        let disks = paths
            .iter()
            .map(|p| Disk::open(p.clone(), opts.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ShardStore {
            disks,
            uploading: Default::default(),
        })
    }

    /// Chunks that uploads through this node are writing, not yet committed.
    pub fn uploading(&self) -> &Arc<Uploading> {
        &self.uploading
    }

    /// The disks, in order.
    pub fn disks(&self) -> &[Arc<Disk>] {
        &self.disks
    }

    /// Disk `i`.
    pub fn disk(&self, i: usize) -> &Arc<Disk> {
        &self.disks[i % self.disks.len()]
    }

    /// Disks holding some version of this shard (normally one).
    pub fn locate(&self, key: &ShardKey) -> Vec<usize> {
        (0..self.disks.len())
            .filter(|&i| self.disks[i].contains(key))
            .collect()
    }

    /// Notices disks or segment files that vanished under us (a wiped or replaced disk):
    /// forgets what they held so reads and scrub treat those shards as missing.
    pub fn check_disks(&self) -> Vec<DiskHealth> {
        self.disks.iter().map(|d| d.check()).collect()
    }
}

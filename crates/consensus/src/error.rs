//! Why a replica could not start or change the Raft group (the rules: docs/errors.md).
//! Proposals and reads fail with `catalog::CatalogError`, which the catalog's callers
//! already handle.

use std::path::PathBuf;

/// Why a replica could not start, or a change of the Raft group failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The Raft log file could not be opened or written.
    #[error("the Raft log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// Raft refused or failed (not the leader, a change already in progress, stopped).
    #[error("Raft: {0}")]
    Raft(Box<dyn std::error::Error + Send + Sync>),
}

impl ConsensusError {
    /// An openraft error, kept as the source.
    pub(crate) fn raft(e: impl std::error::Error + Send + Sync + 'static) -> ConsensusError {
        ConsensusError::Raft(Box::new(e))
    }
}

//! The ledger: an append-only, tamper-evident log of every change, in the style of
//! Certificate Transparency (RFC 9162 Merkle tree, RFC 6962 hashing) and published in
//! the C2SP tlog-tiles layout with C2SP signed-note checkpoints, so that anyone holding
//! the node's public key can verify that an entry is in the log and that the log was
//! never rewritten.
//!
//! - `record`: the canonical leaf records (what a change looks like in the log).
//! - `entries`: where leaf records are read from (`EntryStore`: the catalog's ledger
//!   table in a node, files for tests and tools).
//! - `tree`: the Merkle tree as stored hashes; roots and proofs.
//! - `publish`: tiles, entry bundles and signed checkpoints on disk.
//! - `verify`: proof and checkpoint verification for clients (offline).
//! - `monitor`: a check of a whole published log, entry by entry and tile by tile.
//!
//! The proof algorithms and tile/checkpoint formats come from the `tlog_tiles` and
//! `signed_note` crates (Cloudflare's ports of Go's sumdb/tlog and note packages).

pub mod cosign;
pub mod entries;
pub mod monitor;
pub mod publish;
pub mod record;
pub mod tree;
pub mod verify;

pub use tlog_tiles::Hash;

/// Everything the ledger can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading or writing a file failed.
    #[error("ledger I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An entry or hash the log should hold is not there.
    #[error("the ledger has no {what} at index {index}")]
    Missing {
        /// What is missing ("entry", "stored hash").
        what: &'static str,
        /// Its index.
        index: u64,
    },
    /// A stored entry or hash is damaged.
    #[error("entry {index} is damaged: {reason}")]
    Damaged {
        /// Its index.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// An argument or input that is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A proof or signature did not verify.
    #[error("verification failed: {0}")]
    Verification(String),
    /// A checkpoint or note is malformed.
    #[error("Merkle tree error: {0}")]
    Tlog(String),
}

impl LedgerError {
    pub(crate) fn tlog(e: tlog_tiles::Error) -> Self {
        LedgerError::Tlog(e.to_string())
    }
}

/// The ledger's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    tlog_tiles::record_hash(data)
}

//! Why a cluster operation failed (the rules: docs/errors.md). Calls to another node
//! fail with [`RpcError`](crate::RpcError); setting up this node's part with
//! [`ClusterError`].

use std::path::{Path, PathBuf};

/// Why this node's identity, secret, certificates, layout or membership could not be
/// set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A local file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A key, secret, token or file does not hold what it should; the message says
    /// what to do.
    #[error("{0}")]
    Invalid(String),
    /// The operating system gave no randomness.
    #[error("no system randomness")]
    NoRandomness,
    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A membership change or request was refused: a removed or unknown node, a forged
    /// identity, a change that would leave too few disks, or one that could not be
    /// committed. The message says why; it is what the caller answers.
    #[error("{0}")]
    Refused(String),
    /// The replicated catalog could not read or commit the layout.
    #[error("the replicated layout: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// Another node refused, or could not be reached; the message says what to check.
    #[error("{0}")]
    Peer(String),
}

impl ClusterError {
    pub(crate) fn file(
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> ClusterError {
        let path = path.to_path_buf();
        move |source| ClusterError::File {
            action,
            path,
            source,
        }
    }
}

/// The result of setting up this node's part of the cluster.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

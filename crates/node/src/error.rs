//! Why a node cannot start. The rules every crate follows are in docs/errors.md.

use std::path::PathBuf;

/// Why a node could not start or stop cleanly. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting (flag, variable or config file key) is not valid.
    #[error("{0}")]
    Settings(String),
    /// A port cannot be opened.
    #[error(
        "cannot listen on {addr}: {source}: is another edgecloud running? Choose another address with --{flag} or --bind"
    )]
    Listen {
        /// The address.
        addr: String,
        /// The flag that sets it.
        flag: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file of the data directory cannot be read or written.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A key or secret is missing or damaged; the message says how to restore it.
    #[error("{0}")]
    Secrets(String),
    /// The archive could not open.
    #[error("cannot open the archive: {0}")]
    Archive(#[from] archive::ArchiveError),
    /// A step of start-up failed in a lower layer (cluster, consensus, TLS).
    #[error("{step}: {source}")]
    Startup {
        /// The step, as the operator would name it.
        step: &'static str,
        /// Why, from the layer that failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A server task failed while serving or stopping.
    #[error("the {what} server failed: {reason}")]
    Serving {
        /// Which server.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl NodeError {
    /// A failed start-up step, keeping the lower layer's error as the source.
    pub fn startup(
        step: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> NodeError {
        NodeError::Startup {
            step,
            source: source.into(),
        }
    }

    pub(crate) fn file(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.to_path_buf();
        move |source| NodeError::File {
            action,
            path,
            source,
        }
    }
}

//! What importing, listing and removing images can fail with.

/// Every failure of the image store; each says what to do where it can.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The archive (the system bucket) failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// Reading the tarball or a spooled file failed.
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a `docker save` tarball nor an OCI image layout.
    #[error("not an image: {0}")]
    NotAnImage(String),
    /// A manifest, config or layer does not match the digest that names it.
    #[error("digest mismatch: {what} should be {expected} but is {actual}")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest its manifest (or file name) names.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A layer holds something edgecloud refuses to unpack (path traversal, a path
    /// through a symbolic link, a layer over the size limit).
    #[error("refused layer {layer}: {reason}")]
    HostileLayer {
        /// The layer's digest.
        layer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No image has this name or id.
    #[error("no image {0:?} (`edgecloud image ls` lists them)")]
    NoSuchImage(String),
    /// An id prefix names more than one image.
    #[error("{0:?} names more than one image: give more of the id")]
    Ambiguous(String),
    /// A name that is not an image reference.
    #[error(
        "invalid image name {0:?}: use NAME[:TAG], e.g. busybox:1.36 or registry.local/team/app:v2"
    )]
    InvalidName(String),
    /// A record in the system bucket does not parse.
    #[error("corrupt image record {key}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The blocking import task failed.
    #[error("the import task failed: {0}")]
    Task(String),
    /// A registry could not be reached, refused the login, or answered nonsense.
    #[error("pulling: {0}")]
    Registry(String),
}

/// The image store's results.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

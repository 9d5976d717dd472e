//! What running containers can fail with.

/// Every failure of the container service; each says what to do where it can.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A request the service does not accept (bad name, limits, policy, no command).
    #[error("{0}")]
    Invalid(String),
    /// No such container or image.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the container's state or another container.
    #[error("{0}")]
    Conflict(String),
    /// The image store failed, or the image cannot be unpacked.
    #[error("image: {0}")]
    Image(String),
    /// The OCI runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A file of the container could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<images::ImageError> for ContainerError {
    fn from(e: images::ImageError) -> Self {
        match e {
            images::ImageError::NoSuchImage(_) => ContainerError::NotFound(e.to_string()),
            other => ContainerError::Image(other.to_string()),
        }
    }
}

/// The container service's results.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

//! A stateless node: an image that boots over the network into edgecloud.
//!
//! - `kernel`: the kernel and the modules a node needs, from a Debian package.
//! - `image`: `edgecloud node-image build`, a reproducible kernel + initramfs.
//! - `init`: edgecloud as PID 1 (mounts, modules, network, the node, power off).
//! - `dhcp`, `net`: the network as PID 1 brings it up, without tools in the image.
//! - `boot_server`: the iPXE script, kernel and initramfs, served by a node.
//!
//! docs/netboot.md has how to boot one and what it keeps where.

pub mod boot_server;
pub mod dhcp;
pub mod disks;
pub mod image;
pub mod init;
pub mod kernel;
pub mod net;
pub mod signing;

/// What can go wrong building or booting an image.
#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    /// The kernel package is not what an image needs.
    #[error("kernel: {0}")]
    Kernel(String),
    /// The image cannot be built.
    #[error("image: {0}")]
    Image(String),
    /// Booting failed.
    #[error("boot: {0}")]
    Boot(String),
    /// The network could not be brought up.
    #[error("network: {0}")]
    Network(String),
    /// A file or socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, NetbootError>;

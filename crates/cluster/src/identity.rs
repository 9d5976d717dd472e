//! Who a node is, and what proves it belongs to the cluster.
//!
//! Every node has its own Ed25519 key (DATA/node.key, created on first start); its node
//! id is derived from the public key, so an id cannot be claimed without the key. The
//! cluster secret, shared by every member, derives the cluster's certificate authority:
//! each node issues its own X.509 certificate under it at start-up. Node-to-node TLS
//! accepts only certificates of that authority, so a process without the secret can
//! neither join nor talk to any node.

use std::fmt;
use std::path::Path;

use crate::ClusterError;
use crate::error::Result;
use ring::signature::KeyPair;

/// A node's identity: 16 hex characters of BLAKE3 over its Ed25519 public key.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The id of the node with this Ed25519 public key.
    pub fn from_public_key(public: &[u8]) -> NodeId {
        let h = blake3::derive_key("edgecloud 2026 node id v1", public);
        NodeId(codec::hex(&h[..8]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This node's Ed25519 key pair.
pub struct NodeKey {
    seed: [u8; 32],
    public: [u8; 32],
}

impl NodeKey {
    /// The key made from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> NodeKey {
        let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .expect("any 32 bytes are an Ed25519 seed");
        let public = kp.public_key().as_ref().try_into().expect("32-byte key");
        NodeKey { seed, public }
    }

    /// Reads the key (64 hex characters), or creates it with mode 0600 on first start.
    pub fn load_or_create(path: &Path) -> Result<NodeKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let seed = parse_hex32(text.trim()).ok_or_else(|| {
                    ClusterError::Invalid(format!(
                        "{} is not a node key (64 hex characters)",
                        path.display()
                    ))
                })?;
                Ok(NodeKey::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                    .map_err(|_| ClusterError::NoRandomness)?;
                create_private(path, &format!("{}\n", codec::hex(&seed)))?;
                Ok(NodeKey::from_seed(seed))
            }
            Err(e) => Err(ClusterError::file("read", path)(e)),
        }
    }

    /// The node id this key proves.
    pub fn id(&self) -> NodeId {
        NodeId::from_public_key(&self.public)
    }

    /// The Ed25519 public key.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The Ed25519 public key, hex.
    pub fn public_hex(&self) -> String {
        codec::hex(&self.public)
    }

    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        ed25519_pkcs8(&self.seed)
    }
}

/// The shared cluster secret (at least 16 bytes; any text).
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// A secret from its bytes; refuses one too short to be safe.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterSecret> {
        let bytes: Vec<u8> = bytes.into();
        let trimmed = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
        if trimmed.len() < 16 {
            return Err(ClusterError::Invalid(format!(
                "the cluster secret is too short ({} bytes): use at least 16 random characters, e.g. the DATA/cluster.secret file of the first node",
                trimmed.len()
            )));
        }
        Ok(ClusterSecret(trimmed))
    }

    /// Reads the secret from a file, or creates a random one there (first node).
    pub fn load_or_create(path: &Path) -> Result<ClusterSecret> {
        match std::fs::read(path) {
            Ok(b) => ClusterSecret::new(b).map_err(|e| {
                ClusterError::Invalid(format!("the cluster secret in {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                    .map_err(|_| ClusterError::NoRandomness)?;
                let text = codec::hex(&raw);
                create_private(path, &format!("{text}\n"))?;
                ClusterSecret::new(text)
            }
            Err(e) => Err(ClusterError::file("read", path)(e)),
        }
    }

    /// Keeps the secret in a file (mode 0600) unless one is there: a node that joined
    /// restarts without being given it again.
    pub fn save_if_absent(&self, path: &Path) -> Result<()> {
        if path.exists() {
            return Ok(());
        }
        create_private(path, &format!("{}\n", String::from_utf8_lossy(&self.0)))
    }

    /// The secret itself, as kept in DATA/cluster.secret (given to a node that redeems
    /// an invitation).
    pub fn reveal(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// A 32-byte key for `purpose` from the secret and `salt` (not secret): what a node
    /// that keeps no secret on its disks derives its own keys from.
    pub fn derive(&self, purpose: &str, salt: &[u8]) -> [u8; 32] {
        let mut material = self.0.clone();
        material.extend_from_slice(salt);
        blake3::derive_key(purpose, &material)
    }

    /// The seed of the cluster authority's Ed25519 key.
    pub(crate) fn authority_seed(&self) -> [u8; 32] {
        blake3::derive_key("edgecloud 2026 cluster authority v1", &self.0)
    }
}

/// PKCS#8 v1 for an Ed25519 seed (RFC 8410): a fixed prefix, then the seed.
pub(crate) fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut v = PREFIX.to_vec();
    v.extend_from_slice(seed);
    v
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    codec::unhex(s)?.try_into().ok()
}

/// Creates a file readable only by its owner, with `text`, durably; fails if the file
/// exists (a key or secret is never overwritten, even by a second process starting).
pub fn create_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(ClusterError::file("create", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(ClusterError::file("write", path))
}

/// Replaces a file readable only by its owner, atomically (state that changes, such as
/// the layout).
pub fn replace_private(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ClusterError::file("create", dir))?;
    }
    // A name of its own, so that two writers at once do not trip over each other.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // a leftover from a crash
    create_private(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(ClusterError::file("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_ids_follow_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let a = NodeKey::load_or_create(&p).unwrap();
        let b = NodeKey::load_or_create(&p).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().0.len(), 16);
        assert_ne!(
            NodeKey::from_seed([1; 32]).id(),
            NodeKey::from_seed([2; 32]).id()
        );
        std::fs::write(&p, "not a key").unwrap();
        assert!(NodeKey::load_or_create(&p).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("  0123456789abcdef\n").is_ok());
    }
}

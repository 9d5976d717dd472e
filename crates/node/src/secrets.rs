//! The secrets a node keeps in its data directory, each created on the first start and
//! never made anew once the node holds data (a new key would make every bucket, or
//! every saved checkpoint, unreadable or untrusted):
//!
//! | file | what |
//! |---|---|
//! | `node.key` | the node's Ed25519 identity |
//! | `cluster.secret` | the cluster's shared secret (its certificate authority) |
//! | `master.key` | wraps every bucket's data key (`--master-key-file` keeps it elsewhere) |
//! | `s3-credentials` | the S3 root key, `ACCESS:SECRET` |
//! | `ledger.key`, `ledger.pub` | the audit log's signing key (one per cluster) |
//! | `cosigner.key`, `cosigner.pub` | this node's key as a voter cosigning checkpoints |
//! | `admin.token` | the admin API's bearer token |
//!
//! They are in the data directory unless `--secrets-dir` puts them elsewhere (in memory,
//! on a booted node). Then the node key and cosigner key are derived from the cluster
//! secret and DATA/node.salt ([`derived_seeds`]), and the keys every member shares are
//! fetched from a member at every start: the data directory holds no secret.

use std::path::Path;

use archive::DataKey;

use crate::NodeError;

/// The node's identity key.
pub const NODE_KEY: &str = "node.key";
/// The cluster secret.
pub const CLUSTER_SECRET: &str = "cluster.secret";
/// The master key.
pub const MASTER_KEY: &str = "master.key";
/// The S3 root key.
pub const S3_CREDENTIALS: &str = "s3-credentials";
/// The ledger's signing key.
pub const LEDGER_KEY: &str = "ledger.key";
/// The ledger's public key (what verifiers need).
pub const LEDGER_PUB: &str = "ledger.pub";
/// This node's cosigner key.
pub const COSIGNER_KEY: &str = "cosigner.key";
/// This node's cosigner public key (what clients demanding cosignatures need).
pub const COSIGNER_PUB: &str = "cosigner.pub";

/// Random bytes, not secret: with the cluster secret they make the keys of a node that
/// keeps its secrets out of its data directory, so the same data is the same node.
pub const NODE_SALT: &str = "node.salt";

/// The node key's and cosigner key's seeds of a node keeping its secrets out of `data`:
/// derived from the cluster secret and `data/node.salt` (made on the first start).
/// The salt alone, or a disk holding it, reveals neither key.
pub fn derived_seeds(
    secret: &cluster::ClusterSecret,
    data: &Path,
) -> Result<([u8; 32], [u8; 32]), NodeError> {
    let path = data.join(NODE_SALT);
    if !path.exists() {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| NodeError::Secrets(format!("no randomness: {e}")))?;
        keep(&path, &format!("{}\n", codec::hex(&raw)))?;
    }
    let text = std::fs::read_to_string(&path).map_err(NodeError::file("read", &path))?;
    let salt = codec::unhex(text.trim())
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            NodeError::Secrets(format!("{} must hold 64 hex characters", path.display()))
        })?;
    Ok((
        secret.derive("edgecloud 2026 node key from the cluster secret v1", &salt),
        secret.derive(
            "edgecloud 2026 cosigner key from the cluster secret v1",
            &salt,
        ),
    ))
}

fn keep(path: &Path, text: &str) -> Result<(), NodeError> {
    cluster::identity::create_private(path, text)
        .map_err(|e| NodeError::startup("cannot keep a secret in the data directory", e))
}

/// The cluster secret: EDGECLOUD_CLUSTER_SECRET, else `file`, else the node's own
/// DATA/cluster.secret (created on the first node). A node joining for the first time
/// without one trades its invitation for it (and keeps it there), or must be given it;
/// then the member that gave it is returned too (the one to join through).
pub async fn cluster_secret(
    file: Option<&Path>,
    data: &Path,
    joining: bool,
    invite: Option<&cluster::invite::Invitation>,
    local_ip: Option<std::net::IpAddr>,
) -> Result<(cluster::ClusterSecret, Option<String>), NodeError> {
    if let Ok(s) = std::env::var("EDGECLOUD_CLUSTER_SECRET") {
        return cluster::ClusterSecret::new(s)
            .map(|s| (s, None))
            .map_err(|e| NodeError::startup("EDGECLOUD_CLUSTER_SECRET", e));
    }
    if let Some(f) = file {
        let bytes = std::fs::read(f).map_err(NodeError::file("read the cluster secret", f))?;
        return cluster::ClusterSecret::new(bytes)
            .map(|s| (s, None))
            .map_err(|e| NodeError::startup("the cluster secret file", e));
    }
    let kept = data.join(CLUSTER_SECRET);
    // A restart (even with the same --invite) finds the secret kept at the first start.
    if !kept.exists() {
        if let Some(inv) = invite {
            let (secret, member) = cluster::invite::redeem(inv, local_ip)
                .await
                .map_err(|e| NodeError::startup("cannot redeem the invitation", e))?;
            keep(&kept, &format!("{}\n", secret.reveal()))?;
            tracing::info!("invitation accepted by {member}: joining");
            return Ok((secret, Some(member)));
        }
        if joining {
            return Err(NodeError::Secrets(format!(
                "--join needs the cluster's secret: run `edgecloud cluster invite` on a member and pass --invite TOKEN, or copy DATA/{CLUSTER_SECRET} from the first node and pass --secret-file FILE (or set EDGECLOUD_CLUSTER_SECRET)"
            )));
        }
    }
    cluster::ClusterSecret::load_or_create(&kept)
        .map(|s| (s, None))
        .map_err(|e| NodeError::startup("cannot load or create the cluster secret", e))
}

/// The S3 root key: EDGECLOUD_ACCESS_KEY/EDGECLOUD_SECRET_KEY, else DATA/s3-credentials
/// (`ACCESS:SECRET`, created with random values on first start).
pub fn s3_credentials(data: &Path) -> Result<(String, String), NodeError> {
    if let (Ok(a), Ok(s)) = (
        std::env::var("EDGECLOUD_ACCESS_KEY"),
        std::env::var("EDGECLOUD_SECRET_KEY"),
    ) {
        return Ok((a, s));
    }
    let path = data.join(S3_CREDENTIALS);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let (a, s) = text.trim().split_once(':').ok_or_else(|| {
            NodeError::Secrets(format!("{} must hold ACCESS:SECRET", path.display()))
        })?;
        return Ok((a.to_string(), s.to_string()));
    }
    let (access, secret) = archive::generate_key_pair();
    keep(&path, &format!("{access}:{secret}"))?;
    Ok((access, secret))
}

/// Writes the S3 root key a joining node was handed, unless it has one.
pub fn keep_s3_credentials(data: &Path, access: &str, secret: &str) -> Result<(), NodeError> {
    let creds = data.join(S3_CREDENTIALS);
    if creds.exists() {
        return Ok(());
    }
    keep(&creds, &format!("{access}:{secret}"))
}

/// The master key, created on a node's first start. A node that already holds data
/// refuses to start without its key: a new one would start a node on which every
/// bucket's data is unreadable.
pub fn master_key(path: &Path, has_data: bool) -> Result<DataKey, NodeError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let t = text.trim();
        let k: Option<[u8; 32]> = codec::unhex(t).and_then(|b| b.try_into().ok());
        return match k {
            Some(k) if t.len() == 64 => Ok(DataKey::from_bytes(k)),
            _ => Err(NodeError::Secrets(format!(
                "master key file {} must hold 64 hex characters",
                path.display()
            ))),
        };
    }
    if has_data {
        return Err(NodeError::Secrets(format!(
            "the master key file {} is missing, but this node already holds data: without \
             its key no bucket can be read. Restore the file from your backup (or give it with \
             --master-key-file); do not start the node without it",
            path.display()
        )));
    }
    let key = DataKey::generate();
    keep(path, &codec::hex(key.as_bytes()))?;
    tracing::warn!(
        "created master key {} (back it up: without it no bucket can be read)",
        path.display()
    );
    Ok(key)
}

/// Writes the master key a joining node was handed.
pub fn keep_master_key(path: &Path, hex: &str) -> Result<(), NodeError> {
    keep(path, hex)
}

/// The log's signing key pair (shared by every node of a cluster: one log, one key),
/// created on the first node's first start: (private, public) in note format.
pub fn ledger_keys(data: &Path, has_data: bool) -> Result<(String, String), NodeError> {
    let (kp, pp) = (data.join(LEDGER_KEY), data.join(LEDGER_PUB));
    if !kp.exists() {
        // A new key would sign checkpoints that no saved checkpoint or verifier trusts.
        if has_data {
            return Err(NodeError::Secrets(format!(
                "the ledger key {} is missing, but this node already keeps a ledger: restore \
                 the file from your backup",
                kp.display()
            )));
        }
        let (skey, vkey) = ledger::publish::generate_key("edgecloud.local/ledger");
        keep(&kp, &skey)?;
        std::fs::write(&pp, format!("{vkey}\n")).map_err(NodeError::file("write", &pp))?;
    }
    let skey = std::fs::read_to_string(&kp).map_err(NodeError::file("read the ledger key", &kp))?;
    let vkey =
        std::fs::read_to_string(&pp).map_err(NodeError::file("read the ledger public key", &pp))?;
    Ok((skey.trim().to_string(), vkey.trim().to_string()))
}

/// Writes the ledger keys a joining node was handed, unless it has them.
pub fn keep_ledger_keys(data: &Path, key: &str, public: &str) -> Result<(), NodeError> {
    let kp = data.join(LEDGER_KEY);
    if kp.exists() {
        return Ok(());
    }
    keep(&kp, key)?;
    let pp = data.join(LEDGER_PUB);
    std::fs::write(&pp, format!("{public}\n")).map_err(NodeError::file("write", &pp))
}

/// This node's cosigner key (created on first start, from `seed` if given): clients
/// demanding a quorum of cosignatures need DATA/cosigner.pub, one per voter.
pub fn cosigner_key(
    data: &Path,
    node: &cluster::NodeId,
    seed: Option<[u8; 32]>,
) -> Result<String, NodeError> {
    let (cp, cpub) = (data.join(COSIGNER_KEY), data.join(COSIGNER_PUB));
    if !cp.exists() {
        let name = format!("edgecloud.local/voter-{node}");
        let (skey, vkey) = match seed {
            Some(seed) => ledger::cosign::key_from_seed(&name, seed),
            None => ledger::cosign::generate_key(&name),
        };
        keep(&cp, &skey)?;
        std::fs::write(&cpub, format!("{vkey}\n")).map_err(NodeError::file("write", &cpub))?;
    }
    let key =
        std::fs::read_to_string(&cp).map_err(NodeError::file("read the cosigner key", &cp))?;
    Ok(key.trim().to_string())
}

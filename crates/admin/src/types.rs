//! JSON shapes of the admin API, shared by the server and the CLI.

use serde::{Deserialize, Serialize};

/// The JSON body of every admin API error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable error code (e.g. "NoSuchBucket").
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// A bucket as the admin API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BucketInfo {
    /// The bucket's name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// "off", "enabled" or "suspended".
    pub versioning: String,
    /// Its redundancy policy (e.g. "ec:4+2").
    pub policy: String,
    /// Object lock: None when off, else "on" or the default retention
    /// ("COMPLIANCE 30 days").
    pub object_lock: Option<String>,
    /// How many lifecycle rules it has.
    pub lifecycle_rules: usize,
}

/// One object version as the admin API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: String,
    /// The version's id ("null" when written without versioning).
    pub version_id: String,
    /// Size in bytes.
    pub size: u64,
    /// The S3 ETag.
    pub etag: String,
    /// When it was written (RFC 3339).
    pub modified: String,
    /// The stored Content-Type.
    pub content_type: Option<String>,
    /// True for a delete marker.
    pub delete_marker: bool,
    /// True for the key's current version.
    pub is_latest: bool,
}

/// One page of a bucket listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResult {
    /// The objects on this page.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes ("folders") when a delimiter was given.
    pub prefixes: Vec<String>,
    /// True when more pages follow.
    pub truncated: bool,
    /// Pass as `marker` for the next page.
    pub next_marker: Option<String>,
}

/// One page of a bucket's versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionsResult {
    /// Versions and delete markers, newest first within a key.
    pub versions: Vec<ObjectInfo>,
    /// Common prefixes ("folders") when a delimiter was given.
    pub prefixes: Vec<String>,
    /// True when more pages follow.
    pub truncated: bool,
    /// Pass as `key_marker` for the next page.
    pub next_key_marker: Option<String>,
    /// Pass as `version_id_marker` for the next page.
    pub next_version_id_marker: Option<String>,
}

/// What a delete did.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The delete marker created or the version removed; None without versioning.
    pub version_id: Option<String>,
    /// True when a delete marker was created.
    pub delete_marker: bool,
}

/// One shard disk of this node.
#[derive(Debug, Serialize, Deserialize)]
pub struct DiskInfo {
    /// The disk's folder.
    pub path: String,
    /// Shards it holds.
    pub shards: usize,
    /// Segment files it holds.
    pub segments: usize,
    /// Bytes its segment files take.
    pub bytes: u64,
}

/// What `edgecloud status` shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// The node's version.
    pub version: String,
    /// The node's data directory.
    pub data_dir: String,
    /// The policy new buckets get.
    pub default_policy: String,
    /// How many buckets exist.
    pub buckets: usize,
    /// This node's shard disks.
    pub disks: Vec<DiskInfo>,
}

/// A scrub's report and how long it took.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScrubResult {
    /// What the scrub found and did.
    #[serde(flatten)]
    pub report: archive::ScrubReport,
    /// How long it took.
    pub seconds: f64,
}

/// RFC 3339 with seconds, UTC.
pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
        .to_string()
}

/// An S3 access key as the admin API shows it. `secret` is only sent when the key is
/// created.
#[derive(Serialize, Deserialize)]
pub struct KeyInfo {
    /// The access key id.
    pub access_key: String,
    /// The secret, only in the answer that creates the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A name for people ("backup laptop").
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// May do anything, in every bucket.
    pub admin: bool,
    /// May create buckets (and owns those it creates).
    pub create_buckets: bool,
    /// bucket -> "read", "write" or "owner"
    pub buckets: std::collections::BTreeMap<String, String>,
}

/// Never prints the secret.
impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyInfo")
            .field("access_key", &self.access_key)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("admin", &self.admin)
            .field("create_buckets", &self.create_buckets)
            .field("buckets", &self.buckets)
            .finish()
    }
}

/// A request to create an access key.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NewKey {
    /// A name for people.
    pub name: String,
    /// May do anything, in every bucket.
    #[serde(default)]
    pub admin: bool,
    /// May create buckets.
    #[serde(default)]
    pub create_buckets: bool,
    /// bucket -> "read", "write" or "owner"
    #[serde(default)]
    pub buckets: std::collections::BTreeMap<String, String>,
}

/// A request to grant (or take away) a key's access to a bucket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grant {
    /// "read", "write", "owner", or "none" to take access away.
    pub permission: String,
}

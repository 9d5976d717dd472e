//! JSON shapes of the admin API, shared by the server and the CLI.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created: String,
    pub versioning: String,
    pub policy: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub etag: String,
    pub modified: String,
    pub content_type: Option<String>,
    pub delete_marker: bool,
    pub is_latest: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListResult {
    pub objects: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    pub next_marker: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VersionsResult {
    pub versions: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteResult {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: String,
    pub shards: usize,
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub data_dir: String,
    pub default_policy: String,
    pub buckets: usize,
    pub disks: Vec<DiskInfo>,
}

/// A scrub's report and how long it took.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScrubResult {
    #[serde(flatten)]
    pub report: archive::ScrubReport,
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
    pub access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub name: String,
    pub created: String,
    pub admin: bool,
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

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub create_buckets: bool,
    /// bucket -> "read", "write" or "owner"
    #[serde(default)]
    pub buckets: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Grant {
    /// "read", "write", "owner", or "none" to take access away.
    pub permission: String,
}

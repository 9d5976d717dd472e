//! Leaf records: one per change, canonical so anyone can recompute a leaf hash. A
//! record is compact UTF-8 JSON with the fields in this order: `v` (format, 1),
//! `time_ns` (UTC nanoseconds), `actor` (access key id, or null for the node itself),
//! `kind`, then the kind's fields in declaration order. Contents are identified by their
//! SHA-256, never included: a record proves that a version existed with given bytes at a
//! given time without revealing them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    BucketCreated { bucket: String },
    BucketDeleted { bucket: String },
    /// A new object version; `sha256` is of the plaintext, hex (null where it was not
    /// computed: multipart uploads and copies, for now).
    VersionWritten { bucket: String, key: String, version_id: String, size: u64, sha256: Option<String> },
    DeleteMarker { bucket: String, key: String, version_id: String },
    VersionDeleted { bucket: String, key: String, version_id: String },
    KeyCreated { access_key: String },
    KeyRevoked { access_key: String },
    /// `permission` is read, write, owner or none.
    PermissionChanged { access_key: String, bucket: String, permission: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub time_ns: u64,
    pub actor: Option<String>,
    #[serde(flatten)]
    pub change: Change,
}

impl Record {
    pub fn new(time_ns: u64, actor: Option<String>, change: Change) -> Self {
        Record { v: 1, time_ns, actor, change }
    }

    /// The canonical bytes that are hashed into the tree.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records always serialize")
    }

    pub fn from_bytes(b: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(b).map_err(|e| crate::LedgerError::Invalid(format!("not a ledger record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_canonical_and_documented() {
        let r = Record::new(
            7,
            Some("ECKEY".into()),
            Change::VersionWritten { bucket: "b".into(), key: "k".into(), version_id: "v1".into(), size: 3, sha256: Some("ab".into()) },
        );
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"time_ns":7,"actor":"ECKEY","kind":"version_written","bucket":"b","key":"k","version_id":"v1","size":3,"sha256":"ab"}"#
        );
        assert_eq!(Record::from_bytes(text.as_bytes()).unwrap(), r);
    }
}

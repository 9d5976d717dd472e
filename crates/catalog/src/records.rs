//! Catalog records as stored: each value is a format byte followed by postcard.
//! The layout is written down in docs/format.md.

use std::collections::BTreeMap;

use codec::{ChunkId, Redundancy};
use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{CatalogError, Result};

pub(crate) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// bucket \0 key \0 !seq -> Version (newest first within a key)
pub(crate) const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
/// bucket \0 key -> seq of the newest visible version (may be a delete marker)
pub(crate) const CURRENT: TableDefinition<&[u8], u64> = TableDefinition::new("current");
pub(crate) const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks");
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// upload id \0 part number (BE u32) -> Part
pub(crate) const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// ledger index (u64) -> leaf record (ledger::record, canonical JSON)
pub(crate) const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
/// access key -> AccessKey
pub(crate) const ACCESS_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
/// name -> opaque record of the cluster layer (the layout), replicated with the rest
pub(crate) const CLUSTER: TableDefinition<&str, &[u8]> = TableDefinition::new("cluster");

const RECORD_FORMAT: u8 = 1;

pub(crate) fn init_tables(db: &redb::Database) -> Result<()> {
    let tx = db.begin_write()?;
    tx.open_table(BUCKETS)?;
    tx.open_table(VERSIONS)?;
    tx.open_table(CURRENT)?;
    tx.open_table(CHUNKS)?;
    tx.open_table(UPLOADS)?;
    tx.open_table(PARTS)?;
    tx.open_table(META)?;
    tx.open_table(ACCESS_KEYS)?;
    tx.open_table(LEDGER)?;
    tx.open_table(CLUSTER)?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    out.extend(postcard::to_stdvec(v).expect("catalog records always serialize"));
    out
}

pub(crate) fn dec<T: DeserializeOwned>(table: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| CatalogError::Corrupt {
        table: table.into(),
        key: String::from_utf8_lossy(key).into(),
        reason,
    };
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!("unknown record format {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

/// A bucket's versioning state (S3's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Never enabled: writes replace the "null" version (history kept only for as-of reads).
    Unversioned,
    /// Every write makes a new version.
    Enabled,
    /// Was enabled: old versions stay, new writes replace the null version.
    Suspended,
}

/// A bucket: its settings and its sealed data key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's name.
    pub name: String,
    /// When it was created (ns since the Unix epoch).
    pub created_ns: u64,
    /// Whether writes keep old versions.
    pub versioning: Versioning,
    /// How new chunks are stored (erasure coding or copies).
    pub policy: Redundancy,
    /// The bucket's data key, sealed with the node master key.
    pub wrapped_key: Vec<u8>,
    /// The id of the data key, to check it unwrapped right.
    pub wrapped_key_id: ChunkId,
    /// zstd level; 0 = compression off.
    pub compression: i32,
    /// Smallest chunk (bytes).
    pub chunk_min: u32,
    /// Average chunk the chunker aims for (bytes).
    pub chunk_avg: u32,
    /// Largest chunk (bytes).
    pub chunk_max: u32,
    /// Free-form settings later gateways keep here (CORS, tags, policy).
    pub settings: BTreeMap<String, String>,
}

/// One chunk of an object's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's id (keyed hash of its plaintext).
    pub id: ChunkId,
    /// Plaintext bytes.
    pub plain_len: u32,
    /// Bytes once compressed and sealed.
    pub sealed_len: u32,
}

/// Where a version's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// No bytes.
    Empty,
    /// Chunks in order. A small object is one chunk whose sealed bytes live in its
    /// chunk record (inline), so small objects deduplicate like large ones.
    Chunks {
        /// How the chunks are stored.
        policy: Redundancy,
        /// The chunks, in order.
        chunks: Vec<ChunkRef>,
    },
}

impl Body {
    /// The body's chunks, in order (none for an empty body).
    pub fn chunk_refs(&self) -> &[ChunkRef] {
        match self {
            Body::Chunks { chunks, .. } => chunks,
            _ => &[],
        }
    }
}

/// What a writer supplies for a new version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewVersion {
    /// Size in bytes.
    pub size: u64,
    /// The S3 ETag.
    pub etag: String,
    /// SHA-256 of the plaintext (hex), for the audit log; None for multipart objects,
    /// whose parts' hashes go in `part_digests`.
    pub sha256: Option<String>,
    /// Each part's size and SHA-256, in order (multipart objects only).
    pub part_digests: Vec<ledger::record::PartDigest>,
    /// The access key making the write, for the audit log.
    pub actor: Option<String>,
    /// The Content-Type to store.
    pub content_type: Option<String>,
    /// User metadata and stored headers (x-amz-meta-*, Content-Encoding, ...).
    pub meta: BTreeMap<String, String>,
    /// The chunks; None for an empty body.
    pub body: Option<Body>,
    /// Sizes of the parts of a multipart object (empty for a single PUT).
    pub parts: Vec<u64>,
    /// Chunks this write stored itself (their records may not exist yet).
    pub fresh: Vec<ChunkId>,
    /// A fresh small chunk kept in the catalog instead of shards: (id, sealed bytes).
    #[serde(with = "inline_bytes")]
    pub inline: Option<(ChunkId, Vec<u8>)>,
}

/// Byte strings as one blob rather than a sequence of numbers: postcard writes both
/// the same way (a length, then the bytes), but serde's sequence path handles them
/// one byte at a time, which showed as ~10% of a small PUT's CPU.
mod inline_bytes {
    use super::ChunkId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        v: &Option<(ChunkId, Vec<u8>)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref()
            .map(|(id, b)| (id, serde_bytes::Bytes::new(b)))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(ChunkId, Vec<u8>)>, D::Error> {
        let v: Option<(ChunkId, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(v.map(|(id, b)| (id, b.into_vec())))
    }
}

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The object's key.
    pub key: String,
    /// "null" for the version written while versioning is off or suspended.
    pub version_id: String,
    /// Order of writes within the bucket (newer is larger).
    pub seq: u64,
    /// When it was written (ns since the Unix epoch).
    pub mtime_ns: u64,
    /// True for a delete marker (no body).
    pub delete_marker: bool,
    /// Kept only for as-of reads: a null version that was replaced or deleted while
    /// versioning was off. S3's version APIs never show it.
    pub hidden: bool,
    /// Size in bytes.
    pub size: u64,
    /// The S3 ETag.
    pub etag: String,
    /// The stored Content-Type.
    pub content_type: Option<String>,
    /// User metadata and stored headers.
    pub meta: BTreeMap<String, String>,
    /// Where its bytes are.
    pub body: Body,
    /// Sizes of the parts of a multipart object (empty for a single PUT).
    pub parts: Vec<u64>,
}

/// A stored chunk: how many versions refer to it and how it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// References from versions and parts.
    pub refs: u64,
    /// How its shards are made.
    pub policy: Redundancy,
    /// Plaintext bytes.
    pub plain_len: u32,
    /// Bytes once compressed and sealed.
    pub sealed_len: u32,
    /// When refs last dropped to zero (ns); collected after the grace period.
    pub unreferenced_since_ns: Option<u64>,
    /// Sealed bytes of a small chunk kept in the catalog (no shards).
    #[serde(with = "serde_bytes")]
    pub inline: Option<Vec<u8>>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// Its id (S3 UploadId).
    pub upload_id: String,
    /// The bucket it writes to.
    pub bucket: String,
    /// The key it writes to.
    pub key: String,
    /// When it started (ns since the Unix epoch).
    pub created_ns: u64,
    /// The Content-Type the object will have.
    pub content_type: Option<String>,
    /// The metadata the object will have.
    pub meta: BTreeMap<String, String>,
}

/// One uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// Its number (1-10,000).
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// Its ETag (MD5 of its bytes, hex).
    pub etag: String,
    /// SHA-256 of the part's plaintext (hex), for the completed object's ledger record.
    pub sha256: String,
    /// When it was uploaded (ns since the Unix epoch).
    pub mtime_ns: u64,
    /// Its chunks.
    pub body: Body,
}

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A random id in hex (version ids, upload ids).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source failed");
    codec::hex(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records as they were serialized before byte strings were marked as such:
    /// what is on disk (and in Raft logs) must read back unchanged, and new bytes must
    /// be the same bytes.
    #[derive(Serialize, Deserialize)]
    struct PlainChunkRecord {
        refs: u64,
        policy: Redundancy,
        plain_len: u32,
        sealed_len: u32,
        unreferenced_since_ns: Option<u64>,
        inline: Option<Vec<u8>>,
    }

    #[test]
    fn byte_strings_keep_their_encoding() {
        let data: Vec<u8> = (0..=255u8).cycle().take(4100).collect();
        for inline in [None, Some(Vec::new()), Some(data.clone())] {
            let plain = PlainChunkRecord {
                refs: 3,
                policy: "ec:4+2".parse().unwrap(),
                plain_len: 4096,
                sealed_len: 4100,
                unreferenced_since_ns: Some(7),
                inline: inline.clone(),
            };
            let old = postcard::to_stdvec(&plain).unwrap();
            let rec: ChunkRecord = postcard::from_bytes(&old).unwrap();
            assert_eq!(rec.inline, inline);
            assert_eq!(postcard::to_stdvec(&rec).unwrap(), old);
        }
        // The inline chunk of a new version (it travels in every Raft entry).
        let before = postcard::to_stdvec(&Some(([9u8; 32], data.clone()))).unwrap();
        let nv = NewVersion {
            inline: Some(([9u8; 32], data.clone())),
            ..Default::default()
        };
        let bytes = postcard::to_stdvec(&nv).unwrap();
        assert!(bytes.windows(before.len()).any(|w| w == before.as_slice()));
        let back: NewVersion = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.inline, Some(([9u8; 32], data)));
    }
}

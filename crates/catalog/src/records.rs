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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Never enabled: writes replace the "null" version (history kept only for as-of reads).
    Unversioned,
    Enabled,
    Suspended,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub created_ns: u64,
    pub versioning: Versioning,
    pub policy: Redundancy,
    /// The bucket's data key, sealed with the node master key.
    pub wrapped_key: Vec<u8>,
    pub wrapped_key_id: ChunkId,
    /// zstd level; 0 = compression off.
    pub compression: i32,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// Free-form settings later gateways keep here (CORS, tags, policy).
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub plain_len: u32,
    pub sealed_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    Empty,
    /// Chunks in order. A small object is one chunk whose sealed bytes live in its
    /// chunk record (inline), so small objects deduplicate like large ones.
    Chunks {
        policy: Redundancy,
        chunks: Vec<ChunkRef>,
    },
}

impl Body {
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
    pub size: u64,
    pub etag: String,
    /// SHA-256 of the plaintext (hex), for the audit log; None for multipart objects,
    /// whose parts' hashes go in `part_digests`.
    pub sha256: Option<String>,
    /// Each part's size and SHA-256, in order (multipart objects only).
    pub part_digests: Vec<ledger::record::PartDigest>,
    /// The access key making the write, for the audit log.
    pub actor: Option<String>,
    pub content_type: Option<String>,
    /// User metadata and stored headers (x-amz-meta-*, Content-Encoding, ...).
    pub meta: BTreeMap<String, String>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub key: String,
    /// "null" for the version written while versioning is off or suspended.
    pub version_id: String,
    pub seq: u64,
    pub mtime_ns: u64,
    pub delete_marker: bool,
    /// Kept only for as-of reads: a null version that was replaced or deleted while
    /// versioning was off. S3's version APIs never show it.
    pub hidden: bool,
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub meta: BTreeMap<String, String>,
    pub body: Body,
    pub parts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub refs: u64,
    pub policy: Redundancy,
    pub plain_len: u32,
    pub sealed_len: u32,
    /// When refs last dropped to zero (ns); collected after the grace period.
    pub unreferenced_since_ns: Option<u64>,
    /// Sealed bytes of a small chunk kept in the catalog (no shards).
    #[serde(with = "serde_bytes")]
    pub inline: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub created_ns: u64,
    pub content_type: Option<String>,
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    /// SHA-256 of the part's plaintext (hex), for the completed object's ledger record.
    pub sha256: String,
    pub mtime_ns: u64,
    pub body: Body,
}

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

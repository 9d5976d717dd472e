//! One record in a segment file: a shard or a tombstone. Layout in docs/format.md.

use std::fmt;

use codec::{ChunkId, Redundancy};

pub const SEGMENT_MAGIC: &[u8; 8] = b"ECSEGv01";
pub const RECORD_MAGIC: &[u8; 4] = b"ECSH";
pub const RECORD_VERSION: u8 = 1;
/// Bytes of a shard record's header in a segment file.
pub const RECORD_HEADER_LEN: usize = 64;
pub const CHECKSUM_LEN: usize = 32;
pub const KIND_SHARD: u8 = 1;
pub const KIND_TOMBSTONE: u8 = 2;

/// Which shard of which chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    /// The chunk.
    pub chunk: ChunkId,
    /// Which shard of it.
    pub index: u8,
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", codec::hex(&self.chunk), self.index)
    }
}

/// The redundancy a shard was cut with, as stored (so a disk can be read alone).
pub type Policy = Redundancy;

/// What a shard record says about its shard besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    /// The chunk's redundancy policy.
    pub policy: Policy,
    /// Length of the sealed chunk the shards rebuild (removes EC padding).
    pub sealed_len: u32,
    /// When the shard was written (Unix ms); orphan collection waits a grace period.
    pub written_ms: u64,
}

pub fn encode_policy(p: Policy) -> [u8; 3] {
    match p {
        Redundancy::None => [0, 0, 0],
        Redundancy::Replicate(n) => [1, n, 0],
        Redundancy::Ec { k, m } => [2, k, m],
    }
}

pub fn decode_policy(b: [u8; 3]) -> Option<Policy> {
    match b {
        [0, 0, 0] => Some(Redundancy::None),
        [1, n, 0] if n > 0 => Some(Redundancy::Replicate(n)),
        [2, k, m] if k > 0 && m > 0 => Some(Redundancy::Ec { k, m }),
        _ => None,
    }
}

pub fn encode_header(
    kind: u8,
    key: &ShardKey,
    meta: &ShardMeta,
    data_len: u32,
) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(RECORD_MAGIC);
    h[4] = RECORD_VERSION;
    h[5] = kind;
    h[6] = key.index;
    h[7..10].copy_from_slice(&encode_policy(meta.policy));
    h[12..16].copy_from_slice(&meta.sealed_len.to_le_bytes());
    h[16..24].copy_from_slice(&meta.written_ms.to_le_bytes());
    h[24..56].copy_from_slice(&key.chunk);
    h[56..60].copy_from_slice(&data_len.to_le_bytes());
    h
}

pub struct Header {
    pub kind: u8,
    pub key: ShardKey,
    pub meta: ShardMeta,
    pub data_len: u32,
}

pub(crate) fn decode_header(h: &[u8; RECORD_HEADER_LEN]) -> Result<Header, String> {
    if &h[0..4] != RECORD_MAGIC {
        return Err("bad record magic".into());
    }
    if h[4] != RECORD_VERSION {
        return Err(format!("unknown record version {}", h[4]));
    }
    if h[5] != KIND_SHARD && h[5] != KIND_TOMBSTONE {
        return Err(format!("unknown record kind {}", h[5]));
    }
    let policy = decode_policy([h[7], h[8], h[9]]).ok_or("bad redundancy policy")?;
    Ok(Header {
        kind: h[5],
        key: ShardKey {
            chunk: h[24..56].try_into().expect("32 bytes"),
            index: h[6],
        },
        meta: ShardMeta {
            policy,
            sealed_len: u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")),
            written_ms: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        },
        data_len: u32::from_le_bytes(h[56..60].try_into().expect("4 bytes")),
    })
}

pub fn checksum(header: &[u8], data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(data);
    *h.finalize().as_bytes()
}

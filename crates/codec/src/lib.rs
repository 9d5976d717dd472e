//! The codec: turns plaintext into stored shards and back. Pure functions, no I/O.
//!
//! Pipeline (write): [`chunker`] cuts a stream into content-defined chunks, [`chunk_id`]
//! names each chunk with a keyed BLAKE3 hash, [`seal`] compresses (when that helps) and
//! encrypts it, [`redundancy`] splits the sealed bytes into shards. Reading runs the same
//! steps backwards and verifies at every step; nothing unverified is ever returned.

pub mod chunker;
pub mod redundancy;
pub mod seal;

pub use chunker::{ChunkParams, Chunker};
pub use redundancy::{Redundancy, join_shards, shard_checksum, split_shards};
pub use seal::{DataKey, open, seal};

/// A chunk's name: BLAKE3 keyed with the bucket's data key, over the plaintext.
pub type ChunkId = [u8; 32];

/// Everything that can go wrong while decoding. Encoding cannot fail on valid input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Too short, or a format version this build does not know.
    #[error("sealed chunk is truncated or has an unknown format version")]
    BadFormat,
    /// AES-GCM refused the ciphertext: wrong key or altered bytes.
    #[error("chunk failed authentication (wrong key, or the ciphertext was altered)")]
    Authentication,
    /// zstd could not decompress the plaintext.
    #[error("chunk decompression failed: {0}")]
    Decompress(String),
    /// The decoded chunk hashes to another id.
    #[error("chunk content does not match its id (expected {expected}, got {actual})")]
    IdMismatch {
        /// The id asked for (hex).
        expected: String,
        /// The id of what was decoded (hex).
        actual: String,
    },
    /// Fewer intact shards than the policy needs.
    #[error("not enough intact shards to rebuild the chunk: have {have}, need {need}")]
    NotEnoughShards {
        /// Intact shards found.
        have: usize,
        /// Shards needed.
        need: usize,
    },
    /// A redundancy policy that cannot be used.
    #[error("invalid redundancy policy: {0}")]
    BadPolicy(String),
    /// Chunk sizes FastCDC cannot use.
    #[error("{0}")]
    BadChunkSizes(String),
}

/// Names a chunk: keyed BLAKE3 over the plaintext. Equal content in one bucket gets one
/// id (dedup); the key keeps ids from revealing content across buckets.
pub fn chunk_id(key: &DataKey, plaintext: &[u8]) -> ChunkId {
    *blake3::keyed_hash(key.as_bytes(), plaintext).as_bytes()
}

/// Lowercase hex, for ids in logs and errors.
pub fn hex(bytes: &[u8]) -> String {
    // A table lookup: `write!` per byte cost ~1 µs for a SHA-256 on every small put.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of a hex string (either case); None if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}

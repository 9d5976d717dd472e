//! Sealing: optional zstd compression, then AES-256-GCM.
//!
//! Each chunk is encrypted under its own key, derived from the bucket data key and the
//! chunk id, with a 96-bit nonce that is a keyed hash of the bytes sealed (SIV-style):
//! the same chunk always seals to the same bytes (so shards of repeated writes agree),
//! and a chunk key only ever encrypts one plaintext, so the GCM nonce-reuse bound never
//! comes near. The chunk id is the AAD, so a sealed chunk cannot be passed off as another.
//! Chunks sealed before this (random nonces) open the same way.
//!
//! Format v1: `[version=1][flags][nonce: 12][ciphertext][tag: 16]`, flags bit 0 = zstd.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use bytes::Bytes;

use crate::{ChunkId, CodecError, hex};

const FORMAT_V1: u8 = 1;
const FLAG_ZSTD: u8 = 1;
const HEADER_LEN: usize = 2 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Bytes compressed as a trial to decide whether a chunk is worth compressing.
const SAMPLE_LEN: usize = 16 * 1024;

/// A bucket's 256-bit data key. Never stored in the clear; see the catalog's key wrapping.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .expect("the OS random source failed");
        DataKey(k)
    }
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn chunk_key(key: &DataKey, id: &ChunkId) -> LessSafeKey {
    let mut h = blake3::Hasher::new_derive_key("edgecloud 2026 chunk key v1");
    h.update(key.as_bytes());
    h.update(id);
    let k = h.finalize();
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_bytes()).expect("32-byte key"))
}

/// True when zstd is unlikely to shrink this data: a trial on a small sample says so.
fn looks_incompressible(plain: &[u8]) -> bool {
    if plain.len() <= SAMPLE_LEN {
        return false;
    }
    let mid = plain.len() / 2 - SAMPLE_LEN / 2;
    let sample = &plain[mid..mid + SAMPLE_LEN];
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => c.len() * 100 > sample.len() * 97,
        Err(_) => true,
    }
}

/// Compresses (when it helps) and encrypts one chunk. `level` is the zstd level; 0 turns
/// compression off.
pub fn seal(key: &DataKey, id: &ChunkId, plain: &[u8], level: i32) -> Vec<u8> {
    let compressed = if level != 0 && !looks_incompressible(plain) {
        zstd::bulk::compress(plain, level)
            .ok()
            .filter(|c| c.len() < plain.len())
    } else {
        None
    };
    let (flags, body): (u8, &[u8]) = match &compressed {
        Some(c) => (FLAG_ZSTD, c),
        None => (0, plain),
    };
    // The nonce is a keyed hash of what is sealed (as in SIV): sealing the same chunk
    // twice gives the same bytes, so the shards of two writes of one chunk (a retried
    // write, or one on each side of a network partition) are interchangeable and a
    // reader mixing them still decodes; different bytes never share a nonce under a key.
    let mut h = blake3::Hasher::new_derive_key("edgecloud 2026 chunk nonce v1");
    h.update(key.as_bytes());
    h.update(id);
    let mut nk = blake3::Hasher::new_keyed(h.finalize().as_bytes());
    nk.update(&[flags]);
    nk.update(body);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&nk.finalize().as_bytes()[..NONCE_LEN]);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.push(flags);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(body);
    let tag = chunk_key(key, id)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id),
            &mut out[HEADER_LEN..],
        )
        .expect("AES-GCM seal cannot fail for chunks under 64 GiB");
    out.extend_from_slice(tag.as_ref());
    out
}

/// Decrypts, decompresses and checks that the plaintext hashes to `id`.
pub fn open(key: &DataKey, id: &ChunkId, mut sealed: Vec<u8>) -> Result<Bytes, CodecError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT_V1 || sealed[1] & !FLAG_ZSTD != 0
    {
        return Err(CodecError::BadFormat);
    }
    let flags = sealed[1];
    let nonce: [u8; NONCE_LEN] = sealed[2..HEADER_LEN]
        .try_into()
        .expect("slice of nonce length");
    let plain_len = chunk_key(key, id)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id),
            &mut sealed[HEADER_LEN..],
        )
        .map_err(|_| CodecError::Authentication)?
        .len();
    let body = &sealed[HEADER_LEN..HEADER_LEN + plain_len];
    let plain = if flags & FLAG_ZSTD != 0 {
        Bytes::from(
            zstd::stream::decode_all(body).map_err(|e| CodecError::Decompress(e.to_string()))?,
        )
    } else {
        // No copy: the plaintext is already in place after the header.
        Bytes::from(sealed).slice(HEADER_LEN..HEADER_LEN + plain_len)
    };
    let actual = crate::chunk_id(key, &plain);
    if &actual != id {
        return Err(CodecError::IdMismatch {
            expected: hex(id),
            actual: hex(&actual),
        });
    }
    Ok(plain)
}

//! Property tests: the codec restores bytes exactly, survives any m lost shards, and never
//! returns bytes after any bit flip.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use codec::{
    ChunkParams, Chunker, DataKey, Redundancy, chunk_id, join_shards, open, seal, split_shards,
};
use proptest::prelude::*;

fn policies() -> impl Strategy<Value = Redundancy> {
    prop_oneof![
        Just(Redundancy::None),
        (1u8..4).prop_map(Redundancy::Replicate),
        (1u8..7, 1u8..4).prop_map(|(k, m)| Redundancy::Ec { k, m }),
    ]
}

/// Mixed content: compressible runs and random bytes, so both zstd paths are taken.
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..70_000),
        (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
        "[a-z ]{0,3000}".prop_map(|s| s.repeat(20).into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_round_trip_restores_the_bytes(data in content(), policy in policies(), level in prop_oneof![Just(0), Just(1), Just(3)]) {
        let key = DataKey::generate();
        let id = chunk_id(&key, &data);
        let sealed = seal(&key, &id, &data, level);
        let shards = split_shards(policy, &sealed);
        prop_assert_eq!(shards.len(), policy.shard_count());
        let present: Vec<_> = shards.into_iter().map(Some).collect();
        let joined = join_shards(policy, present, sealed.len()).unwrap();
        prop_assert_eq!(&open(&key, &id, joined).unwrap()[..], &data[..]);
    }

    #[test]
    fn any_m_lost_shards_are_rebuilt(data in content(), k in 1u8..7, m in 1u8..4, seed in any::<u64>()) {
        let policy = Redundancy::Ec { k, m };
        let key = DataKey::generate();
        let id = chunk_id(&key, &data);
        let sealed = seal(&key, &id, &data, 1);
        let mut shards: Vec<_> = split_shards(policy, &sealed).into_iter().map(Some).collect();
        // Drop m distinct shards chosen by the seed.
        let n = shards.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut s = seed;
        for i in (1..n).rev() { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); order.swap(i, (s >> 33) as usize % (i + 1)); }
        for &i in &order[..m as usize] { shards[i] = None; }
        let joined = join_shards(policy, shards.clone(), sealed.len()).unwrap();
        prop_assert_eq!(&open(&key, &id, joined).unwrap()[..], &data[..]);
        // One more loss is too many, and says so.
        shards[order[m as usize]] = None;
        prop_assert!(join_shards(policy, shards, sealed.len()).is_err());
    }

    #[test]
    fn a_flipped_bit_in_ciphertext_is_detected(data in content(), pos in any::<usize>(), bit in 0u8..8) {
        let key = DataKey::generate();
        let id = chunk_id(&key, &data);
        let mut sealed = seal(&key, &id, &data, 3);
        let i = pos % sealed.len();
        sealed[i] ^= 1 << bit;
        prop_assert!(open(&key, &id, sealed).is_err());
    }

    #[test]
    fn a_flipped_bit_in_a_shard_fails_its_checksum(data in content(), policy in policies(), pos in any::<usize>(), bit in 0u8..8) {
        let key = DataKey::generate();
        let id = chunk_id(&key, &data);
        let sealed = seal(&key, &id, &data, 1);
        let shards = split_shards(policy, &sealed);
        let sums: Vec<_> = shards.iter().map(|s| codec::shard_checksum(s)).collect();
        let victim = pos % shards.len();
        let mut bad = shards[victim].clone();
        let i = (pos / 7) % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert_ne!(codec::shard_checksum(&bad), sums[victim]);
        // Even if a corrupt shard slipped past its checksum, the AEAD tag stops it.
        let mut present: Vec<_> = shards.into_iter().map(Some).collect();
        present[victim] = Some(bad);
        if let Ok(joined) = join_shards(policy, present, sealed.len()) {
            let out = open(&key, &id, joined);
            // Replicas other than the victim may be picked; either way, no wrong bytes.
            if let Ok(out) = out { prop_assert_eq!(&out[..], &data[..]); }
        }
    }

    #[test]
    fn chunking_covers_the_input_and_respects_bounds(data in proptest::collection::vec(any::<u8>(), 0..300_000)) {
        let params = ChunkParams { min: 4096, avg: 16384, max: 65536 };
        let chunks = Chunker::new(params).cut_all(&data);
        prop_assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), data.len());
        for c in &chunks[..chunks.len().saturating_sub(1)] {
            prop_assert!(c.len() >= params.min && c.len() <= params.max);
        }
    }
}

#[test]
fn wrong_key_is_rejected() {
    let data = b"hello world".repeat(100);
    let (a, b) = (DataKey::generate(), DataKey::generate());
    let id = chunk_id(&a, &data);
    assert!(open(&b, &id, seal(&a, &id, &data, 3)).is_err());
}

#[test]
fn inserting_bytes_moves_only_nearby_chunks() {
    let mut x = 12345u64;
    let data: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut edited = data.clone();
    edited.splice(2_000_000..2_000_000, b"inserted".iter().copied());
    let params = ChunkParams::from_avg(64 * 1024);
    let before: std::collections::HashSet<&[u8]> =
        Chunker::new(params).cut_all(&data).into_iter().collect();
    let after = Chunker::new(params).cut_all(&edited);
    let new = after.iter().filter(|c| !before.contains(*c)).count();
    assert!(new <= 3, "{new} chunks changed for one insertion");
}

/// Sealing is deterministic: two writes of one chunk give the same bytes, so the shards
/// of a retried write (or one on each side of a partition) can be mixed when reading.
#[test]
fn the_same_chunk_seals_to_the_same_bytes() {
    let key = DataKey::from_bytes([7; 32]);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let id = [3u8; 32];
    assert_eq!(seal(&key, &id, &data, 3), seal(&key, &id, &data, 3));
    // Other bytes, another key or another id: another nonce.
    let nonce = |s: &[u8]| s[2..14].to_vec();
    let base = nonce(&seal(&key, &id, &data, 3));
    assert_ne!(base, nonce(&seal(&key, &id, &data[1..], 3)));
    assert_ne!(
        base,
        nonce(&seal(&DataKey::from_bytes([8; 32]), &id, &data, 3))
    );
    assert_ne!(base, nonce(&seal(&key, &[4u8; 32], &data, 3)));
}

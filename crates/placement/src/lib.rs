//! Placement: which disk (and later, which node) holds shard i of a chunk.
//!
//! Rendezvous (highest-random-weight) hashing: every target gets a score from
//! hash(chunk id, target id), weighted by capacity; shards go to the targets in score
//! order. Adding or removing a target moves only the shards whose top choices changed.
//! Pure and deterministic: every node computes the same answer from the same layout.

use codec::ChunkId;

/// A place shards can go (a disk on a single node; a node's disk in a cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Stable identity: the score depends on it, not on list position.
    pub id: u64,
    /// Relative capacity; 0 means "take no new shards".
    pub weight: f64,
}

fn score(chunk: &ChunkId, target: &Target) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(chunk);
    h.update(&target.id.to_le_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    // Weighted rendezvous: -w / ln(u) with u uniform in (0, 1).
    let u = (x as f64 + 1.0) / (u64::MAX as f64 + 2.0);
    -target.weight / u.ln()
}

/// Target positions ordered best first for this chunk. Targets of weight 0 come last.
pub fn rank(chunk: &ChunkId, targets: &[Target]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (score(chunk, t), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The target position for each of `shards` shards: distinct targets while there are
/// enough, wrapping around (several shards per target) only when there are not.
pub fn place(chunk: &ChunkId, targets: &[Target], shards: usize) -> Vec<usize> {
    let ranked = rank(chunk, targets);
    if ranked.is_empty() {
        return Vec::new();
    }
    (0..shards).map(|i| ranked[i % ranked.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: u64) -> Vec<Target> {
        (0..n).map(|id| Target { id, weight: 1.0 }).collect()
    }

    #[test]
    fn shards_go_to_distinct_targets_and_spread_evenly() {
        let t = targets(6);
        let mut load = [0usize; 6];
        for i in 0..6000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let p = place(&id, &t, 6);
            let mut s = p.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 6);
            load[p[0]] += 1;
        }
        assert!(load.iter().all(|&l| (800..1200).contains(&l)), "{load:?}");
    }

    #[test]
    fn adding_a_target_moves_only_a_fair_share() {
        let (a, b) = (targets(6), targets(7));
        let moved = (0..10_000u32)
            .filter(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                place(&id, &a, 1) != place(&id, &b, 1)
            })
            .count();
        // Ideal is 1/7 of the first shards.
        assert!((1100..1800).contains(&moved), "{moved}");
    }
}

//! Placement: which disk of which node holds shard i of a chunk.
//!
//! Rendezvous (highest-random-weight) hashing: every target gets a score from
//! hash(chunk id, target id), weighted by capacity; shards go to the targets in score
//! order. Adding or removing a target moves only the shards whose top choices changed.
//! Pure and deterministic: every node computes the same answer from the same layout.
//!
//! In a cluster, `place_spread` also caps how many shards of one chunk a site and a node
//! may hold, so that losing a whole site (or node) loses at most `m` shards.

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

/// A disk in a cluster: a target that also knows its node and site (small integers).
#[derive(Debug, Clone, PartialEq)]
pub struct Spot {
    /// The disk as placement ranks it.
    pub target: Target,
    /// The node's index in the layout.
    pub node: u32,
    /// The site's index in the layout.
    pub site: u32,
}

/// Most shards of one chunk a failure domain may hold: `m` when there are enough
/// domains for that (then losing one domain loses at most `m` shards), else an even
/// share. `m` = 0 (no parity) only spreads evenly.
pub fn domain_cap(shards: usize, parity: usize, domains: usize) -> usize {
    let even = shards.div_ceil(domains.max(1));
    if parity > 0 && domains * parity >= shards {
        even.min(parity).max(1)
    } else {
        even.max(1)
    }
}

/// The spot for each of `shards` shards, in rendezvous order, with at most `site_cap`
/// shards per site and `node_cap` per node, never two on one disk. If the caps cannot be
/// met (too few sites or nodes left), they are relaxed step by step: first the node cap,
/// then the site cap; with fewer disks than shards, disks are reused last of all.
///
/// `usable` says which spots may take shards now (a node that is down or silent). Each
/// shard keeps its home (the spot it has when every spot answers) if that is usable, and
/// only a shard whose home is not gets a substitute: losing a node re-homes exactly the
/// shards it held, so repair writes one shard per lost shard and moves nothing else.
pub fn place_spread(
    chunk: &ChunkId,
    spots: &[Spot],
    shards: usize,
    site_cap: usize,
    node_cap: usize,
    usable: &dyn Fn(usize) -> bool,
) -> Vec<usize> {
    let targets: Vec<Target> = spots.iter().map(|s| s.target.clone()).collect();
    let ranked: Vec<usize> = rank(chunk, &targets)
        .into_iter()
        .filter(|&i| spots[i].target.weight > 0.0)
        .collect();
    let home = choose_spread(&ranked, spots, shards, site_cap, node_cap, &mut Vec::new());
    let mut kept: Vec<Option<usize>> = (0..shards)
        .map(|i| home.get(i).copied().filter(|&s| usable(s)))
        .collect();
    if kept.iter().all(Option::is_some) {
        return kept.into_iter().flatten().collect();
    }
    let live: Vec<usize> = ranked.into_iter().filter(|&i| usable(i)).collect();
    if live.is_empty() {
        return Vec::new();
    }
    // Substitutes for the homes that are away, chosen under the same caps counted over
    // the shards that stay.
    let mut taken: Vec<usize> = kept.iter().flatten().copied().collect();
    let wanted = kept.iter().filter(|k| k.is_none()).count();
    let mut substitutes = choose_spread(
        &live,
        spots,
        taken.len() + wanted,
        site_cap,
        node_cap,
        &mut taken,
    )
    .into_iter();
    for k in kept.iter_mut().filter(|k| k.is_none()) {
        *k = substitutes.next();
    }
    // Fewer usable disks than shards: reuse them, as a full layout would.
    let distinct: Vec<usize> = kept.iter().flatten().copied().collect();
    (0..shards)
        .map(|p| kept[p].unwrap_or_else(|| distinct[p % distinct.len()]))
        .collect()
}

/// Distinct spots from `ranked`, best first, added to `chosen` until it holds `want`,
/// under the caps (relaxed step by step when they cannot be met); returns the added
/// ones. Fewer come back when there are not enough distinct spots.
fn choose_spread(
    ranked: &[usize],
    spots: &[Spot],
    want: usize,
    site_cap: usize,
    node_cap: usize,
    chosen: &mut Vec<usize>,
) -> Vec<usize> {
    let before = chosen.len();
    for (site_cap, node_cap) in [
        (site_cap, node_cap),
        (site_cap, usize::MAX),
        (usize::MAX, usize::MAX),
    ] {
        for &i in ranked {
            if chosen.len() >= want {
                break;
            }
            let count =
                |f: &dyn Fn(&Spot) -> bool| chosen.iter().filter(|&&c| f(&spots[c])).count();
            if chosen.contains(&i)
                || count(&|s| s.site == spots[i].site) >= site_cap
                || count(&|s| s.node == spots[i].node) >= node_cap
            {
                continue;
            }
            chosen.push(i);
        }
    }
    chosen[before..].to_vec()
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

    fn cluster(sites: u32, nodes_per_site: u32, disks: u32) -> Vec<Spot> {
        let mut v = Vec::new();
        for site in 0..sites {
            for n in 0..nodes_per_site {
                let node = site * nodes_per_site + n;
                for d in 0..disks {
                    v.push(Spot {
                        target: Target {
                            id: ((node as u64) << 16) | d as u64,
                            weight: 1.0,
                        },
                        node,
                        site,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn three_sites_hold_at_most_two_shards_each_and_one_per_node() {
        let spots = cluster(3, 2, 2);
        for i in 0..3000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let p = place_spread(
                &id,
                &spots,
                6,
                domain_cap(6, 2, 3),
                domain_cap(6, 2, 6),
                &|_| true,
            );
            assert_eq!(p.len(), 6);
            for site in 0..3 {
                assert_eq!(p.iter().filter(|&&s| spots[s].site == site).count(), 2);
            }
            let mut nodes: Vec<u32> = p.iter().map(|&s| spots[s].node).collect();
            nodes.sort();
            nodes.dedup();
            assert_eq!(nodes.len(), 6, "one shard per node");
        }
    }

    #[test]
    fn a_lost_site_relaxes_the_caps_but_never_doubles_a_disk() {
        let spots = cluster(3, 2, 1);
        let up = |i: usize| spots[i].site != 2;
        let id = [7u8; 32];
        let p = place_spread(&id, &spots, 6, 2, 1, &up);
        // Four disks left for six shards: the four are used once each, then reused.
        let mut distinct = p.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);
        assert!(p.iter().all(|&i| spots[i].site != 2));
    }

    #[test]
    fn a_node_away_re_homes_only_the_shards_it_held() {
        // Two disks per node: a substitute may land on a node already holding a shard
        // only when the caps allow nothing else.
        let spots = cluster(3, 2, 2);
        let caps = (domain_cap(6, 2, 3), domain_cap(6, 2, 6));
        let mut moved = 0;
        for i in 0..3000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let home = place_spread(&id, &spots, 6, caps.0, caps.1, &|_| true);
            let answers = |s: usize| spots[s].node != 3;
            let p = place_spread(&id, &spots, 6, caps.0, caps.1, &answers);
            assert_eq!(p.len(), 6);
            for (h, s) in home.iter().zip(&p) {
                if answers(*h) {
                    assert_eq!(h, s, "a shard whose node answers stays home");
                } else {
                    assert!(answers(*s));
                    moved += 1;
                }
            }
            for site in 0..3 {
                assert!(p.iter().filter(|&&s| spots[s].site == site).count() <= 2);
            }
        }
        // Node 3 holds one shard of every chunk (one per node on six nodes).
        assert_eq!(moved, 3000);
    }

    #[test]
    fn caps_follow_the_number_of_domains() {
        assert_eq!(domain_cap(6, 2, 3), 2);
        assert_eq!(
            domain_cap(6, 2, 2),
            3,
            "two sites cannot survive a site loss at 4+2"
        );
        assert_eq!(domain_cap(6, 2, 6), 1);
        assert_eq!(domain_cap(3, 0, 1), 3);
    }
}

//! `bench --only repair-sim`: how repair of one lost node scales with the cluster's size,
//! computed from the real placement code (no processes). For clusters of 6 to 100 nodes
//! it places many chunks, takes one node away, and counts what each node must send and
//! receive to restore every shard, in two ways: the leader rebuilding everything (the
//! shards come to it and the rebuilt ones go out from it) and each new home rebuilding
//! its own shards. With every node's disk and network at the same speed, the busiest
//! node sets the time, so the rate is lost bytes / the busiest node's bytes, in units of
//! one node's speed.

use cluster::{DiskInfo, Layout, NodeId, NodeInfo, NodeState};
use placement::{domain_cap, place_spread};

struct Sim {
    nodes: usize,
    sites: usize,
    k: usize,
    m: usize,
    /// Shards the lost node held.
    lost: u64,
    /// Busiest node's shard transfers (in + out, whichever is larger) per lost shard.
    leader_busiest: f64,
    spread_busiest: f64,
}

/// A layout of `nodes` nodes of one disk each, spread evenly over `sites` sites.
fn layout(nodes: usize, sites: usize) -> Layout {
    Layout {
        epoch: 1,
        catalog_node: NodeId(format!("{:016x}", 0)),
        nodes: (0..nodes)
            .map(|i| NodeInfo {
                id: NodeId(format!("{i:016x}")),
                seq: i as u32,
                public_key: String::new(),
                site: format!("site-{:03}", i % sites),
                rpc_addr: String::new(),
                disks: vec![DiskInfo { weight: 1.0 }],
                state: NodeState::Active,
            })
            .collect(),
    }
}

fn simulate(nodes: usize, sites: usize, chunks: u32) -> Sim {
    // The spots and the policy a real cluster of this shape gets.
    let layout = layout(nodes, sites);
    let (spots, _) = layout.spots();
    let policy = layout.default_policy();
    let (n, k) = (policy.shard_count(), policy.needed());
    let m = n - k;
    let (site_cap, node_cap) = (domain_cap(n, m, sites), domain_cap(n, m, nodes));
    let lost_node = nodes - 1;
    let leader = 0;
    // Per node: shards sent and received.
    let mut leader_io = vec![(0u64, 0u64); nodes];
    let mut spread_io = vec![(0u64, 0u64); nodes];
    let mut lost = 0;
    for c in 0..chunks {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&c.to_le_bytes());
        let home = place_spread(&id, &spots, n, site_cap, node_cap, &|_| true);
        let away = |s: usize| spots[s].node as usize != lost_node;
        let now = place_spread(&id, &spots, n, site_cap, node_cap, &away);
        for (i, (&h, &to)) in home.iter().zip(&now).enumerate() {
            if h == to {
                continue;
            }
            lost += 1;
            // Sources: `k` surviving shards, same site as the rebuilder first.
            let pick = |at: usize| {
                let mut s: Vec<usize> = (0..n).filter(|&j| j != i && away(home[j])).collect();
                s.sort_by_key(|&j| (spots[home[j]].site != spots[at].site, j));
                s.truncate(k);
                s.into_iter().map(|j| home[j]).collect::<Vec<usize>>()
            };
            for src in pick(leader) {
                if src != leader {
                    leader_io[src].0 += 1;
                    leader_io[leader].1 += 1;
                }
            }
            if to != leader {
                leader_io[leader].0 += 1;
                leader_io[to].1 += 1;
            }
            for src in pick(to) {
                if src != to {
                    spread_io[src].0 += 1;
                    spread_io[to].1 += 1;
                }
            }
        }
    }
    let busiest = |io: &[(u64, u64)]| io.iter().map(|&(o, i)| o.max(i)).max().unwrap_or(0);
    Sim {
        nodes,
        sites,
        k,
        m,
        lost,
        leader_busiest: busiest(&leader_io) as f64 / lost.max(1) as f64,
        spread_busiest: busiest(&spread_io) as f64 / lost.max(1) as f64,
    }
}

/// Prints the table; `quick` places fewer chunks.
pub fn run(quick: bool) {
    let chunks = if quick { 3_000 } else { 30_000 };
    println!(
        "repair of one lost node, simulated with the placement code ({chunks} chunks; rate in units of one node's disk/network speed):"
    );
    println!(
        "  {:>5} {:>5} {:>6} {:>10} {:>22} {:>22}",
        "nodes", "sites", "policy", "lost", "leader rebuilds", "each new home rebuilds"
    );
    for (nodes, sites) in [(6, 3), (12, 3), (24, 3), (48, 3), (99, 3), (100, 10)] {
        let s = simulate(nodes, sites, chunks);
        println!(
            "  {:>5} {:>5} {:>6} {:>10} {:>21.2}x {:>21.2}x",
            s.nodes,
            s.sites,
            format!("{}+{}", s.k, s.m),
            s.lost,
            1.0 / s.leader_busiest.max(1e-9),
            1.0 / s.spread_busiest.max(1e-9),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_spread_over_the_new_homes_grows_with_the_cluster_and_the_leader_does_not() {
        let small = simulate(12, 3, 2000);
        let large = simulate(48, 3, 2000);
        // The leader receives `k` shards per lost shard, whatever the size.
        for s in [&small, &large] {
            assert!(1.0 / s.leader_busiest <= 0.3, "{}", s.leader_busiest);
        }
        // A lost shard's substitute is in the lost node's site (two shards per site at
        // most), so the rebuilds spread over that site's other nodes: 3 of them at 12
        // nodes in 3 sites, 15 at 48.
        let (r_small, r_large) = (1.0 / small.spread_busiest, 1.0 / large.spread_busiest);
        assert!(r_large > 3.0 * r_small, "{r_small} -> {r_large}");
    }
}

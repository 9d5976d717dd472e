//! Where shards live: this node's disks, and in a cluster the disks of the other nodes
//! in the layout. Placement works on "spots" (one per disk); a spot is local or remote.

use std::sync::Arc;

use cluster::{Layout, NodeId, NodeState};
use codec::{ChunkId, Redundancy};

/// How a spot is reached.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    Local(usize),
    Remote {
        node: NodeId,
        addr: String,
        disk: u32,
    },
}

/// The placement view of one layout epoch.
pub(crate) struct Topology {
    pub epoch: u64,
    pub spots: Vec<placement::Spot>,
    pub locs: Vec<Loc>,
    pub sites: usize,
    pub nodes: usize,
    pub my_site: u32,
    /// Spots of nodes that are down: still the home of their shards, which placement
    /// substitutes until the node is back or removed.
    pub away: Vec<bool>,
}

impl Topology {
    /// A single node without a cluster: its disks, in the order given.
    pub fn local(disks: usize) -> Topology {
        Topology {
            epoch: 0,
            spots: (0..disks)
                .map(|d| placement::Spot {
                    target: placement::Target {
                        id: d as u64,
                        weight: 1.0,
                    },
                    node: 0,
                    site: 0,
                })
                .collect(),
            locs: (0..disks).map(Loc::Local).collect(),
            sites: 1,
            nodes: 1,
            my_site: 0,
            away: vec![false; disks],
        }
    }

    pub fn from_layout(layout: &Layout, me: &NodeId) -> Topology {
        let (spots, refs) = layout.spots();
        let locs = refs
            .iter()
            .map(|r| {
                if &r.node == me {
                    Loc::Local(r.disk as usize)
                } else {
                    Loc::Remote {
                        node: r.node.clone(),
                        addr: layout
                            .node(&r.node)
                            .map(|n| n.rpc_addr.clone())
                            .unwrap_or_default(),
                        disk: r.disk,
                    }
                }
            })
            .collect::<Vec<_>>();
        let my_site = refs
            .iter()
            .zip(&spots)
            .find(|(r, _)| &r.node == me)
            .map_or(0, |(_, s)| s.site);
        // Caps count the nodes shards have homes on, down ones included, so that a node
        // going down changes no other shard's home.
        let active = layout
            .members()
            .filter(|n| matches!(n.state, NodeState::Active | NodeState::Down))
            .count();
        let away = refs.iter().map(|r| layout.is_away(&r.node)).collect();
        Topology {
            epoch: layout.epoch,
            spots,
            locs,
            sites: layout.sites().len().max(1),
            nodes: active.max(1),
            my_site,
            away,
        }
    }

    /// The spot of each shard of a chunk. `usable` may rule out more spots (nodes that
    /// are not answering right now) on top of those that take no shards.
    pub fn place(
        &self,
        id: &ChunkId,
        policy: Redundancy,
        usable: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let n = policy.shard_count();
        let m = n - policy.needed();
        placement::place_spread(
            id,
            &self.spots,
            n,
            placement::domain_cap(n, m, self.sites),
            placement::domain_cap(n, m, self.nodes),
            &|s| !self.away[s] && usable(s),
        )
    }

    /// Further spots in preference order for a shard whose spot failed.
    pub fn alternatives(&self, id: &ChunkId, usable: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let targets: Vec<placement::Target> = self.spots.iter().map(|s| s.target.clone()).collect();
        placement::rank(id, &targets)
            .into_iter()
            .filter(|&i| !self.away[i] && usable(i) && self.spots[i].target.weight > 0.0)
            .collect()
    }

    /// Where a read from `spot` comes from, for the job read tally.
    pub fn origin(&self, spot: usize) -> crate::read_tally::Origin {
        use crate::read_tally::Origin;
        match &self.locs[spot] {
            Loc::Local(_) => Origin::Local,
            Loc::Remote { .. } if self.spots[spot].site == self.my_site => Origin::Site,
            Loc::Remote { .. } => Origin::Cross,
        }
    }

    pub fn node_of(&self, spot: usize) -> Option<&NodeId> {
        match &self.locs[spot] {
            Loc::Local(_) => None,
            Loc::Remote { node, .. } => Some(node),
        }
    }

    /// The spot of a node's disk, for listings.
    pub fn spot_of(&self, node: &NodeId, disk: u32) -> Option<usize> {
        self.locs.iter().position(|l| match l {
            Loc::Remote {
                node: n, disk: d, ..
            } => n == node && *d == disk,
            Loc::Local(_) => false,
        })
    }

    pub fn local_spot(&self, disk: usize) -> Option<usize> {
        self.locs
            .iter()
            .position(|l| matches!(l, Loc::Local(d) if *d == disk))
    }

    /// Remote nodes with their address (one entry per node).
    pub fn remote_nodes(&self) -> Vec<(NodeId, String)> {
        let mut v: Vec<(NodeId, String)> = Vec::new();
        for l in &self.locs {
            if let Loc::Remote { node, addr, .. } = l
                && !v.iter().any(|(n, _)| n == node)
            {
                v.push((node.clone(), addr.clone()));
            }
        }
        v
    }
}

pub(crate) type SharedTopology = Arc<Topology>;

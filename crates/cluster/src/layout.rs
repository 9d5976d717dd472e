//! The cluster layout: sites, nodes, disks and their weights, and each node's state.
//! Every change bumps the epoch; nodes keep the newest layout they have seen in
//! DATA/cluster/layout.json. Placement is computed from it (`Layout::spots`), the same
//! way on every node.

use std::path::Path;

use crate::ClusterError;
use codec::Redundancy;
use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// Where a node is in its life in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving and taking new shards.
    Active,
    /// Missed heartbeats for longer than the down delay: its shards are rebuilt elsewhere.
    Down,
    /// Leaving: takes no new shards; its shards move away, then it is removed.
    Draining,
    /// Gone for good: its identity is refused from now on.
    Removed,
}

/// One disk of a node in the layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Capacity weight (bytes of the file system when it joined; 0 = no new shards).
    pub weight: f64,
}

/// One node of the layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (from its public key).
    pub id: NodeId,
    /// Order of joining; never reused, so placement ids stay stable.
    pub seq: u32,
    /// Hex Ed25519 public key (the id is derived from it).
    pub public_key: String,
    /// The site (building, room) it is in; shards are spread over sites first.
    pub site: String,
    /// Node-to-node address (HOST:PORT).
    pub rpc_addr: String,
    /// Its shard disks, in order.
    pub disks: Vec<DiskInfo>,
    /// Active, down, draining or removed.
    pub state: NodeState,
}

/// Which nodes and disks the cluster has; every change raises the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Raised by every change; the higher epoch wins.
    pub epoch: u64,
    /// The node that founded the cluster: it starts the catalog's Raft group alone on
    /// its first start and manages membership until the layout lives in the catalog.
    pub catalog_node: NodeId,
    /// Every node that ever joined (removed ones stay, so ids are never reused).
    pub nodes: Vec<NodeInfo>,
}

/// One disk of the layout as placement sees it.
#[derive(Debug, Clone)]
pub struct DiskRef {
    /// The node.
    pub node: NodeId,
    /// The disk's position on that node.
    pub disk: u32,
}

impl Layout {
    /// The layout of a new cluster with one node.
    pub fn founded_by(node: NodeInfo) -> Layout {
        Layout {
            epoch: 1,
            catalog_node: node.id.clone(),
            nodes: vec![node],
        }
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// The node with this id, to change.
    pub fn node_mut(&mut self, id: &NodeId) -> Option<&mut NodeInfo> {
        self.nodes.iter_mut().find(|n| &n.id == id)
    }

    /// Nodes that are part of the cluster now (not removed).
    pub fn members(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.state != NodeState::Removed)
    }

    /// The node-to-node addresses of the members other than `me`, each once, the
    /// catalog node's first (the one that decides the layout): whom a node asks when it
    /// starts.
    pub fn peer_addrs(&self, me: &NodeId) -> Vec<String> {
        let catalog_first = self
            .members()
            .filter(|n| n.id == self.catalog_node)
            .chain(self.members().filter(|n| n.id != self.catalog_node));
        let mut addrs: Vec<String> = Vec::new();
        for n in catalog_first.filter(|n| &n.id != me) {
            if !addrs.contains(&n.rpc_addr) {
                addrs.push(n.rpc_addr.clone());
            }
        }
        addrs
    }

    /// The sites of nodes not removed, sorted.
    pub fn sites(&self) -> Vec<String> {
        let mut s: Vec<String> = self.members().map(|n| n.site.clone()).collect();
        s.sort();
        s.dedup();
        s
    }

    /// Every disk of every member, with its placement spot. Disks of draining nodes get
    /// weight 0: they keep what they hold (readable) but take no new shards. A node that
    /// is down keeps its weight: it is expected back, so its shards keep their home
    /// there, and placement gives each a substitute while it is away
    /// (`placement::place_spread`'s `usable`; see `Layout::is_away`).
    pub fn spots(&self) -> (Vec<placement::Spot>, Vec<DiskRef>) {
        let sites = self.sites();
        let (mut spots, mut refs) = (Vec::new(), Vec::new());
        for n in self.members() {
            let site = sites.iter().position(|s| s == &n.site).unwrap_or(0) as u32;
            for (d, disk) in n.disks.iter().enumerate() {
                let weight = if matches!(n.state, NodeState::Active | NodeState::Down) {
                    disk.weight
                } else {
                    0.0
                };
                spots.push(placement::Spot {
                    // Node 0's disks keep the ids a single node always used.
                    target: placement::Target {
                        id: ((n.seq as u64) << 16) | d as u64,
                        weight,
                    },
                    node: n.seq,
                    site,
                });
                refs.push(DiskRef {
                    node: n.id.clone(),
                    disk: d as u32,
                });
            }
        }
        (spots, refs)
    }

    /// Whether a member is down: its disks are homes for shards but cannot take them now.
    pub fn is_away(&self, id: &NodeId) -> bool {
        self.node(id).is_some_and(|n| n.state == NodeState::Down)
    }

    /// The redundancy new buckets get on this layout: survive one site when there are
    /// three or more, else one or two nodes, else the single node's disks.
    pub fn default_policy(&self) -> Redundancy {
        let nodes = self.members().count();
        let sites = self.sites().len();
        if nodes <= 1 {
            let disks = self.members().map(|n| n.disks.len()).sum();
            return Redundancy::default_for_disks(disks);
        }
        let (k, m) = if sites >= 3 {
            // Two shards per site: any one site can go (4+2 on 3 sites is 1.5x).
            ((2 * sites - 2).min(8), 2)
        } else if sites == 2 {
            (2, 2)
        } else {
            match nodes {
                2 => return Redundancy::Replicate(2),
                3 => (2, 1),
                4 | 5 => (2, 2),
                _ => (4, 2),
            }
        };
        let k = k.min(nodes.saturating_sub(m).max(1));
        Redundancy::Ec {
            k: k as u8,
            m: m as u8,
        }
    }

    /// What losing sites, nodes or disks does to data stored with `policy`, in words.
    pub fn survives(&self, policy: Redundancy) -> String {
        let n = policy.shard_count();
        let m = n - policy.needed();
        let nodes = self.members().count().max(1);
        let sites = self.sites().len().max(1);
        let disks: usize = self.members().map(|n| n.disks.len()).sum::<usize>().max(1);
        let per_node = placement::domain_cap(n, m, nodes);
        let per_site = placement::domain_cap(n, m, sites);
        let mut parts = Vec::new();
        if sites > 1 {
            parts.push(if per_site <= m {
                format!("any 1 of {sites} sites")
            } else {
                format!(
                    "no whole site (of {sites}; needs {} sites)",
                    n.div_ceil(m.max(1))
                )
            });
        }
        if nodes > 1 {
            let k = m / per_node;
            parts.push(format!("any {k} of {nodes} nodes"));
        }
        let disk_loss = if disks >= n { m } else { m / n.div_ceil(disks) };
        parts.push(format!("any {disk_loss} disks"));
        format!(
            "{policy} ({:.2}x storage) survives losing {}",
            n as f64 / policy.needed() as f64,
            parts.join(", or ")
        )
    }

    /// Reads a layout file; None if there is none.
    pub fn load(path: &Path) -> Result<Option<Layout>, ClusterError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                ClusterError::Invalid(format!("{} is not a cluster layout: {e}", path.display()))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClusterError::file("read", path)(e)),
        }
    }

    /// Writes the layout file atomically.
    pub fn save(&self, path: &Path) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ClusterError::Invalid(format!("cannot encode the layout: {e}")))?;
        crate::identity::replace_private(path, &format!("{text}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sites: &[&str]) -> Layout {
        let nodes = sites
            .iter()
            .enumerate()
            .map(|(i, s)| NodeInfo {
                id: NodeId(format!("{i:016x}")),
                seq: i as u32,
                public_key: String::new(),
                site: s.to_string(),
                rpc_addr: String::new(),
                disks: vec![DiskInfo { weight: 1.0 }],
                state: NodeState::Active,
            })
            .collect();
        Layout {
            epoch: 1,
            catalog_node: NodeId(format!("{:016x}", 0)),
            nodes,
        }
    }

    /// Whom a starting node asks: the catalog node first, itself and removed nodes
    /// never, an address two entries share once.
    #[test]
    fn peers_are_asked_catalog_node_first_each_address_once() {
        let mut l = layout(&["a", "a", "b", "b"]);
        for (i, n) in l.nodes.iter_mut().enumerate() {
            n.rpc_addr = format!("10.0.0.{i}:9420");
        }
        l.catalog_node = l.nodes[2].id.clone();
        l.nodes[3].state = NodeState::Removed;
        let me = l.nodes[1].id.clone();
        assert_eq!(l.peer_addrs(&me), ["10.0.0.2:9420", "10.0.0.0:9420"]);
        // A node that came back on another's old address is asked once.
        l.nodes[0].rpc_addr = "10.0.0.2:9420".into();
        assert_eq!(l.peer_addrs(&me), ["10.0.0.2:9420"]);
    }

    #[test]
    fn default_policies_follow_the_layout() {
        let six = layout(&["a", "a", "b", "b", "c", "c"]);
        assert_eq!(six.default_policy(), Redundancy::Ec { k: 4, m: 2 });
        assert!(
            six.survives(six.default_policy())
                .contains("any 1 of 3 sites"),
            "{}",
            six.survives(six.default_policy())
        );
        assert!(six.survives(six.default_policy()).contains("1.50x"));
        let two_sites = layout(&["a", "a", "b", "b"]);
        assert_eq!(two_sites.default_policy(), Redundancy::Ec { k: 2, m: 2 });
        assert!(
            two_sites
                .survives(two_sites.default_policy())
                .contains("any 1 of 2 sites")
        );
        assert_eq!(
            layout(&["a", "a"]).default_policy(),
            Redundancy::Replicate(2)
        );
        let one_site = layout(&["a"; 6]);
        let s = one_site.survives(Redundancy::Ec { k: 4, m: 2 });
        assert!(
            s.contains("any 2 of 6 nodes") && !s.contains("sites"),
            "{s}"
        );
        let two = layout(&["a", "b"]);
        assert!(
            two.survives(Redundancy::Ec { k: 4, m: 2 })
                .contains("no whole site")
        );
    }

    #[test]
    fn single_node_spots_keep_the_disk_ids() {
        let mut l = layout(&["a"]);
        l.nodes[0].disks = vec![DiskInfo { weight: 1.0 }; 3];
        let (spots, _) = l.spots();
        let ids: Vec<u64> = spots.iter().map(|s| s.target.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
    }
}

//! The cluster layout kept in the replicated catalog, and the Raft group kept in step
//! with it.
//!
//! - `ReplicatedLayout` is the `cluster::LayoutStore`: the layout is a catalog record
//!   ("layout", JSON) changed by compare-and-swap proposals, so two nodes changing it at
//!   once never lose either change, and a cut-off minority cannot change it at all.
//! - `follow_layout` hands every newer committed layout to this node's membership.
//! - `reconcile` (on the leader) makes every member of the layout a Raft learner and
//!   picks the voters (`choose_voters`: five, spread so no site holds half of them, or
//!   three) among nodes that are active and answering, keeping current voters when
//!   they qualify (few changes).

use cluster::ClusterError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use catalog::{Catalog, CatalogError, Command};
use cluster::{Layout, Membership, NodeId, NodeState};
use futures::future::BoxFuture;
use openraft::ChangeMembers;

use crate::{Member, Replica, raft_id};

const RECORD: &str = "layout";

/// Most voters: five, so that any two voters (or a site holding at most two) can fail
/// while the rest still make a majority.
pub const VOTERS: usize = 5;

/// The cluster layout kept in the replicated catalog (`cluster::LayoutStore`).
pub struct ReplicatedLayout {
    /// This node's replica.
    pub replica: Arc<Replica>,
    /// The catalog the layout record lives in.
    pub catalog: Catalog,
}

fn parse(bytes: &[u8]) -> Result<Layout, ClusterError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ClusterError::Invalid(format!("the stored layout is unreadable: {e}")))
}

/// The catalog failed to read or commit the layout (no majority, a stopped replica).
fn store(e: catalog::CatalogError) -> ClusterError {
    ClusterError::Store(Box::new(e))
}

impl cluster::LayoutStore for ReplicatedLayout {
    fn load(&self) -> BoxFuture<'_, Result<Option<Layout>, ClusterError>> {
        Box::pin(async move {
            self.catalog.read_barrier().await.map_err(store)?;
            match self.catalog.cluster_record(RECORD).map_err(store)? {
                Some(b) => parse(&b).map(Some),
                None => Ok(None),
            }
        })
    }

    fn save(
        &self,
        current: Option<Layout>,
        next: Layout,
    ) -> BoxFuture<'_, Result<bool, ClusterError>> {
        Box::pin(async move {
            let expect = match current {
                Some(_) => self.catalog.cluster_record(RECORD).map_err(store)?,
                None => None,
            };
            // The expected bytes are the stored ones, re-read after the barrier `load`
            // passed; if they changed meanwhile the proposal is refused (Conflict).
            let value = serde_json::to_vec(&next).expect("layouts serialize");
            match self
                .catalog
                .execute(Command::PutClusterRecord {
                    name: RECORD.into(),
                    expect,
                    value,
                })
                .await
            {
                Ok(_) => Ok(true),
                Err(CatalogError::Conflict) => Ok(false),
                Err(e) => Err(store(e)),
            }
        })
    }

    fn leads(&self) -> bool {
        self.replica.is_leader()
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        self.replica.leader().map(|m| (NodeId(m.node), m.addr))
    }

    fn confirm_leads(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.replica.is_leader() && self.replica.raft.get_read_log_id().await.is_ok()
        })
    }

    fn role(&self, node: &NodeId) -> Option<String> {
        let leader = self.replica.leader().map(|m| m.node);
        self.replica
            .members()
            .into_iter()
            .find(|(m, _)| m.node == node.0)
            .map(|(m, voter)| {
                if leader.as_deref() == Some(m.node.as_str()) {
                    "leader".into()
                } else if voter {
                    "voter".into()
                } else {
                    "learner".into()
                }
            })
    }
}

/// Hands each newer committed layout to `membership`, for as long as the node runs.
pub async fn follow_layout(catalog: Catalog, membership: Arc<Membership>) {
    let mut changes = catalog.watch_cluster();
    loop {
        match catalog.cluster_record(RECORD) {
            Ok(Some(b)) => match parse(&b) {
                Ok(l) => membership.adopt(l),
                Err(e) => tracing::error!("{e}"),
            },
            Ok(None) => {}
            Err(e) => tracing::error!("cannot read the layout from the catalog: {e}"),
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The voters this layout should have: five where the nodes allow, three otherwise.
/// With three or more sites no site may hold half the voters, so that losing a whole
/// site leaves a majority (2+2+1 of five over three sites; one per site of three when
/// one site holds most nodes). With one or two sites no choice survives the loss of
/// the larger, so the count alone decides: five survive any two nodes.
pub fn choose_voters(
    layout: &Layout,
    leader: &str,
    current: &BTreeSet<String>,
    answering: impl Fn(&NodeId) -> bool,
) -> Vec<String> {
    let mut eligible: Vec<_> = layout
        .members()
        .filter(|n| n.state == NodeState::Active && answering(&n.id))
        .collect();
    // The leader first (it keeps its vote: a leader that voted itself out would go on
    // leading a group it is not part of), then current voters (stability), then the
    // oldest members.
    eligible.sort_by_key(|n| (n.id.0 != leader, !current.contains(&n.id.0), n.seq));
    let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &eligible {
        *per_site.entry(n.site.as_str()).or_default() += 1;
    }
    let spread = per_site.len() >= 3;
    // The most voters a site may hold, for `count` voters in all.
    let cap = |count: usize| if spread { (count - 1) / 2 } else { count };
    let count = [VOTERS, 3]
        .into_iter()
        .find(|&c| {
            eligible.len() >= c && per_site.values().map(|&k| k.min(cap(c))).sum::<usize>() >= c
        })
        .unwrap_or(eligible.len().min(VOTERS));
    let mut chosen: Vec<String> = Vec::new();
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    // One per site first, then fill up from any site below its cap.
    for first_round in [true, false] {
        for n in &eligible {
            let t = taken.entry(n.site.as_str()).or_default();
            let room = if first_round {
                *t == 0
            } else {
                *t < cap(count)
            };
            if chosen.len() < count && room && !chosen.contains(&n.id.0) {
                chosen.push(n.id.0.clone());
                *t += 1;
            }
        }
    }
    chosen
}

/// On the leader, every second: learners for new members, voters re-chosen when one is
/// down, draining or removed, removed nodes dropped from the group.
pub async fn reconcile(replica: Arc<Replica>, membership: Arc<Membership>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !replica.is_leader() {
            continue;
        }
        if let Err(e) = reconcile_once(&replica, &membership).await {
            tracing::warn!("cannot bring the catalog's voters in line with the layout: {e}");
        }
    }
}

async fn reconcile_once(
    replica: &Replica,
    membership: &Membership,
) -> Result<(), crate::ConsensusError> {
    let layout = membership.layout();
    let members: BTreeMap<u64, (Member, bool)> = replica
        .members()
        .into_iter()
        .map(|(m, v)| (raft_id(&m.node), (m, v)))
        .collect();
    for n in layout.members() {
        let m = Member {
            node: n.id.0.clone(),
            addr: n.rpc_addr.clone(),
            site: n.site.clone(),
        };
        let id = raft_id(&n.id.0);
        match members.get(&id) {
            _ if n.state == NodeState::Removed => {}
            None => {
                tracing::info!(node = %n.id, "catalog: adding a replica");
                replica
                    .raft
                    .add_learner(id, m, false)
                    .await
                    .map_err(crate::ConsensusError::raft)?;
            }
            // A member restarted on another address: tell the group where it is now.
            Some((known, _)) if known != &m => {
                tracing::info!(node = %n.id, addr = %m.addr, "catalog: a replica moved");
                replica
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, m)])), true)
                    .await
                    .map_err(crate::ConsensusError::raft)?;
            }
            Some(_) => {}
        }
    }
    let current: BTreeSet<String> = members
        .values()
        .filter(|(_, v)| *v)
        .map(|(m, _)| m.node.clone())
        .collect();
    let me = replica.me.node.clone();
    let wanted = choose_voters(&layout, &me, &current, |id| {
        id.0 == me || !membership.is_suspected(id)
    });
    let wanted_set: BTreeSet<String> = wanted.iter().cloned().collect();
    // Change only when a voter must go (down, draining, removed) or voters are missing;
    // a voter that is merely slow stays.
    let must_go = current.iter().any(|v| {
        layout
            .node(&NodeId(v.clone()))
            .is_none_or(|n| n.state != NodeState::Active)
    });
    let missing = current.len() < VOTERS.min(wanted.len());
    // A site without a voter that now has an eligible node (one was away when voters
    // were last chosen) gets one back.
    let sites = |voters: &BTreeSet<String>| -> usize {
        voters
            .iter()
            .filter_map(|v| layout.node(&NodeId(v.clone())).map(|n| n.site.clone()))
            .collect::<BTreeSet<_>>()
            .len()
    };
    let better_spread = sites(&wanted_set) > sites(&current);
    // A change is two commits (a joint configuration, then the new one), driven by the
    // leader that started it; one cut short by a leader change stays joint, and `current`
    // is then the union of both (six voters for two sets of five). Finish it.
    let joint = replica.in_joint_membership();
    let change = joint || (must_go || missing || better_spread) && wanted_set != current;
    if change && !wanted.is_empty() {
        tracing::info!(voters = ?wanted, joint, "catalog: changing voters");
        let ids: BTreeSet<u64> = wanted.iter().map(|n| raft_id(n)).collect();
        replica
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
            .await
            .map_err(crate::ConsensusError::raft)?;
    }
    let removed: BTreeSet<u64> = layout
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Removed)
        .map(|n| raft_id(&n.id.0))
        .filter(|id| members.get(id).is_some_and(|(_, voter)| !voter))
        .collect();
    if !removed.is_empty() {
        replica
            .raft
            .change_membership(ChangeMembers::RemoveNodes(removed), true)
            .await
            .map_err(crate::ConsensusError::raft)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::NodeInfo;

    /// A layout with one node per entry of `sites`, joined in that order.
    fn layout(sites: &[&str]) -> Layout {
        let nodes = sites
            .iter()
            .enumerate()
            .map(|(i, site)| NodeInfo {
                id: NodeId(format!("n{i}")),
                seq: i as u32,
                public_key: String::new(),
                site: site.to_string(),
                rpc_addr: format!("10.0.0.{i}:9420"),
                disks: Vec::new(),
                state: NodeState::Active,
            })
            .collect();
        Layout {
            epoch: 1,
            catalog_node: NodeId("n0".into()),
            nodes,
        }
    }

    fn voters_per_site(l: &Layout, voters: &[String]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for v in voters {
            *m.entry(l.node(&NodeId(v.clone())).unwrap().site.clone())
                .or_default() += 1;
        }
        m
    }

    #[test]
    fn five_voters_over_three_sites_leave_a_majority_after_any_site_is_lost() {
        let l = layout(&["s1", "s1", "s2", "s2", "s3", "s3"]);
        let v = choose_voters(&l, "n0", &BTreeSet::new(), |_| true);
        assert_eq!(v.len(), 5);
        let per = voters_per_site(&l, &v);
        assert_eq!(per.len(), 3);
        assert!(per.values().all(|&k| k <= 2), "{per:?}");
    }

    #[test]
    fn a_site_holding_most_nodes_gets_no_more_than_a_minority_of_voters() {
        // Five voters would put three in s1: losing s1 would lose the majority.
        let l = layout(&["s1", "s1", "s1", "s1", "s2", "s3"]);
        let v = choose_voters(&l, "n0", &BTreeSet::new(), |_| true);
        assert_eq!(
            voters_per_site(&l, &v)
                .values()
                .copied()
                .collect::<Vec<_>>(),
            [1, 1, 1]
        );
        // One site more makes five possible: 2 + 1 + 1 + 1.
        let l = layout(&["s1", "s1", "s1", "s1", "s2", "s3", "s4"]);
        let v = choose_voters(&l, "n0", &BTreeSet::new(), |_| true);
        assert_eq!(v.len(), 5);
        assert!(voters_per_site(&l, &v).values().all(|&k| k <= 2));
    }

    #[test]
    fn one_or_two_sites_take_as_many_voters_as_there_are_nodes_up_to_five() {
        for (sites, want) in [
            (&["s1"][..], 1),
            (&["s1", "s2"][..], 2),
            (&["s1", "s1", "s2"][..], 3),
            (&["s1", "s1", "s2", "s2"][..], 3),
            (&["s1", "s1", "s1", "s2", "s2", "s2", "s2"][..], 5),
        ] {
            let l = layout(sites);
            assert_eq!(
                choose_voters(&l, "n0", &BTreeSet::new(), |_| true).len(),
                want,
                "{sites:?}"
            );
        }
    }

    #[test]
    fn the_leader_keeps_its_vote() {
        // Without the leader first, n5 (the newest node, in s3 with n4) would lose its
        // seat to n4 and go on leading a group it no longer votes in.
        let l = layout(&["s1", "s1", "s2", "s2", "s3", "s3"]);
        let v = choose_voters(&l, "n5", &BTreeSet::new(), |_| true);
        assert!(v.contains(&"n5".to_string()), "{v:?}");
        // Also when the count drops to three (site s1 away): one per remaining site.
        let current: BTreeSet<String> = ["n1", "n2", "n3", "n4", "n5"].map(String::from).into();
        let v = choose_voters(&l, "n5", &current, |id| {
            !["n0", "n1"].contains(&id.0.as_str())
        });
        assert_eq!(v.len(), 3);
        assert!(v.contains(&"n5".to_string()), "{v:?}");
    }

    #[test]
    fn current_voters_stay_and_silent_nodes_are_not_chosen() {
        let l = layout(&["s1", "s1", "s2", "s2", "s3", "s3"]);
        let current: BTreeSet<String> = ["n1", "n3", "n5"].map(String::from).into();
        let v = choose_voters(&l, "n1", &current, |id| id.0 != "n0");
        assert!(current.iter().all(|c| v.contains(c)), "{v:?}");
        assert!(!v.contains(&"n0".to_string()));
        assert_eq!(v.len(), 5);
    }
}

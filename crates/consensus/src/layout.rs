//! The cluster layout kept in the replicated catalog, and the Raft group kept in step
//! with it.
//!
//! - `ReplicatedLayout` is the `cluster::LayoutStore`: the layout is a catalog record
//!   ("layout", JSON) changed by compare-and-swap proposals, so two nodes changing it at
//!   once never lose either change, and a cut-off minority cannot change it at all.
//! - `follow_layout` hands every newer committed layout to this node's membership.
//! - `reconcile` (on the leader) makes every member of the layout a Raft learner and
//!   picks the voters: up to three, one per site where possible, among nodes that are
//!   active and answering, keeping current voters when they qualify (few changes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use catalog::{Catalog, CatalogError, Command};
use cluster::{Layout, Membership, NodeId, NodeState};
use futures::future::BoxFuture;
use openraft::ChangeMembers;

use crate::{Member, Replica, raft_id};

const RECORD: &str = "layout";

/// Voters wanted: three, so that one site (or one voter) can fail.
pub const VOTERS: usize = 3;

pub struct ReplicatedLayout {
    pub replica: Arc<Replica>,
    pub catalog: Catalog,
}

fn parse(bytes: &[u8]) -> Result<Layout, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the stored layout is unreadable: {e}"))
}

impl cluster::LayoutStore for ReplicatedLayout {
    fn load(&self) -> BoxFuture<'_, Result<Option<Layout>, String>> {
        Box::pin(async move {
            self.catalog
                .read_barrier()
                .await
                .map_err(|e| e.to_string())?;
            match self
                .catalog
                .cluster_record(RECORD)
                .map_err(|e| e.to_string())?
            {
                Some(b) => parse(&b).map(Some),
                None => Ok(None),
            }
        })
    }

    fn save(&self, current: Option<Layout>, next: Layout) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let expect = match current {
                Some(_) => self
                    .catalog
                    .cluster_record(RECORD)
                    .map_err(|e| e.to_string())?,
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
                Err(e) => Err(format!("cannot record the layout: {e}")),
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

/// The voters this layout should have.
pub fn choose_voters(
    layout: &Layout,
    current: &BTreeSet<String>,
    answering: impl Fn(&NodeId) -> bool,
) -> Vec<String> {
    let mut eligible: Vec<_> = layout
        .members()
        .filter(|n| n.state == NodeState::Active && answering(&n.id))
        .collect();
    // Current voters first (stability), then the oldest members.
    eligible.sort_by_key(|n| (!current.contains(&n.id.0), n.seq));
    let mut chosen: Vec<String> = Vec::new();
    let mut sites = BTreeSet::new();
    // One per site first, then fill up from any site.
    for n in &eligible {
        if chosen.len() < VOTERS && sites.insert(n.site.clone()) {
            chosen.push(n.id.0.clone());
        }
    }
    for n in &eligible {
        if chosen.len() < VOTERS && !chosen.contains(&n.id.0) {
            chosen.push(n.id.0.clone());
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

async fn reconcile_once(replica: &Replica, membership: &Membership) -> anyhow::Result<()> {
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
                replica.raft.add_learner(id, m, false).await?;
            }
            // A member restarted on another address: tell the group where it is now.
            Some((known, _)) if known != &m => {
                tracing::info!(node = %n.id, addr = %m.addr, "catalog: a replica moved");
                replica
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, m)])), true)
                    .await?;
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
    let wanted = choose_voters(&layout, &current, |id| {
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
    if (must_go || missing || better_spread) && !wanted.is_empty() && wanted_set != current {
        tracing::info!(voters = ?wanted, "catalog: changing voters");
        let ids: BTreeSet<u64> = wanted.iter().map(|n| raft_id(n)).collect();
        replica
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
            .await?;
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
            .await?;
    }
    Ok(())
}

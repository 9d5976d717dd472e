//! Membership: joining, the current layout, who may talk to this node, and heartbeats
//! that notice a node going away or coming back.
//!
//! In a cluster the layout lives in the replicated catalog (`LayoutStore`, given by the
//! `consensus` crate): any node proposes a change, Raft orders it, and every node adopts
//! each newer layout as its catalog applies it. The node leading the catalog also turns
//! missed heartbeats into "down" and runs repair. Without a store (tests of this crate),
//! the node that founded the cluster keeps the layout and pushes it to the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ClusterError;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use futures::future::BoxFuture;

use crate::capacity::{Candidate, Capacity, Load, Need, Placements};
use crate::client::{Client, DiskHealth, NodeHealth, RpcError};
use crate::identity::NodeId;
use crate::layout::{Layout, NodeInfo, NodeState};

/// How to start membership.
pub struct StartOptions {
    /// The node's data directory (the layout file lives there).
    pub data_dir: PathBuf,
    /// This node as it wants to be listed (seq and state are assigned on joining).
    pub me: NodeInfo,
    /// HOST:PORT of any member's node-to-node port, to join its cluster.
    pub join: Option<String>,
    /// How long a node may miss heartbeats before its shards are rebuilt elsewhere.
    pub down_after: Duration,
}

/// Where the layout is kept when the catalog is replicated: changes are committed by a
/// majority of voters, so a cut-off minority can never change it.
pub trait LayoutStore: Send + Sync + 'static {
    /// The committed layout (seeing every change acknowledged before the call).
    fn load(&self) -> BoxFuture<'_, Result<Option<Layout>, ClusterError>>;
    /// Commits `next` if the committed layout is still `current`; false if it changed.
    fn save(
        &self,
        current: Option<Layout>,
        next: Layout,
    ) -> BoxFuture<'_, Result<bool, ClusterError>>;
    /// Does this node lead the catalog now (it then marks nodes down and runs repair)?
    fn leads(&self) -> bool;
    /// The leading node and its node-to-node address, if one is known.
    fn leader(&self) -> Option<(NodeId, String)>;
    /// "leader", "voter" or "learner" in the catalog's Raft group, if a member.
    fn role(&self, node: &NodeId) -> Option<String>;
    /// Does this node lead, confirmed by a majority of voters just now?
    fn confirm_leads(&self) -> BoxFuture<'_, bool>;
}

#[derive(Default, Clone)]
struct PeerView {
    last_ok: Option<Instant>,
    health: Option<NodeHealth>,
    /// When the heartbeat that brought `health` was sent.
    health_asked: Option<Instant>,
    error: Option<String>,
    /// A shard request to it timed out: avoid it until a heartbeat answers again.
    failed_at: Option<Instant>,
}

/// This node's view of the cluster: the layout, heartbeats, who is down.
pub struct Membership {
    me: NodeId,
    path: PathBuf,
    tx: watch::Sender<Arc<Layout>>,
    client: Client,
    peers: Mutex<HashMap<NodeId, PeerView>>,
    down_after: Duration,
    started: Instant,
    /// Serializes layout changes (read-modify-write of the file and the epoch).
    changing: tokio::sync::Mutex<()>,
    /// Wakes the repair worker: a layout change, a degraded write, a node's scrubber.
    repair: tokio::sync::Notify,
    store: std::sync::OnceLock<Arc<dyn LayoutStore>>,
    /// What this node's services hold (containers, tasks), for heartbeats.
    load: std::sync::OnceLock<LoadSource>,
    /// Work placed on other nodes since their last heartbeat.
    placements: Placements,
}

/// Counts what runs on this node (set by the node, which has the services).
pub type LoadSource = Arc<dyn Fn() -> Load + Send + Sync>;

/// What `edgecloud cluster status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node.
    pub me: NodeId,
    /// The layout epoch.
    pub epoch: u64,
    /// The node whose catalog the layout names.
    pub catalog_node: NodeId,
    /// The sites, sorted.
    pub sites: Vec<String>,
    /// Every node and how it is doing.
    pub nodes: Vec<NodeStatus>,
}

/// One node as `cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node as the layout has it.
    #[serde(flatten)]
    pub info: NodeInfo,
    /// "leader", "voter", "learner" or "" in the catalog's Raft group.
    pub role: String,
    /// Milliseconds since the last answered heartbeat (None: never, or this node).
    pub seen_ms_ago: Option<u64>,
    /// Missed heartbeats for a few seconds; not yet declared down.
    pub suspected: bool,
    /// Disk health as the node last reported it (`info.disks` are the layout's weights).
    pub disk_health: Vec<DiskHealth>,
    /// The last heartbeat's error, if it failed.
    pub error: Option<String>,
    /// Its CPUs, memory and load, as it last reported them.
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

const LAYOUT_FILE: &str = "cluster/layout.json";
/// Heartbeats go out this often; a node is suspected after three missed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A TLS failure: the other side does not trust this node's certificate (or vice versa).
fn is_trust_failure(e: &RpcError) -> bool {
    let text = e.to_string();
    text.contains("certificate") || text.contains("handshake") || text.contains("alert")
}

/// A member refused this node because it was removed from the cluster.
fn is_removal(e: &RpcError) -> bool {
    matches!(e, RpcError::Refused { reason, .. } if reason.contains("removed"))
}

/// `what` failed at the member at `addr`: the reason, and what to check when the
/// member did not trust this node.
fn explain(what: String, addr: &str, e: RpcError) -> ClusterError {
    if is_trust_failure(&e) {
        ClusterError::Peer(format!(
            "{what}: {e}\nthe node at {addr} did not accept this node's certificate: is the cluster secret (--secret-file or EDGECLOUD_CLUSTER_SECRET) the same as the cluster's?"
        ))
    } else {
        ClusterError::Peer(format!("{what}: {e}"))
    }
}

/// A member restarting announces itself again (its address or disks may have
/// changed) to the first member of its saved layout that answers (the catalog node
/// first; not `skip`, which did not); if none does, it keeps the saved layout (the
/// replicated catalog brings newer ones).
async fn announce(
    client: &Client,
    me: &NodeInfo,
    saved: Layout,
    skip: Option<&str>,
) -> Result<Layout, ClusterError> {
    let addrs = saved.peer_addrs(&me.id);
    for addr in addrs.into_iter().filter(|a| Some(a.as_str()) != skip) {
        match client.join(&addr, me).await {
            Ok(newer) => return Ok(newer),
            Err(e) if is_trust_failure(&e) || is_removal(&e) => {
                return Err(explain(
                    format!("the member at {addr} refused this node"),
                    &addr,
                    e,
                ));
            }
            Err(e) => tracing::warn!("cannot announce this node to {addr}: {e}"),
        }
    }
    tracing::warn!("no member answered; using the saved layout");
    Ok(saved)
}

impl Membership {
    /// Loads or founds the layout (or joins through `opts.join`) and starts heartbeats.
    pub async fn start(
        opts: StartOptions,
        client: Client,
    ) -> Result<Arc<Membership>, ClusterError> {
        let path = opts.data_dir.join(LAYOUT_FILE);
        let saved = Layout::load(&path)?;
        let me = opts.me.id.clone();
        let layout = match (&opts.join, saved) {
            (Some(addr), saved) => match client.join(addr, &opts.me).await {
                Ok(l) => l,
                // A member whose `--join` node is down (a booted node always names it)
                // announces itself to the others it knew instead, as a restart does.
                Err(e)
                    if !(is_trust_failure(&e) || is_removal(&e))
                        && saved.as_ref().is_some_and(|l| l.node(&me).is_some()) =>
                {
                    tracing::warn!("cannot join through {addr} ({e}); asking the other members");
                    let saved = saved.expect("checked above");
                    announce(&client, &opts.me, saved, Some(addr.as_str())).await?
                }
                Err(e) => {
                    return Err(explain(
                        format!("cannot join the cluster at {addr}"),
                        addr,
                        e,
                    ));
                }
            },
            (None, Some(l)) if l.catalog_node == me => {
                let mut l = l;
                if let Some(n) = l.node_mut(&me) {
                    n.rpc_addr = opts.me.rpc_addr.clone();
                    n.site = opts.me.site.clone();
                    n.disks = opts.me.disks.clone();
                    n.state = NodeState::Active;
                }
                l
            }
            (None, Some(l)) => announce(&client, &opts.me, l, None).await?,
            (None, None) => {
                let mut first = opts.me.clone();
                first.seq = 0;
                first.state = NodeState::Active;
                Layout::founded_by(first)
            }
        };
        if layout
            .node(&me)
            .is_some_and(|n| n.state == NodeState::Removed)
        {
            return Err(ClusterError::Invalid(format!(
                "this node ({me}) was removed from the cluster; to join again as a new node, move its data folder away"
            )));
        }
        layout.save(&path)?;
        let (tx, _) = watch::channel(Arc::new(layout));
        Ok(Arc::new(Membership {
            me,
            path,
            tx,
            client,
            peers: Mutex::new(HashMap::new()),
            down_after: opts.down_after,
            started: Instant::now(),
            changing: tokio::sync::Mutex::new(()),
            repair: tokio::sync::Notify::new(),
            store: std::sync::OnceLock::new(),
            load: std::sync::OnceLock::new(),
            placements: Placements::default(),
        }))
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The node-to-node client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The current layout.
    pub fn layout(&self) -> Arc<Layout> {
        self.tx.borrow().clone()
    }

    /// Wakes on every layout change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Layout>> {
        self.tx.subscribe()
    }

    /// Keeps the layout in `store` from now on (call once, before serving).
    pub fn use_store(&self, store: Arc<dyn LayoutStore>) {
        let _ = self.store.set(store);
    }

    /// Counts this node's load with `source` from now on (call once).
    pub fn count_load(&self, source: LoadSource) {
        let _ = self.load.set(source);
    }

    /// This node's size and load, measured now.
    pub fn local_capacity(&self) -> Capacity {
        Capacity::measure(self.load.get().map(|f| f()).unwrap_or_default())
    }

    /// The active nodes that answer heartbeats, with their size and load (their last
    /// heartbeat's, plus what was placed there since): where work may go.
    pub fn candidates(&self) -> Vec<Candidate> {
        let layout = self.layout();
        let local = self.local_capacity();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        layout
            .members()
            .filter(|n| n.state == NodeState::Active)
            .filter_map(|n| {
                let capacity = if n.id == self.me {
                    local.clone()
                } else {
                    let v = peers.get(&n.id)?;
                    if v.failed_at.is_some()
                        || v.last_ok.is_none_or(|t| t.elapsed() > 3 * HEARTBEAT)
                    {
                        return None;
                    }
                    let mut c = v.health.as_ref()?.capacity.clone()?;
                    self.placements
                        .add_since(&n.id, v.health_asked, &mut c.load);
                    c
                };
                Some(Candidate {
                    id: n.id.clone(),
                    site: n.site.clone(),
                    rpc_addr: n.rpc_addr.clone(),
                    me: n.id == self.me,
                    capacity,
                })
            })
            .collect()
    }

    /// Runs `place`, which hands work to another node, and counts the work into that
    /// node's load until a heartbeat sent after it took it (not at all if it failed).
    pub async fn place_on<T, E, F>(&self, node: &NodeId, need: &Need, place: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let token = self.placements.placed(node, need);
        let r = place.await;
        match &r {
            Ok(_) => self.placements.taken(token),
            Err(_) => self.placements.failed(token),
        }
        r
    }

    /// Does this node coordinate the cluster (mark nodes down, run repair and garbage
    /// collection)? The catalog's Raft leader; without a store, the founding node.
    pub fn leads(&self) -> bool {
        match self.store.get() {
            Some(s) => s.leads(),
            None => self.layout().catalog_node == self.me,
        }
    }

    /// `leads`, confirmed by a majority of the catalog's voters (before destructive work:
    /// a leader cut off from the others may still believe it leads).
    pub async fn confirm_leads(&self) -> bool {
        match self.store.get() {
            Some(s) => s.confirm_leads().await,
            None => self.leads(),
        }
    }

    /// The coordinating node's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        match self.store.get() {
            Some(s) => s.leader(),
            None => {
                let l = self.layout();
                l.node(&l.catalog_node)
                    .map(|n| (n.id.clone(), n.rpc_addr.clone()))
            }
        }
    }

    /// Takes a layout the replicated catalog committed, if newer than ours.
    pub fn adopt(&self, layout: Layout) {
        if layout.epoch <= self.layout().epoch {
            return;
        }
        if let Err(e) = layout.save(&self.path) {
            tracing::error!("cannot save the layout: {e}");
        }
        self.tx.send_replace(Arc::new(layout));
        self.request_repair();
    }

    /// Asks this node's repair worker for a pass soon. The worker runs it if this node
    /// leads the catalog and hands the request to the leading node otherwise, so any
    /// node may be asked (a degraded write, a disk's lost shards, `cluster repair`).
    pub fn request_repair(&self) {
        self.repair.notify_one();
    }

    /// Hands a repair request this node cannot serve to the node that leads the catalog.
    /// False while no other node is known to lead (or it did not take the request).
    pub async fn hand_repair_to_leader(&self) -> bool {
        match self.leader() {
            Some((id, addr)) if id != self.me => match self.client.request_repair(&addr).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(leader = %id, error = %e, "cannot hand a repair request to the leading node");
                    false
                }
            },
            _ => false,
        }
    }

    /// Waits until a repair pass is wanted.
    pub async fn repair_requested(&self) {
        self.repair.notified().await
    }

    /// Is a node failing its heartbeats right now (not yet declared down)? Writes then
    /// send its shards elsewhere instead of waiting on it.
    pub fn is_suspected(&self, id: &NodeId) -> bool {
        let peers = self.peers.lock().expect("peers lock");
        peers.get(id).is_some_and(|v| {
            v.failed_at.is_some()
                || v.error.is_some() && v.last_ok.is_none_or(|t| t.elapsed() > 3 * HEARTBEAT)
        })
    }

    /// A request to a node got no answer in time: treat it as suspected now, rather than
    /// after missed heartbeats, until it answers a heartbeat again.
    pub fn report_silent(&self, id: &NodeId) {
        let mut peers = self.peers.lock().expect("peers lock");
        peers.entry(id.clone()).or_default().failed_at = Some(Instant::now());
    }

    /// May this peer use the node-to-node API? Members only; removed nodes never.
    pub fn authorize(&self, peer: &NodeId) -> Result<(), ClusterError> {
        match self.layout().node(peer).map(|n| n.state) {
            Some(NodeState::Removed) => Err(ClusterError::Refused(format!(
                "node {peer} was removed from this cluster; its requests are refused"
            ))),
            Some(_) => Ok(()),
            None => Err(ClusterError::Refused(format!(
                "node {peer} is not a member of this cluster"
            ))),
        }
    }

    /// A node asks to join (or a member re-announces itself after a restart).
    pub async fn join(&self, peer: &NodeId, info: NodeInfo) -> Result<Arc<Layout>, ClusterError> {
        if self.store.get().is_none() && !self.leads() {
            let l = self.layout();
            let at = l.node(&l.catalog_node).map(|n| n.rpc_addr.clone());
            return Err(ClusterError::Refused(format!(
                "this node does not manage membership; join via the catalog node at {}",
                at.unwrap_or_default()
            )));
        }
        let key = codec::unhex(&info.public_key)
            .ok_or_else(|| ClusterError::Refused("the public key is not hex".into()))?;
        if &info.id != peer || NodeId::from_public_key(&key) != info.id {
            return Err(ClusterError::Refused(format!(
                "forged node identity: the request claims {} but its certificate is {peer}",
                info.id
            )));
        }
        self.change(move |l| {
            let mut info = info.clone();
            let next_seq = l.nodes.iter().map(|n| n.seq + 1).max().unwrap_or(0);
            match l.node_mut(&info.id) {
                Some(n) if n.state == NodeState::Removed => {
                    return Err(ClusterError::Refused(format!(
                        "node {} was removed from this cluster and cannot rejoin with the same identity",
                        info.id
                    )));
                }
                Some(n) => {
                    n.rpc_addr = info.rpc_addr;
                    n.site = info.site;
                    n.disks = info.disks;
                    if n.state == NodeState::Down {
                        n.state = NodeState::Active;
                    }
                }
                None => {
                    info.seq = next_seq;
                    info.state = NodeState::Active;
                    tracing::info!(node = %info.id, site = %info.site, addr = %info.rpc_addr, "node joined");
                    l.nodes.push(info);
                }
            }
            Ok(())
        })
        .await
    }

    /// Starts moving every shard off a node (`Draining`: it takes no new shards; repair
    /// moves what it holds). Refused when the nodes left could not hold `widest` shards
    /// of a chunk on distinct disks, or for the catalog node.
    pub async fn drain(&self, id: &NodeId, widest: usize) -> Result<Arc<Layout>, ClusterError> {
        let (l, _) = self.changeable(id, "drained (yet)")?;
        let disks_left: usize = l
            .members()
            .filter(|m| &m.id != id && m.state == NodeState::Active)
            .map(|m| m.disks.len())
            .sum();
        if disks_left < widest {
            return Err(ClusterError::Refused(format!(
                "draining {id} would leave {disks_left} disks for chunks of {widest} shards: add a node first"
            )));
        }
        tracing::info!(node = %id, "draining");
        self.set_state(id, NodeState::Draining).await
    }

    /// The layout and a node's state, if an operator may change that node: it exists,
    /// is not the catalog node, and was not removed already.
    fn changeable(
        &self,
        id: &NodeId,
        verb: &str,
    ) -> Result<(Arc<Layout>, NodeState), ClusterError> {
        let l = self.layout();
        let n = l
            .node(id)
            .ok_or_else(|| ClusterError::Refused(format!("no node {id} in this cluster")))?;
        if self.store.get().is_none() && id == &l.catalog_node {
            return Err(ClusterError::Refused(format!(
                "node {id} holds the catalog and cannot be {verb}"
            )));
        }
        if n.state == NodeState::Removed {
            return Err(ClusterError::Refused(format!(
                "node {id} was already removed"
            )));
        }
        let state = n.state;
        Ok((l, state))
    }

    async fn set_state(&self, id: &NodeId, state: NodeState) -> Result<Arc<Layout>, ClusterError> {
        let id = id.clone();
        self.change(move |l| {
            if let Some(n) = l.node_mut(&id) {
                n.state = state;
            }
            Ok(())
        })
        .await
    }

    /// Takes a node out of the cluster for good. Only a drained node that holds no
    /// shards any more, or a down node whose shards were already rebuilt elsewhere
    /// (`rebuilt`: a repair pass since it went down found every chunk complete).
    pub async fn remove(&self, id: &NodeId, rebuilt: bool) -> Result<Arc<Layout>, ClusterError> {
        let (_, state) = self.changeable(id, "removed")?;
        let held: Option<u64> = self
            .peers
            .lock()
            .expect("peers lock")
            .get(id)
            .and_then(|v| v.health.as_ref())
            .map(|h| h.disks.iter().map(|d| d.shards).sum());
        match state {
            NodeState::Removed => unreachable!("changeable refuses removed nodes"),
            NodeState::Draining if held == Some(0) => {}
            NodeState::Down if rebuilt => {}
            NodeState::Draining => {
                return Err(ClusterError::Refused(format!(
                    "node {id} still holds {} shards: wait until the drain has moved them (cluster status)",
                    held.map_or("some".to_string(), |h| h.to_string())
                )));
            }
            NodeState::Down => {
                return Err(ClusterError::Refused(format!(
                    "node {id} is down but its shards are not all rebuilt yet: wait for a healthy repair pass"
                )));
            }
            NodeState::Active => {
                return Err(ClusterError::Refused(format!(
                    "node {id} is active and holds data: drain it first (edgecloud cluster drain {id})"
                )));
            }
        }
        tracing::warn!(node = %id, "removed from the cluster");
        self.set_state(id, NodeState::Removed).await
    }

    /// A layout pushed by the catalog node (only without a replicated store).
    pub fn accept_layout(&self, peer: &NodeId, layout: Layout) -> Result<(), ClusterError> {
        if self.store.get().is_some() {
            return Err(ClusterError::Refused(format!(
                "layouts come from the replicated catalog; the one pushed by {peer} is ignored"
            )));
        }
        let current = self.layout();
        if peer != &current.catalog_node {
            return Err(ClusterError::Refused(format!(
                "layouts are accepted only from the catalog node {}, not {peer}",
                current.catalog_node
            )));
        }
        if layout.epoch <= current.epoch {
            return Ok(()); // stale or repeated: nothing to do
        }
        layout.save(&self.path)?;
        self.tx.send_replace(Arc::new(layout));
        Ok(())
    }

    /// Applies a change to the layout: through the replicated catalog (retried if
    /// another change landed first), or, without one, saved here and pushed.
    pub async fn change(
        &self,
        f: impl Fn(&mut Layout) -> Result<(), ClusterError>,
    ) -> Result<Arc<Layout>, ClusterError> {
        let _guard = self.changing.lock().await;
        if let Some(store) = self.store.get() {
            for _ in 0..20 {
                let current = store.load().await?;
                let mut next = current.clone().unwrap_or_else(|| (*self.layout()).clone());
                f(&mut next)?;
                next.epoch = next.epoch.max(self.layout().epoch) + 1;
                if store.save(current, next.clone()).await? {
                    self.adopt(next);
                    return Ok(self.layout());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(ClusterError::Refused(
                "the layout kept changing meanwhile; try again".into(),
            ));
        }
        let mut l = (*self.layout()).clone();
        f(&mut l)?;
        l.epoch += 1;
        l.save(&self.path)?;
        let l = Arc::new(l);
        self.tx.send_replace(l.clone());
        self.push_to_all(&l);
        self.request_repair();
        Ok(l)
    }

    fn push_to_all(&self, l: &Arc<Layout>) {
        for n in l.members().filter(|n| n.id != self.me) {
            let (client, addr, l) = (self.client.clone(), n.rpc_addr.clone(), l.clone());
            tokio::spawn(async move {
                if let Err(e) = client.push_layout(&addr, &l).await {
                    tracing::debug!("layout push to {addr}: {e}");
                }
            });
        }
    }

    /// Heartbeats every member each second (catalog node): a node silent for
    /// `down_after` is marked down (its shards are then rebuilt elsewhere); a down node
    /// that answers again is marked active. Members with an older layout get the new one.
    pub async fn monitor(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let pushes = self.store.get().is_none();
            if pushes && !self.leads() {
                continue;
            }
            let layout = self.layout();
            let checks = layout.members().filter(|n| n.id != self.me).map(|n| {
                let (client, n) = (self.client.clone(), n.clone());
                async move {
                    let asked = Instant::now();
                    let r = client.health(&n.rpc_addr, HEARTBEAT * 2).await;
                    (n, asked, r)
                }
            });
            let results = futures::future::join_all(checks).await;
            let mut went_down = Vec::new();
            let mut came_back = Vec::new();
            {
                let mut peers = self.peers.lock().expect("peers lock");
                for (n, asked, r) in results {
                    let v = peers.entry(n.id.clone()).or_default();
                    match r {
                        Ok(h) => {
                            if pushes && h.epoch < layout.epoch {
                                let (client, addr, l) =
                                    (self.client.clone(), n.rpc_addr.clone(), layout.clone());
                                tokio::spawn(async move {
                                    let _ = client.push_layout(&addr, &l).await;
                                });
                            }
                            v.last_ok = Some(Instant::now());
                            v.failed_at = None;
                            v.health = Some(h);
                            v.health_asked = Some(asked);
                            v.error = None;
                            if n.state == NodeState::Down {
                                came_back.push(n.id.clone());
                            }
                        }
                        Err(e) => {
                            v.error = Some(e.to_string());
                            let silent = v.last_ok.unwrap_or(self.started).elapsed();
                            if n.state == NodeState::Active && silent >= self.down_after {
                                went_down.push(n.id.clone());
                            }
                        }
                    }
                }
            }
            // Every node keeps its own view for reads and writes (suspected peers);
            // only the leader records nodes going down or coming back, never itself
            // down (and itself back, should a stale leader have marked it down).
            if !self.leads() {
                continue;
            }
            if layout
                .node(&self.me)
                .is_some_and(|n| n.state == NodeState::Down)
            {
                came_back.push(self.me.clone());
            }
            if went_down.is_empty() && came_back.is_empty() {
                continue;
            }
            let r = self
                .change(|l| {
                    // A leader cut off from the others saw everyone silent; by the time
                    // its change goes through, another leads: then its view is void.
                    if !self.leads() {
                        return Err(ClusterError::Refused("no longer leading; the heartbeat view is stale".into()));
                    }
                    let leader = self.leader().map(|(id, _)| id);
                    for id in &went_down {
                        if Some(id) == leader.as_ref() || id == &self.me {
                            continue;
                        }
                        if let Some(n) = l.node_mut(id) {
                            tracing::warn!(node = %id, "node down: its shards will be rebuilt on the others");
                            n.state = NodeState::Down;
                        }
                    }
                    for id in &came_back {
                        if let Some(n) = l.node_mut(id) {
                            tracing::info!(node = %id, "node back");
                            n.state = NodeState::Active;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                tracing::error!("cannot record the layout change: {e}");
            }
        }
    }

    /// The cluster as `cluster status` shows it, with this node's disks.
    pub fn status(&self, local_disks: Vec<DiskHealth>) -> ClusterStatus {
        let l = self.layout();
        let local = self.local_capacity();
        let peers = self.peers.lock().expect("peers lock");
        let nodes = l
            .nodes
            .iter()
            .map(|n| {
                let v = peers.get(&n.id).cloned().unwrap_or_default();
                let me = n.id == self.me;
                let seen = v.last_ok.map(|t| t.elapsed().as_millis() as u64);
                NodeStatus {
                    info: n.clone(),
                    role: match self.store.get() {
                        Some(s) => s.role(&n.id).unwrap_or_else(|| "joining".into()),
                        None if n.id == l.catalog_node => "catalog".into(),
                        None => "storage".into(),
                    },
                    seen_ms_ago: if me { Some(0) } else { seen },
                    suspected: !me
                        && n.state == NodeState::Active
                        && seen.is_none_or(|ms| ms > 3 * HEARTBEAT.as_millis() as u64),
                    capacity: if me {
                        Some(local.clone())
                    } else {
                        v.health.as_ref().and_then(|h| h.capacity.clone())
                    },
                    disk_health: if me {
                        local_disks.clone()
                    } else {
                        v.health.map(|h| h.disks).unwrap_or_default()
                    },
                    error: if me { None } else { v.error },
                }
            })
            .collect();
        ClusterStatus {
            me: self.me.clone(),
            epoch: l.epoch,
            catalog_node: self
                .leader()
                .map(|(id, _)| id)
                .unwrap_or_else(|| l.catalog_node.clone()),
            sites: l.sites(),
            nodes,
        }
    }
}

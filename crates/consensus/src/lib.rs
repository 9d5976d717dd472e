//! The catalog replicated with Raft (openraft 0.9) between a cluster's voters.
//!
//! Every catalog change is a `catalog::Proposal`; the leader appends it to the Raft log,
//! and once a majority of voters holds it, each replica applies it to its own catalog
//! (`state_machine`). A node that is not the leader forwards its proposals to the leader
//! and, before a read that must see every acknowledged write, asks the leader how far
//! the log is committed and waits until its own catalog has applied that far
//! (`Replica::read_barrier`, the "read index" of the Raft paper). The leader answers
//! that question at once while it holds a read lease (`lease`), else after a heartbeat
//! round to a majority.
//!
//! Layout: `log_store` (the log and vote, their own redb file), `state_machine` (the
//! catalog + snapshots), `network` (messages over the node-to-node mutual-TLS API).

mod error;
mod lease;
pub mod log_store;
pub mod network;
pub mod replicated_layout;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog::{Catalog, CatalogError, Outcome, Proposal};
pub use error::ConsensusError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

/// What applying a proposal answers.
pub type Reply = Result<Outcome, CatalogError>;

/// A Raft member: which cluster node it is, where its node-to-node API listens, and
/// its site (voters are spread over sites).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The cluster node id.
    pub node: String,
    /// Its node-to-node address (HOST:PORT).
    pub addr: String,
    /// Its site.
    pub site: String,
}

/// One Raft entry: the proposals that arrived while the previous entry was being
/// written (openraft 0.9 syncs the log once per entry, so batching is the group commit).
pub type Batch = Vec<Proposal>;

openraft::declare_raft_types!(
    /// The Raft types of the replicated catalog: entries are batches of proposals.
    pub TypeConfig:
        D = Batch,
        R = Vec<Reply>,
        NodeId = u64,
        Node = Member,
);

/// The catalog's Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;

/// The Raft id of a cluster node: its node id hashed to 64 bits.
pub fn raft_id(node: &str) -> u64 {
    let h = blake3::hash(node.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// How long a change or a read waits for a leader before it fails as unavailable.
const LEADER_WAIT: Duration = Duration::from_secs(15);

/// A node's answer to a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer<T> {
    /// Applied; here is the outcome.
    Done(T),
    /// Not the leader (any more): ask again, elsewhere. Nothing was applied.
    NotLeader,
    /// Failed; may or may not have been applied (the caller must not retry blindly).
    Failed(String),
}

/// How to start a replica.
pub struct ReplicaOptions {
    /// Where the log and the snapshot live.
    pub data_dir: PathBuf,
    /// This node as a Raft member.
    pub me: Member,
    /// The catalog the log is applied to.
    pub catalog: Catalog,
    /// The node-to-node client Raft messages go through.
    pub client: cluster::Client,
    /// The largest Raft message a voter accepts (`MAX_MESSAGE_BYTES` outside tests).
    pub max_message_bytes: usize,
}

/// The largest Raft message (an append of entries, a forwarded proposal) a voter
/// accepts. A proposal may use half of it (`Replica::propose` refuses a larger one: it
/// could never be replicated), an entry gathers proposals up to an eighth of it, and an
/// append carrying more is split (`network::Connection::append_entries`). Without these
/// bounds one oversized message is refused forever and the cluster's log stops.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A proposal waiting for the next entry, with its encoded size.
type Waiting = (Proposal, usize, tokio::sync::oneshot::Sender<Answer<Reply>>);

/// This node's part in the replicated catalog.
pub struct Replica {
    /// The Raft instance.
    pub raft: Raft,
    /// This node as a Raft member.
    pub me: Member,
    client: cluster::Client,
    /// See `MAX_MESSAGE_BYTES`.
    pub(crate) max_message_bytes: usize,
    batches: tokio::sync::mpsc::UnboundedSender<Waiting>,
    reads: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<Answer<Option<u64>>>>,
    lease: Arc<lease::Lease>,
    /// Read barriers of this node waiting for the leader's read index (see
    /// `run_remote_reads`).
    remote_reads: tokio::sync::mpsc::UnboundedSender<
        tokio::sync::oneshot::Sender<Result<Option<u64>, CatalogError>>,
    >,
}

/// A queue of requests that are answered together: every request that arrived while a
/// round was under way shares the next one, which starts after it arrived. For read
/// indexes that keeps reads linearizable while costing one round per batch instead of
/// one per request. `round` answers None when the queue's owner is gone.
async fn serve_in_rounds<R, F, Fut>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<R>>,
    mut round: F,
) where
    R: Clone,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        let Some(result) = round().await else {
            return;
        };
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

/// Serves read-index requests on the leader, a heartbeat round to a majority of voters
/// per batch (`serve_in_rounds`).
async fn run_reads(
    raft: Raft,
    rx: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<Answer<Option<u64>>>>,
) {
    serve_in_rounds(rx, || async {
        Some(match raft.get_read_log_id().await {
            Ok((read, _)) => Answer::Done(read.map(|l| l.index)),
            Err(e) if e.forward_to_leader::<Member>().is_some() => Answer::NotLeader,
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Answer::Failed(
                "this node's side of the network cannot reach a majority of the catalog's voters"
                    .into(),
            ),
            Err(e) => Answer::Failed(e.to_string()),
        })
    })
    .await
}

/// Asks the leader for read indexes on behalf of this node's read barriers, one request
/// per batch (`serve_in_rounds`): under load a node that does not lead sends one request
/// per round trip, not one per read.
async fn run_remote_reads(
    replica: std::sync::Weak<Replica>,
    rx: tokio::sync::mpsc::UnboundedReceiver<
        tokio::sync::oneshot::Sender<Result<Option<u64>, CatalogError>>,
    >,
) {
    serve_in_rounds(rx, || {
        let replica = replica.upgrade();
        async move {
            let replica = replica?;
            let body = postcard::to_stdvec(&()).expect("unit serializes");
            Some(
                replica
                    .at_leader(
                        "catalog read",
                        network::READ_INDEX,
                        body,
                        Repeatable::Yes,
                        || replica.read_index_here(),
                    )
                    .await,
            )
        }
    })
    .await
}

/// Whether a request sent to the leader may be sent again when its answer is lost:
/// a read index changes nothing, a proposal may have been committed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeatable {
    Yes,
    No,
}

/// Most proposals in one entry.
const MAX_BATCH: usize = 512;

/// Sends proposals to Raft in batches: all that queued while the last batch was being
/// committed go in the next entry, up to `MAX_BATCH` proposals and `max_entry_bytes`
/// (a proposal that would pass it opens the next entry).
async fn run_batches(
    raft: Raft,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Waiting>,
    max_entry_bytes: usize,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut bytes = first.1;
        let mut waiting = vec![first];
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) if bytes + w.1 > max_entry_bytes => {
                    next = Some(w);
                    break;
                }
                Ok(w) => {
                    bytes += w.1;
                    waiting.push(w);
                }
                Err(_) => break,
            }
        }
        let (batch, answers): (Vec<Proposal>, Vec<_>) =
            waiting.into_iter().map(|(p, _, tx)| (p, tx)).unzip();
        let n = batch.len();
        let result = tokio::time::timeout(LEADER_WAIT, raft.client_write(batch)).await;
        let fail = |a: Answer<Reply>| vec![a; n];
        let replies: Vec<Answer<Reply>> = match result {
            Ok(Ok(r)) if r.data.len() == n => r.data.into_iter().map(Answer::Done).collect(),
            Ok(Ok(r)) => fail(Answer::Failed(format!(
                "{} replies for {n} proposals",
                r.data.len()
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                fail(Answer::NotLeader)
            }
            Ok(Err(e)) => fail(Answer::Failed(e.to_string())),
            Err(_) => fail(Answer::Failed(format!(
                "not committed within {} s: this node cannot reach a majority of the catalog's voters",
                LEADER_WAIT.as_secs()
            ))),
        };
        for (tx, reply) in answers.into_iter().zip(replies) {
            let _ = tx.send(reply);
        }
    }
}

impl Replica {
    /// Opens the log, starts Raft, and starts batching proposals.
    pub async fn start(o: ReplicaOptions) -> Result<Arc<Replica>, ConsensusError> {
        let config = Config {
            cluster_name: "edgecloud-catalog".into(),
            heartbeat_interval: 250,
            election_timeout_min: lease::ELECTION_TIMEOUT_MIN,
            election_timeout_max: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 2_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(ConsensusError::raft)?);
        let log = log_store::LogStore::open(&o.data_dir.join("raft-log.redb"))?;
        let sm = state_machine::StateMachine::new(
            o.catalog.clone(),
            o.data_dir.join("raft-snapshot.bin"),
        );
        let network = network::Network {
            client: o.client.clone(),
            max_message_bytes: o.max_message_bytes,
        };
        let raft = Raft::new(raft_id(&o.me.node), config, network, log, sm)
            .await
            .map_err(ConsensusError::raft)?;
        let (batches, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_batches(raft.clone(), rx, o.max_message_bytes / 8));
        let (reads, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_reads(raft.clone(), rx));
        let lease = Arc::new(lease::Lease::default());
        tokio::spawn(lease.clone().track(raft.clone()));
        let (remote_reads, rx) = tokio::sync::mpsc::unbounded_channel();
        let replica = Arc::new(Replica {
            raft,
            me: o.me,
            client: o.client,
            max_message_bytes: o.max_message_bytes,
            batches,
            reads,
            lease,
            remote_reads,
        });
        tokio::spawn(run_remote_reads(Arc::downgrade(&replica), rx));
        o.catalog.replicate_with(replica.clone());
        Ok(replica)
    }

    /// This node's Raft id.
    pub fn id(&self) -> u64 {
        raft_id(&self.me.node)
    }

    /// Makes this node the only voter of a new catalog (the first node of a cluster);
    /// does nothing if the log already exists.
    pub async fn initialize_alone(&self) -> Result<(), ConsensusError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(ConsensusError::raft)?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id(), self.me.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(ConsensusError::raft)?;
        Ok(())
    }

    /// Adds a node as a learner (it receives the log) and, if `voter`, then promotes
    /// it. Only the leader can; the caller retries elsewhere on `NotLeader`.
    pub async fn add_member(&self, m: Member, voter: bool) -> Result<(), ConsensusError> {
        let id = raft_id(&m.node);
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(n, _)| *n == id);
        if !known {
            self.raft
                .add_learner(id, m, true)
                .await
                .map_err(ConsensusError::raft)?;
        }
        if voter && !self.voters().contains(&id) {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(ConsensusError::raft)?;
        }
        Ok(())
    }

    /// Removes a node from the Raft group (a voter is demoted first).
    pub async fn remove_member(&self, node: &str) -> Result<(), ConsensusError> {
        let id = raft_id(node);
        if self.voters().contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(ConsensusError::raft)?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(ConsensusError::raft)?;
        Ok(())
    }

    /// The Raft ids of the current voters.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Every member (voters and learners) with whether it votes.
    pub fn members(&self) -> Vec<(Member, bool)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        m.nodes()
            .map(|(id, n)| (n.clone(), voters.contains(id)))
            .collect()
    }

    /// When this node leads and is the catalog's only voter (in every configuration of
    /// its latest membership): the index of its last log entry (None for an empty log).
    fn sole_voter_log_end(&self) -> Option<Option<u64>> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let me = raft_id(&self.me.node);
        let alone =
            m.state == ServerState::Leader && m.membership_config.membership().voter_ids().eq([me]);
        alone.then_some(m.last_log_index)
    }

    /// Is the group between the two steps of a voter change (old and new voters must
    /// both agree until the second step commits)?
    pub fn in_joint_membership(&self) -> bool {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_joint_config().len() > 1
    }

    /// Does this node lead under a valid read lease (reads need no heartbeat round)?
    pub fn holds_read_lease(&self) -> bool {
        self.lease.read_index(&self.raft).is_some()
    }

    /// Whether this node believes it leads now (unconfirmed).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The member this node believes leads.
    pub fn leader(&self) -> Option<Member> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, node)| node.clone())
    }

    /// Returns once the known leader is another node than `node`.
    async fn leader_changes_from(&self, node: &str) {
        let mut metrics = self.raft.metrics();
        let old = raft_id(node);
        loop {
            let now = metrics.borrow_and_update().current_leader;
            if now.is_some_and(|l| l != old) {
                return;
            }
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Proposes on this node if it leads (in the next batch); says `NotLeader`
    /// otherwise. A leader cut off from the other voters cannot commit: after
    /// `LEADER_WAIT` the change fails (it may still be committed if the cut heals before
    /// another leader overwrites it, like any request whose answer was lost).
    /// `size` is the proposal's encoded size; one too large to replicate is refused
    /// (also when it came from another node).
    pub async fn propose_here(&self, p: Proposal, size: usize) -> Answer<Reply> {
        if let Err(e) = self.fits_the_log(size) {
            return Answer::Done(Err(e));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.batches.send((p, size, tx)).is_err() {
            return Answer::Failed("the catalog's proposal queue stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Answer::Failed("the catalog's proposal queue stopped".into()))
    }

    /// The log index a linearizable read must wait for, if this node leads: at once
    /// under the leader's read lease, else after a heartbeat round to a majority.
    pub async fn read_index_here(&self) -> Answer<Option<u64>> {
        if let Some(index) = self.lease.read_index(&self.raft) {
            return Answer::Done(index);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.reads.send(tx).is_err() {
            return Answer::Failed("the catalog's read queue stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Answer::Failed("the catalog's read queue stopped".into()))
    }

    /// The leader's read index, asked for in this node's next round (`run_remote_reads`).
    async fn remote_read_index(&self) -> Result<Option<u64>, CatalogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopped = || CatalogError::Unavailable("the catalog's read queue stopped".into());
        self.remote_reads.send(tx).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `here` on this node if it leads, else sends it to the leader; waits for an
    /// election while there is no leader.
    async fn at_leader<T, F, Fut>(
        &self,
        what: &'static str,
        path: &'static str,
        body: Vec<u8>,
        repeatable: Repeatable,
        here: F,
    ) -> Result<T, CatalogError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Answer<T>>,
    {
        let start = Instant::now();
        loop {
            let answer = match self.leader() {
                Some(l) if l.node == self.me.node => here().await,
                Some(l) => {
                    let call = self.client.call(
                        &l.addr,
                        path,
                        body.clone(),
                        LEADER_WAIT + Duration::from_secs(5),
                    );
                    tokio::select! {
                        r = call => match r {
                            Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
                                Answer::Failed(format!("malformed answer from the leader: {e}"))
                            }),
                            // A request that changes nothing is asked again (of the next
                            // leader, once one is elected) rather than failed.
                            Err(_) if repeatable == Repeatable::Yes && start.elapsed() < LEADER_WAIT => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                            Err(e) => Answer::Failed(format!("leader {} unreachable: {e}", l.addr)),
                        },
                        // A leader cut off mid-request never answers; once another is
                        // elected, give up (the outcome is unknown, as after a timeout)
                        // unless the request changes nothing: then ask the new leader.
                        _ = self.leader_changes_from(&l.node) => {
                            if repeatable == Repeatable::Yes && start.elapsed() < LEADER_WAIT {
                                continue;
                            }
                            Answer::Failed(format!(
                                "the leader {} was replaced while it handled this request; its outcome is unknown",
                                l.addr
                            ))
                        }
                    }
                }
                None => Answer::NotLeader,
            };
            match answer {
                Answer::Done(t) => return Ok(t),
                Answer::Failed(m) => {
                    return Err(CatalogError::Unavailable(format!("{what}: {m}")));
                }
                Answer::NotLeader if start.elapsed() > LEADER_WAIT => {
                    return Err(CatalogError::Unavailable(format!(
                        "{what}: no catalog leader for {}s (is a majority of voters reachable?)",
                        LEADER_WAIT.as_secs()
                    )));
                }
                Answer::NotLeader => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A change may use half of a Raft message, so that every entry can be replicated.
    fn fits_the_log(&self, size: usize) -> Result<(), CatalogError> {
        if size > self.max_message_bytes / 2 {
            return Err(CatalogError::Invalid(format!(
                "this change is {size} bytes, more than the {} a change may have in a cluster's log; \
                 split it (for an object: larger chunks or fewer parts)",
                self.max_message_bytes / 2
            )));
        }
        Ok(())
    }

    async fn propose(&self, p: Proposal) -> Reply {
        let body = postcard::to_stdvec(&p).expect("proposals serialize");
        let size = body.len();
        self.fits_the_log(size)?; // refused here rather than after a trip to the leader
        let here = || self.propose_here(p.clone(), size);
        self.at_leader(
            "catalog change",
            network::PROPOSE,
            body,
            Repeatable::No,
            here,
        )
        .await?
    }

    async fn read_barrier(&self) -> Result<(), CatalogError> {
        let index = match self.sole_voter_log_end() {
            // Leading alone: no other node can have acknowledged a change this one has
            // not, so confirming the leadership (a read-index round through the Raft
            // core, ~0.2 ms) buys nothing; what is in the log just has to be applied.
            Some(last) => last,
            // Leading: the lease or a heartbeat round (`read_index_here`), no queue hop.
            None if self.is_leader() => match self.read_index_here().await {
                Answer::Done(index) => index,
                Answer::Failed(m) => {
                    return Err(CatalogError::Unavailable(format!("catalog read: {m}")));
                }
                Answer::NotLeader => self.remote_read_index().await?,
            },
            None => self.remote_read_index().await?,
        };
        if let Some(i) = index {
            self.raft
                .wait(Some(LEADER_WAIT))
                .applied_index_at_least(Some(i), "read barrier")
                .await
                .map_err(|e| {
                    CatalogError::Unavailable(format!("catalog replica is behind: {e}"))
                })?;
        }
        Ok(())
    }
}

impl catalog::Consensus for Replica {
    fn propose(&self, p: Proposal) -> catalog::BoxFuture<'_, Reply> {
        Box::pin(Replica::propose(self, p))
    }

    fn read_barrier(&self) -> catalog::BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(Replica::read_barrier(self))
    }
}

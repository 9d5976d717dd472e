//! Raft messages between voters ride the node-to-node API (mutual TLS on 9420): one POST
//! per message, postcard in both directions. `routes` is the receiving side; every
//! request is checked against the cluster's membership like the shard API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use cluster::rpc::Peer;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Member, Replica, TypeConfig};

type NodeId = u64;

/// Path of Raft appends.
pub const APPEND: &str = "/v1/raft/append";
/// Path of Raft votes.
pub const VOTE: &str = "/v1/raft/vote";
/// Path of Raft snapshots.
pub const SNAPSHOT: &str = "/v1/raft/snapshot";
/// Path where a follower forwards a proposal to the leader.
pub const PROPOSE: &str = "/v1/raft/propose";
/// Path where a follower asks the leader for a read index.
pub const READ_INDEX: &str = "/v1/raft/read-index";

/// Opens connections to other voters.
pub struct Network {
    pub(crate) client: cluster::Client,
    pub(crate) max_message_bytes: usize,
}

/// Raft's connection to one voter, over the node-to-node client.
pub struct Connection {
    client: cluster::Client,
    target: NodeId,
    addr: String,
    max_message_bytes: usize,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl Connection {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            postcard::to_stdvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .client
            .call(&self.addr, path, body, ttl)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let answer: Result<Resp, E> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // An append the receiver would refuse is split instead (openraft retries at
        // once with the hinted number of entries); a lone entry always fits, as entries
        // are bounded when they are made (`run_batches`, `Replica::propose`).
        let size = postcard::serialize_with_flavor(&rpc, postcard::ser_flavors::Size::default())
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let n = rpc.entries.len();
        if size > self.max_message_bytes && n > 1 {
            let fits = (n as u128 * self.max_message_bytes as u128 / size as u128) as u64;
            return Err(PayloadTooLarge::new_entries_hint(fits.max(1)).into());
        }
        self.send(APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(
            SNAPSHOT,
            &rpc,
            option.hard_ttl().max(Duration::from_secs(30)),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.send(VOTE, &rpc, option.hard_ttl()).await
    }
}

/// Who may send Raft messages: a member of the cluster (checked by the caller's
/// certificate against the layout).
pub type Authorize =
    Arc<dyn Fn(&cluster::NodeId) -> Result<(), cluster::ClusterError> + Send + Sync>;

#[derive(Clone)]
struct RouteState {
    replica: Arc<Replica>,
    authorize: Authorize,
}

/// The receiving side of the Raft messages, merged into the node-to-node router.
pub fn routes(replica: Arc<Replica>, authorize: Authorize) -> Router {
    let limit = replica.max_message_bytes;
    let state = RouteState { replica, authorize };
    Router::new()
        .route(APPEND, post(append))
        .route(VOTE, post(vote))
        .route(SNAPSHOT, post(snapshot))
        .route(PROPOSE, post(propose))
        .route(READ_INDEX, post(read_index))
        // The sender is checked before its body is read or decoded.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_member,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn require_member(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match (s.authorize)(&peer.id) {
        Ok(()) => next.run(req).await,
        Err(m) => refuse(StatusCode::FORBIDDEN, m.to_string()),
    }
}

fn refuse(code: StatusCode, msg: String) -> Response {
    tracing::warn!("Raft request refused: {msg}");
    (code, msg).into_response()
}

fn decode<T: DeserializeOwned>(peer: &Peer, body: &[u8]) -> Result<T, Response> {
    postcard::from_bytes(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("malformed Raft message from {}: {e}", peer.id),
        )
    })
}

fn encode<T: Serialize>(v: &T) -> Response {
    match postcard::to_stdvec(v) {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(m) = well_formed_append(&req) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("malformed Raft append from {}: {m}", peer.id),
        );
    }
    encode(&s.replica.raft.append_entries(req).await)
}

/// What openraft takes for granted of an append (it asserts it, or trusts it): it
/// comes from a leader (its vote is committed), its entries follow `prev_log_id` one
/// index after another, and none is from a later leader than the sender. A member's
/// damaged or forged message that breaks this is refused before it reaches Raft.
fn well_formed_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    if !req.vote.is_committed() {
        return Err(format!("its vote {} is not a leader's", req.vote));
    }
    let first = req.prev_log_id.map_or(0, |l| l.index + 1);
    for (next, e) in (first..).zip(&req.entries) {
        if e.log_id.index != next {
            return Err(format!("entry {} where {next} was due", e.log_id.index));
        }
        if e.log_id.leader_id > req.vote.leader_id {
            return Err(format!(
                "entry {} from a later leader than the sender",
                e.log_id
            ));
        }
    }
    Ok(())
}

async fn vote(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let req: VoteRequest<NodeId> = match decode(&peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    encode(&s.replica.raft.vote(req).await)
}

async fn snapshot(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let req: InstallSnapshotRequest<TypeConfig> = match decode(&peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if !req.vote.is_committed() {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed Raft snapshot from {}: its vote is not a leader's",
                peer.id
            ),
        );
    }
    encode(&s.replica.raft.install_snapshot(req).await)
}

async fn propose(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let p: catalog::Proposal = match decode(&peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    encode(&s.replica.propose_here(p, body.len()).await)
}

async fn read_index(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    if let Err(r) = decode::<()>(&peer, &body) {
        return r;
    }
    encode(&s.replica.read_index_here().await)
}

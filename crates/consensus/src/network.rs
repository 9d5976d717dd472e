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
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
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

pub const APPEND: &str = "/v1/raft/append";
pub const VOTE: &str = "/v1/raft/vote";
pub const SNAPSHOT: &str = "/v1/raft/snapshot";
pub const PROPOSE: &str = "/v1/raft/propose";
pub const READ_INDEX: &str = "/v1/raft/read-index";

/// Opens connections to other voters.
pub struct Network {
    pub(crate) client: cluster::Client,
}

pub struct Connection {
    client: cluster::Client,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
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
pub type Authorize = Arc<dyn Fn(&cluster::NodeId) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct RouteState {
    replica: Arc<Replica>,
    authorize: Authorize,
}

/// The receiving side of the Raft messages, merged into the node-to-node router.
pub fn routes(replica: Arc<Replica>, authorize: Authorize) -> Router {
    Router::new()
        .route(APPEND, post(append))
        .route(VOTE, post(vote))
        .route(SNAPSHOT, post(snapshot))
        .route(PROPOSE, post(propose))
        .route(READ_INDEX, post(read_index))
        .layer(DefaultBodyLimit::max(256 << 20))
        .with_state(RouteState { replica, authorize })
}

fn refuse(code: StatusCode, msg: String) -> Response {
    tracing::warn!("Raft request refused: {msg}");
    (code, msg).into_response()
}

fn decode<T: DeserializeOwned>(s: &RouteState, peer: &Peer, body: &[u8]) -> Result<T, Response> {
    (s.authorize)(&peer.id).map_err(|m| refuse(StatusCode::FORBIDDEN, m))?;
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
    let req: AppendEntriesRequest<TypeConfig> = match decode(&s, &peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    encode(&s.replica.raft.append_entries(req).await)
}

async fn vote(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let req: VoteRequest<NodeId> = match decode(&s, &peer, &body) {
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
    let req: InstallSnapshotRequest<TypeConfig> = match decode(&s, &peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    encode(&s.replica.raft.install_snapshot(req).await)
}

async fn propose(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let p: catalog::Proposal = match decode(&s, &peer, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    encode(&s.replica.propose_here(p).await)
}

async fn read_index(
    State(s): State<RouteState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    if let Err(r) = decode::<()>(&s, &peer, &body) {
        return r;
    }
    encode(&s.replica.read_index_here().await)
}

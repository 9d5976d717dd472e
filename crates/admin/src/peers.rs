//! What one node asks another over the node-to-node API (mutual TLS, members only): the
//! leading node's repair progress (so that `cluster status` reads the same on every
//! node), a voter's cosignature of another node's ledger checkpoint, a compute job's
//! task run on the node that holds its data, a container request for the node that runs
//! (or is to run) the container, shards a repair pass asks this node
//! to rebuild onto its own disks, and this node's recent log lines.

use std::sync::Arc;
use std::time::Duration;

use archive::audit::Auditor;
use archive::{Archive, RepairState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use cluster::rpc::Peer;

/// Path of a node's repair state, asked by the node that shows `cluster status`.
pub const REPAIR_STATE: &str = "/v1/repair/state";
/// Path where a voter cosigns a ledger checkpoint.
pub const COSIGN: &str = "/v1/ledger/cosign";

#[derive(Clone)]
struct PeerState {
    archive: Archive,
    auditor: Arc<Auditor>,
    jobs: Arc<jobs::Jobs>,
    containers: Option<containers::Containers>,
}

/// Routes merged into the node-to-node server, for members only
/// (`cluster::rpc::for_members`).
pub fn routes(
    archive: Archive,
    auditor: Arc<Auditor>,
    jobs: Arc<jobs::Jobs>,
    containers: Option<containers::Containers>,
    membership: Arc<cluster::Membership>,
) -> Router {
    let r = Router::new()
        .route(REPAIR_STATE, post(repair_state))
        .route(COSIGN, post(cosign))
        .route(jobs::TASK_PATH, post(run_task))
        .route(archive::REBUILD_PATH, post(rebuild))
        .route(crate::containers::PEER_PATH, post(container_call))
        .route(crate::node_logs::PEER_PATH, post(crate::node_logs::peer))
        .with_state(PeerState {
            archive,
            auditor,
            jobs,
            containers,
        });
    cluster::rpc::for_members(r, membership)
}

async fn repair_state(State(s): State<PeerState>) -> Json<RepairState> {
    Json(s.archive.repair_state())
}

/// A job's task placed on this node because it holds the input's data.
async fn run_task(
    State(s): State<PeerState>,
    body: Bytes,
) -> Result<Json<jobs::TaskReply>, (StatusCode, String)> {
    let req: jobs::TaskRequest = serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("not a task: {e}")))?;
    let result = s.jobs.run_placed_task(req).await;
    Ok(Json(jobs::TaskReply { result }))
}

/// A container request another node handed here (it checked the user's token).
async fn container_call(
    State(s): State<PeerState>,
    body: Bytes,
) -> Result<Json<crate::containers::Answer>, (StatusCode, String)> {
    let call: crate::containers::Call = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("not a container call: {e}"),
        )
    })?;
    let answer = crate::containers::answer_here(&s.archive, s.containers.as_ref(), call).await;
    Ok(Json(answer))
}

/// Shards placed on this node that the node running a repair pass asks it to rebuild:
/// one answer per shard (`null` when written).
async fn rebuild(
    State(s): State<PeerState>,
    body: Bytes,
) -> Result<Json<Vec<archive::RebuildAnswer>>, (StatusCode, String)> {
    let items: Vec<archive::RebuildItem> = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("not a list of shards: {e}"),
        )
    })?;
    if items.len() > cluster::shard_batch::MAX_BATCH {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "more than {} shards in one request",
                cluster::shard_batch::MAX_BATCH
            ),
        ));
    }
    Ok(Json(s.archive.rebuild_here(items).await))
}

/// Another node's checkpoint: cosigned if this node's replica of the log agrees.
async fn cosign(
    State(s): State<PeerState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let auditor = s.auditor.clone();
    tokio::task::spawn_blocking(move || auditor.cosign_for_peer(&body, Duration::from_secs(3)))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            tracing::warn!(node = %peer.id, "checkpoint not cosigned: {e}");
            (StatusCode::CONFLICT, e.to_string())
        })
}

/// Asks every other voter to cosign this node's current checkpoint and adds the
/// cosignatures it gets; returns how many voters cosigned.
pub async fn collect_cosignatures(
    auditor: &Arc<Auditor>,
    client: &cluster::Client,
    voters: &[String],
) -> usize {
    let cp = auditor.checkpoint();
    let asks = voters.iter().map(|addr| {
        let (cp, client) = (cp.clone(), client.clone());
        async move { client.call(addr, COSIGN, cp, Duration::from_secs(5)).await }
    });
    let notes: Vec<Vec<u8>> = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|r| match r {
            Ok(b) => Some(b.to_vec()),
            Err(e) => {
                tracing::debug!("no cosignature: {e}");
                None
            }
        })
        .collect();
    let a = auditor.clone();
    tokio::task::spawn_blocking(move || a.add_cosignatures(&notes))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0)
}

/// The repair state of the node that runs repair: this one if it leads, else the
/// leader's (this node's own if the leader cannot be asked).
pub async fn leader_repair_state(archive: &Archive) -> RepairState {
    let Some(m) = archive.cluster() else {
        return archive.repair_state();
    };
    match m.leader() {
        Some((id, addr)) if &id != m.me() => {
            let r = m
                .client()
                .call(&addr, REPAIR_STATE, Vec::new(), Duration::from_secs(5))
                .await;
            match r.map(|b| serde_json::from_slice::<RepairState>(&b)) {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => {
                    tracing::warn!("unreadable repair state from the leader: {e}");
                    archive.repair_state()
                }
                Err(e) => {
                    tracing::warn!("cannot ask the leader for its repair state: {e}");
                    archive.repair_state()
                }
            }
        }
        _ => archive.repair_state(),
    }
}

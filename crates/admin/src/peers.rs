//! What one node asks another over the node-to-node API (mutual TLS, members only) on
//! behalf of the admin API: the leading node's repair progress, so that
//! `cluster status` reads the same on every node.

use std::time::Duration;

use archive::{Archive, RepairState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use cluster::rpc::Peer;

pub const REPAIR_STATE: &str = "/v1/repair/state";

/// Routes merged into the node-to-node server.
pub fn routes(archive: Archive) -> Router {
    Router::new()
        .route(REPAIR_STATE, post(repair_state))
        .with_state(archive)
}

async fn repair_state(
    State(archive): State<Archive>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<RepairState>, (StatusCode, String)> {
    if let Some(m) = archive.cluster() {
        m.authorize(&peer.id)
            .map_err(|e| (StatusCode::FORBIDDEN, e))?;
    }
    Ok(Json(archive.repair_state()))
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

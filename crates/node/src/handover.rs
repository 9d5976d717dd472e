//! The keys every node of a cluster shares: the master key (each bucket's data key is
//! sealed with it, so any node's gateway can read any bucket), the S3 root key and the
//! ledger's signing key (one log, whichever node publishes its checkpoint). A
//! node joining for the first time fetches them from the member it joins, over the
//! mutual-TLS node-to-node API; only members may ask.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use cluster::rpc::Peer;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Where a member hands the keys out.
pub const PATH: &str = "/v1/keys";

/// The keys every node of a cluster shares.
#[derive(Clone, Serialize, Deserialize)]
pub struct SharedKeys {
    /// Hex, as in DATA/master.key.
    pub master_key: String,
    /// The S3 root access key id.
    pub s3_access_key: String,
    /// Its secret.
    pub s3_secret: String,
    /// The ledger's signing key and its public key, as in DATA/ledger.key and .pub.
    pub ledger_key: String,
    /// The ledger's public key.
    pub ledger_pub: String,
}

/// The route that hands the keys out, to members only (`cluster::rpc::for_members`).
pub fn route(keys: SharedKeys, membership: Arc<cluster::Membership>) -> Router {
    let r = Router::new().route(PATH, post(give)).with_state(keys);
    cluster::rpc::for_members(r, membership)
}

async fn give(
    State(keys): State<SharedKeys>,
    Extension(peer): Extension<Peer>,
) -> Json<SharedKeys> {
    tracing::info!(node = %peer.id, "shared keys given to a member");
    Json(keys)
}

/// Asks for the shared keys: the member at `first` (the one `--join` names), then, if
/// it does not answer, the other members the layout knows (a node whose keys live in
/// memory fetches them at every start, and its `--join` member may be the one down).
pub async fn fetch(
    client: &cluster::Client,
    first: &str,
    membership: &cluster::Membership,
) -> Result<SharedKeys, NodeError> {
    let step = "cannot fetch the cluster's shared keys from any member";
    let others = membership.layout().peer_addrs(membership.me());
    let addrs = std::iter::once(first.to_string()).chain(others.into_iter().filter(|a| a != first));
    let mut last = None;
    for addr in addrs {
        match client
            .call(&addr, PATH, Vec::new(), Duration::from_secs(10))
            .await
        {
            Ok(body) => {
                return serde_json::from_slice(&body).map_err(|e| NodeError::startup(step, e));
            }
            Err(e) => {
                tracing::warn!("cannot fetch the shared keys from {addr}: {e}");
                last = Some(e);
            }
        }
    }
    Err(NodeError::startup(
        step,
        last.expect("at least the first member was asked"),
    ))
}

use archive::ScrubOptions;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::types::*;
use crate::{AdminState, ApiError};

pub(crate) async fn status(State(s): State<AdminState>) -> Result<Json<Status>, ApiError> {
    let a = &s.archive;
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: a.config().data_dir.display().to_string(),
        default_policy: a.default_policy().to_string(),
        buckets: a.buckets()?.len(),
        disks: a
            .disk_health()
            .into_iter()
            .map(|d| DiskInfo {
                path: d.path.display().to_string(),
                shards: d.shards,
                segments: d.segments,
                bytes: d.bytes,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct ScrubParams {
    #[serde(default)]
    gc: bool,
}

/// Runs a full scrub now, at full speed, and answers when it is done.
pub(crate) async fn scrub(
    State(s): State<AdminState>,
    Query(p): Query<ScrubParams>,
) -> Result<Json<ScrubResult>, ApiError> {
    let started = std::time::Instant::now();
    let opts = ScrubOptions {
        rate_bytes_per_sec: None,
        collect_garbage: p.gc,
        ..Default::default()
    };
    let report = s.archive.tracked_scrub(&opts).await?;
    Ok(Json(ScrubResult {
        report,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// The scrub in progress, or the last one asked for through this API.
pub(crate) async fn scrub_state(State(s): State<AdminState>) -> Json<archive::RepairState> {
    Json(s.archive.scrub_state())
}

/// The cluster as this node sees it: members, sites, disks, health, the default
/// policy and what it survives, and repair progress.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ClusterView {
    /// Members, sites and disks; None on a single node.
    pub status: Option<cluster::ClusterStatus>,
    /// The default redundancy policy (e.g. "ec:4+2").
    pub policy: String,
    /// What the layout and policy survive, in words ("one site", "two disks").
    pub survives: String,
    /// Repair progress.
    pub repair: archive::RepairState,
}

pub(crate) async fn cluster(State(s): State<AdminState>) -> Result<Json<ClusterView>, ApiError> {
    let policy = s.archive.default_policy();
    let (status, survives) = match s.archive.cluster() {
        Some(m) => {
            let store = s.archive.store();
            let disks = tokio::task::spawn_blocking(move || cluster::rpc::local_disks(&store))
                .await
                .unwrap_or_default();
            (Some(m.status(disks)), m.layout().survives(policy))
        }
        None => (None, format!("{policy} on one node")),
    };
    Ok(Json(ClusterView {
        status,
        policy: policy.to_string(),
        survives,
        repair: crate::peers::leader_repair_state(&s.archive).await,
    }))
}

/// Asks the repair worker for a pass now (it also runs on its own after failures).
pub(crate) async fn repair(State(s): State<AdminState>) -> Result<StatusCode, ApiError> {
    cluster_of(&s)?.request_repair();
    Ok(StatusCode::ACCEPTED)
}

fn cluster_of(s: &AdminState) -> Result<&std::sync::Arc<cluster::Membership>, ApiError> {
    s.archive.cluster().ok_or_else(|| {
        ApiError(archive::ArchiveError::Invalid(
            "this node is not part of a cluster".into(),
        ))
    })
}

fn refused(e: cluster::ClusterError) -> ApiError {
    tracing::warn!("layout change refused: {e}");
    ApiError(archive::ArchiveError::Invalid(e.to_string()))
}

/// Drains a node: its shards move to the others; it takes no new ones.
pub(crate) async fn drain(
    State(s): State<AdminState>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let m = cluster_of(&s)?;
    let widest = s
        .archive
        .buckets()?
        .iter()
        .map(|b| b.policy.shard_count())
        .chain([s.archive.default_policy().shard_count()])
        .max()
        .unwrap_or(1);
    m.drain(&cluster::NodeId(node), widest)
        .await
        .map_err(refused)?;
    Ok(StatusCode::ACCEPTED)
}

/// Removes a drained (or down and rebuilt) node for good.
pub(crate) async fn remove(
    State(s): State<AdminState>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let m = cluster_of(&s)?;
    let r = crate::peers::leader_repair_state(&s.archive).await;
    let rebuilt = r.healthy && !r.running;
    m.remove(&cluster::NodeId(node), rebuilt)
        .await
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

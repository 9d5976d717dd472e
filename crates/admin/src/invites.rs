//! Invitations: `POST /v1/cluster/invites` (admin token) issues a one-time token, and
//! the node-to-node server lets a connection without a certificate redeem one for the
//! cluster secret (`cluster::invite` has the token format and the joining side).
//!
//! An invitation is a replicated record (`invite/<hash of its secret>` in the catalog's
//! cluster table), so it is used at most once across the cluster: redeeming it is a
//! compare-and-swap from "unused" to "used by ADDRESS at TIME", which only a majority
//! can commit. The record stays, as the trace of who joined with which invitation.

use std::sync::Arc;
use std::time::Duration;

use archive::Archive;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use catalog::{CatalogError, Command};
use cluster::invite::{Invitation, InviteRecord, REDEEM_PATH, RedeemAnswer, RedeemRequest};
use cluster::rpc::Guest;
use serde::{Deserialize, Serialize};

use crate::{AdminState, ApiError};

/// What a node needs to issue and honour invitations.
pub struct Inviter {
    /// The cluster secret an invitation hands to the node that redeems it.
    pub secret: cluster::ClusterSecret,
    /// This node's public key: the token pins it.
    pub node_key: [u8; 32],
}

/// An invitation is valid for an hour unless asked otherwise, and at most 30 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn now_ms() -> u64 {
    catalog::now_ns() / 1_000_000
}

#[derive(Deserialize)]
pub(crate) struct InviteParams {
    /// Seconds the token stays valid.
    ttl: Option<u64>,
    /// The address (HOST:PORT of the node-to-node port) the new node should connect
    /// to, when this node's own is not reachable as it is (e.g. it listens on 0.0.0.0).
    addr: Option<String>,
}

/// A new invitation, as `cluster invite` prints it.
#[derive(Serialize, Deserialize)]
pub struct Issued {
    /// What `cluster invites` lists it as (and `--revoke` takes).
    pub id: String,
    /// The token to give the new node (`edgecloud serve --join TOKEN`).
    pub token: String,
    /// The node the token connects to.
    pub addr: String,
    /// When the token stops working (ms since the Unix epoch).
    pub expires_ms: u64,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError(archive::ArchiveError::Invalid(msg.into()))
}

/// Issues a one-time invitation to join this cluster through this node.
pub(crate) async fn issue(
    State(s): State<AdminState>,
    Query(p): Query<InviteParams>,
) -> Result<Json<Issued>, ApiError> {
    let inviter = s.inviter.clone().ok_or_else(|| {
        invalid("this node cannot issue invitations (it is not part of a cluster)")
    })?;
    let ttl = p.ttl.map_or(DEFAULT_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(invalid(format!(
            "an invitation is valid for 1 second to {} days; asked for {} s",
            MAX_TTL.as_secs() / 86400,
            ttl.as_secs()
        )));
    }
    let m = s
        .archive
        .cluster()
        .ok_or_else(|| invalid("this node is not part of a cluster"))?;
    let addr = match p.addr {
        Some(a) => a,
        None => m
            .layout()
            .node(m.me())
            .map(|n| n.rpc_addr.clone())
            .ok_or_else(|| invalid("this node is not in the layout yet; try again in a moment"))?,
    };
    let host_unspecified = addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified());
    if host_unspecified {
        return Err(invalid(format!(
            "this node listens on {addr}, which another machine cannot dial: give the address it is reached at with --address HOST:9420"
        )));
    }
    let inv =
        Invitation::new(addr.clone(), inviter.node_key).map_err(|e| invalid(e.to_string()))?;
    let created_ms = now_ms();
    let record = InviteRecord {
        issued_by: addr.clone(),
        created_ms,
        expires_ms: created_ms + ttl.as_millis() as u64,
        redeemed_by: None,
        redeemed_ms: None,
        revoked_ms: None,
    };
    s.archive
        .catalog()
        .execute(Command::PutClusterRecord {
            name: inv.record_name(),
            expect: None,
            value: serde_json::to_vec(&record).expect("record serializes"),
        })
        .await
        .map_err(|e| ApiError(e.into()))?;
    tracing::info!(expires_ms = record.expires_ms, "invitation issued");
    Ok(Json(Issued {
        id: cluster::invite::record_id(&inv.record_name()).to_string(),
        token: inv.encode(),
        addr,
        expires_ms: record.expires_ms,
    }))
}

#[derive(Clone)]
struct GuestState {
    archive: Archive,
    inviter: Arc<Inviter>,
}

/// The routes a connection without a certificate may use (merged into nothing else).
pub fn guest_routes(archive: Archive, inviter: Arc<Inviter>) -> Router {
    Router::new()
        .route(REDEEM_PATH, post(redeem))
        .layer(DefaultBodyLimit::max(4096))
        .with_state(GuestState { archive, inviter })
}

type Refusal = (StatusCode, String);

fn refuse(guest: &Guest, code: StatusCode, msg: String) -> Refusal {
    tracing::warn!(from = %guest.addr, "invitation refused: {msg}");
    (code, msg)
}

/// Trades an unused, unexpired invitation for the cluster secret, once.
async fn redeem(
    State(s): State<GuestState>,
    Extension(guest): Extension<Guest>,
    Json(req): Json<RedeemRequest>,
) -> Result<Json<RedeemAnswer>, Refusal> {
    let secret = codec::unhex(&req.secret)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            refuse(
                &guest,
                StatusCode::BAD_REQUEST,
                "the secret is not 64 hex characters".into(),
            )
        })?;
    let name = cluster::invite::record_name(&secret);
    let catalog = s.archive.catalog();
    let unavailable = |e: CatalogError| {
        refuse(
            &guest,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster cannot decide now ({e}); try again when a majority of its voters is up"
            ),
        )
    };
    catalog.read_barrier().await.map_err(unavailable)?;
    let current = catalog
        .cluster_record(&name)
        .map_err(unavailable)?
        .ok_or_else(|| {
            refuse(
                &guest,
                StatusCode::FORBIDDEN,
                "unknown invitation: it was never issued by this cluster".into(),
            )
        })?;
    let mut record: InviteRecord = serde_json::from_slice(&current).map_err(|e| {
        refuse(
            &guest,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unreadable invitation record: {e}"),
        )
    })?;
    let used = |r: &InviteRecord| {
        format!(
            "this invitation was already used (by {}); ask for a new one with `edgecloud cluster invite`",
            r.redeemed_by.as_deref().unwrap_or("another node")
        )
    };
    if record.redeemed_by.is_some() {
        return Err(refuse(&guest, StatusCode::FORBIDDEN, used(&record)));
    }
    if record.revoked_ms.is_some() {
        return Err(refuse(
            &guest,
            StatusCode::FORBIDDEN,
            "this invitation was revoked; ask for a new one with `edgecloud cluster invite`".into(),
        ));
    }
    let now = now_ms();
    if now >= record.expires_ms {
        return Err(refuse(
            &guest,
            StatusCode::FORBIDDEN,
            format!(
                "this invitation expired {} s ago; ask for a new one with `edgecloud cluster invite`",
                (now - record.expires_ms) / 1000
            ),
        ));
    }
    record.redeemed_by = Some(guest.addr.to_string());
    record.redeemed_ms = Some(now);
    match catalog
        .execute(Command::PutClusterRecord {
            name,
            expect: Some(current),
            value: serde_json::to_vec(&record).expect("record serializes"),
        })
        .await
    {
        Ok(_) => {}
        Err(CatalogError::Conflict) => {
            let msg = "this invitation was just used by another node; ask for a new one with `edgecloud cluster invite`";
            return Err(refuse(&guest, StatusCode::FORBIDDEN, msg.into()));
        }
        Err(e) => return Err(unavailable(e)),
    }
    tracing::info!(from = %guest.addr, "invitation redeemed: the cluster secret was given");
    Ok(Json(RedeemAnswer {
        cluster_secret: s.inviter.secret.reveal(),
    }))
}

/// One invitation as `cluster invites` shows it (never its secret).
#[derive(Serialize, Deserialize)]
pub struct Listed {
    /// The invitation's id (what `--revoke` takes).
    pub id: String,
    /// "open", "used", "expired" or "revoked".
    pub state: String,
    /// Who issued it, when, and whether and when it was redeemed.
    #[serde(flatten)]
    pub record: InviteRecord,
}

fn records(archive: &Archive) -> Result<Vec<(String, Vec<u8>, InviteRecord)>, ApiError> {
    let all = archive
        .catalog()
        .cluster_records("invite/")
        .map_err(|e| ApiError(e.into()))?;
    Ok(all
        .into_iter()
        .filter_map(|(name, raw)| {
            let r = serde_json::from_slice(&raw).ok()?;
            Some((name, raw, r))
        })
        .collect())
}

/// Every invitation issued, newest first, with its state.
pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<Vec<Listed>>, ApiError> {
    s.archive
        .catalog()
        .read_barrier()
        .await
        .map_err(|e| ApiError(e.into()))?;
    let now = now_ms();
    let mut out: Vec<Listed> = records(&s.archive)?
        .into_iter()
        .map(|(name, _, record)| Listed {
            id: cluster::invite::record_id(&name).to_string(),
            state: record.state(now).to_string(),
            record,
        })
        .collect();
    out.sort_by_key(|a| std::cmp::Reverse(a.record.created_ms));
    Ok(Json(out))
}

/// Revokes an open invitation, so that its token gets nothing.
pub(crate) async fn revoke(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let catalog = s.archive.catalog();
    catalog
        .read_barrier()
        .await
        .map_err(|e| ApiError(e.into()))?;
    let matching: Vec<_> = records(&s.archive)?
        .into_iter()
        .filter(|(name, _, _)| !id.is_empty() && cluster::invite::record_id(name).starts_with(&id))
        .collect();
    let (name, raw, mut record) = match matching.len() {
        1 => matching.into_iter().next().expect("one"),
        0 => {
            return Err(invalid(format!(
                "no invitation {id}; `edgecloud cluster invites` lists them"
            )));
        }
        n => {
            return Err(invalid(format!(
                "{n} invitations start with {id}; give more of the id"
            )));
        }
    };
    match record.state(now_ms()) {
        "open" => {}
        state => return Err(invalid(format!("invitation {id} is {state} already"))),
    }
    record.revoked_ms = Some(now_ms());
    catalog
        .execute(Command::PutClusterRecord {
            name,
            expect: Some(raw),
            value: serde_json::to_vec(&record).expect("record serializes"),
        })
        .await
        .map_err(|e| match e {
            CatalogError::Conflict => {
                invalid(format!("invitation {id} was used or changed meanwhile"))
            }
            e => ApiError(e.into()),
        })?;
    tracing::info!(invitation = %id, "invitation revoked");
    Ok(StatusCode::NO_CONTENT)
}

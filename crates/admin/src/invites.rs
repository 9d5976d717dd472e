//! Invitations: `POST /v1/cluster/invites` (admin token) issues a one-time token, and
//! the node-to-node server lets a connection without a certificate redeem one for the
//! cluster secret (`cluster::invite` has the token format and the joining side).
//!
//! An invitation is a replicated record (`invite/<hash of its secret>` in the catalog's
//! cluster table), so it is used at most once across the cluster: redeeming it is a
//! compare-and-swap from "unused" to "used by ADDRESS at TIME", which only a majority
//! can commit. The record stays, as the trace of who joined with which invitation.
//!
//! A machine invitation (`?machines=true`) is not used up: it admits the machines whose
//! MAC addresses its record lists, at every boot. Another machine that asks with it
//! waits, with a code, in this node's memory (`GET /v1/cluster/join-requests`) until
//! an operator approves the code (`POST /v1/cluster/join-requests/CODE`), which adds
//! its MACs to the record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
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
    /// Machines waiting for an operator's approval, by code.
    pub waiting: Mutex<BTreeMap<String, WaitingMachine>>,
}

/// A machine that asked to join with a machine invitation and waits for approval.
#[derive(Clone, Serialize, Deserialize)]
pub struct WaitingMachine {
    /// The code its console shows (what `cluster approve` takes).
    pub code: String,
    /// Its MAC addresses.
    pub macs: Vec<String>,
    /// The address it asked from.
    pub from: String,
    /// The id of the invitation it asked with.
    pub invitation: String,
    /// When it first asked (ms since the Unix epoch).
    pub first_ms: u64,
    /// When it last asked (ms since the Unix epoch).
    pub last_ms: u64,
    #[serde(skip)]
    record: String,
}

/// A machine that stopped asking for this long is forgotten.
const WAITING_FOR: Duration = Duration::from_secs(3600);

impl WaitingMachine {
    /// Whether it asked within [`WAITING_FOR`] of `now_ms` (else it is forgotten).
    fn still_asking(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) < WAITING_FOR.as_millis() as u64
    }
}
/// At most this many machines wait at once (asking costs a guest nothing).
const MAX_WAITING: usize = 64;

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
    /// A machine invitation: not used up; for machines that ask at every boot.
    #[serde(default)]
    machines: bool,
    /// With `machines`: MAC addresses admitted without approval, comma-separated.
    mac: Option<String>,
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
    let macs = p
        .mac
        .iter()
        .flat_map(|m| m.split(','))
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            cluster::invite::normal_mac(m).ok_or_else(|| {
                invalid(format!(
                    "{m:?} is not a MAC address (write it as 52:54:00:12:34:56)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !macs.is_empty() && !p.machines {
        return Err(invalid(
            "MAC addresses go with a machine invitation (machines=true)",
        ));
    }
    let mut inv =
        Invitation::new(addr.clone(), inviter.node_key).map_err(|e| invalid(e.to_string()))?;
    inv.machines = p.machines;
    if p.machines {
        // Machines ask at every boot: name other active members too, so that one
        // boots while this node is down.
        let layout = m.layout();
        inv.also = layout
            .members()
            .filter(|n| &n.id != m.me() && n.state == cluster::NodeState::Active)
            .filter_map(|n| {
                let key = codec::unhex(&n.public_key)?.try_into().ok()?;
                let dialable = !n
                    .rpc_addr
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.ip().is_unspecified());
                dialable.then(|| cluster::invite::Member {
                    addr: n.rpc_addr.clone(),
                    node_key: key,
                })
            })
            .take(cluster::invite::MAX_ALSO)
            .collect();
    }
    let created_ms = now_ms();
    let record = InviteRecord {
        issued_by: addr.clone(),
        created_ms,
        expires_ms: created_ms + ttl.as_millis() as u64,
        redeemed_by: None,
        redeemed_ms: None,
        revoked_ms: None,
        machines: p.machines,
        macs,
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
) -> Result<axum::response::Response, Refusal> {
    use axum::response::IntoResponse;
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
    if record.machines {
        return admit_machine(&s, &guest, req, name, record).await;
    }
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
    })
    .into_response())
}

/// A machine invitation's answer: the secret to a machine it admits (by MAC), 202 and
/// a code to wait with to any other, until an operator approves the code.
async fn admit_machine(
    s: &GuestState,
    guest: &Guest,
    req: RedeemRequest,
    name: String,
    record: InviteRecord,
) -> Result<axum::response::Response, Refusal> {
    use axum::response::IntoResponse;
    if record.revoked_ms.is_some() {
        return Err(refuse(
            guest,
            StatusCode::FORBIDDEN,
            "this machine invitation was revoked; boot with a new one (`edgecloud cluster invite --machines`)".into(),
        ));
    }
    let macs: Vec<String> = req
        .macs
        .iter()
        .take(16)
        .filter_map(|m| cluster::invite::normal_mac(m))
        .collect();
    if let Some(mac) = macs.iter().find(|m| record.macs.contains(m)) {
        tracing::info!(from = %guest.addr, %mac, "a machine admitted by its invitation: the cluster secret was given");
        let answer = RedeemAnswer {
            cluster_secret: s.inviter.secret.reveal(),
        };
        return Ok(Json(answer).into_response());
    }
    let now = now_ms();
    if now >= record.expires_ms {
        return Err(refuse(
            guest,
            StatusCode::FORBIDDEN,
            "this machine invitation no longer admits new machines (it expired); approve them with a new one".into(),
        ));
    }
    let code = req
        .code
        .filter(|c| cluster::invite::is_code(c))
        .ok_or_else(|| {
            refuse(
                guest,
                StatusCode::BAD_REQUEST,
                "a machine not admitted yet asks with a code (XXXX-XXXX) for the operator to approve".into(),
            )
        })?;
    if macs.is_empty() {
        return Err(refuse(
            guest,
            StatusCode::BAD_REQUEST,
            "a machine is admitted by its MAC address, and this one sent none".into(),
        ));
    }
    {
        let mut waiting = s.inviter.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.retain(|_, w| w.still_asking(now));
        let full = waiting.len() >= MAX_WAITING && !waiting.contains_key(&code);
        if full {
            return Err(refuse(
                guest,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_WAITING} machines wait for approval already; try again later"),
            ));
        }
        let entry = waiting.entry(code.clone()).or_insert_with(|| {
            tracing::info!(from = %guest.addr, %code, macs = %macs.join(","), "a machine waits for approval: `edgecloud cluster approve {code}`");
            WaitingMachine {
                code: code.clone(),
                macs: macs.clone(),
                from: guest.addr.to_string(),
                invitation: cluster::invite::record_id(&name).to_string(),
                first_ms: now,
                last_ms: now,
                record: name.clone(),
            }
        });
        if entry.macs != macs || entry.record != name {
            return Err(refuse(
                guest,
                StatusCode::FORBIDDEN,
                "another machine waits with this code; ask with a new one".into(),
            ));
        }
        entry.last_ms = now;
    }
    let waiting = cluster::invite::Waiting {
        approve_with: format!("edgecloud cluster approve {code}"),
    };
    Ok((StatusCode::ACCEPTED, Json(waiting)).into_response())
}

/// This node's inviter: a node that is not part of a cluster has none.
fn cluster_inviter(s: &AdminState) -> Result<Arc<Inviter>, ApiError> {
    s.inviter
        .clone()
        .ok_or_else(|| invalid("this node is not part of a cluster"))
}

/// The machines waiting for approval at this node.
pub(crate) async fn waiting(
    State(s): State<AdminState>,
) -> Result<Json<Vec<WaitingMachine>>, ApiError> {
    let inviter = cluster_inviter(&s)?;
    let now = now_ms();
    let waiting = inviter.waiting.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        waiting
            .values()
            .filter(|w| w.still_asking(now))
            .cloned()
            .collect(),
    ))
}

/// Approves a waiting machine: its MACs join its invitation's record (replicated), so
/// it is admitted now and at every later boot.
pub(crate) async fn approve(
    State(s): State<AdminState>,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Result<Json<WaitingMachine>, ApiError> {
    let inviter = cluster_inviter(&s)?;
    let code = code.trim().to_ascii_uppercase();
    let Some(machine) = inviter
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&code)
        .cloned()
    else {
        return Err(invalid(format!(
            "no machine waits with code {code} at this node; `edgecloud cluster approve` with no code lists those that do (a machine waits at the node its invitation names)"
        )));
    };
    let catalog = s.archive.catalog();
    catalog
        .read_barrier()
        .await
        .map_err(|e| ApiError(e.into()))?;
    let raw = catalog
        .cluster_record(&machine.record)
        .map_err(|e| ApiError(e.into()))?
        .ok_or_else(|| invalid("the machine's invitation is gone"))?;
    let mut record: InviteRecord =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("unreadable invitation: {e}")))?;
    if record.revoked_ms.is_some() {
        return Err(invalid("the machine's invitation was revoked"));
    }
    for mac in &machine.macs {
        if !record.macs.contains(mac) {
            record.macs.push(mac.clone());
        }
    }
    record
        .redeemed_by
        .get_or_insert_with(|| machine.from.clone());
    record.redeemed_ms.get_or_insert_with(now_ms);
    catalog
        .execute(Command::PutClusterRecord {
            name: machine.record.clone(),
            expect: Some(raw),
            value: serde_json::to_vec(&record).expect("record serializes"),
        })
        .await
        .map_err(|e| match e {
            CatalogError::Conflict => invalid("the invitation changed meanwhile; approve again"),
            e => ApiError(e.into()),
        })?;
    inviter
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&code);
    tracing::info!(%code, macs = %machine.macs.join(","), "machine approved");
    Ok(Json(machine))
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

//! The node-to-node server (port 9420): this node's shards, heartbeats, joining and
//! layout pushes. Mutual TLS only; every request is checked against the membership
//! by the node id of the certificate it came with.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use shards::{ShardKey, ShardMeta, ShardStore};

use crate::client::{
    DiskHealth, NodeHealth, POLICY, SEALED_LEN, ShardEntry, parse_chunk, parse_policy,
};
use crate::identity::NodeId;
use crate::layout::{Layout, NodeInfo};
use crate::membership::Membership;
use crate::mutual_tls::{NodeTls, peer_node_id};
use crate::shard_batch::Fetched;

/// Who is calling: the node id of its certificate and its address.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The node id its certificate proves.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
}

/// What the node-to-node handlers share.
#[derive(Clone)]
pub struct RpcState {
    /// This node's view of the cluster.
    pub membership: Arc<Membership>,
    /// This node's shard disks.
    pub store: Arc<ShardStore>,
}

type Refusal = (StatusCode, String);

fn refuse(code: StatusCode, msg: impl Into<String>) -> Refusal {
    let msg = msg.into();
    tracing::warn!("node-to-node request refused: {msg}");
    (code, msg)
}

/// The node-to-node API: shards, heartbeats, joins, layouts; members only.
pub fn router(state: RpcState) -> Router {
    let members = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/shards", get(list_shards))
        .route("/v1/uploading", get(uploading))
        .route(
            "/v1/shards/{disk}/{chunk}/{index}",
            put(put_shard).get(get_shard).delete(delete_shard),
        )
        .route("/v1/shard-batch/get", post(crate::shard_batch::get_shards))
        .route("/v1/shard-batch/put", post(crate::shard_batch::put_shards))
        .route(
            "/v1/shard-batch/delete",
            post(crate::shard_batch::delete_shards),
        )
        .route("/v1/repair", post(request_repair))
        .route("/v1/layout", put(push_layout).get(get_layout));
    for_members(members, state.membership.clone())
        .route("/v1/join", post(join))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

/// `routes` for members only: the caller's membership is checked before anything else
/// looks at a request (its path, headers or body), so a node that is no member learns
/// nothing but 403. For this API's routes and those other layers merge into it.
pub fn for_members<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    membership: Arc<Membership>,
) -> Router<S> {
    routes.layer(axum::middleware::from_fn_with_state(
        membership,
        require_member,
    ))
}

async fn require_member(
    State(membership): State<Arc<Membership>>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match membership.authorize(&peer.id) {
        Ok(()) => next.run(req).await,
        Err(m) => refuse(StatusCode::FORBIDDEN, m.to_string()).into_response(),
    }
}

/// Local disk health: shard counts and free space, as heartbeats report it.
pub fn local_disks(store: &ShardStore) -> Vec<DiskHealth> {
    store
        .disks()
        .iter()
        .map(|d| {
            let (total, free) = fs_space(d.path());
            DiskHealth {
                path: d.path().display().to_string(),
                shards: d.shard_count() as u64,
                bytes_total: total,
                bytes_free: free,
                ok: d.path().is_dir(),
            }
        })
        .collect()
}

/// Total and free bytes of the file system holding `path` (0, 0 if unknown).
pub fn fs_space(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    let f = s.f_frsize as u64;
    (s.f_blocks as u64 * f, s.f_bavail as u64 * f)
}

async fn health(State(state): State<RpcState>) -> Result<Json<NodeHealth>, Refusal> {
    let store = state.store.clone();
    let membership = state.membership.clone();
    let (disks, capacity) =
        tokio::task::spawn_blocking(move || (local_disks(&store), membership.local_capacity()))
            .await
            .unwrap_or_default();
    Ok(Json(NodeHealth {
        id: state.membership.me().clone(),
        epoch: state.membership.layout().epoch,
        disks,
        capacity: Some(capacity),
    }))
}

fn shard_key(chunk: &str, index: u8) -> Result<ShardKey, Refusal> {
    let chunk =
        parse_chunk(chunk).ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "bad chunk id"))?;
    Ok(ShardKey { chunk, index })
}

/// The disks a request names: one ("0", "1", ...) or every disk ("any").
fn disks_named(state: &RpcState, disk: &str) -> Result<Vec<usize>, Refusal> {
    let named = match disk {
        "any" => Some(None),
        d => d.parse::<usize>().ok().map(Some),
    };
    named
        .and_then(|d| disks_of(&state.store, d))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "no disk {disk:?} on this node ({} disks)",
                    state.store.disks().len()
                ),
            )
        })
}

/// One disk of this node, or every disk (`None`); None when it has no such disk.
pub(crate) fn disks_of(store: &ShardStore, disk: Option<usize>) -> Option<Vec<usize>> {
    let n = store.disks().len();
    match disk {
        None => Some((0..n).collect()),
        Some(d) if d < n => Some(vec![d]),
        Some(_) => None,
    }
}

/// A shard's metadata from what a write names; Err when the index is beyond the policy.
pub(crate) fn shard_meta(
    policy: codec::Redundancy,
    sealed_len: u32,
    index: u8,
) -> Result<ShardMeta, &'static str> {
    if index as usize >= policy.shard_count() {
        return Err("shard index beyond the policy");
    }
    Ok(ShardMeta {
        policy,
        sealed_len,
        written_ms: 0,
    })
}

/// A shard from the first of `disks` that holds it, verified.
pub(crate) fn read_any(store: &ShardStore, disks: &[usize], key: &ShardKey) -> Fetched {
    let mut found = Fetched::Missing;
    for &d in disks {
        if !store.disk(d).contains(key) {
            continue;
        }
        match store.disk(d).read(key) {
            Ok((_, data)) => return Fetched::Data(data),
            Err(e) if e.is_missing() => {}
            Err(e) => found = Fetched::Corrupt(e.to_string()),
        }
    }
    found
}

async fn put_shard(
    State(state): State<RpcState>,
    Path((disk, chunk, index)): Path<(String, String, u8)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let key = shard_key(&chunk, index)?;
    let disks = disks_named(&state, &disk)?;
    let [d] = disks[..] else {
        return Err(refuse(StatusCode::BAD_REQUEST, "a write names one disk"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let policy = header(POLICY)
        .and_then(parse_policy)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "missing or bad x-edgecloud-policy"))?;
    let sealed_len = header(SEALED_LEN)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "missing or bad x-edgecloud-sealed-len",
            )
        })?;
    let meta =
        shard_meta(policy, sealed_len, index).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    state
        .store
        .disk(d)
        .write(key, meta, body.to_vec())
        .await
        .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_shard(
    State(state): State<RpcState>,
    Path((disk, chunk, index)): Path<(String, String, u8)>,
) -> Result<Response, Refusal> {
    let key = shard_key(&chunk, index)?;
    let disks = disks_named(&state, &disk)?;
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || read_any(&store, &disks, &key))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match found {
        Fetched::Data(data) => Ok(data.into_response()),
        Fetched::Missing => Ok((StatusCode::NOT_FOUND, "no such shard").into_response()),
        Fetched::Corrupt(reason) => Ok((StatusCode::UNPROCESSABLE_ENTITY, reason).into_response()),
    }
}

async fn delete_shard(
    State(state): State<RpcState>,
    Path((disk, chunk, index)): Path<(String, String, u8)>,
) -> Result<StatusCode, Refusal> {
    let key = shard_key(&chunk, index)?;
    for d in disks_named(&state, &disk)? {
        state
            .store
            .disk(d)
            .delete(key)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_shards(
    State(state): State<RpcState>,
) -> Result<Json<Vec<(u32, ShardEntry)>>, Refusal> {
    let store = state.store.clone();
    let all = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        for (d, disk) in store.disks().iter().enumerate() {
            for (k, m) in disk.list() {
                v.push((d as u32, ShardEntry::from_parts(&k, &m)));
            }
        }
        v
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(all))
}

/// The chunks uploads through this node are writing (hex ids): garbage collection on
/// the leader spares their shards.
async fn uploading(State(state): State<RpcState>) -> Result<Json<Vec<String>>, Refusal> {
    let ids = state.store.uploading().list();
    Ok(Json(ids.iter().map(|id| codec::hex(id)).collect()))
}

async fn join(
    State(state): State<RpcState>,
    Extension(peer): Extension<Peer>,
    Json(mut info): Json<NodeInfo>,
) -> Result<Json<Layout>, Refusal> {
    // A node listening on every address advertises where its request came from.
    if let Some(port) = info.rpc_addr.strip_prefix("0.0.0.0:") {
        info.rpc_addr = SocketAddr::new(peer.addr.ip(), port.parse().unwrap_or(9420)).to_string();
    }
    let layout = state
        .membership
        .join(&peer.id, info)
        .await
        .map_err(|m| refuse(StatusCode::FORBIDDEN, m.to_string()))?;
    Ok(Json((*layout).clone()))
}

/// A member's scrubber found (and removed) corrupt shards: rebuild them soon.
async fn request_repair(
    State(state): State<RpcState>,
    Extension(peer): Extension<Peer>,
) -> Result<StatusCode, Refusal> {
    tracing::info!(node = %peer.id, "repair requested");
    state.membership.request_repair();
    Ok(StatusCode::NO_CONTENT)
}

async fn push_layout(
    State(state): State<RpcState>,
    Extension(peer): Extension<Peer>,
    Json(layout): Json<Layout>,
) -> Result<StatusCode, Refusal> {
    state
        .membership
        .accept_layout(&peer.id, layout)
        .map_err(|m| refuse(StatusCode::FORBIDDEN, m.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_layout(State(state): State<RpcState>) -> Result<Json<Layout>, Refusal> {
    Ok(Json((*state.membership.layout()).clone()))
}

/// Serves the node-to-node API over mutual TLS until `stop` changes. A connection whose
/// certificate is not from this cluster fails its handshake and is logged (a wrong
/// cluster secret); each request then carries the caller's node id. A connection
/// without any certificate is a guest: it is served `guest` only (redeeming an
/// invitation), and every other path answers 403.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    guest: Router,
    tls: &NodeTls,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let guest = guest.fallback(members_only);
    let route = move |conn: &rustls::ServerConnection, addr: SocketAddr| {
        let Some(certs) = conn.peer_certificates().filter(|c| !c.is_empty()) else {
            return Some(guest.clone().layer(Extension(Guest { addr })));
        };
        let Some(id) = certs.first().and_then(peer_node_id) else {
            tracing::warn!("node-to-node connection from {addr} without a usable certificate");
            return None;
        };
        Some(app.clone().layer(Extension(Peer { id, addr })))
    };
    crate::mutual_tls::serve_https(listener, tls.server.clone(), "node-to-node", route, stop)
}

/// A connection that presented no certificate.
#[derive(Clone, Debug)]
pub struct Guest {
    /// Its address.
    pub addr: SocketAddr,
}

async fn members_only(Extension(guest): Extension<Guest>, uri: axum::http::Uri) -> Refusal {
    refuse(
        StatusCode::FORBIDDEN,
        format!(
            "{} from {}: the node-to-node API is for members only (a node certificate under the cluster secret); without one, only {} is served",
            uri.path(),
            guest.addr,
            crate::invite::REDEEM_PATH
        ),
    )
}

//! Containers over HTTP (`edgecloud run`, `ps`, `logs`, `stop`, `container rm|inspect`).
//!
//! In a cluster every node answers for every container: `run` places a new one on the
//! node with most room (among those `--site` / `--node` admit; `cluster::capacity`),
//! `ps` asks every node, and a request naming a container goes to the node that runs
//! it. Between nodes a request travels as a [`Call`] over the node-to-node API
//! ([`PEER_PATH`], mutual TLS, members only), carrying the caller's name for the
//! ledger; the node that got it from the user has checked the user's token.

use std::time::Duration;

use archive::Archive;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use cluster::capacity::{Constraint, Need, Unplaceable};
use containers::{ContainerError, ContainerInfo, Containers, RunSpec, State as RunState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::AdminState;
use crate::error::problem;
use crate::session::Principal;

/// The node-to-node path of container [`Call`]s.
pub const PEER_PATH: &str = "/v1/containers/call";

/// The nodes that did not answer `ps`, as `ID@ADDRESS` separated by commas.
pub const UNREACHABLE_HEADER: &str = "edgecloud-unreachable-nodes";

/// A container request as one node hands it to the node that runs (or is to run) the
/// container.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Create and start (the sending node placed it here).
    Run {
        /// What to run.
        spec: RunSpec,
        /// Who asked, for the ledger.
        actor: String,
    },
    /// This node's containers.
    List {
        /// Exited ones too.
        all: bool,
    },
    /// One container.
    Get {
        /// Name, id or id prefix.
        reference: String,
    },
    /// SIGTERM, then SIGKILL after `time` seconds.
    Stop {
        /// Name, id or id prefix.
        reference: String,
        /// Seconds of grace.
        time: u64,
    },
    /// Remove (kill first with `force`).
    Remove {
        /// Name, id or id prefix.
        reference: String,
        /// Kill a running one.
        force: bool,
    },
    /// Run a command in it.
    Exec {
        /// Name, id or id prefix.
        reference: String,
        /// argv.
        command: Vec<String>,
        /// `K=V`.
        env: Vec<String>,
    },
    /// Up to [`LOG_PIECE`] bytes of its output from `offset`, base64, and whether it
    /// still runs: `{"data": ..., "running": ...}`.
    Logs {
        /// Name, id or id prefix.
        reference: String,
        /// Where to read from.
        offset: u64,
    },
}

/// Why a call failed, as it travels between nodes and becomes the user's answer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Failure {
    /// The HTTP status the user gets.
    pub status: u16,
    /// The error code of the body.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// What a [`Call`] answers.
pub type Answer = Result<Value, Failure>;

/// The most log bytes one [`Call::Logs`] carries.
pub const LOG_PIECE: usize = 256 * 1024;

const UNREACHABLE: &str = "NodeUnreachable";

impl Failure {
    fn new(status: StatusCode, code: &str, message: String) -> Failure {
        Failure {
            status: status.as_u16(),
            code: code.into(),
            message,
        }
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        problem(status, &self.code, self.message)
    }

    /// The node could not take the call (unreachable, or it runs no containers): the
    /// next node may.
    fn try_another(&self) -> bool {
        self.code == UNREACHABLE || self.status == StatusCode::NOT_IMPLEMENTED.as_u16()
    }
}

impl From<ContainerError> for Failure {
    fn from(e: ContainerError) -> Failure {
        use ContainerError as E;
        let (status, code) = match &e {
            E::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "NoSuchContainer"),
            E::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            E::Image(_) => (StatusCode::BAD_REQUEST, "InvalidImage"),
            E::Runtime(_) | E::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "container request failed");
        }
        Failure::new(status, code, e.to_string())
    }
}

fn to_value<T: Serialize>(v: T) -> Answer {
    serde_json::to_value(v).map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })
}

fn no_service() -> Failure {
    Failure::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "this node runs no containers (they need root and overlayfs; see the node's log)".into(),
    )
}

/// This node's id and site, in a cluster.
fn this_node(archive: &Archive) -> Option<(String, String)> {
    let m = archive.cluster()?;
    let layout = m.layout();
    let n = layout.node(m.me())?;
    Some((n.id.to_string(), n.site.clone()))
}

/// Answers `call` with this node's containers; what it answers about a container says
/// which node and site that is.
pub async fn answer_here(archive: &Archive, c: Option<&Containers>, call: Call) -> Answer {
    let c = c.ok_or_else(no_service)?;
    let here = this_node(archive);
    let tag = |mut i: ContainerInfo| {
        if let Some((node, site)) = &here {
            i.node = Some(node.clone());
            i.site = Some(site.clone());
        }
        i
    };
    match call {
        Call::Run { spec, actor } => to_value(tag(c.run(spec, Some(actor)).await?)),
        Call::List { all } => to_value(c.list(all).into_iter().map(tag).collect::<Vec<_>>()),
        Call::Get { reference } => to_value(tag(c.get(&reference)?)),
        Call::Stop { reference, time } => {
            let grace = Duration::from_secs(time.min(3600));
            to_value(tag(c.stop(&reference, grace).await?))
        }
        Call::Remove { reference, force } => to_value(tag(c.remove(&reference, force).await?)),
        Call::Exec {
            reference,
            command,
            env,
        } => to_value(c.exec(&reference, command, env).await?),
        Call::Logs { reference, offset } => {
            let info = c.get(&reference)?;
            let path = c.log_path(&info.id)?;
            let mut data = Vec::new();
            match tokio::fs::File::open(&path).await {
                Ok(f) => {
                    let mut f = f;
                    f.seek(std::io::SeekFrom::Start(offset))
                        .await
                        .map_err(ContainerError::from)?;
                    f.take(LOG_PIECE as u64)
                        .read_to_end(&mut data)
                        .await
                        .map_err(ContainerError::from)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ContainerError::from(e).into()),
            }
            Ok(serde_json::json!({
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "running": info.state == RunState::Running,
            }))
        }
    }
}

/// How long a node is given for each call.
fn timeout_of(call: &Call) -> Duration {
    match call {
        Call::Run { .. } => Duration::from_secs(300),
        Call::Stop { time, .. } => Duration::from_secs(time.min(&3600) + 30),
        Call::Exec { .. } => Duration::from_secs(3600),
        Call::Remove { .. } => Duration::from_secs(60),
        Call::List { .. } | Call::Get { .. } | Call::Logs { .. } => Duration::from_secs(5),
    }
}

/// Hands `call` to the node at `addr`.
async fn call_node(s: &AdminState, addr: &str, call: &Call) -> Answer {
    let unreachable = |why: String| {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            UNREACHABLE,
            format!("cannot reach the node at {addr}: {why}"),
        )
    };
    let m = s
        .archive
        .cluster()
        .ok_or_else(|| unreachable("this node is in no cluster".into()))?;
    let body = serde_json::to_vec(call).map_err(|e| unreachable(e.to_string()))?;
    let reply = m
        .client()
        .call(addr, PEER_PATH, body, timeout_of(call))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    serde_json::from_slice::<Answer>(&reply)
        .map_err(|e| unreachable(format!("an unreadable answer: {e}")))?
}

/// The other active nodes of the cluster: (id, node-to-node address).
fn other_nodes(s: &AdminState) -> Vec<(String, String)> {
    let Some(m) = s.archive.cluster() else {
        return Vec::new();
    };
    m.layout()
        .members()
        .filter(|n| n.state == cluster::NodeState::Active && &n.id != m.me())
        .map(|n| (n.id.to_string(), n.rpc_addr.clone()))
        .collect()
}

/// `call` on every other active node, at once.
async fn ask_others(s: &AdminState, call: &Call) -> Vec<((String, String), Answer)> {
    let asks = other_nodes(s).into_iter().map(|node| async move {
        let answer = call_node(s, &node.1, call).await;
        (node, answer)
    });
    futures::future::join_all(asks).await
}

/// Where the container `reference` runs: None for this node, else the address of the
/// node that has it.
async fn locate(s: &AdminState, reference: &str) -> Result<Option<String>, Failure> {
    if let Some(c) = &s.containers {
        match c.get(reference) {
            Ok(_) => return Ok(None),
            Err(ContainerError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if s.archive.cluster().is_none() {
        return Err(match &s.containers {
            Some(_) => Failure::new(
                StatusCode::NOT_FOUND,
                "NoSuchContainer",
                format!("no container {reference:?}: `edgecloud ps -a` lists them"),
            ),
            None => no_service(),
        });
    }
    let get = Call::Get {
        reference: reference.to_string(),
    };
    let mut found = Vec::new();
    let mut unreached = Vec::new();
    for ((id, addr), answer) in ask_others(s, &get).await {
        match answer {
            Ok(_) => found.push((id, addr)),
            Err(f) if f.code == UNREACHABLE => unreached.push(id),
            Err(_) => {}
        }
    }
    match found.len() {
        1 => Ok(found.pop().map(|(_, addr)| addr)),
        0 if unreached.is_empty() => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NoSuchContainer",
            format!("no container {reference:?} on any node: `edgecloud ps -a` lists them"),
        )),
        0 => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NoSuchContainer",
            format!(
                "no container {reference:?} on the nodes that answered; {} did not answer",
                unreached.join(", ")
            ),
        )),
        _ => Err(Failure::new(
            StatusCode::CONFLICT,
            "AmbiguousContainer",
            format!(
                "{reference:?} names containers on nodes {}: use the container's id",
                found
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `call` about the container `reference`, on the node that runs it.
async fn on_its_node(s: &AdminState, reference: &str, call: Call) -> Answer {
    match locate(s, reference).await? {
        None => answer_here(&s.archive, s.containers.as_ref(), call).await,
        Some(addr) => call_node(s, &addr, &call).await,
    }
}

fn respond(answer: Answer, ok: StatusCode) -> Response {
    match answer {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(f) => f.into_response(),
    }
}

/// Places and starts `spec` in a cluster: the node with most room among those its
/// `site` and `node` admit; the next one when a node cannot be reached.
async fn run_in_cluster(
    s: &AdminState,
    m: &cluster::Membership,
    spec: RunSpec,
    actor: String,
) -> Answer {
    if let Some(name) = &spec.name {
        let get = Call::Get {
            reference: name.clone(),
        };
        let mut answers = ask_others(s, &get).await;
        if let Some(c) = &s.containers {
            let me = m.me().to_string();
            answers.push((
                (me, String::new()),
                c.get(name).map_err(Failure::from).and_then(to_value),
            ));
        }
        for ((id, _), answer) in answers {
            if let Ok(v) = answer
                && v.get("name").and_then(Value::as_str) == Some(name)
            {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "a container named {name:?} exists on node {id}: remove it or pick another name"
                    ),
                ));
            }
        }
    }
    let need = Need {
        cpus: spec.cpus,
        memory: spec.memory,
    };
    let constraint = Constraint {
        site: spec.site.clone(),
        node: spec.node.clone(),
    };
    let mut candidates = m.candidates();
    if s.containers.is_none() {
        candidates.retain(|c| !c.me);
    }
    let ranked = cluster::capacity::rank(&candidates, &need, &constraint).map_err(|e| match e {
        Unplaceable::NoMatch(m) => Failure::new(StatusCode::BAD_REQUEST, "NoSuchNode", m),
        Unplaceable::NoRoom(m) => Failure::new(StatusCode::CONFLICT, "NoRoom", m),
    })?;
    let mut tried = Vec::new();
    for node in ranked {
        let call = Call::Run {
            spec: spec.clone(),
            actor: actor.clone(),
        };
        let answer = if node.me {
            answer_here(&s.archive, s.containers.as_ref(), call).await
        } else {
            m.place_on(&node.id, &need, call_node(s, &node.rpc_addr, &call))
                .await
        };
        match answer {
            Err(f) if f.try_another() => {
                tracing::warn!(node = %node.id, "container not placed there: {}", f.message);
                tried.push(format!("{} ({})", node.id, f.message));
            }
            other => return other,
        }
    }
    Err(Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "NoNodeAnswered",
        format!(
            "no node that has room could take the container: {}",
            tried.join("; ")
        ),
    ))
}

/// `POST /v1/containers`: creates and starts a container (in a cluster, on the node
/// with most room among those `site` and `node` admit).
pub(crate) async fn run(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let spec: RunSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return Failure::from(ContainerError::Invalid(format!(
                "not a container spec: {e}"
            )))
            .into_response();
        }
    };
    let answer = match s.archive.cluster() {
        Some(m) => run_in_cluster(&s, m, spec, who.actor()).await,
        None if spec.site.is_some() || spec.node.is_some() => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "this node is in no cluster: --site and --node place containers on a cluster's nodes; leave them out".into(),
        )),
        None => {
            let call = Call::Run {
                spec,
                actor: who.actor(),
            };
            answer_here(&s.archive, s.containers.as_ref(), call).await
        }
    };
    respond(answer, StatusCode::CREATED)
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /v1/containers[?all=true]`: running containers (all with `all`) of every node,
/// newest first. Nodes that did not answer are named in [`UNREACHABLE_HEADER`].
pub(crate) async fn list(State(s): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
    let call = Call::List { all: q.all };
    let mut all: Vec<ContainerInfo> = Vec::new();
    let mut unreached = Vec::new();
    let here = answer_here(&s.archive, s.containers.as_ref(), call.clone()).await;
    let mut answers = vec![(None, here)];
    answers.extend(
        ask_others(&s, &call)
            .await
            .into_iter()
            .map(|(node, a)| (Some(node), a)),
    );
    let in_cluster = answers.len() > 1;
    for (node, answer) in answers {
        match answer.and_then(|v| {
            serde_json::from_value::<Vec<ContainerInfo>>(v)
                .map_err(|e| Failure::new(StatusCode::BAD_GATEWAY, UNREACHABLE, e.to_string()))
        }) {
            Ok(list) => all.extend(list),
            Err(f) if node.is_none() && !in_cluster => return f.into_response(),
            Err(f) if f.try_another() => {
                if let Some((id, addr)) = node {
                    unreached.push(format!("{id}@{addr}"));
                }
            }
            Err(_) => {}
        }
    }
    all.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let mut r = Json(all).into_response();
    if !unreached.is_empty()
        && let Ok(v) = HeaderValue::from_str(&unreached.join(","))
    {
        r.headers_mut().insert(UNREACHABLE_HEADER, v);
    }
    r
}

/// `GET /v1/containers/{reference}`: by name, id or id prefix.
pub(crate) async fn get(State(s): State<AdminState>, Path(r): Path<String>) -> Response {
    let call = Call::Get {
        reference: r.clone(),
    };
    respond(on_its_node(&s, &r, call).await, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL [default: 10].
    time: Option<u64>,
}

/// `POST /v1/containers/{reference}/stop[?time=SECONDS]`.
pub(crate) async fn stop(
    State(s): State<AdminState>,
    Path(r): Path<String>,
    Query(q): Query<StopQuery>,
) -> Response {
    let call = Call::Stop {
        reference: r.clone(),
        time: q.time.unwrap_or(10).min(3600),
    };
    respond(on_its_node(&s, &r, call).await, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/containers/{reference}[?force=true]`.
pub(crate) async fn remove(
    State(s): State<AdminState>,
    Path(r): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Response {
    let call = Call::Remove {
        reference: r.clone(),
        force: q.force,
    };
    respond(on_its_node(&s, &r, call).await, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// `GET /v1/containers/{reference}/logs[?follow=true]`: its output (stdout and
/// stderr as written); with `follow`, the answer goes on until the container ends.
pub(crate) async fn logs(
    State(s): State<AdminState>,
    Path(r): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let addr = match locate(&s, &r).await {
        Ok(Some(addr)) => addr,
        Ok(None) => return local_logs(&s, &r, q.follow).await,
        Err(f) => return f.into_response(),
    };
    remote_logs(s, addr, r, q.follow)
}

/// The logs of a container on another node, read piece by piece from it.
fn remote_logs(s: AdminState, addr: String, reference: String, follow: bool) -> Response {
    // State: the offset, and whether the container had ended at the last empty read.
    let stream = futures::stream::unfold((0u64, false, false), move |(offset, ended, done)| {
        let (s, addr, reference) = (s.clone(), addr.clone(), reference.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let call = Call::Logs {
                    reference: reference.clone(),
                    offset,
                };
                let piece = match call_node(&s, &addr, &call).await {
                    Ok(v) => v,
                    Err(f) => {
                        let e = std::io::Error::other(f.message);
                        return Some((Err(e), (offset, true, true)));
                    }
                };
                let data = piece
                    .get("data")
                    .and_then(Value::as_str)
                    .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                    .unwrap_or_default();
                let running = piece.get("running").and_then(Value::as_bool) == Some(true);
                if !data.is_empty() {
                    let next = offset + data.len() as u64;
                    return Some((Ok(bytes::Bytes::from(data)), (next, ended, false)));
                }
                if !follow || ended {
                    return None;
                }
                if !running {
                    // One more read catches what it wrote before it ended.
                    return Some((Ok(bytes::Bytes::new()), (offset, true, false)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The logs of a container of this node, streamed from its log file.
async fn local_logs(s: &AdminState, r: &str, follow: bool) -> Response {
    let Some(c) = s.containers.clone() else {
        return no_service().into_response();
    };
    let (id, path) = match c
        .get(r)
        .and_then(|info| Ok((info.id.clone(), c.log_path(&info.id)?)))
    {
        Ok(p) => p,
        Err(e) => return Failure::from(e).into_response(),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Failure::from(ContainerError::from(e)).into_response(),
    };
    // State: the file, and whether the container had ended at the last empty read.
    let stream = futures::stream::unfold((file, false), move |(file, ended)| {
        let (c, id) = (c.clone(), id.clone());
        async move {
            let mut file = file?;
            loop {
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) if !follow || ended => return None,
                    Ok(0) => {
                        let running = c.get(&id).is_ok_and(|i| i.state == RunState::Running);
                        if !running {
                            // One more read catches what it wrote before it ended.
                            return Some((Ok(bytes::Bytes::new()), (Some(file), true)));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        return Some((Ok(bytes::Bytes::from(buf)), (Some(file), ended)));
                    }
                    Err(e) => return Some((Err(e), (None, true))),
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `POST /v1/containers/{reference}/exec`'s body.
#[derive(Deserialize)]
pub(crate) struct ExecBody {
    command: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

/// `POST /v1/containers/{reference}/exec`: runs a command in a running container and
/// answers its exit code and output when it ends.
pub(crate) async fn exec(
    State(s): State<AdminState>,
    Path(r): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let b: ExecBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Failure::from(ContainerError::Invalid(format!("not a command: {e}")))
                .into_response();
        }
    };
    let call = Call::Exec {
        reference: r.clone(),
        command: b.command,
        env: b.env,
    };
    respond(on_its_node(&s, &r, call).await, StatusCode::OK)
}

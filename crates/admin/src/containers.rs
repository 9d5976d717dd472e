//! Containers over HTTP (`edgecloud run`, `ps`, `logs`, `stop`, `container rm|inspect`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use containers::{ContainerError, Containers, RunSpec, State as RunState};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::AdminState;
use crate::error::problem;
use crate::session::Principal;

/// A container-service error as an answer.
fn container_problem(e: ContainerError) -> Response {
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
    problem(status, code, e.to_string())
}

fn service(s: &AdminState) -> Result<&Containers, Response> {
    s.containers.as_ref().ok_or_else(|| {
        problem(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "this node runs no containers (they need root and overlayfs; see the node's log)"
                .into(),
        )
    })
}

/// `POST /v1/containers`: creates and starts a container.
pub(crate) async fn run(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let c = match service(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let spec: RunSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return container_problem(ContainerError::Invalid(format!(
                "not a container spec: {e}"
            )));
        }
    };
    match c.run(spec, Some(who.actor())).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => container_problem(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /v1/containers[?all=true]`: running containers (all with `all`), newest first.
pub(crate) async fn list(State(s): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
    match service(&s) {
        Ok(c) => Json(c.list(q.all)).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/containers/{reference}`: by name, id or id prefix.
pub(crate) async fn get(State(s): State<AdminState>, Path(r): Path<String>) -> Response {
    let c = match service(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.get(&r) {
        Ok(info) => Json(info).into_response(),
        Err(e) => container_problem(e),
    }
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
    let c = match service(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let grace = Duration::from_secs(q.time.unwrap_or(10).min(3600));
    match c.stop(&r, grace).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => container_problem(e),
    }
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
    let c = match service(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.remove(&r, q.force).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => container_problem(e),
    }
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
    let c = match service(&s) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let (id, path) = match c
        .get(&r)
        .and_then(|info| Ok((info.id.clone(), c.log_path(&info.id)?)))
    {
        Ok(p) => p,
        Err(e) => return container_problem(e),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return container_problem(e.into()),
    };
    let follow = q.follow;
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
    let c = match service(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let b: ExecBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return container_problem(ContainerError::Invalid(format!("not a command: {e}"))),
    };
    match c.exec(&r, b.command, b.env).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => container_problem(e),
    }
}

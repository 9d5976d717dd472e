//! Compute jobs over HTTP: submit, list, watch, read logs, cancel (`edgecloud job`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jobs::{JobInfo, JobSpec, Jobs};
use serde::{Deserialize, Serialize};

use crate::AdminState;
use crate::error::problem;
use crate::session::Principal;

fn jobs_of(s: &AdminState) -> Result<&Arc<Jobs>, Response> {
    s.jobs.as_ref().ok_or_else(|| {
        problem(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "this node runs no jobs".into(),
        )
    })
}

fn no_such_job(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "NoSuchJob",
        format!("no job {id} on this node (`edgecloud job ls` lists them)"),
    )
}

/// `POST /v1/jobs`: checks the job (runtime, buckets, that its code loads) and starts it.
pub(crate) async fn submit(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let jobs = match jobs_of(&s) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let spec: JobSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("not a job: {e}"),
            );
        }
    };
    match jobs.submit(spec, Some(who.actor())) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, "InvalidJob", e.to_string()),
    }
}

/// `GET /v1/jobs`: the jobs this node remembers, newest first.
pub(crate) async fn list(State(s): State<AdminState>) -> Response {
    match jobs_of(&s) {
        Ok(j) => Json::<Vec<JobInfo>>(j.list()).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/jobs/{id}`.
pub(crate) async fn get(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match jobs_of(&s).map(|j| j.get(&id)) {
        Ok(Some(info)) => Json(info).into_response(),
        Ok(None) => no_such_job(&id),
        Err(r) => r,
    }
}

/// A job's log.
#[derive(Serialize, Deserialize)]
pub struct JobLogs {
    /// What the code logged, each line prefixed with its input object.
    pub lines: Vec<String>,
}

/// `GET /v1/jobs/{id}/logs`.
pub(crate) async fn logs(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match jobs_of(&s).map(|j| j.logs(&id)) {
        Ok(Some(lines)) => Json(JobLogs { lines }).into_response(),
        Ok(None) => no_such_job(&id),
        Err(r) => r,
    }
}

/// `DELETE /v1/jobs/{id}`: asks the job to stop (its state says when it has).
pub(crate) async fn cancel(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match jobs_of(&s) {
        Ok(j) if j.cancel(&id) => StatusCode::ACCEPTED.into_response(),
        Ok(_) => no_such_job(&id),
        Err(r) => r,
    }
}

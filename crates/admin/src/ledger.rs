//! The audit log over HTTP: checkpoint, tiles, proofs, and proof bundles for object
//! versions (what `edgecloud ledger` uses).

use std::sync::Arc;

use archive::audit::{Auditor, ProofBundle};
use archive::{ArchiveError, VersionSel};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use crate::{AdminState, ApiError};

fn auditor(s: &AdminState) -> Result<&Arc<Auditor>, ApiError> {
    s.auditor
        .as_ref()
        .ok_or_else(|| ApiError(ArchiveError::Invalid("this node keeps no ledger".into())))
}

pub(crate) async fn checkpoint(State(s): State<AdminState>) -> Result<String, ApiError> {
    let a = auditor(&s)?;
    a.catch_up()?;
    Ok(String::from_utf8_lossy(&a.checkpoint()).into_owned())
}

pub(crate) async fn public_key(State(s): State<AdminState>) -> Result<String, ApiError> {
    Ok(auditor(&s)?.public_key.clone())
}

/// `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, as published (a partial
/// deleted since its full tile was published is cut from it).
pub(crate) async fn tile(
    State(s): State<AdminState>,
    Path(path): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let a = auditor(&s)?;
    let ok = path.split('/').all(|seg| {
        !seg.is_empty()
            && seg != ".."
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    let missing = || ApiError(ArchiveError::Invalid(format!("no tile {path}")));
    if !ok {
        return Err(missing());
    }
    // A partial whose full tile is published is cut from the full one.
    let bytes = a
        .published(&format!("tile/{path}"))
        .ok()
        .flatten()
        .ok_or_else(missing)?;
    Ok(([("content-type", "application/octet-stream")], bytes))
}

#[derive(Deserialize)]
pub(crate) struct InclusionQuery {
    index: u64,
    size: u64,
}

/// A Merkle proof (inclusion or consistency) as base64 hashes.
#[derive(Serialize, Deserialize)]
pub struct Proof {
    /// The proof's hashes, base64, in the order RFC 6962 gives them.
    pub proof: Vec<String>,
}

pub(crate) async fn inclusion(
    State(s): State<AdminState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<Proof>, ApiError> {
    let a = auditor(&s)?;
    a.catch_up()?;
    Ok(Json(Proof {
        proof: a.inclusion(q.index, q.size)?,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ConsistencyQuery {
    from: u64,
    to: u64,
}

pub(crate) async fn consistency(
    State(s): State<AdminState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<Proof>, ApiError> {
    let a = auditor(&s)?;
    a.catch_up()?;
    Ok(Json(Proof {
        proof: a.consistency(q.from, q.to)?,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ProveQuery {
    version: Option<String>,
}

/// The bundle for one object version: its record, inclusion proof and the checkpoint.
pub(crate) async fn prove(
    State(s): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<ProveQuery>,
) -> Result<(StatusCode, Json<ProofBundle>), ApiError> {
    let a = auditor(&s)?;
    let sel = q.version.map(VersionSel::Id).unwrap_or(VersionSel::Latest);
    let v = s.archive.head(&bucket, &key, &sel)?;
    let index: u64 = v
        .meta
        .get(archive::LEDGER_INDEX)
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| {
            ApiError(ArchiveError::Invalid(format!(
                "{bucket}/{key} was written before the ledger existed"
            )))
        })?;
    Ok((StatusCode::OK, Json(a.prove(index)?)))
}

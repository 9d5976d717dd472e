//! S3 access keys: create (the secret is shown once), list, grant, revoke.

use archive::{AccessKey, ArchiveError, Permission};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::types::{Grant, KeyInfo, NewKey, rfc3339};
use crate::{AdminState, ApiError};

/// "read" | "write" | "owner" -> Some, "none" -> None.
pub fn parse_permission(s: &str) -> Result<Option<Permission>, ApiError> {
    match s {
        "read" => Ok(Some(Permission::Read)),
        "write" => Ok(Some(Permission::Write)),
        "owner" => Ok(Some(Permission::Owner)),
        "none" => Ok(None),
        _ => Err(ApiError(ArchiveError::Invalid(format!(
            "permission {s:?}: use read, write, owner or none"
        )))),
    }
}

fn info(k: AccessKey, with_secret: bool) -> KeyInfo {
    KeyInfo {
        access_key: k.access_key,
        secret: with_secret.then_some(k.secret),
        name: k.name,
        created: rfc3339(k.created_ns),
        admin: k.admin,
        create_buckets: k.create_buckets,
        buckets: k
            .buckets
            .into_iter()
            .map(|(b, p)| (b, p.name().to_string()))
            .collect(),
    }
}

pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    Ok(Json(
        s.archive
            .access_keys()?
            .into_iter()
            .map(|k| info(k, false))
            .collect(),
    ))
}

pub(crate) async fn create(
    State(s): State<AdminState>,
    Json(n): Json<NewKey>,
) -> Result<(StatusCode, Json<KeyInfo>), ApiError> {
    let mut buckets = std::collections::BTreeMap::new();
    for (b, p) in n.buckets {
        if let Some(p) = parse_permission(&p)? {
            buckets.insert(b, p);
        }
    }
    let k = s
        .archive
        .create_access_key(
            archive::ADMIN_ACTOR,
            &n.name,
            n.admin,
            n.create_buckets,
            buckets,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info(k, true))))
}

pub(crate) async fn grant(
    State(s): State<AdminState>,
    Path((key, bucket)): Path<(String, String)>,
    Json(g): Json<Grant>,
) -> Result<Json<KeyInfo>, ApiError> {
    let p = parse_permission(&g.permission)?;
    Ok(Json(info(
        s.archive
            .set_permission(archive::ADMIN_ACTOR, &key, &bucket, p)
            .await?,
        false,
    )))
}

pub(crate) async fn delete(
    State(s): State<AdminState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.archive
        .delete_access_key(archive::ADMIN_ACTOR, &key)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(ArchiveError::Invalid(format!(
            "no access key {key:?} (see `edgecloud key list`)"
        ))))
    }
}

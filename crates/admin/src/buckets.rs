use archive::{Bucket, Redundancy, Versioning};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::session::Principal;
use crate::types::{BucketInfo, rfc3339};
use crate::{AdminState, ApiError};

pub(crate) fn versioning_name(v: Versioning) -> &'static str {
    match v {
        Versioning::Unversioned => "off",
        Versioning::Enabled => "enabled",
        Versioning::Suspended => "suspended",
    }
}

pub(crate) fn parse_versioning(s: &str) -> Result<Versioning, ApiError> {
    match s {
        "off" => Ok(Versioning::Unversioned),
        "enabled" | "on" => Ok(Versioning::Enabled),
        "suspended" => Ok(Versioning::Suspended),
        _ => Err(ApiError(archive::ArchiveError::Invalid(format!(
            "versioning {s:?}: use enabled, suspended or off"
        )))),
    }
}

fn info(b: &Bucket) -> BucketInfo {
    BucketInfo {
        name: b.name.clone(),
        created: rfc3339(b.created_ns),
        versioning: versioning_name(b.versioning).into(),
        policy: b.policy.to_string(),
        object_lock: archive::lock::bucket_lock(b).map(|l| match l.default {
            Some(d) => match (d.days, d.years) {
                (Some(n), _) => format!("{} {n} days", d.mode.name()),
                (_, Some(n)) => format!("{} {n} years", d.mode.name()),
                _ => d.mode.name().to_string(),
            },
            None => "on".into(),
        }),
        lifecycle_rules: archive::lifecycle::Lifecycle::of(b).map_or(0, |l| l.rules.len()),
    }
}

/// Every bucket for the admin; a key sees the buckets it has a grant on.
pub(crate) async fn list(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Vec<BucketInfo>>, ApiError> {
    Ok(Json(
        s.archive
            .buckets()?
            .iter()
            .filter(|b| who.permission(&b.name).is_some())
            .map(info)
            .collect(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct CreateQuery {
    policy: Option<String>,
    versioning: Option<String>,
}

pub(crate) async fn create(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
    Query(q): Query<CreateQuery>,
) -> Result<(StatusCode, Json<BucketInfo>), ApiError> {
    let policy = match q.policy.as_deref() {
        Some(p) => Some(
            p.parse::<Redundancy>()
                .map_err(|e| ApiError(archive::ArchiveError::Invalid(e.to_string())))?,
        ),
        None => None,
    };
    // Edgecloud keeps every version unless told otherwise.
    let versioning = parse_versioning(q.versioning.as_deref().unwrap_or("enabled"))?;
    let b = s
        .archive
        .create_bucket_as(
            &bucket,
            policy,
            versioning,
            Default::default(),
            Some(archive::ADMIN_ACTOR.into()),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info(&b))))
}

pub(crate) async fn delete(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Path(bucket): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.archive
        .delete_bucket_as(&bucket, Some(who.actor()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct VersioningQuery {
    state: String,
}

pub(crate) async fn set_versioning(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
    Query(q): Query<VersioningQuery>,
) -> Result<Json<BucketInfo>, ApiError> {
    let b = s
        .archive
        .set_versioning(&bucket, parse_versioning(&q.state)?)
        .await?;
    Ok(Json(info(&b)))
}

/// A bucket's access policy (S3 bucket policy JSON), as the console edits it.
#[derive(Serialize, Deserialize)]
pub(crate) struct AccessPolicy {
    /// The policy's JSON text; None when the bucket has none.
    policy: Option<String>,
}

pub(crate) async fn get_policy(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
) -> Result<Json<AccessPolicy>, ApiError> {
    let b = s.archive.bucket(&bucket)?;
    Ok(Json(AccessPolicy {
        policy: b.settings.get(s3::POLICY_SETTING).cloned(),
    }))
}

/// Sets the policy (checked as S3's PutBucketPolicy checks it), or removes it when
/// `policy` is null.
pub(crate) async fn put_policy(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
    Json(p): Json<AccessPolicy>,
) -> Result<Json<AccessPolicy>, ApiError> {
    if let Some(text) = &p.policy {
        s3::check_policy(text).map_err(|e| ApiError(archive::ArchiveError::Invalid(e)))?;
    }
    let policy = p.policy.clone();
    s.archive
        .update_bucket_settings(&bucket, move |settings| match &policy {
            Some(text) => {
                settings.insert(s3::POLICY_SETTING.into(), text.clone());
            }
            None => {
                settings.remove(s3::POLICY_SETTING);
            }
        })
        .await?;
    Ok(Json(p))
}

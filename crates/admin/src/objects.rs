use archive::{ByteRange, ListQuery, PutOptions, Version, VersionSel, VersionsQuery};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::TryStreamExt;
use serde::Deserialize;

use crate::session::Principal;
use crate::types::*;
use crate::{AdminState, ApiError};

pub(crate) fn object_info(v: &Version, is_latest: bool) -> ObjectInfo {
    ObjectInfo {
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        size: v.size,
        etag: v.etag.clone(),
        modified: rfc3339(v.mtime_ns),
        content_type: v.content_type.clone(),
        delete_marker: v.delete_marker,
        is_latest,
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct Select {
    version: Option<String>,
    as_of: Option<String>,
}

impl Select {
    fn sel(&self) -> Result<VersionSel, ApiError> {
        Ok(match (&self.version, &self.as_of) {
            (Some(v), _) => VersionSel::Id(v.clone()),
            (None, Some(t)) => VersionSel::AsOf(archive::parse_instant(t)?),
            (None, None) => VersionSel::Latest,
        })
    }
}

pub(crate) async fn put(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ObjectInfo>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let opts = PutOptions {
        content_type,
        actor: Some(who.actor()),
        ..Default::default()
    };
    let v = s.archive.put(&bucket, &key, stream, opts).await?;
    Ok(Json(object_info(&v, true)))
}

fn object_headers(v: &Version, len: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    let ok = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(header::ETAG, ok(&format!("\"{}\"", v.etag)));
    h.insert("x-edgecloud-version-id", ok(&v.version_id));
    h.insert("x-edgecloud-size", v.size.into());
    h.insert(header::LAST_MODIFIED, ok(&rfc3339(v.mtime_ns)));
    h.insert(
        header::CONTENT_TYPE,
        ok(v.content_type
            .as_deref()
            .unwrap_or("application/octet-stream")),
    );
    h
}

pub(crate) async fn get(
    State(s): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<Select>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => Some(ByteRange::parse_header(r)?),
        None => None,
    };
    let (v, span, stream) = s.archive.get(&bucket, &key, &q.sel()?, range).await?;
    let mut h = object_headers(&v, span.end - span.start);
    let status = if range.is_some() {
        let cr = format!(
            "bytes {}-{}/{}",
            span.start,
            span.end.saturating_sub(1),
            v.size
        );
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("ascii"),
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    // A read error mid-stream aborts the connection: the client sees a short body,
    // never wrong bytes.
    let body = Body::from_stream(stream.map_err(|e| {
        tracing::error!(error = %e, "object read failed mid-stream");
        std::io::Error::other(e.to_string())
    }));
    Ok((status, h, body).into_response())
}

pub(crate) async fn head(
    State(s): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<Select>,
) -> Result<Response, ApiError> {
    let v = s.archive.head(&bucket, &key, &q.sel()?)?;
    Ok((StatusCode::OK, object_headers(&v, v.size)).into_response())
}

pub(crate) async fn delete(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<Select>,
) -> Result<Json<DeleteResult>, ApiError> {
    let out = s
        .archive
        .delete_as(&bucket, &key, q.version.clone(), Some(who.actor()))
        .await?;
    Ok(Json(DeleteResult {
        version_id: out.version_id,
        delete_marker: out.delete_marker,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    prefix: String,
    delimiter: Option<String>,
    start_after: Option<String>,
    max_keys: Option<usize>,
    as_of: Option<String>,
}

pub(crate) async fn list(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<ListResult>, ApiError> {
    let as_of = match &p.as_of {
        Some(t) => Some(archive::parse_instant(t)?),
        None => None,
    };
    let q = ListQuery {
        prefix: p.prefix,
        delimiter: p.delimiter.filter(|d| !d.is_empty()),
        start_after: p.start_after,
        max_keys: p.max_keys.unwrap_or(1000).min(10_000),
        as_of,
    };
    let page = s.archive.list(&bucket, &q)?;
    Ok(Json(ListResult {
        objects: page.objects.iter().map(|v| object_info(v, true)).collect(),
        prefixes: page.common_prefixes,
        truncated: page.truncated,
        next_marker: page.next_marker,
    }))
}

#[derive(Deserialize)]
pub(crate) struct VersionsParams {
    #[serde(default)]
    prefix: String,
    delimiter: Option<String>,
    key_marker: Option<String>,
    version_id_marker: Option<String>,
    max_keys: Option<usize>,
}

pub(crate) async fn versions(
    State(s): State<AdminState>,
    Path(bucket): Path<String>,
    Query(p): Query<VersionsParams>,
) -> Result<Json<VersionsResult>, ApiError> {
    let q = VersionsQuery {
        prefix: p.prefix,
        delimiter: p.delimiter.filter(|d| !d.is_empty()),
        key_marker: p.key_marker,
        version_id_marker: p.version_id_marker,
        max_keys: p.max_keys.unwrap_or(1000).min(10_000),
    };
    let page = s.archive.list_versions(&bucket, &q)?;
    Ok(Json(VersionsResult {
        versions: page
            .versions
            .iter()
            .map(|(v, latest)| object_info(v, *latest))
            .collect(),
        prefixes: page.common_prefixes,
        truncated: page.truncated,
        next_key_marker: page.next_key_marker,
        next_version_id_marker: page.next_version_id_marker,
    }))
}

//! Object operations: PUT, GET (ranges, versions, as-of), HEAD, DELETE.

use archive::{ByteRange, PutCondition, PutOptions, VersionSel};
use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::{OrS3, s3_error};

/// Beyond S3: `?x-edgecloud-as-of=RFC3339` (or the header of that name) reads the
/// object as it was at that instant.
pub(crate) fn selection<T>(req: &S3Request<T>, version_id: Option<&String>) -> S3Result<VersionSel> {
    if let Some(v) = version_id {
        return Ok(VersionSel::Id(v.clone()));
    }
    let from_query = req.uri.query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("x-edgecloud-as-of=")).map(|v| v.replace("%3A", ":").replace("%3a", ":"))
    });
    let from_header = req.headers.get("x-edgecloud-as-of").and_then(|v| v.to_str().ok()).map(str::to_string);
    match from_query.or(from_header) {
        Some(t) => Ok(VersionSel::AsOf(archive::parse_instant(&t).s3()?)),
        None => Ok(VersionSel::Latest),
    }
}

/// s3s needs a `Sync` body; the archive's read-ahead stream is only `Send`. A small
/// channel between them keeps the read-ahead and the backpressure.
fn sync_stream(mut s: archive::ObjectStream) -> futures::channel::mpsc::Receiver<Result<bytes::Bytes, s3s::S3Error>> {
    use futures::{SinkExt, StreamExt};
    let (mut tx, rx) = futures::channel::mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(piece) = s.next().await {
            let failed = piece.is_err();
            if tx.send(piece.map_err(s3_error)).await.is_err() || failed {
                break; // client went away, or the error was delivered
            }
        }
    });
    rx
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value() == etag,
    }
}

fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// RFC 9110 / S3 conditional GET and HEAD, checked against the selected version.
fn check_conditions(
    v: &archive::Version,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = (v.mtime_ns / 1_000_000_000) as i64;
    if let Some(c) = if_match {
        if !etag_matches(c, &v.etag) {
            return Err(s3s::s3_error!(PreconditionFailed, "If-Match does not match the object's ETag"));
        }
    } else if let Some(t) = if_unmodified_since {
        if modified > secs(t) {
            return Err(s3s::s3_error!(PreconditionFailed, "the object was modified after If-Unmodified-Since"));
        }
    }
    if let Some(c) = if_none_match {
        if etag_matches(c, &v.etag) {
            return Err(s3s::S3Error::new(s3s::S3ErrorCode::NotModified));
        }
    } else if let Some(t) = if_modified_since {
        if modified <= secs(t) {
            return Err(s3s::S3Error::new(s3s::S3ErrorCode::NotModified));
        }
    }
    Ok(())
}

fn byte_range(r: &Range) -> ByteRange {
    match *r {
        Range::Int { first, last } => ByteRange::From { start: first, end: last },
        Range::Suffix { length } => ByteRange::Suffix(length),
    }
}

impl EdgeS3 {
    pub(crate) async fn put_object_op(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let body = input.body.ok_or_else(|| s3s::s3_error!(IncompleteBody, "PutObject needs a body"))?;
        let body = body.map_err(|e| std::io::Error::other(e.to_string()));
        let cond = PutCondition {
            if_none_match_any: matches!(input.if_none_match, Some(ETagCondition::Any)),
            if_match: match input.if_match {
                Some(ETagCondition::ETag(t)) => Some(t.value().to_string()),
                Some(ETagCondition::Any) => Some("*".into()),
                None => None,
            },
        };
        let content_md5 = match &input.content_md5 {
            Some(b64) => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok();
                let md5: [u8; 16] = raw
                    .and_then(|r| r.try_into().ok())
                    .ok_or_else(|| s3s::s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))?;
                Some(md5)
            }
            None => None,
        };
        let meta = input.metadata.unwrap_or_default().into_iter().collect();
        let opts = PutOptions { content_type: input.content_type, meta, cond, content_md5 };
        let v = self.archive.put(&input.bucket, &input.key, body, opts).await.s3()?;
        let b = self.archive.bucket(&input.bucket).s3()?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(crate::etag(&v.etag)),
            version_id: crate::version_id(&v, &b),
            ..Default::default()
        }))
    }

    pub(crate) async fn get_object_op(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let sel = selection(&req, req.input.version_id.as_ref())?;
        let input = &req.input;
        let head = self.archive.head(&input.bucket, &input.key, &sel).s3()?;
        check_conditions(&head, input.if_match.as_ref(), input.if_none_match.as_ref(), input.if_modified_since.as_ref(), input.if_unmodified_since.as_ref())?;
        // Read exactly the version the conditions were checked against ("null" ids are
        // not unique over time: keep the original selection for those).
        let sel = if head.version_id == "null" { sel } else { VersionSel::Id(head.version_id.clone()) };
        let range = input.range.as_ref().map(byte_range);
        let (v, span, stream) = self.archive.get(&input.bucket, &input.key, &sel, range).await.s3()?;
        let b = self.archive.bucket(&input.bucket).s3()?;
        let content_range = range.map(|_| format!("bytes {}-{}/{}", span.start, span.end.saturating_sub(1), v.size));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(sync_stream(stream))),
            content_length: Some((span.end - span.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: v.content_type.clone(),
            e_tag: Some(crate::etag(&v.etag)),
            last_modified: Some(crate::timestamp(v.mtime_ns)),
            metadata: Some(v.meta.clone().into_iter().collect()),
            version_id: crate::version_id(&v, &b),
            ..Default::default()
        }))
    }

    pub(crate) async fn head_object_op(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let sel = selection(&req, req.input.version_id.as_ref())?;
        let v = self.archive.head(&req.input.bucket, &req.input.key, &sel).s3()?;
        let i = &req.input;
        check_conditions(&v, i.if_match.as_ref(), i.if_none_match.as_ref(), i.if_modified_since.as_ref(), i.if_unmodified_since.as_ref())?;
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(v.size as i64),
            content_type: v.content_type.clone(),
            e_tag: Some(crate::etag(&v.etag)),
            last_modified: Some(crate::timestamp(v.mtime_ns)),
            metadata: Some(v.meta.clone().into_iter().collect()),
            version_id: crate::version_id(&v, &b),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_object_op(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let out = match self.archive.delete(&input.bucket, &input.key, input.version_id.clone()).await {
            Ok(o) => o,
            // S3 answers 204 for a version that is already gone.
            Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion { .. })) => {
                return Ok(S3Response::new(DeleteObjectOutput { version_id: input.version_id, ..Default::default() }));
            }
            Err(e) => return Err(s3_error(e)),
        };
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: out.delete_marker.then_some(true),
            version_id: out.version_id,
            ..Default::default()
        }))
    }
}

impl EdgeS3 {
    pub(crate) async fn delete_objects_op(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        let quiet = i.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            match self.archive.delete(&i.bucket, &o.key, o.version_id.clone()).await {
                Ok(out) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            version_id: o.version_id,
                            delete_marker: out.delete_marker.then_some(true),
                            delete_marker_version_id: if out.delete_marker { out.version_id } else { None },
                        });
                    }
                }
                Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion { .. })) if !quiet => {
                    deleted.push(DeletedObject { key: Some(o.key), version_id: o.version_id, ..Default::default() });
                }
                Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion { .. })) => {}
                Err(e) => {
                    let err = s3_error(e);
                    errors.push(Error {
                        key: Some(o.key),
                        version_id: o.version_id,
                        code: Some(err.code().as_str().to_string()),
                        message: err.message().map(str::to_string),
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    pub(crate) async fn copy_object_op(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, version_id } = &i.copy_source else {
            return Err(s3s::s3_error!(NotImplemented, "access point copy sources are not supported"));
        };
        let sel = match version_id {
            Some(v) => VersionSel::Id(v.to_string()),
            None => VersionSel::Latest,
        };
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let opts = replace.then(|| PutOptions {
            content_type: i.content_type.clone(),
            meta: i.metadata.clone().unwrap_or_default().into_iter().collect(),
            ..Default::default()
        });
        if !replace && src_bucket.as_ref() == i.bucket && src_key.as_ref() == i.key && version_id.is_none() {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let src = self.archive.head(src_bucket, src_key, &sel).s3()?;
        if let Some(ETagCondition::ETag(t)) = &i.copy_source_if_match {
            if t.value() != src.etag {
                return Err(s3s::s3_error!(PreconditionFailed, "copy source ETag does not match"));
            }
        }
        if let Some(ETagCondition::ETag(t)) = &i.copy_source_if_none_match {
            if t.value() == src.etag {
                return Err(s3s::s3_error!(PreconditionFailed, "copy source ETag matches"));
            }
        }
        let v = self
            .archive
            .copy(src_bucket, src_key, &VersionSel::Id(src.version_id.clone()), &i.bucket, &i.key, opts, PutCondition::default())
            .await
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        let sb = self.archive.bucket(src_bucket).s3()?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(crate::etag(&v.etag)),
                last_modified: Some(crate::timestamp(v.mtime_ns)),
                ..Default::default()
            }),
            version_id: crate::version_id(&v, &b),
            copy_source_version_id: crate::version_id(&src, &sb),
            ..Default::default()
        }))
    }
}

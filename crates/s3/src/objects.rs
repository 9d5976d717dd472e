//! Object operations: PUT, GET (ranges, versions, as-of), HEAD, DELETE.

use archive::{ByteRange, PutCondition, PutOptions, VersionSel};
use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::{OrS3, s3_error};
use crate::headers::{self, ResponseHeaders, set_checksums, stored_headers};
use crate::sse;

/// Beyond S3: `?x-edgecloud-as-of=RFC3339` (or the header of that name) reads the
/// object as it was at that instant.
pub(crate) fn selection<T>(
    req: &S3Request<T>,
    version_id: Option<&String>,
) -> S3Result<VersionSel> {
    selection_in(&req.uri, &req.headers, version_id)
}

/// `selection` from a request's parts; a `versionId` in the query counts when the
/// caller has none parsed (the access check sees only the raw request).
pub(crate) fn selection_in(
    uri: &http::Uri,
    headers: &http::HeaderMap,
    version_id: Option<&String>,
) -> S3Result<VersionSel> {
    if let Some(v) = version_id {
        return Ok(VersionSel::Id(v.clone()));
    }
    let version = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "versionId")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(v) = version {
        return Ok(VersionSel::Id(v));
    }
    // Raw, not form-decoded: a `+01:00` offset sent unescaped stays a plus.
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("x-edgecloud-as-of="))
            .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
    });
    let from_header = headers
        .get("x-edgecloud-as-of")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match from_query.or(from_header) {
        Some(t) => Ok(VersionSel::AsOf(archive::parse_instant(&t).s3()?)),
        None => Ok(VersionSel::Latest),
    }
}

/// s3s needs a `Sync` body; the archive's read-ahead stream is only `Send`. A small
/// channel between them keeps the read-ahead and the backpressure.
fn sync_stream(
    mut s: archive::ObjectStream,
) -> futures::channel::mpsc::Receiver<Result<bytes::Bytes, s3s::S3Error>> {
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
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "If-Match does not match the object's ETag"
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && modified > secs(t)
    {
        return Err(s3s::s3_error!(
            PreconditionFailed,
            "the object was modified after If-Unmodified-Since"
        ));
    }
    if let Some(c) = if_none_match {
        if etag_matches(c, &v.etag) {
            return Err(s3s::S3Error::new(s3s::S3ErrorCode::NotModified));
        }
    } else if let Some(t) = if_modified_since
        && modified <= secs(t)
    {
        return Err(s3s::S3Error::new(s3s::S3ErrorCode::NotModified));
    }
    Ok(())
}

/// `partNumber=N`: the bytes of part N of a multipart object; a single-part object
/// has one part, the whole object.
fn part_range(v: &archive::Version, n: PartNumber) -> S3Result<ByteRange> {
    let sizes: &[u64] = if v.parts.is_empty() {
        std::slice::from_ref(&v.size)
    } else {
        &v.parts
    };
    let idx = usize::try_from(n)
        .ok()
        .filter(|i| (1..=sizes.len()).contains(i))
        .ok_or_else(|| {
            let mut e = s3s::S3Error::with_message(
                s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
                "The requested partnumber is not satisfiable",
            );
            e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
            e
        })?;
    let start: u64 = sizes[..idx - 1].iter().sum();
    let len = sizes[idx - 1];
    Ok(ByteRange::From {
        start,
        end: (len > 0).then(|| start + len - 1),
    })
}

fn parts_count(v: &archive::Version, asked: Option<PartNumber>) -> Option<i32> {
    (asked.is_some() && !v.parts.is_empty()).then_some(v.parts.len() as i32)
}

/// The stored checksum is of the whole object: given only when the client asks for it
/// and reads the whole object.
fn whole_object_checksums(
    v: &archive::Version,
    mode: Option<&ChecksumMode>,
    whole: bool,
) -> Checksum {
    if whole && mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED) {
        crate::checksum::stored(&v.meta)
    } else {
        Checksum::default()
    }
}

/// Beyond S3: the audit-log entry of a write (`x-edgecloud-ledger-index`).
pub(crate) fn ledger_header(h: &mut http::HeaderMap, v: &archive::Version) {
    if let Some(i) = v
        .meta
        .get(archive::LEDGER_INDEX)
        .and_then(|i| http::HeaderValue::from_str(i).ok())
    {
        h.insert("x-edgecloud-ledger-index", i);
    }
}

/// AWS's limits: 5 GiB for one PUT or one part, 5 TiB for an object.
pub(crate) const MAX_PUT: i64 = 5 << 30;
pub(crate) const MAX_OBJECT: u64 = 5 << 40;

pub(crate) fn check_put_size(len: Option<i64>) -> S3Result<()> {
    match len {
        Some(n) if n > MAX_PUT => Err(s3s::s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size of 5 GiB per request; use a multipart upload"
        )),
        _ => Ok(()),
    }
}

pub(crate) fn content_md5(b64: &str) -> S3Result<[u8; 16]> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok();
    raw.and_then(|r| r.try_into().ok())
        .ok_or_else(|| s3s::s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))
}

fn byte_range(r: &Range) -> ByteRange {
    match *r {
        Range::Int { first, last } => ByteRange::From {
            start: first,
            end: last,
        },
        Range::Suffix { length } => ByteRange::Suffix(length),
    }
}

impl EdgeS3 {
    pub(crate) async fn put_object_op(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let expected = crate::checksum::expected(&req.headers, req.trailing_headers.clone())?;
        let actor = crate::access::actor(req.credentials.as_ref());
        let input = req.input;
        check_put_size(input.content_length)?;
        let body = input
            .body
            .ok_or_else(|| s3s::s3_error!(IncompleteBody, "PutObject needs a body"))?;
        let body = body.map_err(|e| std::io::Error::other(e.to_string()));
        let cond = PutCondition {
            if_none_match_any: matches!(input.if_none_match, Some(ETagCondition::Any)),
            if_match: match input.if_match {
                Some(ETagCondition::ETag(t)) => Some(t.value().to_string()),
                Some(ETagCondition::Any) => Some("*".into()),
                None => None,
            },
            if_none_match: match &input.if_none_match {
                Some(ETagCondition::ETag(t)) => Some(t.value().to_string()),
                _ => None,
            },
        };
        let content_md5 = input.content_md5.as_deref().map(content_md5).transpose()?;
        let stored = stored_headers!(input);
        let mut meta = headers::object_meta(input.metadata, stored);
        if let Some(t) = &input.tagging {
            meta.insert(
                headers::TAGGING.into(),
                headers::encode_tags(&headers::parse_tagging_header(t)?),
            );
        }
        if let Some(a) = &input.acl {
            meta.insert(
                headers::ACL.into(),
                crate::policy::canned_acl(a.as_str())?.into(),
            );
        }
        let granted = self.header_grants(&crate::policy::grant_headers!(input))?;
        if !granted.is_empty() {
            meta.insert(
                headers::ACL.into(),
                crate::policy::canned_of(&granted).into(),
            );
        }
        self.store_object_grants(&mut meta, granted.clone(), actor.as_deref(), &input.bucket);
        crate::lock::write_meta(
            &mut meta,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let customer_key = sse::customer_key(sse::customer_headers!(input))?;
        let key_md5 = input.sse_customer_key_md5.clone();
        let b = self.archive.bucket(&input.bucket).s3()?;
        if input.acl.is_some() || !granted.is_empty() {
            let canned = meta.get(headers::ACL).map_or("private", String::as_str);
            crate::ownership::check_acl_write(&b, canned, &granted)?;
        }
        sse::write_meta(
            &mut meta,
            input.server_side_encryption.as_ref(),
            input.ssekms_key_id.as_ref(),
            customer_key.is_some(),
            &b,
        )?;
        let mut opts = PutOptions {
            customer_key,
            content_type: input.content_type,
            meta,
            cond,
            content_md5,
            actor,
            // A body sent without a length is held to the same 5 GiB as it streams.
            max_size: Some(MAX_PUT as u64),
            ..Default::default()
        };
        let v = match expected {
            Some(exp) => {
                let body = crate::checksum::Verified::new(body, exp);
                let (failed, bad) = (body.failed.clone(), body.error());
                opts.late_meta = Some(body.late.clone());
                match self
                    .archive
                    .put(&input.bucket, &input.key, body, opts)
                    .await
                {
                    Err(_) if failed.load(std::sync::atomic::Ordering::SeqCst) => return Err(bad),
                    r => r.s3()?,
                }
            }
            None => self
                .archive
                .put(&input.bucket, &input.key, body, opts)
                .await
                .s3()?,
        };
        let sums = crate::checksum::stored(&v.meta);
        let mut resp = S3Response::new(PutObjectOutput {
            e_tag: Some(crate::etag(&v.etag)),
            version_id: crate::version_id(&v, &b),
            expiration: self.expiration(&b, &v),
            ..Default::default()
        });
        set_checksums!(resp.output, sums);
        let given = sse::CustomerHeaders {
            key_md5: key_md5.as_ref(),
            ..Default::default()
        };
        sse::set_answer!(resp.output, sse::answer(&v.meta, &given));
        ledger_header(&mut resp.headers, &v);
        Ok(resp)
    }

    pub(crate) async fn get_object_op(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let sel = selection(&req, req.input.version_id.as_ref())?;
        sse::refuse_on_read(&req.headers)?;
        let input = &req.input;
        let customer_key = sse::customer_key(sse::customer_headers!(input))?;
        let head = self.archive.head(&input.bucket, &input.key, &sel).s3()?;
        let latest = matches!(sel, VersionSel::Latest);
        check_conditions(
            &head,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let sel = crate::pinned(sel, &head);
        let range = match (input.part_number, &input.range) {
            (Some(_), Some(_)) => {
                return Err(s3s::s3_error!(
                    InvalidRequest,
                    "Cannot specify both Range header and partNumber query parameter"
                ));
            }
            (Some(n), None) => Some(part_range(&head, n)?).filter(|_| head.size > 0),
            (None, r) => r.as_ref().map(byte_range),
        };
        let (v, span, stream) = self
            .archive
            .get_sse_c(
                &input.bucket,
                &input.key,
                &sel,
                range,
                customer_key.as_ref(),
            )
            .await
            .s3()?;
        let b = self.archive.bucket(&input.bucket).s3()?;
        let content_range = range.map(|_| {
            format!(
                "bytes {}-{}/{}",
                span.start,
                span.end.saturating_sub(1),
                v.size
            )
        });
        let h = ResponseHeaders::of(&v).with_overrides(input);
        let sums = whole_object_checksums(&v, input.checksum_mode.as_ref(), range.is_none());
        let mut out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(sync_stream(stream))),
            content_length: Some((span.end - span.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: h.content_type,
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            expires: h.expires,
            e_tag: Some(crate::etag(&v.etag)),
            last_modified: Some(crate::timestamp(v.mtime_ns)),
            metadata: Some(headers::user_meta(&v.meta)),
            version_id: crate::version_id(&v, &b),
            parts_count: parts_count(&v, input.part_number),
            tag_count: headers::tag_count(&v.meta),
            expiration: latest.then(|| self.expiration(&b, &v)).flatten(),
            ..Default::default()
        };
        crate::lock::set_lock_headers!(out, &v.meta);
        sse::set_answer!(out, sse::answer(&v.meta, &sse::customer_headers!(input)));
        set_checksums!(out, sums);
        Ok(S3Response::new(out))
    }

    pub(crate) async fn head_object_op(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let sel = selection(&req, req.input.version_id.as_ref())?;
        sse::refuse_on_read(&req.headers)?;
        let v = self
            .archive
            .head(&req.input.bucket, &req.input.key, &sel)
            .s3()?;
        let i = &req.input;
        let customer_key = sse::customer_key(sse::customer_headers!(i))?;
        self.archive
            .check_customer_key(&i.bucket, &v, customer_key.as_ref())
            .s3()?;
        check_conditions(
            &v,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let (length, content_range) = match i.part_number {
            Some(n) => {
                let ByteRange::From { start, end } = part_range(&v, n)? else {
                    unreachable!("parts are spans")
                };
                let end = end.unwrap_or(v.size.saturating_sub(1));
                (
                    end + 1 - start,
                    (v.size > 0).then(|| format!("bytes {start}-{end}/{}", v.size)),
                )
            }
            None => (v.size, None),
        };
        let h = ResponseHeaders::of(&v);
        let sums = whole_object_checksums(&v, i.checksum_mode.as_ref(), i.part_number.is_none());
        let tags = headers::tag_count(&v.meta);
        let mut resp = S3Response::new(HeadObjectOutput {
            content_length: Some(length as i64),
            content_range,
            content_type: h.content_type,
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            expires: h.expires,
            e_tag: Some(crate::etag(&v.etag)),
            last_modified: Some(crate::timestamp(v.mtime_ns)),
            metadata: Some(headers::user_meta(&v.meta)),
            version_id: crate::version_id(&v, &b),
            accept_ranges: Some("bytes".into()),
            parts_count: parts_count(&v, i.part_number),
            expiration: matches!(sel, VersionSel::Latest)
                .then(|| self.expiration(&b, &v))
                .flatten(),
            ..Default::default()
        });
        crate::lock::set_lock_headers!(resp.output, &v.meta);
        sse::set_answer!(
            resp.output,
            sse::answer(&v.meta, &sse::customer_headers!(i))
        );
        set_checksums!(resp.output, sums);
        if let Some(n) = tags {
            resp.headers.insert("x-amz-tagging-count", n.into());
        }
        Ok(resp)
    }

    /// GetObjectAttributes: what HEAD tells, in one XML answer, plus the parts of a
    /// multipart object (paged by part number).
    pub(crate) async fn get_object_attributes_op(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let i = &req.input;
        let sel = crate::version_sel(&i.version_id);
        let v = self.archive.head(&i.bucket, &i.key, &sel).s3()?;
        let customer_key = sse::customer_key(sse::customer_headers!(i))?;
        self.archive
            .check_customer_key(&i.bucket, &v, customer_key.as_ref())
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        // One header, comma-separated (s3s hands it over as one item).
        let asked = |a: &str| {
            i.object_attributes
                .iter()
                .flat_map(|x| x.as_str().split(','))
                .any(|x| x.trim() == a)
        };
        let sums = crate::checksum::stored(&v.meta);
        let has_sum = sums.checksum_crc32.is_some()
            || sums.checksum_crc32c.is_some()
            || sums.checksum_sha1.is_some()
            || sums.checksum_sha256.is_some()
            || sums.checksum_crc64nvme.is_some();
        let object_parts =
            (asked(ObjectAttributes::OBJECT_PARTS) && !v.parts.is_empty()).then(|| {
                let after = i.part_number_marker.unwrap_or(0).max(0) as usize;
                let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
                let page: Vec<ObjectPart> = v
                    .parts
                    .iter()
                    .enumerate()
                    .skip(after)
                    .take(max)
                    .map(|(n, size)| ObjectPart {
                        part_number: Some(n as i32 + 1),
                        size: Some(*size as i64),
                        ..Default::default()
                    })
                    .collect();
                let last = after + page.len();
                GetObjectAttributesParts {
                    total_parts_count: Some(v.parts.len() as i32),
                    part_number_marker: Some(after as i32),
                    next_part_number_marker: Some(last as i32),
                    max_parts: Some(max as i32),
                    is_truncated: Some(last < v.parts.len()),
                    parts: Some(page),
                }
            });
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: asked(ObjectAttributes::ETAG).then(|| crate::etag(&v.etag)),
            checksum: (asked(ObjectAttributes::CHECKSUM) && has_sum).then_some(sums),
            object_parts,
            object_size: asked(ObjectAttributes::OBJECT_SIZE).then_some(v.size as i64),
            storage_class: asked(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            last_modified: Some(crate::timestamp(v.mtime_ns)),
            version_id: crate::version_id(&v, &b),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_object_op(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let actor = crate::access::actor(req.credentials.as_ref());
        let bypass = self.bypass(
            &req,
            &req.input.bucket,
            req.input.bypass_governance_retention,
        )?;
        let input = req.input;
        let out = match self
            .archive
            .delete_governed(
                &input.bucket,
                &input.key,
                input.version_id.clone(),
                actor,
                bypass,
            )
            .await
        {
            Ok(o) => o,
            // S3 answers 204 for a version that is already gone.
            Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion {
                ..
            })) => {
                return Ok(S3Response::new(DeleteObjectOutput {
                    version_id: input.version_id,
                    ..Default::default()
                }));
            }
            Err(e) => return Err(s3_error(e)),
        };
        let mut resp = S3Response::new(DeleteObjectOutput {
            delete_marker: out.delete_marker.then_some(true),
            version_id: out.version_id,
            ..Default::default()
        });
        if let Some(i) = out.ledger_index {
            resp.headers.insert("x-edgecloud-ledger-index", i.into());
        }
        Ok(resp)
    }
}

impl EdgeS3 {
    pub(crate) async fn delete_objects_op(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let actor = crate::access::actor(req.credentials.as_ref());
        let bypass = self.bypass(
            &req,
            &req.input.bucket,
            req.input.bypass_governance_retention,
        )?;
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3s::s3_error!(
                MalformedXML,
                "DeleteObjects takes at most 1000 keys"
            ));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let owner = self.owns(actor.as_deref(), &i.bucket);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            // Deleting a version destroys history: owners only, as for DeleteObject.
            if o.version_id.is_some() && !owner {
                errors.push(Error {
                    key: Some(o.key),
                    version_id: o.version_id,
                    code: Some("AccessDenied".into()),
                    message: Some("deleting a version needs owner permission".into()),
                });
                continue;
            }
            match self
                .archive
                .delete_governed(
                    &i.bucket,
                    &o.key,
                    o.version_id.clone(),
                    actor.clone(),
                    bypass,
                )
                .await
            {
                Ok(out) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            version_id: o.version_id,
                            delete_marker: out.delete_marker.then_some(true),
                            delete_marker_version_id: if out.delete_marker {
                                out.version_id
                            } else {
                                None
                            },
                        });
                    }
                }
                Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion {
                    ..
                })) if !quiet => {
                    deleted.push(DeletedObject {
                        key: Some(o.key),
                        version_id: o.version_id,
                        ..Default::default()
                    });
                }
                Err(archive::ArchiveError::Catalog(archive::CatalogError::NoSuchVersion {
                    ..
                })) => {}
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
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    pub(crate) async fn copy_object_op(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let (src_bucket, src_key, sel) = crate::copy_source(&i.copy_source)?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let replace_tags = i
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
        if !replace
            && !replace_tags
            && i.acl.is_none()
            && src_bucket == i.bucket
            && src_key == i.key
            && sel == VersionSel::Latest
        {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let src = self.archive.head(src_bucket, src_key, &sel).s3()?;
        if let Some(ETagCondition::ETag(t)) = &i.copy_source_if_match
            && t.value() != src.etag
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "copy source ETag does not match"
            ));
        }
        if let Some(ETagCondition::ETag(t)) = &i.copy_source_if_none_match
            && t.value() == src.etag
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "copy source ETag matches"
            ));
        }
        let modified = (src.mtime_ns / 1_000_000_000) as i64;
        if i.copy_source_if_match.is_none()
            && i.copy_source_if_unmodified_since
                .as_ref()
                .is_some_and(|t| modified > secs(t))
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "the copy source was modified after x-amz-copy-source-if-unmodified-since"
            ));
        }
        if i.copy_source_if_none_match.is_none()
            && i.copy_source_if_modified_since
                .as_ref()
                .is_some_and(|t| modified <= secs(t))
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "the copy source was not modified since x-amz-copy-source-if-modified-since"
            ));
        }
        // As S3: metadata and stored headers come from the source (COPY) or the request
        // (REPLACE); tags likewise with TaggingDirective; the ACL is never copied.
        let mut meta = if replace {
            let stored = stored_headers!(i);
            headers::object_meta(i.metadata.clone(), stored)
        } else {
            src.meta
                .iter()
                .filter(|(k, _)| k.as_str() != headers::TAGGING)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        meta.remove(headers::ACL);
        meta.remove(archive::grants::OBJECT_META);
        meta.remove(headers::TAGGING);
        crate::lock::strip(&mut meta);
        crate::lock::write_meta(
            &mut meta,
            i.object_lock_mode.as_ref(),
            i.object_lock_retain_until_date.as_ref(),
            i.object_lock_legal_hold_status.as_ref(),
        )?;
        let tags = if replace_tags {
            i.tagging.clone()
        } else {
            src.meta.get(headers::TAGGING).cloned()
        };
        if let Some(t) = tags.filter(|t| !t.is_empty()) {
            meta.insert(
                headers::TAGGING.into(),
                headers::encode_tags(&headers::parse_tagging_header(&t)?),
            );
        }
        if let Some(a) = &i.acl {
            meta.insert(
                headers::ACL.into(),
                crate::policy::canned_acl(a.as_str())?.into(),
            );
        }
        let content_type = if replace {
            i.content_type.clone()
        } else {
            src.content_type.clone()
        };
        let actor = crate::access::actor(req.credentials.as_ref());
        self.store_object_grants(&mut meta, Vec::new(), actor.as_deref(), &i.bucket);
        let src_customer_key = sse::customer_key(sse::CustomerHeaders {
            algorithm: i.copy_source_sse_customer_algorithm.as_ref(),
            key: i.copy_source_sse_customer_key.as_ref(),
            key_md5: i.copy_source_sse_customer_key_md5.as_ref(),
        })?;
        let customer_key = sse::customer_key(sse::customer_headers!(i))?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        sse::write_meta(
            &mut meta,
            i.server_side_encryption.as_ref(),
            i.ssekms_key_id.as_ref(),
            customer_key.is_some(),
            &b,
        )?;
        let opts = Some(PutOptions {
            content_type,
            meta,
            actor,
            customer_key,
            ..Default::default()
        });
        let v = self
            .archive
            .copy_sse_c(
                src_bucket,
                src_key,
                &VersionSel::Id(src.version_id.clone()),
                src_customer_key,
                &i.bucket,
                &i.key,
                opts,
                PutCondition::default(),
            )
            .await
            .s3()?;
        let sb = self.archive.bucket(src_bucket).s3()?;
        let mut resp = S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(crate::etag(&v.etag)),
                last_modified: Some(crate::timestamp(v.mtime_ns)),
                ..Default::default()
            }),
            version_id: crate::version_id(&v, &b),
            copy_source_version_id: crate::version_id(&src, &sb),
            ..Default::default()
        });
        sse::set_answer!(
            resp.output,
            sse::answer(&v.meta, &sse::customer_headers!(i))
        );
        ledger_header(&mut resp.headers, &v);
        Ok(resp)
    }
}

//! Multipart uploads: parts stream straight into the archive.

use archive::{PutCondition, PutOptions};
use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::OrS3;

impl EdgeS3 {
    pub(crate) async fn create_multipart_upload_op(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let initiator = crate::access::actor(req.credentials.as_ref());
        let i = req.input;
        let stored = crate::headers::stored_headers!(i);
        let mut meta = crate::headers::object_meta(i.metadata, stored);
        self.store_object_grants(&mut meta, Vec::new(), initiator.as_deref(), &i.bucket);
        if let Some(who) = initiator {
            meta.insert(crate::headers::INITIATOR.into(), who);
        }
        if let Some(t) = &i.tagging {
            meta.insert(
                crate::headers::TAGGING.into(),
                crate::headers::encode_tags(&crate::headers::parse_tagging_header(t)?),
            );
        }
        if let Some(a) = &i.acl {
            meta.insert(
                crate::headers::ACL.into(),
                crate::policy::canned_acl(a.as_str())?.into(),
            );
        }
        crate::lock::write_meta(
            &mut meta,
            i.object_lock_mode.as_ref(),
            i.object_lock_retain_until_date.as_ref(),
            i.object_lock_legal_hold_status.as_ref(),
        )?;
        let customer_key = crate::sse::customer_key(crate::sse::customer_headers!(i))?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        crate::sse::write_meta(
            &mut meta,
            i.server_side_encryption.as_ref(),
            i.ssekms_key_id.as_ref(),
            customer_key.is_some(),
            &b,
        )?;
        let opts = PutOptions {
            content_type: i.content_type.clone(),
            meta,
            customer_key,
            ..Default::default()
        };
        let up = self
            .archive
            .create_multipart(&i.bucket, &i.key, opts)
            .await
            .s3()?;
        let mut out = CreateMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(up.upload_id.clone()),
            ..Default::default()
        };
        crate::sse::set_answer!(
            out,
            crate::sse::answer(&up.meta, &crate::sse::customer_headers!(i))
        );
        Ok(S3Response::new(out))
    }

    pub(crate) async fn upload_part_op(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let expected = crate::checksum::expected(&req.headers, req.trailing_headers.clone())?;
        let i = req.input;
        crate::objects::check_put_size(i.content_length)?;
        self.archive.upload(&i.bucket, &i.key, &i.upload_id).s3()?;
        let body = i
            .body
            .ok_or_else(|| s3s::s3_error!(IncompleteBody, "UploadPart needs a body"))?;
        let body = body.map_err(|e| std::io::Error::other(e.to_string()));
        let md5 = i
            .content_md5
            .as_deref()
            .map(crate::objects::content_md5)
            .transpose()?;
        let n = i.part_number as u32;
        let customer_key = crate::sse::customer_key(crate::sse::customer_headers!(i))?;
        let ck = customer_key.as_ref();
        let (part, sums) = match expected {
            Some(exp) => {
                let body = crate::checksum::Verified::new(body, exp);
                let (failed, bad, late) = (body.failed.clone(), body.error(), body.late.clone());
                match self
                    .archive
                    .upload_part_sse_c(&i.bucket, &i.key, &i.upload_id, n, body, md5, ck)
                    .await
                {
                    Err(_) if failed.load(std::sync::atomic::Ordering::SeqCst) => return Err(bad),
                    r => (
                        r.s3()?,
                        crate::checksum::stored(&late.lock().expect("late metadata lock")),
                    ),
                }
            }
            None => (
                self.archive
                    .upload_part_sse_c(&i.bucket, &i.key, &i.upload_id, n, body, md5, ck)
                    .await
                    .s3()?,
                Checksum::default(),
            ),
        };
        let mut out = UploadPartOutput {
            e_tag: Some(crate::etag(&part.etag)),
            ..Default::default()
        };
        if customer_key.is_some() {
            out.sse_customer_algorithm = Some("AES256".into());
            out.sse_customer_key_md5 = i.sse_customer_key_md5.clone();
        }
        crate::headers::set_checksums!(out, sums);
        Ok(S3Response::new(out))
    }

    pub(crate) async fn complete_multipart_upload_op(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let actor = crate::access::actor(req.credentials.as_ref());
        let i = req.input;
        let parts = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let n = p
                    .part_number
                    .ok_or_else(|| s3s::s3_error!(InvalidPart, "a part has no PartNumber"))?;
                let etag = p.e_tag.map(|t| t.value().to_string()).unwrap_or_default();
                Ok((n as u32, etag))
            })
            .collect::<S3Result<Vec<_>>>()?;
        let sizes: std::collections::HashMap<u32, u64> = self
            .archive
            .list_parts(&i.bucket, &i.key, &i.upload_id)
            .s3()?
            .into_iter()
            .map(|p| (p.number, p.size))
            .collect();
        if parts.iter().filter_map(|(n, _)| sizes.get(n)).sum::<u64>() > crate::objects::MAX_OBJECT
        {
            return Err(s3s::s3_error!(
                EntityTooLarge,
                "an object may be at most 5 TiB"
            ));
        }
        let v = self
            .archive
            .complete_multipart(
                &i.bucket,
                &i.key,
                &i.upload_id,
                parts,
                PutCondition::default(),
                actor,
            )
            .await
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        let mut resp = S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(crate::etag(&v.etag)),
            version_id: crate::version_id(&v, &b),
            ..Default::default()
        });
        let a = crate::sse::answer(&v.meta, &Default::default());
        resp.output.server_side_encryption = a.server_side_encryption;
        resp.output.ssekms_key_id = a.ssekms_key_id;
        crate::objects::ledger_header(&mut resp.headers, &v);
        Ok(resp)
    }

    pub(crate) async fn abort_multipart_upload_op(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        self.archive
            .abort_multipart(&i.bucket, &i.key, &i.upload_id)
            .await
            .s3()?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

impl EdgeS3 {
    pub(crate) async fn list_parts_op(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = i.part_number_marker.unwrap_or(0);
        let all: Vec<_> = self
            .archive
            .list_parts(&i.bucket, &i.key, &i.upload_id)
            .s3()?
            .into_iter()
            .filter(|p| p.number as i32 > marker)
            .collect();
        let truncated = all.len() > max;
        let parts: Vec<Part> = all
            .iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(crate::etag(&p.etag)),
                last_modified: Some(crate::timestamp(p.mtime_ns)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_multipart_uploads_op(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let all: Vec<_> = self
            .archive
            .list_uploads(&i.bucket)
            .s3()?
            .into_iter()
            .filter(|u| u.key.starts_with(&prefix))
            .collect();
        let truncated = all.len() > max;
        let uploads: Vec<MultipartUpload> = all
            .iter()
            .take(max)
            .map(|u| {
                // Who started it owns it (uploads from before this was kept name no one).
                let who = u.meta.get(crate::headers::INITIATOR);
                MultipartUpload {
                    key: Some(u.key.clone()),
                    upload_id: Some(u.upload_id.clone()),
                    initiated: Some(crate::timestamp(u.created_ns)),
                    initiator: who.map(|id| Initiator {
                        id: Some(id.clone()),
                        display_name: Some(self.display_name(id)),
                    }),
                    owner: who.map(|id| Owner {
                        id: Some(id.clone()),
                        display_name: Some(self.display_name(id)),
                    }),
                    ..Default::default()
                }
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated {
                uploads.last().and_then(|u| u.key.clone())
            } else {
                None
            },
            next_upload_id_marker: if truncated {
                uploads.last().and_then(|u| u.upload_id.clone())
            } else {
                None
            },
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

impl EdgeS3 {
    /// UploadPartCopy: a (range of a) stored object becomes a part; the bytes stream
    /// from the source through the archive, re-chunked under the target bucket's key.
    pub(crate) async fn upload_part_copy_op(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        self.archive.upload(&i.bucket, &i.key, &i.upload_id).s3()?;
        let (src_bucket, src_key, sel) = crate::copy_source(&i.copy_source)?;
        let range = match &i.copy_source_range {
            Some(r) => {
                let r = archive::ByteRange::parse_header(r)
                    .map_err(|_| s3s::s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
                if matches!(
                    r,
                    archive::ByteRange::From { end: None, .. } | archive::ByteRange::Suffix(_)
                ) {
                    return Err(s3s::s3_error!(
                        InvalidArgument,
                        "x-amz-copy-source-range must be bytes=first-last"
                    ));
                }
                Some(r)
            }
            None => None,
        };
        // Unlike a GET, a copy range must lie inside the source.
        let head = self.archive.head(src_bucket, src_key, &sel).s3()?;
        if let Some(archive::ByteRange::From {
            start,
            end: Some(end),
        }) = range
            && (end >= head.size || start > end)
        {
            let mut e = s3s::s3_error!(
                InvalidRange,
                "x-amz-copy-source-range bytes={start}-{end} is outside the {}-byte source",
                head.size
            );
            e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
            return Err(e);
        }
        let sel = crate::pinned(sel, &head);
        let (src, _, stream) = self
            .archive
            .get(src_bucket, src_key, &sel, range)
            .await
            .s3()?;
        if let Some(ETagCondition::ETag(t)) = &i.copy_source_if_match
            && t.value() != src.etag
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "copy source ETag does not match"
            ));
        }
        let body = stream.map_err(|e| std::io::Error::other(e.to_string()));
        let part = self
            .archive
            .upload_part(
                &i.bucket,
                &i.key,
                &i.upload_id,
                i.part_number as u32,
                body,
                None,
            )
            .await
            .s3()?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(crate::etag(&part.etag)),
                last_modified: Some(crate::timestamp(part.mtime_ns)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

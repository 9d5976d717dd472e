//! Object and bucket tags. Object tags live in the version's metadata (so they follow
//! the version through copies and deletes); bucket tags in the bucket's settings.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::OrS3;
use crate::headers::{TAGGING, decode_tags, encode_tags, validate_tags};

const BUCKET_TAGGING: &str = "tagging";

impl EdgeS3 {
    pub(crate) async fn get_object_tagging_op(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let i = req.input;
        let v = self
            .archive
            .head(&i.bucket, &i.key, &crate::version_sel(&i.version_id))
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: v
                .meta
                .get(TAGGING)
                .map(|s| decode_tags(s))
                .unwrap_or_default(),
            version_id: crate::version_id(&v, &b),
        }))
    }

    pub(crate) async fn put_object_tagging_op(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let i = req.input;
        validate_tags(&i.tagging.tag_set, 10)?;
        let encoded = encode_tags(&i.tagging.tag_set);
        let v = self
            .archive
            .update_meta(
                &i.bucket,
                &i.key,
                crate::version_sel(&i.version_id),
                move |m| {
                    m.insert(TAGGING.into(), encoded.clone());
                },
            )
            .await
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: crate::version_id(&v, &b),
        }))
    }

    pub(crate) async fn delete_object_tagging_op(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let i = req.input;
        let v = self
            .archive
            .update_meta(&i.bucket, &i.key, crate::version_sel(&i.version_id), |m| {
                m.remove(TAGGING);
            })
            .await
            .s3()?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: crate::version_id(&v, &b),
        }))
    }

    pub(crate) async fn get_bucket_tagging_op(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        match b.settings.get(BUCKET_TAGGING) {
            Some(s) => Ok(S3Response::new(GetBucketTaggingOutput {
                tag_set: decode_tags(s),
            })),
            None => Err(s3s::s3_error!(NoSuchTagSet, "The TagSet does not exist")),
        }
    }

    pub(crate) async fn put_bucket_tagging_op(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let i = req.input;
        validate_tags(&i.tagging.tag_set, 50)?;
        let encoded = encode_tags(&i.tagging.tag_set);
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(BUCKET_TAGGING.into(), encoded.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketTaggingOutput {}))
    }

    pub(crate) async fn delete_bucket_tagging_op(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(BUCKET_TAGGING);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketTaggingOutput {}))
    }
}

//! Bucket operations.

use archive::Versioning;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::OrS3;

/// Bucket setting: the LocationConstraint the bucket was created with.
const LOCATION: &str = "location";

impl EdgeS3 {
    pub(crate) async fn list_buckets_op(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        let buckets = self
            .archive
            .buckets()
            .s3()?
            .into_iter()
            .filter(|b| self.can_list(key, b))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(crate::timestamp(b.created_ns)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    pub(crate) async fn create_bucket_op(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        archive::validate_bucket_name(&req.input.bucket)
            .map_err(|e| s3s::s3_error!(InvalidBucketName, "{e}"))?;
        // S3 buckets start unversioned; the history of overwrites is still kept for
        // as-of reads (see docs/architecture.md).
        let acl = req
            .input
            .acl
            .as_ref()
            .map(|a| crate::policy::bucket_canned_acl(a.as_str()))
            .transpose()?;
        // The key that creates a bucket owns it (the root key owns everything anyway);
        // owner and ACL are set in the same commit as the bucket.
        let caller = req.credentials.as_ref().map(|c| c.access_key.clone());
        let owner = caller.clone().filter(|k| *k != self.root.access_key);
        let mut settings = std::collections::BTreeMap::new();
        if let Some(o) = owner {
            settings.insert(crate::policy::OWNER.to_string(), o);
        }
        if let Some(a) = acl {
            settings.insert(crate::policy::ACL.to_string(), a.to_string());
        }
        let mut headers = crate::policy::grant_headers!(req.input);
        headers.write = req.input.grant_write.as_ref();
        let granted = self.header_grants(&headers)?;
        if !granted.is_empty() {
            settings.insert(
                crate::policy::ACL.to_string(),
                crate::policy::canned_of(&granted).to_string(),
            );
            settings.insert(
                archive::grants::BUCKET_SETTING.to_string(),
                archive::grants::store(&granted),
            );
        }
        // The region a client names is kept and answered by GetBucketLocation.
        if let Some(l) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .filter(|l| !l.as_str().is_empty())
        {
            settings.insert(LOCATION.to_string(), l.as_str().to_string());
        }
        // Object lock needs versioning, for good (S3 turns it on with the lock).
        let locked = req.input.object_lock_enabled_for_bucket == Some(true);
        if locked {
            let (k, v) = crate::lock::enabled_setting();
            settings.insert(k, v);
        }
        let versioning = if locked {
            Versioning::Enabled
        } else {
            Versioning::Unversioned
        };
        match self
            .archive
            .create_bucket_as(&req.input.bucket, None, versioning, settings, caller)
            .await
        {
            Ok(_) => {}
            // As S3 in us-east-1: creating a bucket you already own succeeds and changes
            // nothing. Someone else's bucket is BucketAlreadyExists.
            Err(archive::ArchiveError::Catalog(archive::CatalogError::BucketExists(_))) => {
                let b = self.archive.bucket(&req.input.bucket).s3()?;
                let caller = req.credentials.as_ref().map(|c| c.access_key.as_str());
                let owner = b.settings.get(crate::policy::OWNER).map(String::as_str);
                let root = caller == Some(self.root.access_key.as_str());
                return if root && owner.is_none() || caller.is_some() && owner == caller {
                    Ok(S3Response::new(CreateBucketOutput {
                        location: Some(format!("/{}", req.input.bucket)),
                        ..Default::default()
                    }))
                } else {
                    Err(s3s::s3_error!(
                        BucketAlreadyExists,
                        "The requested bucket name is not available"
                    ))
                };
            }
            Err(e) => return Err(crate::error::s3_error(e)),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_bucket_op(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let actor = crate::access::actor(req.credentials.as_ref());
        self.archive
            .delete_bucket_as(&req.input.bucket, actor)
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    pub(crate) async fn head_bucket_op(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.archive.bucket(&req.input.bucket).s3()?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(crate) async fn get_bucket_location_op(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: b
                .settings
                .get(LOCATION)
                .map(|l| BucketLocationConstraint::from(l.clone())),
        }))
    }

    pub(crate) async fn get_bucket_versioning_op(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let status = match b.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            ..Default::default()
        }))
    }

    pub(crate) async fn put_bucket_versioning_op(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let v = match req
            .input
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => {
                return Err(s3s::s3_error!(
                    MalformedXML,
                    "versioning status must be Enabled or Suspended"
                ));
            }
        };
        self.archive
            .set_versioning(&req.input.bucket, v)
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }
}

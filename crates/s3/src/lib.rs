//! The S3 gateway (port 9400): S3's protocol on top of `archive::Archive`.
//!
//! `s3s` does the protocol work (routing, XML, SigV4 in headers and presigned URLs,
//! aws-chunked bodies); this crate maps each S3 operation onto the archive. It never
//! touches shards or the catalog. One file per family of operations.

mod access;
mod buckets;
mod checksum;
mod conditions;
mod cors;
mod error;
mod headers;
mod lifecycle;
mod list;
mod lock;
mod multipart;
mod objects;
mod ownership;
mod policy;
mod presigned;
mod request_id;
mod sig_v2;
pub mod sign;
mod sse;
mod tagging;

use archive::Archive;
use s3s::service::S3ServiceBuilder;

pub use access::RootKey;
pub use policy::{POLICY as POLICY_SETTING, check_policy};

/// The S3 operations, served from one archive.
pub struct EdgeS3 {
    archive: Archive,
    root: RootKey,
    lifecycle_day: std::time::Duration,
}

/// How the S3 gateway answers.
pub struct GatewayConfig {
    /// The key configured at start (env or DATA/s3-credentials): may do everything.
    pub root: RootKey,
    /// Base domain for virtual-hosted-style requests (`bucket.DOMAIN/key`); path style
    /// always works.
    pub domain: Option<String>,
    /// The length of a lifecycle day (shortened only by tests), for the expiry dates
    /// answered in `x-amz-expiration`.
    pub lifecycle_day: std::time::Duration,
}

/// The S3 gateway as an HTTP router: CORS in front, then s3s (SigV4, routing, XML)
/// with our access checks, then the operations below.
pub fn router(archive: Archive, cfg: GatewayConfig) -> Result<axum::Router, archive::ArchiveError> {
    let mut b = S3ServiceBuilder::new(EdgeS3 {
        archive: archive.clone(),
        root: cfg.root.clone(),
        lifecycle_day: cfg.lifecycle_day,
    });
    b.set_auth(access::EdgeAuth {
        archive: archive.clone(),
        root: cfg.root.clone(),
    });
    b.set_access(access::EdgeAccess {
        archive: archive.clone(),
        root: cfg.root,
    });
    if let Some(d) = &cfg.domain {
        if d.is_empty() || d.contains([':', '/']) {
            return Err(archive::ArchiveError::Invalid(format!(
                "--domain {d:?} must be a bare domain name like s3.example.com"
            )));
        }
        b.set_host(DomainHost {
            domain: d.to_ascii_lowercase(),
        });
    }
    let v2_domain = cfg.domain.as_ref().map(|d| DomainHost {
        domain: d.to_ascii_lowercase(),
    });
    // s3s turns every S3 failure into an S3 error response; what reaches this handler
    // is an internal fault, answered with a plain 500.
    let svc = axum::error_handling::HandleError::new(b.build(), |e: s3s::HttpError| async move {
        tracing::error!(error = ?e, "S3 service fault");
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
        )
    });
    let domain = cfg.domain;
    Ok(axum::Router::new()
        .fallback_service(svc)
        .layer(axum::middleware::from_fn(move |req, next| {
            sig_v2::middleware(v2_domain.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(presigned::middleware))
        .layer(axum::middleware::from_fn(move |req, next| {
            cors::middleware(archive.clone(), domain.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(request_id::middleware)))
}

/// Virtual-hosted style under one domain: `bucket.DOMAIN[:port]` names a bucket; any
/// other host (the bare domain, an IP, localhost) means path style. s3s's own
/// `SingleDomain` does not expect a port in the Host header.
#[derive(Clone)]
pub(crate) struct DomainHost {
    domain: String,
}

impl s3s::host::S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let vh = s3s::host::VirtualHost::new(self.domain.as_str());
        match name.len().checked_sub(self.domain.len() + 1) {
            Some(cut)
                if name[cut + 1..].eq_ignore_ascii_case(&self.domain)
                    && name.as_bytes()[cut] == b'.' =>
            {
                Ok(vh.with_bucket(&name[..cut]))
            }
            _ => Ok(vh),
        }
    }
}

pub(crate) fn timestamp(ns: u64) -> s3s::dto::Timestamp {
    s3s::dto::Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

/// A `versionId` parameter as a selection: that version, or the latest.
pub(crate) fn version_sel(version_id: &Option<String>) -> archive::VersionSel {
    version_id
        .clone()
        .map(archive::VersionSel::Id)
        .unwrap_or(archive::VersionSel::Latest)
}

/// The bucket, key and version an `x-amz-copy-source` names (CopyObject, UploadPartCopy).
pub(crate) fn copy_source(
    cs: &s3s::dto::CopySource,
) -> s3s::S3Result<(&str, &str, archive::VersionSel)> {
    let s3s::dto::CopySource::Bucket {
        bucket,
        key,
        version_id,
    } = cs
    else {
        return Err(s3s::s3_error!(
            NotImplemented,
            "access point copy sources are not supported"
        ));
    };
    let sel = match version_id {
        Some(v) => archive::VersionSel::Id(v.to_string()),
        None => archive::VersionSel::Latest,
    };
    Ok((bucket, key, sel))
}

/// The selection that reads exactly `head`, the version conditions were checked
/// against ("null" ids are not unique over time: keep the original selection for those).
pub(crate) fn pinned(sel: archive::VersionSel, head: &archive::Version) -> archive::VersionSel {
    if head.version_id == "null" {
        sel
    } else {
        archive::VersionSel::Id(head.version_id.clone())
    }
}

pub(crate) fn etag(v: &str) -> s3s::dto::ETag {
    s3s::dto::ETag::Strong(v.to_string())
}

/// S3 reports a version id only where versions exist: never for objects of a bucket
/// whose versioning was never enabled, and not for the null version written while
/// versioning is suspended.
pub(crate) fn version_id(v: &archive::Version, b: &archive::Bucket) -> Option<String> {
    match b.versioning {
        archive::Versioning::Unversioned => None,
        archive::Versioning::Suspended if v.version_id == "null" => None,
        _ => Some(v.version_id.clone()),
    }
}

#[async_trait::async_trait]
impl s3s::S3 for EdgeS3 {
    async fn list_buckets(
        &self,
        req: s3s::S3Request<s3s::dto::ListBucketsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListBucketsOutput>> {
        self.list_buckets_op(req).await
    }
    async fn create_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::CreateBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateBucketOutput>> {
        self.create_bucket_op(req).await
    }
    async fn delete_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketOutput>> {
        self.delete_bucket_op(req).await
    }
    async fn head_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::HeadBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadBucketOutput>> {
        self.head_bucket_op(req).await
    }
    async fn get_bucket_location(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketLocationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketLocationOutput>> {
        self.get_bucket_location_op(req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketVersioningInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketVersioningOutput>> {
        self.get_bucket_versioning_op(req).await
    }
    async fn put_bucket_versioning(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketVersioningInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketVersioningOutput>> {
        self.put_bucket_versioning_op(req).await
    }
    async fn put_object(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        self.put_object_op(req).await
    }
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.get_object_op(req).await
    }
    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.head_object_op(req).await
    }
    async fn get_object_attributes(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectAttributesInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectAttributesOutput>> {
        self.get_object_attributes_op(req).await
    }
    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.delete_object_op(req).await
    }
    async fn list_objects(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsOutput>> {
        self.list_objects_op(req).await
    }
    async fn list_object_versions(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectVersionsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectVersionsOutput>> {
        self.list_object_versions_op(req).await
    }
    async fn delete_objects(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.delete_objects_op(req).await
    }
    async fn copy_object(
        &self,
        req: s3s::S3Request<s3s::dto::CopyObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CopyObjectOutput>> {
        self.copy_object_op(req).await
    }
    async fn upload_part_copy(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartCopyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartCopyOutput>> {
        self.upload_part_copy_op(req).await
    }
    async fn list_parts(
        &self,
        req: s3s::S3Request<s3s::dto::ListPartsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListPartsOutput>> {
        self.list_parts_op(req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: s3s::S3Request<s3s::dto::ListMultipartUploadsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListMultipartUploadsOutput>> {
        self.list_multipart_uploads_op(req).await
    }
    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.list_objects_v2_op(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        self.create_multipart_upload_op(req).await
    }
    async fn upload_part(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartOutput>> {
        self.upload_part_op(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        self.complete_multipart_upload_op(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        self.abort_multipart_upload_op(req).await
    }
    async fn get_object_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectTaggingOutput>> {
        self.get_object_tagging_op(req).await
    }
    async fn put_object_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectTaggingOutput>> {
        self.put_object_tagging_op(req).await
    }
    async fn delete_object_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectTaggingOutput>> {
        self.delete_object_tagging_op(req).await
    }
    async fn get_bucket_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketTaggingOutput>> {
        self.get_bucket_tagging_op(req).await
    }
    async fn put_bucket_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketTaggingOutput>> {
        self.put_bucket_tagging_op(req).await
    }
    async fn delete_bucket_tagging(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketTaggingInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketTaggingOutput>> {
        self.delete_bucket_tagging_op(req).await
    }
    async fn get_bucket_cors(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketCorsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketCorsOutput>> {
        self.get_bucket_cors_op(req).await
    }
    async fn put_bucket_cors(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketCorsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketCorsOutput>> {
        self.put_bucket_cors_op(req).await
    }
    async fn delete_bucket_cors(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketCorsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketCorsOutput>> {
        self.delete_bucket_cors_op(req).await
    }
    async fn get_bucket_policy(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketPolicyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketPolicyOutput>> {
        self.get_bucket_policy_op(req).await
    }
    async fn put_bucket_policy(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketPolicyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketPolicyOutput>> {
        self.put_bucket_policy_op(req).await
    }
    async fn delete_bucket_policy(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketPolicyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketPolicyOutput>> {
        self.delete_bucket_policy_op(req).await
    }
    async fn get_bucket_acl(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketAclInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketAclOutput>> {
        self.get_bucket_acl_op(req).await
    }
    async fn put_bucket_acl(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketAclInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketAclOutput>> {
        self.put_bucket_acl_op(req).await
    }
    async fn get_object_acl(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectAclInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectAclOutput>> {
        self.get_object_acl_op(req).await
    }
    async fn put_object_acl(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectAclInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectAclOutput>> {
        self.put_object_acl_op(req).await
    }
    async fn put_object_lock_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectLockConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectLockConfigurationOutput>> {
        self.put_object_lock_configuration_op(req).await
    }
    async fn get_object_lock_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectLockConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectLockConfigurationOutput>> {
        self.get_object_lock_configuration_op(req).await
    }
    async fn put_object_retention(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectRetentionInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectRetentionOutput>> {
        self.put_object_retention_op(req).await
    }
    async fn get_object_retention(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectRetentionInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectRetentionOutput>> {
        self.get_object_retention_op(req).await
    }
    async fn put_object_legal_hold(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectLegalHoldInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectLegalHoldOutput>> {
        self.put_object_legal_hold_op(req).await
    }
    async fn get_object_legal_hold(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectLegalHoldInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectLegalHoldOutput>> {
        self.get_object_legal_hold_op(req).await
    }
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketLifecycleConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketLifecycleConfigurationOutput>> {
        self.put_bucket_lifecycle_configuration_op(req).await
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketLifecycleConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketLifecycleConfigurationOutput>> {
        self.get_bucket_lifecycle_configuration_op(req).await
    }
    async fn delete_bucket_lifecycle(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketLifecycleInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketLifecycleOutput>> {
        self.delete_bucket_lifecycle_op(req).await
    }
    async fn put_bucket_encryption(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketEncryptionInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketEncryptionOutput>> {
        self.put_bucket_encryption_op(req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketEncryptionInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketEncryptionOutput>> {
        self.get_bucket_encryption_op(req).await
    }
    async fn delete_bucket_encryption(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketEncryptionInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketEncryptionOutput>> {
        self.delete_bucket_encryption_op(req).await
    }
    async fn put_bucket_ownership_controls(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketOwnershipControlsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketOwnershipControlsOutput>> {
        self.put_bucket_ownership_controls_op(req).await
    }
    async fn get_bucket_ownership_controls(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketOwnershipControlsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketOwnershipControlsOutput>> {
        self.get_bucket_ownership_controls_op(req).await
    }
    async fn delete_bucket_ownership_controls(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketOwnershipControlsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketOwnershipControlsOutput>> {
        self.delete_bucket_ownership_controls_op(req).await
    }
    async fn put_public_access_block(
        &self,
        req: s3s::S3Request<s3s::dto::PutPublicAccessBlockInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutPublicAccessBlockOutput>> {
        self.put_public_access_block_op(req).await
    }
    async fn get_bucket_policy_status(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketPolicyStatusInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketPolicyStatusOutput>> {
        self.get_bucket_policy_status_op(req).await
    }
    async fn get_public_access_block(
        &self,
        req: s3s::S3Request<s3s::dto::GetPublicAccessBlockInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetPublicAccessBlockOutput>> {
        self.get_public_access_block_op(req).await
    }
    async fn delete_public_access_block(
        &self,
        req: s3s::S3Request<s3s::dto::DeletePublicAccessBlockInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeletePublicAccessBlockOutput>> {
        self.delete_public_access_block_op(req).await
    }
}

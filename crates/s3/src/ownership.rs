//! Bucket ownership controls and the public access block: the guards S3 puts around
//! ACLs and public policies. The checks that read them live where ACLs and policies are
//! evaluated (`archive::grants::acls_apply`, `policy.rs`); this file stores them and
//! refuses the writes they block.

use archive::grants::{self, OWNER_ENFORCED, OWNERSHIP_SETTING, PUBLIC_ACCESS_BLOCK_SETTING};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::EdgeS3;
use crate::error::OrS3;

fn not_found(code: &'static str, msg: &'static str) -> s3s::S3Error {
    let mut e = s3s::S3Error::with_message(s3s::S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

/// Whether a canned ACL makes anything public.
fn canned_is_public(acl: &str) -> bool {
    matches!(
        acl,
        "public-read" | "public-read-write" | "authenticated-read"
    )
}

/// Refuses an ACL the bucket's guards block: any but private when ACLs are off
/// (BucketOwnerEnforced; S3 still takes bucket-owner-full-control there, which says what
/// holds anyway), a public one under BlockPublicAcls.
pub(crate) fn check_acl_write(
    b: &archive::Bucket,
    canned: &str,
    granted: &[grants::Grant],
) -> S3Result<()> {
    let enforced = b.settings.get(OWNERSHIP_SETTING).map(String::as_str) == Some(OWNER_ENFORCED);
    let says_nothing = matches!(canned, "private" | "bucket-owner-full-control");
    if enforced && (!says_nothing || !granted.is_empty()) {
        return Err(s3_error!(
            AccessControlListNotSupported,
            "The bucket does not allow ACLs (object ownership is BucketOwnerEnforced)"
        ));
    }
    if grants::public_access_block(b).block_public_acls
        && (canned_is_public(canned) || grants::any_public(granted))
    {
        return Err(s3_error!(
            AccessDenied,
            "the bucket's public access block refuses public ACLs (BlockPublicAcls)"
        ));
    }
    Ok(())
}

/// Refuses a public bucket policy under BlockPublicPolicy.
pub(crate) fn check_policy_write(b: &archive::Bucket, policy: &str) -> S3Result<()> {
    if grants::public_access_block(b).block_public_policy && crate::policy::is_public(policy) {
        return Err(s3_error!(
            AccessDenied,
            "the bucket's public access block refuses public policies (BlockPublicPolicy)"
        ));
    }
    Ok(())
}

impl EdgeS3 {
    pub(crate) async fn put_bucket_ownership_controls_op(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        let i = req.input;
        let [rule] = i.ownership_controls.rules.as_slice() else {
            return Err(s3_error!(
                MalformedXML,
                "OwnershipControls takes exactly one Rule"
            ));
        };
        let value = rule.object_ownership.as_str().to_string();
        if !matches!(
            value.as_str(),
            ObjectOwnership::BUCKET_OWNER_ENFORCED
                | ObjectOwnership::BUCKET_OWNER_PREFERRED
                | ObjectOwnership::OBJECT_WRITER
        ) {
            return Err(s3_error!(
                MalformedXML,
                "ObjectOwnership is BucketOwnerEnforced, BucketOwnerPreferred or ObjectWriter"
            ));
        }
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(OWNERSHIP_SETTING.into(), value.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketOwnershipControlsOutput::default()))
    }

    pub(crate) async fn get_bucket_ownership_controls_op(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let o = b.settings.get(OWNERSHIP_SETTING).ok_or_else(|| {
            s3_error!(
                OwnershipControlsNotFoundError,
                "The bucket ownership controls were not found"
            )
        })?;
        Ok(S3Response::new(GetBucketOwnershipControlsOutput {
            ownership_controls: Some(OwnershipControls {
                rules: vec![OwnershipControlsRule {
                    object_ownership: ObjectOwnership::from(o.clone()),
                }],
            }),
        }))
    }

    pub(crate) async fn delete_bucket_ownership_controls_op(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(OWNERSHIP_SETTING);
            })
            .await
            .s3()?;
        Ok(S3Response::new(
            DeleteBucketOwnershipControlsOutput::default(),
        ))
    }

    pub(crate) async fn put_public_access_block_op(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let i = req.input;
        let c = i.public_access_block_configuration;
        let block = grants::PublicAccessBlock {
            block_public_acls: c.block_public_acls.unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
            block_public_policy: c.block_public_policy.unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
        };
        let value = serde_json::to_string(&block).expect("settings serialize");
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(PUBLIC_ACCESS_BLOCK_SETTING.into(), value.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
    }

    pub(crate) async fn get_public_access_block_op(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        if !b.settings.contains_key(PUBLIC_ACCESS_BLOCK_SETTING) {
            return Err(not_found(
                "NoSuchPublicAccessBlockConfiguration",
                "The public access block configuration was not found",
            ));
        }
        let p = grants::public_access_block(&b);
        Ok(S3Response::new(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: Some(p.block_public_acls),
                ignore_public_acls: Some(p.ignore_public_acls),
                block_public_policy: Some(p.block_public_policy),
                restrict_public_buckets: Some(p.restrict_public_buckets),
            }),
        }))
    }

    /// GetBucketPolicyStatus: public when its policy allows anything to everyone
    /// (`policy::is_public`) or its ACL gives anything to a group, as far as the public
    /// access block lets them count.
    pub(crate) async fn get_bucket_policy_status_op(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let block = grants::public_access_block(&b);
        let by_policy = !block.restrict_public_buckets
            && b.settings
                .get(crate::policy::POLICY)
                .is_some_and(|p| crate::policy::is_public(p));
        let by_acl = grants::acls_apply(&b).public
            && b.settings
                .get(crate::policy::ACL)
                .is_some_and(|a| canned_is_public(a));
        Ok(S3Response::new(GetBucketPolicyStatusOutput {
            policy_status: Some(PolicyStatus {
                is_public: Some(by_policy || by_acl),
            }),
        }))
    }

    pub(crate) async fn delete_public_access_block_op(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(PUBLIC_ACCESS_BLOCK_SETTING);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeletePublicAccessBlockOutput::default()))
    }
}

//! Sharing beyond a key's own permissions (`access.rs`): canned ACLs (on buckets:
//! anyone may list; on objects: anyone may read) and bucket policies whose statements
//! name principal `*` or access keys. Public data is public to other keys too, as in S3;
//! anonymous clients only ever get reads. An explicit Deny in a policy wins over
//! everything but the root key. ACLs beyond the canned ones are not supported.

use archive::Bucket;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use serde_json::Value;

use crate::EdgeS3;
use crate::error::OrS3;

/// Bucket settings keys.
pub(crate) use archive::settings::{ACL, OWNER};
/// The bucket setting that holds the bucket policy (JSON text).
pub const POLICY: &str = "policy";

/// The IAM action an S3 operation is checked against in bucket policies.
fn action(op: &str) -> String {
    let a = match op {
        "HeadObject" => "GetObject",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListParts" => "ListMultipartUploadParts",
        "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "CopyObject" => "PutObject",
        "DeleteObjects" => "DeleteObject",
        other => other,
    };
    format!("s3:{a}")
}

/// Actions anonymous clients may ever be given: reads only.
fn is_read(action: &str) -> bool {
    matches!(
        action,
        "s3:GetObject"
            | "s3:ListBucket"
            | "s3:ListBucketVersions"
            | "s3:GetObjectTagging"
            | "s3:GetBucketLocation"
            | "s3:GetObjectAcl"
            | "s3:GetBucketAcl"
    )
}

fn public(acl: Option<&String>) -> bool {
    acl.is_some_and(|a| a == "public-read" || a == "public-read-write")
}

/// What the bucket's ACLs say about `op` for everyone: a public bucket may be listed,
/// a public object read.
pub(crate) fn public_by_acl(b: &Bucket, op: &str, object_acl: Option<&String>) -> bool {
    match action(op).as_str() {
        "s3:GetObject" | "s3:GetObjectTagging" => public(object_acl),
        "s3:ListBucket" | "s3:ListBucketVersions" | "s3:GetBucketLocation" => {
            public(b.settings.get(ACL))
        }
        _ => false,
    }
}

/// What the bucket policy says about `op` on `key` for `principal` (an access key, or
/// None for anonymous): Some(true) allowed, Some(false) explicitly denied, None silent.
/// Principals: `*` (everyone) or access keys, as `"AWS": "KEY"` or a list of them.
pub(crate) fn policy_decision(
    b: &Bucket,
    op: &str,
    key: Option<&str>,
    principal: Option<&str>,
) -> Option<bool> {
    let policy = b
        .settings
        .get(POLICY)
        .and_then(|p| serde_json::from_str::<Value>(p).ok())?;
    let action = action(op).to_ascii_lowercase();
    let resource = match key {
        Some(k) if !action.starts_with("s3:listbucket") => format!("arn:aws:s3:::{}/{k}", b.name),
        _ => format!("arn:aws:s3:::{}", b.name),
    };
    let names = |v: &Value| {
        strings(v)
            .iter()
            .any(|s| s == "*" || Some(s.as_str()) == principal)
    };
    let mut decision = None;
    for st in statements(&policy) {
        let who = match st.get("Principal") {
            Some(Value::String(s)) => s == "*",
            Some(Value::Object(m)) => m.get("AWS").is_some_and(names),
            _ => false,
        };
        let matches =
            who && st.get("Action").is_some_and(|a| {
                strings(a)
                    .iter()
                    .any(|p| glob(&p.to_ascii_lowercase(), &action))
            }) && st
                .get("Resource")
                .is_some_and(|r| strings(r).iter().any(|p| glob(p, &resource)));
        match st.get("Effect").and_then(Value::as_str) {
            Some("Deny") if matches => return Some(false),
            Some("Allow") if matches => decision = Some(true),
            _ => {}
        }
    }
    decision
}

/// Anonymous requests: reads that an ACL or the policy make public, never writes.
pub(crate) fn allows_anonymous(
    b: &Bucket,
    op: &str,
    key: Option<&str>,
    object_acl: Option<&String>,
) -> bool {
    if !is_read(&action(op)) {
        return false;
    }
    match policy_decision(b, op, key, None) {
        Some(d) => d,
        None => public_by_acl(b, op, object_acl),
    }
}

fn statements(policy: &Value) -> Vec<&Value> {
    match policy.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// `*` matches any run of characters, `?` any one (IAM's wildcards).
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Checks a bucket policy before it is stored: JSON with at least one statement carrying
/// Effect (Allow or Deny), Action and Resource. Err says what is wrong.
pub fn check_policy(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("policy is not JSON: {e}"))?;
    let sts = statements(&v);
    if sts.is_empty() {
        return Err("policy has no Statement".into());
    }
    for st in sts {
        let effect = st.get("Effect").and_then(Value::as_str);
        if !matches!(effect, Some("Allow" | "Deny"))
            || st.get("Action").is_none()
            || st.get("Resource").is_none()
        {
            return Err("every statement needs Effect (Allow or Deny), Action and Resource".into());
        }
    }
    Ok(())
}

fn validate_policy(text: &str) -> S3Result<()> {
    check_policy(text).map_err(|e| s3s::s3_error!(MalformedPolicy, "{e}"))
}

pub(crate) fn owner() -> Owner {
    Owner {
        display_name: Some("edgecloud".into()),
        id: Some("edgecloud".into()),
    }
}

fn full_control() -> Grant {
    Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::CANONICAL_USER),
            id: Some("edgecloud".into()),
            display_name: Some("edgecloud".into()),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }
}

fn all_users_read() -> Grant {
    Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::GROUP),
            uri: Some("http://acs.amazonaws.com/groups/global/AllUsers".into()),
            id: None,
            display_name: None,
            email_address: None,
        }),
        permission: Some(Permission::from_static(Permission::READ)),
    }
}

/// The canned ACLs we keep. `public-read-write` gives anonymous clients reads only:
/// anonymous writes are never allowed. `authenticated-read` lets every access key read.
pub(crate) fn canned_acl(acl: &str) -> S3Result<&'static str> {
    match acl {
        "private" | "bucket-owner-full-control" | "bucket-owner-read" => Ok("private"),
        "public-read" => Ok("public-read"),
        "public-read-write" => Ok("public-read-write"),
        "authenticated-read" => Ok("authenticated-read"),
        _ => Err(s3s::s3_error!(InvalidArgument, "unknown canned ACL {acl}")),
    }
}

/// The canned ACL a PutBucketAcl / PutObjectAcl asks for; grants are refused.
fn requested_acl(canned: Option<&str>, has_grants: bool) -> S3Result<&'static str> {
    match (canned, has_grants) {
        (Some(a), _) => canned_acl(a),
        (None, true) => Err(s3s::s3_error!(
            NotImplemented,
            "ACL grants are not supported; use a canned ACL or a bucket policy"
        )),
        (None, false) => Err(s3s::s3_error!(
            MissingSecurityHeader,
            "give a canned ACL (x-amz-acl)"
        )),
    }
}

/// The grants S3 would show for a canned ACL.
fn grants(acl: Option<&String>) -> Vec<Grant> {
    let mut g = vec![full_control()];
    if public(acl) {
        g.push(all_users_read());
    }
    g
}

impl EdgeS3 {
    pub(crate) async fn get_bucket_policy_op(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        match b.settings.get(POLICY) {
            Some(p) => Ok(S3Response::new(GetBucketPolicyOutput {
                policy: Some(p.clone()),
            })),
            None => Err(s3s::s3_error!(
                NoSuchBucketPolicy,
                "The bucket policy does not exist"
            )),
        }
    }

    pub(crate) async fn put_bucket_policy_op(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let i = req.input;
        validate_policy(&i.policy)?;
        let p = i.policy;
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(POLICY.into(), p.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketPolicyOutput {}))
    }

    pub(crate) async fn delete_bucket_policy_op(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(POLICY);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketPolicyOutput {}))
    }

    pub(crate) async fn get_bucket_acl_op(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(grants(b.settings.get(ACL))),
            owner: Some(owner()),
        }))
    }

    pub(crate) async fn put_bucket_acl_op(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = req.input;
        let acl = requested_acl(
            i.acl.as_ref().map(|a| a.as_str()),
            i.access_control_policy.is_some(),
        )?;
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(ACL.into(), acl.into());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketAclOutput {}))
    }

    pub(crate) async fn get_object_acl_op(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let i = &req.input;
        let sel = crate::version_sel(&i.version_id);
        let v = self.archive.head(&i.bucket, &i.key, &sel).s3()?;
        let grants = grants(v.meta.get(crate::headers::ACL));
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(grants),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    pub(crate) async fn put_object_acl_op(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = req.input;
        let acl = requested_acl(
            i.acl.as_ref().map(|a| a.as_str()),
            i.access_control_policy.is_some(),
        )?;
        let sel = crate::version_sel(&i.version_id);
        self.archive
            .update_meta(&i.bucket, &i.key, sel, move |m| {
                m.insert(crate::headers::ACL.into(), acl.into());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_iam() {
        assert!(glob("arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y"));
        assert!(glob("s3:get*", "s3:getobject"));
        assert!(glob("*", ""));
        assert!(!glob("arn:aws:s3:::b/*", "arn:aws:s3:::bb/x"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
    }
}

//! Sharing beyond a key's own permissions (`access.rs`): canned ACLs (on buckets:
//! `public-read` lets anyone list, `public-read-write` also write objects; on objects:
//! anyone may read) and bucket policies whose statements name principal `*` or access
//! keys. Public data is public to other keys too, as in S3. Anonymous clients get reads,
//! and object writes only where the owner opened the bucket to them explicitly; such a
//! write never destroys history (deleting a version needs the owner), and the public
//! access block closes it. An explicit Deny in a policy wins over everything but the
//! root key. ACL grants name access key ids as S3's canonical users
//! (`archive::grants`); groups AllUsers and AuthenticatedUsers work as the canned ACLs do.

use archive::{Bucket, grants};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use serde_json::Value;

use crate::EdgeS3;
use crate::conditions::Facts;
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
        | "CopyObject"
        | "PostObject" => "PutObject",
        "DeleteObjects" => "DeleteObject",
        other => other,
    };
    format!("s3:{a}")
}

/// Actions anonymous clients may ever be given: reads.
fn is_read(action: &str) -> bool {
    matches!(
        action,
        "s3:GetObject"
            | "s3:ListBucket"
            | "s3:ListBucketVersions"
            | "s3:ListBucketMultipartUploads"
            | "s3:GetObjectTagging"
            | "s3:GetBucketLocation"
            | "s3:GetObjectAcl"
            | "s3:GetBucketAcl"
    )
}

/// Object writes that a bucket open to everyone allows (`public-read-write`, or a
/// policy for `*`): adding versions and delete markers, never configuring anything.
fn is_object_write(action: &str) -> bool {
    matches!(
        action,
        "s3:PutObject"
            | "s3:DeleteObject"
            | "s3:AbortMultipartUpload"
            | "s3:ListMultipartUploadParts"
    )
}

fn public(acl: Option<&String>) -> bool {
    acl.is_some_and(|a| a == "public-read" || a == "public-read-write")
}

/// What the bucket's ACLs say about `op` for everyone: a public bucket may be listed,
/// a public object read, and a `public-read-write` bucket written to.
pub(crate) fn public_by_acl(b: &Bucket, op: &str, object_acl: Option<&String>) -> bool {
    if !grants::acls_apply(b).public {
        return false;
    }
    match action(op).as_str() {
        "s3:GetObject" | "s3:GetObjectTagging" => public(object_acl),
        "s3:ListBucket"
        | "s3:ListBucketVersions"
        | "s3:ListBucketMultipartUploads"
        | "s3:GetBucketLocation" => public(b.settings.get(ACL)),
        a if is_object_write(a) => {
            b.settings.get(ACL).map(String::as_str) == Some("public-read-write")
        }
        _ => false,
    }
}

/// What the bucket policy says about `op` on `key` for `principal` (an access key, or
/// None for anonymous): Some(true) allowed, Some(false) explicitly denied, None silent.
/// Principals: `*` (everyone) or access keys, as `"AWS": "KEY"` or a list of them.
/// A statement's Condition is judged on `facts` (`conditions.rs`).
pub(crate) fn policy_decision(
    b: &Bucket,
    op: &str,
    key: Option<&str>,
    principal: Option<&str>,
    facts: Facts,
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
    // With RestrictPublicBuckets, statements open to everyone (`*`) allow nothing; their
    // denials still hold.
    let restricted = grants::public_access_block(b).restrict_public_buckets;
    let names = |v: &Value, star: bool| {
        strings(v)
            .iter()
            .any(|s| (star && s == "*") || Some(s.as_str()) == principal)
    };
    let mut decision = None;
    for st in statements(&policy) {
        let allow = st.get("Effect").and_then(Value::as_str) == Some("Allow");
        let star = !(allow && restricted);
        let who = match st.get("Principal") {
            Some(Value::String(s)) => star && s == "*",
            Some(Value::Object(m)) => m.get("AWS").is_some_and(|v| names(v, star)),
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
        if !matches {
            continue;
        }
        // A condition that cannot be judged: an Allow does not apply, a Deny does.
        let holds = crate::conditions::holds(st.get("Condition"), facts);
        match st.get("Effect").and_then(Value::as_str) {
            Some("Deny") if holds != Some(false) => return Some(false),
            Some("Allow") if holds == Some(true) => decision = Some(true),
            _ => {}
        }
    }
    decision
}

/// Anonymous requests: reads that an ACL or the policy make public, and object writes
/// to a bucket its owner opened to everyone.
pub(crate) fn allows_anonymous(
    b: &Bucket,
    op: &str,
    key: Option<&str>,
    object_acl: Option<&String>,
    facts: Facts,
) -> bool {
    let a = action(op);
    if !is_read(&a) && !is_object_write(&a) {
        return false;
    }
    match policy_decision(b, op, key, None, facts) {
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
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
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

/// Whether a policy allows anything to everyone: an Allow statement for principal `*`
/// (or with NotPrincipal) and without conditions. As S3 judges it, a condition (a
/// source address, say) narrows a statement to someone in particular.
pub(crate) fn is_public(text: &str) -> bool {
    let Ok(policy) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    statements(&policy).iter().any(|st| {
        let everyone = match st.get("Principal") {
            Some(Value::String(s)) => s == "*",
            Some(Value::Object(m)) => m
                .get("AWS")
                .is_some_and(|v| strings(v).iter().any(|s| s == "*")),
            _ => st.get("NotPrincipal").is_some(),
        };
        st.get("Effect").and_then(Value::as_str) == Some("Allow")
            && everyone
            && st
                .get("Condition")
                .is_none_or(|c| c.as_object().is_some_and(|m| m.is_empty()))
    })
}

fn validate_policy(text: &str) -> S3Result<()> {
    check_policy(text).map_err(|e| s3s::s3_error!(MalformedPolicy, "{e}"))
}

/// The grants of a canned ACL besides the owner's: groups for the public ones.
fn canned_grants(acl: Option<&String>) -> Vec<grants::Grant> {
    let group = |uri: &str, access| grants::Grant {
        grantee: grants::Grantee::Group(uri.into()),
        access,
    };
    match acl.map(String::as_str) {
        Some("public-read") => vec![group(grants::ALL_USERS, grants::Access::Read)],
        Some("public-read-write") => vec![
            group(grants::ALL_USERS, grants::Access::Read),
            group(grants::ALL_USERS, grants::Access::Write),
        ],
        Some("authenticated-read") => {
            vec![group(grants::AUTHENTICATED_USERS, grants::Access::Read)]
        }
        _ => Vec::new(),
    }
}

/// The canned ACL that keeps the public-ness of explicit grants: what the anonymous
/// and authenticated-read checks read.
pub(crate) fn canned_of(g: &[grants::Grant]) -> &'static str {
    let everyone = |want| grants::allows(g, None, want);
    if everyone(grants::Access::Read) && everyone(grants::Access::Write) {
        "public-read-write"
    } else if everyone(grants::Access::Read) {
        "public-read"
    } else if grants::allows(g, Some(""), grants::Access::Read) {
        "authenticated-read"
    } else {
        "private"
    }
}

/// The canned ACLs we keep. `public-read-write` lets anyone list the bucket and write
/// objects in it (never delete versions); `authenticated-read` lets every access key read;
/// `bucket-owner-read` and `bucket-owner-full-control` (objects only) name the bucket's
/// owner in the object's ACL, whose control it has anyway.
pub(crate) fn canned_acl(acl: &str) -> S3Result<&'static str> {
    match acl {
        "private" => Ok("private"),
        "bucket-owner-read" => Ok("bucket-owner-read"),
        "bucket-owner-full-control" => Ok("bucket-owner-full-control"),
        "public-read" => Ok("public-read"),
        "public-read-write" => Ok("public-read-write"),
        "authenticated-read" => Ok("authenticated-read"),
        _ => Err(s3s::s3_error!(InvalidArgument, "unknown canned ACL {acl}")),
    }
}

/// A canned ACL on a bucket: the bucket-owner ones mean nothing there (S3 ignores them).
pub(crate) fn bucket_canned_acl(acl: &str) -> S3Result<&'static str> {
    match canned_acl(acl)? {
        "bucket-owner-read" | "bucket-owner-full-control" => Ok("private"),
        other => Ok(other),
    }
}

/// `x-amz-grant-*` headers as S3 sends them: `id="KEY", uri="GROUP", ...` per access.
pub(crate) struct GrantHeaders<'a> {
    pub read: Option<&'a String>,
    pub write: Option<&'a String>,
    pub read_acp: Option<&'a String>,
    pub write_acp: Option<&'a String>,
    pub full_control: Option<&'a String>,
}

/// The `x-amz-grant-*` headers of any input that has them.
macro_rules! grant_headers {
    ($i:expr) => {
        $crate::policy::GrantHeaders {
            read: $i.grant_read.as_ref(),
            write: None,
            read_acp: $i.grant_read_acp.as_ref(),
            write_acp: $i.grant_write_acp.as_ref(),
            full_control: $i.grant_full_control.as_ref(),
        }
    };
}
pub(crate) use grant_headers;

impl EdgeS3 {
    /// Who a bucket's ACL names as owner: the key that created it, or the root key.
    pub(crate) fn owner_of(&self, b: &Bucket) -> Owner {
        let id = b
            .settings
            .get(OWNER)
            .cloned()
            .unwrap_or_else(|| self.root.access_key.clone());
        Owner {
            display_name: Some(self.display_name(&id)),
            id: Some(id),
        }
    }

    /// A key's name for people: the catalog's name for it, "root" for the root key.
    /// Stores a new object's ACL grants (`granted`, from its `x-amz-grant-*` headers) in
    /// its metadata, plus, as S3's ObjectWriter ownership does, full control for a key
    /// that writes into a bucket it does not own: it may read back what it wrote and
    /// read or change its ACL. BucketOwnerEnforced ignores that grant with every other.
    pub(crate) fn store_object_grants(
        &self,
        meta: &mut std::collections::BTreeMap<String, String>,
        mut granted: Vec<grants::Grant>,
        writer: Option<&str>,
        bucket: &str,
    ) {
        if let Some(w) = writer
            && w != crate::access::ANONYMOUS_ACTOR
            && !self.owns(Some(w), bucket)
        {
            granted.push(grants::Grant {
                grantee: grants::Grantee::Key(w.to_string()),
                access: grants::Access::FullControl,
            });
        }
        if !granted.is_empty() {
            meta.insert(grants::OBJECT_META.into(), grants::store(&granted));
        }
    }

    pub(crate) fn display_name(&self, id: &str) -> String {
        if id == self.root.access_key {
            return "root".into();
        }
        if id == crate::access::ANONYMOUS_ACTOR {
            return "anonymous".into();
        }
        match self.archive.access_key(id) {
            Ok(Some(k)) => k.name,
            _ => id.to_string(),
        }
    }

    fn known_key(&self, id: &str) -> bool {
        id == self.root.access_key || matches!(self.archive.access_key(id), Ok(Some(_)))
    }

    /// A grantee as S3 shows it.
    fn grantee(&self, g: &grants::Grantee) -> Grantee {
        match g {
            grants::Grantee::Key(id) => Grantee {
                type_: Type::from_static(Type::CANONICAL_USER),
                display_name: Some(self.display_name(id)),
                id: Some(id.clone()),
                email_address: None,
                uri: None,
            },
            grants::Grantee::Group(uri) => Grantee {
                type_: Type::from_static(Type::GROUP),
                uri: Some(uri.clone()),
                id: None,
                display_name: None,
                email_address: None,
            },
        }
    }

    /// The grant list S3 shows: the stored ACL as given (groups first), or for a canned
    /// ACL its groups and the owner's full control.
    fn shown_grants(
        &self,
        owner: &Owner,
        stored: Option<Vec<grants::Grant>>,
        canned: Option<&String>,
    ) -> Vec<Grant> {
        let owner_id = owner.id.clone().unwrap_or_default();
        let mut list = stored.unwrap_or_else(|| {
            vec![grants::Grant {
                grantee: grants::Grantee::Key(owner_id.clone()),
                access: grants::Access::FullControl,
            }]
        });
        // The canned ACL's grants, where the stored ones do not already say them.
        let bucket_owner = |access| grants::Grant {
            grantee: grants::Grantee::Key(owner_id.clone()),
            access,
        };
        let from_canned = match canned.map(String::as_str) {
            Some("bucket-owner-read") => vec![bucket_owner(grants::Access::Read)],
            Some("bucket-owner-full-control") => vec![bucket_owner(grants::Access::FullControl)],
            _ => canned_grants(canned),
        };
        for g in from_canned {
            if !list.contains(&g) {
                list.push(g);
            }
        }
        let (groups, keys): (Vec<_>, Vec<_>) = list
            .into_iter()
            .partition(|g| matches!(g.grantee, grants::Grantee::Group(_)));
        groups
            .iter()
            .chain(keys.iter())
            .map(|g| Grant {
                grantee: Some(self.grantee(&g.grantee)),
                permission: Some(Permission::from(g.access.name().to_string())),
            })
            .collect()
    }

    fn parse_grantee(
        &self,
        id: Option<&str>,
        uri: Option<&str>,
        email: Option<&str>,
    ) -> S3Result<grants::Grantee> {
        match (id, uri, email) {
            (Some(id), None, None) if self.known_key(id) => Ok(grants::Grantee::Key(id.into())),
            (Some(id), None, None) => Err(s3s::s3_error!(
                InvalidArgument,
                "no access key {id} to grant to (grantee ids are access key ids)"
            )),
            (None, Some(u), None) if u == grants::ALL_USERS || u == grants::AUTHENTICATED_USERS => {
                Ok(grants::Grantee::Group(u.into()))
            }
            (None, Some(u), None) => Err(s3s::s3_error!(
                InvalidArgument,
                "unknown group {u}: AllUsers and AuthenticatedUsers are known"
            )),
            (None, None, Some(_)) => Err(s3s::s3_error!(
                UnresolvableGrantByEmailAddress,
                "access keys have no email addresses here: grant by id (the access key id)"
            )),
            _ => Err(s3s::s3_error!(
                MalformedACLError,
                "a grantee needs exactly one of ID, URI and EmailAddress"
            )),
        }
    }

    /// The grants an AccessControlPolicy body gives, the owner's own included (the
    /// owner keeps owning whatever its grant says).
    fn policy_grants(&self, p: &AccessControlPolicy) -> S3Result<Vec<grants::Grant>> {
        let mut out = Vec::new();
        for g in p.grants.iter().flatten() {
            let gee = g
                .grantee
                .as_ref()
                .ok_or_else(|| s3s::s3_error!(MalformedACLError, "a grant has no Grantee"))?;
            let access = g
                .permission
                .as_ref()
                .and_then(|p| grants::Access::parse(p.as_str()))
                .ok_or_else(|| {
                    s3s::s3_error!(
                        MalformedACLError,
                        "a grant's Permission is not an S3 permission"
                    )
                })?;
            let grantee = self.parse_grantee(
                gee.id.as_deref(),
                gee.uri.as_deref(),
                gee.email_address.as_deref(),
            )?;
            out.push(grants::Grant { grantee, access });
        }
        Ok(out)
    }

    /// The grants `x-amz-grant-*` headers give.
    pub(crate) fn header_grants(&self, h: &GrantHeaders<'_>) -> S3Result<Vec<grants::Grant>> {
        use grants::Access::*;
        let mut out = Vec::new();
        for (value, access) in [
            (h.read, Read),
            (h.write, Write),
            (h.read_acp, ReadAcp),
            (h.write_acp, WriteAcp),
            (h.full_control, FullControl),
        ] {
            for item in value.iter().flat_map(|v| v.split(',')) {
                let (kind, val) = item.trim().split_once('=').ok_or_else(|| {
                    s3s::s3_error!(
                        InvalidArgument,
                        "a grant header lists id=\"KEY\" or uri=\"GROUP\" items"
                    )
                })?;
                let val = val.trim().trim_matches('"');
                let grantee = match kind.trim().to_ascii_lowercase().as_str() {
                    "id" => self.parse_grantee(Some(val), None, None)?,
                    "uri" => self.parse_grantee(None, Some(val), None)?,
                    "emailaddress" => self.parse_grantee(None, None, Some(val))?,
                    other => {
                        return Err(s3s::s3_error!(
                            InvalidArgument,
                            "unknown grantee type {other}"
                        ));
                    }
                };
                out.push(grants::Grant { grantee, access });
            }
        }
        Ok(out)
    }

    /// What a PutBucketAcl / PutObjectAcl asks for: a canned ACL, or grants (a body or
    /// headers), as (canned ACL to keep, grants to keep).
    fn requested(
        &self,
        canned: Option<&str>,
        policy: Option<&AccessControlPolicy>,
        headers: &GrantHeaders<'_>,
    ) -> S3Result<(&'static str, Vec<grants::Grant>)> {
        let from_headers = self.header_grants(headers)?;
        match (canned, policy) {
            (Some(_), Some(_)) => Err(s3s::s3_error!(
                InvalidRequest,
                "give a canned ACL or an AccessControlPolicy, not both"
            )),
            (Some(_), None) if !from_headers.is_empty() => Err(s3s::s3_error!(
                InvalidRequest,
                "give a canned ACL or x-amz-grant-* headers, not both"
            )),
            (Some(a), None) => Ok((canned_acl(a)?, Vec::new())),
            (None, Some(p)) => {
                let g = self.policy_grants(p)?;
                Ok((canned_of(&g), g))
            }
            (None, None) if !from_headers.is_empty() => {
                Ok((canned_of(&from_headers), from_headers))
            }
            (None, None) => Err(s3s::s3_error!(
                MissingSecurityHeader,
                "give a canned ACL (x-amz-acl), x-amz-grant-* headers or an AccessControlPolicy"
            )),
        }
    }
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
        let b = self.archive.bucket(&i.bucket).s3()?;
        crate::ownership::check_policy_write(&b, &i.policy)?;
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
        let owner = self.owner_of(&b);
        let stored = b
            .settings
            .get(grants::BUCKET_SETTING)
            .map(|g| grants::parse(Some(g)));
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(self.shown_grants(&owner, stored, b.settings.get(ACL))),
            owner: Some(owner),
        }))
    }

    pub(crate) async fn put_bucket_acl_op(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = req.input;
        let mut headers = grant_headers!(i);
        headers.write = i.grant_write.as_ref();
        let (acl, granted) = self.requested(
            i.acl.as_ref().map(|a| a.as_str()),
            i.access_control_policy.as_ref(),
            &headers,
        )?;
        let acl = bucket_canned_acl(acl)?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        crate::ownership::check_acl_write(&b, acl, &granted)?;
        let stored = (!granted.is_empty()).then(|| grants::store(&granted));
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(ACL.into(), acl.into());
                match &stored {
                    Some(g) => s.insert(grants::BUCKET_SETTING.into(), g.clone()),
                    None => s.remove(grants::BUCKET_SETTING),
                };
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
        let b = self.archive.bucket(&i.bucket).s3()?;
        let owner = self.owner_of(&b);
        let stored = v
            .meta
            .get(grants::OBJECT_META)
            .map(|g| grants::parse(Some(g)));
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(self.shown_grants(&owner, stored, v.meta.get(crate::headers::ACL))),
            owner: Some(owner),
            ..Default::default()
        }))
    }

    pub(crate) async fn put_object_acl_op(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = req.input;
        let mut headers = grant_headers!(i);
        headers.write = i.grant_write.as_ref();
        let (acl, granted) = self.requested(
            i.acl.as_ref().map(|a| a.as_str()),
            i.access_control_policy.as_ref(),
            &headers,
        )?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        crate::ownership::check_acl_write(&b, acl, &granted)?;
        let stored = (!granted.is_empty()).then(|| grants::store(&granted));
        let sel = crate::version_sel(&i.version_id);
        self.archive
            .update_meta(&i.bucket, &i.key, sel, move |m| {
                m.insert(crate::headers::ACL.into(), acl.into());
                match &stored {
                    Some(g) => m.insert(grants::OBJECT_META.into(), g.clone()),
                    None => m.remove(grants::OBJECT_META),
                };
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

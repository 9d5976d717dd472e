//! Who may do what. Authentication: SigV4 secrets come from the root key (given at
//! start) or the catalog's access keys (`edgecloud key create`). Authorization: every
//! S3 operation needs a permission level in its bucket (read < write < owner); the root
//! key and admin keys may do everything; anonymous requests may only do what a bucket's
//! owner made public (canned ACLs `public-read` and `public-read-write`, or a bucket
//! policy for `*`), and never delete a version.

use archive::{Archive, Permission};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use crate::policy;

/// The root key: configured at start, never stored in the catalog.
#[derive(Clone)]
pub struct RootKey {
    /// The root access key id.
    pub access_key: String,
    /// Its secret.
    pub secret: String,
}

pub(crate) struct EdgeAuth {
    pub archive: Archive,
    pub root: RootKey,
}

#[async_trait::async_trait]
impl S3Auth for EdgeAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.root.access_key {
            return Ok(SecretKey::from(self.root.secret.as_str()));
        }
        let mut found = self.archive.access_key(access_key);
        if matches!(found, Ok(None)) {
            // A key created through another node a moment ago: catch up, look again.
            self.archive
                .catalog()
                .read_barrier()
                .await
                .map_err(|e| crate::error::s3_error(e.into()))?;
            found = self.archive.access_key(access_key);
        }
        match found {
            Ok(Some(k)) => Ok(SecretKey::from(k.secret)),
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
            Err(e) => Err(crate::error::s3_error(e)),
        }
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any authenticated key (ListBuckets shows only what the key can read).
    Signed,
    /// Admin, or a key allowed to create buckets.
    CreateBucket,
    In(Permission),
}

fn need(op: &str) -> Need {
    use Permission::*;
    match op {
        "ListBuckets" => Need::Signed,
        "CreateBucket" => Need::CreateBucket,
        "GetObject"
        | "HeadObject"
        | "ListObjects"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "HeadBucket"
        | "GetBucketLocation"
        | "GetBucketVersioning"
        | "GetObjectTagging"
        | "GetBucketTagging"
        | "GetBucketCors"
        | "ListMultipartUploads"
        | "GetObjectAcl"
        | "GetObjectAttributes"
        | "GetObjectRetention"
        | "GetObjectLegalHold"
        | "GetObjectLockConfiguration" => Need::In(Read),
        "PutObject"
        | "PostObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts"
        | "PutObjectTagging"
        | "DeleteObjectTagging"
        | "PutObjectRetention"
        | "PutObjectLegalHold" => Need::In(Write),
        // Bucket configuration, deletion, sharing (PutObjectAcl can publish an object),
        // and anything new: owners only. A writer's DeleteObject of a version, which
        // destroys history, also needs owner (see `check`).
        _ => Need::In(Owner),
    }
}

pub(crate) struct EdgeAccess {
    pub archive: Archive,
    pub root: RootKey,
}

impl EdgeAccess {
    /// `bucket_rec`: the bucket's record when the caller already loaded it.
    fn key_permission(
        &self,
        access_key: &str,
        bucket: &str,
        bucket_rec: Option<&archive::Bucket>,
    ) -> S3Result<Option<Permission>> {
        let k = self
            .archive
            .access_key(access_key)
            .map_err(crate::error::s3_error)?;
        Ok(k.and_then(|k| self.archive.key_permission(&k, bucket, bucket_rec)))
    }

    fn may_create_buckets(&self, access_key: &str) -> S3Result<bool> {
        let k = self
            .archive
            .access_key(access_key)
            .map_err(crate::error::s3_error)?;
        Ok(k.is_some_and(|k| k.admin || k.create_buckets))
    }
}

fn denied() -> s3s::S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

/// The bucket and key named by `x-amz-copy-source` (CopyObject, UploadPartCopy).
fn copy_source(headers: &http::HeaderMap) -> Option<(String, String)> {
    let v = headers.get("x-amz-copy-source")?.to_str().ok()?;
    let v = v.strip_prefix('/').unwrap_or(v);
    let v = v.split_once('?').map_or(v, |(path, _)| path);
    let (bucket, key) = v.split_once('/').unwrap_or((v, ""));
    Some((percent_decode(bucket), percent_decode(key)))
}

/// The values a request has for a policy condition key (`conditions.rs`): its
/// `x-amz-*` headers, Referer and User-Agent, the tags it sets, the tags of the version
/// it addresses, and list parameters.
fn condition_values<'v>(
    name: &str,
    headers: &http::HeaderMap,
    query: &str,
    version: impl FnOnce() -> Option<&'v archive::Version>,
) -> Option<Vec<String>> {
    let one = |v: String| Some(vec![v]);
    let header = |h: &str| headers.get(h)?.to_str().ok().map(str::to_string);
    let tags_of = |encoded: &str| {
        form_urlencoded::parse(encoded.as_bytes())
            .into_owned()
            .collect::<Vec<_>>()
    };
    if let Some(tag) = name.strip_prefix("s3:existingobjecttag/") {
        let tags = tags_of(version()?.meta.get(crate::headers::TAGGING)?);
        return tags
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(tag))
            .and_then(|(_, v)| one(v));
    }
    if let Some(tag) = name.strip_prefix("s3:requestobjecttag/") {
        let tags = tags_of(&header("x-amz-tagging")?);
        return tags
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(tag))
            .and_then(|(_, v)| one(v));
    }
    match name {
        "s3:requestobjecttagkeys" => Some(
            tags_of(&header("x-amz-tagging")?)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        ),
        "aws:referer" => header("referer").and_then(one),
        "aws:useragent" => header("user-agent").and_then(one),
        "s3:x-amz-copy-source" => {
            let (bucket, key) = copy_source(headers)?;
            one(format!("{bucket}/{key}"))
        }
        "s3:prefix" | "s3:delimiter" | "s3:max-keys" | "s3:versionid" => {
            let param = match name {
                "s3:versionid" => "versionId",
                other => &other[3..],
            };
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == param)
                .and_then(|(_, v)| one(v.into_owned()))
        }
        _ => name
            .strip_prefix("s3:")
            .filter(|h| h.starts_with("x-amz-"))
            .and_then(header)
            .and_then(one),
    }
}

/// The `versionId` of an `x-amz-copy-source` header, if it names one.
fn copy_source_version(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("x-amz-copy-source")?.to_str().ok()?;
    let (_, query) = v.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "versionId")
        .map(|(_, v)| v.into_owned())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl S3Access for EdgeAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // Linearizable: every request sees each change acknowledged before it began,
        // whichever node took that change (in a cluster, a round trip to the leader).
        self.archive
            .catalog()
            .read_barrier()
            .await
            .map_err(|e| crate::error::s3_error(e.into()))?;
        // The root key may do everything: no lookups on its (hot) path.
        if cx
            .credentials()
            .is_some_and(|c| c.access_key == self.root.access_key)
        {
            return Ok(());
        }
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let bucket_rec = bucket.as_deref().and_then(|b| self.archive.bucket(b).ok());
        // As S3: a bucket that does not exist is no secret (CreateBucket would say so).
        if let Some(b) = bucket.as_deref()
            && bucket_rec.is_none()
            && op != "CreateBucket"
            && let Err(e @ archive::ArchiveError::Catalog(archive::CatalogError::NoSuchBucket(_))) =
                self.archive.bucket(b)
        {
            return Err(crate::error::s3_error(e));
        }
        // The ACL of the version the request reads (`versionId`, as-of, or the latest):
        // publishing the current version must not publish the old ones.
        let sel = crate::objects::selection_in(cx.uri(), cx.headers(), None)?;
        // The version the request addresses, read once and only when a check needs it.
        let addressed = std::cell::OnceCell::new();
        let version = || {
            addressed
                .get_or_init(|| {
                    let (b, k) = (bucket.as_deref()?, key.as_deref()?);
                    self.archive.head(b, k, &sel).ok()
                })
                .as_ref()
        };
        let object_acl = || version()?.meta.get(crate::headers::ACL).cloned();
        let (headers, query) = (cx.headers(), cx.uri().query().unwrap_or(""));
        let facts = |name: &str| condition_values(name, headers, query, version);
        // As S3: who may list a bucket learns that a key is missing (404), others get 403.
        let missing_but_listable = |principal: Option<&str>| {
            let (Some(b), Some(k)) = (bucket_rec.as_ref(), key.as_deref()) else {
                return false;
            };
            matches!(op, "GetObject" | "HeadObject")
                && self
                    .archive
                    .head(&b.name, k, &archive::VersionSel::Latest)
                    .is_err()
                && match principal {
                    None => policy::allows_anonymous(b, "ListObjects", None, None, &facts),
                    Some(p) => {
                        policy::policy_decision(b, "ListObjects", None, Some(p), &facts)
                            == Some(true)
                            || policy::public_by_acl(b, "ListObjects", None)
                    }
                }
        };
        let Some(cred) = cx.credentials() else {
            // Deleting a version destroys history: never for anonymous clients.
            if op == "DeleteObject" && matches!(sel, archive::VersionSel::Id(_)) {
                return Err(denied());
            }
            let public = bucket_rec.as_ref().is_some_and(|b| {
                policy::allows_anonymous(b, op, key.as_deref(), object_acl().as_ref(), &facts)
            });
            return if public || missing_but_listable(None) {
                Ok(())
            } else {
                Err(denied())
            };
        };
        let access_key = cred.access_key.clone();
        let level = match need(op) {
            Need::Signed => return Ok(()),
            Need::CreateBucket => {
                return if self.may_create_buckets(&access_key)? {
                    Ok(())
                } else {
                    Err(denied())
                };
            }
            // DeleteObject of one version destroys history: writers may only add delete
            // markers, so a leaked write key cannot erase what was kept.
            Need::In(_) if op == "DeleteObject" && matches!(sel, archive::VersionSel::Id(_)) => {
                Permission::Owner
            }
            Need::In(level) => level,
        };
        let bucket = bucket.clone().ok_or_else(denied)?;
        if matches!(op, "CopyObject" | "UploadPartCopy")
            && let Some((src, src_key)) = copy_source(cx.headers())
        {
            // Reading the source is a GetObject there: its policy's Deny wins, as on
            // any other read, with its conditions judged on the source version (its
            // tags) and this request's headers.
            let src_rec = self.archive.bucket(&src).ok();
            let src_sel = copy_source_version(cx.headers())
                .map_or(archive::VersionSel::Latest, archive::VersionSel::Id);
            let src_version = std::cell::OnceCell::new();
            let src_facts = |name: &str| {
                condition_values(name, headers, "", || {
                    src_version
                        .get_or_init(|| self.archive.head(&src, &src_key, &src_sel).ok())
                        .as_ref()
                })
            };
            let decision = src_rec.as_ref().and_then(|b| {
                policy::policy_decision(
                    b,
                    "GetObject",
                    Some(&src_key),
                    Some(&access_key),
                    &src_facts,
                )
            });
            let readable = self
                .key_permission(&access_key, &src, src_rec.as_ref())?
                .is_some_and(|p| p >= Permission::Read);
            if decision == Some(false) || !(readable || decision == Some(true)) {
                return Err(denied());
            }
        }
        let decision = bucket_rec.as_ref().and_then(|b| {
            policy::policy_decision(b, op, key.as_deref(), Some(&access_key), &facts)
        });
        if decision == Some(false) {
            return Err(denied());
        }
        if self
            .key_permission(&access_key, &bucket, bucket_rec.as_ref())?
            .is_some_and(|p| p >= level)
            || decision == Some(true)
        {
            return Ok(());
        }
        // Else ACL grants to this key (looked up only now: reading an object's grants
        // costs a catalog read): on the ACL itself (READ_ACP, WRITE_ACP), and reading
        // an object whose ACL grants it READ.
        use archive::grants::{self, Access};
        let granted = match op {
            "GetBucketAcl" => Some((true, Access::ReadAcp)),
            "PutBucketAcl" => Some((true, Access::WriteAcp)),
            "GetObjectAcl" => Some((false, Access::ReadAcp)),
            "PutObjectAcl" => Some((false, Access::WriteAcp)),
            "GetObject" | "HeadObject" => Some((false, Access::Read)),
            _ => None,
        };
        let apply = bucket_rec.as_ref().map(grants::acls_apply);
        if let (Some((on_bucket, want)), Some(apply)) = (granted, apply) {
            let list = if on_bucket {
                grants::parse(
                    bucket_rec
                        .as_ref()
                        .and_then(|b| b.settings.get(grants::BUCKET_SETTING)),
                )
            } else {
                let v = key
                    .as_deref()
                    .and_then(|k| self.archive.head(&bucket, k, &sel).ok());
                grants::parse(v.as_ref().and_then(|v| v.meta.get(grants::OBJECT_META)))
            };
            if grants::allows(&grants::effective(list, apply), Some(&access_key), want) {
                return Ok(());
            }
        }
        // Data public to everyone is public to other keys too.
        let public = bucket_rec.as_ref().is_some_and(|b| {
            level <= Permission::Write && policy::public_by_acl(b, op, object_acl().as_ref())
        });
        if public || missing_but_listable(Some(&access_key)) {
            Ok(())
        } else {
            Err(denied())
        }
    }
}

impl crate::EdgeS3 {
    /// Whether the request's key owns `bucket` (the root key owns every bucket). For
    /// what a per-operation check cannot see, such as the versions in a DeleteObjects body.
    pub(crate) fn owns(&self, access_key: Option<&str>, bucket: &str) -> bool {
        let Some(a) = access_key else { return false };
        if a == self.root.access_key {
            return true;
        }
        matches!(self.archive.access_key(a), Ok(Some(k))
            if self.archive.key_permission(&k, bucket, None) == Some(Permission::Owner))
    }

    /// Whether the request's key may see `bucket` in ListBuckets.
    pub(crate) fn can_list(&self, access_key: Option<&str>, bucket: &archive::Bucket) -> bool {
        let Some(a) = access_key else { return false };
        if a == self.root.access_key {
            return true;
        }
        // The same rule as every other check: a bucket is listed when the key may read it.
        match self.archive.access_key(a) {
            Ok(Some(k)) => self
                .archive
                .key_permission(&k, &bucket.name, Some(bucket))
                .is_some(),
            _ => false,
        }
    }
}

/// Who the audit log names for a request's change: its access key, or `@anonymous`
/// (a write to a bucket its owner opened to everyone).
pub(crate) fn actor(credentials: Option<&s3s::auth::Credentials>) -> Option<String> {
    Some(credentials.map_or_else(|| ANONYMOUS_ACTOR.to_string(), |c| c.access_key.clone()))
}

/// The audit log's actor for anonymous writes.
pub(crate) const ANONYMOUS_ACTOR: &str = "@anonymous";

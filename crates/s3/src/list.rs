//! Listing: ListObjects v1 and v2, ListObjectVersions.

use archive::ListQuery;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::OrS3;

impl EdgeS3 {
    pub(crate) async fn list_objects_v2_op(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let as_of = match crate::objects::selection(&req, None)? {
            archive::VersionSel::AsOf(t) => Some(t),
            _ => None,
        };
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        // The continuation token is the last key or prefix returned.
        let start_after = i.continuation_token.clone().or(i.start_after.clone());
        let q = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
            start_after,
            max_keys,
            as_of,
        };
        let page = self.archive.list(&i.bucket, &q).s3()?;
        let url = Encoding::of(i.encoding_type.as_ref());
        let owner = i
            .fetch_owner
            .unwrap_or(false)
            .then(|| self.bucket_owner(&i.bucket))
            .transpose()?;
        let contents: Vec<Object> = page
            .objects
            .iter()
            .map(|v| object_entry(v, url, owner.clone()))
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(url.apply(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix.map(|p| url.apply(&p)),
            delimiter: i.delimiter.filter(|d| !d.is_empty()).map(|d| url.apply(&d)),
            max_keys: Some(max_keys as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            continuation_token: i.continuation_token,
            start_after: i.start_after.map(|s| url.apply(&s)),
            is_truncated: Some(page.truncated && max_keys > 0),
            next_continuation_token: page.next_marker.filter(|_| max_keys > 0),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}

impl EdgeS3 {
    pub(crate) async fn list_objects_op(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let q = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
            start_after: i.marker.clone().filter(|m| !m.is_empty()),
            max_keys,
            as_of: None,
        };
        let page = self.archive.list(&i.bucket, &q).s3()?;
        let url = Encoding::of(i.encoding_type.as_ref());
        // Version 1 always names each object's owner.
        let owner = self.bucket_owner(&i.bucket)?;
        let contents: Vec<Object> = page
            .objects
            .iter()
            .map(|v| object_entry(v, url, Some(owner.clone())))
            .collect();
        let prefixes = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(url.apply(p)),
            })
            .collect();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            // S3 leaves Prefix of version 1 unencoded (botocore decodes it only for v2).
            prefix: i.prefix,
            marker: Some(url.apply(&i.marker.unwrap_or_default())),
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.truncated && max_keys > 0),
            // S3 sends NextMarker only when a delimiter is given; clients use the last key otherwise.
            next_marker: if delimiter.is_some() && max_keys > 0 {
                page.next_marker.map(|m| url.apply(&m))
            } else {
                None
            },
            delimiter: delimiter.map(|d| url.apply(&d)),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn list_object_versions_op(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let q = archive::VersionsQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
            key_marker: i.key_marker.clone().filter(|m| !m.is_empty()),
            version_id_marker: i.version_id_marker.clone().filter(|m| !m.is_empty()),
            max_keys,
        };
        let page = self.archive.list_versions(&i.bucket, &q).s3()?;
        let url = Encoding::of(i.encoding_type.as_ref());
        let owner = self.bucket_owner(&i.bucket)?;
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        for (v, latest) in &page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    key: Some(url.apply(&v.key)),
                    owner: Some(owner.clone()),
                    version_id: Some(v.version_id.clone()),
                    is_latest: Some(*latest),
                    last_modified: Some(crate::timestamp(v.mtime_ns)),
                    ..Default::default()
                });
            } else {
                versions.push(ObjectVersion {
                    key: Some(url.apply(&v.key)),
                    owner: Some(owner.clone()),
                    version_id: Some(v.version_id.clone()),
                    is_latest: Some(*latest),
                    size: Some(v.size as i64),
                    e_tag: Some(crate::etag(&v.etag)),
                    last_modified: Some(crate::timestamp(v.mtime_ns)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: i.prefix.map(|p| url.apply(&p)),
            delimiter: i.delimiter.map(|d| url.apply(&d)),
            key_marker: i.key_marker.map(|k| url.apply(&k)),
            version_id_marker: i.version_id_marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker.map(|k| url.apply(&k)),
            next_version_id_marker: page.next_version_id_marker,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(url.apply(&p)),
                    })
                    .collect(),
            ),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}

/// `encoding-type=url`: keys, prefixes, delimiters and markers in the answer are
/// URL-encoded (so keys with control characters survive XML).
#[derive(Clone, Copy)]
struct Encoding(bool);

impl Encoding {
    fn of(t: Option<&EncodingType>) -> Self {
        Encoding(t.is_some_and(|t| t.as_str().eq_ignore_ascii_case("url")))
    }

    fn apply(self, s: &str) -> String {
        if self.0 {
            crate::sign::uri_encode(s, true)
        } else {
            s.to_string()
        }
    }
}

fn object_entry(v: &archive::Version, url: Encoding, owner: Option<Owner>) -> Object {
    Object {
        key: Some(url.apply(&v.key)),
        owner,
        size: Some(v.size as i64),
        e_tag: Some(crate::etag(&v.etag)),
        last_modified: Some(crate::timestamp(v.mtime_ns)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

impl EdgeS3 {
    /// The owner listings name for a bucket's objects: the bucket's.
    fn bucket_owner(&self, bucket: &str) -> S3Result<Owner> {
        Ok(self.owner_of(&self.archive.bucket(bucket).s3()?))
    }
}

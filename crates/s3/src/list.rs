//! Listing: ListObjects v1 and v2, ListObjectVersions.

use archive::ListQuery;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::EdgeS3;
use crate::error::OrS3;

impl EdgeS3 {
    pub(crate) async fn list_objects_v2_op(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
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
        let contents: Vec<Object> = page.objects.iter().map(object_entry).collect();
        let prefixes: Vec<CommonPrefix> = page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(p.clone()) }).collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            continuation_token: i.continuation_token,
            start_after: i.start_after,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_marker,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }
}

impl EdgeS3 {
    pub(crate) async fn list_objects_op(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
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
        let contents: Vec<Object> = page.objects.iter().map(object_entry).collect();
        let prefixes = page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(p.clone()) }).collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter.clone(),
            marker: i.marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.truncated),
            // S3 sends NextMarker only when a delimiter is given; clients use the last key otherwise.
            next_marker: if i.delimiter.is_some() { page.next_marker } else { None },
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_object_versions_op(&self, req: S3Request<ListObjectVersionsInput>) -> S3Result<S3Response<ListObjectVersionsOutput>> {
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
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        for (v, latest) in &page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    key: Some(v.key.clone()),
                    version_id: Some(v.version_id.clone()),
                    is_latest: Some(*latest),
                    last_modified: Some(crate::timestamp(v.mtime_ns)),
                    ..Default::default()
                });
            } else {
                versions.push(ObjectVersion {
                    key: Some(v.key.clone()),
                    version_id: Some(v.version_id.clone()),
                    is_latest: Some(*latest),
                    size: Some(v.size as i64),
                    e_tag: Some(crate::etag(&v.etag)),
                    last_modified: Some(crate::timestamp(v.mtime_ns)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            key_marker: i.key_marker,
            version_id_marker: i.version_id_marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker,
            next_version_id_marker: page.next_version_id_marker,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(page.common_prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }
}

fn object_entry(v: &archive::Version) -> Object {
    Object {
        key: Some(v.key.clone()),
        size: Some(v.size as i64),
        e_tag: Some(crate::etag(&v.etag)),
        last_modified: Some(crate::timestamp(v.mtime_ns)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

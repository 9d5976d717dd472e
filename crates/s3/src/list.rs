//! Listing: ListObjectsV2.

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
        let contents: Vec<Object> = page
            .objects
            .iter()
            .map(|v| Object {
                key: Some(v.key.clone()),
                size: Some(v.size as i64),
                e_tag: Some(crate::etag(&v.etag)),
                last_modified: Some(crate::timestamp(v.mtime_ns)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
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

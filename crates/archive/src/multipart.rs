//! Multipart uploads on top of the streaming ingest: each part is stored as chunks when
//! it arrives; completion concatenates the chosen parts' chunk lists (no data moves).

use bytes::Bytes;
use catalog::{CatalogError, Part, PutCondition, Upload, Version};
use futures::Stream;

use crate::{Archive, ArchiveError, PutOptions, Result, validate_key};

/// S3 allows part numbers 1 to 10,000.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// S3 allows parts of up to 5 GiB; a longer part body (sent without a length) is
/// refused as it streams.
pub const MAX_PART_BYTES: u64 = 5 << 30;

impl Archive {
    /// Starts a multipart upload and answers its id.
    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<Upload> {
        validate_key(key)?;
        let b = self.bucket(bucket)?;
        let mut meta = opts.meta;
        meta.remove(crate::sse_c::VERIFIER);
        if let Some(ck) = &opts.customer_key {
            meta.insert(
                crate::sse_c::VERIFIER.into(),
                ck.verifier(&self.inner.keys.data_key(&b)?),
            );
        }
        Ok(self
            .inner
            .catalog
            .create_upload(bucket, key, opts.content_type, meta)
            .await?)
    }

    /// The upload `upload_id` of `bucket`/`key`. An upload of another bucket or key is
    /// `NoSuchUpload`: an id alone must never reach across buckets, since permissions
    /// are checked on the bucket the request names.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        let up = self.inner.catalog.upload(upload_id)?;
        if up.bucket != bucket || up.key != key {
            return Err(CatalogError::NoSuchUpload(upload_id.into()).into());
        }
        Ok(up)
    }

    /// UploadPart; `content_md5`, when given, must match or nothing is kept.
    pub async fn upload_part<S>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: S,
        content_md5: Option<[u8; 16]>,
    ) -> Result<Part>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        self.upload_part_sse_c(bucket, key, upload_id, number, body, content_md5, None)
            .await
    }

    /// `upload_part` of an upload started with a customer key (SSE-C): every part
    /// must come with that key.
    #[allow(clippy::too_many_arguments)] // UploadPart's parts
    pub async fn upload_part_sse_c<S>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: S,
        content_md5: Option<[u8; 16]>,
        customer_key: Option<&crate::CustomerKey>,
    ) -> Result<Part>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(ArchiveError::Invalid(format!(
                "part numbers go from 1 to {MAX_PART_NUMBER}, got {number}"
            )));
        }
        let up = self.upload(bucket, key, upload_id)?;
        let b = self.bucket(&up.bucket)?;
        let dk = crate::sse_c::opening_key(self.inner.keys.data_key(&b)?, &up.meta, customer_key)?;
        let ing = self
            .ingest(&b, &dk, body, false, Some(MAX_PART_BYTES))
            .await?;
        if content_md5.is_some_and(|want| want != ing.md5) {
            return Err(ArchiveError::BadDigest);
        }
        let part = Part {
            number,
            size: ing.size,
            etag: codec::hex(&ing.md5),
            sha256: codec::hex(&ing.sha256),
            mtime_ns: catalog::now_ns(),
            body: ing.body,
        };
        let part = self
            .inner
            .catalog
            .put_part(upload_id, part, ing.fresh)
            .await?;
        drop(ing.hold); // committed: the part references its chunks now
        Ok(part)
    }

    /// The parts uploaded so far.
    pub fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<Part>> {
        self.upload(bucket, key, upload_id)?;
        Ok(self.inner.catalog.parts(upload_id)?)
    }

    /// The uploads in progress in a bucket.
    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<Upload>> {
        self.bucket(bucket)?;
        Ok(self.inner.catalog.uploads(bucket)?)
    }

    /// Completes an upload. The ETag is S3's: MD5 of the parts' binary MD5s, "-N".
    /// `actor` (the access key) is the new version's writer in the audit log.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
        cond: PutCondition,
        actor: Option<String>,
    ) -> Result<Version> {
        let up = self.upload(bucket, key, upload_id)?;
        let policy = self.bucket(&up.bucket)?.policy;
        let stored = self.inner.catalog.parts(upload_id)?;
        let chosen = || {
            parts
                .iter()
                .filter_map(|(n, _)| stored.iter().find(|p| p.number == *n))
        };
        let chunks: usize = chosen().map(|p| p.body.chunk_refs().len()).sum();
        let max = self.inner.cfg.max_chunks_per_object;
        if chunks > max {
            return Err(ArchiveError::TooManyChunks { max });
        }
        let max = self.inner.cfg.max_object_bytes;
        if chosen().map(|p| p.size).sum::<u64>() > max {
            return Err(ArchiveError::ObjectTooLarge { max });
        }
        Ok(self
            .inner
            .catalog
            .complete_upload(upload_id, parts, cond, policy, actor)
            .await?)
    }

    /// Drops an upload and its parts. The bucket and key are checked first; an
    /// upload's bucket and key never change, so the check cannot go stale.
    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.upload(bucket, key, upload_id)?;
        Ok(self.inner.catalog.abort_upload(upload_id).await?)
    }
}

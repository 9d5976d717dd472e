//! Bucket records: create, look up, list, delete, versioning state.

use redb::ReadableTable;

use crate::keys::*;
use crate::records::*;
use crate::{Catalog, CatalogError, Result};

impl Catalog {
    pub async fn create_bucket(&self, bucket: Bucket) -> Result<Bucket> {
        self.create_bucket_as(bucket, None).await
    }

    /// `create_bucket` on behalf of an access key (recorded in the audit log).
    pub async fn create_bucket_as(&self, bucket: Bucket, actor: Option<String>) -> Result<Bucket> {
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(BUCKETS)?;
                if t.get(bucket.name.as_str())?.is_some() {
                    return Err(CatalogError::BucketExists(bucket.name));
                }
                t.insert(bucket.name.as_str(), enc(&bucket).as_slice())?;
                let change = ledger::record::Change::BucketCreated {
                    bucket: bucket.name.clone(),
                };
                crate::audit::append(txn, bucket.created_ns, actor, change)?;
                Ok(bucket)
            })
            .await
    }

    pub fn bucket(&self, name: &str) -> Result<Bucket> {
        let t = self.read()?.open_table(BUCKETS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| CatalogError::NoSuchBucket(name.into()))?;
        dec("buckets", name.as_bytes(), v.value())
    }

    pub fn buckets(&self) -> Result<Vec<Bucket>> {
        let t = self.read()?.open_table(BUCKETS)?;
        t.iter()?
            .map(|e| {
                let (k, v) = e?;
                dec("buckets", k.value().as_bytes(), v.value())
            })
            .collect()
    }

    /// Changes a bucket's record (versioning, settings) atomically.
    pub async fn update_bucket(
        &self,
        name: &str,
        f: impl FnOnce(&mut Bucket) -> Result<()> + Send + 'static,
    ) -> Result<Bucket> {
        let name = name.to_string();
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(BUCKETS)?;
                let mut b: Bucket = match t.get(name.as_str())? {
                    Some(v) => dec("buckets", name.as_bytes(), v.value())?,
                    None => return Err(CatalogError::NoSuchBucket(name)),
                };
                f(&mut b)?;
                t.insert(name.as_str(), enc(&b).as_slice())?;
                Ok(b)
            })
            .await
    }

    /// Deletes an empty bucket (no visible versions, no uploads in progress). Hidden
    /// history kept for as-of reads goes with it, and its chunks are released.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.delete_bucket_as(name, None).await
    }

    /// `delete_bucket` on behalf of an access key (recorded in the audit log).
    pub async fn delete_bucket_as(&self, name: &str, actor: Option<String>) -> Result<()> {
        let name = name.to_string();
        self.writer
            .write(move |txn| {
                let mut buckets = txn.open_table(BUCKETS)?;
                if buckets.get(name.as_str())?.is_none() {
                    return Err(CatalogError::NoSuchBucket(name));
                }
                let start = object_key(&name, "");
                let end = bucket_end(&name);
                let mut versions = txn.open_table(VERSIONS)?;
                let mut doomed = Vec::new();
                for e in versions.range(start.as_slice()..end.as_slice())? {
                    let (k, v) = e?;
                    let ver: Version = dec("versions", k.value(), v.value())?;
                    if !ver.hidden {
                        return Err(CatalogError::BucketNotEmpty(name));
                    }
                    doomed.push((k.value().to_vec(), ver));
                }
                let uploads = txn.open_table(UPLOADS)?;
                for e in uploads.iter()? {
                    let (k, v) = e?;
                    let up: Upload = dec("uploads", k.value().as_bytes(), v.value())?;
                    if up.bucket == name {
                        return Err(CatalogError::BucketNotEmpty(name));
                    }
                }
                let mut chunks = txn.open_table(CHUNKS)?;
                for (k, ver) in doomed {
                    versions.remove(k.as_slice())?;
                    crate::chunks::release(&mut chunks, ver.body.chunk_refs())?;
                }
                buckets.remove(name.as_str())?;
                crate::audit::append(
                    txn,
                    now_ns(),
                    actor,
                    ledger::record::Change::BucketDeleted { bucket: name },
                )?;
                Ok(())
            })
            .await
    }
}

pub(crate) fn load_bucket(txn: &redb::WriteTransaction, name: &str) -> Result<Bucket> {
    let t = txn.open_table(BUCKETS)?;
    let v = t
        .get(name)?
        .ok_or_else(|| CatalogError::NoSuchBucket(name.into()))?;
    dec("buckets", name.as_bytes(), v.value())
}

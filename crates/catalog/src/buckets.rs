//! Bucket records: create, look up, list, delete, versioning state.

use redb::{ReadableTable, WriteTransaction};

use crate::command::{Command, Stamp, expect_outcome};
use crate::records::*;
use crate::table_keys::*;
use crate::{Catalog, CatalogError, Result};

impl Catalog {
    /// Creates a bucket; `BucketExists` if the name is taken.
    pub async fn create_bucket(&self, bucket: Bucket) -> Result<Bucket> {
        self.create_bucket_as(bucket, None).await
    }

    /// `create_bucket` on behalf of an access key (recorded in the audit log).
    pub async fn create_bucket_as(&self, bucket: Bucket, actor: Option<String>) -> Result<Bucket> {
        expect_outcome!(
            self.execute(Command::CreateBucket { bucket, actor })
                .await?,
            Bucket
        )
    }

    /// The bucket named `name`.
    pub fn bucket(&self, name: &str) -> Result<Bucket> {
        let t = self.read()?.open_table(BUCKETS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| CatalogError::NoSuchBucket(name.into()))?;
        dec("buckets", name.as_bytes(), v.value())
    }

    /// Every bucket, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>> {
        let t = self.read()?.open_table(BUCKETS)?;
        t.iter()?
            .map(|e| {
                let (k, v) = e?;
                dec("buckets", k.value().as_bytes(), v.value())
            })
            .collect()
    }

    /// Changes a bucket's record (versioning, settings) atomically: `f` edits the
    /// record as read, and the change is retried if another one landed meanwhile.
    pub async fn update_bucket(
        &self,
        name: &str,
        f: impl Fn(&mut Bucket) -> Result<()> + Send + 'static,
    ) -> Result<Bucket> {
        self.read_modify_write(
            || self.bucket(name),
            |b| f(b),
            |expect, bucket| Command::ReplaceBucket { expect, bucket },
        )
        .await
        .and_then(|o| expect_outcome!(o, Bucket))
    }

    /// Deletes an empty bucket (no visible versions, no uploads in progress). Hidden
    /// history kept for as-of reads goes with it, and its chunks are released.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.delete_bucket_as(name, None).await
    }

    /// `delete_bucket` on behalf of an access key (recorded in the audit log).
    pub async fn delete_bucket_as(&self, name: &str, actor: Option<String>) -> Result<()> {
        let name = name.to_string();
        self.execute(Command::DeleteBucket { name, actor }).await?;
        Ok(())
    }
}

pub(crate) fn create(
    txn: &WriteTransaction,
    bucket: Bucket,
    actor: Option<String>,
) -> Result<Bucket> {
    let mut t = txn.open_table(BUCKETS)?;
    if t.get(bucket.name.as_str())?.is_some() {
        return Err(CatalogError::BucketExists(bucket.name));
    }
    crate::lock::check_bucket_change(&bucket, &bucket)?;
    t.insert(bucket.name.as_str(), enc(&bucket).as_slice())?;
    let change = ledger::record::Change::BucketCreated {
        bucket: bucket.name.clone(),
    };
    crate::audit::append(txn, bucket.created_ns, actor.clone(), change)?;
    for change in setting_changes(None, &bucket) {
        crate::audit::append(txn, bucket.created_ns, actor.clone(), change)?;
    }
    Ok(bucket)
}

pub(crate) fn replace(
    txn: &WriteTransaction,
    at: &Stamp,
    expect: &Bucket,
    bucket: Bucket,
) -> Result<Bucket> {
    let name = bucket.name.clone();
    let current = load_bucket(txn, &name)?;
    if name != expect.name || enc(&current) != enc(expect) {
        return Err(CatalogError::Conflict);
    }
    crate::lock::check_bucket_change(&current, &bucket)?;
    txn.open_table(BUCKETS)?
        .insert(name.as_str(), enc(&bucket).as_slice())?;
    for change in setting_changes(Some(&current), &bucket) {
        crate::audit::append(txn, at.at_ns, None, change)?;
    }
    Ok(bucket)
}

/// The ledger records of a bucket's change: object lock and lifecycle rules.
fn setting_changes(old: Option<&Bucket>, new: &Bucket) -> Vec<ledger::record::Change> {
    let mut out: Vec<_> = lock_change(old, new).into_iter().collect();
    let rules = |b: &Bucket| b.settings.get(crate::LIFECYCLE_SETTING).cloned();
    if old.and_then(rules) != rules(new) {
        out.push(ledger::record::Change::LifecycleSet {
            bucket: new.name.clone(),
            rules: rules(new),
        });
    }
    out
}

/// The ledger record of a change to the bucket's object lock configuration, if any.
fn lock_change(old: Option<&Bucket>, new: &Bucket) -> Option<ledger::record::Change> {
    let before = old.and_then(crate::lock::bucket_lock);
    let after = crate::lock::bucket_lock(new)?;
    if before.as_ref() == Some(&after) {
        return None;
    }
    let d = after.default;
    Some(ledger::record::Change::ObjectLockSet {
        bucket: new.name.clone(),
        mode: d.map(|d| d.mode.name().to_string()),
        days: d.and_then(|d| d.days),
        years: d.and_then(|d| d.years),
    })
}

pub(crate) fn delete(
    txn: &WriteTransaction,
    at: &Stamp,
    name: &str,
    actor: Option<String>,
) -> Result<()> {
    let mut buckets = txn.open_table(BUCKETS)?;
    if buckets.get(name)?.is_none() {
        return Err(CatalogError::NoSuchBucket(name.into()));
    }
    let start = object_key(name, "");
    let end = bucket_end(name);
    let mut versions = txn.open_table(VERSIONS)?;
    let mut doomed = Vec::new();
    for e in versions.range(start.as_slice()..end.as_slice())? {
        let (k, v) = e?;
        let ver: Version = dec("versions", k.value(), v.value())?;
        if !ver.hidden {
            return Err(CatalogError::BucketNotEmpty(name.into()));
        }
        doomed.push((k.value().to_vec(), ver));
    }
    // Incomplete multipart uploads do not keep a bucket alive (as in AWS and Ceph):
    // they go with it, and their parts' chunks are released.
    let mut open_uploads = Vec::new();
    for e in txn.open_table(UPLOADS)?.iter()? {
        let (k, v) = e?;
        let up: Upload = dec("uploads", k.value().as_bytes(), v.value())?;
        if up.bucket == name {
            open_uploads.push(up.upload_id);
        }
    }
    for upload_id in open_uploads {
        crate::multipart::abort(txn, at, &upload_id)?;
    }
    let mut chunks = txn.open_table(CHUNKS)?;
    for (k, ver) in doomed {
        versions.remove(k.as_slice())?;
        crate::chunks::release(&mut chunks, at, ver.body.chunk_refs())?;
    }
    buckets.remove(name)?;
    crate::audit::append(
        txn,
        at.at_ns,
        actor,
        ledger::record::Change::BucketDeleted {
            bucket: name.into(),
        },
    )?;
    Ok(())
}

pub(crate) fn load_bucket(txn: &redb::WriteTransaction, name: &str) -> Result<Bucket> {
    let t = txn.open_table(BUCKETS)?;
    let v = t
        .get(name)?
        .ok_or_else(|| CatalogError::NoSuchBucket(name.into()))?;
    dec("buckets", name.as_bytes(), v.value())
}

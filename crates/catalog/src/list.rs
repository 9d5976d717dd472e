//! Listing: the keys of a bucket (now or as of a past instant) and their versions, with
//! S3's prefix, delimiter, marker and page-size semantics.

use redb::ReadOnlyTable;

use crate::records::*;
use crate::table_keys::*;
use crate::{Catalog, CatalogError, Result};

/// What to list of a bucket's current objects.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up to the first delimiter after the prefix into common prefixes.
    pub delimiter: Option<String>,
    /// Start strictly after this key (S3 marker / start-after / continuation token).
    pub start_after: Option<String>,
    /// At most this many objects and prefixes.
    pub max_keys: usize,
    /// List the bucket as it was at this instant (ns).
    pub as_of: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The current versions on this page, by key.
    pub objects: Vec<Version>,
    /// Common prefixes on this page.
    pub common_prefixes: Vec<String>,
    /// True when more pages follow.
    pub truncated: bool,
    /// The last key or common prefix returned; pass as `start_after` for the next page.
    pub next_marker: Option<String>,
}

/// What to list of a bucket's versions.
#[derive(Debug, Clone, Default)]
pub struct VersionsQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up to the first delimiter after the prefix into common prefixes.
    pub delimiter: Option<String>,
    /// Start at this key (S3 key-marker).
    pub key_marker: Option<String>,
    /// Start after this version of `key_marker` (S3 version-id-marker).
    pub version_id_marker: Option<String>,
    /// At most this many versions and prefixes.
    pub max_keys: usize,
}

/// One page of a versions listing.
#[derive(Debug, Clone, Default)]
pub struct VersionsPage {
    /// Versions and delete markers, newest first within a key, with "is latest".
    pub versions: Vec<(Version, bool)>,
    /// Common prefixes on this page.
    pub common_prefixes: Vec<String>,
    /// True when more pages follow.
    pub truncated: bool,
    /// Pass as `key_marker` for the next page.
    pub next_key_marker: Option<String>,
    /// Pass as `version_id_marker` for the next page.
    pub next_version_id_marker: Option<String>,
}

/// The common prefix `key` rolls up into, if any.
fn rollup<'a>(key: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
}

fn key_of(bucket: &str, k: &[u8]) -> Option<String> {
    String::from_utf8(k.get(bucket.len() + 1..)?.to_vec()).ok()
}

/// Finds the first key at or after `cursor` and what a reader sees of it (None when it
/// is deleted or did not yet exist at `as_of`). Returns the cursor just past it.
fn next_entry(
    bucket: &str,
    cur: &ReadOnlyTable<&[u8], u64>,
    versions: &ReadOnlyTable<&[u8], &[u8]>,
    cursor: &[u8],
    end: &[u8],
    as_of: Option<u64>,
) -> Result<Option<(String, Option<Version>, Vec<u8>)>> {
    match as_of {
        None => {
            let Some(e) = cur.range(cursor..end)?.next() else {
                return Ok(None);
            };
            let (k, seq) = e?;
            let key = key_of(bucket, k.value())
                .ok_or_else(|| CatalogError::Db("bad current key".into()))?;
            let mut after = k.value().to_vec();
            after.push(0);
            let vk = version_key(bucket, &key, seq.value());
            let v = match versions.get(vk.as_slice())? {
                Some(v) => {
                    Some(dec::<Version>("versions", &vk, v.value())?).filter(|v| !v.delete_marker)
                }
                None => None,
            };
            Ok(Some((key, v, after)))
        }
        Some(t) => {
            let Some(e) = versions.range(cursor..end)?.next() else {
                return Ok(None);
            };
            let (k, _) = e?;
            let (key, _) = split_version_key(bucket, k.value())
                .ok_or_else(|| CatalogError::Db("bad version key".into()))?;
            let found = crate::objects::key_versions(versions, bucket, &key)?
                .into_iter()
                .map(|(_, v)| v)
                .find(|v| v.mtime_ns <= t)
                .filter(|v| !v.delete_marker);
            let mut after = object_key(bucket, &key);
            after.push(1);
            Ok(Some((key, found, after)))
        }
    }
}

impl Catalog {
    /// One page of a bucket's current objects (or as of an instant).
    pub fn list(&self, bucket: &str, q: &ListQuery) -> Result<ListPage> {
        let txn = self.read()?;
        if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(CatalogError::NoSuchBucket(bucket.into()));
        }
        let cur = txn.open_table(CURRENT)?;
        let versions = txn.open_table(VERSIONS)?;
        let base = object_key(bucket, &q.prefix);
        let end = prefix_successor(&base).unwrap_or_else(|| bucket_end(bucket));
        let mut cursor = match &q.start_after {
            Some(s) if s.as_str() >= q.prefix.as_str() => object_key(bucket, s),
            _ => base.clone(),
        };
        let mut page = ListPage::default();
        let max = q.max_keys;
        let mut count = 0;
        while let Some((key, v, after)) =
            next_entry(bucket, &cur, &versions, &cursor, &end, q.as_of)?
        {
            cursor = after;
            if q.start_after.as_deref().is_some_and(|s| key.as_str() <= s) {
                continue;
            }
            // A deleted key shows nothing, not even its common prefix (as S3).
            let Some(v) = v else { continue };
            if let Some(cp) = rollup(&key, &q.prefix, q.delimiter.as_deref()) {
                cursor = prefix_successor(&object_key(bucket, cp)).unwrap_or_else(|| end.clone());
                if q.start_after.as_deref().is_some_and(|s| cp <= s) {
                    continue;
                }
                if count == max {
                    page.truncated = true;
                    break;
                }
                page.common_prefixes.push(cp.to_string());
                page.next_marker = Some(cp.to_string());
                count += 1;
                continue;
            }
            if count == max {
                page.truncated = true;
                break;
            }
            page.next_marker = Some(key);
            page.objects.push(v);
            count += 1;
        }
        if !page.truncated {
            page.next_marker = None;
        }
        Ok(page)
    }

    /// One page of a bucket's versions and delete markers.
    pub fn list_versions(&self, bucket: &str, q: &VersionsQuery) -> Result<VersionsPage> {
        let txn = self.read()?;
        if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(CatalogError::NoSuchBucket(bucket.into()));
        }
        let versions = txn.open_table(VERSIONS)?;
        let base = object_key(bucket, &q.prefix);
        let end = prefix_successor(&base).unwrap_or_else(|| bucket_end(bucket));
        let mut cursor = match &q.key_marker {
            Some(m) if m.as_str() >= q.prefix.as_str() => object_key(bucket, m),
            _ => base.clone(),
        };
        let mut page = VersionsPage::default();
        let mut count = 0;
        'keys: loop {
            let Some(e) = versions.range(cursor.as_slice()..end.as_slice())?.next() else {
                break;
            };
            let (k, _) = e?;
            let (key, _) = split_version_key(bucket, k.value())
                .ok_or_else(|| CatalogError::Db("bad version key".into()))?;
            drop(k);
            let mut next = object_key(bucket, &key);
            next.push(1);
            cursor = next;
            if let Some(m) = &q.key_marker
                && (key.as_str() < m.as_str() || (key == *m && q.version_id_marker.is_none()))
            {
                continue;
            }
            if let Some(cp) = rollup(&key, &q.prefix, q.delimiter.as_deref()) {
                cursor = prefix_successor(&object_key(bucket, cp)).unwrap_or_else(|| end.clone());
                if q.key_marker.as_deref().is_some_and(|m| cp <= m) {
                    continue;
                }
                if count == q.max_keys {
                    page.truncated = true;
                    break;
                }
                page.common_prefixes.push(cp.to_string());
                page.next_key_marker = Some(cp.to_string());
                page.next_version_id_marker = None;
                count += 1;
                continue;
            }
            let all: Vec<Version> = crate::objects::key_versions(&versions, bucket, &key)?
                .into_iter()
                .map(|(_, v)| v)
                .filter(|v| !v.hidden)
                .collect();
            let mut skipping =
                q.key_marker.as_deref() == Some(key.as_str()) && q.version_id_marker.is_some();
            for (i, v) in all.into_iter().enumerate() {
                if skipping {
                    if Some(&v.version_id) == q.version_id_marker.as_ref() {
                        skipping = false;
                    }
                    continue;
                }
                if count == q.max_keys {
                    page.truncated = true;
                    break 'keys;
                }
                page.next_key_marker = Some(key.clone());
                page.next_version_id_marker = Some(v.version_id.clone());
                page.versions.push((v, i == 0));
                count += 1;
            }
        }
        if !page.truncated {
            page.next_key_marker = None;
            page.next_version_id_marker = None;
        }
        Ok(page)
    }
}

//! Object versions: write, look up, delete, with S3 versioning semantics. Beyond S3,
//! a null version replaced or deleted while versioning is off is kept hidden, so a
//! bucket can still be read as of any past instant.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::buckets::load_bucket;
use crate::command::{Command, Stamp, expect_outcome};
use crate::records::*;
use crate::table_keys::*;
use crate::{Catalog, CatalogError, Result};

/// Which version a read wants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VersionSel {
    /// The key's current version.
    Latest,
    /// The version with this id.
    Id(String),
    /// The version that was current at this instant (ns since the epoch).
    AsOf(u64),
}

/// Conditions checked atomically with a write (S3 conditional PUT).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PutCondition {
    /// `If-None-Match: *`: fail if the key exists.
    pub if_none_match_any: bool,
    /// `If-Match: etag`: fail unless the current version has this ETag.
    pub if_match: Option<String>,
    /// `If-None-Match: etag`: fail if the current version has this ETag.
    pub if_none_match: Option<String>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeleteOutcome {
    /// The version created (a delete marker) or removed; None when versioning is off.
    pub version_id: Option<String>,
    /// True when a delete marker was created.
    pub delete_marker: bool,
    /// The audit-log entry of the deletion (None when nothing changed).
    pub ledger_index: Option<u64>,
}

/// Allocates the next sequence number and a modification time that never goes back,
/// so that time order and sequence order agree (as-of reads depend on it).
fn next_seq(txn: &WriteTransaction, at: &Stamp) -> Result<(u64, u64)> {
    let mut meta = txn.open_table(META)?;
    let seq = meta.get("seq")?.map(|v| v.value()).unwrap_or(0) + 1;
    let last = meta.get("mtime")?.map(|v| v.value()).unwrap_or(0);
    let mtime = at.at_ns.max(last + 1);
    meta.insert("seq", seq)?;
    meta.insert("mtime", mtime)?;
    Ok((seq, mtime))
}

fn new_version_id(mtime: u64, at: &Stamp) -> String {
    // Time-prefixed so ids sort by age in logs; random (chosen by the proposer, the same
    // on every replica) so they cannot be guessed.
    format!("{mtime:016x}{:016x}", at.nonce)
}

/// All versions of one key, newest first, with their table keys.
pub(crate) fn key_versions(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Vec<(Vec<u8>, Version)>> {
    let prefix = versions_prefix(bucket, key);
    let end = prefix_successor(&prefix).expect("prefix ends in NUL");
    let mut out = Vec::new();
    for e in t.range(prefix.as_slice()..end.as_slice())? {
        let (k, v) = e?;
        out.push((k.value().to_vec(), dec("versions", k.value(), v.value())?));
    }
    Ok(out)
}

fn current(
    cur: &impl ReadableTable<&'static [u8], u64>,
    versions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Option<Version>> {
    let Some(seq) = cur
        .get(object_key(bucket, key).as_slice())?
        .map(|v| v.value())
    else {
        return Ok(None);
    };
    let vk = version_key(bucket, key, seq);
    match versions.get(vk.as_slice())? {
        Some(v) => Ok(Some(dec("versions", &vk, v.value())?)),
        None => Ok(None),
    }
}

/// Hides the visible null version of a key, if any (kept for as-of reads only).
fn hide_null(versions: &mut Table<&[u8], &[u8]>, bucket: &str, key: &str) -> Result<()> {
    for (k, mut v) in key_versions(versions, bucket, key)? {
        if v.version_id == "null" && !v.hidden {
            v.hidden = true;
            versions.insert(k.as_slice(), enc(&v).as_slice())?;
        }
    }
    Ok(())
}

pub(crate) fn check_condition(cur: Option<&Version>, cond: &PutCondition) -> Result<()> {
    let live = cur.filter(|v| !v.delete_marker);
    if cond.if_none_match_any && live.is_some() {
        return Err(CatalogError::PreconditionFailed);
    }
    if let Some(want) = &cond.if_match {
        let ok =
            live.is_some_and(|v| want == "*" || want.trim_matches('"') == v.etag.trim_matches('"'));
        if !ok {
            return Err(CatalogError::PreconditionFailed);
        }
    }
    if let Some(not) = &cond.if_none_match
        && live.is_some_and(|v| not.trim_matches('"') == v.etag.trim_matches('"'))
    {
        return Err(CatalogError::PreconditionFailed);
    }
    Ok(())
}

/// Writes a version inside a transaction: the shared core of PUT, COPY and multipart
/// completion. Every check happens before the first write.
pub(crate) fn insert_version(
    txn: &WriteTransaction,
    at: &Stamp,
    bucket: &str,
    key: &str,
    nv: NewVersion,
    cond: &PutCondition,
) -> Result<Version> {
    let b = load_bucket(txn, bucket)?;
    let mut meta = nv.meta;
    crate::lock::on_write(&b, &mut meta, at.at_ns)?;
    let mut versions = txn.open_table(VERSIONS)?;
    let mut cur_t = txn.open_table(CURRENT)?;
    check_condition(current(&cur_t, &versions, bucket, key)?.as_ref(), cond)?;
    let body = nv.body.unwrap_or(Body::Empty);
    if let Body::Chunks { policy, chunks } = &body {
        crate::chunks::acquire(
            &mut txn.open_table(CHUNKS)?,
            *policy,
            chunks,
            &nv.fresh,
            nv.inline.as_ref(),
        )?;
    }
    let (seq, mtime) = next_seq(txn, at)?;
    let version_id = if b.versioning == Versioning::Enabled {
        new_version_id(mtime, at)
    } else {
        hide_null(&mut versions, bucket, key)?;
        "null".to_string()
    };
    let change = ledger::record::Change::VersionWritten {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: version_id.clone(),
        size: nv.size,
        sha256: nv.sha256,
        parts: nv.part_digests,
    };
    let index = crate::audit::append(txn, mtime, nv.actor.clone(), change)?;
    meta.insert(crate::audit::LEDGER_INDEX.into(), index.to_string());
    let v = Version {
        key: key.to_string(),
        version_id,
        seq,
        mtime_ns: mtime,
        delete_marker: false,
        hidden: false,
        size: nv.size,
        etag: nv.etag,
        content_type: nv.content_type,
        meta,
        body,
        parts: nv.parts,
    };
    versions.insert(version_key(bucket, key, seq).as_slice(), enc(&v).as_slice())?;
    cur_t.insert(object_key(bucket, key).as_slice(), seq)?;
    for change in crate::lock::changes(bucket, &v, None) {
        crate::audit::append(txn, mtime, nv.actor.clone(), change)?;
    }
    Ok(v)
}

impl Catalog {
    /// Commits a new version whose chunks are already durable.
    pub async fn put_version(
        &self,
        bucket: &str,
        key: &str,
        nv: NewVersion,
        cond: PutCondition,
    ) -> Result<Version> {
        let command = Command::PutVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: nv,
            cond,
        };
        expect_outcome!(self.execute(command).await?, Version)
    }

    /// Looks up a version. Delete markers are returned too; callers decide what they mean.
    pub fn version(&self, bucket: &str, key: &str, sel: &VersionSel) -> Result<Version> {
        let txn = self.read()?;
        let buckets = txn.open_table(BUCKETS)?;
        if buckets.get(bucket)?.is_none() {
            return Err(CatalogError::NoSuchBucket(bucket.into()));
        }
        let versions = txn.open_table(VERSIONS)?;
        match sel {
            VersionSel::Latest => current(&txn.open_table(CURRENT)?, &versions, bucket, key)?
                .ok_or_else(|| CatalogError::NoSuchKey(key.into())),
            VersionSel::Id(id) => key_versions(&versions, bucket, key)?
                .into_iter()
                .map(|(_, v)| v)
                .find(|v| &v.version_id == id && !v.hidden)
                .ok_or_else(|| CatalogError::NoSuchVersion {
                    key: key.into(),
                    version: id.clone(),
                }),
            VersionSel::AsOf(t) => key_versions(&versions, bucket, key)?
                .into_iter()
                .map(|(_, v)| v)
                .find(|v| v.mtime_ns <= *t)
                .ok_or_else(|| CatalogError::NoSuchKey(key.into())),
        }
    }

    /// Changes the metadata of one existing version in place (object tags live there):
    /// `Latest` or `Id` only; delete markers have no metadata to change. Retried if
    /// another change to the version landed meanwhile.
    pub async fn update_version_meta(
        &self,
        bucket: &str,
        key: &str,
        sel: VersionSel,
        f: impl Fn(&mut std::collections::BTreeMap<String, String>) + Send + 'static,
    ) -> Result<Version> {
        self.update_version_meta_governed(bucket, key, sel, false, f)
            .await
    }

    /// `update_version_meta` that may shorten or lift GOVERNANCE retention when
    /// `bypass_governance` (an owner's request that asked to).
    pub async fn update_version_meta_governed(
        &self,
        bucket: &str,
        key: &str,
        sel: VersionSel,
        bypass_governance: bool,
        f: impl Fn(&mut std::collections::BTreeMap<String, String>) + Send + 'static,
    ) -> Result<Version> {
        let read = || {
            let v = self.version(bucket, key, &sel)?;
            if v.delete_marker {
                return Err(match &sel {
                    VersionSel::Id(id) => CatalogError::NoSuchVersion {
                        key: key.into(),
                        version: id.clone(),
                    },
                    _ => CatalogError::NoSuchKey(key.into()),
                });
            }
            Ok(v.meta)
        };
        self.read_modify_write(
            read,
            |m| {
                f(m);
                Ok(())
            },
            |expect, meta| {
                governed(
                    Command::ReplaceVersionMeta {
                        bucket: bucket.into(),
                        key: key.into(),
                        sel: sel.clone(),
                        expect,
                        meta,
                    },
                    bypass_governance,
                )
            },
        )
        .await
        .and_then(|o| expect_outcome!(o, Version))
    }

    /// DeleteObject: with no version id, adds a delete marker (or, with versioning off,
    /// removes the object from view); with one, removes that version for good.
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
    ) -> Result<DeleteOutcome> {
        self.delete_as(bucket, key, version_id, None).await
    }

    /// `delete`, recording `actor` (an access key) in the audit log.
    pub async fn delete_as(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
        actor: Option<String>,
    ) -> Result<DeleteOutcome> {
        self.delete_governed(bucket, key, version_id, actor, false)
            .await
    }

    /// `delete_as` that may remove a version under GOVERNANCE retention when
    /// `bypass_governance` (an owner's request that asked to).
    pub async fn delete_governed(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
        actor: Option<String>,
        bypass_governance: bool,
    ) -> Result<DeleteOutcome> {
        let command = Command::Delete {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id,
            actor,
        };
        expect_outcome!(
            self.execute(governed(command, bypass_governance)).await?,
            Deleted
        )
    }

    /// Drops hidden history (superseded null versions) older than `before_ns`: the
    /// as-of retention window. Returns how many versions were dropped.
    pub async fn expire_history(&self, before_ns: u64) -> Result<usize> {
        expect_outcome!(
            self.execute(Command::ExpireHistory { before_ns }).await?,
            Expired
        )
    }
}

/// The command as proposed: wrapped when it bypasses governance retention.
fn governed(command: Command, bypass_governance: bool) -> Command {
    if bypass_governance {
        Command::BypassingGovernance(Box::new(command))
    } else {
        command
    }
}

#[allow(clippy::too_many_arguments)] // the command's fields, as applied
pub(crate) fn replace_meta(
    txn: &WriteTransaction,
    at: &Stamp,
    bucket: &str,
    key: &str,
    sel: VersionSel,
    expect: &std::collections::BTreeMap<String, String>,
    meta: std::collections::BTreeMap<String, String>,
    bypass_governance: bool,
) -> Result<Version> {
    let b = load_bucket(txn, bucket)?;
    let mut versions = txn.open_table(VERSIONS)?;
    let all = key_versions(&versions, bucket, key)?;
    let found = match &sel {
        VersionSel::Latest => {
            let seq = txn
                .open_table(CURRENT)?
                .get(object_key(bucket, key).as_slice())?
                .map(|v| v.value());
            all.into_iter().find(|(_, v)| Some(v.seq) == seq)
        }
        VersionSel::Id(id) => all
            .into_iter()
            .find(|(_, v)| &v.version_id == id && !v.hidden),
        VersionSel::AsOf(_) => {
            return Err(CatalogError::Invalid(
                "only the latest version or a version id can be changed".into(),
            ));
        }
    };
    let (k, mut v) = match (found, sel) {
        (Some((k, v)), _) if !v.delete_marker => (k, v),
        (_, VersionSel::Id(id)) => {
            return Err(CatalogError::NoSuchVersion {
                key: key.into(),
                version: id,
            });
        }
        _ => return Err(CatalogError::NoSuchKey(key.into())),
    };
    if &v.meta != expect {
        return Err(CatalogError::Conflict);
    }
    crate::lock::check_change(&v, &v.meta, &meta, at.at_ns, bypass_governance)?;
    let old = std::mem::replace(&mut v.meta, meta);
    let changes = crate::lock::changes(bucket, &v, Some(&old));
    if !changes.is_empty() && crate::lock::bucket_lock(&b).is_none() {
        return Err(CatalogError::Invalid(format!(
            "bucket {bucket:?} has no object lock configuration; retention and legal hold \
             need a bucket created with object lock"
        )));
    }
    versions.insert(k.as_slice(), enc(&v).as_slice())?;
    for change in changes {
        crate::audit::append(txn, at.at_ns, None, change)?;
    }
    Ok(v)
}

pub(crate) fn delete(
    txn: &WriteTransaction,
    at: &Stamp,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
    actor: Option<String>,
    bypass_governance: bool,
) -> Result<DeleteOutcome> {
    let b = load_bucket(txn, bucket)?;
    let mut versions = txn.open_table(VERSIONS)?;
    let mut cur_t = txn.open_table(CURRENT)?;
    let ok = object_key(bucket, key);
    match version_id {
        None => {
            let exists = current(&cur_t, &versions, bucket, key)?.is_some_and(|v| !v.delete_marker);
            if b.versioning == Versioning::Unversioned && !exists {
                return Ok(DeleteOutcome {
                    version_id: None,
                    delete_marker: false,
                    ledger_index: None,
                });
            }
            let (seq, mtime) = next_seq(txn, at)?;
            let version_id = match b.versioning {
                Versioning::Enabled => new_version_id(mtime, at),
                _ => {
                    hide_null(&mut versions, bucket, key)?;
                    "null".to_string()
                }
            };
            let marker = Version {
                key: key.to_string(),
                version_id: version_id.clone(),
                seq,
                mtime_ns: mtime,
                delete_marker: true,
                hidden: b.versioning == Versioning::Unversioned,
                size: 0,
                etag: String::new(),
                content_type: None,
                meta: Default::default(),
                body: Body::Empty,
                parts: Vec::new(),
            };
            versions.insert(
                version_key(bucket, key, seq).as_slice(),
                enc(&marker).as_slice(),
            )?;
            let change = ledger::record::Change::DeleteMarker {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version_id: marker.version_id.clone(),
            };
            let index = Some(crate::audit::append(txn, mtime, actor, change)?);
            if marker.hidden {
                cur_t.remove(ok.as_slice())?;
                Ok(DeleteOutcome {
                    version_id: None,
                    delete_marker: false,
                    ledger_index: index,
                })
            } else {
                cur_t.insert(ok.as_slice(), seq)?;
                Ok(DeleteOutcome {
                    version_id: Some(version_id),
                    delete_marker: true,
                    ledger_index: index,
                })
            }
        }
        Some(id) => {
            let all = key_versions(&versions, bucket, key)?;
            let Some(pos) = all
                .iter()
                .position(|(_, v)| v.version_id == id && !v.hidden)
            else {
                return Err(CatalogError::NoSuchVersion {
                    key: key.into(),
                    version: id,
                });
            };
            let (k, v) = &all[pos];
            crate::lock::check_removal(v, at.at_ns, bypass_governance)?;
            versions.remove(k.as_slice())?;
            let change = ledger::record::Change::VersionDeleted {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version_id: id.clone(),
            };
            let index = Some(crate::audit::append(txn, at.at_ns, actor, change)?);
            crate::chunks::release(&mut txn.open_table(CHUNKS)?, at, v.body.chunk_refs())?;
            let newest_visible = all
                .iter()
                .enumerate()
                .find(|(i, (_, v))| *i != pos && !v.hidden);
            match newest_visible {
                Some((_, (_, nv))) => cur_t.insert(ok.as_slice(), nv.seq)?,
                None => cur_t.remove(ok.as_slice())?,
            };
            Ok(DeleteOutcome {
                version_id: Some(id),
                delete_marker: v.delete_marker,
                ledger_index: index,
            })
        }
    }
}

/// Drops hidden history (superseded null versions) older than `before_ns`.
pub(crate) fn expire_history(txn: &WriteTransaction, at: &Stamp, before_ns: u64) -> Result<usize> {
    let mut versions = txn.open_table(VERSIONS)?;
    let mut doomed = Vec::new();
    for e in versions.iter()? {
        let (k, v) = e?;
        let ver: Version = dec("versions", k.value(), v.value())?;
        // Locked history stays until its lock ends (it is only hidden, never removed).
        if ver.hidden
            && ver.mtime_ns < before_ns
            && crate::lock::check_removal(&ver, at.at_ns, false).is_ok()
        {
            doomed.push((k.value().to_vec(), ver));
        }
    }
    let mut chunks = txn.open_table(CHUNKS)?;
    for (k, ver) in &doomed {
        versions.remove(k.as_slice())?;
        crate::chunks::release(&mut chunks, at, ver.body.chunk_refs())?;
    }
    Ok(doomed.len())
}

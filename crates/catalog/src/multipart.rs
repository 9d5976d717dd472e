//! Multipart uploads: parts are committed as they arrive (their chunks referenced), and
//! completion turns a chosen list of parts into one version atomically.

use codec::Redundancy;
use ledger::record::PartDigest;
use md5::{Digest, Md5};
use redb::{ReadableTable, WriteTransaction};

use crate::command::{Command, Stamp, expect_outcome};
use crate::objects::{PutCondition, insert_version};
use crate::records::*;
use crate::table_keys::*;
use crate::{Catalog, CatalogError, Result};

impl Catalog {
    /// Starts a multipart upload.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        meta: std::collections::BTreeMap<String, String>,
    ) -> Result<Upload> {
        let upload = Upload {
            upload_id: random_hex(16),
            bucket: bucket.to_string(),
            key: key.to_string(),
            created_ns: now_ns(),
            content_type,
            meta,
        };
        expect_outcome!(
            self.execute(Command::CreateUpload { upload }).await?,
            Upload
        )
    }

    /// The upload `upload_id`.
    pub fn upload(&self, upload_id: &str) -> Result<Upload> {
        let t = self.read()?.open_table(UPLOADS)?;
        let v = t
            .get(upload_id)?
            .ok_or_else(|| CatalogError::NoSuchUpload(upload_id.into()))?;
        dec("uploads", upload_id.as_bytes(), v.value())
    }

    /// The uploads in progress in `bucket`.
    pub fn uploads(&self, bucket: &str) -> Result<Vec<Upload>> {
        let t = self.read()?.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            let up: Upload = dec("uploads", k.value().as_bytes(), v.value())?;
            if up.bucket == bucket {
                out.push(up);
            }
        }
        out.sort_by(|a, b| (&a.key, a.created_ns).cmp(&(&b.key, b.created_ns)));
        Ok(out)
    }

    /// Records a part whose chunks are durable; replaces an earlier part of that number.
    pub async fn put_part(
        &self,
        upload_id: &str,
        part: Part,
        fresh: Vec<codec::ChunkId>,
    ) -> Result<Part> {
        let upload_id = upload_id.to_string();
        let command = Command::PutPart {
            upload_id,
            part,
            fresh,
        };
        expect_outcome!(self.execute(command).await?, Part)
    }

    /// The parts of `upload_id` so far, by number.
    pub fn parts(&self, upload_id: &str) -> Result<Vec<Part>> {
        let txn = self.read()?;
        if txn.open_table(UPLOADS)?.get(upload_id)?.is_none() {
            return Err(CatalogError::NoSuchUpload(upload_id.into()));
        }
        let t = txn.open_table(PARTS)?;
        let start = part_key(upload_id, 0);
        let end = part_key(upload_id, u32::MAX);
        let mut out = Vec::new();
        for e in t.range(start.as_slice()..=end.as_slice())? {
            let (k, v) = e?;
            out.push(dec("parts", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Completes an upload from the listed (part number, ETag) pairs, in ascending
    /// order, into one version whose ETag is S3's MD5 of the parts' MD5s. `policy` is
    /// the version's redundancy if no part has chunks.
    pub async fn complete_upload(
        &self,
        upload_id: &str,
        chosen: Vec<(u32, String)>,
        cond: PutCondition,
        policy: Redundancy,
        actor: Option<String>,
    ) -> Result<Version> {
        let command = Command::CompleteUpload {
            upload_id: upload_id.to_string(),
            chosen,
            cond,
            policy,
            min_part_size: self.opts.min_part_size,
            actor,
        };
        expect_outcome!(self.execute(command).await?, Version)
    }

    /// Aborts an upload; its parts' chunks become garbage.
    pub async fn abort_upload(&self, upload_id: &str) -> Result<()> {
        let upload_id = upload_id.to_string();
        self.execute(Command::AbortUpload { upload_id }).await?;
        Ok(())
    }
}

pub(crate) fn create(txn: &WriteTransaction, up: Upload) -> Result<Upload> {
    crate::buckets::load_bucket(txn, &up.bucket)?;
    txn.open_table(UPLOADS)?
        .insert(up.upload_id.as_str(), enc(&up).as_slice())?;
    Ok(up)
}

pub(crate) fn put_part(
    txn: &WriteTransaction,
    at: &Stamp,
    upload_id: &str,
    part: Part,
    fresh: &[codec::ChunkId],
) -> Result<Part> {
    if txn.open_table(UPLOADS)?.get(upload_id)?.is_none() {
        return Err(CatalogError::NoSuchUpload(upload_id.into()));
    }
    let mut parts = txn.open_table(PARTS)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    let pk = part_key(upload_id, part.number);
    let old: Option<Part> = match parts.get(pk.as_slice())? {
        Some(v) => Some(dec("parts", &pk, v.value())?),
        None => None,
    };
    if let Body::Chunks {
        policy,
        chunks: refs,
    } = &part.body
    {
        crate::chunks::acquire(&mut chunks, *policy, refs, fresh, None)?;
    }
    if let Some(old) = old {
        crate::chunks::release(&mut chunks, at, old.body.chunk_refs())?;
    }
    parts.insert(pk.as_slice(), enc(&part).as_slice())?;
    Ok(part)
}

fn all_parts(
    parts_t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    upload_id: &str,
) -> Result<Vec<Part>> {
    let start = part_key(upload_id, 0);
    let end = part_key(upload_id, u32::MAX);
    let mut all = Vec::new();
    for e in parts_t.range(start.as_slice()..=end.as_slice())? {
        let (k, v) = e?;
        all.push(dec::<Part>("parts", k.value(), v.value())?);
    }
    Ok(all)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn complete(
    txn: &WriteTransaction,
    at: &Stamp,
    upload_id: &str,
    chosen: &[(u32, String)],
    cond: &PutCondition,
    policy: Redundancy,
    min_part: u64,
    actor: Option<String>,
) -> Result<Version> {
    let mut uploads = txn.open_table(UPLOADS)?;
    let up: Upload = match uploads.get(upload_id)? {
        Some(v) => dec("uploads", upload_id.as_bytes(), v.value())?,
        None => return Err(CatalogError::NoSuchUpload(upload_id.into())),
    };
    if chosen.is_empty() {
        return Err(CatalogError::Invalid(
            "you must specify at least one part".into(),
        ));
    }
    let mut parts_t = txn.open_table(PARTS)?;
    let all = all_parts(&parts_t, upload_id)?;
    let mut used = Vec::new();
    let mut last = 0u32;
    for (i, (n, etag)) in chosen.iter().enumerate() {
        if *n <= last && i > 0 {
            return Err(CatalogError::InvalidPart(format!(
                "parts must be listed in ascending order (part {n} after {last})"
            )));
        }
        last = *n;
        let p = all
            .iter()
            .find(|p| p.number == *n && p.etag.trim_matches('"') == etag.trim_matches('"'))
            .ok_or_else(|| {
                CatalogError::InvalidPart(format!("part {n} with ETag {etag} was not uploaded"))
            })?;
        if i + 1 < chosen.len() && p.size < min_part {
            return Err(CatalogError::EntityTooSmall {
                part: *n,
                size: p.size,
                min: min_part,
            });
        }
        used.push(p.clone());
    }
    let mut nv = assemble(&used, policy);
    nv.actor = actor;
    nv.content_type = up.content_type.clone();
    nv.meta = up.meta.clone();
    let v = insert_version(txn, at, &up.bucket, &up.key, nv, cond)?;
    // The version now holds its own references; drop every part's.
    let mut chunks = txn.open_table(CHUNKS)?;
    for p in &all {
        crate::chunks::release(&mut chunks, at, p.body.chunk_refs())?;
        parts_t.remove(part_key(upload_id, p.number).as_slice())?;
    }
    uploads.remove(upload_id)?;
    Ok(v)
}

/// The version made of the chosen parts: their chunks in order, S3's multipart ETag
/// (MD5 of the parts' MD5s, dash, count) and each part's digest for the audit log.
fn assemble(used: &[Part], policy: Redundancy) -> NewVersion {
    let mut md5 = Md5::new();
    let mut chunks = Vec::new();
    for p in used {
        md5.update(codec::unhex(p.etag.trim_matches('"')).unwrap_or_default());
        chunks.extend_from_slice(p.body.chunk_refs());
    }
    let policy = used
        .iter()
        .find_map(|p| match &p.body {
            Body::Chunks { policy, .. } => Some(*policy),
            _ => None,
        })
        .unwrap_or(policy);
    NewVersion {
        size: used.iter().map(|p| p.size).sum(),
        etag: format!("{}-{}", codec::hex(&md5.finalize()), used.len()),
        body: Some(Body::Chunks { policy, chunks }),
        parts: used.iter().map(|p| p.size).collect(),
        part_digests: used
            .iter()
            .map(|p| PartDigest {
                size: p.size,
                sha256: p.sha256.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn abort(txn: &WriteTransaction, at: &Stamp, upload_id: &str) -> Result<()> {
    let mut uploads = txn.open_table(UPLOADS)?;
    if uploads.remove(upload_id)?.is_none() {
        return Err(CatalogError::NoSuchUpload(upload_id.into()));
    }
    let mut parts_t = txn.open_table(PARTS)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    for p in all_parts(&parts_t, upload_id)? {
        crate::chunks::release(&mut chunks, at, p.body.chunk_refs())?;
        parts_t.remove(part_key(upload_id, p.number).as_slice())?;
    }
    Ok(())
}

//! Chunk reference counts. A chunk referenced by any version or pending part is never
//! collected; one whose count reached zero is collected after a grace period.

use codec::ChunkId;
use redb::{ReadableTable, Table, WriteTransaction};

use crate::command::{Command, Stamp, expect_outcome};

use crate::records::*;
use crate::{Catalog, CatalogError, Result};

/// Takes a reference on each chunk; creates records for chunks this write stored itself.
pub(crate) fn acquire(
    t: &mut Table<&[u8], &[u8]>,
    policy: codec::Redundancy,
    refs: &[ChunkRef],
    fresh: &[ChunkId],
    inline: Option<&(ChunkId, Vec<u8>)>,
) -> Result<()> {
    // Check first, write after: a refused write must leave nothing behind. A set, not
    // a scan of `fresh` per chunk: an object may have millions of chunks.
    let fresh: std::collections::HashSet<&ChunkId> = fresh.iter().collect();
    for r in refs {
        let inline_here = inline.is_some_and(|(id, _)| *id == r.id);
        if t.get(r.id.as_slice())?.is_none() && !fresh.contains(&r.id) && !inline_here {
            return Err(CatalogError::ChunkVanished);
        }
    }
    for r in refs {
        let rec = match t.get(r.id.as_slice())? {
            Some(v) => {
                let mut rec: ChunkRecord = dec("chunks", r.id.as_slice(), v.value())?;
                rec.refs += 1;
                rec.unreferenced_since_ns = None;
                rec
            }
            None => ChunkRecord {
                refs: 1,
                policy,
                plain_len: r.plain_len,
                sealed_len: r.sealed_len,
                unreferenced_since_ns: None,
                inline: inline.filter(|(id, _)| *id == r.id).map(|(_, s)| s.clone()),
            },
        };
        t.insert(r.id.as_slice(), enc(&rec).as_slice())?;
    }
    Ok(())
}

pub(crate) fn release(t: &mut Table<&[u8], &[u8]>, at: &Stamp, refs: &[ChunkRef]) -> Result<()> {
    let now = at.at_ns;
    for r in refs {
        let rec = match t.get(r.id.as_slice())? {
            Some(v) => {
                let mut rec: ChunkRecord = dec("chunks", r.id.as_slice(), v.value())?;
                rec.refs = rec.refs.saturating_sub(1);
                if rec.refs == 0 {
                    rec.unreferenced_since_ns = Some(now);
                }
                rec
            }
            None => continue,
        };
        t.insert(r.id.as_slice(), enc(&rec).as_slice())?;
    }
    Ok(())
}

impl Catalog {
    /// The record of chunk `id`, if any object refers to it.
    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>> {
        let t = self.read()?.open_table(CHUNKS)?;
        match t.get(id.as_slice())? {
            Some(v) => Ok(Some(dec("chunks", id.as_slice(), v.value())?)),
            None => Ok(None),
        }
    }

    /// How many chunk records there are (redb keeps the count: no scan).
    pub fn chunk_count(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        Ok(self.read()?.open_table(CHUNKS)?.len()?)
    }

    /// Every chunk record (for scrub and repair), in id order, from `after` on.
    pub fn chunks_page(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, ChunkRecord)>> {
        let t = self.read()?.open_table(CHUNKS)?;
        let start = after.map(|a| a.to_vec()).unwrap_or_default();
        let mut out = Vec::new();
        for e in t.range(start.as_slice()..)? {
            let (k, v) = e?;
            let id: ChunkId = match k.value().try_into() {
                Ok(id) => id,
                Err(_) => continue,
            };
            if Some(id) == after {
                continue;
            }
            out.push((id, dec("chunks", k.value(), v.value())?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes records of chunks unreferenced since before `older_than_ns`; returns them
    /// so the caller deletes their shards (after the records are gone, never before).
    pub async fn collect_chunks(
        &self,
        older_than_ns: u64,
        limit: usize,
    ) -> Result<Vec<(ChunkId, ChunkRecord)>> {
        let command = Command::CollectChunks {
            older_than_ns,
            limit,
        };
        expect_outcome!(self.execute(command).await?, Collected)
    }
}

pub(crate) fn collect(
    txn: &WriteTransaction,
    older_than_ns: u64,
    limit: usize,
) -> Result<Vec<(ChunkId, ChunkRecord)>> {
    let mut t = txn.open_table(CHUNKS)?;
    let mut doomed = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        let rec: ChunkRecord = dec("chunks", k.value(), v.value())?;
        if rec.refs == 0 && rec.unreferenced_since_ns.is_some_and(|t| t < older_than_ns) {
            if let Ok(id) = <ChunkId>::try_from(k.value()) {
                doomed.push((id, rec));
            }
            if doomed.len() >= limit {
                break;
            }
        }
    }
    for (id, _) in &doomed {
        t.remove(id.as_slice())?;
    }
    Ok(doomed)
}

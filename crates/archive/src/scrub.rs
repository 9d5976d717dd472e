//! Scrub and repair: read every shard of every chunk, verify it, rebuild what is missing
//! or corrupt from the intact ones, and collect garbage (unreferenced chunks, orphan
//! shards, expired history) once its grace period has passed.

use std::time::{Duration, Instant};

use catalog::ChunkRecord;
use codec::ChunkId;
use shards::{ShardKey, ShardMeta};

use crate::{Archive, Result};

#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Bytes read per second at most (the background scrubber sets this); None = full speed.
    pub rate_bytes_per_sec: Option<u64>,
    /// Also remove garbage past its grace period.
    pub collect_garbage: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScrubReport {
    pub chunks_checked: u64,
    pub shards_checked: u64,
    pub shards_missing: u64,
    pub shards_corrupt: u64,
    pub shards_repaired: u64,
    /// Chunks with fewer intact shards than needed: data lost (ids in hex).
    pub chunks_unrecoverable: Vec<String>,
    pub bytes_read: u64,
    pub chunks_collected: u64,
    pub orphan_shards_removed: u64,
    pub history_versions_expired: u64,
    /// Shards forgotten because their disk folder or segment file vanished.
    pub shards_lost_with_disks: u64,
    /// Disk space returned by compacting mostly-dead segments.
    pub bytes_reclaimed: u64,
}

enum ShardState {
    Ok(Vec<u8>),
    Missing,
    Corrupt,
}

impl Archive {
    /// Checks one chunk; rewrites any missing or corrupt shard. Blocking reads.
    async fn scrub_chunk(
        &self,
        id: ChunkId,
        rec: &ChunkRecord,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let policy = rec.policy;
        let disks = self.shard_disks(&id, policy);
        let this = self.clone();
        let states = tokio::task::spawn_blocking(move || {
            (0..policy.shard_count())
                .map(|i| match this.read_shard(&id, i, disks[i]) {
                    Ok(s) => ShardState::Ok(s),
                    Err(e) if e.is_missing() => ShardState::Missing,
                    Err(e) => {
                        tracing::warn!(error = %e, "scrub: corrupt shard");
                        ShardState::Corrupt
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| crate::ArchiveError::Storage(format!("scrub task failed: {e}")))?;
        report.chunks_checked += 1;
        let mut present = Vec::with_capacity(states.len());
        let mut bad = Vec::new();
        for (i, s) in states.into_iter().enumerate() {
            report.shards_checked += 1;
            match s {
                ShardState::Ok(data) => {
                    report.bytes_read += data.len() as u64;
                    present.push(Some(data));
                }
                ShardState::Missing => {
                    report.shards_missing += 1;
                    bad.push(i);
                    present.push(None);
                }
                ShardState::Corrupt => {
                    report.shards_corrupt += 1;
                    bad.push(i);
                    present.push(None);
                }
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        let rebuilt = match codec::redundancy::rebuild_all(policy, present, rec.sealed_len as usize)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(chunk = %codec::hex(&id), error = %e, "scrub: chunk cannot be rebuilt");
                report.chunks_unrecoverable.push(codec::hex(&id));
                return Ok(());
            }
        };
        let disks = self.shard_disks(&id, policy);
        let meta = ShardMeta {
            policy,
            sealed_len: rec.sealed_len,
            written_ms: 0,
        };
        for i in bad {
            let disk = self.inner.store.disk(disks[i]);
            disk.write(
                ShardKey {
                    chunk: id,
                    index: i as u8,
                },
                meta,
                rebuilt[i].clone(),
            )
            .await?;
            report.shards_repaired += 1;
        }
        Ok(())
    }

    /// Verifies every shard and repairs what it can. `progress` is called after each
    /// page of chunks with the report so far.
    pub async fn scrub(
        &self,
        opts: &ScrubOptions,
        progress: &(dyn Fn(&ScrubReport) + Send + Sync),
    ) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        report.shards_lost_with_disks = self
            .inner
            .store
            .check_disks()
            .iter()
            .map(|h| h.lost as u64)
            .sum();
        let started = Instant::now();
        let mut after = None;
        loop {
            let page = self.inner.catalog.chunks_page(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            for (id, rec) in &page {
                if rec.inline.is_some() {
                    continue; // kept in the catalog, which checksums its own pages
                }
                self.scrub_chunk(*id, rec, &mut report).await?;
                if let Some(rate) = opts.rate_bytes_per_sec.filter(|r| *r > 0) {
                    let due = Duration::from_secs_f64(report.bytes_read as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            progress(&report);
        }
        if opts.collect_garbage {
            self.collect_garbage(&mut report).await?;
        }
        progress(&report);
        Ok(report)
    }

    /// Removes what nothing references any more, once its grace period has passed.
    async fn collect_garbage(&self, report: &mut ScrubReport) -> Result<()> {
        let now = catalog::now_ns();
        let retention = self.inner.cfg.history_retention.as_nanos() as u64;
        report.history_versions_expired = self
            .inner
            .catalog
            .expire_history(now.saturating_sub(retention))
            .await? as u64;
        let grace = self.inner.cfg.gc_grace;
        let cutoff_ns = now.saturating_sub(grace.as_nanos() as u64);
        // Chunk records go first, shards after: a crash in between leaves orphan shards,
        // which the next pass removes, never a record without shards.
        loop {
            let doomed = self.inner.catalog.collect_chunks(cutoff_ns, 1024).await?;
            if doomed.is_empty() {
                break;
            }
            for (id, rec) in doomed {
                for i in 0..rec.policy.shard_count() {
                    let key = ShardKey {
                        chunk: id,
                        index: i as u8,
                    };
                    for d in self.inner.store.locate(&key) {
                        self.inner.store.disk(d).delete(key).await?;
                    }
                }
                report.chunks_collected += 1;
            }
        }
        // Orphans: shards of uploads that never committed (crash, dropped connection).
        let cutoff_ms = cutoff_ns / 1_000_000;
        for disk in self.inner.store.disks() {
            for (key, meta) in disk.list() {
                if meta.written_ms < cutoff_ms && self.inner.catalog.chunk(&key.chunk)?.is_none() {
                    disk.delete(key).await?;
                    report.orphan_shards_removed += 1;
                }
            }
        }
        // Space comes back when segments that are at least half dead are rewritten.
        for disk in self.inner.store.disks() {
            report.bytes_reclaimed += disk.compact(0.5).await?.bytes_reclaimed;
        }
        Ok(())
    }
}

//! Scrub and repair: read every shard of every chunk, verify it, rebuild what is missing
//! or corrupt from the intact ones, and collect garbage (unreferenced chunks, orphan
//! shards, expired history) once its grace period has passed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use catalog::ChunkRecord;
use codec::ChunkId;
use futures::StreamExt;
use shards::{ShardKey, ShardMeta};

use crate::chunks::ShardReadError;
use crate::topology::{Loc, Topology};
use crate::{Archive, Result};

/// What a scrub pass does.
#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Bytes read per second at most (the background scrubber sets this); None = full speed.
    pub rate_bytes_per_sec: Option<u64>,
    /// Also remove garbage past its grace period.
    pub collect_garbage: bool,
    /// Only restore redundancy from where shards are (listings), without reading and
    /// verifying this node's shards: the quick pass after a node goes or returns.
    pub repair_only: bool,
}

/// What a scrub pass found and did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScrubReport {
    /// Chunks looked at.
    pub chunks_checked: u64,
    /// Shards read and checked.
    pub shards_checked: u64,
    /// Shards that should exist and do not.
    pub shards_missing: u64,
    /// Shards whose checksum did not match (bitrot).
    pub shards_corrupt: u64,
    /// Shards rebuilt or moved to where they belong.
    pub shards_repaired: u64,
    /// Chunks with fewer intact shards than needed: data lost (ids in hex).
    pub chunks_unrecoverable: Vec<String>,
    /// Bytes read to verify shards, plus bytes repair wrote (both count toward the rate).
    pub bytes_read: u64,
    /// Unreferenced chunks removed after the grace period.
    pub chunks_collected: u64,
    /// Shards of no chunk removed after the grace period.
    pub orphan_shards_removed: u64,
    /// Hidden null versions dropped after the history retention.
    pub history_versions_expired: u64,
    /// Shards forgotten because their disk folder or segment file vanished.
    pub shards_lost_with_disks: u64,
    /// Shards on some disk whose chunk has no record (an upload that failed or was
    /// retried): garbage collection removes them after the grace period.
    pub orphan_shards_pending: u64,
    /// Copies removed because the shard is back at its place (after repair or a
    /// node's return): no shard is kept twice.
    pub stray_shards_removed: u64,
    /// Disk space returned by compacting mostly-dead segments.
    pub bytes_reclaimed: u64,
    /// Chunks a repair pass found below full redundancy or away from their place, and
    /// queued for rebuilding (the most endangered first).
    #[serde(default)]
    pub chunks_queued: u64,
}

/// Where every shard was found when a pass began: spot -> when it was written, from
/// this node's disks and every reachable node's listing.
struct Presence {
    at: HashMap<ShardKey, Vec<(usize, u64)>>,
    /// Remote nodes that answered; shards on the others are neither missing nor present.
    reachable: HashSet<cluster::NodeId>,
}

impl Presence {
    fn has(&self, key: &ShardKey, spot: usize) -> bool {
        self.at
            .get(key)
            .is_some_and(|v| v.iter().any(|(s, _)| *s == spot))
    }
}

/// Chunks checked at once by a scrub or repair pass: repair is bound by the fsyncs of
/// the nodes it writes to, and more writes in flight share each group commit.
const SCRUB_PARALLELISM: usize = 64;

impl ScrubReport {
    /// Adds the counts of one chunk's check.
    fn add(&mut self, o: &ScrubReport) {
        self.shards_checked += o.shards_checked;
        self.shards_missing += o.shards_missing;
        self.shards_corrupt += o.shards_corrupt;
        self.shards_repaired += o.shards_repaired;
        self.chunks_unrecoverable
            .extend(o.chunks_unrecoverable.iter().cloned());
        self.bytes_read += o.bytes_read;
        self.stray_shards_removed += o.stray_shards_removed;
    }
}

enum ShardState {
    Ok,
    Missing,
    Corrupt,
    /// Its node did not answer: nothing can be said (or done) now.
    Unknown,
}

impl Archive {
    async fn presence(&self, t: &Topology) -> Result<Presence> {
        let store = self.inner.store.clone();
        let local: Vec<(usize, Vec<(ShardKey, shards::ShardMeta)>)> =
            tokio::task::spawn_blocking(move || {
                store
                    .disks()
                    .iter()
                    .enumerate()
                    .map(|(d, disk)| (d, disk.list()))
                    .collect()
            })
            .await
            .map_err(|source| crate::ArchiveError::Task {
                what: "listing",
                source,
            })?;
        let mut at: HashMap<ShardKey, Vec<(usize, u64)>> = HashMap::new();
        for (d, list) in local {
            let Some(spot) = t.local_spot(d) else {
                continue;
            };
            for (k, m) in list {
                at.entry(k).or_default().push((spot, m.written_ms));
            }
        }
        let mut reachable = HashSet::new();
        if let Some(m) = self.inner.cluster.get() {
            let lists = t
                .remote_nodes()
                .into_iter()
                .filter(|(node, _)| self.node_answering(node))
                .map(|(node, addr)| async move {
                    let r = m.client().list_shards(&addr).await;
                    (node, r)
                });
            for (node, r) in futures::future::join_all(lists).await {
                match r {
                    Ok(list) => {
                        for (disk, e) in list {
                            if let (Some(spot), Some((k, meta))) =
                                (t.spot_of(&node, disk), e.parts())
                            {
                                at.entry(k).or_default().push((spot, meta.written_ms));
                            }
                        }
                        reachable.insert(node);
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "scrub: node unreachable; its shards are skipped this pass")
                    }
                }
            }
        }
        Ok(Presence { at, reachable })
    }

    /// Whether a spot's node listed its shards at the start of the pass and still
    /// answers heartbeats: a node that falls silent mid-pass (a partition) is left for
    /// a later pass rather than waited on, request by request.
    fn spot_reachable(&self, t: &Topology, p: &Presence, spot: usize) -> bool {
        t.node_of(spot)
            .is_none_or(|n| p.reachable.contains(n) && self.node_answering(n))
    }

    /// Removes one copy of a shard from one spot.
    async fn delete_shard_at(&self, t: &Topology, spot: usize, key: ShardKey) -> Result<()> {
        match &t.locs[spot] {
            Loc::Local(d) => Ok(self.inner.store.disk(*d).delete(key).await?),
            Loc::Remote { addr, disk, .. } => {
                let m = self
                    .inner
                    .cluster
                    .get()
                    .expect("remote spots exist only in a cluster");
                m.client()
                    .delete_shard(addr, Some(*disk), &key)
                    .await
                    .map_err(crate::ArchiveError::from)
            }
        }
    }

    /// Checks one chunk: every shard where placement puts it (local shards are read and
    /// verified; other nodes verify their own). A missing or corrupt shard is copied
    /// from a stray copy or rebuilt from the others; stray copies are then removed.
    async fn scrub_chunk(
        &self,
        id: ChunkId,
        rec: &ChunkRecord,
        t: &Topology,
        presence: &Presence,
        opts: &ScrubOptions,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let policy = rec.policy;
        let placed = t.place(&id, policy, &|_| true);
        let n = policy.shard_count();
        let key = |i: usize| ShardKey {
            chunk: id,
            index: i as u8,
        };
        let mut states = Vec::with_capacity(n);
        for (i, &spot) in placed.iter().enumerate() {
            report.shards_checked += 1;
            let state = match &t.locs[spot] {
                Loc::Local(_) if opts.repair_only => match presence.has(&key(i), spot) {
                    true => ShardState::Ok,
                    false => ShardState::Missing,
                },
                Loc::Local(_) => match self.read_shard_at(t, spot, key(i)).await {
                    Ok(data) => {
                        report.bytes_read += data.len() as u64;
                        ShardState::Ok
                    }
                    Err(ShardReadError::Missing) => ShardState::Missing,
                    Err(e) => {
                        tracing::warn!(shard = %key(i), error = %e, "scrub: corrupt shard");
                        ShardState::Corrupt
                    }
                },
                Loc::Remote { .. } if !self.spot_reachable(t, presence, spot) => {
                    ShardState::Unknown
                }
                Loc::Remote { .. } if presence.has(&key(i), spot) => ShardState::Ok,
                Loc::Remote { .. } => ShardState::Missing,
            };
            // The listing predates chunks written during the pass: look before repairing.
            let state = match state {
                ShardState::Missing if self.read_shard_at(t, spot, key(i)).await.is_ok() => {
                    ShardState::Ok
                }
                s => s,
            };
            match state {
                ShardState::Missing => report.shards_missing += 1,
                ShardState::Corrupt => report.shards_corrupt += 1,
                _ => {}
            }
            states.push(state);
        }
        let bad: Vec<usize> = (0..n)
            .filter(|&i| matches!(states[i], ShardState::Missing | ShardState::Corrupt))
            .collect();
        let meta = ShardMeta {
            policy,
            sealed_len: rec.sealed_len,
            written_ms: 0,
        };
        let mut rebuilt: Option<Vec<Vec<u8>>> = None;
        let mut repaired_here = Vec::new();
        for &i in &bad {
            // A copy somewhere else (written while its place was away) moves back;
            // otherwise the shard is rebuilt from the others.
            let mut data = None;
            for &(s, _) in presence.at.get(&key(i)).into_iter().flatten() {
                if s != placed[i]
                    && self.spot_reachable(t, presence, s)
                    && let Ok(d) = self.read_shard_at(t, s, key(i)).await
                {
                    data = Some(d);
                    break;
                }
            }
            let data = match data {
                Some(d) => d,
                None => {
                    if rebuilt.is_none() {
                        let (shards, _) = self.gather_shards(&id, policy).await;
                        match codec::redundancy::rebuild_all(
                            policy,
                            shards,
                            rec.sealed_len as usize,
                        ) {
                            Ok(r) => rebuilt = Some(r),
                            Err(e) => {
                                tracing::error!(chunk = %codec::hex(&id), error = %e, "scrub: chunk cannot be rebuilt");
                                report.chunks_unrecoverable.push(codec::hex(&id));
                                return Ok(());
                            }
                        }
                    }
                    rebuilt.as_ref().expect("just rebuilt")[i].clone()
                }
            };
            report.bytes_read += data.len() as u64; // repair traffic counts toward the rate
            if let Err(e) = self.write_shard_at(t, placed[i], key(i), meta, data).await {
                tracing::warn!(shard = %key(i), error = %e, "scrub: cannot write the repaired shard");
                continue;
            }
            states[i] = ShardState::Ok;
            repaired_here.push(i);
            report.shards_repaired += 1;
        }
        // Copies away from their place, once the placed copy is known good.
        for (i, &spot) in placed.iter().enumerate() {
            // Only when the copy at its place is known (a local read may have been
            // served from another disk of this node: that copy is not a stray).
            let at_home = presence.has(&key(i), spot) || repaired_here.contains(&i);
            if !matches!(states[i], ShardState::Ok) || !at_home {
                continue;
            }
            for &(s, _) in presence.at.get(&key(i)).into_iter().flatten() {
                if s == spot || !self.spot_reachable(t, presence, s) {
                    continue;
                }
                self.delete_shard_at(t, s, key(i)).await?;
                report.stray_shards_removed += 1;
            }
        }
        Ok(())
    }

    /// How many shards of a chunk are missing from their place, if any shard is away
    /// from it (missing, or a stray copy elsewhere); None when all is in place. Spots on
    /// nodes that did not answer count as in place: nothing can be done about them now.
    fn misplaced(
        &self,
        t: &Topology,
        presence: &Presence,
        id: &ChunkId,
        rec: &ChunkRecord,
    ) -> Option<usize> {
        let placed = t.place(id, rec.policy, &|_| true);
        let mut missing = 0;
        let mut away = false;
        for (i, &spot) in placed.iter().enumerate() {
            let key = ShardKey {
                chunk: *id,
                index: i as u8,
            };
            if !presence.has(&key, spot) && self.spot_reachable(t, presence, spot) {
                missing += 1;
            }
            away |= presence
                .at
                .get(&key)
                .is_some_and(|v| v.iter().any(|(s, _)| *s != spot));
        }
        (missing > 0 || away).then_some(missing)
    }

    /// Checks chunks a few at a time (repair is mostly waiting on other nodes), within
    /// the read rate.
    async fn check_chunks(
        &self,
        chunks: Vec<(ChunkId, ChunkRecord)>,
        t: &Topology,
        presence: &Presence,
        opts: &ScrubOptions,
        report: &mut ScrubReport,
        started: Instant,
    ) -> Result<()> {
        let checks = chunks.into_iter().map(|(id, rec)| async move {
            let mut r = ScrubReport::default();
            self.scrub_chunk(id, &rec, t, presence, opts, &mut r)
                .await?;
            Ok::<_, crate::ArchiveError>(r)
        });
        let mut results = futures::stream::iter(checks).buffer_unordered(SCRUB_PARALLELISM);
        while let Some(r) = results.next().await {
            report.add(&r?);
            if let Some(rate) = opts.rate_bytes_per_sec.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(report.bytes_read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
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
        let _one_pass_at_a_time = self.inner.passes.lock().await;
        let mut report = ScrubReport {
            shards_lost_with_disks: self
                .inner
                .store
                .check_disks()
                .iter()
                .map(|h| h.lost as u64)
                .sum(),
            ..ScrubReport::default()
        };
        let started = Instant::now();
        let t = self.topology();
        let presence = self.presence(&t).await?;
        // A full scrub reads every chunk, in id order. A repair pass only touches chunks
        // with a shard away from its place, the most endangered (fewest left) first.
        let mut endangered: Vec<(usize, ChunkId, ChunkRecord)> = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.catalog.chunks_page(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let mut todo = Vec::with_capacity(page.len());
            for (id, rec) in page {
                if rec.inline.is_some() {
                    continue; // kept in the catalog, which checksums its own pages
                }
                report.chunks_checked += 1;
                if !opts.repair_only {
                    todo.push((id, rec));
                } else if let Some(missing) = self.misplaced(&t, &presence, &id, &rec) {
                    endangered.push((missing, id, rec));
                }
            }
            self.check_chunks(todo, &t, &presence, opts, &mut report, started)
                .await?;
            progress(&report);
        }
        report.chunks_queued = endangered.len() as u64;
        progress(&report);
        endangered.sort_by_key(|e| std::cmp::Reverse(e.0));
        let todo = endangered
            .into_iter()
            .map(|(_, id, rec)| (id, rec))
            .collect();
        self.check_chunks(todo, &t, &presence, opts, &mut report, started)
            .await?;
        for (key, copies) in &presence.at {
            if self.inner.catalog.chunk(&key.chunk)?.is_none() {
                report.orphan_shards_pending += copies.len() as u64;
            }
        }
        if opts.collect_garbage {
            self.collect_garbage(&mut report).await?;
        }
        // Every pass that rebuilds shards counts, whether a repair pass, the background
        // scrub or an operator's `edgecloud scrub` found the damage first.
        self.inner
            .repair
            .lock()
            .expect("repair lock")
            .shards_repaired_total += report.shards_repaired;
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
        let t = self.topology();
        let presence = self.presence(&t).await?;
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
                    for &(spot, _) in presence.at.get(&key).into_iter().flatten() {
                        if self.spot_reachable(&t, &presence, spot) {
                            self.delete_shard_at(&t, spot, key).await?;
                        }
                    }
                }
                report.chunks_collected += 1;
            }
        }
        // Orphans: shards of uploads that never committed (crash, dropped connection),
        // and shards of collected chunks on nodes that were away. Uploads still running
        // anywhere keep theirs: asked after the listing above, so an upload that holds a
        // chunk listed there either still holds it or has committed its record.
        let Some(uploading) = self.uploading_everywhere(&t).await else {
            return self.compact(report).await;
        };
        let cutoff_ms = cutoff_ns / 1_000_000;
        for (key, copies) in &presence.at {
            for &(spot, written_ms) in copies {
                if written_ms < cutoff_ms
                    && !uploading.contains(&key.chunk)
                    && self.spot_reachable(&t, &presence, spot)
                    && self.inner.catalog.chunk(&key.chunk)?.is_none()
                {
                    self.delete_shard_at(&t, spot, *key).await?;
                    report.orphan_shards_removed += 1;
                }
            }
        }
        self.compact(report).await
    }

    /// Space comes back when segments that are at least half dead are rewritten.
    async fn compact(&self, report: &mut ScrubReport) -> Result<()> {
        for disk in self.inner.store.disks() {
            report.bytes_reclaimed += disk.compact(0.5).await?.bytes_reclaimed;
        }
        Ok(())
    }

    /// The chunks uploads on every node are writing; `None` when a node did not answer
    /// (its uploads are unknown, so no orphan is collected this pass).
    async fn uploading_everywhere(&self, t: &Topology) -> Option<HashSet<ChunkId>> {
        let mut all: HashSet<ChunkId> = self.inner.store.uploading().list().into_iter().collect();
        let Some(m) = self.inner.cluster.get() else {
            return Some(all);
        };
        let asks = t
            .remote_nodes()
            .into_iter()
            .map(|(node, addr)| async move { (node, m.client().uploading(&addr).await) });
        for (node, r) in futures::future::join_all(asks).await {
            match r {
                Ok(ids) => all.extend(ids),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "gc: cannot ask a node which uploads it is writing; orphan shards are kept this pass");
                    return None;
                }
            }
        }
        Some(all)
    }
}

//! Scrub and repair: read every shard of every chunk, verify it, rebuild what is missing
//! or corrupt from the intact ones, and collect garbage (unreferenced chunks, orphan
//! shards, expired history) once its grace period has passed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use catalog::ChunkRecord;
use codec::{ChunkId, Redundancy};
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

/// Chunks a scrub or repair pass checks together: each step of a batch is one request
/// per node, and its writes on a node share one group commit.
const SCRUB_BATCH: usize = 64;
/// Batches in flight at once: while one waits on reads, another decodes or writes.
/// Memory: up to 16 x 64 chunks' shards when this node rebuilds them all (~160 MiB at
/// 64 KiB chunks); most rebuilds happen at the shards' new homes.
const SCRUB_BATCHES_AT_ONCE: usize = 16;

/// The node-to-node path where a node rebuilds shards placed on it
/// (`Archive::rebuild_here`), asked by the node running a repair pass.
pub const REBUILD_PATH: &str = "/v1/repair/rebuild";
/// How long a repair pass waits for a node's rebuilds before doing them itself.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// One shard a node is asked to rebuild onto its own disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RebuildItem {
    /// The chunk id (hex).
    pub chunk: String,
    /// The shard to rebuild (placed on the asked node).
    pub index: u8,
    /// Shards of the chunk not to read (missing or corrupt at their place).
    pub skip: Vec<u8>,
}

/// What a node did with one shard it was asked to rebuild.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildAnswer {
    /// Rebuilt from other shards and written at its place.
    Rebuilt,
    /// Already at its place: written after the asking node listed shards.
    Present,
    /// Not rebuilt, and why.
    Failed(String),
}

/// One chunk as a batch checks it.
struct Check {
    id: ChunkId,
    rec: ChunkRecord,
    /// Where each shard belongs.
    placed: Vec<usize>,
    states: Vec<ShardState>,
    /// Shards read (sources for a rebuild, or a stray copy of a bad shard), then the
    /// restored ones: index -> data.
    data: HashMap<usize, Vec<u8>>,
    /// Shards written back to their place in this pass.
    repaired: Vec<usize>,
    /// Too few shards to rebuild: data lost.
    lost: bool,
    /// Restore only this shard (a rebuild asked of this node: the other bad ones are
    /// other nodes' to restore).
    only: Option<usize>,
}

impl Check {
    fn key(&self, i: usize) -> ShardKey {
        ShardKey {
            chunk: self.id,
            index: i as u8,
        }
    }

    /// The shards missing or corrupt at their place.
    fn bad(&self) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| matches!(self.states[i], ShardState::Missing | ShardState::Corrupt))
            .collect()
    }

    /// The bad shards to restore here: all of them, or the one asked for.
    fn to_restore(&self) -> Vec<usize> {
        match self.only {
            Some(i) => vec![i],
            None => self.bad(),
        }
    }
}

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
            Loc::Remote { addr, disk, .. } => self
                .client()
                .delete_shard(addr, Some(*disk), &key)
                .await
                .map_err(crate::ArchiveError::from),
        }
    }

    /// Checks a batch of chunks: every shard where placement puts it (local shards are
    /// read and verified in a full scrub; other nodes verify their own). A missing or
    /// corrupt shard is copied from a stray copy or rebuilt from the others; stray copies
    /// are then removed. Each step moves the whole batch's shards at once, a request per
    /// node (`shard_batches`).
    async fn scrub_batch(
        &self,
        batch: Vec<(ChunkId, ChunkRecord)>,
        t: &Topology,
        presence: &Presence,
        opts: &ScrubOptions,
    ) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut checks: Vec<Check> = batch
            .into_iter()
            .map(|(id, rec)| {
                let placed = t.place(&id, rec.policy, &|_| true);
                Check {
                    states: Vec::with_capacity(placed.len()),
                    placed,
                    id,
                    rec,
                    data: HashMap::new(),
                    repaired: Vec::new(),
                    lost: false,
                    only: None,
                }
            })
            .collect();
        // 1. The state of every shard at its place: the listings say, and a full scrub
        //    reads this node's shards to verify them.
        let mut verify = Vec::new();
        for (c, check) in checks.iter_mut().enumerate() {
            for (i, &spot) in check.placed.iter().enumerate() {
                report.shards_checked += 1;
                let key = check.key(i);
                let state = match &t.locs[spot] {
                    Loc::Local(_) if !opts.repair_only => {
                        verify.push(((c, i), (spot, key)));
                        ShardState::Unknown
                    }
                    Loc::Local(_) if presence.has(&key, spot) => ShardState::Ok,
                    Loc::Local(_) => ShardState::Missing,
                    Loc::Remote { .. } if !self.spot_reachable(t, presence, spot) => {
                        ShardState::Unknown
                    }
                    Loc::Remote { .. } if presence.has(&key, spot) => ShardState::Ok,
                    Loc::Remote { .. } => ShardState::Missing,
                };
                check.states.push(state);
            }
        }
        let (at, wanted): (Vec<_>, Vec<_>) = verify.into_iter().unzip();
        for ((c, i), r) in at.into_iter().zip(self.read_shards_at(t, &wanted).await) {
            checks[c].states[i] = match r {
                Ok(data) => {
                    report.bytes_read += data.len() as u64;
                    ShardState::Ok
                }
                Err(ShardReadError::Missing) => ShardState::Missing,
                Err(e) => {
                    tracing::warn!(shard = %checks[c].key(i), error = %e, "scrub: corrupt shard");
                    ShardState::Corrupt
                }
            };
        }
        // 2. Shards whose new home is another node are rebuilt there (reads spread over
        //    the cluster instead of all coming here); that node first looks whether the
        //    shard is there already.
        self.delegate_rebuilds(t, presence, &mut checks, &mut report)
            .await;
        // 3. The listings predate chunks written during the pass: look for the other
        //    missing shards before rebuilding them here.
        let mut recheck = Vec::new();
        for (c, check) in checks.iter().enumerate() {
            for (i, state) in check.states.iter().enumerate() {
                if matches!(state, ShardState::Missing) {
                    recheck.push(((c, i), (check.placed[i], check.key(i))));
                }
            }
        }
        let (at, wanted): (Vec<_>, Vec<_>) = recheck.into_iter().unzip();
        for ((c, i), r) in at.into_iter().zip(self.read_shards_at(t, &wanted).await) {
            if r.is_ok() {
                checks[c].states[i] = ShardState::Ok;
            }
        }
        for check in &checks {
            for state in &check.states {
                match state {
                    ShardState::Missing => report.shards_missing += 1,
                    ShardState::Corrupt => report.shards_corrupt += 1,
                    _ => {}
                }
            }
        }
        // 4. The rest here: moved back from a copy elsewhere, or rebuilt.
        self.restore(t, Some(presence), &mut checks, &mut report)
            .await?;
        // 5. Copies away from their place, once the placed copy is known good (a local
        //    read may have been served from another disk of this node: not a stray).
        let mut strays = Vec::new();
        for check in checks.iter().filter(|c| !c.lost) {
            for (i, &spot) in check.placed.iter().enumerate() {
                let key = check.key(i);
                let at_home = presence.has(&key, spot) || check.repaired.contains(&i);
                if !matches!(check.states[i], ShardState::Ok) || !at_home {
                    continue;
                }
                for &(s, _) in presence.at.get(&key).into_iter().flatten() {
                    if s != spot && self.spot_reachable(t, presence, s) {
                        strays.push((s, key));
                    }
                }
            }
        }
        for ((_, key), r) in strays.iter().zip(self.delete_shards_at(t, &strays).await) {
            match r {
                Ok(()) => report.stray_shards_removed += 1,
                Err(e) => {
                    tracing::warn!(shard = %key, error = %e, "scrub: cannot remove a stray copy")
                }
            }
        }
        Ok(report)
    }

    /// Restores the bad shards of `checks` (missing or corrupt at their place): a copy
    /// away from its place moves back (with `presence`: where shards were listed);
    /// otherwise the chunk is rebuilt from `needed` others, this node's and this site's
    /// first. Each step reads or writes the whole batch at once.
    async fn restore(
        &self,
        t: &Topology,
        presence: Option<&Presence>,
        checks: &mut [Check],
        report: &mut ScrubReport,
    ) -> Result<()> {
        // 2. What each bad shard is made from: a copy away from its place (written while
        //    the place was away) moves back; otherwise the chunk is rebuilt from `needed`
        //    shards at their places, nearest and data shards first.
        let mut reads = Vec::new();
        for (c, check) in checks.iter().enumerate() {
            let bad = check.bad();
            let mut rebuild = false;
            for i in check.to_restore() {
                let key = check.key(i);
                let stray = presence.and_then(|p| {
                    p.at.get(&key)
                        .into_iter()
                        .flatten()
                        .find(|&&(s, _)| s != check.placed[i] && self.spot_reachable(t, p, s))
                });
                match stray {
                    Some(&(s, _)) => reads.push(((c, i), (s, key))),
                    None => rebuild = true,
                }
            }
            if rebuild {
                let needed = check.rec.policy.needed();
                let mut sources: Vec<usize> = (0..check.placed.len())
                    .filter(|&j| matches!(check.states[j], ShardState::Ok) && !bad.contains(&j))
                    .collect();
                sources.sort_by_key(|&j| {
                    let spot = check.placed[j];
                    let local = matches!(t.locs[spot], Loc::Local(_));
                    (!local, t.spots[spot].site != t.my_site, j >= needed, j)
                });
                for j in sources.into_iter().take(needed) {
                    reads.push(((c, j), (check.placed[j], check.key(j))));
                }
            }
        }
        let (at, wanted): (Vec<_>, Vec<_>) = reads.into_iter().unzip();
        for ((c, i), r) in at.into_iter().zip(self.read_shards_at(t, &wanted).await) {
            if let Ok(data) = r {
                checks[c].data.insert(i, data);
            }
        }
        // 3. Rebuild (on the blocking pool, the whole batch at once); a chunk whose
        //    sources were not all readable gathers its shards the careful way (hedged
        //    reads, then a search of every node).
        for check in checks.iter_mut() {
            let bad = check.bad();
            let short = check
                .to_restore()
                .iter()
                .any(|i| !check.data.contains_key(i));
            let have = check.data.keys().filter(|i| !bad.contains(i)).count();
            if short && have < check.rec.policy.needed() {
                let (shards, _) = self.gather_shards(&check.id, check.rec.policy).await;
                for (j, s) in shards.into_iter().enumerate() {
                    if let Some(s) = s
                        && !bad.contains(&j)
                    {
                        check.data.insert(j, s);
                    }
                }
            }
        }
        // The sources move into the decoder: only restored shards are written after it.
        let todo: Vec<(usize, Redundancy, usize, Vec<Option<Vec<u8>>>)> = checks
            .iter_mut()
            .enumerate()
            .filter_map(|(c, check)| {
                let bad = check.bad();
                if !check
                    .to_restore()
                    .iter()
                    .any(|i| !check.data.contains_key(i))
                {
                    return None; // nothing to rebuild: every bad shard has a copy
                }
                let shards = (0..check.placed.len())
                    .map(|j| match bad.contains(&j) {
                        true => None,
                        false => check.data.remove(&j),
                    })
                    .collect();
                Some((c, check.rec.policy, check.rec.sealed_len as usize, shards))
            })
            .collect();
        let rebuilt = tokio::task::spawn_blocking(move || {
            todo.into_iter()
                .map(|(c, policy, len, shards)| {
                    (c, codec::redundancy::rebuild_all(policy, shards, len))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|source| crate::ArchiveError::Task {
            what: "repair decoder",
            source,
        })?;
        for (c, r) in rebuilt {
            let check = &mut checks[c];
            match r {
                Ok(all) => {
                    let wanted = check.to_restore();
                    for (i, shard) in all.into_iter().enumerate() {
                        if wanted.contains(&i) {
                            check.data.entry(i).or_insert(shard);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(chunk = %codec::hex(&check.id), error = %e, "scrub: chunk cannot be rebuilt");
                    report.chunks_unrecoverable.push(codec::hex(&check.id));
                    check.lost = true;
                }
            }
        }
        // 4. Write every restored shard to its place.
        let mut writes = Vec::new();
        let mut wrote = Vec::new();
        for (c, check) in checks.iter_mut().enumerate() {
            if check.lost {
                continue;
            }
            let meta = ShardMeta {
                policy: check.rec.policy,
                sealed_len: check.rec.sealed_len,
                written_ms: 0,
            };
            for i in check.to_restore() {
                if let Some(data) = check.data.remove(&i) {
                    report.bytes_read += data.len() as u64; // repair traffic counts toward the rate
                    writes.push((check.placed[i], check.key(i), meta, data));
                    wrote.push((c, i));
                }
            }
        }
        for ((c, i), r) in wrote.into_iter().zip(self.write_shards_at(t, writes).await) {
            match r {
                Ok(()) => {
                    checks[c].states[i] = ShardState::Ok;
                    checks[c].repaired.push(i);
                    report.shards_repaired += 1;
                }
                Err(e) => {
                    tracing::warn!(shard = %checks[c].key(i), error = %e, "scrub: cannot write the repaired shard")
                }
            }
        }
        Ok(())
    }

    /// The address of the node that is to rebuild a shard missing at its place, if that
    /// is another node: its place is there, the node answers, and no copy of the shard is
    /// anywhere else (one would be moved home instead).
    fn rebuilder<'t>(
        &self,
        t: &'t Topology,
        presence: &Presence,
        placed: &[usize],
        key: &ShardKey,
    ) -> Option<&'t str> {
        let spot = placed[key.index as usize];
        let has_copy = presence
            .at
            .get(key)
            .is_some_and(|v| v.iter().any(|&(s, _)| s != spot));
        match &t.locs[spot] {
            Loc::Remote { addr, .. } if !has_copy && self.spot_reachable(t, presence, spot) => {
                Some(addr)
            }
            _ => None,
        }
    }

    /// Asks each node that is the new home of bad shards (with no copy elsewhere to move
    /// back) to rebuild them itself, a request per node (`REBUILD_PATH`): the sources
    /// then flow to many nodes rather than all to this one, so repair grows with the
    /// cluster (`bench --only repair-sim`). What a node could not rebuild stays bad, for
    /// `restore` here.
    async fn delegate_rebuilds(
        &self,
        t: &Topology,
        presence: &Presence,
        checks: &mut [Check],
        report: &mut ScrubReport,
    ) {
        let Some(m) = self.inner.cluster.get() else {
            return;
        };
        let mut asks: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (c, check) in checks.iter().enumerate() {
            for i in check.bad() {
                if let Some(addr) = self.rebuilder(t, presence, &check.placed, &check.key(i)) {
                    asks.entry(addr.to_string()).or_default().push((c, i));
                }
            }
        }
        let checks_ref = &*checks;
        let calls = asks.into_iter().map(|(addr, wanted)| async move {
            let items: Vec<RebuildItem> = wanted
                .iter()
                .map(|&(c, i)| {
                    let check = &checks_ref[c];
                    RebuildItem {
                        chunk: codec::hex(&check.id),
                        index: i as u8,
                        skip: check.bad().into_iter().map(|j| j as u8).collect(),
                    }
                })
                .collect();
            let body = serde_json::to_vec(&items).expect("rebuild items serialize");
            let answer = m
                .client()
                .call(&addr, REBUILD_PATH, body, REBUILD_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<Vec<RebuildAnswer>>(&b).map_err(|e| e.to_string())
                });
            (addr, wanted, answer)
        });
        for (addr, wanted, answer) in futures::future::join_all(calls).await {
            let answers = match answer {
                Ok(a) if a.len() == wanted.len() => a,
                Ok(a) => {
                    tracing::warn!(node = %addr, "repair: {} answers for {} rebuilds; rebuilding here", a.len(), wanted.len());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = %addr, error = %e, "repair: a node could not take its rebuilds; rebuilding here");
                    continue;
                }
            };
            for ((c, i), a) in wanted.into_iter().zip(answers) {
                let check = &mut checks[c];
                match a {
                    RebuildAnswer::Rebuilt => {
                        check.states[i] = ShardState::Ok;
                        check.repaired.push(i);
                        report.shards_missing += 1;
                        report.shards_repaired += 1;
                        // Repair traffic counts toward the rate: the shard written there.
                        report.bytes_read += u64::from(check.rec.sealed_len)
                            .div_ceil(check.rec.policy.needed().max(1) as u64);
                    }
                    RebuildAnswer::Present => check.states[i] = ShardState::Ok,
                    RebuildAnswer::Failed(e) => {
                        tracing::warn!(node = %addr, shard = %check.key(i), error = %e, "repair: rebuilding here instead")
                    }
                }
            }
        }
    }

    /// Rebuilds shards placed on this node's disks, asked by the node running a repair
    /// pass (`REBUILD_PATH`): reads `needed` other shards of each chunk (this node's and
    /// this site's first, never those in `skip`), decodes, writes here. One answer per
    /// item: `None` when written, else why not.
    pub async fn rebuild_here(&self, items: Vec<RebuildItem>) -> Vec<RebuildAnswer> {
        let t = self.topology();
        let mut answers = vec![RebuildAnswer::Rebuilt; items.len()];
        let mut checks = Vec::new();
        let mut of_check = Vec::new();
        for (n, item) in items.iter().enumerate() {
            let check = (|| {
                let id: ChunkId = codec::unhex(&item.chunk)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("bad chunk id")?;
                let key = ShardKey {
                    chunk: id,
                    index: item.index,
                };
                // Looked for first: a chunk written after the asking node listed shards
                // may not have reached this node's catalog yet, but its shard is here.
                if !self.inner.store.locate(&key).is_empty() {
                    return Ok(None);
                }
                let rec = self
                    .inner
                    .catalog
                    .chunk(&id)
                    .map_err(|e| e.to_string())?
                    .ok_or("no record of that chunk here yet")?;
                let placed = t.place(&id, rec.policy, &|_| true);
                let index = item.index as usize;
                if !matches!(placed.get(index).map(|&s| &t.locs[s]), Some(Loc::Local(_))) {
                    return Err("that shard is not placed on this node".to_string());
                }
                let states = (0..placed.len())
                    .map(|j| match j == index || item.skip.contains(&(j as u8)) {
                        true => ShardState::Missing,
                        false => ShardState::Ok,
                    })
                    .collect();
                Ok(Some(Check {
                    id,
                    rec,
                    placed,
                    states,
                    data: HashMap::new(),
                    repaired: Vec::new(),
                    lost: false,
                    only: Some(index),
                }))
            })();
            match check {
                Ok(Some(c)) => {
                    checks.push(c);
                    of_check.push(n);
                }
                Ok(None) => answers[n] = RebuildAnswer::Present,
                Err(e) => answers[n] = RebuildAnswer::Failed(e),
            }
        }
        let mut report = ScrubReport::default();
        if let Err(e) = self.restore(&t, None, &mut checks, &mut report).await {
            for &n in &of_check {
                answers[n] = RebuildAnswer::Failed(e.to_string());
            }
            return answers;
        }
        for (check, n) in checks.iter().zip(of_check) {
            if !check.only.is_some_and(|i| check.repaired.contains(&i)) {
                answers[n] = RebuildAnswer::Failed(match check.lost {
                    true => "too few shards to rebuild from".into(),
                    false => "could not write the rebuilt shard".into(),
                });
            }
        }
        answers
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

    /// Checks chunks in batches, a few batches at a time (repair is mostly waiting on
    /// other nodes), within the read rate.
    async fn check_chunks(
        &self,
        chunks: Vec<(ChunkId, ChunkRecord)>,
        t: &Topology,
        presence: &Presence,
        opts: &ScrubOptions,
        report: &mut ScrubReport,
        started: Instant,
    ) -> Result<()> {
        // A full scrub reads every local shard of its batches: fewer at once.
        let at_once = match opts.repair_only {
            true => SCRUB_BATCHES_AT_ONCE,
            false => SCRUB_BATCHES_AT_ONCE / 4,
        };
        let mut results = futures::stream::iter(chunks)
            .chunks(SCRUB_BATCH)
            .map(|batch| self.scrub_batch(batch, t, presence, opts))
            .buffer_unordered(at_once);
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

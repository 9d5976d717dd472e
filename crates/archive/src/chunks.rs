//! Storing and fetching one chunk: the step every put, get, copy and repair shares.

use bytes::Bytes;
use catalog::ChunkRef;
use codec::{ChunkId, DataKey, Redundancy};
use futures::StreamExt;

use crate::topology::{Loc, Topology};
use shards::{ShardKey, ShardMeta};

use crate::{Archive, ArchiveError, Result};

/// A chunk that was stored, or found already stored (dedup).
pub(crate) struct Stored {
    pub r: ChunkRef,
    pub fresh: bool,
}

impl Archive {
    /// Names, seals, splits and durably writes a chunk, unless an identical chunk is
    /// already stored. CPU work runs on the blocking pool.
    pub(crate) async fn store_chunk(
        &self,
        key: &DataKey,
        policy: Redundancy,
        level: i32,
        data: Bytes,
        hold: std::sync::Arc<shards::UploadHold>,
    ) -> Result<Stored> {
        let this = self.clone();
        let key = key.clone();
        let plain_len = data.len() as u32;
        let (id, encoded) = tokio::task::spawn_blocking(move || -> Result<_> {
            let id = codec::chunk_id(&key, &data);
            if let Some(rec) = this.inner.catalog.chunk(&id)? {
                return Ok((id, Err(rec.sealed_len)));
            }
            let sealed = codec::seal(&key, &id, &data, level);
            let len = sealed.len() as u32;
            Ok((id, Ok((codec::split_shards(policy, &sealed), len))))
        })
        .await
        .map_err(|source| ArchiveError::Task {
            what: "encoder",
            source,
        })??;
        let (shards, sealed_len) = match encoded {
            Err(sealed_len) => {
                return Ok(Stored {
                    r: ChunkRef {
                        id,
                        plain_len,
                        sealed_len,
                    },
                    fresh: false,
                });
            }
            Ok(x) => x,
        };
        let meta = ShardMeta {
            policy,
            sealed_len,
            written_ms: 0,
        };
        hold.add(id);
        self.write_shards(&id, meta, shards).await?;
        Ok(Stored {
            r: ChunkRef {
                id,
                plain_len,
                sealed_len,
            },
            fresh: true,
        })
    }

    /// Is the node behind a spot answering? (Always, for local disks.)
    pub(crate) fn spot_usable(&self, t: &Topology, spot: usize) -> bool {
        match (t.node_of(spot), self.inner.cluster.get()) {
            (Some(node), Some(m)) => !m.is_suspected(node),
            _ => true,
        }
    }

    /// Is a node worth asking: up in the layout (active or draining) and answering its
    /// heartbeats? A node cut off by the network would only make the asker wait.
    pub(crate) fn node_answering(&self, node: &cluster::NodeId) -> bool {
        let Some(m) = self.inner.cluster.get() else {
            return true;
        };
        let up = m.layout().node(node).is_some_and(|n| {
            matches!(
                n.state,
                cluster::NodeState::Active | cluster::NodeState::Draining
            )
        });
        up && !m.is_suspected(node)
    }

    /// Writes one shard to one spot, durably.
    pub(crate) async fn write_shard_at(
        &self,
        t: &Topology,
        spot: usize,
        key: ShardKey,
        meta: ShardMeta,
        data: Vec<u8>,
    ) -> std::result::Result<(), String> {
        match &t.locs[spot] {
            Loc::Local(d) => self
                .inner
                .store
                .disk(*d)
                .write(key, meta, data)
                .await
                .map_err(|e| e.to_string()),
            Loc::Remote { addr, disk, .. } => self
                .client()
                .put_shard(addr, *disk, &key, meta, data)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn client(&self) -> &cluster::Client {
        self.inner
            .cluster
            .get()
            .expect("remote spots exist only in a cluster")
            .client()
    }

    /// Writes every shard of a chunk to its placed spot; a shard whose spot fails goes
    /// to the next usable spot instead (repair moves it back later). Succeeds once at
    /// least `needed` shards are durable: while a site is down, writes go on at
    /// reduced redundancy and repair restores it.
    async fn write_shards(
        &self,
        id: &ChunkId,
        meta: ShardMeta,
        shards: Vec<Vec<u8>>,
    ) -> Result<()> {
        let t = self.topology();
        let usable = |s: usize| self.spot_usable(&t, s);
        let placed = t.place(id, meta.policy, &usable);
        if placed.is_empty() {
            return Err(ArchiveError::Storage("no disk can take shards".into()));
        }
        let alternatives = t.alternatives(id, &usable);
        let writes = shards.into_iter().enumerate().map(|(i, data)| {
            let (t, placed, alternatives, usable) = (&t, &placed, &alternatives, &usable);
            async move {
                let key = ShardKey {
                    chunk: *id,
                    index: i as u8,
                };
                let first = placed[i];
                let mut errors = Vec::new();
                let candidates = std::iter::once(first)
                    .chain(alternatives.iter().copied().filter(|s| !placed.contains(s)));
                // Usability is looked at again before each try: a node may have gone
                // silent while this chunk waited.
                for spot in candidates.filter(|&s| s == first || usable(s)).take(3) {
                    // A node cut off by the network answers nothing: give up on it soon,
                    // and have every other request avoid it too.
                    let write = self.write_shard_at(t, spot, key, meta, data.clone());
                    let result = match tokio::time::timeout(SHARD_WRITE_TIMEOUT, write).await {
                        Ok(r) => r,
                        Err(_) => {
                            if let (Some(node), Some(m)) = (t.node_of(spot), self.inner.cluster.get()) {
                                m.report_silent(node);
                            }
                            Err(format!("no answer in {SHARD_WRITE_TIMEOUT:?}"))
                        }
                    };
                    match result {
                        Ok(()) => {
                            if spot != first && let Some(m) = self.inner.cluster.get() {
                                m.request_repair(); // it belongs elsewhere: move it later
                            }
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(shard = %key, error = %e, "shard write failed; trying another disk");
                            errors.push(e);
                        }
                    }
                }
                Err(errors.join("; "))
            }
        });
        let results = futures::future::join_all(writes).await;
        let written = results.iter().filter(|r| r.is_ok()).count();
        if written < results.len()
            && let Some(m) = self.inner.cluster.get()
        {
            m.request_repair();
        }
        if written < meta.policy.needed() {
            let errors: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
            return Err(ArchiveError::Storage(format!(
                "only {written} of {} shards could be written (need {}): {}",
                meta.policy.shard_count(),
                meta.policy.needed(),
                errors.join("; ")
            )));
        }
        Ok(())
    }

    /// Reads one shard, verified, from a spot; a local spot also looks on this node's
    /// other disks (a shard written while its disk was away).
    pub(crate) async fn read_shard_at(
        &self,
        t: &Topology,
        spot: usize,
        key: ShardKey,
    ) -> std::result::Result<Vec<u8>, ShardReadError> {
        use crate::read_tally::{Origin, count};
        match &t.locs[spot] {
            Loc::Local(d) => {
                let (store, d) = (self.inner.store.clone(), *d);
                let data = tokio::task::spawn_blocking(move || read_local(&store, d, &key))
                    .await
                    .map_err(|e| ShardReadError::Other(e.to_string()))??;
                count(Origin::Local, data.len());
                Ok(data)
            }
            Loc::Remote { addr, disk, .. } => {
                match self.client().get_shard(addr, Some(*disk), &key).await {
                    Ok(d) => {
                        count(t.origin(spot), d.len());
                        Ok(d)
                    }
                    Err(cluster::RpcError::Missing) => Err(ShardReadError::Missing),
                    Err(cluster::RpcError::Corrupt(e)) => Err(ShardReadError::Corrupt(e)),
                    Err(e) => Err(ShardReadError::Other(e.to_string())),
                }
            }
        }
    }

    /// Looks for a shard on every node (any disk) except the spots already tried.
    async fn find_shard(&self, t: &Topology, key: ShardKey) -> Option<Vec<u8>> {
        let store = self.inner.store.clone();
        let local = tokio::task::spawn_blocking(move || {
            store
                .locate(&key)
                .into_iter()
                .find_map(|d| store.disk(d).read(&key).ok().map(|(_, data)| data))
        })
        .await
        .ok()
        .flatten();
        if local.is_some() || self.inner.cluster.get().is_none() {
            return local;
        }
        let asks = t
            .remote_nodes()
            .into_iter()
            .filter(|(node, _)| self.node_answering(node))
            .map(|(_, addr)| async move {
                let ask = self.client().get_shard(&addr, None, &key);
                tokio::time::timeout(SHARD_WRITE_TIMEOUT, ask)
                    .await
                    .ok()?
                    .ok()
            });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .next()
    }

    /// The first `needed` shards of a chunk in read order, when every one of them is on
    /// this node's disks: (index, disk, key) each.
    fn local_shards(
        &self,
        id: &ChunkId,
        policy: Redundancy,
    ) -> Option<Vec<(usize, usize, ShardKey)>> {
        let t = self.topology();
        let placed = t.place(id, policy, &|_| true);
        (0..policy.needed())
            .map(|i| match t.locs[placed[i]] {
                Loc::Local(disk) => Some((
                    i,
                    disk,
                    ShardKey {
                        chunk: *id,
                        index: i as u8,
                    },
                )),
                Loc::Remote { .. } => None,
            })
            .collect()
    }

    /// Gathers `needed` verified shards of a chunk: data shards and this site first,
    /// more when some fail, and a search of every node as the last resort.
    pub(crate) async fn gather_shards(
        &self,
        id: &ChunkId,
        policy: Redundancy,
    ) -> (Vec<Option<Vec<u8>>>, Vec<String>) {
        let t = self.topology();
        let placed = t.place(id, policy, &|_| true);
        let n = policy.shard_count();
        let needed = policy.needed();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (t.spots[placed[i]].site != t.my_site, i >= needed, i));
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut errors = Vec::new();
        let read = |i: usize| {
            let key = ShardKey {
                chunk: *id,
                index: i as u8,
            };
            let (t, spot) = (&t, placed[i]);
            async move { (i, self.read_shard_at(t, spot, key).await) }
        };
        // Hedged reads: `needed` reads first; one more whenever a read fails, and one
        // more each HEDGE_AFTER while some are still outstanding (a slow node), so a
        // chunk waits for the fastest `needed` shards, not for the slowest.
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut next = needed.min(n);
        for &i in &order[..next] {
            pending.push(read(i));
        }
        let mut have = 0;
        let hedge = tokio::time::sleep(HEDGE_AFTER);
        tokio::pin!(hedge);
        while have < needed && !pending.is_empty() {
            tokio::select! {
                Some((i, r)) = pending.next() => match r {
                    Ok(s) => {
                        shards[i] = Some(s);
                        have += 1;
                    }
                    Err(e) => {
                        tracing::warn!(chunk = %codec::hex(id), shard = i, error = %e, "shard unreadable; using others");
                        errors.push(e.to_string());
                        if next < n {
                            pending.push(read(order[next]));
                            next += 1;
                        }
                    }
                },
                _ = &mut hedge, if next < n => {
                    pending.push(read(order[next]));
                    next += 1;
                    hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                }
            }
        }
        drop(pending); // reads still in flight are no longer needed
        for (i, slot) in shards.iter_mut().enumerate() {
            if have >= needed {
                break;
            }
            if slot.is_none() {
                let key = ShardKey {
                    chunk: *id,
                    index: i as u8,
                };
                if let Some(s) = self.find_shard(&t, key).await {
                    *slot = Some(s);
                    have += 1;
                }
            }
        }
        (shards, errors)
    }

    pub(crate) async fn fetch_chunk(
        &self,
        bucket: &str,
        object: &str,
        key: &DataKey,
        r: ChunkRef,
    ) -> Result<Bytes> {
        let loss = |reason: String| ArchiveError::DataLoss {
            bucket: bucket.to_string(),
            key: object.to_string(),
            chunk: codec::hex(&r.id),
            reason,
        };
        let rec = self
            .inner
            .catalog
            .chunk(&r.id)?
            .ok_or_else(|| loss("no catalog record for this chunk".into()))?;
        if let Some(sealed) = rec.inline {
            return codec::open(key, &r.id, sealed).map_err(|e| loss(e.to_string()));
        }
        // All the shards it needs on this node's disks (one node, or a chunk placed here):
        // read, join and open it in one blocking call. A hand-off to the blocking pool
        // per step cost more than the work at 64 KiB chunks (perf of a large GET;
        // docs/benchmarks.md). Anything amiss falls back to the general path below.
        if let Some(wanted) = self.local_shards(&r.id, rec.policy) {
            let (store, key, policy, len) = (
                self.inner.store.clone(),
                key.clone(),
                rec.policy,
                rec.sealed_len as usize,
            );
            let n = policy.shard_count();
            let whole = tokio::task::spawn_blocking(move || {
                let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
                let mut read = 0;
                for (i, disk, shard) in wanted {
                    let data = read_local(&store, disk, &shard).ok()?;
                    read += data.len();
                    shards[i] = Some(data);
                }
                let sealed = codec::join_shards(policy, shards, len).ok()?;
                codec::open(&key, &r.id, sealed).ok().map(|b| (b, read))
            })
            .await;
            if let Ok(Some((bytes, read))) = whole {
                // Counted here: the tally of a job's task lives in its async context.
                crate::read_tally::count(crate::read_tally::Origin::Local, read);
                return Ok(bytes);
            }
        }
        let (shards, errors) = self.gather_shards(&r.id, rec.policy).await;
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let sealed =
                codec::join_shards(rec.policy, shards, rec.sealed_len as usize).map_err(|e| {
                    if errors.is_empty() {
                        e.to_string()
                    } else {
                        format!("{e}; {}", errors.join("; "))
                    }
                })?;
            codec::open(&key, &r.id, sealed).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| loss(format!("reader task failed: {e}")))?
        .map_err(loss)
    }
}

/// A shard write that takes longer than this goes to the next disk instead (the first
/// may still land: repair then removes the extra copy).
const SHARD_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A read slower than this gets a second one racing it (from another shard).
const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShardReadError {
    #[error("missing")]
    Missing,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Other(String),
}

/// A shard from a local disk, or from another local disk that has it.
pub(crate) fn read_local(
    store: &shards::ShardStore,
    disk: usize,
    key: &ShardKey,
) -> std::result::Result<Vec<u8>, ShardReadError> {
    let first = match store.disk(disk).read(key) {
        Ok((_, data)) => return Ok(data),
        Err(e) => e,
    };
    for d in store.locate(key) {
        if d != disk
            && let Ok((_, data)) = store.disk(d).read(key)
        {
            return Ok(data);
        }
    }
    Err(if first.is_missing() {
        ShardReadError::Missing
    } else {
        ShardReadError::Corrupt(first.to_string())
    })
}

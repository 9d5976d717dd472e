//! Storing and fetching one chunk: the step every put, get, copy and repair shares.

use bytes::Bytes;
use catalog::{ChunkRecord, ChunkRef};
use codec::{ChunkId, DataKey, Redundancy};
use shards::{ShardKey, ShardMeta};

use crate::{Archive, ArchiveError, Result};

/// A chunk that was stored, or found already stored (dedup).
pub(crate) struct Stored {
    pub r: ChunkRef,
    pub fresh: bool,
}

impl Archive {
    /// The disk for each shard of a chunk.
    pub(crate) fn shard_disks(&self, id: &ChunkId, policy: Redundancy) -> Vec<usize> {
        placement::place(id, &self.inner.targets, policy.shard_count())
    }

    /// Names, seals, splits and durably writes a chunk, unless an identical chunk is
    /// already stored. CPU work runs on the blocking pool.
    pub(crate) async fn store_chunk(
        &self,
        key: &DataKey,
        policy: Redundancy,
        level: i32,
        data: Bytes,
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
        .map_err(|e| ArchiveError::Storage(format!("encoder task failed: {e}")))??;
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
        let disks = self.shard_disks(&id, policy);
        let meta = ShardMeta {
            policy,
            sealed_len,
            written_ms: 0,
        };
        let writes = shards.into_iter().enumerate().map(|(i, s)| {
            let disk = self.inner.store.disk(disks[i]).clone();
            async move {
                disk.write(
                    ShardKey {
                        chunk: id,
                        index: i as u8,
                    },
                    meta,
                    s,
                )
                .await
            }
        });
        futures::future::try_join_all(writes).await?;
        Ok(Stored {
            r: ChunkRef {
                id,
                plain_len,
                sealed_len,
            },
            fresh: true,
        })
    }

    /// Reads one shard, verified: from its placed disk, or wherever it is found.
    pub(crate) fn read_shard(
        &self,
        id: &ChunkId,
        index: usize,
        placed: usize,
    ) -> std::result::Result<Vec<u8>, shards::ShardError> {
        let key = ShardKey {
            chunk: *id,
            index: index as u8,
        };
        let store = &self.inner.store;
        match store.disk(placed).read(&key) {
            Ok((_, data)) => Ok(data),
            Err(first) => {
                for d in store.locate(&key) {
                    if d != placed
                        && let Ok((_, data)) = store.disk(d).read(&key)
                    {
                        return Ok(data);
                    }
                }
                Err(first)
            }
        }
    }

    /// Fetches any `needed` intact shards (data shards first), rebuilds, decrypts and
    /// verifies a chunk. Blocking: call from the blocking pool.
    pub(crate) fn fetch_chunk_blocking(
        &self,
        key: &DataKey,
        id: &ChunkId,
        rec: &ChunkRecord,
    ) -> std::result::Result<Bytes, String> {
        let policy = rec.policy;
        let disks = self.shard_disks(id, policy);
        let n = policy.shard_count();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut have = 0;
        let mut errors = Vec::new();
        for i in 0..n {
            if have == policy.needed() {
                break;
            }
            match self.read_shard(id, i, disks[i]) {
                Ok(s) => {
                    shards[i] = Some(s);
                    have += 1;
                }
                Err(e) => {
                    tracing::warn!(chunk = %codec::hex(id), shard = i, error = %e, "shard unreadable; using others");
                    errors.push(e.to_string());
                }
            }
        }
        let sealed = codec::join_shards(policy, shards, rec.sealed_len as usize).map_err(|e| {
            if errors.is_empty() {
                e.to_string()
            } else {
                format!("{e}; {}", errors.join("; "))
            }
        })?;
        codec::open(key, id, sealed).map_err(|e| e.to_string())
    }

    pub(crate) async fn fetch_chunk(
        &self,
        bucket: &str,
        object: &str,
        key: &DataKey,
        r: ChunkRef,
    ) -> Result<Bytes> {
        let this = self.clone();
        let key = key.clone();
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
            return codec::open(&key, &r.id, sealed).map_err(|e| loss(e.to_string()));
        }
        tokio::task::spawn_blocking(move || this.fetch_chunk_blocking(&key, &r.id, &rec))
            .await
            .map_err(|e| loss(format!("reader task failed: {e}")))?
            .map_err(loss)
    }
}

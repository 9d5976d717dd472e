//! Streaming writes: PUT and COPY. The body is cut into chunks as it arrives; chunks are
//! encoded and written a few at a time, so memory stays bounded whatever the size. The
//! version is committed only after every shard is durable.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use catalog::{Body, NewVersion, PutCondition, Version, VersionSel};
use codec::{ChunkId, ChunkParams, Chunker};
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};

use crate::{Archive, ArchiveError, Bucket, DataKey, Result, validate_key};

/// How to store an object: its metadata and conditions.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The Content-Type to store.
    pub content_type: Option<String>,
    /// User metadata and stored headers, kept verbatim.
    pub meta: BTreeMap<String, String>,
    /// Conditions checked atomically with the write (If-Match, If-None-Match).
    pub cond: PutCondition,
    /// The MD5 the client says the body has (Content-MD5); a mismatch stores nothing.
    pub content_md5: Option<[u8; 16]>,
    /// Metadata known only once the body has streamed (a checksum the gateway computed
    /// or received in a trailer); merged into `meta` at commit.
    pub late_meta: Option<LateMeta>,
    /// The access key that makes this write, for the audit log.
    pub actor: Option<String>,
    /// A gateway's own size limit for this write (S3: 5 GiB for one PUT), checked as
    /// the body streams like the node's `max_object_bytes`.
    pub max_size: Option<u64>,
    /// Encrypt with this customer key as well (SSE-C); reads must give it too.
    pub customer_key: Option<crate::CustomerKey>,
}

/// Filled by whoever reads the body alongside the archive; read once, at commit.
pub type LateMeta = std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>;

/// An MD5 digest as lowercase hex (an S3 ETag).
pub fn md5_hex(d: &[u8]) -> String {
    codec::hex(d)
}

/// What reading a body produced: its size, MD5 and stored form.
pub(crate) struct Ingested {
    pub size: u64,
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    pub body: Body,
    pub fresh: Vec<ChunkId>,
    pub inline: Option<(ChunkId, Vec<u8>)>,
    /// Keeps the fresh chunks from garbage collection until this drops: keep it until
    /// the version or part that references them is committed.
    pub hold: std::sync::Arc<shards::UploadHold>,
}

/// MD5 (the S3 ETag) and SHA-256 (what the ledger records) on their own thread: at
/// ~600 MB/s MD5 would otherwise be the slowest serial step of an upload; SHA-256 runs
/// on the CPU's SHA extensions at several GB/s beside it.
struct Md5Task {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    done: tokio::task::JoinHandle<([u8; 16], [u8; 32])>,
}

impl Md5Task {
    fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let done = tokio::task::spawn_blocking(move || {
            let mut h = Md5::new();
            let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
            while let Some(piece) = rx.blocking_recv() {
                h.update(&piece);
                sha.update(&piece);
            }
            let sha: [u8; 32] = sha
                .finish()
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
            (h.finalize().into(), sha)
        });
        Md5Task { tx: Some(tx), done }
    }

    async fn update(&mut self, piece: Bytes) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(piece).await;
        }
    }

    async fn finish(&mut self) -> Result<([u8; 16], [u8; 32])> {
        self.tx = None;
        (&mut self.done).await.map_err(|source| ArchiveError::Task {
            what: "MD5",
            source,
        })
    }
}

impl Archive {
    pub(crate) fn bucket_params(&self, b: &Bucket) -> ChunkParams {
        ChunkParams {
            min: b.chunk_min as usize,
            avg: b.chunk_avg as usize,
            max: b.chunk_max as usize,
        }
    }

    /// Reads a body to its end, storing chunks as they fill. `allow_inline` keeps small
    /// bodies in the catalog (not for multipart parts, whose chunks are concatenated).
    /// A body longer than `max_size` (or the node's `max_object_bytes`) is refused as
    /// soon as it passes it.
    pub(crate) async fn ingest<S>(
        &self,
        b: &Bucket,
        key: &DataKey,
        mut body: S,
        allow_inline: bool,
        max_size: Option<u64>,
    ) -> Result<Ingested>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let params = self.bucket_params(b);
        let chunker = Chunker::new(params);
        let depth = (self.inner.cfg.pipeline_bytes / params.max).max(2);
        let mut buf = BytesMut::with_capacity(params.max.min(1 << 20));
        let (mut eof, mut size) = (false, 0u64);
        let mut md5 = Md5Task::start();
        let mut inflight = FuturesOrdered::new();
        let (mut refs, mut fresh) = (Vec::new(), Vec::new());
        let hold = std::sync::Arc::new(self.inner.store.uploading().hold());
        let mut chunked = false;
        let max_size = max_size
            .unwrap_or(u64::MAX)
            .min(self.inner.cfg.max_object_bytes);
        loop {
            while !eof && buf.len() < params.max {
                match body.next().await {
                    Some(Ok(piece)) => {
                        size += piece.len() as u64;
                        if size > max_size {
                            // What was stored so far becomes orphans for GC.
                            return Err(ArchiveError::ObjectTooLarge { max: max_size });
                        }
                        md5.update(piece.clone()).await;
                        buf.extend_from_slice(&piece);
                    }
                    Some(Err(e)) => return Err(ArchiveError::Body(e)),
                    None => eof = true,
                }
            }
            if eof && !chunked && allow_inline && buf.len() < self.inner.cfg.inline_threshold {
                let (md5, sha256) = md5.finish().await?;
                if buf.is_empty() {
                    return Ok(Ingested {
                        size: 0,
                        md5,
                        sha256,
                        body: Body::Empty,
                        fresh,
                        inline: None,
                        hold,
                    });
                }
                // Small: one chunk kept in the catalog, deduplicated like any other.
                let id = codec::chunk_id(key, &buf);
                let known = self.inner.catalog.chunk(&id)?;
                let (sealed_len, inline) = match known {
                    Some(rec) => (rec.sealed_len, None),
                    None => {
                        let sealed = codec::seal(key, &id, &buf, b.compression);
                        (sealed.len() as u32, Some((id, sealed)))
                    }
                };
                let r = catalog::ChunkRef {
                    id,
                    plain_len: buf.len() as u32,
                    sealed_len,
                };
                let body = Body::Chunks {
                    policy: b.policy,
                    chunks: vec![r],
                };
                return Ok(Ingested {
                    size,
                    md5,
                    sha256,
                    body,
                    fresh,
                    inline,
                    hold,
                });
            }
            while let Some(cut) = chunker.next_cut(&buf, eof) {
                chunked = true;
                let chunk = buf.split_to(cut).freeze();
                let max = self.inner.cfg.max_chunks_per_object;
                if refs.len() + inflight.len() >= max {
                    // Refused before it is stored whole; what was stored becomes orphans.
                    return Err(ArchiveError::TooManyChunks { max });
                }
                inflight.push_back(self.store_chunk(
                    key,
                    b.policy,
                    b.compression,
                    chunk,
                    hold.clone(),
                ));
                while inflight.len() >= depth {
                    let s = inflight.next().await.expect("non-empty")?;
                    if s.fresh {
                        fresh.push(s.r.id);
                    }
                    refs.push(s.r);
                }
            }
            if eof {
                break;
            }
        }
        while let Some(s) = inflight.next().await {
            let s = s?;
            if s.fresh {
                fresh.push(s.r.id);
            }
            refs.push(s.r);
        }
        let body = Body::Chunks {
            policy: b.policy,
            chunks: refs,
        };
        let (md5, sha256) = md5.finish().await?;
        Ok(Ingested {
            size,
            md5,
            sha256,
            body,
            fresh,
            inline: None,
            hold,
        })
    }

    /// PutObject: streams `body` into a new version of `bucket/key`.
    pub async fn put<S>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        opts: PutOptions,
    ) -> Result<Version>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        validate_key(key)?;
        let b = self.bucket(bucket)?;
        let mut meta = opts.meta;
        let mut dk = self.inner.keys.data_key(&b)?;
        meta.remove(crate::sse_c::VERIFIER);
        if let Some(ck) = &opts.customer_key {
            meta.insert(crate::sse_c::VERIFIER.into(), ck.verifier(&dk));
            dk = ck.object_key(&dk);
        }
        let ing = self.ingest(&b, &dk, body, true, opts.max_size).await?;
        if opts.content_md5.is_some_and(|want| want != ing.md5) {
            // Nothing is committed; the chunks just written become orphans for GC.
            return Err(ArchiveError::BadDigest);
        }
        if let Some(late) = &opts.late_meta {
            meta.extend(late.lock().expect("late metadata lock").clone());
        }
        let nv = NewVersion {
            size: ing.size,
            etag: codec::hex(&ing.md5),
            sha256: Some(codec::hex(&ing.sha256)),
            actor: opts.actor,
            content_type: opts.content_type,
            meta,
            body: Some(ing.body),
            parts: Vec::new(),
            part_digests: Vec::new(),
            fresh: ing.fresh,
            inline: ing.inline,
        };
        let v = self
            .inner
            .catalog
            .put_version(bucket, key, nv, opts.cond)
            .await?;
        drop(ing.hold); // committed: the chunks have their record now
        Ok(v)
    }

    /// The content hashes the audit log recorded for a version (whole SHA-256, or the
    /// parts'): a copy within a bucket shares the source's bytes, so it shares them.
    fn recorded_digests(&self, v: &Version) -> (Option<String>, Vec<ledger::record::PartDigest>) {
        let record = (|| {
            let index = v.meta.get(catalog::audit::LEDGER_INDEX)?.parse().ok()?;
            let entry = self.inner.catalog.ledger_entry(index).ok()??;
            ledger::record::Record::from_bytes(&entry).ok()
        })();
        match record.map(|r| r.change) {
            Some(ledger::record::Change::VersionWritten { sha256, parts, .. }) => (sha256, parts),
            _ => (None, Vec::new()),
        }
    }

    /// Convenience for small in-memory bodies.
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        opts: PutOptions,
    ) -> Result<Version> {
        self.put(bucket, key, futures::stream::iter([Ok(data)]), opts)
            .await
    }

    /// CopyObject. Within a bucket only references are copied (no data moves); across
    /// buckets the data is re-encrypted under the target bucket's key. `opts = None`
    /// keeps the source's content type and metadata.
    pub async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        sel: &VersionSel,
        dst_bucket: &str,
        dst_key: &str,
        opts: Option<PutOptions>,
        cond: PutCondition,
    ) -> Result<Version> {
        self.copy_sse_c(
            src_bucket, src_key, sel, None, dst_bucket, dst_key, opts, cond,
        )
        .await
    }

    /// `copy` of a source written with a customer key (SSE-C) `src_key_sse`; the copy's
    /// own customer key, if any, is in `opts`.
    #[allow(clippy::too_many_arguments)] // CopyObject's parts
    pub async fn copy_sse_c(
        &self,
        src_bucket: &str,
        src_key: &str,
        sel: &VersionSel,
        src_key_sse: Option<crate::CustomerKey>,
        dst_bucket: &str,
        dst_key: &str,
        opts: Option<PutOptions>,
        cond: PutCondition,
    ) -> Result<Version> {
        validate_key(dst_key)?;
        let src = self.head(src_bucket, src_key, sel)?;
        let (content_type, meta) = match &opts {
            Some(o) => (o.content_type.clone(), o.meta.clone()),
            None => (src.content_type.clone(), src.meta.clone()),
        };
        let (src_ck, dst_ck) = (
            src_key_sse.as_ref(),
            opts.as_ref().and_then(|o| o.customer_key.clone()),
        );
        // Chunks sealed under a customer key are shared only when both sides use the
        // same key; any other copy involving SSE-C re-encrypts.
        let same_sealing = match (src.meta.get(crate::sse_c::VERIFIER), &dst_ck) {
            (None, None) => true,
            (Some(v), Some(k)) => {
                let b = self.bucket(src_bucket)?;
                *v == k.verifier(&self.inner.keys.data_key(&b)?)
            }
            _ => false,
        };
        if src_bucket == dst_bucket && same_sealing {
            self.check_customer_key(src_bucket, &src, src_ck)?;
            let (sha256, part_digests) = self.recorded_digests(&src);
            let nv = NewVersion {
                size: src.size,
                etag: src.etag.clone(),
                sha256,
                part_digests,
                actor: opts.as_ref().and_then(|o| o.actor.clone()),
                content_type,
                meta,
                body: Some(src.body.clone()),
                parts: src.parts.clone(),
                fresh: Vec::new(),
                inline: None,
            };
            return Ok(self
                .inner
                .catalog
                .put_version(dst_bucket, dst_key, nv, cond)
                .await?);
        }
        let (_, _, stream) = self
            .get_sse_c(
                src_bucket,
                src_key,
                &VersionSel::Id(src.version_id.clone()),
                None,
                src_ck,
            )
            .await?;
        let stream = stream.map(|r| r.map_err(std::io::Error::other));
        let actor = opts.and_then(|o| o.actor);
        self.put(
            dst_bucket,
            dst_key,
            Box::pin(stream),
            PutOptions {
                content_type,
                meta,
                cond,
                actor,
                customer_key: dst_ck,
                ..Default::default()
            },
        )
        .await
    }
}

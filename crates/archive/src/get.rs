//! Streaming reads: only the chunks a range touches are fetched, a few ahead of the
//! reader, and each is verified before a byte of it is returned.

use std::pin::Pin;

use bytes::Bytes;
use catalog::{Body, Version, VersionSel};
use futures::{Stream, StreamExt};

use crate::{Archive, ArchiveError, ByteRange, Result};

/// An object's bytes as they are read and decoded, chunk by chunk.
pub type ObjectStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

impl Archive {
    /// GetObject: the version, the byte span served, and the bytes as a stream.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        sel: &VersionSel,
        range: Option<ByteRange>,
    ) -> Result<(Version, std::ops::Range<u64>, ObjectStream)> {
        self.get_sse_c(bucket, key, sel, range, None).await
    }

    /// `get` of an object written with a customer key (SSE-C): `customer_key` must be
    /// that key (and None for every other object).
    pub async fn get_sse_c(
        &self,
        bucket: &str,
        key: &str,
        sel: &VersionSel,
        range: Option<ByteRange>,
        customer_key: Option<&crate::CustomerKey>,
    ) -> Result<(Version, std::ops::Range<u64>, ObjectStream)> {
        let v = self.head(bucket, key, sel)?;
        let b = self.bucket(bucket)?;
        let dk = crate::sse_c::opening_key(self.inner.keys.data_key(&b)?, &v.meta, customer_key)?;
        let span = match range {
            Some(r) => r.resolve(v.size)?,
            None => 0..v.size,
        };
        let stream: ObjectStream = match &v.body {
            Body::Empty => Box::pin(futures::stream::empty()),
            Body::Chunks { chunks, .. } => {
                let mut wanted = Vec::new();
                let mut offset = 0u64;
                for r in chunks {
                    let (start, end) = (offset, offset + r.plain_len as u64);
                    offset = end;
                    if end <= span.start || start >= span.end {
                        continue;
                    }
                    let lo = span.start.saturating_sub(start) as usize;
                    let hi = (span.end.min(end) - start) as usize;
                    wanted.push((*r, lo, hi));
                }
                let (this, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
                let depth =
                    (self.inner.cfg.pipeline_bytes / b.chunk_max.max(1) as usize).clamp(2, 64);
                Box::pin(
                    futures::stream::iter(wanted)
                        .map(move |(r, lo, hi)| {
                            let (this, bucket, key, dk) =
                                (this.clone(), bucket.clone(), key.clone(), dk.clone());
                            async move {
                                let plain = this.fetch_chunk(&bucket, &key, &dk, r).await?;
                                if plain.len() != r.plain_len as usize {
                                    return Err(ArchiveError::DataLoss {
                                        bucket,
                                        key,
                                        chunk: codec::hex(&r.id),
                                        reason: format!(
                                            "chunk is {} bytes, manifest says {}",
                                            plain.len(),
                                            r.plain_len
                                        ),
                                    });
                                }
                                Ok(plain.slice(lo..hi))
                            }
                        })
                        .buffered(depth),
                )
            }
        };
        Ok((v, span, stream))
    }

    /// Reads a whole object into memory. For tests and small objects only.
    pub async fn get_bytes(&self, bucket: &str, key: &str, sel: &VersionSel) -> Result<Vec<u8>> {
        let (_, _, mut s) = self.get(bucket, key, sel, None).await?;
        let mut out = Vec::new();
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}

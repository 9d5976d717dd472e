//! Content-defined chunking with FastCDC (2020 variant): cut points depend on content, so
//! inserting bytes into a file moves only the chunks around the insertion.

use fastcdc::v2020::FastCDC;

/// Chunk size bounds in bytes. FastCDC needs min <= avg <= max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Smallest chunk (bytes).
    pub min: usize,
    /// Average chunk it aims for (bytes).
    pub avg: usize,
    /// Largest chunk (bytes).
    pub max: usize,
}

/// Default: 16 KiB / 64 KiB / 256 KiB. Measured by `edgecloud bench` (docs/decisions.md):
/// at 1 MiB, ten versions of a tar stored 4.9x one version; at 64 KiB, 1.6x, and the
/// per-file store beat restic. The catalog pays ~100 bytes per chunk.
impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

impl ChunkParams {
    /// Params scaled from an average size: min = avg/4, max = avg*4 (FastCDC's usual ratio).
    pub fn from_avg(avg: usize) -> Self {
        ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }

    /// Refuses sizes FastCDC cannot use or that are out of order.
    pub fn validate(&self) -> Result<(), crate::CodecError> {
        // fastcdc 2020 limits: min 64 B..1 MiB? The crate asserts these ranges.
        if !(64..=67_108_864).contains(&self.min)
            || !(256..=268_435_456).contains(&self.avg)
            || !(1024..=1_073_741_824).contains(&self.max)
            || self.min > self.avg
            || self.avg > self.max
        {
            return Err(crate::CodecError::BadChunkSizes(format!(
                "chunk sizes must satisfy 64 <= min <= avg <= max (min >= 64 B, avg >= 256 B, max >= 1 KiB), got {}/{}/{}",
                self.min, self.avg, self.max
            )));
        }
        Ok(())
    }
}

/// Finds cut points in a buffer that a streaming reader keeps filled.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkParams,
}

impl Chunker {
    /// A chunker with these sizes.
    pub fn new(params: ChunkParams) -> Self {
        Chunker { params }
    }

    /// The sizes it cuts at.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Length of the next chunk at the start of `buf`, or `None` when more input is needed.
    /// A cut depends only on the first `max` bytes, so a buffer holding at least `max`
    /// bytes (or the end of the stream) is enough to decide it.
    pub fn next_cut(&self, buf: &[u8], eof: bool) -> Option<usize> {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < self.params.max && !eof {
            return None;
        }
        let window = &buf[..buf.len().min(self.params.max)];
        let cdc = FastCDC::new(window, self.params.min, self.params.avg, self.params.max);
        let (_, end) = cdc.cut(0, window.len());
        Some(end.max(1).min(window.len()))
    }

    /// Cuts a whole in-memory buffer; used by benchmarks and tests.
    pub fn cut_all<'a>(&self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while let Some(n) = self.next_cut(data, true) {
            out.push(&data[..n]);
            data = &data[n..];
        }
        out
    }
}

//! One disk: a folder of segment files, an in-memory index rebuilt from them at start,
//! and a writer thread that group-commits appends.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::record::*;
use crate::{ShardError, StoreOptions};

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    offset: u64,
    data_len: u32,
    meta: ShardMeta,
}

struct WriteReq {
    record: Record,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the writer appends.
struct Record {
    kind: u8,
    key: ShardKey,
    meta: ShardMeta,
    data: Vec<u8>,
    /// Compaction's copy: update the index only if the shard still lives here
    /// (it may have been deleted or rewritten meanwhile).
    moved_from: Option<(u32, u64)>,
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    /// Segment files deleted.
    pub segments_removed: usize,
    /// Bytes freed.
    pub bytes_reclaimed: u64,
    /// Live shards copied out of the removed segments.
    pub shards_moved: usize,
}

/// What `check` found on a disk.
#[derive(Debug, Clone)]
pub struct DiskHealth {
    /// The disk's folder.
    pub path: PathBuf,
    /// Shards it holds.
    pub shards: usize,
    /// Shards forgotten because their disk folder or segment file vanished.
    pub lost: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub bytes: u64,
}

/// One shard disk: append-only segment files and an in-memory index.
pub struct Disk {
    root: PathBuf,
    index: Arc<RwLock<HashMap<ShardKey, Location>>>,
    readers: Mutex<HashMap<u32, Arc<File>>>,
    writer: Mutex<mpsc::Sender<WriteReq>>,
    /// The segment the writer appends to; compaction never touches it.
    active: Arc<AtomicU32>,
    /// One compaction at a time (the node's scrubber and a leader's GC pass both ask).
    compacting: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn segment_path(root: &Path, n: u32) -> PathBuf {
    root.join(format!("seg-{n:08}.ecs"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Disk {
    /// Opens a disk folder, rebuilding the index from its segments.
    pub fn open(root: PathBuf, opts: StoreOptions) -> Result<Self, ShardError> {
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let mut segments: Vec<u32> = fs::read_dir(&root)
            .map_err(io_err(&root))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".ecs")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let mut index = HashMap::new();
        for (i, &seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            scan_segment(&root, seg, last, &mut index)?;
        }
        let index = Arc::new(RwLock::new(index));
        let next = segments.last().map_or(1, |s| s + 1);
        let (tx, rx) = mpsc::channel();
        let active = Arc::new(AtomicU32::new(next));
        let writer = Writer {
            root: root.clone(),
            opts,
            index: index.clone(),
            next_segment: next,
            current: None,
            active: active.clone(),
        };
        std::thread::Builder::new()
            .name(format!("shard-writer:{}", root.display()))
            .spawn(move || writer.run(rx))
            .map_err(io_err(&root))?;
        Ok(Disk {
            root,
            index,
            readers: Mutex::new(HashMap::new()),
            writer: Mutex::new(tx),
            active,
            compacting: tokio::sync::Mutex::new(()),
        })
    }

    /// The disk's folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// True when the disk holds this shard.
    pub fn contains(&self, key: &ShardKey) -> bool {
        self.index.read().expect("index lock").contains_key(key)
    }

    /// The shard's metadata, if the disk holds it.
    pub fn meta(&self, key: &ShardKey) -> Option<ShardMeta> {
        self.index
            .read()
            .expect("index lock")
            .get(key)
            .map(|l| l.meta)
    }

    /// Every shard on this disk with its metadata (a snapshot).
    pub fn list(&self) -> Vec<(ShardKey, ShardMeta)> {
        self.index
            .read()
            .expect("index lock")
            .iter()
            .map(|(k, l)| (*k, l.meta))
            .collect()
    }

    /// How many shards it holds.
    pub fn shard_count(&self) -> usize {
        self.index.read().expect("index lock").len()
    }

    /// Appends a shard; returns once it is fsynced.
    pub async fn write(
        &self,
        key: ShardKey,
        meta: ShardMeta,
        data: Vec<u8>,
    ) -> Result<(), ShardError> {
        self.submit(KIND_SHARD, key, meta, data).await
    }

    /// Records that a shard is gone (orphan collection); the space returns on compaction.
    pub async fn delete(&self, key: ShardKey) -> Result<(), ShardError> {
        let Some(meta) = self.meta(&key) else {
            return Ok(());
        };
        self.submit(KIND_TOMBSTONE, key, meta, Vec::new()).await
    }

    async fn submit(
        &self,
        kind: u8,
        key: ShardKey,
        meta: ShardMeta,
        data: Vec<u8>,
    ) -> Result<(), ShardError> {
        let mut meta = meta;
        if kind == KIND_SHARD {
            meta.written_ms = now_ms();
        }
        self.send(Record {
            kind,
            key,
            meta,
            data,
            moved_from: None,
        })
        .await
    }

    async fn send(&self, record: Record) -> Result<(), ShardError> {
        let (done, rx) = oneshot::channel();
        let gone = || ShardError::WriterGone(self.root.display().to_string());
        self.writer
            .lock()
            .expect("writer lock")
            .send(WriteReq { record, done })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map_err(|e| ShardError::Io {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })
    }

    /// Reads and verifies one shard.
    pub fn read(&self, key: &ShardKey) -> Result<(ShardMeta, Vec<u8>), ShardError> {
        let loc = self
            .index
            .read()
            .expect("index lock")
            .get(key)
            .copied()
            .ok_or_else(|| ShardError::NotFound {
                disk: self.root.display().to_string(),
                key: *key,
            })?;
        let path = segment_path(&self.root, loc.segment);
        let file = self.reader(loc.segment)?;
        let total = RECORD_HEADER_LEN + loc.data_len as usize + CHECKSUM_LEN;
        let mut buf = vec![0u8; total];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(io_err(&path))?;
        let corrupt = |reason: String| ShardError::Corrupt {
            path: path.clone(),
            offset: loc.offset,
            reason,
        };
        let header: &[u8; RECORD_HEADER_LEN] =
            buf[..RECORD_HEADER_LEN].try_into().expect("header length");
        let h = decode_header(header).map_err(corrupt)?;
        if h.key != *key || h.data_len != loc.data_len {
            return Err(corrupt(format!("record holds {} instead of {key}", h.key)));
        }
        let data_end = RECORD_HEADER_LEN + loc.data_len as usize;
        if checksum(&buf[..RECORD_HEADER_LEN], &buf[RECORD_HEADER_LEN..data_end]) != buf[data_end..]
        {
            return Err(corrupt(format!("checksum mismatch for shard {key}")));
        }
        buf.truncate(data_end);
        buf.drain(..RECORD_HEADER_LEN);
        Ok((h.meta, buf))
    }

    fn reader(&self, segment: u32) -> Result<Arc<File>, ShardError> {
        let mut readers = self.readers.lock().expect("readers lock");
        if let Some(f) = readers.get(&segment) {
            return Ok(f.clone());
        }
        let path = segment_path(&self.root, segment);
        let f = Arc::new(File::open(&path).map_err(io_err(&path))?);
        readers.insert(segment, f.clone());
        Ok(f)
    }

    /// Rewrites the live shards of every closed segment that is mostly dead (deleted
    /// shards, superseded copies) into the active segment, then removes it. Tombstones
    /// are dropped with their segment: a deleted shard that comes back from an older
    /// segment after a restart is an orphan, which scrub collects.
    pub async fn compact(&self, max_live_ratio: f64) -> Result<CompactReport, ShardError> {
        let _one_at_a_time = self.compacting.lock().await;
        let mut report = CompactReport::default();
        let active = self.active.load(Ordering::SeqCst);
        let mut live: HashMap<u32, (u64, Vec<(ShardKey, Location)>)> = HashMap::new();
        for (k, l) in self.index.read().expect("index lock").iter() {
            let e = live.entry(l.segment).or_default();
            e.0 += (RECORD_HEADER_LEN + l.data_len as usize + CHECKSUM_LEN) as u64;
            e.1.push((*k, *l));
        }
        let mut segments: Vec<u32> = fs::read_dir(&self.root)
            .map_err(io_err(&self.root))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix("seg-")?.strip_suffix(".ecs")?.parse().ok())
            .filter(|&s| s < active)
            .collect();
        segments.sort_unstable();
        for seg in segments {
            let path = segment_path(&self.root, seg);
            let Ok(len) = fs::metadata(&path).map(|m| m.len()) else {
                continue;
            };
            let (live_bytes, shards) = live.remove(&seg).unwrap_or_default();
            if live_bytes as f64 > max_live_ratio * len as f64 {
                continue;
            }
            for (key, loc) in shards {
                let Ok((meta, data)) = self.read(&key) else {
                    continue;
                }; // scrub repairs it
                self.send(Record {
                    kind: KIND_SHARD,
                    key,
                    meta,
                    data,
                    moved_from: Some((seg, loc.offset)),
                })
                .await?;
                report.shards_moved += 1;
            }
            let still_used = self
                .index
                .read()
                .expect("index lock")
                .values()
                .any(|l| l.segment == seg);
            if still_used {
                continue;
            }
            self.readers.lock().expect("readers lock").remove(&seg);
            fs::remove_file(&path).map_err(io_err(&path))?;
            File::open(&self.root)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.root))?;
            report.segments_removed += 1;
            report.bytes_reclaimed += len - live_bytes;
        }
        Ok(report)
    }

    /// Forgets shards whose segment files are gone (disk wiped or replaced) and
    /// recreates the folder, so the disk can take repaired shards again.
    pub fn check(&self) -> DiskHealth {
        let _ = fs::create_dir_all(&self.root);
        let mut index = self.index.write().expect("index lock");
        let mut present: HashMap<u32, Option<u64>> = HashMap::new();
        let before = index.len();
        index.retain(|_, loc| {
            present
                .entry(loc.segment)
                .or_insert_with(|| {
                    fs::metadata(segment_path(&self.root, loc.segment))
                        .ok()
                        .map(|m| m.len())
                })
                .is_some_and(|len| loc.offset < len)
        });
        let lost = before - index.len();
        if lost > 0 {
            tracing::warn!(disk = %self.root.display(), lost, "segment files vanished; their shards count as missing");
            self.readers
                .lock()
                .expect("readers lock")
                .retain(|s, _| present.get(s).is_some_and(|p| p.is_some()));
        }
        let live: Vec<u64> = present.values().flatten().copied().collect();
        DiskHealth {
            path: self.root.clone(),
            shards: index.len(),
            lost,
            segments: live.len(),
            bytes: live.iter().sum(),
        }
    }
}

/// Reads a segment's records into the index. Only the newest segment can end in a torn
/// record (a crash mid-append); it is truncated there. Older segments are sealed.
fn scan_segment(
    root: &Path,
    seg: u32,
    last: bool,
    index: &mut HashMap<ShardKey, Location>,
) -> Result<(), ShardError> {
    let path = segment_path(root, seg);
    let file = OpenOptions::new()
        .read(true)
        .write(last)
        .open(&path)
        .map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    let mut magic = [0u8; 8];
    if len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
        if last && len < 8 {
            // Crashed right after creating it.
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        return Err(ShardError::Corrupt {
            path,
            offset: 0,
            reason: "not an edgecloud segment file".into(),
        });
    }
    let mut offset = 8u64;
    while offset < len {
        match read_record_header(&file, offset, len, last) {
            Ok((h, end)) => {
                if h.kind == KIND_TOMBSTONE {
                    index.remove(&h.key);
                } else {
                    index.insert(
                        h.key,
                        Location {
                            segment: seg,
                            offset,
                            data_len: h.data_len,
                            meta: h.meta,
                        },
                    );
                }
                offset = end;
            }
            Err(reason) => {
                // Damage, or a torn tail: skip to the next intact record if there is one,
                // so one bad byte never hides the records after it.
                match resync(&file, offset + 1, len) {
                    Some(next) => {
                        tracing::warn!(file = %path.display(), offset, skipped = next - offset, %reason, "skipping a damaged region of a segment");
                        offset = next;
                    }
                    None if last => {
                        tracing::warn!(file = %path.display(), offset, %reason, "truncating a torn tail left by a crash");
                        file.set_len(offset).map_err(io_err(&path))?;
                        file.sync_all().map_err(io_err(&path))?;
                        break;
                    }
                    None => {
                        tracing::warn!(file = %path.display(), offset, %reason, "damaged records at the end of a segment; scrub will rebuild them");
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads and checks the record at `offset`; `verify` also checks its data checksum.
fn read_record_header(
    file: &File,
    offset: u64,
    len: u64,
    verify: bool,
) -> Result<(Header, u64), String> {
    let mut header = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut header, offset)
        .map_err(|_| "record header cut short".to_string())?;
    let h = decode_header(&header)?;
    let end = offset + (RECORD_HEADER_LEN + h.data_len as usize + CHECKSUM_LEN) as u64;
    if end > len {
        return Err("record runs past the end of the file".into());
    }
    if verify {
        let mut rest = vec![0u8; h.data_len as usize + CHECKSUM_LEN];
        file.read_exact_at(&mut rest, offset + RECORD_HEADER_LEN as u64)
            .map_err(|e| e.to_string())?;
        let (data, sum) = rest.split_at(h.data_len as usize);
        if checksum(&header, data) != sum {
            return Err("checksum mismatch".into());
        }
    }
    Ok((h, end))
}

/// The offset of the next fully intact record at or after `from`, if any.
fn resync(file: &File, from: u64, len: u64) -> Option<u64> {
    const WINDOW: usize = 1 << 20;
    let mut buf = vec![0u8; WINDOW + RECORD_MAGIC.len()];
    let mut base = from;
    while base < len {
        let n = ((len - base) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], base).ok()?;
        for i in 0..n.saturating_sub(RECORD_MAGIC.len() - 1) {
            if &buf[i..i + RECORD_MAGIC.len()] == RECORD_MAGIC {
                let at = base + i as u64;
                if read_record_header(file, at, len, true).is_ok() {
                    return Some(at);
                }
            }
        }
        base += WINDOW as u64;
    }
    None
}

struct Writer {
    root: PathBuf,
    opts: StoreOptions,
    index: Arc<RwLock<HashMap<ShardKey, Location>>>,
    next_segment: u32,
    current: Option<(u32, File, u64)>,
    active: Arc<AtomicU32>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteReq>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = first.record.data.len();
            let mut batch = vec![first];
            while bytes < self.opts.batch_bytes && batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.record.data.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            match self.append(&batch) {
                Ok(locs) => {
                    let mut index = self.index.write().expect("index lock");
                    for (req, loc) in batch.iter().map(|r| &r.record).zip(locs) {
                        if let Some((seg, off)) = req.moved_from {
                            if index
                                .get(&req.key)
                                .is_some_and(|l| l.segment == seg && l.offset == off)
                            {
                                index.insert(req.key, loc);
                            }
                        } else if req.kind == KIND_TOMBSTONE {
                            index.remove(&req.key);
                        } else {
                            index.insert(req.key, loc);
                        }
                    }
                    drop(index);
                    for req in batch {
                        let _ = req.done.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(disk = %self.root.display(), error = %e, "shard write failed");
                    for req in batch {
                        let _ = req.done.send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Writes a batch and fsyncs once. On failure (a full disk, say) the segment is cut
    /// back to where the batch began, so no partial record stays behind.
    fn append(&mut self, batch: &[WriteReq]) -> std::io::Result<Vec<Location>> {
        self.ensure_segment()?;
        let (seg, file, start) = self.current.as_mut().expect("segment opened");
        let (seg, start) = (*seg, *start);
        let result = (|| {
            use std::io::{Seek, SeekFrom};
            (&*file).seek(SeekFrom::Start(start))?;
            let mut out = BufWriter::with_capacity(256 * 1024, &*file);
            let mut offset = start;
            let mut locs = Vec::with_capacity(batch.len());
            for req in batch.iter().map(|r| &r.record) {
                let header = encode_header(req.kind, &req.key, &req.meta, req.data.len() as u32);
                out.write_all(&header)?;
                out.write_all(&req.data)?;
                out.write_all(&checksum(&header, &req.data))?;
                locs.push(Location {
                    segment: seg,
                    offset,
                    data_len: req.data.len() as u32,
                    meta: req.meta,
                });
                offset += (RECORD_HEADER_LEN + req.data.len() + CHECKSUM_LEN) as u64;
            }
            out.flush()?;
            drop(out);
            file.sync_data()?;
            Ok((locs, offset))
        })();
        match result {
            Ok((locs, end)) => {
                self.current.as_mut().expect("segment open").2 = end;
                Ok(locs)
            }
            Err(e) => {
                if file.set_len(start).and_then(|_| file.sync_data()).is_err() {
                    self.current = None; // start a fresh segment next time
                }
                Err(e)
            }
        }
    }

    fn ensure_segment(&mut self) -> std::io::Result<()> {
        if let Some((seg, _, len)) = &self.current {
            // A vanished file (wiped disk) or a full segment: start a new one.
            if *len < self.opts.segment_bytes && segment_path(&self.root, *seg).exists() {
                return Ok(());
            }
        }
        fs::create_dir_all(&self.root)?;
        let seg = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.root, seg);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        file.write_all(SEGMENT_MAGIC)?;
        file.sync_all()?;
        File::open(&self.root)?.sync_all()?; // make the new file's name durable
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))?;
        self.current = Some((seg, file, SEGMENT_MAGIC.len() as u64));
        self.active.store(seg, Ordering::SeqCst);
        Ok(())
    }
}

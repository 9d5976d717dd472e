//! The Merkle tree of the log (RFC 6962 hashing), kept as the list of "stored hashes"
//! of golang.org/x/mod/sumdb/tlog (ported by the `tlog_tiles` crate): every complete
//! subtree's hash, in append order, 32 bytes each, in one append-only file. Any root,
//! inclusion proof or consistency proof is computed from it with O(log n) reads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use tlog_tiles::{Hash, HashReader};

use crate::{LedgerError, Result};

/// The append-only file of stored hashes, with the not yet written tail in memory.
pub struct HashFile {
    file: File,
    /// Hashes in the file.
    written: u64,
    pending: Vec<Hash>,
}

impl HashFile {
    /// Opens (or creates) the tree's hash file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        // A torn last write leaves a partial hash: drop it (it is recomputed).
        let written = len / 32;
        if len % 32 != 0 {
            file.set_len(written * 32)?;
        }
        Ok(HashFile {
            file,
            written,
            pending: Vec::new(),
        })
    }

    /// How many leaves the tree has.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, index: u64) -> Result<Hash> {
        if index >= self.written {
            return self
                .pending
                .get((index - self.written) as usize)
                .copied()
                .ok_or(LedgerError::Missing {
                    what: "stored hash",
                    index,
                });
        }
        let mut b = [0u8; 32];
        self.file.read_exact_at(&mut b, index * 32)?;
        Ok(Hash(b))
    }

    /// Several hashes; those in the file are read with one read of the span they lie
    /// in (a tile's 256 hashes lie within ~512), not one read each.
    fn get_many(&self, indexes: &[u64]) -> Result<Vec<Hash>> {
        let in_file = || indexes.iter().filter(|i| **i < self.written);
        let (Some(lo), Some(hi)) = (in_file().min(), in_file().max()) else {
            return indexes.iter().map(|i| self.get(*i)).collect();
        };
        if hi - lo >= 1 << 16 {
            return indexes.iter().map(|i| self.get(*i)).collect();
        }
        let mut span = vec![0u8; ((hi - lo + 1) * 32) as usize];
        self.file.read_exact_at(&mut span, lo * 32)?;
        indexes
            .iter()
            .map(|&i| {
                if i < self.written {
                    let at = ((i - lo) * 32) as usize;
                    Ok(Hash(span[at..at + 32].try_into().expect("32 bytes")))
                } else {
                    self.get(i)
                }
            })
            .collect()
    }

    /// Appends leaf hashes and the inner hashes they complete.
    pub fn push(&mut self, hashes: Vec<Hash>) {
        self.pending.extend(hashes);
    }

    /// Writes the pending hashes; `sync` also makes them durable.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        if !self.pending.is_empty() {
            let mut buf = Vec::with_capacity(self.pending.len() * 32);
            for h in &self.pending {
                buf.extend_from_slice(&h.0);
            }
            self.file.write_all(&buf)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Forgets every hash from `count` on (used when the file is ahead of the entries).
    pub fn truncate(&mut self, count: u64) -> Result<()> {
        self.flush(false)?;
        if count < self.written {
            self.file.set_len(count * 32)?;
            self.written = count;
        }
        Ok(())
    }
}

/// `tlog_tiles` reads hashes through this trait; errors become its own error type.
struct Reader<'a>(&'a HashFile);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .get_many(indexes)
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
    }
}

/// The tree: `size` leaves, their stored hashes in a `HashFile`.
pub struct Tree {
    hashes: Mutex<HashFile>,
    size: std::sync::atomic::AtomicU64,
}

impl Tree {
    /// Opens the hash file and checks it against `size` (the number of entries that
    /// exist): a longer file is cut back; a shorter one is extended by `fill`, which
    /// must return the leaf hash of the entry at an index.
    pub fn open(path: &Path, size: u64, mut fill: impl FnMut(u64) -> Result<Hash>) -> Result<Self> {
        let mut hf = HashFile::open(path)?;
        let want = tlog_tiles::stored_hash_count(size);
        if hf.len() > want {
            hf.truncate(want)?;
        }
        // Find how many leaves the file covers, then recompute the rest.
        let mut have = 0u64;
        while have < size && tlog_tiles::stored_hash_count(have + 1) <= hf.len() {
            have += 1;
        }
        hf.truncate(tlog_tiles::stored_hash_count(have))?;
        for n in have..size {
            let leaf = fill(n)?;
            let new = tlog_tiles::stored_hashes_for_record_hash(n, leaf, &Reader(&hf))
                .map_err(LedgerError::tlog)?;
            hf.push(new);
        }
        hf.flush(true)?;
        Ok(Tree {
            hashes: Mutex::new(hf),
            size: std::sync::atomic::AtomicU64::new(size),
        })
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Appends leaves (their leaf hashes, RFC 6962 `SHA-256(0x00 || data)`), returns the
    /// index of the first. The caller has made the entries themselves durable.
    pub fn append(&self, leaf_hashes: &[Hash], sync: bool) -> Result<u64> {
        let mut hf = self.hashes.lock().expect("hash file lock");
        let first = self.size();
        for (i, h) in leaf_hashes.iter().enumerate() {
            let new = tlog_tiles::stored_hashes_for_record_hash(first + i as u64, *h, &Reader(&hf))
                .map_err(LedgerError::tlog)?;
            hf.push(new);
        }
        hf.flush(sync)?;
        self.size.store(
            first + leaf_hashes.len() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(first)
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        let hf = self.hashes.lock().expect("hash file lock");
        tlog_tiles::tree_hash(size, &Reader(&hf)).map_err(LedgerError::tlog)
    }

    /// RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        if index >= size {
            return Err(LedgerError::Invalid(format!(
                "leaf {index} is not in a tree of {size} leaves"
            )));
        }
        let hf = self.hashes.lock().expect("hash file lock");
        tlog_tiles::prove_record(size, index, &Reader(&hf)).map_err(LedgerError::tlog)
    }

    /// RFC 9162 consistency proof from the tree of `from` leaves to the one of `to`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.check_size(to)?;
        if from > to {
            return Err(LedgerError::Invalid(format!(
                "cannot prove size {from} consistent with the smaller size {to}"
            )));
        }
        if from == 0 {
            return Err(LedgerError::Invalid(
                "an empty tree has no consistency proof: give a size of at least 1".into(),
            ));
        }
        let hf = self.hashes.lock().expect("hash file lock");
        tlog_tiles::prove_tree(to, from, &Reader(&hf)).map_err(LedgerError::tlog)
    }

    /// Stored hashes by index (tiles are built from them).
    pub fn stored_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>> {
        self.hashes
            .lock()
            .expect("hash file lock")
            .get_many(indexes)
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.size() {
            return Err(LedgerError::Invalid(format!(
                "the log has {} leaves, not {size}",
                self.size()
            )));
        }
        Ok(())
    }
}

/// `tlog_tiles::HashReader` over the tree, for tile building.
pub(crate) struct TreeReader<'a>(pub &'a Tree);

impl HashReader for TreeReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .stored_hashes(indexes)
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
    }
}

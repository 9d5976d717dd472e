//! Where leaf records live. `FileEntries` keeps them in two append-only files: the
//! records (`entries.bin`, each `u32 BE length || bytes`) and their offsets
//! (`entries.idx`, u64 BE each). An entry counts once its offset is written; a torn
//! tail of either file is cut back at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use crate::{LedgerError, Result};

/// Leaf records by index.
pub trait EntryStore: Send + Sync {
    /// How many entries it holds.
    fn len(&self) -> u64;
    /// Entry `index`.
    fn get(&self, index: u64) -> Result<Vec<u8>>;
    /// Entries `from..to`, in order. Stores that can read many at once cheaper than one
    /// by one (one database transaction) override it.
    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        (from..to).map(|i| self.get(i)).collect()
    }
    /// True when it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A store with its newest entries already in memory (just read to be hashed), so
/// publishing them does not read them again.
pub struct WithRecent<'a> {
    /// The entries already stored.
    pub store: &'a dyn EntryStore,
    /// The index of `recent[0]`.
    pub first: u64,
    /// Entries after those, not stored yet.
    pub recent: &'a [Vec<u8>],
}

impl EntryStore for WithRecent<'_> {
    fn len(&self) -> u64 {
        self.store.len().max(self.first + self.recent.len() as u64)
    }

    fn get(&self, index: u64) -> Result<Vec<u8>> {
        match index.checked_sub(self.first) {
            Some(i) if (i as usize) < self.recent.len() => Ok(self.recent[i as usize].clone()),
            _ => self.store.get(index),
        }
    }

    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let split = self.first.clamp(from, to);
        let mut out = if from < split {
            self.store.range(from, split)?
        } else {
            Vec::new()
        };
        for i in split..to {
            out.push(self.get(i)?);
        }
        Ok(out)
    }
}

/// Entries in append-only files with an index.
pub struct FileEntries {
    inner: Mutex<Files>,
}

struct Files {
    data: File,
    idx: File,
    data_len: u64,
    count: u64,
}

impl FileEntries {
    /// Opens (or creates) the entry files in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(dir.join(name))
        };
        let (data, idx) = (open("entries.bin")?, open("entries.idx")?);
        let data_len = data.metadata()?.len();
        let mut count = idx.metadata()?.len() / 8;
        // Drop offsets whose record is not complete, then bytes no offset points past.
        while count > 0 {
            let mut b = [0u8; 8];
            idx.read_exact_at(&mut b, (count - 1) * 8)?;
            let off = u64::from_be_bytes(b);
            let mut l = [0u8; 4];
            let complete = off + 4 <= data_len
                && data.read_exact_at(&mut l, off).is_ok()
                && off + 4 + u32::from_be_bytes(l) as u64 <= data_len;
            if complete {
                break;
            }
            count -= 1;
        }
        idx.set_len(count * 8)?;
        let end = if count == 0 {
            0
        } else {
            let mut b = [0u8; 8];
            idx.read_exact_at(&mut b, (count - 1) * 8)?;
            let off = u64::from_be_bytes(b);
            let mut l = [0u8; 4];
            data.read_exact_at(&mut l, off)?;
            off + 4 + u32::from_be_bytes(l) as u64
        };
        data.set_len(end)?;
        Ok(FileEntries {
            inner: Mutex::new(Files {
                data,
                idx,
                data_len: end,
                count,
            }),
        })
    }

    /// Appends records durably (one fsync of each file for the batch); returns the
    /// index of the first.
    pub fn append(&self, records: &[Vec<u8>]) -> Result<u64> {
        let mut f = self.inner.lock().expect("entries lock");
        let first = f.count;
        let (mut data, mut idx) = (Vec::new(), Vec::new());
        let mut off = f.data_len;
        for r in records {
            let len = u32::try_from(r.len())
                .map_err(|_| LedgerError::Invalid("a ledger entry is over 4 GiB".into()))?;
            idx.extend_from_slice(&off.to_be_bytes());
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(r);
            off += 4 + r.len() as u64;
        }
        f.data.write_all(&data)?;
        f.data.sync_data()?;
        f.idx.write_all(&idx)?;
        f.idx.sync_data()?;
        f.data_len = off;
        f.count += records.len() as u64;
        Ok(first)
    }
}

impl EntryStore for FileEntries {
    fn len(&self) -> u64 {
        self.inner.lock().expect("entries lock").count
    }

    fn get(&self, index: u64) -> Result<Vec<u8>> {
        let f = self.inner.lock().expect("entries lock");
        if index >= f.count {
            return Err(LedgerError::Missing {
                what: "entry",
                index,
            });
        }
        let mut b = [0u8; 8];
        f.idx.read_exact_at(&mut b, index * 8)?;
        let off = u64::from_be_bytes(b);
        let mut l = [0u8; 4];
        f.data.read_exact_at(&mut l, off)?;
        let len = u32::from_be_bytes(l) as u64;
        if off + 4 + len > f.data_len {
            return Err(LedgerError::Damaged {
                index,
                reason: "its length runs past the end of the file".into(),
            });
        }
        let mut out = vec![0u8; len as usize];
        f.data.read_exact_at(&mut out, off + 4)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_entries_stand_in_for_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileEntries::open(dir.path()).unwrap();
        let all: Vec<Vec<u8>> = (0..10).map(|i| format!("entry {i}").into_bytes()).collect();
        store.append(&all).unwrap();
        let with = WithRecent {
            store: &store,
            first: 6,
            recent: &all[6..],
        };
        assert_eq!(with.len(), 10);
        for (from, to) in [(0, 10), (3, 9), (7, 9), (0, 3), (6, 6), (9, 10)] {
            assert_eq!(
                with.range(from, to).unwrap(),
                all[from as usize..to as usize]
            );
        }
        assert_eq!(with.get(8).unwrap(), all[8]);
        assert!(with.get(10).is_err());
    }
}

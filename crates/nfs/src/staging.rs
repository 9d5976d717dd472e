//! The staging area: NFS writes land in a file per open file on the node's disk until
//! they become a version, sealed under a key derived from the node's master key
//! (`sealed.rs`: the disk never holds their plaintext). It owns those files and their
//! locks; it never talks to the archive (lib.rs fills and uploads them).
//!
//! Locking: the map's lock is held only to find, insert or remove an entry; each
//! staged file has its own lock, held across its copy-in, writes, fsync and upload. A
//! big file being copied or uploaded stalls only requests for that file, and a write
//! that arrives during an upload waits for it instead of truncating the file under it.
//!
//! Durability: a WRITE answered FILE_SYNC must survive a restart. The first stable
//! write of a staged file records its NFS path beside it (`N.path`, fsynced); a start
//! hands every staged file with such a record back for upload instead of wiping it.
//! Files without one held only UNSTABLE writes, which clients resend after a restart
//! (the write verifier changes), so they are dropped.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::OwnedMutexGuard;

use crate::sealed::SealedFile;

/// A staged file; `None` once it became a version or was discarded (a request that
/// waited for its lock then starts again from the map).
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<Staged>>>;

/// A file being written: its staging file and what it holds.
pub(crate) struct Staged {
    pub path: String,
    pub file: SealedFile,
    pub file_path: PathBuf,
    pub modified: SystemTime,
    pub last_write: Instant,
    /// Whether `N.path` records this file for recovery (after a stable write).
    recorded: bool,
}

impl Staged {
    /// Makes the file's bytes and its path durable: called before answering a stable
    /// WRITE.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        if !self.recorded {
            let record = record_path(&self.file_path);
            let mut f = private_file(&record, true)?;
            f.write_all(self.path.as_bytes())?;
            f.sync_all()?;
            sync_dir(&self.file_path)?;
            self.recorded = true;
        }
        Ok(())
    }

    /// Deletes the staging file and its record.
    fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.file_path);
        let _ = std::fs::remove_file(record_path(&self.file_path));
    }
}

struct Entry {
    path: String,
    slot: Slot,
}

pub(crate) struct Staging {
    dir: PathBuf,
    /// Seals the staged files (derived from the node's master key).
    key: [u8; 32],
    files: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

/// A staged file left by an earlier run whose bytes a stable WRITE acknowledged.
pub(crate) struct Leftover {
    pub path: String,
    pub file_path: PathBuf,
}

impl Staging {
    /// Opens the staging directory (private to the node), and returns what an earlier
    /// run left that must still become versions.
    pub fn open(dir: &Path, key: [u8; 32]) -> std::io::Result<(Self, Vec<Leftover>)> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut leftovers = Vec::new();
        let mut next = 0;
        for e in std::fs::read_dir(dir)? {
            let file_path = e?.path();
            if file_path.extension().is_some_and(|x| x == "path") {
                continue;
            }
            let n: u64 = file_path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            next = next.max(n);
            match std::fs::read_to_string(record_path(&file_path)) {
                Ok(path) if !path.is_empty() => leftovers.push(Leftover { path, file_path }),
                _ => {
                    let _ = std::fs::remove_file(&file_path);
                }
            }
        }
        // Records whose data file is gone are of no use.
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "path") && !p.with_extension("").exists() {
                let _ = std::fs::remove_file(&p);
            }
        }
        let staging = Staging {
            dir: dir.to_path_buf(),
            key,
            files: Mutex::new(HashMap::new()),
            next: AtomicU64::new(next + 1),
        };
        Ok((staging, leftovers))
    }

    pub fn get(&self, id: u64) -> Option<Slot> {
        self.files
            .lock()
            .expect("staging lock")
            .get(&id)
            .map(|e| e.slot.clone())
    }

    /// Whether `id` is staged (it may be in the middle of becoming a version).
    pub fn contains(&self, id: u64) -> bool {
        self.files.lock().expect("staging lock").contains_key(&id)
    }

    /// The staged file of `id`, locked. `Ok((guard, true))` when it was made just now
    /// (empty, at `path`): the caller fills it and, if that fails, calls `discard`.
    pub async fn begin(
        &self,
        id: u64,
        path: &str,
    ) -> std::io::Result<(OwnedMutexGuard<Option<Staged>>, bool)> {
        loop {
            let slot = {
                let mut files = self.files.lock().expect("staging lock");
                match files.get(&id) {
                    Some(e) => e.slot.clone(),
                    None => {
                        let staged = self.new_file(path)?;
                        let slot: Slot = Arc::new(tokio::sync::Mutex::new(Some(staged)));
                        let guard = slot.clone().try_lock_owned().expect("a new lock is free");
                        files.insert(
                            id,
                            Entry {
                                path: path.to_string(),
                                slot,
                            },
                        );
                        return Ok((guard, true));
                    }
                }
            };
            let guard = slot.lock_owned().await;
            if guard.is_some() {
                return Ok((guard, false));
            }
            // It became a version while we waited: stage afresh.
        }
    }

    fn new_file(&self, path: &str) -> std::io::Result<Staged> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let file_path = self.dir.join(n.to_string());
        let file = SealedFile::create(&file_path, &self.key)?;
        Ok(Staged {
            path: path.to_string(),
            file,
            file_path,
            modified: SystemTime::now(),
            last_write: Instant::now(),
            recorded: false,
        })
    }

    /// Adopts a leftover of an earlier run as the staged file of `id`.
    pub fn adopt(&self, id: u64, left: Leftover) -> std::io::Result<()> {
        let file = SealedFile::open(&left.file_path, &self.key)?;
        let staged = Staged {
            path: left.path.clone(),
            file,
            file_path: left.file_path,
            modified: SystemTime::now(),
            // Old enough that the idle flusher takes it at once.
            last_write: Instant::now()
                .checked_sub(crate::IDLE_FLUSH)
                .unwrap_or_else(Instant::now),
            recorded: true,
        };
        self.files.lock().expect("staging lock").insert(
            id,
            Entry {
                path: left.path,
                slot: Arc::new(tokio::sync::Mutex::new(Some(staged))),
            },
        );
        Ok(())
    }

    /// Drops the staged file under `guard` (it became a version, was removed, or could
    /// not be filled): its files go, and later requests no longer find it.
    pub fn discard(&self, id: u64, guard: &mut OwnedMutexGuard<Option<Staged>>) {
        if let Some(s) = guard.take() {
            s.remove_files();
        }
        let mut files = self.files.lock().expect("staging lock");
        if files
            .get(&id)
            .is_some_and(|e| Arc::ptr_eq(&e.slot, OwnedMutexGuard::mutex(guard)))
        {
            files.remove(&id);
        }
    }

    /// Staged files not written to for `idle`, oldest first.
    pub fn idle(&self, idle: std::time::Duration) -> Vec<u64> {
        let slots: Vec<(u64, Slot)> = self
            .files
            .lock()
            .expect("staging lock")
            .iter()
            .map(|(id, e)| (*id, e.slot.clone()))
            .collect();
        slots
            .into_iter()
            .filter(|(_, slot)| {
                // A file whose lock is taken is in use: not idle.
                slot.try_lock()
                    .is_ok_and(|g| g.as_ref().is_some_and(|s| s.last_write.elapsed() >= idle))
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// The staged files in folder `dir`, as (name, slot).
    pub fn in_dir(&self, dir: &str) -> Vec<(String, Slot)> {
        self.files
            .lock()
            .expect("staging lock")
            .values()
            .filter(|e| crate::parent(&e.path) == dir)
            .map(|e| {
                let name = e.path.rsplit('/').next().unwrap_or_default().to_string();
                (name, e.slot.clone())
            })
            .collect()
    }
}

fn record_path(file_path: &Path) -> PathBuf {
    file_path.with_extension("path")
}

/// A new file only this user may read.
pub(crate) fn private_file(path: &Path, write_only: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(!write_only)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn sync_dir(file_path: &Path) -> std::io::Result<()> {
    match file_path.parent() {
        Some(d) => std::fs::File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

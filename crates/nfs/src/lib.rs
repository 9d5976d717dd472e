//! The NFS v3 gateway (port 9402): `nfs3_server` speaks the protocol, this crate maps it
//! onto `files`. The export's root lists the buckets (mount `/` or `/BUCKET`).
//!
//! NFS v3 has no passwords (AUTH_UNIX only carries a uid), so the export acts as one
//! access key the administrator names (`--nfs-key`); it is off until one is named.
//!
//! NFS writes arrive as pieces at offsets, while objects are written whole. Writes go
//! to a staging file on the node's disk (the file's current bytes are copied in first
//! when an existing file is changed); COMMIT, or two seconds without writes, turns the
//! staging file into a new version. Until then readers over NFS see the staged bytes
//! and every other protocol sees the previous version: nothing partial becomes visible.
//! A staged file that cannot be stored (no permission, the cluster unreachable) is
//! kept, COMMIT answers an error, and the idle flush tries again (`staging.rs`).

mod attributes;
mod filesystem;
mod ids;
mod sealed;
mod staging;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use attributes::{attr, entry_attr, io_err, map_err};
use ids::{Ids, ROOT, join, name_of, parent, place};
use sealed::SealedFile;
use staging::{Staged, Staging};

use files::{Entry, FsError, Place, Session};
use futures::StreamExt;
use nfs3_server::nfs3_types::nfs3::{
    Nfs3Option, createverf3, fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3,
    specdata3, stable_how,
};
use nfs3_server::tcp::{NFSTcp, NFSTcpListener};
use nfs3_server::vfs::{
    DirEntryPlus, FileHandleU64, NextResult, NfsFileSystem, NfsReadFileSystem, ReadDirPlusIterator,
};

/// Staged writes older than this are turned into a version even without COMMIT.
const IDLE_FLUSH: Duration = Duration::from_secs(2);

/// The most a READ returns, whatever `count` the client asks for (up to 4 GiB): what
/// FSINFO advertises as the preferred read size is far below.
const MAX_READ: u32 = 1 << 20;

/// Serves NFS v3 on `listen` for `session` until `stop` completes; `on_op` hears of
/// every operation.
pub async fn serve(
    session: Session,
    listen: &str,
    staging: PathBuf,
    on_op: Option<OnOp>,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let fs = EdgeNfs::new(session, staging, on_op)?;
    let flusher = fs.0.clone();
    let listener = NFSTcpListener::bind(listen, fs).await?;
    let flush = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            flush_idle(&flusher).await;
        }
    };
    // Accept errors (EMFILE, say) pass inside the library's loop (vendor/nfs3_server).
    tokio::select! {
        r = listener.handle_forever() => r,
        _ = flush => Ok(()),
        _ = stop => Ok(()),
    }
}

/// Binds `listen` only to check that it is free (the NFS library binds it itself).
pub fn check_listen(listen: &str) -> std::io::Result<()> {
    std::net::TcpListener::bind(listen).map(drop)
}

/// The NFSv3 file system over the file layer.
pub struct EdgeNfs(Arc<Inner>);

struct Inner {
    session: Session,
    ids: Mutex<Ids>,
    staging: Staging,
    on_op: Option<OnOp>,
}

/// Told of every NFS operation that finished (for metrics): its name (`READ`, `WRITE`,
/// `LOOKUP`, ...), its status (`NFS3_OK` or the error), how long it took, and the bytes
/// it received and sent.
pub type OnOp = Arc<dyn Fn(&'static str, &'static str, Duration, u64, u64) + Send + Sync>;

/// The protocol's name of a status, as metrics label it.
fn status_name(s: nfsstat3) -> &'static str {
    match s {
        nfsstat3::NFS3_OK => "NFS3_OK",
        nfsstat3::NFS3ERR_PERM => "NFS3ERR_PERM",
        nfsstat3::NFS3ERR_NOENT => "NFS3ERR_NOENT",
        nfsstat3::NFS3ERR_IO => "NFS3ERR_IO",
        nfsstat3::NFS3ERR_NXIO => "NFS3ERR_NXIO",
        nfsstat3::NFS3ERR_ACCES => "NFS3ERR_ACCES",
        nfsstat3::NFS3ERR_EXIST => "NFS3ERR_EXIST",
        nfsstat3::NFS3ERR_XDEV => "NFS3ERR_XDEV",
        nfsstat3::NFS3ERR_NODEV => "NFS3ERR_NODEV",
        nfsstat3::NFS3ERR_NOTDIR => "NFS3ERR_NOTDIR",
        nfsstat3::NFS3ERR_ISDIR => "NFS3ERR_ISDIR",
        nfsstat3::NFS3ERR_INVAL => "NFS3ERR_INVAL",
        nfsstat3::NFS3ERR_FBIG => "NFS3ERR_FBIG",
        nfsstat3::NFS3ERR_NOSPC => "NFS3ERR_NOSPC",
        nfsstat3::NFS3ERR_ROFS => "NFS3ERR_ROFS",
        nfsstat3::NFS3ERR_MLINK => "NFS3ERR_MLINK",
        nfsstat3::NFS3ERR_NAMETOOLONG => "NFS3ERR_NAMETOOLONG",
        nfsstat3::NFS3ERR_NOTEMPTY => "NFS3ERR_NOTEMPTY",
        nfsstat3::NFS3ERR_DQUOT => "NFS3ERR_DQUOT",
        nfsstat3::NFS3ERR_STALE => "NFS3ERR_STALE",
        nfsstat3::NFS3ERR_REMOTE => "NFS3ERR_REMOTE",
        nfsstat3::NFS3ERR_BADHANDLE => "NFS3ERR_BADHANDLE",
        nfsstat3::NFS3ERR_NOT_SYNC => "NFS3ERR_NOT_SYNC",
        nfsstat3::NFS3ERR_BAD_COOKIE => "NFS3ERR_BAD_COOKIE",
        nfsstat3::NFS3ERR_NOTSUPP => "NFS3ERR_NOTSUPP",
        nfsstat3::NFS3ERR_TOOSMALL => "NFS3ERR_TOOSMALL",
        nfsstat3::NFS3ERR_SERVERFAULT => "NFS3ERR_SERVERFAULT",
        nfsstat3::NFS3ERR_BADTYPE => "NFS3ERR_BADTYPE",
        nfsstat3::NFS3ERR_JUKEBOX => "NFS3ERR_JUKEBOX",
    }
}

impl Inner {
    /// Runs one operation and tells `on_op` its outcome and time.
    async fn measured<T>(
        &self,
        op: &'static str,
        work: impl std::future::Future<Output = Result<T, nfsstat3>>,
    ) -> Result<T, nfsstat3> {
        self.measured_bytes(op, 0, |_| 0, work).await
    }

    /// `measured`, with the bytes the operation received (WRITE's data) and those
    /// `sent` finds in its answer (READ's data).
    async fn measured_bytes<T>(
        &self,
        op: &'static str,
        received: u64,
        sent: impl FnOnce(&T) -> u64,
        work: impl std::future::Future<Output = Result<T, nfsstat3>>,
    ) -> Result<T, nfsstat3> {
        let started = Instant::now();
        let result = work.await;
        if let Some(on_op) = &self.on_op {
            let (status, sent) = match &result {
                Ok(answer) => ("NFS3_OK", sent(answer)),
                Err(e) => (status_name(*e), 0),
            };
            on_op(op, status, started.elapsed(), received, sent);
        }
        result
    }
}

/// Names the key that seals staged files (derived from the node's master key).
const STAGING_KEY_PURPOSE: &str = "edgecloud 2026 nfs staging files v1";

impl EdgeNfs {
    /// Opens the export. Files an earlier run staged and acknowledged as stable are
    /// staged again, to become versions at the first idle flush.
    pub fn new(session: Session, staging: PathBuf, on_op: Option<OnOp>) -> std::io::Result<Self> {
        let key = session.archive().local_key(STAGING_KEY_PURPOSE);
        let (staging, leftovers) = Staging::open(&staging, key)?;
        let mut ids = Ids::default();
        assert_eq!(ids.id("/"), ROOT);
        for left in leftovers {
            tracing::info!("nfs: {} was staged before a restart; storing it", left.path);
            staging.adopt(ids.id(&left.path), left)?;
        }
        Ok(EdgeNfs(Arc::new(Inner {
            session,
            ids: Mutex::new(ids),
            staging,
            on_op,
        })))
    }
}

impl Inner {
    fn path(&self, id: u64) -> Result<String, nfsstat3> {
        self.ids
            .lock()
            .expect("ids lock")
            .by_id
            .get(&id)
            .cloned()
            .ok_or(nfsstat3::NFS3ERR_STALE)
    }

    fn id(&self, path: &str) -> u64 {
        self.ids.lock().expect("ids lock").id(path)
    }

    /// Looks `name` up in `dir`: "." and ".." included.
    fn child(&self, dir: u64, name: &str) -> Result<String, nfsstat3> {
        let d = self.path(dir)?;
        Ok(match name {
            "." => d,
            ".." => parent(&d),
            n => join(&d, n),
        })
    }

    /// Catches up with the cluster before a request that starts a read (LOOKUP,
    /// GETATTR, READDIRPLUS: what a client sends when it opens a file or lists a
    /// folder), so a change acknowledged through any node is seen, as NFS's
    /// close-to-open consistency promises. While the cluster cannot answer, the client
    /// is told to retry (JUKEBOX) rather than shown an old view.
    async fn catch_up(&self) -> Result<(), nfsstat3> {
        self.session.catch_up().await.map_err(|e| {
            tracing::warn!("nfs: {e}");
            nfsstat3::NFS3ERR_JUKEBOX
        })
    }

    async fn getattr(&self, id: u64) -> Result<fattr3, nfsstat3> {
        if let Some(slot) = self.staging.get(id)
            && let Some(p) = slot.lock().await.as_ref()
        {
            return Ok(attr(id, false, p.file.size(), p.modified, false));
        }
        let path = self.path(id)?;
        let e = self.session.stat(&place(&path)?).map_err(map_err)?;
        Ok(entry_attr(id, &e))
    }

    /// The staged file for `id`, locked; made (with the file's current bytes when
    /// `existing`) if needed. Only this file waits while its bytes are copied in.
    async fn stage(
        &self,
        id: u64,
        existing: bool,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<Staged>>, nfsstat3> {
        let path = self.path(id)?;
        let p = place(&path)?;
        if p.read_only() {
            return Err(nfsstat3::NFS3ERR_ROFS);
        }
        if !self.staging.contains(id) {
            self.session
                .check_writable(&p, &Default::default())
                .map_err(map_err)?;
        }
        let (mut guard, fresh) = self.staging.begin(id, &path).await.map_err(io_err)?;
        if fresh && existing {
            let staged = guard.as_mut().expect("a fresh staged file");
            if let Err(e) = self.copy_in(&p, staged).await {
                self.staging.discard(id, &mut guard);
                return Err(e);
            }
        }
        Ok(guard)
    }

    /// Copies the file's current bytes into its staging file. A file that is not
    /// there starts empty; any other failure to read it fails the write (an error
    /// must not turn into an empty file).
    async fn copy_in(&self, p: &Place, staged: &mut Staged) -> Result<(), nfsstat3> {
        let mut s = match self.session.read(p, 0).await {
            Ok((_, s)) => s,
            Err(FsError::NotFound | FsError::IsADirectory) => return Ok(()),
            Err(e) => return Err(map_err(e)),
        };
        while let Some(piece) = s.next().await {
            let piece = piece.map_err(|e| map_err(e.into()))?;
            staged.file.append(&piece).map_err(io_err)?;
        }
        Ok(())
    }

    /// Turns the staged file of `id` into a new version. On failure the staged bytes
    /// stay (COMMIT reports the error; the idle flush tries again later).
    async fn flush(&self, id: u64) -> Result<(), nfsstat3> {
        let Some(slot) = self.staging.get(id) else {
            return Ok(());
        };
        let mut guard = slot.lock_owned().await;
        let Some(p) = guard.as_mut() else {
            return Ok(()); // another flush stored it while we waited
        };
        match self.upload(p).await {
            Ok(()) => {
                self.staging.discard(id, &mut guard);
                Ok(())
            }
            Err(e) => {
                p.last_write = Instant::now(); // the next idle try in IDLE_FLUSH
                Err(e)
            }
        }
    }

    async fn upload(&self, p: &Staged) -> Result<(), nfsstat3> {
        self.session
            .write(&place(&p.path)?, plaintext(&p.file), Default::default())
            .await
            .map_err(|e| {
                tracing::warn!("nfs: storing {} failed (kept staged, retried): {e}", p.path);
                map_err(e)
            })?;
        Ok(())
    }
}

/// A staged file's plaintext as a stream of 1 MiB pieces (read and opened as the
/// upload takes them: never the whole file in memory).
fn plaintext(
    file: &SealedFile,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + '_ {
    futures::stream::unfold(Some(0u64), move |at| async move {
        let at = at?;
        match file.read_piece(at, 1 << 20) {
            Ok(piece) if piece.is_empty() => None,
            Ok(piece) => {
                let next = at + piece.len() as u64;
                Some((Ok(bytes::Bytes::from(piece)), Some(next)))
            }
            Err(e) => {
                tracing::warn!("nfs: reading a staged file at {at} failed: {e}");
                Some((Err(e), None))
            }
        }
    })
    .boxed()
}

async fn flush_idle(inner: &Arc<Inner>) {
    for id in inner.staging.idle(IDLE_FLUSH) {
        let _ = inner.flush(id).await;
    }
}

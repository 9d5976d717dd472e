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

mod sealed;
mod staging;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// Serves NFS v3 on `listen` for `session` until `stop` completes.
pub async fn serve(
    session: Session,
    listen: &str,
    staging: PathBuf,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let fs = EdgeNfs::new(session, staging)?;
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
}

/// File ids for paths, stable while the server runs (handles expire on restart).
#[derive(Default)]
struct Ids {
    by_id: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Ids {
    fn id(&mut self, path: &str) -> u64 {
        if let Some(id) = self.by_path.get(path) {
            return *id;
        }
        self.next += 1;
        let id = self.next;
        self.by_id.insert(id, path.to_string());
        self.by_path.insert(path.to_string(), id);
        id
    }
}

const ROOT: u64 = 1;

/// Names the key that seals staged files (derived from the node's master key).
const STAGING_KEY_PURPOSE: &str = "edgecloud 2026 nfs staging files v1";

impl EdgeNfs {
    /// Opens the export. Files an earlier run staged and acknowledged as stable are
    /// staged again, to become versions at the first idle flush.
    pub fn new(session: Session, staging: PathBuf) -> std::io::Result<Self> {
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
        })))
    }
}

fn map_err(e: FsError) -> nfsstat3 {
    match e {
        FsError::NotFound => nfsstat3::NFS3ERR_NOENT,
        FsError::Exists => nfsstat3::NFS3ERR_EXIST,
        FsError::NotEmpty => nfsstat3::NFS3ERR_NOTEMPTY,
        FsError::Denied => nfsstat3::NFS3ERR_ACCES,
        FsError::ReadOnly => nfsstat3::NFS3ERR_ROFS,
        FsError::NotADirectory => nfsstat3::NFS3ERR_NOTDIR,
        FsError::IsADirectory => nfsstat3::NFS3ERR_ISDIR,
        FsError::NameTooLong => nfsstat3::NFS3ERR_NAMETOOLONG,
        FsError::Invalid(_) => nfsstat3::NFS3ERR_INVAL,
        FsError::TooLarge(_) => nfsstat3::NFS3ERR_FBIG,
        FsError::Storage(m) if m.contains("No space") => nfsstat3::NFS3ERR_NOSPC,
        FsError::Aborted | FsError::Storage(_) => nfsstat3::NFS3ERR_IO,
    }
}

fn io_err(e: std::io::Error) -> nfsstat3 {
    tracing::warn!("nfs staging: {e}");
    if e.raw_os_error() == Some(28) {
        nfsstat3::NFS3ERR_NOSPC
    } else {
        nfsstat3::NFS3ERR_IO
    }
}

fn time(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    nfstime3 {
        seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
        nseconds: d.subsec_nanos(),
    }
}

fn attr(id: u64, dir: bool, size: u64, modified: SystemTime, read_only: bool) -> fattr3 {
    let mode = match (dir, read_only) {
        (true, false) => 0o755,
        (true, true) => 0o555,
        (false, false) => 0o644,
        (false, true) => 0o444,
    };
    fattr3 {
        type_: if dir { ftype3::NF3DIR } else { ftype3::NF3REG },
        mode,
        nlink: 1,
        uid: 0,
        gid: 0,
        size,
        used: size,
        rdev: specdata3::default(),
        fsid: 0,
        fileid: id,
        atime: time(modified),
        mtime: time(modified),
        ctime: time(modified),
    }
}

fn entry_attr(id: u64, e: &Entry) -> fattr3 {
    attr(id, e.dir, e.size, e.modified, e.read_only)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

fn name_of(f: &filename3<'_>) -> Result<String, nfsstat3> {
    let name = std::str::from_utf8(f.as_ref()).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    if name.len() > files::path::MAX_NAME {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    Ok(name.to_string())
}

fn place(path: &str) -> Result<Place, nfsstat3> {
    Place::parse(path).map_err(map_err)
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

/// A directory listing in progress.
pub struct DirIter {
    entries: std::vec::IntoIter<DirEntryPlus<FileHandleU64>>,
}

impl ReadDirPlusIterator<FileHandleU64> for DirIter {
    async fn next(&mut self) -> NextResult<DirEntryPlus<FileHandleU64>> {
        match self.entries.next() {
            Some(e) => NextResult::Ok(e),
            None => NextResult::Eof,
        }
    }
}

impl NfsReadFileSystem for EdgeNfs {
    type Handle = FileHandleU64;

    fn root_dir(&self) -> FileHandleU64 {
        FileHandleU64::new(ROOT)
    }

    async fn lookup(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
    ) -> Result<FileHandleU64, nfsstat3> {
        let name = std::str::from_utf8(filename.as_ref()).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
        let path = self.0.child(dirid.as_u64(), name)?;
        self.0.catch_up().await?;
        let id = self.0.id(&path);
        if self.0.staging.contains(id) {
            return Ok(FileHandleU64::new(id));
        }
        self.0.session.stat(&place(&path)?).map_err(map_err)?;
        Ok(FileHandleU64::new(id))
    }

    async fn getattr(&self, id: &FileHandleU64) -> Result<fattr3, nfsstat3> {
        self.0.catch_up().await?;
        self.0.getattr(id.as_u64()).await
    }

    async fn read(
        &self,
        id: &FileHandleU64,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), nfsstat3> {
        let id = id.as_u64();
        let count = count.min(MAX_READ);
        if let Some(slot) = self.0.staging.get(id)
            && let Some(p) = slot.lock().await.as_ref()
        {
            let buf = p.file.read_piece(offset, count as usize).map_err(io_err)?;
            let eof = offset + buf.len() as u64 >= p.file.size();
            return Ok((buf, eof));
        }
        let path = self.0.path(id)?;
        let (entry, mut s) = self
            .0
            .session
            .read(&place(&path)?, offset)
            .await
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(count as usize);
        while out.len() < count as usize {
            match s.next().await {
                Some(Ok(piece)) => {
                    let take = (count as usize - out.len()).min(piece.len());
                    out.extend_from_slice(&piece[..take]);
                }
                Some(Err(e)) => return Err(map_err(e.into())),
                None => break,
            }
        }
        let eof = offset + out.len() as u64 >= entry.size;
        Ok((out, eof))
    }

    async fn readdirplus(
        &self,
        dirid: &FileHandleU64,
        cookie: u64,
    ) -> Result<impl ReadDirPlusIterator<FileHandleU64>, nfsstat3> {
        let dir = self.0.path(dirid.as_u64())?;
        self.0.catch_up().await?;
        let mut entries = self.0.session.list(&place(&dir)?).map_err(map_err)?;
        // Files being written here show up with their staged size.
        for (name, slot) in self.0.staging.in_dir(&dir) {
            if entries.iter().any(|e| e.name == name) {
                continue;
            }
            if let Some(p) = slot.lock().await.as_ref() {
                let mut e = Entry::file_stub(&name);
                e.size = p.file.size();
                e.modified = p.modified;
                entries.push(e);
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let out: Vec<DirEntryPlus<FileHandleU64>> = entries
            .into_iter()
            .enumerate()
            .skip(cookie as usize)
            .map(|(i, e)| {
                let id = self.0.id(&join(&dir, &e.name));
                DirEntryPlus {
                    fileid: id,
                    name: e.name.as_bytes().to_vec().into(),
                    cookie: i as u64 + 1,
                    name_attributes: Some(entry_attr(id, &e)),
                    name_handle: Some(FileHandleU64::new(id)),
                }
            })
            .collect();
        Ok(DirIter {
            entries: out.into_iter(),
        })
    }

    async fn readlink(&self, _id: &FileHandleU64) -> Result<nfspath3<'_>, nfsstat3> {
        Err(nfsstat3::NFS3ERR_NOTSUPP)
    }
}

impl NfsFileSystem for EdgeNfs {
    async fn setattr(&self, id: &FileHandleU64, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        let id = id.as_u64();
        if let Nfs3Option::Some(size) = setattr.size {
            // Truncating or extending changes the bytes: stage them.
            let mut guard = self.0.stage(id, size > 0).await?;
            let p = guard.as_mut().expect("staged");
            p.file.set_len(size).map_err(io_err)?;
            p.modified = SystemTime::now();
            p.last_write = Instant::now();
        }
        // Modes, owners and times are not kept: objects have none of their own.
        self.0.getattr(id).await
    }

    async fn write(
        &self,
        id: &FileHandleU64,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<(fattr3, stable_how), nfsstat3> {
        let id = id.as_u64();
        let mut guard = self.0.stage(id, true).await?;
        let p = guard.as_mut().expect("staged");
        p.file.write_all_at(data, offset).map_err(io_err)?;
        p.modified = SystemTime::now();
        p.last_write = Instant::now();
        let a = attr(id, false, p.file.size(), p.modified, false);
        if stable != stable_how::UNSTABLE {
            // Durable on this node's disk now, and found again after a restart; a
            // version follows on COMMIT or when idle.
            p.sync().map_err(io_err)?;
            return Ok((a, stable_how::FILE_SYNC));
        }
        Ok((a, stable_how::UNSTABLE))
    }

    async fn create(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        attr_in: sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let path = self.0.child(dirid.as_u64(), &name_of(filename)?)?;
        if self.0.session.stat(&place(&path)?).is_ok_and(|e| e.dir) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        let id = self.0.id(&path);
        {
            // CREATE starts the file afresh: what was staged for it goes.
            if let Some(slot) = self.0.staging.get(id) {
                self.0.staging.discard(id, &mut slot.lock_owned().await);
            }
            let mut guard = self.0.stage(id, false).await?;
            let p = guard.as_mut().expect("staged");
            if let Nfs3Option::Some(size) = attr_in.size {
                p.file.set_len(size).map_err(io_err)?;
            }
        }
        // Listed and readable over NFS at once; a version on COMMIT or when idle.
        Ok((FileHandleU64::new(id), self.0.getattr(id).await?))
    }

    async fn create_exclusive(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        _verf: createverf3,
    ) -> Result<FileHandleU64, nfsstat3> {
        let path = self.0.child(dirid.as_u64(), &name_of(filename)?)?;
        if self.0.session.stat(&place(&path)?).is_ok() {
            return Err(nfsstat3::NFS3ERR_EXIST);
        }
        self.create(dirid, filename, sattr3::default())
            .await
            .map(|(h, _)| h)
    }

    async fn mkdir(
        &self,
        dirid: &FileHandleU64,
        dirname: &filename3<'_>,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let path = self.0.child(dirid.as_u64(), &name_of(dirname)?)?;
        self.0
            .session
            .mkdir(&place(&path)?)
            .await
            .map_err(map_err)?;
        let id = self.0.id(&path);
        Ok((FileHandleU64::new(id), self.0.getattr(id).await?))
    }

    async fn remove(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
    ) -> Result<(), nfsstat3> {
        let path = self.0.child(dirid.as_u64(), &name_of(filename)?)?;
        let id = self.0.id(&path);
        if let Some(slot) = self.0.staging.get(id) {
            self.0.staging.discard(id, &mut slot.lock_owned().await);
        }
        let pl = place(&path)?;
        match self.0.session.stat(&pl) {
            Ok(e) if e.dir => self.0.session.remove_dir(&pl).await.map_err(map_err),
            Ok(_) => self.0.session.remove_file(&pl).await.map_err(map_err),
            Err(FsError::NotFound) => Ok(()), // it was only staged
            Err(e) => Err(map_err(e)),
        }
    }

    async fn rename<'a>(
        &self,
        from_dirid: &FileHandleU64,
        from: &filename3<'a>,
        to_dirid: &FileHandleU64,
        to: &filename3<'a>,
    ) -> Result<(), nfsstat3> {
        let from = self.0.child(from_dirid.as_u64(), &name_of(from)?)?;
        let to = self.0.child(to_dirid.as_u64(), &name_of(to)?)?;
        let from_id = self.0.id(&from);
        self.0.flush(from_id).await?;
        self.0
            .session
            .rename(&place(&from)?, &place(&to)?)
            .await
            .map_err(map_err)?;
        // Handles follow the file to its new name.
        let mut ids = self.0.ids.lock().expect("ids lock");
        let to_id = ids.id(&to);
        ids.by_id.insert(to_id, to.clone());
        Ok(())
    }

    async fn symlink<'a>(
        &self,
        _: &FileHandleU64,
        _: &filename3<'a>,
        _: &nfspath3<'a>,
        _: &sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_NOTSUPP)
    }

    async fn commit(&self, id: &FileHandleU64, _offset: u64, _count: u32) -> Result<(), nfsstat3> {
        self.0.flush(id.as_u64()).await
    }
}

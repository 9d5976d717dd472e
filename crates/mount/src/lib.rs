//! `edgecloud mount BUCKET DIR`: a bucket as a local folder (FUSE, the `fuser` crate),
//! talking to a node's WebDAV gateway with an access key, so a mount has exactly that
//! key's permissions and the node's semantics (folders, versions, read-only snapshots).
//!
//! Files are read from a local copy fetched on first open and kept while the file is
//! unchanged (the read cache); writes go to a private copy that becomes one new version
//! when the file is closed or fsync'd.

pub mod dav;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dav::{Dav, Error, Item};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel and we trust attributes without asking the node again.
const TTL: Duration = Duration::from_secs(1);

/// What to mount and how.
pub struct Options {
    /// The node's WebDAV URL, e.g. http://127.0.0.1:9401
    pub url: String,
    /// The bucket to mount.
    pub bucket: String,
    /// The access key to log in with.
    pub access_key: String,
    /// Its secret.
    pub secret: String,
    /// Where file copies are kept (the read cache and files being written); made
    /// private to this user, since the copies are plaintext.
    pub cache_dir: PathBuf,
    /// Let other users of this machine use the mount (FUSE's allow_other), e.g. for
    /// Samba serving it as another user. Off: only the user who mounted it.
    pub allow_other: bool,
}

/// Mounts and serves until the folder is unmounted (`umount DIR` or `fusermount -u DIR`).
pub fn mount(opts: Options, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(&opts.cache_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.cache_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dav = Dav::new(&opts.url, &opts.bucket, &opts.access_key, &opts.secret);
    // Fail before mounting when the node, the key or the bucket is wrong.
    rt.block_on(dav.propfind("", false)).map_err(|e| {
        std::io::Error::other(format!(
            "cannot open bucket {:?} at {} with access key {}: {}",
            opts.bucket,
            opts.url,
            opts.access_key,
            std::io::Error::from_raw_os_error(e.0)
        ))
    })?;
    let fs = EdgeFs {
        dav,
        rt,
        cache: opts.cache_dir,
        state: Mutex::new(State::new()),
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("edgecloud:{}", opts.bucket)),
        fuser::MountOption::Subtype("edgecloud".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    cfg.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    fuser::mount(fs, dir, &cfg)
}

struct EdgeFs {
    dav: Dav,
    rt: tokio::runtime::Runtime,
    cache: PathBuf,
    state: Mutex<State>,
}

struct State {
    paths: HashMap<u64, String>,
    inodes: HashMap<String, u64>,
    next_ino: u64,
    attrs: HashMap<String, (Item, Instant)>,
    /// Local copies of files: path -> (file, the size and time it was fetched at).
    cached: HashMap<String, (PathBuf, u64, SystemTime)>,
    open: HashMap<u64, Open>,
    next_fh: u64,
    uid: u32,
    gid: u32,
}

/// An open file: its local copy, and whether it changed since the last upload.
struct Open {
    path: String,
    file: std::fs::File,
    copy: PathBuf,
    dirty: bool,
}

impl State {
    fn new() -> Self {
        let mut s = State {
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: 1,
            attrs: HashMap::new(),
            cached: HashMap::new(),
            open: HashMap::new(),
            next_fh: 1,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        };
        s.paths.insert(1, String::new());
        s.inodes.insert(String::new(), 1);
        s
    }

    fn ino(&mut self, path: &str) -> u64 {
        if let Some(i) = self.inodes.get(path) {
            return *i;
        }
        self.next_ino += 1;
        self.paths.insert(self.next_ino, path.to_string());
        self.inodes.insert(path.to_string(), self.next_ino);
        self.next_ino
    }

    fn attr(&self, ino: u64, item: &Item) -> FileAttr {
        // A file open for writing shows its local copy's size.
        let size = self.writing(&item.path).map_or(item.size, |m| m.len());
        let read_only = item.path.starts_with(".snapshots");
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: item.modified,
            mtime: item.modified,
            ctime: item.modified,
            crtime: item.modified,
            kind: if item.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: match (item.dir, read_only) {
                (true, false) => 0o755,
                (true, true) => 0o555,
                (false, false) => 0o644,
                (false, true) => 0o444,
            },
            nlink: if item.dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    /// The local copy of `path` being written, if it is open for writing.
    fn writing(&self, path: &str) -> Option<std::fs::Metadata> {
        self.open
            .values()
            .find(|o| o.path == path && !o.copy.as_os_str().is_empty())
            .and_then(|o| o.file.metadata().ok())
    }

    /// Forgets what is known about `path` (after a change).
    fn invalidate(&mut self, path: &str) {
        self.attrs.remove(path);
        if let Some((f, _, _)) = self.cached.remove(path) {
            let _ = std::fs::remove_file(f);
        }
        self.attrs.remove(parent(path));
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn join(dir: &str, name: &OsStr) -> Result<String, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    Ok(if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    })
}

fn errno(e: Error) -> Errno {
    Errno::from_i32(e.0)
}

impl EdgeFs {
    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        self.state
            .lock()
            .expect("state")
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    /// The attributes of `path`, from the cache or the node.
    fn item(&self, path: &str) -> Result<Item, Errno> {
        {
            let st = self.state.lock().expect("state");
            if let Some((item, at)) = st.attrs.get(path)
                && at.elapsed() < TTL
            {
                return Ok(item.clone());
            }
            // A file created here and not yet closed exists only locally.
            if st.open.values().any(|o| o.path == path) {
                return Ok(Item {
                    path: path.into(),
                    dir: false,
                    size: 0,
                    modified: SystemTime::now(),
                });
            }
        }
        let mut items = self
            .rt
            .block_on(self.dav.propfind(path, false))
            .map_err(errno)?;
        let mut item = items.pop().ok_or(Errno::ENOENT)?;
        item.path = path.to_string();
        self.state
            .lock()
            .expect("state")
            .attrs
            .insert(path.to_string(), (item.clone(), Instant::now()));
        Ok(item)
    }

    fn entry(&self, path: &str) -> Result<FileAttr, Errno> {
        let item = self.item(path)?;
        let mut st = self.state.lock().expect("state");
        let ino = st.ino(path);
        Ok(st.attr(ino, &item))
    }

    /// A local copy of the file's current bytes (fetched once, then reused while the
    /// file's size and time are unchanged).
    fn local_copy(&self, path: &str) -> Result<PathBuf, Errno> {
        let item = self.item(path)?;
        if let Some((f, size, time)) = self.state.lock().expect("state").cached.get(path)
            && *size == item.size
            && *time == item.modified
            && f.exists()
        {
            return Ok(f.clone());
        }
        let f = self.cache.join(format!(
            "cache-{}",
            self.state.lock().expect("state").ino(path)
        ));
        self.rt
            .block_on(async {
                let mut file = tokio::fs::File::create(&f)
                    .await
                    .map_err(|_| Error(libc::EIO))?;
                self.dav.get_into(path, &mut file).await
            })
            .map_err(errno)?;
        self.state
            .lock()
            .expect("state")
            .cached
            .insert(path.to_string(), (f.clone(), item.size, item.modified));
        Ok(f)
    }

    /// Opens a private copy for writing: the current bytes, or nothing when truncated.
    fn open_copy(&self, path: &str, truncate: bool) -> Result<u64, Errno> {
        let fh = {
            let mut st = self.state.lock().expect("state");
            st.next_fh += 1;
            st.next_fh
        };
        let copy = self.cache.join(format!("write-{fh}"));
        if truncate {
            std::fs::File::create(&copy).map_err(|_| Errno::EIO)?;
        } else {
            let src = self.local_copy(path)?;
            std::fs::copy(&src, &copy).map_err(|_| Errno::EIO)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .map_err(|_| Errno::EIO)?;
        let open = Open {
            path: path.to_string(),
            file,
            copy,
            dirty: truncate,
        };
        self.state.lock().expect("state").open.insert(fh, open);
        Ok(fh)
    }

    /// Uploads an open file's copy when it changed: one new version.
    fn upload(&self, fh: u64) -> Result<(), Errno> {
        let (path, copy) = {
            let st = self.state.lock().expect("state");
            match st.open.get(&fh) {
                Some(o) if o.dirty => (o.path.clone(), o.copy.clone()),
                _ => return Ok(()),
            }
        };
        let len = std::fs::metadata(&copy).map_err(|_| Errno::EIO)?.len();
        self.rt
            .block_on(async {
                let f = tokio::fs::File::open(&copy)
                    .await
                    .map_err(|_| Error(libc::EIO))?;
                self.dav.put_from(&path, f, len).await
            })
            .map_err(errno)?;
        let mut st = self.state.lock().expect("state");
        if let Some(o) = st.open.get_mut(&fh) {
            o.dirty = false;
        }
        st.invalidate(&path);
        Ok(())
    }
}

impl Filesystem for EdgeFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .path(parent)
            .and_then(|d| join(&d, name))
            .and_then(|p| self.entry(&p))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.entry(&p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let path = self.path(ino)?;
            if let Some(size) = size {
                // truncate(2) without an open file: change a copy and store it now.
                let (fh, own) = match fh {
                    Some(fh) => (fh.0, false),
                    None => (self.open_copy(&path, size == 0)?, true),
                };
                {
                    let mut st = self.state.lock().expect("state");
                    let o = st.open.get_mut(&fh).ok_or(Errno::EBADF)?;
                    o.file.set_len(size).map_err(|_| Errno::EIO)?;
                    o.dirty = true;
                }
                if own {
                    self.upload(fh)?;
                    if let Some(o) = self.state.lock().expect("state").open.remove(&fh) {
                        let _ = std::fs::remove_file(o.copy);
                    }
                }
            }
            // Modes, owners and times are not kept: objects have none of their own.
            self.entry(&path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let path = join(&self.path(parent)?, name)?;
            self.rt.block_on(self.dav.mkcol(&path)).map_err(errno)?;
            self.state.lock().expect("state").invalidate(&path);
            self.entry(&path)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let path = join(&self.path(parent)?, name)?;
            self.rt
                .block_on(self.dav.delete(&path, false))
                .map_err(errno)?;
            self.state.lock().expect("state").invalidate(&path);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let path = join(&self.path(parent)?, name)?;
            // WebDAV deletes folders with their contents; rmdir(2) must not.
            let items = self
                .rt
                .block_on(self.dav.propfind(&path, true))
                .map_err(errno)?;
            if items.iter().any(|i| i.path != path) {
                return Err(Errno::ENOTEMPTY);
            }
            self.rt
                .block_on(self.dav.delete(&path, true))
                .map_err(errno)?;
            self.state.lock().expect("state").invalidate(&path);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let from = join(&self.path(parent)?, name)?;
            let to = join(&self.path(newparent)?, newname)?;
            let dir = self.item(&from)?.dir;
            self.rt
                .block_on(self.dav.rename(&from, &to, dir))
                .map_err(errno)?;
            let mut st = self.state.lock().expect("state");
            st.invalidate(&from);
            st.invalidate(&to);
            // Inodes follow their files (and a folder's contents) to the new name.
            let moved: Vec<(u64, String)> = st
                .paths
                .iter()
                .filter(|(_, p)| **p == from || p.starts_with(&format!("{from}/")))
                .map(|(i, p)| (*i, format!("{to}{}", &p[from.len()..])))
                .collect();
            for (ino, p) in moved {
                let old = st.paths.insert(ino, p.clone()).unwrap_or_default();
                st.inodes.remove(&old);
                st.inodes.insert(p, ino);
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            let path = self.path(ino)?;
            let acc = flags.0 & libc::O_ACCMODE;
            if acc == libc::O_RDONLY {
                let local = self.local_copy(&path)?;
                let file = std::fs::File::open(&local).map_err(|_| Errno::EIO)?;
                let mut st = self.state.lock().expect("state");
                st.next_fh += 1;
                let fh = st.next_fh;
                st.open.insert(
                    fh,
                    Open {
                        path,
                        file,
                        copy: PathBuf::new(),
                        dirty: false,
                    },
                );
                return Ok(fh);
            }
            self.open_copy(&path, flags.0 & libc::O_TRUNC != 0)
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let path = join(&self.path(parent)?, name)?;
            if path.starts_with(".snapshots") {
                return Err(Errno::EROFS);
            }
            let fh = self.open_copy(&path, true)?;
            let mut st = self.state.lock().expect("state");
            let ino = st.ino(&path);
            let item = Item {
                path: path.clone(),
                dir: false,
                size: 0,
                modified: SystemTime::now(),
            };
            st.attrs.insert(path, (item.clone(), Instant::now()));
            Ok((fh, st.attr(ino, &item)))
        })();
        match result {
            Ok((fh, attr)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state.lock().expect("state");
        let Some(o) = st.open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match o.file.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.state.lock().expect("state");
        let Some(o) = st.open.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        if o.copy.as_os_str().is_empty() {
            return reply.error(Errno::EBADF); // opened read-only
        }
        match o.file.write_all_at(data, offset) {
            Ok(()) => {
                o.dirty = true;
                reply.written(data.len() as u32)
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): the new version is stored now, so errors reach the program.
        match self.upload(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.upload(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.upload(fh.0);
        if let Some(o) = self.state.lock().expect("state").open.remove(&fh.0)
            && !o.copy.as_os_str().is_empty()
        {
            let _ = std::fs::remove_file(o.copy);
        }
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = (|| {
            let dir = self.path(ino)?;
            let items = self
                .rt
                .block_on(self.dav.propfind(&dir, true))
                .map_err(errno)?;
            let mut st = self.state.lock().expect("state");
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".to_string()),
                (1, FileType::Directory, "..".to_string()),
            ];
            for item in items.into_iter().filter(|i| i.path != dir) {
                let name = item.path.rsplit('/').next().unwrap_or_default().to_string();
                let i = st.ino(&item.path);
                let kind = if item.dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                st.attrs.insert(item.path.clone(), (item, Instant::now()));
                entries.push((i, kind, name));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }
}

//! A lazy root file system: an image's tree served read-only over FUSE, each file's
//! bytes fetched from the store the first time something opens it (`file_cache`), so a
//! container starts before its image is on the node and reads only what it uses.
//!
//! It runs in a process of its own, one per image and node (`edgecloud lazy-root`,
//! started by [`spawn`]), not in the node: a FUSE file system dies with the process
//! serving it, and containers outlive a restart of the node. Files it has not got yet
//! it asks the node for over a Unix socket; while the node restarts, it waits.
//! It appends each file's digest to a reads log the first time it is opened, which
//! the node keeps as the image's first-start record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, Request,
};
use images::layer::{Entry, Kind};

use crate::{ContainerError, Result};

/// Nothing in an image changes: the kernel may keep what it learnt for a long time.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a read waits for the node (restarting, say) before it fails with EIO.
const NODE_PATIENCE: Duration = Duration::from_secs(600);

/// The filesystem magic of FUSE mounts (statfs's f_type).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// What `edgecloud lazy-root` is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image's tree (JSON, a list of [`Entry`] in path order).
    pub tree: PathBuf,
    /// The node's file copies (`DATA/containers/files`).
    pub cache: PathBuf,
    /// The node's fetch socket.
    pub socket: PathBuf,
    /// Where first opens are logged, a digest per line.
    pub reads: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Added to every owner's uid and gid (below 65536): the first host id of the
    /// user namespace its containers run in (0: none).
    pub id_shift: u32,
}

/// One path of the tree.
struct Node {
    entry: Entry,
    /// A directory's entries: name → inode.
    children: BTreeMap<Vec<u8>, u64>,
    nlink: u32,
}

/// The FUSE file system of one image.
struct LazyRoot {
    /// Inode `i` is `nodes[i - 1]`; the root is inode 1.
    nodes: Vec<Node>,
    cache: PathBuf,
    socket: PathBuf,
    reads: Mutex<(File, HashSet<String>)>,
    open: Mutex<HashMap<u64, std::sync::Arc<File>>>,
    next_fh: AtomicU64,
    total_bytes: u64,
    id_shift: u32,
}

impl LazyRoot {
    fn new(entries: Vec<Entry>, opts: &Options) -> Result<Self> {
        let root = Entry {
            path: String::new(),
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            digest: None,
            link: None,
            device: None,
        };
        let mut nodes = vec![Node {
            entry: root,
            children: BTreeMap::new(),
            nlink: 2,
        }];
        let mut by_path: HashMap<String, u64> = HashMap::from([(String::new(), 1)]);
        let mut total_bytes = 0;
        for e in entries {
            if matches!(e.kind, Kind::Whiteout | Kind::Opaque)
                || e.path.is_empty()
                || e.path
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                continue;
            }
            let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            let Some(&parent_ino) = by_path.get(parent) else {
                return Err(ContainerError::Image(format!(
                    "{}: its parent is not in the tree",
                    e.path
                )));
            };
            let name = name.as_bytes().to_vec();
            let ino = if e.kind == Kind::Hardlink {
                // The same inode as its target, as a hard link is.
                let target = e.link.as_deref().unwrap_or_default();
                match by_path.get(target) {
                    Some(&t) if nodes[t as usize - 1].entry.kind == Kind::File => {
                        nodes[t as usize - 1].nlink += 1;
                        t
                    }
                    _ => continue,
                }
            } else {
                if e.kind == Kind::File {
                    total_bytes += e.size;
                }
                let ino = nodes.len() as u64 + 1;
                by_path.insert(e.path.clone(), ino);
                let nlink = if e.kind == Kind::Dir { 2 } else { 1 };
                nodes.push(Node {
                    entry: e,
                    children: BTreeMap::new(),
                    nlink,
                });
                ino
            };
            let parent = &mut nodes[parent_ino as usize - 1];
            if parent.entry.kind != Kind::Dir {
                continue;
            }
            parent.children.insert(name, ino);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.reads)?;
        Ok(LazyRoot {
            nodes,
            cache: opts.cache.clone(),
            socket: opts.socket.clone(),
            reads: Mutex::new((log, HashSet::new())),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            total_bytes,
            id_shift: opts.id_shift,
        })
    }

    /// An owner id as the containers' user namespace maps it: ids inside it are
    /// `id_shift` + id on the node; an id beyond its 65536 shows as its nobody.
    fn shifted(&self, id: u64) -> u32 {
        if self.id_shift == 0 {
            return id as u32;
        }
        let id = if id < USERNS_SIZE as u64 {
            id as u32
        } else {
            65534
        };
        self.id_shift + id
    }

    fn node(&self, ino: INodeNo) -> std::result::Result<&Node, Errno> {
        (ino.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64, n: &Node) -> FileAttr {
        let e = &n.entry;
        let time = UNIX_EPOCH + Duration::from_secs(e.mtime);
        let (kind, rdev) = match e.kind {
            Kind::Dir => (FileType::Directory, 0),
            Kind::Symlink => (FileType::Symlink, 0),
            Kind::Char | Kind::Block => {
                let (major, minor) = e.device.unwrap_or_default();
                let kind = if e.kind == Kind::Char {
                    FileType::CharDevice
                } else {
                    FileType::BlockDevice
                };
                (kind, libc::makedev(major, minor) as u32)
            }
            Kind::Fifo => (FileType::NamedPipe, 0),
            _ => (FileType::RegularFile, 0),
        };
        let size = match e.kind {
            Kind::Symlink => e.link.as_ref().map_or(0, |l| l.len() as u64),
            Kind::File => e.size,
            _ => 0,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm: (e.mode & 0o7777) as u16,
            nlink: n.nlink,
            uid: self.shifted(e.uid),
            gid: self.shifted(e.gid),
            rdev,
            flags: 0,
            blksize: 4096,
        }
    }

    /// The local copy of a file, fetched through the node first if missing.
    fn local_copy(&self, digest: &str, size: u64) -> std::result::Result<File, Errno> {
        let path = self.cache.join(digest);
        if let Ok(f) = File::open(&path)
            && f.metadata().is_ok_and(|m| m.len() == size)
        {
            return Ok(f);
        }
        self.ask_node(digest, size)?;
        File::open(&path).map_err(|_| Errno::EIO)
    }

    /// Asks the node to fetch a file; waits for it while the node is away.
    fn ask_node(&self, digest: &str, size: u64) -> std::result::Result<(), Errno> {
        let deadline = Instant::now() + NODE_PATIENCE;
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(mut s) => {
                    let mut answer = String::new();
                    let sent = writeln!(s, "{digest} {size}")
                        .and_then(|()| BufReader::new(&s).read_line(&mut answer));
                    match sent {
                        Ok(_) if answer.trim_end() == "ok" => return Ok(()),
                        Ok(n) if n > 0 => {
                            eprintln!("fetching {digest}: {}", answer.trim_end());
                            return Err(Errno::EIO);
                        }
                        // The node went away mid-answer (it stops, say): ask again,
                        // the next one answers.
                        _ if Instant::now() < deadline => {}
                        _ => {
                            eprintln!("fetching {digest}: the node never answered");
                            return Err(Errno::EIO);
                        }
                    }
                }
                Err(_) if Instant::now() < deadline => {}
                Err(e) => {
                    eprintln!("fetching {digest}: the node is not answering: {e}");
                    return Err(Errno::EIO);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn note_read(&self, digest: &str) {
        let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if r.1.insert(digest.to_string()) {
            let _ = writeln!(r.0, "{digest}");
        }
    }
}

impl Filesystem for LazyRoot {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.node(parent).and_then(|p| {
            let ino = *p.children.get(name.as_bytes()).ok_or(Errno::ENOENT)?;
            Ok((ino, self.node(INodeNo(ino))?))
        });
        match found {
            Ok((ino, n)) => reply.entry(&TTL, &self.attr(ino, n), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(n) => reply.attr(&TTL, &self.attr(ino.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok(n) if n.entry.kind == Kind::Symlink => {
                reply.data(n.entry.link.as_deref().unwrap_or_default().as_bytes())
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(Errno::EROFS);
            }
            let n = self.node(ino)?;
            let (Kind::File, Some(digest)) = (n.entry.kind, n.entry.digest.as_deref()) else {
                return Err(Errno::EINVAL);
            };
            let file = self.local_copy(digest, n.entry.size)?;
            self.note_read(digest);
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, std::sync::Arc::new(file));
            Ok(fh)
        })();
        match result {
            // The bytes never change: the kernel may keep its page cache across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
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
        let file = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(file) = file else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match file.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..n]);
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
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Ok(dir) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if dir.entry.kind != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        let dots = [
            (ino.0, FileType::Directory, b".".as_slice()),
            (1, FileType::Directory, b"..".as_slice()),
        ];
        let children = dir.children.iter().filter_map(|(name, &i)| {
            let n = self.node(INodeNo(i)).ok()?;
            Some((i, self.attr(i, n).kind, name.as_slice()))
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.total_bytes.div_ceil(4096);
        reply.statfs(blocks, 0, 0, self.nodes.len() as u64, 0, 4096, 255, 4096);
    }
}

/// How many ids a container's user namespace maps (0-65535 inside).
pub const USERNS_SIZE: u32 = 65536;

/// Serves the lazy root until it is unmounted (the `edgecloud lazy-root` command).
pub fn serve(opts: &Options) -> Result<()> {
    let text = std::fs::read(&opts.tree)?;
    let entries: Vec<Entry> = serde_json::from_slice(&text)
        .map_err(|e| ContainerError::Image(format!("{}: {e}", opts.tree.display())))?;
    let fs = LazyRoot::new(entries, opts)?;
    let mut cfg = fuser::Config::default();
    let name = opts
        .mountpoint
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(12).collect::<String>())
        .unwrap_or_default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("edgecloud-image:{name}")),
        fuser::MountOption::Subtype("edgecloud".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RO,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    cfg.acl = fuser::SessionACL::All;
    // Reads of files already here are served while another waits for a fetch.
    cfg.n_threads = Some(4);
    fuser::mount(fs, &opts.mountpoint, &cfg)?;
    Ok(())
}

/// Whether `dir` is a live FUSE mount (a dead one, whose process is gone, answers
/// ENOTCONN and is not).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC
}

/// Starts `program lazy-root ...` for `opts` in its own session (so it outlives the
/// node and a Ctrl-C to it) and waits until the mount is up. Its messages go to `log`.
pub fn spawn(program: &Path, opts: &Options, log: &Path) -> Result<()> {
    // A dead mount (its process was killed) is in the way: take it off first.
    if !is_mounted(&opts.mountpoint) {
        crate::rootfs::unmount(&opts.mountpoint)?;
    }
    std::fs::create_dir_all(&opts.mountpoint)?;
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = std::process::Command::new(program);
    cmd.arg("lazy-root")
        .arg("--tree")
        .arg(&opts.tree)
        .arg("--cache")
        .arg(&opts.cache)
        .arg("--socket")
        .arg(&opts.socket)
        .arg("--reads")
        .arg(&opts.reads)
        .arg("--id-shift")
        .arg(opts.id_shift.to_string())
        .arg(&opts.mountpoint)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err);
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        ContainerError::Runtime(format!(
            "starting the lazy root ({} lazy-root): {e}",
            program.display()
        ))
    })?;
    let started = SystemTime::now();
    loop {
        if is_mounted(&opts.mountpoint) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            let last = said.lines().last().unwrap_or_default();
            return Err(ContainerError::Runtime(format!(
                "the lazy root of {} ended at start ({status}): {last}",
                opts.mountpoint.display()
            )));
        }
        if started.elapsed().unwrap_or_default() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ContainerError::Runtime(format!(
                "the lazy root of {} was not mounted within 10 s",
                opts.mountpoint.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Reap it when it ends (after an unmount), so it leaves no zombie.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(path: &str, kind: Kind, link: Option<&str>) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1,
            size: if kind == Kind::File { 10 } else { 0 },
            digest: (kind == Kind::File).then(|| "a".repeat(64)),
            link: link.map(str::to_string),
            device: None,
        }
    }

    #[test]
    fn the_tree_becomes_inodes_with_hard_links_shared_and_bad_paths_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            tree: dir.path().join("t"),
            cache: dir.path().join("files"),
            socket: dir.path().join("s"),
            reads: dir.path().join("reads"),
            mountpoint: dir.path().join("m"),
            id_shift: 100_000,
        };
        let fs = LazyRoot::new(
            vec![
                entry("bin", Kind::Dir, None),
                entry("bin/busybox", Kind::File, None),
                entry("bin/ls", Kind::Symlink, Some("busybox")),
                entry("bin/sh", Kind::Hardlink, Some("bin/busybox")),
                entry("bin/gone", Kind::Whiteout, None),
                entry("bin/../../escape", Kind::File, None),
                entry("bin/dangling", Kind::Hardlink, Some("no/such")),
            ],
            &opts,
        )
        .unwrap();
        let bin = fs.nodes[0].children[b"bin".as_slice()];
        let children = &fs.node(INodeNo(bin)).unwrap().children;
        let names: Vec<&[u8]> = children.keys().map(Vec::as_slice).collect();
        assert_eq!(names, [b"busybox".as_slice(), b"ls", b"sh"]);
        let (busybox, sh) = (children[b"busybox".as_slice()], children[b"sh".as_slice()]);
        assert_eq!(busybox, sh, "a hard link is its target's inode");
        let n = fs.node(INodeNo(busybox)).unwrap();
        let attr = fs.attr(busybox, n);
        assert_eq!(
            (attr.nlink, attr.size, attr.kind),
            (2, 10, FileType::RegularFile)
        );
        let ls = children[b"ls".as_slice()];
        let attr = fs.attr(ls, fs.node(INodeNo(ls)).unwrap());
        assert_eq!((attr.kind, attr.size), (FileType::Symlink, 7));
        assert_eq!(fs.total_bytes, 10);
        // Owners as the containers' user namespace maps them.
        assert_eq!(fs.attr(1, &fs.nodes[0]).uid, 100_000);
        assert_eq!((fs.shifted(33), fs.shifted(70_000)), (100_033, 165_534));
        assert!(fs.node(INodeNo(0)).is_err() && fs.node(INodeNo(99)).is_err());
    }
}

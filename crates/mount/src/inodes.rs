//! The mount's state: the inode table (FUSE names files by number, the node by path),
//! attributes trusted for `TTL`, the local copies, and open files.

use super::*;

pub(crate) struct State {
    pub(crate) paths: HashMap<u64, String>,
    pub(crate) inodes: HashMap<String, u64>,
    pub(crate) next_ino: u64,
    pub(crate) attrs: HashMap<String, (Item, Instant)>,
    /// Local copies of files: path -> (file, the size and time it was fetched at).
    pub(crate) cached: HashMap<String, (PathBuf, u64, SystemTime)>,
    pub(crate) open: HashMap<u64, Open>,
    pub(crate) next_fh: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// An open file: its local copy, and whether it changed since the last upload.
pub(crate) struct Open {
    pub(crate) path: String,
    pub(crate) file: std::fs::File,
    pub(crate) copy: PathBuf,
    pub(crate) dirty: bool,
}

impl State {
    pub(crate) fn new(owner: Option<(u32, u32)>) -> Self {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = owner.unwrap_or_else(|| unsafe { (libc::getuid(), libc::getgid()) });
        let mut s = State {
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: 1,
            attrs: HashMap::new(),
            cached: HashMap::new(),
            open: HashMap::new(),
            next_fh: 1,
            uid,
            gid,
        };
        s.paths.insert(1, String::new());
        s.inodes.insert(String::new(), 1);
        s
    }

    pub(crate) fn ino(&mut self, path: &str) -> u64 {
        if let Some(i) = self.inodes.get(path) {
            return *i;
        }
        self.next_ino += 1;
        self.paths.insert(self.next_ino, path.to_string());
        self.inodes.insert(path.to_string(), self.next_ino);
        self.next_ino
    }

    pub(crate) fn attr(&self, ino: u64, item: &Item) -> FileAttr {
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
    pub(crate) fn writing(&self, path: &str) -> Option<std::fs::Metadata> {
        self.open
            .values()
            .find(|o| o.path == path && !o.copy.as_os_str().is_empty())
            .and_then(|o| o.file.metadata().ok())
    }

    /// Forgets what is known about `path` (after a change).
    pub(crate) fn invalidate(&mut self, path: &str) {
        self.attrs.remove(path);
        if let Some((f, _, _)) = self.cached.remove(path) {
            let _ = std::fs::remove_file(f);
        }
        self.attrs.remove(parent(path));
    }
}

//! `edgecloud mount BUCKET DIR`: a bucket as a local folder (FUSE, the `fuser` crate),
//! talking to a node's WebDAV gateway with an access key, so a mount has exactly that
//! key's permissions and the node's semantics (folders, versions, read-only snapshots).
//!
//! Files are read from a local copy fetched on first open and kept while the file is
//! unchanged (the read cache); writes go to a private copy that becomes one new version
//! when the file is closed or fsync'd.

mod cache;
pub mod dav;
mod fuse;
mod inodes;

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
use inodes::{Open, State};

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
    /// The owner (uid, gid) its files show [default: the user who mounted it]; a
    /// container in a user namespace gets its own root.
    pub owner: Option<(u32, u32)>,
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
        state: Mutex::new(State::new(opts.owner)),
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
}

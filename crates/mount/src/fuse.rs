//! The FUSE operations (`fuser::Filesystem`) over the node's WebDAV gateway.

use super::*;

impl Filesystem for EdgeFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // open(O_TRUNC) arrives with O_TRUNC (which `open` honours) instead of a separate
        // truncate the kernel may send before the open: without this, `echo a > f` over
        // a longer f left f's old tail behind.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

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

//! The NFS v3 operations (`nfs3_server`'s `NfsReadFileSystem` and `NfsFileSystem`)
//! over `files`, with writes going through the staging area. Each operation runs in an
//! async block handed to `Inner::measured`, so that its outcome, time and bytes reach
//! the metrics whichever way it returns.

use super::*;

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
        self.0
            .measured("LOOKUP", async {
                let name =
                    std::str::from_utf8(filename.as_ref()).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
                let path = self.0.child(dirid.as_u64(), name)?;
                self.0.catch_up().await?;
                let id = self.0.id(&path);
                if self.0.staging.contains(id) {
                    return Ok(FileHandleU64::new(id));
                }
                self.0.session.stat(&place(&path)?).map_err(map_err)?;
                Ok(FileHandleU64::new(id))
            })
            .await
    }

    async fn getattr(&self, id: &FileHandleU64) -> Result<fattr3, nfsstat3> {
        self.0
            .measured("GETATTR", async {
                self.0.catch_up().await?;
                self.0.getattr(id.as_u64()).await
            })
            .await
    }

    async fn read(
        &self,
        id: &FileHandleU64,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), nfsstat3> {
        self.0
            .measured_bytes("READ", 0, |(data, _)| data.len() as u64, async {
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
            })
            .await
    }

    async fn readdirplus(
        &self,
        dirid: &FileHandleU64,
        cookie: u64,
    ) -> Result<impl ReadDirPlusIterator<FileHandleU64>, nfsstat3> {
        self.0
            .measured("READDIRPLUS", async {
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
            })
            .await
    }

    async fn readlink(&self, _id: &FileHandleU64) -> Result<nfspath3<'_>, nfsstat3> {
        self.0
            .measured("READLINK", async { Err(nfsstat3::NFS3ERR_NOTSUPP) })
            .await
    }
}

impl NfsFileSystem for EdgeNfs {
    async fn setattr(&self, id: &FileHandleU64, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        self.0
            .measured("SETATTR", async {
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
            })
            .await
    }

    async fn write(
        &self,
        id: &FileHandleU64,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<(fattr3, stable_how), nfsstat3> {
        self.0
            .measured_bytes("WRITE", data.len() as u64, |_| 0, async {
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
            })
            .await
    }

    async fn create(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        attr_in: sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        self.0
            .measured("CREATE", async {
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
            })
            .await
    }

    async fn create_exclusive(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        _verf: createverf3,
    ) -> Result<FileHandleU64, nfsstat3> {
        self.0
            .measured("CREATE", async {
                let path = self.0.child(dirid.as_u64(), &name_of(filename)?)?;
                if self.0.session.stat(&place(&path)?).is_ok() {
                    return Err(nfsstat3::NFS3ERR_EXIST);
                }
                self.create(dirid, filename, sattr3::default())
                    .await
                    .map(|(h, _)| h)
            })
            .await
    }

    async fn mkdir(
        &self,
        dirid: &FileHandleU64,
        dirname: &filename3<'_>,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        self.0
            .measured("MKDIR", async {
                let path = self.0.child(dirid.as_u64(), &name_of(dirname)?)?;
                self.0
                    .session
                    .mkdir(&place(&path)?)
                    .await
                    .map_err(map_err)?;
                let id = self.0.id(&path);
                Ok((FileHandleU64::new(id), self.0.getattr(id).await?))
            })
            .await
    }

    async fn remove(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
    ) -> Result<(), nfsstat3> {
        self.0
            .measured("REMOVE", async {
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
            })
            .await
    }

    async fn rename<'a>(
        &self,
        from_dirid: &FileHandleU64,
        from: &filename3<'a>,
        to_dirid: &FileHandleU64,
        to: &filename3<'a>,
    ) -> Result<(), nfsstat3> {
        self.0
            .measured("RENAME", async {
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
            })
            .await
    }

    async fn symlink<'a>(
        &self,
        _: &FileHandleU64,
        _: &filename3<'a>,
        _: &nfspath3<'a>,
        _: &sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        self.0
            .measured("SYMLINK", async { Err(nfsstat3::NFS3ERR_NOTSUPP) })
            .await
    }

    async fn commit(&self, id: &FileHandleU64, _offset: u64, _count: u32) -> Result<(), nfsstat3> {
        self.0.measured("COMMIT", self.0.flush(id.as_u64())).await
    }
}

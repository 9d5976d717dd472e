//! Local copies of files: fetched once when first opened and read from while
//! unchanged (the read cache); written to privately, then uploaded as one new version
//! when the file is closed or fsync'd.

use super::*;

impl EdgeFs {
    /// A local copy of the file's current bytes (fetched once, then reused while the
    /// file's size and time are unchanged).
    pub(crate) fn local_copy(&self, path: &str) -> Result<PathBuf, Errno> {
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
    pub(crate) fn open_copy(&self, path: &str, truncate: bool) -> Result<u64, Errno> {
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
    pub(crate) fn upload(&self, fh: u64) -> Result<(), Errno> {
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

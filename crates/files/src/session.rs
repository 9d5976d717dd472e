//! What a logged-in user can do, in file-system terms, each checked against the same
//! per-bucket permissions as S3 (read < write < owner).

use std::collections::BTreeMap;

use archive::{
    AccessKey, Archive, ByteRange, ListQuery, ObjectStream, Permission, PutOptions, Version,
    VersionSel,
};
use bytes::Bytes;
use futures::Stream;

use crate::path::{Place, SNAPSHOTS};
use crate::{Entry, FsError, Result, time_of};

/// Content type of the empty objects that mark folders (as S3 consoles make them).
const FOLDER_TYPE: &str = "application/x-directory";

/// Listing page size when walking a folder.
const PAGE: usize = 1000;

/// One logged-in user's view of the files: what they may see and do.
#[derive(Clone)]
pub struct Session {
    archive: Archive,
    /// None: the root key, which may do everything.
    key: Option<AccessKey>,
}

/// Options of a file write.
#[derive(Debug, Default, Clone)]
pub struct WriteOptions {
    /// The Content-Type to store.
    pub content_type: Option<String>,
    /// Fail with `Exists` if the file is there (exclusive create).
    pub create_new: bool,
}

/// The directory and file parts of a place inside a bucket.
struct Target<'a> {
    bucket: &'a str,
    sel: VersionSel,
    key: &'a str,
    live: bool,
}

fn target(place: &Place) -> Option<Target<'_>> {
    match place {
        Place::In { bucket, at, key } => Some(Target {
            bucket,
            sel: at
                .as_ref()
                .map_or(VersionSel::Latest, |i| VersionSel::AsOf(i.ns)),
            key,
            live: at.is_none(),
        }),
        _ => None,
    }
}

impl Session {
    /// The archive this session works on.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    pub(crate) fn new(archive: Archive, key: Option<AccessKey>) -> Self {
        Session { archive, key }
    }

    /// Sees, from here on, every change acknowledged anywhere before the call (in a
    /// cluster, changes made through other nodes): protocols call it per request.
    pub async fn catch_up(&self) -> Result<()> {
        crate::catch_up(&self.archive).await
    }

    /// The access key id of this session (None for the root key).
    pub fn access_key(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.access_key.as_str())
    }

    fn actor(&self) -> Option<String> {
        self.access_key().map(str::to_string)
    }

    /// The session's key as the catalog holds it now. A key deleted, or given a new
    /// secret, since the login is revoked: every operation after that is denied (an
    /// FTP session or the NFS export does not outlive `edgecloud key delete`).
    fn current_key(&self) -> Result<Option<AccessKey>> {
        let Some(k) = &self.key else {
            return Ok(None);
        };
        match self.archive.access_key(&k.access_key)? {
            Some(now) if crate::constant_time_eq(now.secret.as_bytes(), k.secret.as_bytes()) => {
                Ok(Some(now))
            }
            _ => Err(FsError::Denied),
        }
    }

    fn permission(&self, bucket: &str) -> Result<Option<Permission>> {
        Ok(match self.current_key()? {
            None => Some(Permission::Owner),
            Some(k) => self.archive.key_permission(&k, bucket, None),
        })
    }

    /// Checks `need` in the place's bucket; a bucket one cannot see is "not found".
    fn check(&self, place: &Place, need: Permission) -> Result<()> {
        let Some(bucket) = place.bucket() else {
            return self.current_key().map(drop);
        };
        match self.permission(bucket)? {
            Some(p) if p >= need => Ok(()),
            Some(_) => Err(FsError::Denied),
            None if self.archive.bucket(bucket).is_err() => Err(FsError::NotFound),
            None => Err(FsError::Denied),
        }
    }

    fn check_write(&self, place: &Place) -> Result<()> {
        if place.read_only() {
            return Err(FsError::ReadOnly);
        }
        self.check(place, Permission::Write)
    }

    /// Stat: a file, a folder (a marker or any key below it), a bucket, or a snapshot.
    pub fn stat(&self, place: &Place) -> Result<Entry> {
        self.check(place, Permission::Read)?;
        match place {
            Place::Root => Ok(Entry::dir("", std::time::UNIX_EPOCH, false)),
            Place::Snapshots { bucket } => {
                let b = self.archive.bucket(bucket)?;
                Ok(Entry::dir(SNAPSHOTS, time_of(b.created_ns), true))
            }
            Place::In { bucket, at, key } if key.is_empty() => {
                let b = self.archive.bucket(bucket)?;
                match at {
                    None => Ok(Entry::dir(bucket, time_of(b.created_ns), false)),
                    Some(i) => Ok(Entry::dir(&i.name, time_of(i.ns), true)),
                }
            }
            Place::In { .. } => {
                let t = target(place).expect("inside a bucket");
                if let Ok(v) = self.archive.head(t.bucket, t.key, &t.sel) {
                    return Ok(file_entry(place.name(), &v, !t.live));
                }
                if let Ok(v) = self.archive.head(t.bucket, &format!("{}/", t.key), &t.sel) {
                    return Ok(Entry::dir(place.name(), time_of(v.mtime_ns), !t.live));
                }
                let page = self.archive.list(t.bucket, &self.query(place, 1, false))?;
                if page.objects.is_empty() && page.common_prefixes.is_empty() {
                    return Err(FsError::NotFound);
                }
                let b = self.archive.bucket(t.bucket)?;
                Ok(Entry::dir(place.name(), time_of(b.created_ns), !t.live))
            }
        }
    }

    fn query(&self, place: &Place, max_keys: usize, delimited: bool) -> ListQuery {
        let Place::In { key, at, .. } = place else {
            return ListQuery::default();
        };
        ListQuery {
            prefix: if key.is_empty() {
                String::new()
            } else {
                format!("{key}/")
            },
            delimiter: delimited.then(|| "/".to_string()),
            start_after: None,
            max_keys,
            as_of: at.as_ref().map(|i| i.ns),
        }
    }

    /// The entries of a folder, a bucket, the bucket list or the snapshot list.
    pub fn list(&self, place: &Place) -> Result<Vec<Entry>> {
        match place {
            Place::Root => {
                let mut out = Vec::new();
                self.current_key()?;
                for b in self.archive.buckets()? {
                    if self.permission(&b.name)?.is_some() {
                        out.push(Entry::dir(&b.name, time_of(b.created_ns), false));
                    }
                }
                Ok(out)
            }
            Place::Snapshots { bucket } => {
                self.check(place, Permission::Read)?;
                let b = self.archive.bucket(bucket)?;
                let now = crate::snapshots::now_ns();
                Ok(crate::snapshots::instants(b.created_ns, now)
                    .into_iter()
                    .map(|(ns, name)| Entry::dir(&name, time_of(ns), true))
                    .collect())
            }
            Place::In { bucket, at, key } => {
                let me = self.stat(place)?;
                if !me.dir {
                    return Err(FsError::NotADirectory);
                }
                let ro = at.is_some();
                let mut out = Vec::new();
                if key.is_empty() && at.is_none() {
                    out.push(Entry::dir(SNAPSHOTS, me.modified, true));
                }
                let mut q = self.query(place, PAGE, true);
                let prefix_len = q.prefix.len();
                loop {
                    let page = self.archive.list(bucket, &q)?;
                    for p in &page.common_prefixes {
                        let name = p[prefix_len..].trim_end_matches('/');
                        if shown(name, key.is_empty()) {
                            out.push(Entry::dir(name, me.modified, ro));
                        }
                    }
                    for v in &page.objects {
                        let name = &v.key[prefix_len..];
                        // The folder's own marker is the folder, not an entry in it.
                        if shown(name, key.is_empty()) {
                            out.push(file_entry(name, v, ro));
                        }
                    }
                    match page.next_marker {
                        Some(m) if page.truncated => q.start_after = Some(m),
                        _ => break,
                    }
                }
                Ok(out)
            }
        }
    }

    /// Whether the file's bytes can be served here, checked before a server commits
    /// to an answer: an SSE-C object's key comes only over S3.
    pub fn check_readable(&self, place: &Place) -> Result<()> {
        self.check(place, Permission::Read)?;
        let Some(t) = target(place).filter(|t| !t.key.is_empty()) else {
            return Ok(());
        };
        let v = self.archive.head(t.bucket, t.key, &t.sel)?;
        Ok(self.archive.check_customer_key(t.bucket, &v, None)?)
    }

    /// Reads a file from `offset` to its end.
    pub async fn read(&self, place: &Place, offset: u64) -> Result<(Entry, ObjectStream)> {
        self.check(place, Permission::Read)?;
        let t = target(place)
            .filter(|t| !t.key.is_empty())
            .ok_or(FsError::IsADirectory)?;
        let range = (offset > 0).then_some(ByteRange::From {
            start: offset,
            end: None,
        });
        match self.archive.get(t.bucket, t.key, &t.sel, range).await {
            Ok((v, _, stream)) => Ok((file_entry(place.name(), &v, !t.live), stream)),
            // Reading at or past the end: no bytes.
            Err(archive::ArchiveError::InvalidRange { .. }) => {
                let v = self.archive.head(t.bucket, t.key, &t.sel)?;
                Ok((
                    file_entry(place.name(), &v, !t.live),
                    Box::pin(futures::stream::empty()),
                ))
            }
            Err(e) if self.stat(place).is_ok_and(|e| e.dir) => {
                drop(e);
                Err(FsError::IsADirectory)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a file: the body becomes a new version when it ends without error. An
    /// error item in `body` (a dropped connection) stores nothing.
    pub async fn write<S>(&self, place: &Place, body: S, opts: WriteOptions) -> Result<Entry>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        self.check_write(place)?;
        let t = target(place)
            .filter(|t| !t.key.is_empty())
            .ok_or(FsError::IsADirectory)?;
        self.require_folder(&place.parent())?;
        match self.stat(place) {
            Ok(e) if e.dir => return Err(FsError::IsADirectory),
            Ok(_) if opts.create_new => return Err(FsError::Exists),
            _ => {}
        }
        let put = PutOptions {
            content_type: opts.content_type,
            actor: self.actor(),
            ..Default::default()
        };
        let v = self.archive.put(t.bucket, t.key, body, put).await?;
        Ok(file_entry(place.name(), &v, false))
    }

    /// What `write` checks before it reads the body: gateways call it first to refuse a
    /// transfer before any byte moves.
    pub fn check_writable(&self, place: &Place, opts: &WriteOptions) -> Result<()> {
        self.check_write(place)?;
        target(place)
            .filter(|t| !t.key.is_empty())
            .ok_or(FsError::IsADirectory)?;
        self.require_folder(&place.parent())?;
        match self.stat(place) {
            Ok(e) if e.dir => Err(FsError::IsADirectory),
            Ok(_) if opts.create_new => Err(FsError::Exists),
            _ => Ok(()),
        }
    }

    fn require_folder(&self, place: &Place) -> Result<()> {
        match self.stat(place) {
            Ok(e) if e.dir => Ok(()),
            Ok(_) => Err(FsError::NotADirectory),
            Err(e) => Err(e),
        }
    }

    /// Makes a folder (an empty `dir/` marker object), or a bucket at the top.
    pub async fn mkdir(&self, place: &Place) -> Result<()> {
        if let Some(bucket) = place.live_bucket() {
            return self.create_bucket(bucket).await;
        }
        self.check_write(place)?;
        let t = target(place).ok_or(FsError::Denied)?;
        if self.stat(place).is_ok() {
            return Err(FsError::Exists);
        }
        self.require_folder(&place.parent())?;
        let put = PutOptions {
            content_type: Some(FOLDER_TYPE.into()),
            actor: self.actor(),
            ..Default::default()
        };
        self.archive
            .put_bytes(t.bucket, &format!("{}/", t.key), Bytes::new(), put)
            .await?;
        Ok(())
    }

    async fn create_bucket(&self, name: &str) -> Result<()> {
        let allowed = self
            .current_key()?
            .is_none_or(|k| k.admin || k.create_buckets);
        if self.archive.bucket(name).is_ok() {
            return Err(FsError::Exists);
        }
        if !allowed {
            return Err(FsError::Denied);
        }
        let mut settings = BTreeMap::new();
        if let Some(k) = self.access_key() {
            settings.insert(archive::settings::OWNER.to_string(), k.to_string());
        }
        self.archive
            .create_bucket_as(
                name,
                None,
                archive::Versioning::Enabled,
                settings,
                self.actor(),
            )
            .await?;
        Ok(())
    }

    /// Removes a file (a delete marker when the bucket keeps versions).
    pub async fn remove_file(&self, place: &Place) -> Result<()> {
        self.check_write(place)?;
        let t = target(place)
            .filter(|t| !t.key.is_empty())
            .ok_or(FsError::IsADirectory)?;
        if self.stat(place)?.dir {
            return Err(FsError::IsADirectory);
        }
        self.archive
            .delete_as(t.bucket, t.key, None, self.actor())
            .await?;
        Ok(())
    }

    /// Removes an empty folder, or an empty bucket (owners only).
    pub async fn remove_dir(&self, place: &Place) -> Result<()> {
        if let Some(bucket) = place.live_bucket() {
            self.check(place, Permission::Owner)?;
            self.archive.delete_bucket_as(bucket, self.actor()).await?;
            return Ok(());
        }
        self.check_write(place)?;
        let t = target(place).ok_or(FsError::Denied)?;
        if !self.stat(place)?.dir {
            return Err(FsError::NotADirectory);
        }
        let page = self.archive.list(t.bucket, &self.query(place, 2, true))?;
        let marker = format!("{}/", t.key);
        let children =
            page.common_prefixes.len() + page.objects.iter().filter(|v| v.key != marker).count();
        if children > 0 {
            return Err(FsError::NotEmpty);
        }
        self.archive
            .delete_as(t.bucket, &marker, None, self.actor())
            .await?;
        Ok(())
    }

    /// Copies a file (a new version at `to` sharing the data; no bytes move within a
    /// bucket).
    pub async fn copy_file(&self, from: &Place, to: &Place) -> Result<()> {
        self.check(from, Permission::Read)?;
        self.check_write(to)?;
        let (f, t) = (
            target(from).ok_or(FsError::IsADirectory)?,
            target(to).ok_or(FsError::IsADirectory)?,
        );
        self.require_folder(&to.parent())?;
        if self.stat(to).is_ok_and(|e| e.dir) {
            return Err(FsError::IsADirectory);
        }
        let src = self.archive.head(f.bucket, f.key, &f.sel)?;
        self.copy_version(f.bucket, &src, t.bucket, t.key).await
    }

    async fn copy_version(
        &self,
        from_bucket: &str,
        src: &Version,
        bucket: &str,
        key: &str,
    ) -> Result<()> {
        let opts = PutOptions {
            content_type: src.content_type.clone(),
            meta: src.meta.clone(),
            actor: self.actor(),
            ..Default::default()
        };
        let sel = VersionSel::Id(src.version_id.clone());
        self.archive
            .copy(
                from_bucket,
                &src.key,
                &sel,
                bucket,
                key,
                Some(opts),
                Default::default(),
            )
            .await?;
        Ok(())
    }

    /// Renames a file, or a folder with everything in it (copy, then delete; not atomic:
    /// an interrupted folder rename leaves both names, nothing lost).
    pub async fn rename(&self, from: &Place, to: &Place) -> Result<()> {
        self.check_write(from)?;
        self.check_write(to)?;
        let (f, t) = (
            target(from).ok_or(FsError::Denied)?,
            target(to).ok_or(FsError::Denied)?,
        );
        if f.key.is_empty() || t.key.is_empty() {
            return Err(FsError::Invalid("buckets cannot be renamed".into()));
        }
        let what = self.stat(from)?;
        self.require_folder(&to.parent())?;
        if !what.dir {
            if self.stat(to).is_ok_and(|e| e.dir) {
                return Err(FsError::IsADirectory);
            }
            let src = self.archive.head(f.bucket, f.key, &f.sel)?;
            self.copy_version(f.bucket, &src, t.bucket, t.key).await?;
            self.archive
                .delete_as(f.bucket, f.key, None, self.actor())
                .await?;
            return Ok(());
        }
        if self.stat(to).is_ok() {
            return Err(FsError::Exists);
        }
        let dst_prefix = format!("{}/", t.key);
        if dst_prefix.starts_with(&format!("{}/", f.key)) && f.bucket == t.bucket {
            return Err(FsError::Invalid("a folder cannot move into itself".into()));
        }
        let mut q = self.query(from, PAGE, false);
        let src_prefix = q.prefix.clone();
        loop {
            let page = self.archive.list(f.bucket, &q)?;
            for v in &page.objects {
                let dst = format!("{dst_prefix}{}", &v.key[src_prefix.len()..]);
                self.copy_version(f.bucket, v, t.bucket, &dst).await?;
                self.archive
                    .delete_as(f.bucket, &v.key, None, self.actor())
                    .await?;
            }
            match page.next_marker {
                Some(m) if page.truncated => q.start_after = Some(m),
                _ => break,
            }
        }
        Ok(())
    }

    /// The metadata kept with a file or folder (gateways keep their own properties
    /// here under their own prefix).
    pub fn meta(&self, place: &Place) -> Result<BTreeMap<String, String>> {
        self.check(place, Permission::Read)?;
        let t = target(place).ok_or(FsError::NotFound)?;
        if t.key.is_empty() {
            return Ok(BTreeMap::new());
        }
        let e = self.stat(place)?;
        let key = if e.dir {
            format!("{}/", t.key)
        } else {
            t.key.to_string()
        };
        Ok(self
            .archive
            .head(t.bucket, &key, &t.sel)
            .map(|v| v.meta)
            .unwrap_or_default())
    }

    /// Changes a file's or folder's metadata in place (no new version). A folder without
    /// a marker gets one.
    pub async fn update_meta(
        &self,
        place: &Place,
        f: impl Fn(&mut BTreeMap<String, String>) + Send + 'static,
    ) -> Result<()> {
        self.check_write(place)?;
        let t = target(place)
            .filter(|t| !t.key.is_empty())
            .ok_or(FsError::Denied)?;
        let key = if self.stat(place)?.dir {
            let marker = format!("{}/", t.key);
            if self
                .archive
                .head(t.bucket, &marker, &VersionSel::Latest)
                .is_err()
            {
                let put = PutOptions {
                    content_type: Some(FOLDER_TYPE.into()),
                    actor: self.actor(),
                    ..Default::default()
                };
                self.archive
                    .put_bytes(t.bucket, &marker, Bytes::new(), put)
                    .await?;
            }
            marker
        } else {
            t.key.to_string()
        };
        self.archive
            .update_meta(t.bucket, &key, VersionSel::Latest, f)
            .await?;
        Ok(())
    }
}

/// Whether an S3 key's last segment can be shown as a file name: not the folder itself
/// (""), not a name no path can reach (".", "..", "a//b"), not the snapshot folder.
fn shown(name: &str, at_top: bool) -> bool {
    !(name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || at_top && name == SNAPSHOTS)
}

fn file_entry(name: &str, v: &Version, read_only: bool) -> Entry {
    Entry {
        name: name.to_string(),
        dir: false,
        size: v.size,
        modified: time_of(v.mtime_ns),
        etag: Some(v.etag.clone()),
        read_only,
    }
}

//! `dav-server`'s file-system trait on top of `files`: each call is a `files::Session`
//! call for the logged-in user. Dead properties (PROPPATCH) live in the object's
//! metadata under `:dav:`, so they follow copies and moves.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::time::SystemTime;

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use files::{Entry, Place, Session};
use futures::{FutureExt, StreamExt};

use crate::file::{Reader, Upload};

#[derive(Clone)]
pub(crate) struct EdgeFs;

pub(crate) fn place(path: &DavPath) -> FsResult<Place> {
    let p = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
    Place::parse(p).map_err(map_err)
}

pub(crate) fn map_err(e: files::FsError) -> FsError {
    use files::FsError as F;
    match e {
        F::NotFound | F::NotADirectory => FsError::NotFound,
        F::Exists | F::NotEmpty => FsError::Exists,
        F::Denied | F::ReadOnly | F::IsADirectory | F::Invalid(_) => FsError::Forbidden,
        F::NameTooLong => FsError::PathTooLong,
        F::TooLarge(_) => FsError::TooLarge,
        F::Aborted => FsError::GeneralFailure,
        F::Storage(m) => {
            tracing::warn!("webdav: {m}");
            if m.contains("No space") {
                FsError::InsufficientStorage
            } else {
                FsError::GeneralFailure
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Meta(pub Entry);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.0.modified)
    }
    fn is_dir(&self) -> bool {
        self.0.dir
    }
    fn etag(&self) -> Option<String> {
        // Files: the S3 ETag, so a file looks the same over every protocol. Folders:
        // dav-server's default (from the time).
        match &self.0.etag {
            Some(e) => Some(e.clone()),
            None => {
                let t = self
                    .0
                    .modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?;
                Some(format!("{:x}", t.as_micros()))
            }
        }
    }
}

struct DirEntry(Entry);

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.0.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta(self.0.clone()));
        Box::pin(futures::future::ready(Ok(m)))
    }
}

/// Where PROPPATCH keeps a property: `:dav:` + `{namespace}name`.
const PROP: &str = ":dav:";

fn prop_key(p: &DavProp) -> String {
    format!(
        "{PROP}{{{}}}{}",
        p.namespace.as_deref().unwrap_or(""),
        p.name
    )
}

fn props_of(meta: &BTreeMap<String, String>, with_content: bool) -> Vec<DavProp> {
    meta.iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(PROP)?.strip_prefix('{')?;
            let (ns, name) = rest.split_once('}')?;
            let (prefix, xml) = v.split_once('\n')?;
            Some(DavProp {
                name: name.to_string(),
                prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                xml: with_content.then(|| xml.as_bytes().to_vec()),
            })
        })
        .collect()
}

impl GuardedFileSystem<Session> for EdgeFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        o: OpenOptions,
        s: &'a Session,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let place = place(path)?;
            if o.write || o.append || o.create || o.create_new {
                if o.append {
                    return Err(FsError::NotImplemented);
                }
                let opts = files::WriteOptions {
                    content_type: None,
                    create_new: o.create_new,
                };
                if !o.create && s.stat(&place).is_err() {
                    return Err(FsError::NotFound);
                }
                s.check_writable(&place, &opts).map_err(map_err)?;
                let f: Box<dyn DavFile> = Box::new(Upload::start(s.clone(), place, opts, o.size));
                return Ok(f);
            }
            let entry = s.stat(&place).map_err(map_err)?;
            if entry.dir {
                return Err(FsError::Forbidden);
            }
            s.check_readable(&place).map_err(map_err)?;
            let f: Box<dyn DavFile> = Box::new(Reader::new(s.clone(), place, entry));
            Ok(f)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        s: &'a Session,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let entries = s.list(&place(path)?).map_err(map_err)?;
            let items = entries
                .into_iter()
                .map(|e| Ok(Box::new(DirEntry(e)) as Box<dyn DavDirEntry>));
            let stream: FsStream<Box<dyn DavDirEntry>> = futures::stream::iter(items).boxed();
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        s: &'a Session,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let e = s.stat(&place(path)?).map_err(map_err)?;
            // A path ending in "/" names a collection: a file there is "not found".
            if !e.dir && path.is_collection() {
                return Err(FsError::NotFound);
            }
            Ok(Box::new(Meta(e)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, s: &'a Session) -> FsFuture<'a, ()> {
        async move {
            let place = place(path)?;
            // MKCOL under a missing parent is a conflict (409): "not found" here.
            if !matches!(place.parent(), Place::Root) && s.stat(&place.parent()).is_err() {
                return Err(FsError::NotFound);
            }
            s.mkdir(&place).await.map_err(map_err)
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, s: &'a Session) -> FsFuture<'a, ()> {
        async move { s.remove_dir(&place(path)?).await.map_err(map_err) }.boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, s: &'a Session) -> FsFuture<'a, ()> {
        async move { s.remove_file(&place(path)?).await.map_err(map_err) }.boxed()
    }

    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        s: &'a Session,
    ) -> FsFuture<'a, ()> {
        async move {
            let (from, to) = (place(from)?, place(to)?);
            if s.stat(&to.parent()).is_err() {
                return Err(FsError::NotFound);
            }
            s.rename(&from, &to).await.map_err(map_err)
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, s: &'a Session) -> FsFuture<'a, ()> {
        async move {
            let (from, to) = (place(from)?, place(to)?);
            if s.stat(&to.parent()).is_err() {
                return Err(FsError::NotFound);
            }
            s.copy_file(&from, &to).await.map_err(map_err)
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _: &'a DavPath,
        _: &'a Session,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(futures::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        s: &'a Session,
    ) -> FsFuture<'a, Vec<(http::StatusCode, DavProp)>> {
        async move {
            let place = place(path)?;
            let changes: Vec<(bool, String, String)> = patch
                .iter()
                .map(|(set, p)| {
                    let xml =
                        String::from_utf8_lossy(p.xml.as_deref().unwrap_or_default()).into_owned();
                    (
                        *set,
                        prop_key(p),
                        format!("{}\n{xml}", p.prefix.as_deref().unwrap_or("")),
                    )
                })
                .collect();
            s.update_meta(&place, move |meta| {
                for (set, key, value) in &changes {
                    if *set {
                        meta.insert(key.clone(), value.clone());
                    } else {
                        meta.remove(key);
                    }
                }
            })
            .await
            .map_err(map_err)?;
            Ok(patch
                .into_iter()
                .map(|(_, p)| (http::StatusCode::OK, DavProp { xml: None, ..p }))
                .collect())
        }
        .boxed()
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        s: &'a Session,
    ) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let meta = s.meta(&place(path)?).map_err(map_err)?;
            Ok(props_of(&meta, do_content))
        }
        .boxed()
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        s: &'a Session,
    ) -> FsFuture<'a, Vec<u8>> {
        async move {
            let meta = s.meta(&place(path)?).map_err(map_err)?;
            let want = prop_key(&prop);
            let value = meta.get(&want).ok_or(FsError::NotFound)?;
            let (_, xml) = value.split_once('\n').ok_or(FsError::NotFound)?;
            Ok(xml.as_bytes().to_vec())
        }
        .boxed()
    }
}

/// Seeks within a file of `size` bytes from `pos`.
pub(crate) fn seek_to(pos: u64, size: u64, to: SeekFrom) -> FsResult<u64> {
    let new = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
        SeekFrom::End(d) => size.checked_add_signed(d),
    };
    new.ok_or(FsError::GeneralFailure)
}

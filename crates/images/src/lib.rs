//! Container images kept in the archive.
//!
//! `docker save` tarballs and OCI image layouts are imported file by file into one
//! bucket of the system, [`BUCKET`], so images are encrypted and erasure-coded like any
//! data, and a file that several images (or layers) hold is stored once:
//!
//! | key | holds |
//! |---|---|
//! | `files/<sha256>` | one regular file's bytes, named by their SHA-256 |
//! | `layers/<diff id>.json` | a layer's paths and metadata ([`layer::Entry`]), so a known layer is never read again |
//! | `images/<config sha256>.json` | an [`Image`]: names, config, layers, manifest digest |
//! | `trees/<config sha256>.json` | the image's root file system, layers applied ([`tree::Tree`]) |
//! | `tags/<name:tag>` | the id an image name points at |
//! | `first-reads/<config sha256>.json` | the files its first start read, in order: later starts, on any node, fetch them ahead ([`ImageStore::first_reads`]) |
//!
//! Every digest is checked on import: OCI manifests against their descriptors, configs
//! and blobs against the digests that name them, and each layer's uncompressed bytes
//! against the config's `diff_ids`. Layers that climb out of the root (`..`), write
//! through a symbolic link or unpack past [`layer::Limits`] are refused.

mod error;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod tarball;
pub mod tree;

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use archive::{Archive, ArchiveError, ListQuery, PutOptions, VersionSel};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

pub use error::{ImageError, Result};
use layer::{Entry, FileSink, Limits, hex_of};

/// The system bucket that holds every image.
pub const BUCKET: &str = "edgecloud-images";

/// Files up to this size are hashed in memory and skipped when already stored; larger
/// ones stream into the archive while they are hashed.
const SMALL_FILE: u64 = 4 << 20;

/// An image in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Image {
    /// `sha256:` and the config's digest, as `docker images --no-trunc` shows it.
    pub id: String,
    /// Its names (`name:tag`); empty when untagged.
    pub names: Vec<String>,
    /// The OCI manifest's digest, when it came with one.
    pub manifest_digest: Option<String>,
    /// Its layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Regular files in its root file system.
    pub files: u64,
    /// Bytes of those files.
    pub size: u64,
    /// When it was imported (seconds since the epoch).
    pub imported: u64,
    /// The image config (entrypoint, environment, ...), as the image carries it.
    pub config: serde_json::Value,
}

/// One layer of an image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LayerInfo {
    /// `sha256:` digest of the uncompressed layer.
    pub diff_id: String,
    /// `sha256:` digest of the blob as it was shipped.
    pub blob_digest: String,
    /// The blob's length.
    pub blob_size: u64,
    /// Paths in the layer.
    pub entries: u64,
    /// Bytes of files in the layer.
    pub file_bytes: u64,
}

/// A layer's record: what [`LayerInfo`] says and its paths.
#[derive(Serialize, Deserialize)]
struct LayerRecord {
    info: LayerInfo,
    entries: Vec<Entry>,
}

/// What an import did.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Imported {
    /// The images, as stored.
    pub images: Vec<Image>,
    /// Layers read from the file.
    pub layers_read: u64,
    /// Layers skipped because the store holds them already.
    pub layers_known: u64,
    /// Files written to the store.
    pub files_stored: u64,
    /// Files the store held already (stored once).
    pub files_known: u64,
    /// Bytes written to the store (before compression).
    pub bytes_stored: u64,
}

/// What removing an image did.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Removed {
    /// Names removed.
    pub untagged: Vec<String>,
    /// The image deleted, when no name was left.
    pub deleted: Option<String>,
    /// Files deleted because no image holds them any more.
    pub files_freed: u64,
    /// Their bytes.
    pub bytes_freed: u64,
}

/// How much the store holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Usage {
    /// Images.
    pub images: u64,
    /// Distinct files stored.
    pub files: u64,
    /// Their bytes (before compression): what the images cost.
    pub stored_bytes: u64,
    /// Bytes of files in every image's root file system added up: what they would cost
    /// unpacked one by one.
    pub image_bytes: u64,
}

/// The image store of a node: imports, lists and removes images in [`BUCKET`].
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    archive: Archive,
    limits: Limits,
    /// Imports and removals one at a time: a removal's clean-up must not delete a file
    /// an import has just found stored and counted on.
    busy: tokio::sync::Mutex<()>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether an archive error means "no such object".
fn is_absent(e: &ArchiveError) -> bool {
    matches!(
        e,
        ArchiveError::Catalog(
            archive::CatalogError::NoSuchKey(_) | archive::CatalogError::NoSuchBucket(_)
        ) | ArchiveError::DeleteMarker { .. }
    )
}

impl ImageStore {
    /// The image store kept in `archive`, with the default limits.
    pub fn new(archive: Archive) -> Self {
        Self::with_limits(archive, Limits::default())
    }

    /// The image store with its own limits on layers.
    pub fn with_limits(archive: Archive, limits: Limits) -> Self {
        ImageStore {
            inner: Arc::new(Inner {
                archive,
                limits,
                busy: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The archive the images are kept in.
    pub fn archive(&self) -> &Archive {
        &self.inner.archive
    }

    /// Imports the `docker save` tarball or OCI layout tar at `path`. `tag` names the
    /// image (the file must then hold exactly one). `actor` is recorded in the ledger.
    pub async fn import(
        &self,
        path: &Path,
        tag: Option<&str>,
        actor: Option<String>,
    ) -> Result<Imported> {
        let tag = tag.map(reference::canonical).transpose()?;
        let _one_at_a_time = self.inner.busy.lock().await;
        self.inner.archive.system_bucket(BUCKET).await?;
        let (this, path) = (self.clone(), path.to_path_buf());
        let handle = Handle::current();
        let done =
            tokio::task::spawn_blocking(move || this.import_blocking(&handle, &path, tag, actor))
                .await
                .map_err(|e| ImageError::Task(e.to_string()))?;
        if done.is_err() {
            // Files of a refused image are no one's: take them back now.
            if let Err(e) = self.collect_garbage().await {
                tracing::warn!("cleaning up after a failed import: {e}");
            }
        }
        done
    }

    /// Pulls `reference` (`NAME[:TAG][@DIGEST]`, Docker Hub when no registry is named)
    /// from its registry and imports it under that name. `insecure` speaks plain HTTP.
    pub async fn pull(
        &self,
        reference: &str,
        login: Option<registry::Login>,
        insecure: bool,
        actor: Option<String>,
    ) -> Result<Imported> {
        let source = registry::parse(reference)?;
        let tmp = self.inner.archive.config().data_dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let work = tempfile::Builder::new().prefix("pull-").tempdir_in(&tmp)?;
        let layout = work.path().join("layout");
        registry::fetch_layout(&source, login, insecure, &layout).await?;
        // One tar of the layout, as `image import DIR` sends it.
        let tar_path = work.path().join("layout.tar");
        let (from, to) = (layout.clone(), tar_path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut b = tar::Builder::new(std::fs::File::create(&to)?);
            b.follow_symlinks(false);
            b.append_dir_all(".", &from)?;
            b.into_inner()?.sync_all()
        })
        .await
        .map_err(|e| ImageError::Task(e.to_string()))??;
        std::fs::remove_dir_all(&layout)?;
        self.import(&tar_path, Some(&source.name), actor).await
    }

    fn import_blocking(
        &self,
        handle: &Handle,
        path: &Path,
        tag: Option<String>,
        actor: Option<String>,
    ) -> Result<Imported> {
        let mut file = std::fs::File::open(path)?;
        // `docker save | gzip` (or zstd): unpack next to it first, layers are read by offset.
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic)?;
        file.seek(SeekFrom::Start(0))?;
        if n == 4 && (magic.starts_with(&[0x1f, 0x8b]) || magic == [0x28, 0xb5, 0x2f, 0xfd]) {
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut plain = tempfile::tempfile_in(dir)?;
            let reader = std::io::BufReader::new(file);
            if magic.starts_with(&[0x1f, 0x8b]) {
                std::io::copy(
                    &mut flate2::bufread::MultiGzDecoder::new(reader),
                    &mut plain,
                )
            } else {
                std::io::copy(
                    &mut zstd::stream::read::Decoder::with_buffer(reader)?,
                    &mut plain,
                )
            }
            .map_err(|e| ImageError::NotAnImage(format!("cannot decompress it: {e}")))?;
            plain.seek(SeekFrom::Start(0))?;
            file = plain;
        }
        let contents = tarball::scan(&mut file)?;
        let mut plans = tarball::plan(&contents)?;
        if plans.is_empty() {
            return Err(ImageError::NotAnImage("it holds no image".into()));
        }
        if let Some(tag) = tag {
            if plans.len() != 1 {
                return Err(ImageError::NotAnImage(format!(
                    "it holds {} images: a tag names one, import without it",
                    plans.len()
                )));
            }
            plans[0].names = vec![tag];
        }
        let mut sink = ArchiveSink {
            store: self,
            handle,
            actor: actor.clone(),
            seen: HashSet::new(),
            stats: Imported::default(),
        };
        // Every layer of every image is read and checked, and every tree built, before
        // any image is named: a file that fails anywhere imports nothing.
        let mut ready = Vec::new();
        for plan in plans {
            let names = plan
                .names
                .iter()
                .map(|n| reference::canonical(n))
                .collect::<Result<Vec<_>>>()?;
            let id = format!("sha256:{}", plan.config_digest);
            let image_key = format!("images/{}.json", plan.config_digest);
            let mut new_tree = None;
            let image = match handle.block_on(self.get_json::<Image>(&image_key))? {
                Some(mut known) => {
                    sink.stats.layers_known += known.layers.len() as u64;
                    if known.manifest_digest.is_none() {
                        known.manifest_digest = plan.manifest_digest.map(|d| format!("sha256:{d}"));
                    }
                    for n in &names {
                        if !known.names.contains(n) {
                            known.names.push(n.clone());
                        }
                    }
                    known
                }
                None => {
                    let mut tree = tree::Tree::default();
                    let mut layers = Vec::new();
                    for lp in &plan.layers {
                        let record = self.layer(handle, &mut file, &contents, lp, &mut sink)?;
                        tree.apply(&record.entries)
                            .map_err(|reason| ImageError::HostileLayer {
                                layer: record.info.diff_id.clone(),
                                reason,
                            })?;
                        layers.push(record.info);
                    }
                    let (files, size) = tree.file_totals();
                    new_tree = Some(tree.into_entries());
                    Image {
                        id: id.clone(),
                        names: names.clone(),
                        manifest_digest: plan.manifest_digest.map(|d| format!("sha256:{d}")),
                        layers,
                        files,
                        size,
                        imported: now_secs(),
                        config: plan.config,
                    }
                }
            };
            ready.push((image, new_tree, names));
        }
        let mut images = Vec::new();
        for (image, new_tree, names) in ready {
            let hex = image.id.trim_start_matches("sha256:").to_string();
            if let Some(entries) = new_tree {
                handle.block_on(self.put_json(&format!("trees/{hex}.json"), &entries, &actor))?;
            }
            handle.block_on(self.put_json(&format!("images/{hex}.json"), &image, &actor))?;
            for name in &names {
                handle.block_on(self.point_tag(name, &image.id, &actor))?;
            }
            images.push(image);
        }
        let mut stats = sink.stats;
        stats.images = images;
        Ok(stats)
    }

    /// The layer `lp`: its record when the store has it, else read from `file`, checked
    /// against every digest that names it, and recorded.
    fn layer(
        &self,
        handle: &Handle,
        file: &mut std::fs::File,
        contents: &tarball::Contents,
        lp: &tarball::LayerPlan,
        sink: &mut ArchiveSink<'_>,
    ) -> Result<LayerRecord> {
        let key = format!("layers/{}.json", lp.diff_id);
        if let Some(known) = handle.block_on(self.get_json::<LayerRecord>(&key))? {
            sink.stats.layers_known += 1;
            return Ok(known);
        }
        let m = contents.member(&lp.path)?;
        file.seek(SeekFrom::Start(m.offset))?;
        let read = layer::read_layer((&mut *file).take(m.size), &lp.path, self.inner.limits, sink)?;
        let mismatch = |what: &str, expected: &str, actual: &str| ImageError::DigestMismatch {
            what: format!("{what} of layer {}", lp.path),
            expected: format!("sha256:{expected}"),
            actual: format!("sha256:{actual}"),
        };
        if let Some(want) = &lp.blob_digest
            && *want != read.blob_digest
        {
            return Err(mismatch("the blob", want, &read.blob_digest));
        }
        if read.diff_id != lp.diff_id {
            return Err(mismatch(
                "the uncompressed tar (diff id)",
                &lp.diff_id,
                &read.diff_id,
            ));
        }
        if let Some(want) = lp.blob_size
            && want != read.blob_size
        {
            return Err(ImageError::NotAnImage(format!(
                "layer {} is {} bytes, its manifest says {want}",
                lp.path, read.blob_size
            )));
        }
        sink.stats.layers_read += 1;
        let record = LayerRecord {
            info: LayerInfo {
                diff_id: format!("sha256:{}", read.diff_id),
                blob_digest: format!("sha256:{}", read.blob_digest),
                blob_size: read.blob_size,
                entries: read.entries.len() as u64,
                file_bytes: read.file_bytes,
            },
            entries: read.entries,
        };
        handle.block_on(self.put_json(&key, &record, &sink.actor))?;
        Ok(record)
    }

    /// Points `name` at image `id`, taking it off the image it named before.
    async fn point_tag(&self, name: &str, id: &str, actor: &Option<String>) -> Result<()> {
        let key = format!("tags/{name}");
        if let Some(old) = self.get_text(&key).await?
            && old != id
        {
            let old_key = format!("images/{}.json", old.trim_start_matches("sha256:"));
            if let Some(mut img) = self.get_json::<Image>(&old_key).await? {
                img.names.retain(|n| n != name);
                self.put_json(&old_key, &img, actor).await?;
            }
        }
        self.put(&key, Bytes::from(id.to_string()), actor).await
    }

    /// Every image, newest first.
    pub async fn list(&self) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        for key in self.keys("images/").await? {
            if let Some(img) = self.get_json::<Image>(&key).await? {
                out.push(img);
            }
        }
        out.sort_by(|a, b| b.imported.cmp(&a.imported).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The image a reference names: `name[:tag]`, `sha256:ID`, or an id prefix of at
    /// least 4 hex digits.
    pub async fn find(&self, reference: &str) -> Result<Image> {
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let ids: Vec<String> = self.keys(&format!("images/{hex}")).await?;
            match ids.as_slice() {
                [one] => {
                    if let Some(img) = self.get_json::<Image>(one).await? {
                        return Ok(img);
                    }
                }
                [] => {}
                _ => return Err(ImageError::Ambiguous(reference.into())),
            }
        }
        let name = reference::canonical(reference)
            .map_err(|_| ImageError::NoSuchImage(reference.into()))?;
        let id = self
            .get_text(&format!("tags/{name}"))
            .await?
            .ok_or_else(|| ImageError::NoSuchImage(reference.into()))?;
        let key = format!("images/{}.json", id.trim_start_matches("sha256:"));
        self.get_json::<Image>(&key)
            .await?
            .ok_or_else(|| ImageError::Corrupt {
                key: format!("tags/{name}"),
                reason: format!("it points at {id}, which is not stored"),
            })
    }

    /// An image's root file system, in path order.
    pub async fn tree(&self, image: &Image) -> Result<tree::Tree> {
        let key = format!("trees/{}.json", image.id.trim_start_matches("sha256:"));
        let entries: Vec<Entry> = self.get_json(&key).await?.ok_or(ImageError::Corrupt {
            key,
            reason: "missing".into(),
        })?;
        Ok(tree::Tree::from_entries(entries))
    }

    /// The bytes of the file whose SHA-256 is `digest` (hex), as a stream.
    pub async fn read_file(&self, digest: &str) -> Result<archive::ObjectStream> {
        let key = format!("files/{digest}");
        let (_, _, stream) = self
            .inner
            .archive
            .get(BUCKET, &key, &VersionSel::Latest, None)
            .await?;
        Ok(stream)
    }

    /// The files (SHA-256, hex) the image's first start read, in the order it read them;
    /// empty before any start recorded them.
    pub async fn first_reads(&self, image: &Image) -> Result<Vec<String>> {
        let key = first_reads_key(image);
        Ok(self.get_json(&key).await?.unwrap_or_default())
    }

    /// Records the files an image's first start read (see [`Self::first_reads`]); a
    /// digest that is not a file of the image is left out.
    pub async fn record_first_reads(&self, image: &Image, digests: Vec<String>) -> Result<()> {
        let tree = self.tree(image).await?;
        let ours: HashSet<&str> = tree.entries().filter_map(|e| e.digest.as_deref()).collect();
        let mut seen = HashSet::new();
        let kept: Vec<String> = digests
            .into_iter()
            .filter(|d| ours.contains(d.as_str()) && seen.insert(d.clone()))
            .collect();
        self.put_json(&first_reads_key(image), &kept, &None).await
    }

    /// Removes a name; the image goes when it is removed by id or its last name goes,
    /// and with it every file and layer no other image holds.
    pub async fn remove(&self, reference: &str, actor: Option<String>) -> Result<Removed> {
        let _one_at_a_time = self.inner.busy.lock().await;
        let mut image = self.find(reference).await?;
        let image_key = format!("images/{}.json", image.id.trim_start_matches("sha256:"));
        let mut out = Removed::default();
        let by_name = reference::canonical(reference)
            .ok()
            .filter(|n| image.names.contains(n));
        if let Some(name) = by_name
            && image.names.len() > 1
        {
            self.delete(&format!("tags/{name}")).await?;
            image.names.retain(|n| *n != name);
            self.put_json(&image_key, &image, &actor).await?;
            out.untagged.push(name);
            return Ok(out);
        }
        for name in &image.names {
            self.delete(&format!("tags/{name}")).await?;
        }
        out.untagged = image.names.clone();
        self.delete(&image_key).await?;
        self.delete(&format!(
            "trees/{}.json",
            image.id.trim_start_matches("sha256:")
        ))
        .await?;
        self.delete(&first_reads_key(&image)).await?;
        out.deleted = Some(image.id);
        let (files, bytes) = self.collect_garbage().await?;
        (out.files_freed, out.bytes_freed) = (files, bytes);
        Ok(out)
    }

    /// Deletes layers no image names and files no layer holds; returns the files and
    /// bytes freed.
    async fn collect_garbage(&self) -> Result<(u64, u64)> {
        let mut layers_in_use = HashSet::new();
        for img in self.list().await? {
            for l in img.layers {
                layers_in_use.insert(l.diff_id.trim_start_matches("sha256:").to_string());
            }
        }
        let mut files_in_use = HashSet::new();
        for key in self.keys("layers/").await? {
            let diff = key
                .trim_start_matches("layers/")
                .trim_end_matches(".json")
                .to_string();
            if !layers_in_use.contains(&diff) {
                self.delete(&key).await?;
                continue;
            }
            if let Some(rec) = self.get_json::<LayerRecord>(&key).await? {
                files_in_use.extend(rec.entries.into_iter().filter_map(|e| e.digest));
            }
        }
        let (mut files, mut bytes) = (0, 0);
        for (key, size) in self.sized_keys("files/").await? {
            if !files_in_use.contains(key.trim_start_matches("files/")) {
                self.delete(&key).await?;
                files += 1;
                bytes += size;
            }
        }
        for key in self.keys("staging/").await? {
            self.delete(&key).await?;
        }
        Ok((files, bytes))
    }

    /// What the store holds, and what its images would cost unpacked one by one.
    pub async fn usage(&self) -> Result<Usage> {
        let images = self.list().await?;
        let files = self.sized_keys("files/").await?;
        Ok(Usage {
            images: images.len() as u64,
            files: files.len() as u64,
            stored_bytes: files.iter().map(|(_, s)| s).sum(),
            image_bytes: images.iter().map(|i| i.size).sum(),
        })
    }

    // ---- records in the system bucket ----

    async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .sized_keys(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    async fn sized_keys(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut q = ListQuery {
            prefix: prefix.to_string(),
            max_keys: 1000,
            ..Default::default()
        };
        loop {
            let page = match self.inner.archive.list(BUCKET, &q) {
                Ok(p) => p,
                Err(e) if is_absent(&e) => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            out.extend(page.objects.into_iter().map(|v| (v.key, v.size)));
            if !page.truncated {
                return Ok(out);
            }
            q.start_after = page.next_marker;
        }
    }

    async fn get_text(&self, key: &str) -> Result<Option<String>> {
        match self
            .inner
            .archive
            .get_bytes(BUCKET, key, &VersionSel::Latest)
            .await
        {
            Ok(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| ImageError::Corrupt {
                    key: key.into(),
                    reason: "not UTF-8".into(),
                }),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self
            .inner
            .archive
            .get_bytes(BUCKET, key, &VersionSel::Latest)
            .await
        {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ImageError::Corrupt {
                    key: key.into(),
                    reason: e.to_string(),
                }),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        actor: &Option<String>,
    ) -> Result<()> {
        let body = serde_json::to_vec(value).map_err(|e| ImageError::Task(e.to_string()))?;
        self.put(key, Bytes::from(body), actor).await
    }

    async fn put(&self, key: &str, body: Bytes, actor: &Option<String>) -> Result<()> {
        let opts = PutOptions {
            actor: actor.clone(),
            ..Default::default()
        };
        self.inner
            .archive
            .put_bytes(BUCKET, key, body, opts)
            .await?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.inner.archive.head(BUCKET, key, &VersionSel::Latest) {
            Ok(_) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.archive.delete(BUCKET, key, None).await {
            Ok(_) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn first_reads_key(image: &Image) -> String {
    format!(
        "first-reads/{}.json",
        image.id.trim_start_matches("sha256:")
    )
}

/// Keeps an import's files in the store, each once.
struct ArchiveSink<'a> {
    store: &'a ImageStore,
    handle: &'a Handle,
    actor: Option<String>,
    /// Digests known stored during this import (saves a lookup per repeated file).
    seen: HashSet<String>,
    stats: Imported,
}

impl FileSink for ArchiveSink<'_> {
    fn store(&mut self, size: u64, body: &mut dyn Read) -> Result<String> {
        let digest = if size <= SMALL_FILE {
            let mut buf = Vec::with_capacity(size as usize);
            body.read_to_end(&mut buf)?;
            let digest = hex_of(Sha256::new_with_prefix(&buf));
            let key = format!("files/{digest}");
            if self.seen.contains(&digest) || self.handle.block_on(self.store.exists(&key))? {
                self.stats.files_known += 1;
            } else {
                self.handle
                    .block_on(self.store.put(&key, Bytes::from(buf), &self.actor))?;
                self.stats.files_stored += 1;
                self.stats.bytes_stored += size;
            }
            digest
        } else {
            self.stream_large(size, body)?
        };
        self.seen.insert(digest.clone());
        Ok(digest)
    }
}

impl ArchiveSink<'_> {
    /// Streams a large file into `staging/`, hashing it on the way; then it becomes
    /// `files/<digest>` (a copy of references, no data moves) unless that exists.
    fn stream_large(&mut self, size: u64, body: &mut dyn Read) -> Result<String> {
        let staging = format!(
            "staging/{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let archive = self.store.inner.archive.clone();
        let (key, opts) = (
            staging.clone(),
            PutOptions {
                actor: self.actor.clone(),
                ..Default::default()
            },
        );
        let put = self
            .handle
            .spawn(async move { archive.put(BUCKET, &key, stream, opts).await });
        let mut hasher = Sha256::new();
        let mut left = size;
        let mut failed = None;
        while left > 0 {
            let mut buf = vec![0u8; left.min(1 << 20) as usize];
            if let Err(e) = body.read_exact(&mut buf) {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                failed = Some(e);
                break;
            }
            left -= buf.len() as u64;
            hasher.update(&buf);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                break; // the put ended early: its error says why
            }
        }
        drop(tx);
        let put = self
            .handle
            .block_on(put)
            .map_err(|e| ImageError::Task(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        put?;
        let digest = hex_of(hasher);
        let key = format!("files/{digest}");
        let h = self.handle;
        if self.seen.contains(&digest) || h.block_on(self.store.exists(&key))? {
            self.stats.files_known += 1;
        } else {
            h.block_on(self.store.inner.archive.copy(
                BUCKET,
                &staging,
                &VersionSel::Latest,
                BUCKET,
                &key,
                None,
                Default::default(),
            ))?;
            self.stats.files_stored += 1;
            self.stats.bytes_stored += size;
        }
        h.block_on(self.store.delete(&staging))?;
        Ok(digest)
    }
}

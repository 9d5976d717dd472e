//! The archive: the one object API every gateway (S3, WebDAV, FTP, NFS, admin) uses.
//!
//! It owns the data path: streaming put (chunk, name, seal, split, place, write shards,
//! then commit the manifest), streaming get (fetch any k shards, rebuild, verify,
//! decrypt), versions, listing, copy, multipart, reads as of a past instant, and the
//! scrubber that verifies and repairs shards. Gateways never touch shards or the catalog
//! directly.

pub mod audit;
mod bucket_keys;
mod chunks;
mod error;
mod get;
pub mod grants;
pub mod lifecycle;
mod multipart;
mod names;
mod put;
mod range;
mod read_tally;
mod repair;
mod scrub;
mod shard_batches;
pub mod sse_c;
mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use catalog::audit::LEDGER_INDEX;
pub use catalog::lock;
pub use catalog::{
    AccessKey, Body, Bucket, CatalogError, DeleteOutcome, ListPage, ListQuery, Part, Permission,
    PutCondition, Upload, Version, VersionSel, Versioning, VersionsPage, VersionsQuery,
    generate_key_pair, now_ns, random_hex,
};
pub use codec::{ChunkParams, DataKey, Redundancy};
pub use error::ArchiveError;
pub use get::ObjectStream;
pub use names::{SYSTEM_BUCKETS, validate_bucket_name, validate_key};
pub use put::{LateMeta, PutOptions, md5_hex};
pub use range::{ByteRange, parse_instant};
pub use read_tally::{ReadTally, tally_reads};
pub use repair::RepairState;
pub use scrub::{REBUILD_PATH, RebuildAnswer, RebuildItem, ScrubOptions, ScrubReport};
pub use sse_c::CustomerKey;

/// Names of gateway settings kept in `Bucket::settings` that decide access.
pub mod settings {
    /// The access key that created the bucket (it owns it).
    pub const OWNER: &str = "owner";
    /// The bucket's canned ACL (`private`, `public-read`, `authenticated-read`, ...).
    pub const ACL: &str = "acl";
}

/// The audit log's actor for changes made with the node's admin token (the admin API
/// and the `edgecloud` CLI). Access key ids never contain "@".
pub const ADMIN_ACTOR: &str = "@admin";

/// The archive's result type.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// How to open an archive: where its data lives and how it stores new data.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Holds the catalog and, by default, the master key.
    pub data_dir: PathBuf,
    /// Shard disks (folders); shards of a chunk go to distinct disks.
    pub disks: Vec<PathBuf>,
    /// Wraps bucket data keys. Keep it off the shard disks.
    pub master_key: DataKey,
    /// Objects smaller than this are kept inside the catalog.
    pub inline_threshold: usize,
    /// Policy for new buckets; `None` picks one from the number of disks.
    pub default_policy: Option<Redundancy>,
    /// Content-defined chunk sizes for new buckets.
    pub chunk: ChunkParams,
    /// zstd level for new buckets; 0 disables compression.
    pub compression: i32,
    /// Unreferenced chunks and orphan shards are removed only after this long.
    pub gc_grace: Duration,
    /// How long superseded null versions stay readable through as-of reads.
    pub history_retention: Duration,
    /// Bytes of chunks in flight per upload (encoding, writing) or download (read-ahead).
    /// Enough to keep a disk busy across fsyncs; bounds memory per transfer.
    pub pipeline_bytes: usize,
    /// The most chunks one object may have: its chunk list is one catalog record and
    /// one Raft entry (~72 bytes a chunk), which must stay well under the 256 MiB
    /// node-to-node message limit. 1,000,000 is 1 TB at the default 1 MiB chunks.
    pub max_chunks_per_object: usize,
    /// The largest object any gateway may store, checked while the body streams (an
    /// FTP STOR, a chunked WebDAV or S3 PUT has no length up front). Default: S3's 5 TiB.
    pub max_object_bytes: u64,
    /// Size at which a disk starts a new segment file.
    pub segment_bytes: u64,
    /// Minimum size of every multipart part but the last (S3: 5 MiB).
    pub min_part_size: u64,
    /// Keep the audit log (see `catalog::CatalogOptions::audit_log`); benchmarks only.
    pub audit_log: bool,
}

impl ArchiveConfig {
    /// The defaults, with these folders and master key.
    pub fn new(data_dir: PathBuf, disks: Vec<PathBuf>, master_key: DataKey) -> Self {
        ArchiveConfig {
            data_dir,
            disks,
            master_key,
            inline_threshold: 64 * 1024,
            default_policy: None,
            chunk: ChunkParams::default(),
            compression: 3,
            gc_grace: Duration::from_secs(3600),
            history_retention: Duration::from_secs(30 * 24 * 3600),
            pipeline_bytes: 16 << 20,
            max_chunks_per_object: 1_000_000,
            max_object_bytes: 5 << 40,
            segment_bytes: 1 << 30,
            min_part_size: 5 << 20,
            audit_log: true,
        }
    }
}

/// The archive engine on one node. Cheap to clone.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ArchiveConfig,
    catalog: catalog::Catalog,
    store: Arc<shards::ShardStore>,
    /// Set when this node is part of a cluster: shards then go to other nodes too.
    cluster: std::sync::OnceLock<Arc<cluster::Membership>>,
    /// Placement view of the current layout (rebuilt when its epoch changes).
    topology: std::sync::Mutex<topology::SharedTopology>,
    keys: bucket_keys::KeyCache,
    repair: std::sync::Mutex<RepairState>,
    /// The last full scrub asked for through the admin API.
    scrub: std::sync::Mutex<RepairState>,
    /// One scrub or repair pass at a time: two passes working from different listings
    /// could each remove the copy the other kept.
    passes: tokio::sync::Mutex<()>,
}

impl Archive {
    /// Opens (or creates) the catalog and the shard disks.
    pub fn open(cfg: ArchiveConfig) -> Result<Self> {
        cfg.chunk
            .validate()
            .map_err(|e| ArchiveError::Invalid(e.to_string()))?;
        if cfg.disks.is_empty() {
            return Err(ArchiveError::Invalid(
                "at least one disk folder is needed".into(),
            ));
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| ArchiveError::io(&cfg.data_dir, e))?;
        let catalog = catalog::Catalog::open(
            &cfg.data_dir.join("catalog.redb"),
            catalog::CatalogOptions {
                min_part_size: cfg.min_part_size,
                audit_log: cfg.audit_log,
            },
        )?;
        let store = shards::ShardStore::open(
            &cfg.disks,
            shards::StoreOptions {
                segment_bytes: cfg.segment_bytes,
                ..Default::default()
            },
        )?;
        // Disk identity is its position: stable as long as the disk list keeps its order.
        let topology = Arc::new(topology::Topology::local(cfg.disks.len()));
        let keys = bucket_keys::KeyCache::new(cfg.master_key.clone());
        Ok(Archive {
            inner: Arc::new(Inner {
                cfg,
                catalog,
                store: Arc::new(store),
                cluster: std::sync::OnceLock::new(),
                topology: std::sync::Mutex::new(topology),
                keys,
                repair: Default::default(),
                scrub: Default::default(),
                passes: Default::default(),
            }),
        })
    }

    /// Joins the archive to a cluster: from now on shards are placed over the layout's
    /// nodes and disks. Call once, before serving.
    pub fn attach_cluster(&self, membership: Arc<cluster::Membership>) {
        let _ = self.inner.cluster.set(membership);
    }

    /// The cluster this node belongs to; None on a single node.
    pub fn cluster(&self) -> Option<&Arc<cluster::Membership>> {
        self.inner.cluster.get()
    }

    /// The catalog (the consensus layer replicates it).
    pub fn catalog(&self) -> &catalog::Catalog {
        &self.inner.catalog
    }

    /// This node's shard store (the node-to-node server serves it to the cluster).
    pub fn store(&self) -> Arc<shards::ShardStore> {
        self.inner.store.clone()
    }

    /// The placement view of the current layout.
    pub(crate) fn topology(&self) -> topology::SharedTopology {
        let Some(m) = self.inner.cluster.get() else {
            return self.inner.topology.lock().expect("topology lock").clone();
        };
        let layout = m.layout();
        let mut cur = self.inner.topology.lock().expect("topology lock");
        if cur.epoch != layout.epoch {
            *cur = Arc::new(topology::Topology::from_layout(&layout, m.me()));
        }
        cur.clone()
    }

    /// The configuration the archive was opened with.
    pub fn config(&self) -> &ArchiveConfig {
        &self.inner.cfg
    }

    /// The policy new buckets get unless they ask for another.
    pub fn default_policy(&self) -> Redundancy {
        if let Some(p) = self.inner.cfg.default_policy {
            return p;
        }
        match self.inner.cluster.get() {
            Some(m) => m.layout().default_policy(),
            None => Redundancy::default_for_disks(self.inner.cfg.disks.len()),
        }
    }

    /// Appends `change` to the audit log (for changes made outside the object API, such
    /// as a compute job's run).
    pub async fn record(
        &self,
        change: ledger::record::Change,
        actor: Option<String>,
    ) -> Result<()> {
        Ok(self.inner.catalog.record(change, actor).await?)
    }

    /// Where `v`'s data shards are by the current layout: bytes per node (None: this
    /// node), for running work next to the data. Parity shards are left out: a reader
    /// uses data shards first.
    pub fn data_placement(&self, v: &Version) -> Vec<(Option<cluster::NodeId>, u64)> {
        let catalog::Body::Chunks { policy, chunks } = &v.body else {
            return Vec::new();
        };
        // A body under the inline threshold lives in the catalog, which every node has.
        if chunks.len() == 1 && v.size < self.inner.cfg.inline_threshold as u64 {
            return Vec::new();
        }
        let t = self.topology();
        let k = policy.needed().max(1);
        let mut out: Vec<(Option<cluster::NodeId>, u64)> = Vec::new();
        for c in chunks {
            let per_shard = u64::from(c.sealed_len).div_ceil(k as u64);
            for spot in t.place(&c.id, *policy, &|_| true).into_iter().take(k) {
                let node = t.node_of(spot).cloned();
                match out.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, b)) => *b += per_shard,
                    None => out.push((node, per_shard)),
                }
            }
        }
        out
    }

    /// How many chunks the catalog holds.
    pub fn chunk_count(&self) -> Result<u64> {
        Ok(self.inner.catalog.chunk_count()?)
    }

    /// What each of this node's disks holds and whether it is intact.
    pub fn disk_health(&self) -> Vec<shards::DiskHealth> {
        self.inner.store.check_disks()
    }

    // ---- buckets ----

    /// Creates a bucket with its own data key, sealed with the master key.
    pub async fn create_bucket(
        &self,
        name: &str,
        policy: Option<Redundancy>,
        versioning: Versioning,
    ) -> Result<Bucket> {
        self.create_bucket_as(name, policy, versioning, Default::default(), None)
            .await
    }

    /// Creates a bucket with initial gateway settings (owner, ACL) in one commit, on
    /// behalf of an access key (recorded in the audit log).
    pub async fn create_bucket_as(
        &self,
        name: &str,
        policy: Option<Redundancy>,
        versioning: Versioning,
        settings: std::collections::BTreeMap<String, String>,
        actor: Option<String>,
    ) -> Result<Bucket> {
        if SYSTEM_BUCKETS.contains(&name) {
            return Err(ArchiveError::InvalidName(format!(
                "bucket {name:?} is kept by edgecloud itself: pick another name"
            )));
        }
        self.create_bucket_unchecked(name, policy, versioning, settings, actor)
            .await
    }

    /// Creates one of [`SYSTEM_BUCKETS`] (unversioned, default redundancy) if it does
    /// not exist yet, and returns it.
    pub async fn system_bucket(&self, name: &str) -> Result<Bucket> {
        debug_assert!(SYSTEM_BUCKETS.contains(&name));
        match self.bucket(name) {
            Ok(b) => Ok(b),
            Err(ArchiveError::Catalog(catalog::CatalogError::NoSuchBucket(_))) => {
                let created = self
                    .create_bucket_unchecked(
                        name,
                        None,
                        Versioning::Unversioned,
                        Default::default(),
                        Some("edgecloud".into()),
                    )
                    .await;
                match created {
                    // Another caller created it first.
                    Err(ArchiveError::Catalog(catalog::CatalogError::BucketExists(_))) => {
                        self.bucket(name)
                    }
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn create_bucket_unchecked(
        &self,
        name: &str,
        policy: Option<Redundancy>,
        versioning: Versioning,
        settings: std::collections::BTreeMap<String, String>,
        actor: Option<String>,
    ) -> Result<Bucket> {
        validate_bucket_name(name)?;
        let policy = policy.unwrap_or_else(|| self.default_policy());
        policy
            .validate()
            .map_err(|e| ArchiveError::Invalid(e.to_string()))?;
        let (wrapped_key_id, wrapped_key) = self.inner.keys.wrap_new();
        let c = &self.inner.cfg;
        let b = Bucket {
            name: name.to_string(),
            created_ns: catalog::now_ns(),
            versioning,
            policy,
            wrapped_key,
            wrapped_key_id,
            compression: c.compression,
            chunk_min: c.chunk.min as u32,
            chunk_avg: c.chunk.avg as u32,
            chunk_max: c.chunk.max as u32,
            settings,
        };
        Ok(self.inner.catalog.create_bucket_as(b, actor).await?)
    }

    /// The bucket named `name`.
    pub fn bucket(&self, name: &str) -> Result<Bucket> {
        Ok(self.inner.catalog.bucket(name)?)
    }

    /// A key for `purpose` derived from the master key (BLAKE3's key derivation), for
    /// what a gateway keeps on the node's disk between requests (NFS staging). Never a
    /// bucket's data key.
    pub fn local_key(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, self.inner.cfg.master_key.as_bytes())
    }

    /// Every bucket, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>> {
        Ok(self.inner.catalog.buckets()?)
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.delete_bucket_as(name, None).await
    }

    /// Deletes an empty bucket, recording `actor` in the audit log.
    pub async fn delete_bucket_as(&self, name: &str, actor: Option<String>) -> Result<()> {
        Ok(self.inner.catalog.delete_bucket_as(name, actor).await?)
    }

    /// Turns versioning on or suspends it.
    pub async fn set_versioning(&self, name: &str, v: Versioning) -> Result<Bucket> {
        Ok(self
            .inner
            .catalog
            .update_bucket(name, move |b| {
                // S3: a bucket can be suspended even if never enabled (it then reports
                // Suspended), and once versioned it can never be unversioned again.
                b.versioning = match (b.versioning, v) {
                    (Versioning::Unversioned, Versioning::Unversioned) => Versioning::Unversioned,
                    (_, Versioning::Unversioned) => Versioning::Suspended,
                    (_, v) => v,
                };
                Ok(())
            })
            .await?)
    }

    /// Changes free-form bucket settings (CORS, tags, ...) used by gateways.
    pub async fn update_bucket_settings(
        &self,
        name: &str,
        f: impl Fn(&mut std::collections::BTreeMap<String, String>) + Send + 'static,
    ) -> Result<Bucket> {
        Ok(self
            .inner
            .catalog
            .update_bucket(name, move |b| {
                f(&mut b.settings);
                Ok(())
            })
            .await?)
    }

    /// Changes one version's metadata in place (object tags); the data is untouched.
    pub async fn update_meta(
        &self,
        bucket: &str,
        key: &str,
        sel: VersionSel,
        f: impl Fn(&mut std::collections::BTreeMap<String, String>) + Send + 'static,
    ) -> Result<Version> {
        self.update_meta_governed(bucket, key, sel, false, f).await
    }

    /// `update_meta` that may shorten or lift GOVERNANCE retention when
    /// `bypass_governance` (the caller checked the actor may).
    pub async fn update_meta_governed(
        &self,
        bucket: &str,
        key: &str,
        sel: VersionSel,
        bypass_governance: bool,
        f: impl Fn(&mut std::collections::BTreeMap<String, String>) + Send + 'static,
    ) -> Result<Version> {
        validate_key(key)?;
        Ok(self
            .inner
            .catalog
            .update_version_meta_governed(bucket, key, sel, bypass_governance, f)
            .await?)
    }

    // ---- S3 access keys ----

    /// What `key` may do in `bucket`, for every gateway: its own grant (admin keys own
    /// everything), else owner of a bucket it created, else read in an
    /// `authenticated-read` bucket. `bucket_rec`: the bucket when the caller has it.
    pub fn key_permission(
        &self,
        key: &AccessKey,
        bucket: &str,
        bucket_rec: Option<&Bucket>,
    ) -> Option<Permission> {
        if let Some(p) = key.permission(bucket) {
            return Some(p);
        }
        let loaded;
        let b = match bucket_rec {
            Some(b) => b,
            None => {
                loaded = self.bucket(bucket).ok()?;
                &loaded
            }
        };
        if b.settings.get(settings::OWNER) == Some(&key.access_key) {
            return Some(Permission::Owner);
        }
        let apply = grants::acls_apply(b);
        let granted = grants::bucket_permission(
            &grants::effective(grants::parse(b.settings.get(grants::BUCKET_SETTING)), apply),
            &key.access_key,
        );
        let authenticated = (apply.public
            && b.settings.get(settings::ACL).map(String::as_str) == Some("authenticated-read"))
        .then_some(Permission::Read);
        granted.max(authenticated)
    }

    /// An access key with its secret opened (the catalog holds it sealed).
    pub fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>> {
        self.inner
            .catalog
            .access_key(access_key)?
            .map(|k| self.opened(k))
            .transpose()
    }

    /// Every access key.
    pub fn access_keys(&self) -> Result<Vec<AccessKey>> {
        self.inner
            .catalog
            .access_keys()?
            .into_iter()
            .map(|k| self.opened(k))
            .collect()
    }

    fn opened(&self, mut k: AccessKey) -> Result<AccessKey> {
        k.secret = self.inner.keys.open_secret(&k.access_key, &k.secret)?;
        Ok(k)
    }

    /// Creates a key with a fresh random secret. `actor` (who asks, for the audit log)
    /// is an access key id or [`ADMIN_ACTOR`].
    pub async fn create_access_key(
        &self,
        actor: &str,
        name: &str,
        admin: bool,
        create_buckets: bool,
        buckets: std::collections::BTreeMap<String, Permission>,
    ) -> Result<AccessKey> {
        for b in buckets.keys() {
            validate_bucket_name(b)?;
        }
        let (access_key, secret) = generate_key_pair();
        let key = AccessKey {
            secret: self.inner.keys.seal_secret(&access_key, &secret),
            access_key,
            name: name.into(),
            created_ns: catalog::now_ns(),
            admin,
            create_buckets,
            buckets,
        };
        let mut stored = self
            .inner
            .catalog
            .put_access_key(key, Some(actor.into()))
            .await?;
        stored.secret = secret; // shown once, to whoever created it
        Ok(stored)
    }

    /// Grants `perm` in `bucket` to a key, or takes its access away (`None`).
    pub async fn set_permission(
        &self,
        actor: &str,
        access_key: &str,
        bucket: &str,
        perm: Option<Permission>,
    ) -> Result<AccessKey> {
        validate_bucket_name(bucket)?;
        let bucket = bucket.to_string();
        let k = self
            .inner
            .catalog
            .update_access_key(access_key, Some(actor.into()), move |k| match perm {
                Some(p) => {
                    k.buckets.insert(bucket.clone(), p);
                }
                None => {
                    k.buckets.remove(&bucket);
                }
            })
            .await?;
        self.opened(k)
    }

    /// Deletes an access key; false if it did not exist.
    pub async fn delete_access_key(&self, actor: &str, access_key: &str) -> Result<bool> {
        Ok(self
            .inner
            .catalog
            .delete_access_key(access_key, Some(actor.into()))
            .await?)
    }

    // ---- reads of metadata ----

    /// The version a read selects; a delete marker reads as "no such key".
    pub fn head(&self, bucket: &str, key: &str, sel: &VersionSel) -> Result<Version> {
        validate_key(key)?;
        let v = self.inner.catalog.version(bucket, key, sel)?;
        if v.delete_marker {
            return Err(ArchiveError::DeleteMarker {
                key: key.into(),
                version_id: v.version_id,
            });
        }
        Ok(v)
    }

    /// One page of a bucket's current objects (or as of an instant).
    pub fn list(&self, bucket: &str, q: &ListQuery) -> Result<ListPage> {
        Ok(self.inner.catalog.list(bucket, q)?)
    }

    /// One page of a bucket's versions and delete markers.
    pub fn list_versions(&self, bucket: &str, q: &VersionsQuery) -> Result<VersionsPage> {
        Ok(self.inner.catalog.list_versions(bucket, q)?)
    }

    /// Deletes a key (a delete marker when versioned) or one version.
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
    ) -> Result<DeleteOutcome> {
        self.delete_as(bucket, key, version_id, None).await
    }

    /// `delete` on behalf of an access key (recorded in the audit log).
    pub async fn delete_as(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
        actor: Option<String>,
    ) -> Result<DeleteOutcome> {
        self.delete_governed(bucket, key, version_id, actor, false)
            .await
    }

    /// `delete_as` that may remove a version under GOVERNANCE retention when
    /// `bypass_governance` (the caller checked the actor may).
    pub async fn delete_governed(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
        actor: Option<String>,
        bypass_governance: bool,
    ) -> Result<DeleteOutcome> {
        validate_key(key)?;
        Ok(self
            .inner
            .catalog
            .delete_governed(bucket, key, version_id, actor, bypass_governance)
            .await?)
    }
}

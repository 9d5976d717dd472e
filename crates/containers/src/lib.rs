//! Containers run from the images in the store (crates/images), in this process.
//!
//! `run` mounts the image's lazy root (`lazy_root`: its files fetched from the store
//! when first read, by a process that outlives the node's restarts) or, in a node
//! without lazy roots, unpacks the image once (`rootfs::unpack`); then it mounts an
//! overlay whose upper directory takes the container's writes, writes an OCI runtime spec
//! (`spec::runtime_spec`: Docker's default capabilities, masked paths, cgroup limits,
//! its own namespaces), and starts it with youki's libcontainer (`runtime`), stdout
//! and stderr to a log file. A thread per container waits for its init and applies the
//! restart policy. Records live in `DATA/containers/run/<id>/record.json`, so a node that
//! restarts finds its containers: those still running are adopted, those a policy
//! restarts are started again.

pub mod compose;
mod error;
pub mod file_cache;
pub mod lazy_root;
pub mod network;
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
pub mod spec;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use images::ImageStore;
use serde::{Deserialize, Serialize};

pub use error::{ContainerError, Result};

/// What `edgecloud run` asks for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct RunSpec {
    /// The image: a name, `sha256:ID` or an id prefix.
    pub image: String,
    /// The container's name (unique on the node) [default: none; the id names it].
    pub name: Option<String>,
    /// The command and its arguments [default: the image's Cmd].
    pub command: Vec<String>,
    /// `K=V` added to (and overriding) the image's environment.
    pub env: Vec<String>,
    /// Memory limit, bytes.
    pub memory: Option<u64>,
    /// CPU limit, in CPUs (1.5 = one and a half).
    pub cpus: Option<f64>,
    /// `none` (a network namespace with loopback only; the default without `publish`),
    /// `bridge` (its own namespace joined to the node by a veth pair; the default with
    /// `publish`) or `host` (the node's network).
    pub network: String,
    /// Ports the node publishes: `HOST:CTR` or `IP:HOST:CTR` (TCP).
    pub publish: Vec<String>,
    /// Buckets bound into the container: `BUCKET[/PREFIX]:/path[:ro]`.
    pub volumes: Vec<String>,
    /// `no` (default), `always`, `unless-stopped` or `on-failure[:MAX]`.
    pub restart: String,
    /// Remove the container when it exits.
    pub remove: bool,
    /// More names other containers of the node reach it by (a compose service's name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `host` runs it without a user namespace of its own (its root is the node's
    /// root); by default its root is an unprivileged user of the node, where the
    /// kernel allows it (see [`USERNS_BASE`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub userns: String,
    /// In a cluster: run it on a node of this site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// In a cluster: run it on this node (id, id prefix, or HOST[:PORT] of its
    /// node-to-node address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The node's uid and gid of the root of a container in a user namespace of its own:
/// ids 0-65535 in the container are this and up on the node. In the range systemd
/// leaves to containers (524288-1879048191, docs/decisions.md), clear of the
/// subordinate ids `/etc/subuid` gives users.
pub const USERNS_BASE: u32 = 0x6000_0000;

/// Opens `dir` and `dir/run` to passing through (0711) for containers' roots, and says
/// why containers cannot have user namespaces of their own on this node, if they
/// cannot: the kernel gives none, or their root (an unprivileged user of the node)
/// could not reach its root file system and volumes under `dir` (each folder on the
/// way must let others search it, as Docker's userns-remap requires too).
fn open_for_user_namespaces(dir: &Path) -> Option<String> {
    let kernel = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        && Path::new("/proc/self/ns/user").exists();
    if !kernel {
        return Some("this kernel gives no user namespaces".into());
    }
    use std::os::unix::fs::PermissionsExt;
    // Ours: searchable, not listable, by others.
    for own in [dir.to_path_buf(), dir.join("run")] {
        if let Err(e) = std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o711)) {
            return Some(format!("cannot open {} to containers: {e}", own.display()));
        }
    }
    for folder in dir.ancestors().skip(1) {
        match std::fs::metadata(folder) {
            Ok(m) if m.permissions().mode() & 0o001 != 0 => {}
            _ => {
                return Some(format!(
                    "{} is closed to other users (`chmod o+x {}` opens it to search, not to listing)",
                    folder.display(),
                    folder.display()
                ));
            }
        }
    }
    None
}

/// The most output `exec` returns (the rest is read and dropped).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// What `exec` ran into.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Executed {
    /// The command's exit code (128 + signal when a signal ended it).
    pub exit_code: i32,
    /// Its standard output and error, as one text.
    pub output: String,
    /// Whether output beyond [`MAX_EXEC_OUTPUT`] was dropped.
    pub truncated: bool,
}

/// Where a container is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its process runs.
    Running,
    /// Its process has ended.
    Exited,
}

/// A container, as `ps` and `inspect` show it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    /// 64 hex digits.
    pub id: String,
    /// Its name, when given.
    pub name: Option<String>,
    /// The image as `run` named it.
    pub image: String,
    /// The image's id.
    pub image_id: String,
    /// argv of its process.
    pub command: Vec<String>,
    /// Running or exited.
    pub state: State,
    /// Its init's pid on the node, while running.
    pub pid: Option<i32>,
    /// The exit code of the last run (128 + signal when killed by one).
    pub exit_code: Option<i32>,
    /// Created, seconds since the epoch.
    pub created: u64,
    /// Last started.
    pub started: u64,
    /// Last ended.
    pub finished: Option<u64>,
    /// Times the restart policy started it again.
    pub restarts: u32,
    /// Whether it was stopped by `stop` (policies other than `always` leave it so).
    pub stopped_by_user: bool,
    /// What it was run with.
    pub spec: RunSpec,
    /// Its network slot (`network::addresses`), with a network of its own.
    #[serde(default)]
    pub network_slot: Option<u32>,
    /// Its address, with a network of its own.
    #[serde(default)]
    pub address: Option<String>,
    /// Whether its root's lower layer is the image's lazy root (else the unpacked image).
    #[serde(default)]
    pub lazy_root: bool,
    /// The node's uid and gid of its root, when it runs in a user namespace of its own
    /// (ids 0-65535 inside are this and up on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<u32>,
    /// In a cluster: the id of the node it runs on (filled in by the node that answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a cluster: that node's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// The restart policy of a spec.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    No,
    Always,
    UnlessStopped,
    OnFailure(Option<u32>),
}

impl Restart {
    fn parse(s: &str) -> Result<Restart> {
        Ok(match s {
            "" | "no" => Restart::No,
            "always" => Restart::Always,
            "unless-stopped" => Restart::UnlessStopped,
            "on-failure" => Restart::OnFailure(None),
            other => match other.strip_prefix("on-failure:").map(str::parse) {
                Some(Ok(n)) => Restart::OnFailure(Some(n)),
                _ => {
                    return Err(ContainerError::Invalid(format!(
                        "restart policy {other:?}: use no, always, unless-stopped or on-failure[:MAX]"
                    )));
                }
            },
        })
    }

    /// Whether a container that ended so is started again.
    fn again(self, c: &ContainerInfo) -> bool {
        match self {
            Restart::No => false,
            Restart::Always => true,
            Restart::UnlessStopped => !c.stopped_by_user,
            Restart::OnFailure(max) => {
                !c.stopped_by_user && c.exit_code != Some(0) && max.is_none_or(|m| c.restarts < m)
            }
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The containers of this node.
#[derive(Clone)]
pub struct Containers {
    inner: Arc<Inner>,
}

/// A [`Containers`] that does not keep the node's containers service alive (for those
/// it keeps alive in turn, such as the cluster's heartbeats).
#[derive(Clone)]
pub struct WeakContainers(std::sync::Weak<Inner>);

impl WeakContainers {
    /// The service, while the node has it.
    pub fn upgrade(&self) -> Option<Containers> {
        self.0.upgrade().map(|inner| Containers { inner })
    }
}

struct Inner {
    /// `DATA/containers`.
    dir: PathBuf,
    images: ImageStore,
    table: Mutex<BTreeMap<String, ContainerInfo>>,
    /// One record write at a time.
    saving: Mutex<()>,
    /// One unpack of an image at a time.
    unpacking: tokio::sync::Mutex<()>,
    /// Published ports' proxies, by container.
    proxies: Mutex<BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    /// The runtime the proxies run on.
    handle: tokio::runtime::Handle,
    /// How volumes reach the node's buckets (None: no volumes on this node).
    volume_source: Mutex<Option<volumes::VolumeSource>>,
    /// Lazy roots, when on (None: images are unpacked).
    lazy: Mutex<Option<Lazy>>,
    /// Images whose first start's reads are still to be recorded.
    first_start: Mutex<std::collections::BTreeSet<String>>,
    /// Why containers here get no user namespace of their own (None: they do).
    no_user_namespaces: Option<String>,
    /// Who forks containers' processes.
    setup: Mutex<runtime::Setup>,
}

/// What lazy roots need on the node's side.
#[derive(Clone)]
struct Lazy {
    /// The program that serves them (`PROGRAM lazy-root ...`): the edgecloud binary.
    program: PathBuf,
    /// The node's copies of image files, which they read.
    files: file_cache::FileCache,
    /// Where they ask for files.
    socket: PathBuf,
}

/// How long after an image's first start the files it read are recorded (or when its
/// first container ends, if sooner): what a service reads to come up.
const FIRST_START_WINDOW: Duration = Duration::from_secs(10);

impl Containers {
    /// The containers kept under `data_dir/containers`, running from `images`. Records
    /// of containers still running are adopted; those a policy restarts are started.
    pub fn open(data_dir: &Path, images: ImageStore) -> Result<Self> {
        let dir = data_dir.join("containers");
        for sub in ["run", "images", "state", "lazy", "files"] {
            std::fs::create_dir_all(dir.join(sub))?;
            if sub != "run" {
                use std::os::unix::fs::PermissionsExt;
                let private = std::fs::Permissions::from_mode(0o700);
                std::fs::set_permissions(dir.join(sub), private)?;
            }
        }
        // The runtime spec's root and the overlay take absolute paths; the data
        // directory is often relative (./edgecloud-data by default).
        let dir = std::fs::canonicalize(&dir)?;
        let no_user_namespaces = open_for_user_namespaces(&dir);
        if let Some(why) = &no_user_namespaces {
            tracing::warn!("containers run without user namespaces of their own: {why}");
        }
        let this = Containers {
            inner: Arc::new(Inner {
                dir,
                images,
                table: Mutex::new(BTreeMap::new()),
                saving: Mutex::new(()),
                proxies: Mutex::new(BTreeMap::new()),
                volume_source: Mutex::new(None),
                handle: tokio::runtime::Handle::try_current().map_err(|_| {
                    ContainerError::Runtime("containers need a tokio runtime".into())
                })?,
                unpacking: tokio::sync::Mutex::new(()),
                lazy: Mutex::new(None),
                first_start: Mutex::new(Default::default()),
                no_user_namespaces,
                setup: Mutex::new(runtime::Setup::InProcess),
            }),
        };
        for entry in std::fs::read_dir(this.inner.dir.join("run"))?.flatten() {
            let record = entry.path().join("record.json");
            let Ok(text) = std::fs::read(&record) else {
                continue;
            };
            let Ok(mut c) = serde_json::from_slice::<ContainerInfo>(&text) else {
                tracing::warn!("unreadable container record {}", record.display());
                continue;
            };
            let alive = c
                .pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if c.state == State::Running && !alive {
                c.state = State::Exited;
                c.pid = None;
                c.finished.get_or_insert(now());
            }
            let id = c.id.clone();
            let policy = Restart::parse(&c.spec.restart).unwrap_or(Restart::No);
            let again = c.state == State::Exited && policy.again(&c) && c.finished.is_some();
            this.table().insert(id.clone(), c.clone());
            if (alive || again)
                && let Err(e) = this.publish(&c)
            {
                tracing::warn!(container = %id, "publishing its ports again: {e}");
            }
            if alive && c.state == State::Running {
                this.watch(id.clone(), c.pid.unwrap_or_default());
            } else if again && let Err(e) = this.restart_now(&id) {
                tracing::warn!(container = %id, "restarting after the node's restart: {e}");
            }
        }
        Ok(this)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ContainerInfo>> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.inner.dir.join("run").join(id)
    }

    fn state_root(&self) -> PathBuf {
        self.inner.dir.join("state")
    }

    /// Writes the container's record as the table holds it now. The waiting thread and
    /// a request may save at once: one at a time, each writing the latest state.
    fn save(&self, c: &ContainerInfo) -> Result<()> {
        let _one_at_a_time = self.inner.saving.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = self.table().get(&c.id).cloned() else {
            return Ok(()); // removed meanwhile
        };
        let path = self.run_dir(&c.id).join("record.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&current).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Creates and starts a container; `actor` (who asked) goes into its ledger record.
    pub async fn run(&self, spec: RunSpec, actor: Option<String>) -> Result<ContainerInfo> {
        let policy = Restart::parse(&spec.restart)?;
        if spec.remove && policy != Restart::No {
            return Err(ContainerError::Invalid(
                "--rm and a restart policy contradict each other: pick one".into(),
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.starts_with(|c: char| c.is_ascii_alphanumeric())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        for n in spec.name.iter().chain(&spec.aliases) {
            if !name_ok(n) {
                return Err(ContainerError::Invalid(format!(
                    "name {n:?}: use letters, digits, '_', '.' or '-', starting with a letter or digit"
                )));
            }
        }
        if let Some(n) = &spec.name
            && self.table().values().any(|c| c.name.as_ref() == Some(n))
        {
            return Err(ContainerError::Conflict(format!(
                "a container named {n:?} exists: remove it or pick another name"
            )));
        }
        if spec.cpus.is_some_and(|c| !(c > 0.0 && c <= 1024.0)) {
            return Err(ContainerError::Invalid("--cpus must be above 0".into()));
        }
        if spec.memory.is_some_and(|m| m < 6 << 20) {
            return Err(ContainerError::Invalid(
                "--memory must be at least 6 MB".into(),
            ));
        }
        let published = spec
            .publish
            .iter()
            .map(|p| network::parse_publish(p))
            .collect::<Result<Vec<_>>>()?;
        let mut spec = spec;
        match (spec.network.as_str(), published.is_empty()) {
            ("" | "none", true) => spec.network = "none".into(),
            ("" | "bridge", _) => spec.network = "bridge".into(),
            ("host", true) => {}
            ("none" | "host", false) => {
                return Err(ContainerError::Invalid(
                    "published ports need the bridge network (with --network host the container listens on the node itself)".into(),
                ));
            }
            (other, _) => {
                return Err(ContainerError::Invalid(format!(
                    "network {other:?}: use none, bridge or host"
                )));
            }
        }
        for v in &spec.volumes {
            let v = volumes::parse(v)?;
            if self
                .inner
                .volume_source
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
            {
                return Err(ContainerError::Invalid(
                    "this node serves no volumes".into(),
                ));
            }
            if self.inner.images.archive().bucket(&v.bucket).is_err() {
                return Err(ContainerError::Invalid(format!(
                    "volume {}: no such bucket (create it with `edgecloud bucket create {}`)",
                    v.bucket, v.bucket
                )));
            }
        }
        let image = self.inner.images.find(&spec.image).await?;
        let lazy_root = self.lazy().is_some();
        let user_namespace = match spec.userns.as_str() {
            "host" => None,
            "" | "private" => {
                (lazy_root && spec.network != "host" && self.inner.no_user_namespaces.is_none())
                    .then_some(USERNS_BASE)
            }
            other => {
                return Err(ContainerError::Invalid(format!(
                    "userns {other:?}: leave it out (a user namespace of its own) or use host"
                )));
            }
        };
        let lower = self.lower(&image, lazy_root, user_namespace).await?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| ContainerError::Runtime(e.to_string()))?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.run_dir(&id);
        std::fs::create_dir_all(&dir)?;
        {
            // The node's alone, or passable by the container's root group only.
            use std::os::unix::fs::PermissionsExt;
            let mode = match user_namespace {
                Some(root) => {
                    std::os::unix::fs::chown(&dir, None, Some(root))?;
                    0o710
                }
                None => 0o700,
            };
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        let merged = dir.join("rootfs");
        let upper = dir.join("upper");
        if let Some(root) = user_namespace {
            // Its root owns the top of its root file system (what it writes goes here).
            std::fs::create_dir_all(&upper)?;
            std::os::unix::fs::chown(&upper, Some(root), Some(root))?;
        }
        rootfs::mount_overlay(&lower, &upper, &dir.join("work"), &merged)?;
        let process = spec::ImageProcess::of(&image.config);
        let hostname = spec.name.clone().unwrap_or_else(|| id[..12].to_string());
        let prepared = (|| {
            let input = spec::SpecInput {
                id: &id,
                hostname: &hostname,
                rootfs: &merged,
                args: spec::command_line(&process, &spec)?,
                env: spec::environment(&process, &spec, &hostname),
                cwd: process.working_dir.clone().unwrap_or_else(|| "/".into()),
                user: spec::resolve_user(process.user.as_deref(), &merged)?,
                run: &spec,
                user_namespace,
                binds: {
                    let mut binds = self.volume_binds(&id, &spec)?;
                    if spec.network == "bridge" {
                        // Names of the node's other containers (see `write_hosts_files`).
                        binds.push((dir.join("hosts"), "/etc/hosts".into(), true));
                    }
                    binds
                },
            };
            let mut config = spec::runtime_spec(&input);
            let bundle = dir.join("bundle");
            std::fs::create_dir_all(&bundle)?;
            seccomp::compile_into_bundle(&mut config, &bundle)?;
            std::fs::write(
                bundle.join("config.json"),
                serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
            )?;
            Ok::<_, ContainerError>(input.args)
        })();
        let args = match prepared {
            Ok(a) => a,
            Err(e) => {
                let _ = rootfs::unmount(&merged);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let c = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: image.id.clone(),
            command: args,
            state: State::Exited,
            pid: None,
            exit_code: None,
            created: now(),
            started: now(),
            finished: None,
            restarts: 0,
            stopped_by_user: false,
            spec,
            network_slot: None,
            address: None,
            lazy_root,
            user_namespace,
            node: None,
            site: None,
        };
        // Every deployment is in the audit log, with its image's digests, before it runs.
        let command_sha256 = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(c.command.join("\0").as_bytes());
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let recorded = self
            .inner
            .images
            .archive()
            .record(
                ledger::record::Change::ContainerStarted {
                    container_id: c.id.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                    manifest_digest: image.manifest_digest.clone(),
                    command_sha256,
                },
                actor,
            )
            .await;
        if let Err(e) = recorded {
            let _ = rootfs::unmount(&merged);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ContainerError::Runtime(format!(
                "recording the deployment in the audit log: {e}"
            )));
        }
        let c = {
            let mut t = self.table();
            let mut c = c;
            if c.spec.network == "bridge" {
                let mut used: std::collections::BTreeSet<u32> =
                    t.values().filter_map(|o| o.network_slot).collect();
                // Another node on this machine (a test cluster) has its own table.
                used.extend(network::slots_in_use_on_this_machine());
                let slot = (1..network::SLOTS)
                    .find(|s| !used.contains(s))
                    .ok_or_else(|| {
                        ContainerError::Conflict(
                            "no network addresses left: remove containers".into(),
                        )
                    })?;
                c.network_slot = Some(slot);
                c.address = Some(network::addresses(slot).1.to_string());
            }
            t.insert(id.clone(), c.clone());
            c
        };
        self.save(&c)?;
        if let Err(e) = self.publish(&c) {
            let _ = self.remove_now(&id);
            return Err(e);
        }
        let (this, starting) = (self.clone(), id.clone());
        let started = tokio::task::spawn_blocking(move || this.start(&starting, false))
            .await
            .map_err(|e| ContainerError::Runtime(e.to_string()))?;
        if started.is_err() {
            // A container that never started leaves nothing behind.
            let _ = self.remove_now(&id);
        } else if lazy_root {
            let (this, image_id) = (self.clone(), image.id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(FIRST_START_WINDOW).await;
                this.record_first_start(&image_id).await;
            });
        }
        started
    }

    /// The lower layer of a container's root from `image`: its lazy root (`lazy`), or
    /// the image unpacked on this node.
    async fn lower(
        &self,
        image: &images::Image,
        lazy: bool,
        user_namespace: Option<u32>,
    ) -> Result<PathBuf> {
        let _one = self.inner.unpacking.lock().await;
        match (lazy, self.lazy()) {
            (true, Some(l)) => self.lazy_root(&l, image, user_namespace).await,
            (true, None) => Err(ContainerError::Runtime(
                "the container ran on a lazy root, and lazy roots are off".into(),
            )),
            (false, _) => {
                let dir = self.inner.dir.join("images");
                rootfs::unpack(&self.inner.images, image, &dir).await
            }
        }
    }

    fn lazy(&self) -> Option<Lazy> {
        self.inner
            .lazy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A handle that does not keep the service alive.
    pub fn downgrade(&self) -> WeakContainers {
        WeakContainers(Arc::downgrade(&self.inner))
    }

    /// Why containers here get no user namespace of their own (None: they do, unless
    /// they ask for the node's, or use its network or an unpacked root).
    pub fn no_user_namespaces(&self) -> Option<&str> {
        self.inner.no_user_namespaces.as_deref()
    }

    /// Has containers set up by `program` (the edgecloud binary, whose
    /// `container-setup` command sets one up) from now on, in a process of its own
    /// ([`runtime::Setup::Helper`]); their inits still become this process's children.
    pub fn set_up_by(&self, program: PathBuf) {
        *self.inner.setup.lock().unwrap_or_else(|p| p.into_inner()) =
            runtime::Setup::Helper(program);
    }

    fn setup(&self) -> runtime::Setup {
        self.inner
            .setup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves images through lazy roots run by `program` (the edgecloud binary, whose
    /// `lazy-root` command serves one) from now on. Returns the task that answers the
    /// lazy roots' fetches: the node aborts it when it stops (before its store closes),
    /// and a lazy root then waits for the next node rather than failing a read.
    pub fn enable_lazy_roots(&self, program: PathBuf) -> Result<tokio::task::JoinHandle<()>> {
        let files =
            file_cache::FileCache::new(self.inner.dir.join("files"), self.inner.images.clone())?;
        let mut socket = self.inner.dir.join("fetch.sock");
        if socket.as_os_str().len() > 100 {
            // Unix socket paths end at 108 bytes: a deep data directory gets one in /tmp.
            use sha2::Digest;
            let hash = sha2::Sha256::digest(self.inner.dir.as_os_str().as_encoded_bytes());
            let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
            socket = std::env::temp_dir().join(format!("edgecloud-fetch-{hex}.sock"));
        }
        let _guard = self.inner.handle.enter();
        let answering = files.listen(&socket)?;
        *self.inner.lazy.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lazy {
            program,
            files,
            socket,
        });
        Ok(answering)
    }

    /// Where the image's lazy root is mounted: one for containers in the node's user
    /// namespace, one for those in their own (owners shifted).
    fn lazy_mountpoint(&self, image_id: &str, user_namespace: Option<u32>) -> PathBuf {
        let hex = image_id.trim_start_matches("sha256:");
        let dir = self.inner.dir.join("lazy");
        match user_namespace {
            None => dir.join(hex),
            Some(root) => dir.join(format!("{hex}-u{root}")),
        }
    }

    /// The image's lazy root, mounted unless it is; a first mount on this node fetches
    /// ahead what the image's first start read (recorded on whichever node ran it).
    async fn lazy_root(
        &self,
        lazy: &Lazy,
        image: &images::Image,
        user_namespace: Option<u32>,
    ) -> Result<PathBuf> {
        let hex = image.id.trim_start_matches("sha256:");
        let dir = self.inner.dir.join("lazy");
        let opts = lazy_root::Options {
            tree: dir.join(format!("{hex}.tree.json")),
            cache: lazy.files.path(""),
            socket: lazy.socket.clone(),
            reads: dir.join(format!("{hex}.reads")),
            mountpoint: self.lazy_mountpoint(&image.id, user_namespace),
            id_shift: user_namespace.unwrap_or(0),
        };
        if lazy_root::is_mounted(&opts.mountpoint) {
            return Ok(opts.mountpoint);
        }
        let tree = self.inner.images.tree(image).await?;
        let sizes: std::collections::HashMap<&str, u64> = tree
            .entries()
            .filter_map(|e| Some((e.digest.as_deref()?, e.size)))
            .collect();
        let first = self.inner.images.first_reads(image).await?;
        if first.is_empty() {
            self.inner
                .first_start
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(image.id.clone());
        } else {
            let ahead: Vec<(String, u64)> = first
                .iter()
                .filter_map(|d| Some((d.clone(), *sizes.get(d.as_str())?)))
                .collect();
            let files = lazy.files.clone();
            tokio::spawn(async move {
                let n = files.prefetch(ahead).await;
                tracing::debug!("prefetched {n} image files");
            });
        }
        let entries: Vec<&images::layer::Entry> = tree.entries().collect();
        std::fs::write(
            &opts.tree,
            serde_json::to_vec(&entries).map_err(std::io::Error::other)?,
        )?;
        let (program, log) = (lazy.program.clone(), dir.join(format!("{hex}.log")));
        let mountpoint = opts.mountpoint.clone();
        tokio::task::spawn_blocking(move || lazy_root::spawn(&program, &opts, &log))
            .await
            .map_err(|e| ContainerError::Runtime(e.to_string()))??;
        Ok(mountpoint)
    }

    /// Keeps the files the image's first start read as its record in the store (once).
    async fn record_first_start(&self, image_id: &str) {
        let pending = self
            .inner
            .first_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(image_id);
        if !pending {
            return;
        }
        let hex = image_id.trim_start_matches("sha256:");
        let reads = self.inner.dir.join("lazy").join(format!("{hex}.reads"));
        let digests: Vec<String> = std::fs::read_to_string(reads)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let recorded = async {
            let image = self.inner.images.find(image_id).await?;
            self.inner.images.record_first_reads(&image, digests).await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(image = %image_id, "recording what its first start read: {e}");
        }
    }

    /// Mounts a container's root again if it is gone (the machine restarted, or its
    /// lazy root's process was killed); blocking.
    fn ensure_root(&self, id: &str) -> Result<()> {
        let dir = self.run_dir(id);
        let merged = dir.join("rootfs");
        let mounted = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(p), std::fs::metadata(&dir)) {
                (Ok(m), Ok(d)) => m.dev() != d.dev(),
                _ => false,
            }
        };
        let Some(c) = self.table().get(id).cloned() else {
            return Err(ContainerError::NotFound(id.into()));
        };
        let lower_alive = !c.lazy_root
            || lazy_root::is_mounted(&self.lazy_mountpoint(&c.image_id, c.user_namespace));
        if lower_alive && mounted(&merged) {
            return Ok(());
        }
        rootfs::unmount(&merged)?;
        let handle = self.inner.handle.clone();
        let lower = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let image = self.inner.images.find(&c.image_id).await?;
                self.lower(&image, c.lazy_root, c.user_namespace).await
            })
        })?;
        rootfs::mount_overlay(&lower, &dir.join("upper"), &dir.join("work"), &merged)
    }

    /// Starts (or, as a restart, starts again) the container's process; blocking.
    fn start(&self, id: &str, restart: bool) -> Result<ContainerInfo> {
        let dir = self.run_dir(id);
        // A previous run's runtime state (a restart) goes first.
        runtime::delete(&self.state_root(), id)?;
        self.ensure_root(id)?;
        let spec = self
            .table()
            .get(id)
            .map(|c| c.spec.clone())
            .ok_or_else(|| ContainerError::NotFound(id.into()))?;
        self.mount_volumes(id, &spec)?;
        self.write_hosts_files(Some(id));
        let slot = self.table().get(id).and_then(|c| c.network_slot);
        let own_namespace = spec.network != "host";
        let connect = |pid: i32| match slot {
            Some(slot) => network::connect(id, pid, slot),
            // `none`: a namespace of its own with loopback up, as Docker's.
            None if own_namespace => network::loopback_up(pid),
            None => Ok(()),
        };
        if self
            .table()
            .get(id)
            .is_some_and(|c| c.user_namespace.is_some())
        {
            runtime::open_v1_cgroups(id)?;
        }
        let pid = runtime::create_and_start(
            &self.setup(),
            id,
            &dir.join("bundle"),
            &self.state_root(),
            &dir.join("log"),
            &connect,
        )?;
        let c = {
            let mut t = self.table();
            let c = t
                .get_mut(id)
                .ok_or_else(|| ContainerError::NotFound(id.into()))?;
            c.state = State::Running;
            c.pid = Some(pid);
            c.restarts += u32::from(restart);
            c.started = now();
            c.finished = None;
            c.clone()
        };
        self.save(&c)?;
        self.watch(id.to_string(), pid);
        Ok(c)
    }

    fn restart_now(&self, id: &str) -> Result<ContainerInfo> {
        self.start(id, true)
    }

    /// A thread that waits for the container's init, records how it ended and applies
    /// the restart policy (or `--rm`).
    fn watch(&self, id: String, pid: i32) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("container-{}", &id[..12.min(id.len())]))
            .spawn(move || {
                let code = runtime::wait(pid);
                let ended = {
                    let mut t = this.table();
                    let Some(c) = t.get_mut(&id) else { return };
                    c.state = State::Exited;
                    c.pid = None;
                    c.exit_code = Some(code);
                    c.finished = Some(now());
                    c.clone()
                };
                if let Err(e) = this.save(&ended) {
                    tracing::warn!(container = %id, "saving its record: {e}");
                }
                this.write_hosts_files(None);
                if ended.lazy_root {
                    let (first, image_id) = (this.clone(), ended.image_id.clone());
                    this.inner.handle.spawn(async move {
                        first.record_first_start(&image_id).await;
                    });
                }
                let policy = Restart::parse(&ended.spec.restart).unwrap_or(Restart::No);
                if ended.spec.remove {
                    if let Err(e) = this.remove_now(&id) {
                        tracing::warn!(container = %id, "removing it (--rm): {e}");
                    }
                } else if policy.again(&ended) {
                    // Docker's back-off starts at 100 ms; a crash loop should not spin.
                    let wait = Duration::from_millis(100 << ended.restarts.min(8));
                    std::thread::sleep(wait);
                    let still_wanted = this
                        .table()
                        .get(&id)
                        .is_some_and(|c| c.state == State::Exited && policy.again(c));
                    if still_wanted && let Err(e) = this.restart_now(&id) {
                        tracing::warn!(container = %id, "restarting: {e}");
                    }
                } else {
                    // Nothing runs in it: its root and volumes are mounted again if it
                    // starts again (`ensure_root`, `mount_volumes`).
                    let unmounted = rootfs::unmount(&this.run_dir(&id).join("rootfs"))
                        .and_then(|()| this.unmount_volumes(&id));
                    if let Err(e) = unmounted {
                        tracing::warn!(container = %id, "unmounting after it ended: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread to wait for a container: {e}");
        }
    }

    /// Rewrites the `/etc/hosts` of every bridge container: itself, and each running
    /// bridge container of the node (and `starting`) by name, aliases and short id. The
    /// files are bound into the containers, so they are written in place (same inode)
    /// and a container sees names come and go while it runs.
    fn write_hosts_files(&self, starting: Option<&str>) {
        let table = self.table().clone();
        let bridged: Vec<&ContainerInfo> = table.values().filter(|c| c.address.is_some()).collect();
        let mut names = String::new();
        for c in &bridged {
            if c.state == State::Running || Some(c.id.as_str()) == starting {
                let mut line = format!("{}\t", c.address.as_deref().unwrap_or_default());
                if let Some(n) = &c.name {
                    line.push_str(&format!("{n} "));
                }
                for a in &c.spec.aliases {
                    line.push_str(&format!("{a} "));
                }
                line.push_str(&c.id[..12]);
                names.push_str(&line);
                names.push('\n');
            }
        }
        for c in bridged {
            let path = self.run_dir(&c.id).join("hosts");
            let body = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{names}");
            // Readable by a container's root in a user namespace (the node's umask is 077).
            let written = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                });
            if let Err(e) = written
                && self.run_dir(&c.id).exists()
            {
                tracing::warn!(container = %c.id, "writing its /etc/hosts: {e}");
            }
        }
    }

    /// Lets containers have bucket volumes, reached through `source`.
    pub fn set_volume_source(&self, source: volumes::VolumeSource) {
        *self
            .inner
            .volume_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Where each volume of `spec` is bound from (in the container's folder) and to.
    fn volume_binds(&self, id: &str, spec: &RunSpec) -> Result<Vec<(PathBuf, String, bool)>> {
        let dir = self.run_dir(id).join("volumes");
        spec.volumes
            .iter()
            .enumerate()
            .map(|(n, v)| {
                let v = volumes::parse(v)?;
                let mut from = dir.join(n.to_string());
                if !v.prefix.is_empty() {
                    from = from.join(&v.prefix);
                }
                Ok((from, v.target, v.read_only))
            })
            .collect()
    }

    /// Mounts the container's volumes (those not mounted: a first start, or a start
    /// after the node restarted) and returns what to bind where.
    fn mount_volumes(&self, id: &str, spec: &RunSpec) -> Result<Vec<(PathBuf, String, bool)>> {
        if spec.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let source = self
            .inner
            .volume_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| ContainerError::Invalid("this node serves no volumes".into()))?;
        let dir = self.run_dir(id);
        // Passable by a container's root in a user namespace (the node's umask is 077).
        std::fs::create_dir_all(dir.join("volumes"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let passable = std::fs::Permissions::from_mode(0o711);
            std::fs::set_permissions(dir.join("volumes"), passable)?;
        }
        let owner = self.table().get(id).and_then(|c| c.user_namespace);
        let mut binds = Vec::new();
        for (n, v) in spec.volumes.iter().enumerate() {
            let v = volumes::parse(v)?;
            let at = dir.join("volumes").join(n.to_string());
            let cache = dir.join("volume-cache").join(n.to_string());
            let from = volumes::mount(&source, &v, &at, &cache, owner)?;
            binds.push((from, v.target.clone(), v.read_only));
        }
        Ok(binds)
    }

    /// Unmounts the container's volumes; an error if one stays mounted (its folder must
    /// then not be deleted: that would delete the bucket's files).
    fn unmount_volumes(&self, id: &str) -> Result<()> {
        let dir = self.run_dir(id).join("volumes");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let at = e.path();
            rootfs::unmount(&at)?;
            for _ in 0..100 {
                if !volumes::is_mounted(&at) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if volumes::is_mounted(&at) {
                return Err(ContainerError::Runtime(format!(
                    "volume {} is still mounted",
                    at.display()
                )));
            }
        }
        Ok(())
    }

    /// Removes the node's unpacked copy or lazy root of an image (after `image rm`);
    /// refused while a container was made from it. The node's copies of files that no
    /// image in the store holds any more are deleted (`drop_unheld_copies`).
    pub async fn forget_image(&self, image_id: &str) -> Result<()> {
        if self.table().values().any(|c| c.image_id == image_id) {
            return Err(ContainerError::Conflict(format!(
                "image {image_id} is used by a container"
            )));
        }
        let _one = self.inner.unpacking.lock().await;
        let hex = image_id.trim_start_matches("sha256:");
        // Its lazy roots' processes end when the roots are unmounted.
        let lazy = self.inner.dir.join("lazy");
        let roots = [None, Some(USERNS_BASE)].map(|ns| self.lazy_mountpoint(image_id, ns));
        for root in &roots {
            rootfs::unmount(root)?;
        }
        for leftover in [
            roots[0].clone(),
            roots[1].clone(),
            lazy.join(format!("{hex}.tree.json")),
            lazy.join(format!("{hex}.reads")),
            lazy.join(format!("{hex}.log")),
        ] {
            let _ = std::fs::remove_dir(&leftover).or_else(|_| std::fs::remove_file(&leftover));
        }
        let dir = self.inner.dir.join("images").join(hex);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.drop_unheld_copies().await
    }

    /// Deletes the node's copies (`DATA/containers/files`) of files no image in the
    /// store holds. A copy deleted while another image is being pulled or imported is
    /// fetched again when read: they are a cache.
    async fn drop_unheld_copies(&self) -> Result<()> {
        let Some(lazy) = self.lazy() else {
            return Ok(());
        };
        let mut held = std::collections::HashSet::new();
        for image in self.inner.images.list().await? {
            let tree = self.inner.images.tree(&image).await?;
            held.extend(tree.entries().filter_map(|e| e.digest.clone()));
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in std::fs::read_dir(lazy.files.path(""))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Fetches in progress are `.<digest>.<n>.partial`.
            if name.starts_with('.') || held.contains(&name) {
                continue;
            }
            bytes += e.metadata().map_or(0, |m| m.len());
            std::fs::remove_file(e.path())?;
            files += 1;
        }
        if files > 0 {
            tracing::info!(
                files,
                bytes,
                "dropped the node's copies of files no image holds"
            );
        }
        Ok(())
    }

    /// The containers, newest first; exited ones too when `all`.
    pub fn list(&self, all: bool) -> Vec<ContainerInfo> {
        let mut v: Vec<ContainerInfo> = self
            .table()
            .values()
            .filter(|c| all || c.state == State::Running)
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        v
    }

    /// A container by name, id, or id prefix.
    pub fn get(&self, reference: &str) -> Result<ContainerInfo> {
        let t = self.table();
        if let Some(c) = t.values().find(|c| c.name.as_deref() == Some(reference)) {
            return Ok(c.clone());
        }
        let found: Vec<&ContainerInfo> = t
            .values()
            .filter(|c| !reference.is_empty() && c.id.starts_with(reference))
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ContainerError::NotFound(format!(
                "no container {reference:?} (`edgecloud ps -a` lists them)"
            ))),
            _ => Err(ContainerError::Invalid(format!(
                "{reference:?} names more than one container: give more of the id"
            ))),
        }
    }

    /// Runs `command` in a running container and waits for it: its exit code and
    /// output (standard output and error together; the first [`MAX_EXEC_OUTPUT`]
    /// bytes).
    pub async fn exec(
        &self,
        reference: &str,
        command: Vec<String>,
        env: Vec<String>,
    ) -> Result<Executed> {
        let c = self.get(reference)?;
        if c.state != State::Running {
            return Err(ContainerError::Conflict(format!(
                "container {} is not running: start a new one with `edgecloud run`",
                c.name.as_deref().unwrap_or(&c.id[..12])
            )));
        }
        if command.is_empty() {
            return Err(ContainerError::Invalid("give the command to run".into()));
        }
        let mut vars = std::collections::HashMap::new();
        for kv in env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => vars.insert(k.to_string(), v.to_string()),
                _ => {
                    return Err(ContainerError::Invalid(format!(
                        "environment {kv:?}: use K=V"
                    )));
                }
            };
        }
        let (state_root, setup) = (self.state_root(), self.setup());
        tokio::task::spawn_blocking(move || {
            let (read, write) = std::io::pipe()?;
            let pid = runtime::exec(&setup, &state_root, &c.id, command, vars, write.into())?;
            // The pipe ends when every holder of its write end has ended.
            let mut output = Vec::new();
            let mut truncated = false;
            let mut read = read;
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = std::io::Read::read(&mut read, &mut buf)?;
                if n == 0 {
                    break;
                }
                let room = MAX_EXEC_OUTPUT.saturating_sub(output.len());
                truncated |= n > room;
                output.extend_from_slice(&buf[..n.min(room)]);
            }
            let exit_code = runtime::wait(pid);
            Ok(Executed {
                exit_code,
                output: String::from_utf8_lossy(&output).into_owned(),
                truncated,
            })
        })
        .await
        .map_err(|e| ContainerError::Runtime(e.to_string()))?
    }

    /// The file holding the container's output.
    pub fn log_path(&self, reference: &str) -> Result<PathBuf> {
        Ok(self.run_dir(&self.get(reference)?.id).join("log"))
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, reference: &str, grace: Duration) -> Result<ContainerInfo> {
        let id = self.get(reference)?.id;
        if let Some(c) = self.table().get_mut(&id) {
            c.stopped_by_user = true;
        }
        let deadline = tokio::time::Instant::now() + grace;
        if self.get(&id)?.state == State::Running {
            self.signal(&id, libc::SIGTERM).await?;
        }
        while tokio::time::Instant::now() < deadline {
            if self.get(&id)?.state == State::Exited {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.get(&id)?.state == State::Running {
            self.signal(&id, libc::SIGKILL).await?;
        }
        let c = self.wait_exited(&id).await?;
        self.save(&c)?;
        Ok(c)
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let (root, id) = (self.state_root(), id.to_string());
        tokio::task::spawn_blocking(move || runtime::kill(&root, &id, signal))
            .await
            .map_err(|e| ContainerError::Runtime(e.to_string()))?
    }

    async fn wait_exited(&self, id: &str) -> Result<ContainerInfo> {
        for _ in 0..500 {
            let c = self.get(id)?;
            if c.state == State::Exited {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ContainerError::Runtime(format!(
            "container {id} did not end 10 s after SIGKILL"
        )))
    }

    /// Removes a container: its runtime state, overlay, upper directory and log. A
    /// running one only with `force` (it is killed).
    pub async fn remove(&self, reference: &str, force: bool) -> Result<ContainerInfo> {
        let c = self.get(reference)?;
        if c.state == State::Running {
            if !force {
                return Err(ContainerError::Conflict(format!(
                    "container {} is running: stop it first, or remove it with --force",
                    c.name.as_deref().unwrap_or(&c.id[..12])
                )));
            }
            self.stop(&c.id, Duration::ZERO).await?;
        }
        let this = self.clone();
        let id = c.id.clone();
        tokio::task::spawn_blocking(move || this.remove_now(&id))
            .await
            .map_err(|e| ContainerError::Runtime(e.to_string()))??;
        Ok(c)
    }

    /// Starts the proxies of the container's published ports.
    fn publish(&self, c: &ContainerInfo) -> Result<()> {
        let Some(slot) = c.network_slot else {
            return Ok(());
        };
        let to = network::addresses(slot).1;
        let mut tasks = Vec::new();
        for p in &c.spec.publish {
            match network::proxy(&self.inner.handle, network::parse_publish(p)?, to) {
                Ok(t) => tasks.push(t),
                Err(e) => {
                    tasks.iter().for_each(|t| t.abort());
                    return Err(e);
                }
            }
        }
        self.proxies_lock().insert(c.id.clone(), tasks);
        Ok(())
    }

    fn proxies_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>> {
        self.inner.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_now(&self, id: &str) -> Result<()> {
        for task in self.proxies_lock().remove(id).unwrap_or_default() {
            task.abort();
        }
        runtime::delete(&self.state_root(), id)?;
        runtime::close_v1_cgroups(id);
        let dir = self.run_dir(id);
        rootfs::unmount(&dir.join("rootfs"))?;
        self.unmount_volumes(id)?;
        self.table().remove(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

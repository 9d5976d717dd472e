//! An Edgecloud node, assembled from its settings: `Node::open(NodeConfig)` loads or
//! creates the node's keys, joins or founds its cluster, starts the replicated catalog,
//! the background work and every gateway; `Node::stop` ends them. `edgecloud serve`
//! only parses settings and prints what `Node::summary` says; tests and later services
//! start nodes the same way.
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | one settings type for flags, environment and the TOML file; every default |
//! | [`secrets`] | the keys kept in the data directory, and the rules for creating them |
//! | [`handover`] | the keys a member hands a node joining the cluster |
//! | [`gateway_tls`] | the certificate of the gateways and the admin API |
//! | `background` | ledger publishing, disk checks, the periodic scrub |
//! | [`metrics`] | Prometheus `/metrics`: requests of every gateway, the node's state |
//! | [`NodeError`] | why a node cannot start (rules: docs/errors.md) |

mod background;
mod error;
pub mod gateway_tls;
pub mod handover;
pub mod metrics;
pub mod secrets;
pub mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use archive::{Archive, ArchiveConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::NodeError;
pub use settings::{ConfigFile, LogFormat, NodeConfig, NodeSettings, defaults};

/// A running node.
pub struct Node {
    archive: Archive,
    auditor: Arc<archive::audit::Auditor>,
    replica: Arc<consensus::Replica>,
    summary: Summary,
    stop: watch::Sender<bool>,
    /// Servers, in the order they stop: admin first, node-to-node last.
    servers: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
    /// Background loops, aborted on stop.
    background: Vec<JoinHandle<()>>,
}

/// What a started node tells its operator (`edgecloud serve` prints it).
#[derive(Debug, Clone)]
pub struct Summary {
    /// The data directory.
    pub data: PathBuf,
    /// How many shard disks.
    pub disks: usize,
    /// The policy new buckets get.
    pub default_policy: String,
    /// The admin API's URL.
    pub admin_url: String,
    /// Where the admin token is.
    pub token_file: PathBuf,
    /// The S3 gateway's address.
    pub s3: SocketAddr,
    /// The WebDAV gateway's address.
    pub dav: SocketAddr,
    /// The FTP gateway's address.
    pub ftp: SocketAddr,
    /// The NFS gateway's address and the access key it acts as, when on.
    pub nfs: Option<(String, String)>,
    /// The boot server's address, with --boot-image.
    pub boot: Option<String>,
    /// S3, WebDAV, the admin API and FTP speak TLS.
    pub tls: bool,
    /// The S3 root access key id.
    pub access_key: String,
    /// Where its secret is.
    pub credentials_file: PathBuf,
    /// Entries in the ledger.
    pub ledger_entries: u64,
    /// The ledger's public key file.
    pub ledger_pub: PathBuf,
    /// This node's id.
    pub node_id: String,
    /// This node's site.
    pub site: String,
    /// Members of the cluster.
    pub nodes: usize,
    /// Sites of the cluster.
    pub sites: usize,
    /// This node's node-to-node address.
    pub rpc_addr: String,
    /// Where the cluster secret is.
    pub secret_file: PathBuf,
    /// Listeners reachable from other machines that speak in the clear, and what
    /// crosses them.
    pub cleartext: Vec<String>,
}

async fn bind(addr: &str, flag: &'static str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(cannot_listen(addr, flag))
}

fn cannot_listen(addr: &str, flag: &'static str) -> impl FnOnce(std::io::Error) -> NodeError {
    let addr = addr.to_string();
    move |source| NodeError::Listen { addr, flag, source }
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, NodeError> {
    l.local_addr()
        .map_err(|e| NodeError::startup("listener", e))
}

/// This node as it asks to be listed in the layout: its identity, site, node-to-node
/// address and disks weighted by capacity (in TB; equal weights when unknown).
fn node_info(
    key: &cluster::NodeKey,
    site: &str,
    rpc_addr: SocketAddr,
    disks: &[PathBuf],
) -> cluster::NodeInfo {
    cluster::NodeInfo {
        id: key.id(),
        seq: 0,
        public_key: key.public_hex(),
        site: site.to_string(),
        rpc_addr: rpc_addr.to_string(),
        disks: disks
            .iter()
            .map(|d| {
                let _ = std::fs::create_dir_all(d);
                let (total, _) = cluster::rpc::fs_space(d);
                cluster::DiskInfo {
                    weight: if total > 0 {
                        (total as f64 / 1e12).max(0.001)
                    } else {
                        1.0
                    },
                }
            })
            .collect(),
        state: cluster::NodeState::Active,
    }
}

/// Creates the data directory, private to this user: it holds secrets and plaintext.
/// Others may pass through it but not list it (mode 0711, as Docker's /var/lib/docker):
/// a container's root, an unprivileged user of the node in its own user namespace,
/// reaches its root file system in `containers/run/ID` (0710, its group only);
/// everything else in it is this user's alone (files 0600, folders 0700).
fn private_dir(data: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data).map_err(NodeError::file("create the data directory", data))?;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o711))
        .map_err(NodeError::file("make private to this user", data))
}

impl Node {
    /// Starts a node: keys, cluster membership (founding a cluster of one, or joining
    /// through `join`/`invite`), the archive, the replicated catalog, the ledger,
    /// background work and every gateway. Returns once all of them listen.
    pub async fn open(cfg: NodeConfig) -> Result<Node, NodeError> {
        let data = cfg.data.clone();
        private_dir(&data)?;
        // Whether this node ran before: then its keys must be there, never made anew.
        let has_data = data.join("catalog.redb").exists();
        // The secret files: in the data directory, or elsewhere (memory, on a booted
        // node), and then none of them on the node's disks.
        let keys_dir = cfg.secrets_dir.clone().unwrap_or_else(|| data.clone());
        if cfg.secrets_dir.is_some() {
            private_dir(&keys_dir)?;
        }
        let tls = match (&cfg.tls, cfg.tls_self_signed) {
            (Some(pair), _) => Some(pair.clone()),
            (None, true) => Some(gateway_tls::self_signed(&keys_dir.join("tls"))?),
            (None, false) => None,
        };
        let gateway_tls = match &tls {
            Some((cert, key)) => Some(gateway_tls::server_config(cert, key)?),
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut background = Vec::new();

        // The cluster: identity, secret, the node-to-node port, membership (a first
        // node founds a cluster of one; a joining one enters an existing one).
        let local_ip = cfg.listen.local_ip;
        let invite = cfg
            .invite
            .as_deref()
            .map(cluster::invite::Invitation::decode)
            .transpose()
            .map_err(|e| NodeError::startup("the invitation", e))?;
        let joining = cfg.join.is_some() || invite.is_some();
        let machine_invite = invite.as_ref().is_some_and(|i| i.machines);
        if cfg.secrets_dir.is_some()
            && (!joining
                || (cfg.secret_file.is_none()
                    && !machine_invite
                    && std::env::var_os("EDGECLOUD_CLUSTER_SECRET").is_none()))
        {
            return Err(NodeError::Secrets(
                "--secrets-dir keeps no key on this node's disks, so it fetches them from a member at every start: give --join HOST:PORT and the cluster secret (--secret-file or EDGECLOUD_CLUSTER_SECRET), or a machine invitation (`edgecloud cluster invite --machines`; a plain one works once only), or leave --secrets-dir out".into(),
            ));
        }
        let (secret, redeemed_at) = secrets::cluster_secret(
            cfg.secret_file.as_deref(),
            &keys_dir,
            joining,
            invite.as_ref(),
            local_ip,
        )
        .await?;
        // Joined through --join, else the member that just took the invitation (maybe
        // not the one that issued it, if that one is down), else the issuing one.
        let join = cfg
            .join
            .clone()
            .or(redeemed_at)
            .or_else(|| invite.as_ref().map(|i| i.addr.clone()));
        // Kept in the data directory, or (secrets elsewhere) derived from the cluster
        // secret and the data directory's salt: the same data is the same node.
        let (node_key, cosigner_seed) = match cfg.secrets_dir {
            None => {
                let key = cluster::NodeKey::load_or_create(&data.join(secrets::NODE_KEY))
                    .map_err(|e| NodeError::startup("cannot load or create the node key", e))?;
                (key, None)
            }
            Some(_) => {
                let (node, cosigner) = secrets::derived_seeds(&secret, &data)?;
                (cluster::NodeKey::from_seed(node), Some(cosigner))
            }
        };
        let node_tls = cluster::NodeTls::new(&secret, &node_key)
            .map_err(|e| NodeError::startup("cannot make the node's certificate", e))?;
        let client = cluster::Client::bound(&node_tls, local_ip)
            .map_err(|e| NodeError::startup("cannot make the node-to-node client", e))?;
        let rpc_listener = bind(&cfg.listen.rpc, "rpc-listen").await?;
        let rpc_addr = local_addr(&rpc_listener)?;
        let membership = cluster::Membership::start(
            cluster::StartOptions {
                data_dir: data.clone(),
                me: node_info(&node_key, &cfg.site, rpc_addr, &cfg.disks),
                join: join.clone(),
                down_after: cfg.down_after,
            },
            client.clone(),
        )
        .await
        .map_err(|e| NodeError::startup("cannot join or found the cluster", e))?;
        secret
            .save_if_absent(&keys_dir.join(secrets::CLUSTER_SECRET))
            .map_err(|e| NodeError::startup("cannot keep the cluster secret", e))?;

        // A node joining for the first time takes the cluster's master key, S3 root
        // key and ledger key, so that its gateways read every bucket, accept the same
        // root key, and publish the same log.
        if let Some(addr) = &join
            && !cfg.master_key_file.exists()
        {
            let keys = handover::fetch(&client, addr, &membership).await?;
            secrets::keep_master_key(&cfg.master_key_file, &keys.master_key)?;
            secrets::keep_s3_credentials(&keys_dir, &keys.s3_access_key, &keys.s3_secret)?;
            secrets::keep_ledger_keys(&keys_dir, &keys.ledger_key, &keys.ledger_pub)?;
        }
        let master = secrets::master_key(&cfg.master_key_file, has_data)?;
        let master_hex = codec::hex(master.as_bytes());
        let mut archive_cfg = ArchiveConfig::new(data.clone(), cfg.disks.clone(), master);
        let s = &cfg.storage;
        archive_cfg.default_policy = s.policy;
        archive_cfg.chunk = archive::ChunkParams::from_avg(s.chunk_avg);
        archive_cfg.compression = s.compression;
        archive_cfg.inline_threshold = s.inline_threshold;
        archive_cfg.gc_grace = s.gc_grace;
        archive_cfg.max_object_bytes = s.max_object_bytes;
        archive_cfg.history_retention = s.history;
        let archive = Archive::open(archive_cfg)?;
        archive.attach_cluster(membership.clone());
        let (access, s3_secret) = secrets::s3_credentials(&keys_dir)?;

        // The catalog, replicated with Raft: the node-to-node server first (others
        // must reach this replica), then the replica; a founding node starts alone.
        let replica = consensus::Replica::start(consensus::ReplicaOptions {
            data_dir: data.clone(),
            me: consensus::Member {
                node: membership.me().0.clone(),
                addr: rpc_addr.to_string(),
                site: membership
                    .layout()
                    .node(membership.me())
                    .map(|n| n.site.clone())
                    .unwrap_or_default(),
            },
            catalog: archive.catalog().clone(),
            client: client.clone(),
            max_message_bytes: consensus::MAX_MESSAGE_BYTES,
        })
        .await
        .map_err(|e| NodeError::startup("cannot start the replicated catalog", e))?;
        let authorize: consensus::network::Authorize = {
            let m = membership.clone();
            Arc::new(move |id: &cluster::NodeId| m.authorize(id))
        };
        let (ledger_key, ledger_pub) = secrets::ledger_keys(&keys_dir, has_data)?;
        let cosigner = secrets::cosigner_key(&keys_dir, membership.me(), cosigner_seed)?;
        let auditor = Arc::new(
            archive::audit::Auditor::open(
                &archive,
                &data.join("ledger"),
                &ledger_key,
                &ledger_pub,
                Some(&cosigner),
            )
            .map_err(|e| NodeError::startup("cannot open the ledger", e))?,
        );
        let shared = handover::SharedKeys {
            master_key: master_hex,
            s3_access_key: access.clone(),
            s3_secret: s3_secret.clone(),
            ledger_key,
            ledger_pub,
        };
        let inviter = Arc::new(admin::invites::Inviter {
            secret: secret.clone(),
            node_key: node_key.public(),
            waiting: Default::default(),
        });
        // Jobs run tasks for this node's admin API and for other nodes (next to the data).
        let jobs_dir = data.join("jobs");
        let jobs = jobs::Jobs::with_records(
            archive.clone(),
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            jobs_dir.clone(),
        )
        .map_err(|source| NodeError::File {
            action: "keep job records in",
            path: jobs_dir,
            source,
        })?;
        let image_store = images::ImageStore::new(archive.clone());
        // Containers need root and overlayfs; a node without them still serves the rest.
        let containers = match containers::Containers::open(&data, image_store.clone()) {
            Ok(c) => {
                if let Some(program) = &cfg.helper_program {
                    c.set_up_by(program.clone());
                    match c.enable_lazy_roots(program.clone()) {
                        Ok(answering) => background.push(answering),
                        Err(e) => {
                            tracing::warn!("lazy image roots are off (images are unpacked): {e}")
                        }
                    }
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!("containers are off on this node: {e}");
                None
            }
        };
        // Heartbeats report what containers and job tasks hold of this node, for the
        // schedulers of every node (`cluster::capacity`). Weak handles: the membership
        // lives as long as the archive, which the services hold.
        {
            let containers = containers.as_ref().map(|c| c.downgrade());
            let jobs = Arc::downgrade(&jobs);
            membership.count_load(Arc::new(move || {
                let mut load = cluster::capacity::Load {
                    tasks: jobs.upgrade().map_or(0, |j| j.tasks_running_here()),
                    ..Default::default()
                };
                let running = containers.iter().filter_map(|c| c.upgrade());
                for c in running.flat_map(|c| c.list(false)) {
                    load.containers += 1;
                    load.cpus_reserved += c.spec.cpus.unwrap_or(cluster::capacity::DEFAULT_CPUS);
                    load.memory_reserved += c.spec.memory.unwrap_or(0);
                }
                load
            }));
        }
        let rpc_task = cluster::rpc::serve(
            rpc_listener,
            cluster::rpc::router(cluster::rpc::RpcState {
                membership: membership.clone(),
                store: archive.store(),
            })
            .merge(consensus::network::routes(replica.clone(), authorize))
            .merge(handover::route(shared, membership.clone()))
            .merge(admin::peers::routes(
                archive.clone(),
                auditor.clone(),
                jobs.clone(),
                containers.clone(),
                membership.clone(),
            )),
            admin::invites::guest_routes(archive.clone(), inviter.clone()),
            &node_tls,
            stop_rx.clone(),
        );
        let founding = membership.layout().catalog_node == *membership.me();
        if founding {
            replica
                .initialize_alone()
                .await
                .map_err(|e| NodeError::startup("cannot start the catalog's Raft group", e))?;
        }
        membership.use_store(Arc::new(consensus::replicated_layout::ReplicatedLayout {
            replica: replica.clone(),
            catalog: archive.catalog().clone(),
        }));
        if founding
            && archive
                .catalog()
                .cluster_record("layout")
                .map_err(archive::ArchiveError::from)?
                .is_none()
        {
            // The founder's first start: the layout enters the replicated catalog.
            membership
                .change(|_| Ok(()))
                .await
                .map_err(|e| NodeError::startup("cannot record the first layout", e))?;
        }
        background.push(tokio::spawn(consensus::replicated_layout::follow_layout(
            archive.catalog().clone(),
            membership.clone(),
        )));
        background.push(tokio::spawn(consensus::replicated_layout::reconcile(
            replica.clone(),
            membership.clone(),
        )));
        background.push(tokio::spawn(membership.clone().monitor()));
        background.push(tokio::spawn(
            archive
                .clone()
                .repair_worker(Some(cfg.repair_bytes_per_sec)),
        ));
        background.push(tokio::spawn(cluster::scrubber::run(
            archive.store(),
            membership.clone(),
            cfg.scrub_interval,
            cfg.scrub_bytes_per_sec,
        )));
        // Lifecycle passes run a few times a (possibly shortened) day, at least hourly.
        let every = (cfg.lifecycle.day / 8).min(std::time::Duration::from_secs(3600));
        background.push(tokio::spawn(
            archive.clone().lifecycle_worker(cfg.lifecycle, every),
        ));
        membership.request_repair(); // a first pass: shards placed on an older layout

        // The gateways and the admin API.
        let token = admin::load_or_create_token(&keys_dir)
            .map_err(NodeError::file("write the admin token in", &data))?;
        let admin_listener = bind(&cfg.listen.admin, "admin-listen").await?;
        let admin_url = gateway_tls::publish_admin_url(
            &data,
            local_addr(&admin_listener)?,
            tls.as_ref().map(|(cert, _)| cert.as_path()),
        )?;
        let s3_listener = bind(&cfg.listen.s3, "s3-listen").await?;
        let dav_listener = bind(&cfg.listen.dav, "dav-listen").await?;
        if cfg.nfs_key.is_some() {
            nfs::check_listen(&cfg.listen.nfs)
                .map_err(cannot_listen(&cfg.listen.nfs, "nfs-listen"))?;
        }
        let ftp_listener = bind(&cfg.listen.ftp, "ftp-listen").await?;
        // The boot server: its image is checked now, so a wrong folder fails the start.
        let boot = match &cfg.boot_image {
            Some(dir) => {
                let manifest = netboot::boot_server::load(dir)
                    .map_err(|e| NodeError::Settings(format!("--boot-image: {e}")))?;
                let key = match &cfg.boot_key {
                    Some(file) => {
                        let text = std::fs::read_to_string(file).map_err(|e| {
                            NodeError::Settings(format!("--boot-key {}: {e}", file.display()))
                        })?;
                        Some(netboot::signing::key_from(&text).map_err(|e| {
                            NodeError::Settings(format!("--boot-key {}: {e}", file.display()))
                        })?)
                    }
                    None => None,
                };
                let app = netboot::boot_server::router(
                    dir.clone(),
                    &manifest,
                    &cfg.boot_args,
                    key.as_ref(),
                )
                .map_err(|e| NodeError::Settings(format!("--boot-image: {e}")))?;
                // What machines will boot is in the audit log.
                let served = ledger::record::Change::BootImageServed {
                    image_sha256: manifest.image_sha256.clone(),
                    kernel_version: manifest.kernel_version.clone(),
                    kernel_sha256: manifest.kernel_sha256.clone(),
                    initramfs_sha256: manifest.initramfs_sha256.clone(),
                };
                archive
                    .record(served, None)
                    .await
                    .map_err(|e| NodeError::Settings(format!("--boot-image: recording it: {e}")))?;
                Some((bind(&cfg.listen.boot, "boot-listen").await?, app))
            }
            None => None,
        };
        if let (Some(dir), Some(addr)) = (&cfg.boot_image, &cfg.boot_tftp_listen) {
            let socket = std::net::UdpSocket::bind(addr.as_str())
                .map_err(|e| NodeError::Settings(format!("--boot-tftp-listen {addr}: {e}")))?;
            let dir = dir.clone();
            background.push(tokio::spawn(async move {
                if let Err(e) = netboot::boot_server::serve_tftp(dir, socket).await {
                    tracing::error!("the TFTP boot server stopped: {e}");
                }
            }));
        }
        if let Some(image) = &cfg.booted_image {
            let booted = ledger::record::Change::NodeBooted {
                node_id: membership.me().to_string(),
                image_sha256: image.clone(),
            };
            // Just after joining, the catalog may not take a change yet (no leader
            // known, a replica catching up): tried again for a minute, not lost. A
            // try whose answer was lost (the leader replaced meanwhile) may still have
            // been committed: the log is looked at before the next, so that a boot is
            // recorded once.
            let (archive, auditor) = (archive.clone(), auditor.clone());
            background.push(tokio::spawn(async move {
                let from = auditor.size();
                // The record's time is its proposer's (this node's) clock.
                let since_ns = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                for attempt in 1..=60 {
                    match archive.record(booted.clone(), None).await {
                        Ok(_) => return,
                        Err(e) if attempt == 60 => {
                            tracing::warn!("recording the image this node booted: {e}")
                        }
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            let (a, b) = (auditor.clone(), booted.clone());
                            let found = tokio::task::spawn_blocking(move || {
                                recorded_since(&a, from, since_ns, &b)
                            });
                            if found.await.unwrap_or(false) {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        background.push(background::publish_ledger(
            auditor.clone(),
            client.clone(),
            replica.clone(),
        ));
        background.extend(background::check_and_scrub(
            archive.clone(),
            cfg.scrub_interval,
            cfg.scrub_bytes_per_sec,
        ));
        let layout = membership.layout();
        let me = layout.node(membership.me());
        let summary = Summary {
            data: data.clone(),
            disks: cfg.disks.len(),
            default_policy: archive.default_policy().to_string(),
            admin_url,
            token_file: keys_dir.join(admin::TOKEN_FILE),
            s3: local_addr(&s3_listener)?,
            dav: local_addr(&dav_listener)?,
            ftp: local_addr(&ftp_listener)?,
            nfs: cfg.nfs_key.clone().map(|k| (cfg.listen.nfs.clone(), k)),
            boot: match &boot {
                Some((l, _)) => Some(local_addr(l)?.to_string()),
                None => None,
            },
            tls: tls.is_some(),
            access_key: access.clone(),
            credentials_file: keys_dir.join(secrets::S3_CREDENTIALS),
            ledger_entries: auditor.size(),
            ledger_pub: keys_dir.join(secrets::LEDGER_PUB),
            node_id: membership.me().to_string(),
            site: me.map(|n| n.site.clone()).unwrap_or_default(),
            nodes: layout.members().count(),
            sites: layout.sites().len(),
            rpc_addr: me.map(|n| n.rpc_addr.clone()).unwrap_or_default(),
            secret_file: keys_dir.join(secrets::CLUSTER_SECRET),
            cleartext: cleartext(&[
                (
                    "S3",
                    &s3_listener,
                    "SigV4 signs requests; data is in the clear",
                ),
                (
                    "WebDAV",
                    &dav_listener,
                    "Basic auth sends secrets in the clear",
                ),
                (
                    "FTP",
                    &ftp_listener,
                    "passwords (secrets) cross in the clear",
                ),
                (
                    "admin",
                    &admin_listener,
                    "the admin token crosses in the clear",
                ),
            ])
            .into_iter()
            .filter(|_| tls.is_none())
            .collect(),
        };

        // Container volumes mount the node's buckets through its own WebDAV gateway.
        if let Some(c) = &containers {
            if tls.is_none() {
                let mut dav = summary.dav;
                if dav.ip().is_unspecified() {
                    dav.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                c.set_volume_source(containers::volumes::VolumeSource {
                    url: format!("http://{dav}"),
                    access_key: access.clone(),
                    secret: s3_secret.clone(),
                });
            } else {
                tracing::info!("container volumes are off: they do not mount over TLS yet");
            }
        }
        let files = files::Files::new(
            archive.clone(),
            files::RootKey {
                access_key: access.clone(),
                secret: s3_secret.clone(),
            },
        );
        let s3_app = s3::router(
            archive.clone(),
            s3::GatewayConfig {
                root: s3::RootKey {
                    access_key: access,
                    secret: s3_secret,
                },
                domain: cfg.domain.clone(),
                lifecycle_day: cfg.lifecycle.day,
            },
        )
        .map_err(|e| NodeError::startup("cannot build the S3 gateway", e))?;
        let requests = metrics::RequestMetrics::default();
        let scrape = axum::Router::new()
            .route(
                "/openapi.yaml",
                axum::routing::get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
                        admin::OPENAPI,
                    )
                }),
            )
            .route("/metrics", axum::routing::get(metrics::scrape))
            .with_state(metrics::NodeState {
                requests: requests.clone(),
                archive: archive.clone(),
                replica: replica.clone(),
                auditor: auditor.clone(),
            });
        let admin_app = requests
            .around(
                "admin",
                admin::router(admin::AdminState {
                    archive: archive.clone(),
                    token,
                    auditor: Some(auditor.clone()),
                    public_ledger: cfg.public_ledger,
                    inviter: Some(inviter),
                    jobs: Some(jobs.clone()),
                    images: Some(image_store.clone()),
                    containers: containers.clone(),
                    sessions: Default::default(),
                    secure_cookies: tls.is_some(),
                }),
            )
            .merge(scrape);
        let s3_app = requests.around("S3", s3_app);
        let dav_app = requests.around("WebDAV", dav::router(files.clone()));
        let listener = |what, tcp| cluster::server::Listener {
            what,
            tcp,
            tls: gateway_tls.clone(),
        };
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.changed().await;
        };
        let mut servers = vec![
            (
                "admin",
                cluster::server::serve_app(
                    listener("admin", admin_listener),
                    admin_app,
                    stop_rx.clone(),
                ),
            ),
            (
                "S3",
                cluster::server::serve_app(listener("S3", s3_listener), s3_app, stop_rx.clone()),
            ),
            (
                "WebDAV",
                cluster::server::serve_app(
                    listener("WebDAV", dav_listener),
                    dav_app,
                    stop_rx.clone(),
                ),
            ),
        ];
        if let Some(key) = &cfg.nfs_key {
            let session = files.session_after_login(key).map_err(|_| {
                NodeError::Settings(format!(
                    "--nfs-key {key:?}: no such access key (see `edgecloud key list`)"
                ))
            })?;
            let (addr, staging, stop) = (
                cfg.listen.nfs.clone(),
                data.join("nfs-staging"),
                stopped(stop_rx.clone()),
            );
            let on_op = requests.nfs_events();
            servers.push((
                "NFS",
                tokio::spawn(async move {
                    nfs::serve(session, &addr, staging, Some(on_op), stop).await
                }),
            ));
        }
        let ftp_cfg = ftp::FtpConfig {
            passive_ports: cfg.ftp_passive_ports.clone(),
            tls: tls.clone(),
            on_op: Some(requests.ftp_events()),
        };
        servers.push((
            "FTP",
            tokio::spawn(ftp::serve(
                files,
                ftp_listener,
                ftp_cfg,
                stopped(stop_rx.clone()),
            )),
        ));
        servers.push(("node-to-node", rpc_task));
        if let Some((tcp, app)) = boot {
            // Plain HTTP: iPXE fetches over it; the image holds no secrets.
            let plain = cluster::server::Listener {
                what: "boot",
                tcp,
                tls: None,
            };
            let route = move |_: Option<&rustls::ServerConnection>, addr| {
                Some(
                    app.clone()
                        .layer(axum::Extension(netboot::boot_server::Machine(addr))),
                )
            };
            servers.push((
                "boot",
                cluster::server::serve(plain, route, stop_rx.clone()),
            ));
        }
        Ok(Node {
            archive,
            auditor,
            replica,
            summary,
            stop,
            servers,
            background,
        })
    }

    /// What the node serves and where its secrets are.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The node's archive.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Stops the node: servers finish the requests in flight, background work ends,
    /// and the ledger's tiles reach the disk.
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (what, task) in self.servers {
            let outcome = match task.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            first_error.get_or_insert(NodeError::Serving {
                what,
                reason: outcome,
            });
        }
        // Background work and Raft end too, so that every handle on the catalog and
        // the disks is gone when this returns (the same process may open them again).
        for task in &self.background {
            task.abort();
        }
        for task in self.background {
            let _ = task.await;
        }
        if let Err(e) = self.replica.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not stop cleanly");
        }
        let auditor = self.auditor;
        match tokio::task::spawn_blocking(move || auditor.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "could not sync the ledger's tiles; the next start writes them again"
            ),
            Err(e) => tracing::warn!(error = %e, "the ledger's last sync failed"),
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Names the listeners reachable from other machines (not on loopback), with what
/// crosses them in the clear.
fn cleartext(listeners: &[(&str, &TcpListener, &str)]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|(what, l, risk)| {
            let addr = l.local_addr().ok()?;
            (!addr.ip().is_loopback()).then(|| {
                format!(
                    "{what} on {addr} is not encrypted ({risk}); give --tls-cert and --tls-key, or --tls-self-signed"
                )
            })
        })
        .collect()
}

/// Whether the replicated audit log holds `change`, made by this node at `since_ns` or
/// later, at an index from `from` on.
fn recorded_since(
    auditor: &archive::audit::Auditor,
    from: u64,
    since_ns: u64,
    change: &ledger::record::Change,
) -> bool {
    (from..)
        .map_while(|i| auditor.entry(i).ok())
        .filter_map(|b| ledger::record::Record::from_bytes(&b).ok())
        .any(|r| r.time_ns >= since_ns && r.actor.is_none() && &r.change == change)
}

//! `edgecloud serve`: opens the archive, serves the admin API, runs the background disk
//! check and scrubber, and shuts down gracefully on Ctrl-C / SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{FileConfig, parse_duration, parse_size};
use anyhow::Context;
use archive::{Archive, ArchiveConfig, DataKey, Redundancy, ScrubOptions};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A shard disk folder; repeat for several disks [default: DATA/disk0]
    #[arg(
        long = "disk",
        env = "EDGECLOUD_DISKS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub disks: Vec<PathBuf>,
    /// Address of the S3 API [default: 0.0.0.0:9400]
    #[arg(long, env = "EDGECLOUD_S3_LISTEN", value_name = "ADDR")]
    pub s3_listen: Option<String>,
    /// Address of the FTP gateway [default: 0.0.0.0:9421]
    #[arg(long, env = "EDGECLOUD_FTP_LISTEN", value_name = "ADDR")]
    pub ftp_listen: Option<String>,
    /// Ports for FTP passive-mode data connections [default: 49152-65535]
    #[arg(long, env = "EDGECLOUD_FTP_PASSIVE_PORTS", value_name = "FIRST-LAST")]
    pub ftp_passive_ports: Option<String>,
    /// Certificate chain (PEM): S3 and WebDAV then answer HTTPS only, and FTP requires
    /// AUTH TLS before login; with --tls-key
    #[arg(
        long,
        env = "EDGECLOUD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(
        long,
        env = "EDGECLOUD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Without --tls-cert: make a self-signed certificate (DATA/tls/cert.pem, key.pem)
    /// on first start and serve TLS with it, as --tls-cert would
    #[arg(long, env = "EDGECLOUD_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,
    /// Serve NFS v3 as this access key (NFS has no passwords: every NFS client gets this
    /// key's permissions, so bind --nfs-listen to a trusted network) [default: NFS off]
    #[arg(long, env = "EDGECLOUD_NFS_KEY", value_name = "ACCESS_KEY")]
    pub nfs_key: Option<String>,
    /// Address of the NFS v3 gateway, when --nfs-key is given [default: 0.0.0.0:9402]
    #[arg(long, env = "EDGECLOUD_NFS_LISTEN", value_name = "ADDR")]
    pub nfs_listen: Option<String>,
    /// Address of the WebDAV gateway [default: 0.0.0.0:9401]
    #[arg(long, env = "EDGECLOUD_DAV_LISTEN", value_name = "ADDR")]
    pub dav_listen: Option<String>,
    /// Base domain for virtual-hosted-style S3 requests (http://BUCKET.DOMAIN/KEY);
    /// path style (http://HOST/BUCKET/KEY) always works [default: none]
    #[arg(long, env = "EDGECLOUD_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Address of the admin API [default: 127.0.0.1:9410]
    #[arg(long, env = "EDGECLOUD_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Redundancy of new buckets: none, replicate:N or ec:K+M [default: from the disk count]
    #[arg(long, env = "EDGECLOUD_POLICY")]
    pub policy: Option<String>,
    /// Average chunk size for new buckets; min is a quarter, max four times [default: 64KiB]
    #[arg(long, env = "EDGECLOUD_CHUNK_AVG", value_name = "SIZE")]
    pub chunk_avg: Option<String>,
    /// zstd level for new buckets, 0 = off [default: 3]
    #[arg(long, env = "EDGECLOUD_COMPRESSION")]
    pub compression: Option<i32>,
    /// Objects smaller than this are kept in the catalog [default: 64KiB]
    #[arg(long, env = "EDGECLOUD_INLINE_THRESHOLD", value_name = "SIZE")]
    pub inline_threshold: Option<String>,
    /// File holding the master key (64 hex chars); keep it off the shard disks
    /// [default: DATA/master.key, created on first start]
    #[arg(long, env = "EDGECLOUD_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// How often the background scrubber verifies every shard [default: 24h]
    #[arg(long, env = "EDGECLOUD_SCRUB_INTERVAL", value_name = "DURATION")]
    pub scrub_interval: Option<String>,
    /// Serve the audit log's checkpoint, public key, tiles and proofs on the admin port
    /// without the admin token, for outside monitors and auditors. Its entries name
    /// buckets, keys and access key ids [default: off]
    #[arg(long, env = "EDGECLOUD_PUBLIC_LEDGER")]
    pub public_ledger: bool,
    /// Background scrub read rate in MB/s [default: 50]
    #[arg(long, env = "EDGECLOUD_SCRUB_RATE", value_name = "MB/S")]
    pub scrub_rate: Option<u64>,
    /// Unreferenced data is deleted only after this long [default: 1h]
    #[arg(long, env = "EDGECLOUD_GC_GRACE", value_name = "DURATION")]
    pub gc_grace: Option<String>,
    /// The largest object any gateway may store (checked while it streams: FTP, NFS and
    /// chunked uploads send no length up front) [default: 5TiB]
    #[arg(long, env = "EDGECLOUD_MAX_OBJECT_SIZE", value_name = "SIZE")]
    pub max_object_size: Option<String>,
    /// How long overwritten data of unversioned buckets stays readable as-of [default: 30d]
    #[arg(long, env = "EDGECLOUD_HISTORY", value_name = "DURATION")]
    pub history: Option<String>,
    /// Put every port of this node on one address (S3 ADDR:9400, WebDAV :9401, NFS :9402,
    /// admin :9410, node-to-node :9420, FTP :9421); the --*-listen flags still win
    /// [default: 0.0.0.0, admin 127.0.0.1]
    #[arg(long, env = "EDGECLOUD_BIND", value_name = "ADDR")]
    pub bind: Option<String>,
    /// Address of the node-to-node port (mutual TLS) [default: BIND:9420]
    #[arg(long, env = "EDGECLOUD_RPC_LISTEN", value_name = "ADDR")]
    pub rpc_listen: Option<String>,
    /// The site (building, room, datacenter) this node is in; shards of a chunk are
    /// spread so that losing one whole site loses nothing [default: main]
    #[arg(long, env = "EDGECLOUD_SITE", value_name = "NAME")]
    pub site: Option<String>,
    /// Join the cluster of the node at HOST:PORT (its node-to-node port, 9420), with the
    /// cluster's secret (--secret-file or EDGECLOUD_CLUSTER_SECRET)
    #[arg(long, env = "EDGECLOUD_JOIN", value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// File holding the cluster secret; EDGECLOUD_CLUSTER_SECRET may hold the secret itself
    /// [default: DATA/cluster.secret, created by the first node]
    #[arg(long, env = "EDGECLOUD_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Join with a one-time invitation token (`edgecloud cluster invite` prints one)
    /// instead of the secret: it names the node to join (--join overrides it) and is
    /// traded for the cluster secret, which is kept in DATA/cluster.secret
    #[arg(long, env = "EDGECLOUD_INVITE", value_name = "TOKEN")]
    pub invite: Option<String>,
    /// A node that misses heartbeats this long is declared down and its shards are
    /// rebuilt on the others [default: 5m]
    #[arg(long, env = "EDGECLOUD_DOWN_AFTER", value_name = "DURATION")]
    pub down_after: Option<String>,
}

const NODE_KEY: &str = "node.key";
const CLUSTER_SECRET: &str = "cluster.secret";

/// The cluster secret: EDGECLOUD_CLUSTER_SECRET, else --secret-file, else the node's
/// own DATA/cluster.secret (created on the first node). A node joining for the first
/// time without one trades its invitation for it (and keeps it there), or must be given it.
async fn cluster_secret(
    file: Option<&Path>,
    data: &Path,
    joining: bool,
    invite: Option<&cluster::invite::Invitation>,
    local_ip: Option<std::net::IpAddr>,
) -> anyhow::Result<cluster::ClusterSecret> {
    if let Ok(s) = std::env::var("EDGECLOUD_CLUSTER_SECRET") {
        return cluster::ClusterSecret::new(s).context("EDGECLOUD_CLUSTER_SECRET");
    }
    if let Some(f) = file {
        let bytes = std::fs::read(f)
            .with_context(|| format!("cannot read the cluster secret {}", f.display()))?;
        return cluster::ClusterSecret::new(bytes)
            .with_context(|| format!("the cluster secret in {}", f.display()));
    }
    let kept = data.join(CLUSTER_SECRET);
    // A restart (even with the same --invite) finds the secret kept at the first start.
    if !kept.exists() {
        if let Some(inv) = invite {
            let secret = cluster::invite::redeem(inv, local_ip).await?;
            cluster::identity::create_private(&kept, &format!("{}\n", secret.reveal()))?;
            eprintln!("invitation accepted by {}: joining", inv.addr);
            return Ok(secret);
        }
        if joining {
            anyhow::bail!(
                "--join needs the cluster's secret: run `edgecloud cluster invite` on a member and pass --invite TOKEN, or copy DATA/{CLUSTER_SECRET} from the first node and pass --secret-file FILE (or set EDGECLOUD_CLUSTER_SECRET)"
            );
        }
    }
    cluster::ClusterSecret::load_or_create(&kept)
}

/// Listen address for one port: the flag or file value, else BIND:PORT.
fn listen_addr(
    given: Option<String>,
    bind: Option<&str>,
    fallback_host: &str,
    port: u16,
) -> String {
    given.unwrap_or_else(|| format!("{}:{port}", bind.unwrap_or(fallback_host)))
}

const S3_CREDENTIALS: &str = "s3-credentials";

/// The S3 access key: EDGECLOUD_ACCESS_KEY/EDGECLOUD_SECRET_KEY, else DATA/s3-credentials
/// (`ACCESS:SECRET`, created with random values on first start).
fn s3_credentials(data: &Path) -> anyhow::Result<(String, String)> {
    if let (Ok(a), Ok(s)) = (
        std::env::var("EDGECLOUD_ACCESS_KEY"),
        std::env::var("EDGECLOUD_SECRET_KEY"),
    ) {
        return Ok((a, s));
    }
    let path = data.join(S3_CREDENTIALS);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let (a, s) = text
            .trim()
            .split_once(':')
            .with_context(|| format!("{} must hold ACCESS:SECRET", path.display()))?;
        return Ok((a.to_string(), s.to_string()));
    }
    let (access, secret) = archive::generate_key_pair();
    cluster::identity::create_private(&path, &format!("{access}:{secret}"))?;
    Ok((access, secret))
}

/// The master key, created on a node's first start. A node that already holds data
/// refuses to start without its key: a new one would start a node on which every
/// bucket's data is unreadable.
fn load_or_create_master_key(path: &Path, has_data: bool) -> anyhow::Result<DataKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let t = text.trim();
        anyhow::ensure!(
            t.len() == 64,
            "master key file {} must hold 64 hex characters",
            path.display()
        );
        let k: [u8; 32] = codec::unhex(t)
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("master key file {} is not hex", path.display()))?;
        return Ok(DataKey::from_bytes(k));
    }
    anyhow::ensure!(
        !has_data,
        "the master key file {} is missing, but this node already holds data: without \
         its key no bucket can be read. Restore the file from your backup (or give it with \
         --master-key-file); do not start the node without it",
        path.display()
    );
    let key = DataKey::generate();
    cluster::identity::create_private(path, &codec::hex(key.as_bytes()))
        .with_context(|| format!("cannot create master key file {}", path.display()))?;
    eprintln!(
        "created master key {} (back it up: without it no bucket can be read)",
        path.display()
    );
    Ok(key)
}

pub async fn run(args: ServeArgs, file: &FileConfig, data: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGECLOUD_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Everything the node writes (catalog, Raft log and snapshots, keys, staging) is
    // for its own user only: the data directory holds secrets and plaintext.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    raise_open_files_limit();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create data directory {}", data.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private to this user", data.display()))?;
    }
    // Whether this node ran before: then its keys must be there, never made anew.
    let has_data = data.join("catalog.redb").exists();
    let disks = if !args.disks.is_empty() {
        args.disks
    } else if let Some(d) = file.disk.clone() {
        d
    } else {
        vec![data.join("disk0")]
    };
    let scrub_interval = parse_duration(
        &args
            .scrub_interval
            .or(file.scrub_interval.clone())
            .unwrap_or_else(|| "24h".into()),
    )?;
    let scrub_rate = args.scrub_rate.or(file.scrub_rate).unwrap_or(50);
    let bind = args.bind.clone().or(file.bind.clone());
    let bind = bind.as_deref();
    let listen = listen_addr(
        args.admin_listen.or(file.admin_listen.clone()),
        bind,
        "127.0.0.1",
        9410,
    );
    let domain = args.domain.or(file.domain.clone());
    let s3_listen = listen_addr(
        args.s3_listen.or(file.s3_listen.clone()),
        bind,
        "0.0.0.0",
        9400,
    );
    let dav_listen = listen_addr(
        args.dav_listen.or(file.dav_listen.clone()),
        bind,
        "0.0.0.0",
        9401,
    );
    let ftp_listen = listen_addr(
        args.ftp_listen.or(file.ftp_listen.clone()),
        bind,
        "0.0.0.0",
        9421,
    );
    let ftp = ftp::FtpConfig {
        passive_ports: parse_port_range(
            &args
                .ftp_passive_ports
                .or(file.ftp_passive_ports.clone())
                .unwrap_or_else(|| "49152-65535".into()),
        )?,
        tls: match (
            args.tls_cert.or(file.tls_cert.clone()),
            args.tls_key.or(file.tls_key.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) if args.tls_self_signed || file.tls_self_signed.unwrap_or(false) => {
                Some(crate::tls::self_signed(&data.join("tls"))?)
            }
            (None, None) => None,
            _ => anyhow::bail!("give both tls-cert and tls-key, or neither"),
        },
    };

    // The cluster: identity, secret, the node-to-node port, membership (a first node
    // founds a cluster of one; --join enters an existing one).
    let rpc_listen = listen_addr(
        args.rpc_listen.or(file.rpc_listen.clone()),
        bind,
        "0.0.0.0",
        9420,
    );
    let mut join = args.join.or(file.join.clone());
    let node_key = cluster::NodeKey::load_or_create(&data.join(NODE_KEY))?;
    // With --bind, connections to other nodes leave from that address too.
    let local_ip = bind.and_then(|b| b.parse::<std::net::IpAddr>().ok());
    let invite = args
        .invite
        .as_deref()
        .map(cluster::invite::Invitation::decode)
        .transpose()?;
    if let Some(inv) = &invite {
        join = join.or(Some(inv.addr.clone()));
    }
    let secret = cluster_secret(
        args.secret_file.or(file.secret_file.clone()).as_deref(),
        &data,
        join.is_some(),
        invite.as_ref(),
        local_ip,
    )
    .await?;
    let node_tls = cluster::NodeTls::new(&secret, &node_key)?;
    let rpc_listener = tokio::net::TcpListener::bind(&rpc_listen).await.with_context(|| {
        format!("cannot listen on {rpc_listen}: is another edgecloud running? Choose another address with --rpc-listen or --bind")
    })?;
    let me = cluster::NodeInfo {
        id: node_key.id(),
        seq: 0,
        public_key: node_key.public_hex(),
        site: args
            .site
            .or(file.site.clone())
            .unwrap_or_else(|| "main".into()),
        rpc_addr: rpc_listener.local_addr()?.to_string(),
        disks: disks
            .iter()
            .map(|d| {
                let _ = std::fs::create_dir_all(d);
                // Capacity in TB as the weight; equal weights when unknown.
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
    };
    let down_after = parse_duration(
        &args
            .down_after
            .or(file.down_after.clone())
            .unwrap_or_else(|| "5m".into()),
    )?;
    let membership = cluster::Membership::start(
        cluster::StartOptions {
            data_dir: data.clone(),
            me,
            join: join.clone(),
            down_after,
        },
        cluster::Client::bound(&node_tls, local_ip)?,
    )
    .await?;
    secret.save_if_absent(&data.join(CLUSTER_SECRET))?;
    let client = cluster::Client::bound(&node_tls, local_ip)?;
    let master_key_file = args.master_key_file.or(file.master_key_file.clone());
    let key_file = master_key_file
        .clone()
        .unwrap_or_else(|| data.join("master.key"));
    // A node joining for the first time takes the cluster's master key and S3 root key,
    // so that its gateways read every bucket and accept the same root key.
    if let Some(addr) = &join
        && !key_file.exists()
    {
        let keys = crate::cluster_keys::fetch(&client, addr).await?;
        cluster::identity::create_private(&key_file, &keys.master_key)?;
        let creds = data.join(S3_CREDENTIALS);
        if !creds.exists() {
            cluster::identity::create_private(
                &creds,
                &format!("{}:{}", keys.s3_access_key, keys.s3_secret),
            )?;
        }
        // One log, one signing key: every node publishes checkpoints of the same log.
        if !data.join(LEDGER_KEY).exists() {
            cluster::identity::create_private(&data.join(LEDGER_KEY), &keys.ledger_key)?;
            std::fs::write(data.join(LEDGER_PUB), format!("{}\n", keys.ledger_pub))?;
        }
    }
    let master = load_or_create_master_key(&key_file, has_data)?;
    let mut cfg = ArchiveConfig::new(data.clone(), disks, master);
    if let Some(p) = args.policy.or(file.policy.clone()) {
        cfg.default_policy = Some(p.parse::<Redundancy>()?);
    }
    if let Some(s) = args.chunk_avg.or(file.chunk_avg.clone()) {
        cfg.chunk = archive::ChunkParams::from_avg(parse_size(&s)? as usize);
    }
    if let Some(c) = args.compression.or(file.compression) {
        cfg.compression = c;
    }
    if let Some(s) = args.inline_threshold.or(file.inline_threshold.clone()) {
        cfg.inline_threshold = parse_size(&s)? as usize;
    }
    if let Some(s) = args.gc_grace.or(file.gc_grace.clone()) {
        cfg.gc_grace = parse_duration(&s)?;
    }
    if let Some(s) = args.max_object_size.or(file.max_object_size.clone()) {
        cfg.max_object_bytes = parse_size(&s)?;
    }
    if let Some(s) = args.history.or(file.history.clone()) {
        cfg.history_retention = parse_duration(&s)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let n_disks = cfg.disks.len();
    let archive = Archive::open(cfg).context("cannot open the archive")?;
    archive.attach_cluster(membership.clone());
    let (access, s3_secret) = s3_credentials(&data)?;

    // The catalog, replicated with Raft: the node-to-node server first (others must
    // reach this replica), then the replica; a founding node starts the group alone.
    let replica = consensus::Replica::start(consensus::ReplicaOptions {
        data_dir: data.clone(),
        me: consensus::Member {
            node: membership.me().0.clone(),
            addr: rpc_listener.local_addr()?.to_string(),
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
    .await?;
    let authorize: consensus::network::Authorize = {
        let m = membership.clone();
        std::sync::Arc::new(move |id: &cluster::NodeId| m.authorize(id))
    };
    let auditor = std::sync::Arc::new(open_ledger(&archive, &data, membership.me(), has_data)?);
    let (ledger_key, ledger_pub) = ensure_ledger_keys(&data, has_data)?;
    let shared = crate::cluster_keys::SharedKeys {
        master_key: std::fs::read_to_string(&key_file)?.trim().to_string(),
        s3_access_key: access.clone(),
        s3_secret: s3_secret.clone(),
        ledger_key,
        ledger_pub,
    };
    let inviter = std::sync::Arc::new(admin::invites::Inviter {
        secret: secret.clone(),
        node_key: node_key.public(),
    });
    let rpc_task = cluster::rpc::serve(
        rpc_listener,
        cluster::rpc::router(cluster::rpc::RpcState {
            membership: membership.clone(),
            store: archive.store(),
        })
        .merge(consensus::network::routes(replica.clone(), authorize))
        .merge(crate::cluster_keys::route(shared, membership.clone()))
        .merge(admin::peers::routes(
            archive.clone(),
            auditor.clone(),
            membership.clone(),
        )),
        admin::invites::guest_routes(archive.clone(), inviter.clone()),
        &node_tls,
        stop_rx.clone(),
    );
    let founding = membership.layout().catalog_node == *membership.me();
    if founding {
        replica.initialize_alone().await?;
    }
    membership.use_store(std::sync::Arc::new(consensus::layout::ReplicatedLayout {
        replica: replica.clone(),
        catalog: archive.catalog().clone(),
    }));
    if founding && archive.catalog().cluster_record("layout")?.is_none() {
        // The founder's first start: the layout enters the replicated catalog.
        membership
            .change(|_| Ok(()))
            .await
            .map_err(anyhow::Error::msg)
            .context("cannot record the first layout")?;
    }
    tokio::spawn(consensus::layout::follow_layout(
        archive.catalog().clone(),
        membership.clone(),
    ));
    tokio::spawn(consensus::layout::reconcile(
        replica.clone(),
        membership.clone(),
    ));
    tokio::spawn(membership.clone().monitor());
    tokio::spawn(archive.clone().repair_worker(Some(scrub_rate * 1_000_000)));
    tokio::spawn(cluster::scrubber::run(
        archive.store(),
        membership.clone(),
        scrub_interval,
        scrub_rate * 1_000_000,
    ));
    membership.request_repair(); // a first pass after start: shards placed on an older layout
    let token = admin::load_or_create_token(&data).context("cannot write the admin token")?;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| {
        format!("cannot listen on {listen}: is another edgecloud running? Choose another address with --admin-listen")
    })?;
    // One certificate for every TLS listener of the gateways and the admin API.
    let gateway_tls = match &ftp.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let admin_url = crate::tls::publish_admin_url(
        &data,
        listener.local_addr()?,
        ftp.tls.as_ref().map(|(cert, _)| cert.as_path()),
    )?;
    eprintln!(
        "edgecloud {} serving\n  data:    {}\n  disks:   {} (new buckets: {})\n  admin:   {admin_url} (token in {})",
        env!("CARGO_PKG_VERSION"),
        data.display(),
        n_disks,
        archive.default_policy(),
        data.join(admin::TOKEN_FILE).display()
    );

    let s3_listener = tokio::net::TcpListener::bind(&s3_listen).await.with_context(|| {
        format!("cannot listen on {s3_listen}: is another edgecloud running? Choose another address with --s3-listen")
    })?;
    eprintln!(
        "  s3:      {}://{} (access key {access}; secret in {})",
        if ftp.tls.is_some() { "https" } else { "http" },
        s3_listener.local_addr()?,
        data.join(S3_CREDENTIALS).display()
    );
    let dav_listener = tokio::net::TcpListener::bind(&dav_listen).await.with_context(|| {
        format!("cannot listen on {dav_listen}: is another edgecloud running? Choose another address with --dav-listen")
    })?;
    eprintln!(
        "  webdav:  {}://{} (same keys as S3)",
        if gateway_tls.is_some() {
            "https"
        } else {
            "http"
        },
        dav_listener.local_addr()?
    );
    let nfs_key = args.nfs_key.or(file.nfs_key.clone());
    let nfs_listen = listen_addr(
        args.nfs_listen.or(file.nfs_listen.clone()),
        bind,
        "0.0.0.0",
        9402,
    );
    if nfs_key.is_some() {
        nfs::check_listen(&nfs_listen).with_context(|| {
            format!("cannot listen on {nfs_listen}: is another edgecloud running? Choose another address with --nfs-listen")
        })?;
    }
    let ftp_listener = tokio::net::TcpListener::bind(&ftp_listen).await.with_context(|| {
        format!("cannot listen on {ftp_listen}: is another edgecloud running? Choose another address with --ftp-listen")
    })?;
    eprintln!(
        "  ftp:     {} (same keys as S3{})",
        ftp_listener.local_addr()?,
        if ftp.tls.is_some() {
            "; AUTH TLS required"
        } else {
            ""
        }
    );

    eprintln!(
        "  ledger:  {} entries (public key in {})",
        auditor.size(),
        data.join(LEDGER_PUB).display()
    );
    {
        let l = membership.layout();
        eprintln!(
            "  cluster: node {} in site {}, {} node(s) in {} site(s); node-to-node on {} (secret in {})",
            membership.me(),
            l.node(membership.me())
                .map(|n| n.site.as_str())
                .unwrap_or("?"),
            l.members().count(),
            l.sites().len(),
            l.node(membership.me())
                .map(|n| n.rpc_addr.as_str())
                .unwrap_or("?"),
            data.join(CLUSTER_SECRET).display()
        );
    }
    spawn_ledger(auditor.clone(), client.clone(), replica.clone());
    spawn_background(archive.clone(), scrub_interval, scrub_rate);
    let gateway = s3::GatewayConfig {
        root: s3::RootKey {
            access_key: access,
            secret: s3_secret,
        },
        domain,
    };
    let files = files::Files::new(
        archive.clone(),
        files::RootKey {
            access_key: gateway.root.access_key.clone(),
            secret: gateway.root.secret.clone(),
        },
    );
    let s3_app = s3::router(archive.clone(), gateway).map_err(anyhow::Error::msg)?;
    let app = admin::router(admin::AdminState {
        archive,
        token,
        auditor: Some(auditor.clone()),
        public_ledger: args.public_ledger || file.public_ledger.unwrap_or(false),
        inviter: Some(inviter.clone()),
    });
    let nfs_task = match nfs_key {
        Some(key) => {
            let session = files.session_after_login(&key).map_err(|_| {
                anyhow::anyhow!("--nfs-key {key:?}: no such access key (see `edgecloud key list`)")
            })?;
            eprintln!("  nfs:     {nfs_listen} (v3, as access key {key}; mount /BUCKET)");
            let mut stop = stop_rx.clone();
            let staging = data.join("nfs-staging");
            Some(tokio::spawn(async move {
                nfs::serve(session, &nfs_listen, staging, async move {
                    let _ = stop.changed().await;
                })
                .await
            }))
        }
        None => None,
    };
    warn_cleartext(&[
        (
            "S3",
            &s3_listener,
            gateway_tls.is_some(),
            "SigV4 signs requests; data is in the clear",
        ),
        (
            "WebDAV",
            &dav_listener,
            gateway_tls.is_some(),
            "Basic auth sends secrets in the clear",
        ),
        (
            "FTP",
            &ftp_listener,
            ftp.tls.is_some(),
            "passwords (secrets) cross in the clear",
        ),
        (
            "admin",
            &listener,
            gateway_tls.is_some(),
            "the admin token crosses in the clear",
        ),
    ]);
    let listen =
        |what, tcp, tls: &Option<std::sync::Arc<rustls::ServerConfig>>| cluster::server::Listener {
            what,
            tcp,
            tls: tls.clone(),
        };
    let gateways = [
        cluster::server::serve_app(
            listen("S3", s3_listener, &gateway_tls),
            s3_app,
            stop_rx.clone(),
        ),
        cluster::server::serve_app(
            listen("WebDAV", dav_listener, &gateway_tls),
            dav::router(files.clone()),
            stop_rx.clone(),
        ),
        {
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.changed().await;
            };
            tokio::spawn(ftp::serve(files, ftp_listener, ftp, stopped))
        },
    ];
    let admin_task = cluster::server::serve_app(
        listen("admin", listener, &gateway_tls),
        app,
        stop_rx.clone(),
    );
    drop(stop_rx);
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    admin_task.await??;
    for g in gateways.into_iter().chain(nfs_task).chain([rpc_task]) {
        g.await??;
    }
    if let Err(e) = tokio::task::spawn_blocking(move || auditor.sync()).await? {
        tracing::warn!(error = %e, "could not sync the ledger's tiles; the next start writes them again");
    }
    eprintln!("edgecloud stopped");
    Ok(())
}

/// "50000-50100" as a port range.
fn parse_port_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let bad = || anyhow::anyhow!("{s:?} is not a port range like 50000-50100");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    anyhow::ensure!(a <= b && a > 0, bad());
    Ok(a..=b)
}

/// Raises the soft limit of open files to the hard limit: every connection, segment
/// file and peer link takes one, and the common soft default (1024) is what a modest
/// flood of connections exhausts first. Each listener caps its own connections.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, properly sized out-parameter.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-files limit; floods of connections reach it sooner"
                );
            }
        }
    }
}

/// Says on start-up which listeners reachable from other machines speak in the clear,
/// and what crosses them (a listener on loopback only is not named).
fn warn_cleartext(listeners: &[(&str, &tokio::net::TcpListener, bool, &str)]) {
    for (what, l, tls, risk) in listeners {
        let exposed = l.local_addr().is_ok_and(|a| !a.ip().is_loopback());
        if exposed && !tls {
            eprintln!(
                "  warning: {what} on {} is not encrypted ({risk}); give --tls-cert and \
                 --tls-key, or --tls-self-signed",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            );
        }
    }
}

const LEDGER_KEY: &str = "ledger.key";
const LEDGER_PUB: &str = "ledger.pub";
const COSIGNER_KEY: &str = "cosigner.key";
const COSIGNER_PUB: &str = "cosigner.pub";

/// The audit log: its Ed25519 signing key (DATA/ledger.key, created on first start;
/// the public half in DATA/ledger.pub is what verifiers need) and its files in
/// DATA/ledger/.
/// The log's signing key pair (shared by every node of a cluster: one log, one key),
/// created on the first node's first start.
fn ensure_ledger_keys(data: &Path, has_data: bool) -> anyhow::Result<(String, String)> {
    let (kp, pp) = (data.join(LEDGER_KEY), data.join(LEDGER_PUB));
    if !kp.exists() {
        // A new key would sign checkpoints that no saved checkpoint or verifier trusts.
        anyhow::ensure!(
            !has_data,
            "the ledger key {} is missing, but this node already keeps a ledger: restore \
             the file from your backup",
            kp.display()
        );
        let (skey, vkey) = ledger::publish::generate_key("edgecloud.local/ledger");
        cluster::identity::create_private(&kp, &skey)?;
        std::fs::write(&pp, format!("{vkey}\n"))?;
    }
    let skey = std::fs::read_to_string(&kp)
        .with_context(|| format!("cannot read the ledger key {}", kp.display()))?;
    let vkey = std::fs::read_to_string(&pp)
        .with_context(|| format!("cannot read the ledger public key {}", pp.display()))?;
    Ok((skey.trim().to_string(), vkey.trim().to_string()))
}

fn open_ledger(
    archive: &Archive,
    data: &Path,
    node: &cluster::NodeId,
    has_data: bool,
) -> anyhow::Result<archive::audit::Auditor> {
    let (skey, vkey) = ensure_ledger_keys(data, has_data)?;
    // This node as a voter of the log: its own cosigner key (DATA/cosigner.pub is what
    // clients demanding a quorum of cosignatures need, one per voter).
    let (cp, cpub) = (data.join(COSIGNER_KEY), data.join(COSIGNER_PUB));
    if !cp.exists() {
        let (skey, vkey) = ledger::cosign::generate_key(&format!("edgecloud.local/voter-{node}"));
        cluster::identity::create_private(&cp, &skey)?;
        std::fs::write(&cpub, format!("{vkey}\n"))?;
    }
    let cosigner = std::fs::read_to_string(&cp)
        .with_context(|| format!("cannot read the cosigner key {}", cp.display()))?;
    archive::audit::Auditor::open(
        archive,
        &data.join("ledger"),
        &skey,
        &vkey,
        Some(cosigner.trim()),
    )
    .context("cannot open the ledger")
}

/// Publishes a new checkpoint every second when the log grew, and has the other voters
/// of the catalog cosign it (each from its own replica of the log).
fn spawn_ledger(
    auditor: std::sync::Arc<archive::audit::Auditor>,
    client: cluster::Client,
    replica: std::sync::Arc<consensus::Replica>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The checkpoint last sent for cosigning, and how many voters cosigned it.
        let mut asked: (Vec<u8>, usize) = (Vec::new(), 0);
        loop {
            tick.tick().await;
            let a = auditor.clone();
            match tokio::task::spawn_blocking(move || a.catch_up_whole_tiles()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "ledger publishing failed"),
                Err(e) => tracing::error!(error = %e, "ledger task failed"),
                Ok(Ok(_)) => {}
            }
            let voters: Vec<String> = replica
                .members()
                .into_iter()
                .filter(|(m, voter)| *voter && m.node != replica.me.node)
                .map(|(m, _)| m.addr)
                .collect();
            let cp = auditor.checkpoint();
            let body = cp
                .split(|b| *b == b'\n')
                .take(3)
                .flatten()
                .copied()
                .collect::<Vec<u8>>();
            if voters.is_empty() || (asked.0 == body && asked.1 >= voters.len()) {
                continue;
            }
            let got = admin::peers::collect_cosignatures(&auditor, &client, &voters).await;
            if asked.0 != body || got > asked.1 {
                asked = (body, got);
            }
        }
    });
}

/// Disk checks every 30 s; a full, rate-limited scrub (with garbage collection) on
/// every interval, on the leading node.
fn spawn_background(archive: Archive, scrub_interval: Duration, rate_mb: u64) {
    let a = archive.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let probe = a.clone();
            let lost = tokio::task::spawn_blocking(move || {
                probe.disk_health().iter().map(|h| h.lost).sum::<usize>()
            })
            .await
            .unwrap_or(0);
            if lost > 0
                && let Some(m) = a.cluster()
            {
                m.request_repair();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(scrub_interval).await;
            // In a cluster the leading node scrubs every chunk and collects garbage;
            // each node's own scrubber verifies its disks.
            if let Some(m) = archive.cluster()
                && !m.confirm_leads().await
            {
                continue;
            }
            let opts = ScrubOptions {
                rate_bytes_per_sec: Some(rate_mb * 1_000_000),
                collect_garbage: true,
                repair_only: false,
            };
            match archive.scrub(&opts, &|_| {}).await {
                Ok(r) => tracing::info!(
                    chunks = r.chunks_checked,
                    repaired = r.shards_repaired,
                    lost = r.chunks_unrecoverable.len(),
                    "background scrub done"
                ),
                Err(e) => tracing::error!(error = %e, "background scrub failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    eprintln!("shutting down: finishing requests in flight");
}

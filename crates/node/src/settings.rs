//! A node's settings: one type for the command line, the environment and the TOML
//! file, and every default in one place (`defaults`).
//!
//! How they combine: clap fills [`NodeSettings`] from flags and `EDGECLOUD_*`
//! variables (a flag beats its variable); [`ConfigFile::load`] fills another from the
//! TOML file, whose keys are the long flags' names; [`NodeSettings::overlay`] lays the
//! first over the second; [`NodeSettings::resolve`] fills what is still unset from
//! `defaults` and parses every value into a [`NodeConfig`]. `--help` names the same
//! defaults; a test checks that giving each documented default changes nothing.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Every default of a node, in one place.
pub mod defaults {
    /// The data directory.
    pub const DATA: &str = "edgecloud-data";
    /// Host of every port but the admin API's, without --bind.
    pub const HOST: &str = "0.0.0.0";
    /// Host of the admin API without --bind: this machine only.
    pub const ADMIN_HOST: &str = "127.0.0.1";
    /// S3 port.
    pub const S3_PORT: u16 = 9400;
    /// WebDAV port.
    pub const DAV_PORT: u16 = 9401;
    /// NFS v3 port.
    pub const NFS_PORT: u16 = 9402;
    /// Boot server port (with --boot-image).
    pub const BOOT_PORT: u16 = 9403;
    /// The kernel command line booting nodes get.
    pub const BOOT_ARGS: &str = "console=ttyS0";
    /// Admin API port.
    pub const ADMIN_PORT: u16 = 9410;
    /// Node-to-node port.
    pub const RPC_PORT: u16 = 9420;
    /// FTP control port.
    pub const FTP_PORT: u16 = 9421;
    /// FTP passive-mode data ports.
    pub const FTP_PASSIVE_PORTS: &str = "49152-65535";
    /// Average chunk size of new buckets.
    pub const CHUNK_AVG: &str = "64KiB";
    /// zstd level of new buckets.
    pub const COMPRESSION: i32 = 3;
    /// Objects smaller than this live in the catalog.
    pub const INLINE_THRESHOLD: &str = "64KiB";
    /// How often the background scrubber verifies every shard.
    pub const SCRUB_INTERVAL: &str = "24h";
    /// Background scrub read rate, MB/s.
    pub const SCRUB_RATE: u64 = 50;
    /// Repair rate after a loss, MB/s (0: as fast as disks and network allow).
    pub const REPAIR_RATE: u64 = 0;
    /// How long unreferenced data waits before it is deleted.
    pub const GC_GRACE: &str = "1h";
    /// The largest object.
    pub const MAX_OBJECT_SIZE: &str = "5TiB";
    /// How long overwritten data of unversioned buckets stays readable as-of.
    pub const HISTORY: &str = "30d";
    /// The site of a node that names none.
    pub const SITE: &str = "main";
    /// How long a node may miss heartbeats before its shards are rebuilt elsewhere.
    pub const DOWN_AFTER: &str = "5m";
    /// A lifecycle day.
    pub const LIFECYCLE_DAY: &str = "1d";
    /// Lifecycle changes per second, at most.
    pub const LIFECYCLE_RATE: u32 = 100;
}

/// What `edgecloud serve` takes: each field is a long flag, an `EDGECLOUD_*` variable
/// and a key of the TOML file (kebab-case). Unset fields take `defaults`.
#[derive(clap::Args, Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSettings {
    /// A shard disk folder; repeat for several disks [default: DATA/disk0]
    #[arg(
        long = "disk",
        env = "EDGECLOUD_DISKS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    #[serde(rename = "disk", default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<PathBuf>,
    /// Address of the S3 API [default: 0.0.0.0:9400]
    #[arg(long, env = "EDGECLOUD_S3_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_listen: Option<String>,
    /// Address of the FTP gateway [default: 0.0.0.0:9421]
    #[arg(long, env = "EDGECLOUD_FTP_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ftp_listen: Option<String>,
    /// Ports for FTP passive-mode data connections [default: 49152-65535]
    #[arg(long, env = "EDGECLOUD_FTP_PASSIVE_PORTS", value_name = "FIRST-LAST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ftp_passive_ports: Option<String>,
    /// Certificate chain (PEM): S3 and WebDAV then answer HTTPS only, and FTP requires
    /// AUTH TLS before login; with --tls-key
    #[arg(
        long,
        env = "EDGECLOUD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(
        long,
        env = "EDGECLOUD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Without --tls-cert: make a self-signed certificate (DATA/tls/cert.pem, key.pem)
    /// on first start and serve TLS with it, as --tls-cert would
    #[arg(long, env = "EDGECLOUD_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_self_signed: bool,
    /// Serve NFS v3 as this access key (NFS has no passwords: every NFS client gets this
    /// key's permissions, so bind --nfs-listen to a trusted network) [default: NFS off]
    #[arg(long, env = "EDGECLOUD_NFS_KEY", value_name = "ACCESS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfs_key: Option<String>,
    /// Address of the NFS v3 gateway, when --nfs-key is given [default: 0.0.0.0:9402]
    #[arg(long, env = "EDGECLOUD_NFS_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfs_listen: Option<String>,
    /// Serve this node image (a folder `edgecloud node-image build` wrote) to machines
    /// that boot over the network: an iPXE script at /boot.ipxe, the kernel and the
    /// initramfs over HTTP (docs/netboot.md) [default: off]
    #[arg(long, env = "EDGECLOUD_BOOT_IMAGE", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_image: Option<PathBuf>,
    /// Address of the boot server, with --boot-image [default: 0.0.0.0:9403]
    #[arg(long, env = "EDGECLOUD_BOOT_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_listen: Option<String>,
    /// Also serve the node image folder over TFTP at this address (UDP; port 69 is
    /// TFTP's), for firmware that loads iPXE by TFTP first [default: off]
    #[arg(long, env = "EDGECLOUD_BOOT_TFTP_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_tftp_listen: Option<String>,
    /// The kernel command line the boot script gives booting nodes, e.g.
    /// `console=ttyS0 edgecloud.serve="--site lab"` [default: console=ttyS0]
    #[arg(long, env = "EDGECLOUD_BOOT_ARGS", value_name = "ARGS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// The key the boot server signs booting nodes' configuration with (`edgecloud
    /// node-image keygen`); needed for an image built with `--signing-key`
    #[arg(long, env = "EDGECLOUD_BOOT_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_key: Option<PathBuf>,
    /// The SHA-256 of the node image this machine booted, recorded in the audit log
    /// at start (`edgecloud init` sets it from the boot server's `edgecloud.image`)
    #[arg(long, env = "EDGECLOUD_BOOTED_IMAGE", value_name = "SHA256")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booted_image: Option<String>,
    /// Address of the WebDAV gateway [default: 0.0.0.0:9401]
    #[arg(long, env = "EDGECLOUD_DAV_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dav_listen: Option<String>,
    /// Base domain for virtual-hosted-style S3 requests (http://BUCKET.DOMAIN/KEY);
    /// path style (http://HOST/BUCKET/KEY) always works [default: none]
    #[arg(long, env = "EDGECLOUD_DOMAIN", value_name = "DOMAIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Address of the admin API [default: 127.0.0.1:9410]
    #[arg(long, env = "EDGECLOUD_ADMIN_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Redundancy of new buckets: none, replicate:N or ec:K+M [default: from the disk count]
    #[arg(long, env = "EDGECLOUD_POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Average chunk size for new buckets; min is a quarter, max four times [default: 64KiB]
    #[arg(long, env = "EDGECLOUD_CHUNK_AVG", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_avg: Option<String>,
    /// zstd level for new buckets, 0 = off [default: 3]
    #[arg(long, env = "EDGECLOUD_COMPRESSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<i32>,
    /// Objects smaller than this are kept in the catalog [default: 64KiB]
    #[arg(long, env = "EDGECLOUD_INLINE_THRESHOLD", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_threshold: Option<String>,
    /// File holding the master key (64 hex chars); keep it off the shard disks
    /// [default: DATA/master.key, created on first start]
    #[arg(long, env = "EDGECLOUD_MASTER_KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// Folder for the node's secret files (node key, cluster secret, master key, S3 root
    /// key, ledger and cosigner keys, admin token). Point it at memory (a tmpfs; a booted
    /// node's init does) to keep no secret on the node's disks: the node key is then
    /// derived from the cluster secret and DATA/node.salt, and the shared keys are
    /// fetched from the member --join names at every start [default: the data directory]
    #[arg(long, env = "EDGECLOUD_SECRETS_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// How often the background scrubber verifies every shard [default: 24h]
    #[arg(long, env = "EDGECLOUD_SCRUB_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_interval: Option<String>,
    /// Serve the audit log's checkpoint, public key, tiles and proofs on the admin port
    /// without the admin token, for outside monitors and auditors. Its entries name
    /// buckets, keys and access key ids [default: off]
    #[arg(long, env = "EDGECLOUD_PUBLIC_LEDGER")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub public_ledger: bool,
    /// Background scrub read rate in MB/s [default: 50]
    #[arg(long, env = "EDGECLOUD_SCRUB_RATE", value_name = "MB/S")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_rate: Option<u64>,
    /// Repair rate after a node, disk or site is lost, in MB/s of shards rebuilt or moved;
    /// 0 is as fast as disks and network allow, since data is short of redundancy until
    /// repair ends. Set a limit if clients must keep their speed meanwhile [default: 0]
    #[arg(long, env = "EDGECLOUD_REPAIR_RATE", value_name = "MB/S")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_rate: Option<u64>,
    /// Unreferenced data is deleted only after this long [default: 1h]
    #[arg(long, env = "EDGECLOUD_GC_GRACE", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_grace: Option<String>,
    /// The largest object any gateway may store (checked while it streams: FTP, NFS and
    /// chunked uploads send no length up front) [default: 5TiB]
    #[arg(long, env = "EDGECLOUD_MAX_OBJECT_SIZE", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<String>,
    /// How long overwritten data of unversioned buckets stays readable as-of [default: 30d]
    #[arg(long, env = "EDGECLOUD_HISTORY", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// Bucket lifecycle rules count in days of this length; only tests shorten it
    /// [default: 1d]
    #[arg(long, env = "EDGECLOUD_LIFECYCLE_DAY", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_day: Option<String>,
    /// Most changes (expirations, aborted uploads) bucket lifecycle rules make per
    /// second [default: 100]
    #[arg(long, env = "EDGECLOUD_LIFECYCLE_RATE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_rate: Option<u32>,
    /// Put every port of this node on one address (S3 ADDR:9400, WebDAV :9401, NFS :9402,
    /// admin :9410, node-to-node :9420, FTP :9421); the --*-listen flags still win
    /// [default: 0.0.0.0, admin 127.0.0.1]
    #[arg(long, env = "EDGECLOUD_BIND", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Address of the node-to-node port (mutual TLS) [default: BIND:9420]
    #[arg(long, env = "EDGECLOUD_RPC_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_listen: Option<String>,
    /// The site (building, room, datacenter) this node is in; shards of a chunk are
    /// spread so that losing one whole site loses nothing [default: main]
    #[arg(long, env = "EDGECLOUD_SITE", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Join the cluster of the node at HOST:PORT (its node-to-node port, 9420), with the
    /// cluster's secret (--secret-file or EDGECLOUD_CLUSTER_SECRET)
    #[arg(long, env = "EDGECLOUD_JOIN", value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// File holding the cluster secret; EDGECLOUD_CLUSTER_SECRET may hold the secret itself
    /// [default: DATA/cluster.secret, created by the first node]
    #[arg(long, env = "EDGECLOUD_SECRET_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Join with a one-time invitation token (`edgecloud cluster invite` prints one)
    /// instead of the secret: it names the node to join (--join overrides it) and is
    /// traded for the cluster secret, which is kept in DATA/cluster.secret. A machine
    /// invitation (`ecmac2_`, `cluster invite --machines`) is asked with at every start:
    /// a machine it does not list by MAC waits for `edgecloud cluster approve CODE`
    #[arg(long, env = "EDGECLOUD_INVITE", value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// A node that misses heartbeats this long is declared down and its shards are
    /// rebuilt on the others [default: 5m]
    #[arg(long, env = "EDGECLOUD_DOWN_AFTER", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_after: Option<String>,
    /// Log lines as plain text (colours only on a terminal) or as JSON objects, one per
    /// line, for log collectors [default: text]
    #[arg(long, env = "EDGECLOUD_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// How `serve` writes its log lines.
#[derive(clap::ValueEnum, Serialize, Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text; colours only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a node listens. Port 0 picks a free port (tests).
#[derive(Debug, Clone, PartialEq)]
pub struct Addresses {
    /// S3 gateway.
    pub s3: String,
    /// WebDAV gateway.
    pub dav: String,
    /// FTP gateway (control connections).
    pub ftp: String,
    /// NFS v3 gateway (only with `NodeConfig::nfs_key`).
    pub nfs: String,
    /// Boot server (only with `NodeConfig::boot_image`).
    pub boot: String,
    /// Admin API.
    pub admin: String,
    /// Node-to-node API (mutual TLS).
    pub rpc: String,
    /// Where this node's connections to other nodes leave from (--bind), if set.
    pub local_ip: Option<IpAddr>,
}

/// How the archive stores new data.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Redundancy of new buckets; None picks one from the disks (or the layout).
    pub policy: Option<archive::Redundancy>,
    /// Average chunk size of new buckets.
    pub chunk_avg: usize,
    /// zstd level of new buckets; 0 is off.
    pub compression: i32,
    /// Objects smaller than this live in the catalog.
    pub inline_threshold: usize,
    /// Unreferenced data waits this long before it is deleted.
    pub gc_grace: Duration,
    /// Overwritten data of unversioned buckets stays readable as-of this long.
    pub history: Duration,
    /// The largest object any gateway may store.
    pub max_object_bytes: u64,
}

/// A node's settings, resolved and parsed: what [`crate::Node::open`] takes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The data directory (catalog, keys, Raft log, ledger).
    pub data: PathBuf,
    /// Shard disk folders.
    pub disks: Vec<PathBuf>,
    /// Where each port listens.
    pub listen: Addresses,
    /// How new data is stored.
    pub storage: Storage,
    /// FTP passive-mode data ports.
    pub ftp_passive_ports: RangeInclusive<u16>,
    /// Certificate and key (PEM) for every gateway and the admin API, if TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Make a self-signed certificate in DATA/tls when `tls` is None.
    pub tls_self_signed: bool,
    /// The access key NFS acts as; None keeps NFS off.
    pub nfs_key: Option<String>,
    /// The node image the boot server serves; None keeps it off.
    pub boot_image: Option<PathBuf>,
    /// The kernel command line of the boot script.
    pub boot_args: String,
    /// Where TFTP serves the node image (None: no TFTP).
    pub boot_tftp_listen: Option<String>,
    /// The boot server's signing key file.
    pub boot_key: Option<PathBuf>,
    /// The node image this machine booted (None: not a booted node).
    pub booted_image: Option<String>,
    /// Base domain for virtual-hosted-style S3.
    pub domain: Option<String>,
    /// The master key file.
    pub master_key_file: PathBuf,
    /// Where the secret files are (None: in the data directory, the node key kept
    /// there; Some: elsewhere, the node key derived, the shared keys fetched).
    pub secrets_dir: Option<PathBuf>,
    /// How often the background scrubber runs.
    pub scrub_interval: Duration,
    /// Background scrub rate, bytes per second.
    pub scrub_bytes_per_sec: u64,
    /// Repair rate, bytes per second (0: no limit).
    pub repair_bytes_per_sec: u64,
    /// Serve the ledger's public parts without the admin token.
    pub public_ledger: bool,
    /// This node's site.
    pub site: String,
    /// HOST:PORT of a member to join.
    pub join: Option<String>,
    /// The cluster secret's file, if not DATA/cluster.secret.
    pub secret_file: Option<PathBuf>,
    /// An invitation token to trade for the cluster secret.
    pub invite: Option<String>,
    /// How long a node may miss heartbeats before it is declared down.
    pub down_after: Duration,
    /// How bucket lifecycle rules run.
    pub lifecycle: archive::lifecycle::LifecycleOptions,
    /// The program whose `container-setup` command sets containers up and whose
    /// `lazy-root` command serves their lazy root file systems (the edgecloud binary;
    /// `serve` sets it). None: containers are set up in the node's process and images
    /// are unpacked.
    pub helper_program: Option<PathBuf>,
}

impl NodeSettings {
    /// These settings over `under`: a field set here wins, an unset one takes
    /// `under`'s (booleans: true wins). Used to lay flags and environment over the file.
    pub fn overlay(self, under: NodeSettings) -> Result<NodeSettings, NodeError> {
        let table = |s: &NodeSettings| {
            toml::Table::try_from(s).map_err(|e| NodeError::Settings(format!("settings: {e}")))
        };
        let mut merged = table(&under)?;
        merged.extend(table(&self)?);
        merged
            .try_into()
            .map_err(|e: toml::de::Error| NodeError::Settings(format!("settings: {e}")))
    }

    /// Fills what is unset from `defaults` and parses every value.
    pub fn resolve(self, data: &Path) -> Result<NodeConfig, NodeError> {
        use defaults as d;
        let bind = self.bind.clone();
        let listen = |given: Option<String>, host: &str, port: u16| {
            given.unwrap_or_else(|| format!("{}:{port}", bind.as_deref().unwrap_or(host)))
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(NodeError::Settings(
                    "give both tls-cert and tls-key, or neither".into(),
                ));
            }
        };
        let policy = match self.policy {
            Some(p) => Some(
                p.parse::<archive::Redundancy>()
                    .map_err(|e| NodeError::Settings(format!("policy {p:?}: {e}")))?,
            ),
            None => None,
        };
        let or = |v: Option<String>, default: &str| v.unwrap_or_else(|| default.to_string());
        Ok(NodeConfig {
            data: data.to_path_buf(),
            disks: if self.disks.is_empty() {
                vec![data.join("disk0")]
            } else {
                self.disks
            },
            listen: Addresses {
                s3: listen(self.s3_listen, d::HOST, d::S3_PORT),
                dav: listen(self.dav_listen, d::HOST, d::DAV_PORT),
                ftp: listen(self.ftp_listen, d::HOST, d::FTP_PORT),
                nfs: listen(self.nfs_listen, d::HOST, d::NFS_PORT),
                boot: listen(self.boot_listen, d::HOST, d::BOOT_PORT),
                admin: listen(self.admin_listen, d::ADMIN_HOST, d::ADMIN_PORT),
                rpc: listen(self.rpc_listen, d::HOST, d::RPC_PORT),
                local_ip: self.bind.as_deref().and_then(|b| b.parse().ok()),
            },
            storage: Storage {
                policy,
                chunk_avg: parse_size(&or(self.chunk_avg, d::CHUNK_AVG))? as usize,
                compression: self.compression.unwrap_or(d::COMPRESSION),
                inline_threshold: parse_size(&or(self.inline_threshold, d::INLINE_THRESHOLD))?
                    as usize,
                gc_grace: parse_duration(&or(self.gc_grace, d::GC_GRACE))?,
                history: parse_duration(&or(self.history, d::HISTORY))?,
                max_object_bytes: parse_size(&or(self.max_object_size, d::MAX_OBJECT_SIZE))?,
            },
            ftp_passive_ports: parse_port_range(&or(self.ftp_passive_ports, d::FTP_PASSIVE_PORTS))?,
            tls,
            tls_self_signed: self.tls_self_signed,
            nfs_key: self.nfs_key,
            boot_image: self.boot_image,
            boot_args: or(self.boot_args, d::BOOT_ARGS),
            booted_image: self.booted_image,
            boot_key: self.boot_key,
            boot_tftp_listen: self.boot_tftp_listen,
            domain: self.domain,
            master_key_file: self.master_key_file.unwrap_or_else(|| {
                let dir = self.secrets_dir.as_deref().unwrap_or(data);
                dir.join(crate::secrets::MASTER_KEY)
            }),
            secrets_dir: self.secrets_dir.filter(|d| d != data),
            scrub_interval: parse_duration(&or(self.scrub_interval, d::SCRUB_INTERVAL))?,
            scrub_bytes_per_sec: self.scrub_rate.unwrap_or(d::SCRUB_RATE) * 1_000_000,
            repair_bytes_per_sec: self.repair_rate.unwrap_or(d::REPAIR_RATE) * 1_000_000,
            public_ledger: self.public_ledger,
            site: or(self.site, d::SITE),
            join: self.join,
            secret_file: self.secret_file,
            invite: self.invite,
            down_after: parse_duration(&or(self.down_after, d::DOWN_AFTER))?,
            lifecycle: archive::lifecycle::LifecycleOptions {
                day: parse_duration(&or(self.lifecycle_day, d::LIFECYCLE_DAY))?,
                rate_per_sec: self.lifecycle_rate.unwrap_or(d::LIFECYCLE_RATE).max(1),
            },
            helper_program: None,
        })
    }
}

/// The TOML config file: the client's keys (`data`, `admin`, `admin-ca`) and a node's
/// settings, all named as the long flags are.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// `data`: the data directory.
    pub data: Option<PathBuf>,
    /// `admin`: the admin API URL client commands use.
    pub admin: Option<String>,
    /// `admin-ca`: the certificate client commands trust for it.
    pub admin_ca: Option<PathBuf>,
    /// Every other key: `serve`'s settings.
    pub node: NodeSettings,
}

impl ConfigFile {
    /// Loads `path`, or ./edgecloud.toml when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, NodeError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new("edgecloud.toml").exists() => PathBuf::from("edgecloud.toml"),
            None => return Ok(ConfigFile::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            NodeError::Settings(format!("cannot read config file {}: {e}", path.display()))
        })?;
        ConfigFile::parse_table(&text).map_err(|e| {
            NodeError::Settings(format!("config file {} is not valid: {e}", path.display()))
        })
    }

    /// Parses the file's text; unknown keys are an error.
    pub fn parse(text: &str) -> Result<ConfigFile, NodeError> {
        ConfigFile::parse_table(text).map_err(NodeError::Settings)
    }

    fn parse_table(text: &str) -> Result<ConfigFile, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut text_key = |k: &str| match table.remove(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("{k} must be a string, not {}", v.type_str())),
        };
        Ok(ConfigFile {
            data: text_key("data")?.map(PathBuf::from),
            admin: text_key("admin")?,
            admin_ca: text_key("admin-ca")?.map(PathBuf::from),
            node: table
                .try_into()
                .map_err(|e: toml::de::Error| e.to_string())?,
        })
    }
}

/// Parses sizes like `4096`, `64KiB`, `1MiB`, `2GiB`, `5TiB` (KB/MB/GB/TB are read as
/// powers of 1024 too).
pub fn parse_size(s: &str) -> Result<u64, NodeError> {
    let bad = |why: &str| NodeError::Settings(format!("{s:?} {why}"));
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| bad("is not a size like 64KiB or 1MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad("has an unknown unit: use B, KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| bad("is too large a size"))
}

/// Parses durations like `30s`, `10m`, `24h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, NodeError> {
    humantime::parse_duration(s)
        .map_err(|_| NodeError::Settings(format!("{s:?} is not a duration like 30s, 10m, 24h")))
}

/// Parses a port range like `50000-50100`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, NodeError> {
    let bad = || NodeError::Settings(format!("{s:?} is not a port range like 50000-50100"));
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b || a == 0 {
        return Err(bad());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: NodeSettings,
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("5TiB").unwrap(), 5 << 40);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    /// Every "[default: X]" in `serve --help` that is a value is the default `resolve`
    /// uses: giving X explicitly resolves to the same configuration.
    #[test]
    fn help_names_the_defaults_resolve_uses() {
        let data = Path::new("/srv/data");
        let plain = NodeSettings::default().resolve(data).unwrap();
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some(default) = help
                .split("[default: ")
                .nth(1)
                .and_then(|r| r.split(']').next())
            else {
                continue;
            };
            let Some(long) = arg.get_long() else { continue };
            // Defaults in words ("from the disk count", "NFS off") are not values.
            if default.contains(' ') || default == "none" || default == "off" {
                continue;
            }
            let value = default
                .replace("DATA/", "/srv/data/")
                .replace("BIND", "0.0.0.0");
            let given = Cli::try_parse_from(["serve", &format!("--{long}"), &value])
                .unwrap_or_else(|e| panic!("--{long} {value}: {e}"))
                .settings
                .resolve(data)
                .unwrap();
            assert_eq!(given, plain, "--{long} {value} is not the default");
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} defaults checked");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = ConfigFile::parse(
            "data = \"/d\"\nsite = \"office\"\nscrub-rate = 7\ndisk = [\"/a\", \"/b\"]\npublic-ledger = true\n",
        )
        .unwrap();
        assert_eq!(file.data, Some(PathBuf::from("/d")));
        let flags = Cli::try_parse_from(["serve", "--site", "home"])
            .unwrap()
            .settings;
        let cfg = flags
            .overlay(file.node)
            .unwrap()
            .resolve(Path::new("/d"))
            .unwrap();
        assert_eq!(cfg.site, "home");
        assert_eq!(cfg.scrub_bytes_per_sec, 7_000_000);
        assert_eq!(cfg.disks, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(
            cfg.public_ledger,
            "a flag left off does not turn the file's true off"
        );
        assert_eq!(cfg.listen.admin, "127.0.0.1:9410");
        let e = ConfigFile::parse("sight = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("sight"), "{e}");
    }
}

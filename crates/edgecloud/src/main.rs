//! `edgecloud`: the one binary. It parses arguments and presents results; everything
//! else lives in the library crates (see docs/architecture.md).

mod bench;
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ABOUT: &str = "Edgecloud: a self-hosted edge cloud in one binary.";
const LONG_ABOUT: &str = "\
Edgecloud turns ordinary machines into one private archive cloud. Every change is kept \
as a version; data is split into content-defined chunks (versions cost only what \
changed), compressed, encrypted, and erasure-coded across disks, so losing disks loses \
nothing and a scrub heals it.

A cluster: start the first node, make an invitation on it, and start each other node
with one (any number of sites; shards spread so one whole site can be lost):
    edgecloud serve --site office --bind 10.0.0.1
    edgecloud cluster invite
    edgecloud serve --site home --bind 10.0.1.1 --invite ecinv1_...
    edgecloud cluster status

Start a node (data in ./edgecloud-data):
    edgecloud serve
Several disks (shards are erasure-coded across them):
    edgecloud serve --disk /mnt/a --disk /mnt/b --disk /mnt/c
Then, from the same machine:
    edgecloud bucket create photos
    edgecloud put ./holiday.jpg photos/2026/holiday.jpg
    edgecloud ls photos --recursive
    edgecloud get photos/2026/holiday.jpg ./copy.jpg --as-of 2026-11-25T10:00:00Z
S3 clients (aws CLI, boto3, rclone, s3cmd) talk to port 9400 with the key printed at \
start (DATA/s3-credentials), or one made for them:
    edgecloud key create laptop-backup --write backups

The same keys (user name = access key, password = secret) open the same buckets over \
WebDAV (port 9401), FTP (9421) and, with --nfs-key, NFS v3 (9402); every bucket has a \
read-only .snapshots/ folder of past instants. A bucket as a local folder:
    edgecloud mount photos /mnt/photos
Containers from `docker save` tarballs or OCI layouts (every file stored once):
    edgecloud image import app.tar
    edgecloud run -d --name web --restart unless-stopped app:1
    edgecloud ps; edgecloud logs -f web; edgecloud stop web

Client commands talk to the node's admin API (default http://127.0.0.1:9410) with the \
token `serve` writes to DATA/admin.token. Every flag has an environment variable \
(shown in each command's --help) and a key in the TOML config file (--config; default \
./edgecloud.toml when present). Flags beat environment, which beats the file.";

/// The command line.
#[derive(Parser)]
#[command(name = "edgecloud", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// TOML config file whose keys mirror the long flags (e.g. data = "/srv/edgecloud").
    #[arg(long, global = true, env = "EDGECLOUD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the node (catalog, admin token, master key) [default: ./edgecloud-data]
    #[arg(long, global = true, env = "EDGECLOUD_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Admin API URL of the node client commands talk to [default: the URL a running
    /// node wrote to DATA/admin.url, else http://127.0.0.1:9410]
    #[arg(long, global = true, env = "EDGECLOUD_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// Certificate (PEM) to trust for an https:// admin API: the node's, or the
    /// authority that signed it [default: DATA/admin-cert.pem, written by the node]
    #[arg(long, global = true, env = "EDGECLOUD_ADMIN_CA", value_name = "FILE")]
    pub admin_ca: Option<PathBuf>,
    /// Admin token [default: read from DATA/admin.token]
    #[arg(
        long,
        global = true,
        env = "EDGECLOUD_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Subcommand)]
pub enum Command {
    /// Start a node: the archive engine, its gateways (S3, WebDAV, FTP, NFS) and admin API,
    /// until Ctrl-C or SIGTERM.
    Serve(node::NodeSettings),
    /// Create, list and delete buckets; set versioning.
    #[command(subcommand)]
    Bucket(cli::objects::BucketCmd),
    /// The cluster: nodes, sites, disks, health, what the layout survives, repair.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCmd),
    /// Create, list and revoke S3 access keys; grant them buckets.
    #[command(subcommand)]
    Key(cli::key::KeyCmd),
    /// Compute next to the data: run map/reduce code over a bucket, watch it, cancel it.
    #[command(subcommand)]
    Job(cli::job::JobCmd),
    /// Run a command in a new container from an image in the store.
    Run(cli::container::RunArgs),
    /// List the containers of the node (running ones; -a for all).
    Ps(cli::container::PsArgs),
    /// Print a container's output (-f: until it ends).
    Logs(cli::container::LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after --time seconds.
    Stop(cli::container::StopArgs),
    /// Run a command in a running container; its exit code is edgecloud's.
    Exec(cli::container::ExecArgs),
    /// Containers: run, ps, logs, stop, exec, rm, inspect.
    #[command(subcommand)]
    Container(cli::container::ContainerCmd),
    /// Run the services of a docker-compose.yml (its common subset) as containers:
    /// up, down, ps.
    #[command(subcommand)]
    Compose(cli::compose::ComposeCmd),
    /// Container images: import `docker save` tarballs and OCI layouts (every file
    /// stored once across images), list, inspect, remove.
    #[command(subcommand)]
    Image(cli::image::ImageCmd),
    /// The audit log: status, proof bundles, offline checks, history verification.
    #[command(subcommand)]
    Ledger(cli::ledger::LedgerCmd),
    /// Upload a file (or - for standard input) as a new version of BUCKET/KEY.
    Put(cli::objects::PutArgs),
    /// Download BUCKET/KEY (any version, or as of a past instant) to a file or stdout.
    Get(cli::objects::GetArgs),
    /// List the keys of a bucket, now or as of a past instant.
    Ls(cli::objects::LsArgs),
    /// Delete BUCKET/KEY (adds a delete marker; older versions stay) or one version.
    Rm(cli::objects::RmArgs),
    /// List every version and delete marker under BUCKET[/PREFIX].
    Versions(cli::objects::VersionsArgs),
    /// Verify every shard now and rebuild what is missing or corrupt.
    Scrub(cli::objects::ScrubArgs),
    /// Show the node's disks, buckets and default redundancy.
    Status,
    /// Measure codec stages, end-to-end throughput and dedup on this machine.
    Bench(bench::BenchArgs),
    /// Mount a bucket as a local folder (FUSE) until `umount DIR`: reads come from a
    /// local cache, each written file becomes a new version when closed.
    Mount(cli::mount::MountArgs),
    /// The image a stateless node boots over the network: build.
    #[command(subcommand)]
    NodeImage(cli::node_image::NodeImageCmd),
    /// Run as PID 1 of a booted node image (what the image's /init does): mount the
    /// kernel's file systems, load modules, bring up the network, run the node.
    Init,
    /// (Internal) Serve an image's lazy root file system for the node's containers.
    #[command(hide = true)]
    LazyRoot(cli::container::LazyRootArgs),
    /// (Internal) Set up one container, or one process in a container, for the node.
    #[command(hide = true)]
    ContainerSetup {
        /// `create ...` or `exec ...` (see `containers::runtime::setup_main`)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    // The kernel starts /init with no arguments: so started, as PID 1, this binary is
    // the node's init (`edgecloud serve` as PID 1 of a container is not).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let as_init = match args.as_slice() {
        [name] => name.to_string_lossy().ends_with("init"),
        [_, command] => command == "init",
        _ => false,
    };
    if std::process::id() == 1 && as_init {
        netboot::init::run();
    }
    let cli = Cli::parse();
    if let Command::Init = &cli.command {
        eprintln!(
            "error: edgecloud init runs only as PID 1 of a booted node image (docs/netboot.md)"
        );
        return ExitCode::FAILURE;
    }
    // Every TLS client and server here uses ring (reqwest is built without a provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Command::ContainerSetup { args } = &cli.command {
        // One thread, no async runtime: what it forks inherits no lock (runtime::Setup).
        // libcontainer's errors go to standard error, the container's log.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .init();
        return ExitCode::from(containers::runtime::setup_main(args) as u8);
    }
    if let Command::LazyRoot(args) = &cli.command {
        // A FUSE server of its own, started by the node: no async runtime needed.
        return match cli::container::lazy_root(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use cli::container::ContainerCmd;
    let file = node::ConfigFile::load(cli.config.as_deref())?;
    let data = cli
        .data
        .clone()
        .or(file.data.clone())
        .unwrap_or_else(|| PathBuf::from(node::defaults::DATA));
    let client = || {
        cli::client::Client::new(
            cli.admin.clone().or(file.admin.clone()),
            cli.admin_ca.clone().or(file.admin_ca.clone()),
            cli.token.clone(),
            &data,
        )
    };
    match cli.command {
        Command::Serve(flags) => cli::serve::run(flags, file.node, data).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Bucket(cmd) => cli::objects::bucket(&client()?, cmd).await,
        Command::Ledger(cmd) => {
            let c = client().ok();
            cli::ledger::run(c.as_ref(), cmd).await
        }
        Command::Key(cmd) => cli::key::run(&client()?, cmd).await,
        Command::Job(cmd) => cli::job::run(&client()?, cmd).await,
        Command::Image(cmd) => cli::image::run(&client()?, cmd).await,
        Command::Container(cmd) => cli::container::run(&client()?, cmd).await,
        Command::Exec(a) => cli::container::run(&client()?, ContainerCmd::Exec(a)).await,
        Command::Run(a) => cli::container::run(&client()?, ContainerCmd::Run(a)).await,
        Command::Ps(a) => cli::container::run(&client()?, ContainerCmd::Ps(a)).await,
        Command::Logs(a) => cli::container::run(&client()?, ContainerCmd::Logs(a)).await,
        Command::Stop(a) => cli::container::run(&client()?, ContainerCmd::Stop(a)).await,
        Command::Cluster(cmd) => cli::cluster::run(&client()?, cmd).await,
        Command::Compose(cmd) => cli::compose::run(&client()?, cmd).await,
        Command::Put(a) => cli::objects::put(&client()?, a).await,
        Command::Get(a) => cli::objects::get(&client()?, a).await,
        Command::Ls(a) => cli::objects::ls(&client()?, a).await,
        Command::Rm(a) => cli::objects::rm(&client()?, a).await,
        Command::Versions(a) => cli::objects::versions(&client()?, a).await,
        Command::Scrub(a) => cli::objects::scrub(&client()?, a).await,
        Command::Status => cli::objects::status(&client()?).await,
        Command::Mount(a) => cli::mount::run(a, &data).await,
        Command::LazyRoot(a) => cli::container::lazy_root(&a),
        Command::NodeImage(cmd) => cli::node_image::run(cmd),
        Command::Init | Command::ContainerSetup { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

//! `edgecloud run`, `ps`, `logs`, `stop` and `edgecloud container ...`: containers from
//! the node's images, run by the node itself (crates/containers). Like Docker's, but
//! `rm` and `inspect` live under `container`, since `edgecloud rm` deletes objects.

use anyhow::{Context, bail};
use containers::{ContainerInfo, RunSpec, State};
use futures::StreamExt;
use reqwest::Method;
use std::io::Write;
use std::path::PathBuf;

use crate::cli::client::Client;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Start it and print its id, without waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    /// A name for it (unique on the node).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable K=V (repeatable).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Memory limit: bytes, or with k, m or g (e.g. 256m).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Restart policy: no, always, unless-stopped, on-failure[:MAX].
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Remove it when it exits.
    #[arg(long)]
    pub rm: bool,
    /// none: a network namespace of its own, loopback only; bridge: its own namespace
    /// joined to the node by a veth pair (an address in 10.89.0.0/16); host: the node's
    /// network [default: bridge with --publish, else none]
    #[arg(long, value_parser = ["none", "bridge", "host"])]
    pub network: Option<String>,
    /// Publish a container port on the node: HOST_PORT:CONTAINER_PORT or
    /// IP:HOST_PORT:CONTAINER_PORT (TCP; the node proxies it). Repeatable.
    #[arg(short, long, value_name = "[IP:]HOST:CTR")]
    pub publish: Vec<String>,
    /// Bind a bucket (or a folder in it) into the container: BUCKET[/PREFIX]:/PATH[:ro].
    /// What the container writes there becomes versions of the bucket's objects and
    /// outlives the container. Repeatable.
    #[arg(short, long = "volume", value_name = "BUCKET[/PREFIX]:/PATH[:ro]")]
    pub volume: Vec<String>,
    /// host: run it in the node's user namespace, its root the node's root [default: a
    /// user namespace of its own, its root an unprivileged user of the node, where the
    /// kernel allows it and the network is not host]
    #[arg(long, value_parser = ["host"])]
    pub userns: Option<String>,
    /// In a cluster: run it on a node of this site (the one with most room).
    #[arg(long)]
    pub site: Option<String>,
    /// In a cluster: run it on this node (its id, an id prefix of 4+ characters, or
    /// the host of its node-to-node address, as `cluster status` lists them)
    /// [default: the node with most room]
    #[arg(long)]
    pub node: Option<String>,
    /// The image: NAME[:TAG], sha256:ID or an id prefix (`edgecloud image ls`).
    pub image: String,
    /// The command and its arguments [default: the image's].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Set an environment variable K=V (repeatable).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// The container: name, id or id prefix.
    pub container: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Exited ones too.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The container: name, id or id prefix.
    pub reference: String,
    /// Keep printing until the container ends.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// The containers: names, ids or id prefixes.
    #[arg(required = true)]
    pub references: Vec<String>,
    /// Seconds to wait before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
}

#[derive(clap::Subcommand)]
pub enum ContainerCmd {
    /// Run a command in a new container (same as `edgecloud run`).
    Run(RunArgs),
    /// List containers (same as `edgecloud ps`).
    Ps(PsArgs),
    /// Print a container's output (same as `edgecloud logs`).
    Logs(LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after --time seconds.
    Stop(StopArgs),
    /// Remove containers (their writes and logs go with them).
    Rm {
        /// The containers: names, ids or id prefixes.
        #[arg(required = true)]
        references: Vec<String>,
        /// Kill and remove a running one.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a command in a running container (same as `edgecloud exec`).
    Exec(ExecArgs),
    /// Show a container as JSON.
    Inspect {
        /// The container: name, id or id prefix.
        reference: String,
    },
}

/// `256m`, `1.5g`, `4096` as bytes.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    containers::compose::parse_size(s)
        .with_context(|| format!("memory {s:?}: use bytes or a number with k, m or g"))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn run(c: &Client, cmd: ContainerCmd) -> anyhow::Result<()> {
    match cmd {
        ContainerCmd::Run(a) => run_container(c, a).await,
        ContainerCmd::Ps(PsArgs { all }) => {
            let mut req = c.request(Method::GET, &["containers"]);
            if all {
                req = req.query(&[("all", "true")]);
            }
            let resp = c.send(req).await?;
            let unreached = resp
                .headers()
                .get(admin::containers::UNREACHABLE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let list: Vec<ContainerInfo> = resp
                .json()
                .await
                .context("the node sent a reply this CLI cannot read")?;
            print_table(list);
            if let Some(nodes) = unreached {
                eprintln!("(not listed: the containers of nodes that did not answer: {nodes})");
            }
            Ok(())
        }
        ContainerCmd::Logs(LogsArgs { reference, follow }) => {
            print_logs(c, &reference, follow).await
        }
        ContainerCmd::Stop(StopArgs { references, time }) => {
            for r in references {
                let time = time.to_string();
                let req = c
                    .request(Method::POST, &["containers", &r, "stop"])
                    .query(&[("time", time.as_str())]);
                let info: ContainerInfo = c.json(req).await?;
                println!("{}", info.name.unwrap_or(info.id));
            }
            Ok(())
        }
        ContainerCmd::Rm { references, force } => {
            for r in references {
                let mut req = c.request(Method::DELETE, &["containers", &r]);
                if force {
                    req = req.query(&[("force", "true")]);
                }
                let info: ContainerInfo = c.json(req).await?;
                println!("{}", info.name.unwrap_or(info.id));
            }
            Ok(())
        }
        ContainerCmd::Exec(a) => {
            let body = serde_json::json!({"command": a.command, "env": a.env});
            let done: containers::Executed = c
                .json(
                    c.request(Method::POST, &["containers", &a.container, "exec"])
                        .json(&body),
                )
                .await?;
            print!("{}", done.output);
            std::io::stdout().flush()?;
            if done.truncated {
                eprintln!("(output cut at {} bytes)", containers::MAX_EXEC_OUTPUT);
            }
            match done.exit_code {
                0 => Ok(()),
                code => std::process::exit(code.clamp(1, 255)),
            }
        }
        ContainerCmd::Inspect { reference } => {
            let v: serde_json::Value = c
                .json(c.request(Method::GET, &["containers", &reference]))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}

async fn print_logs(c: &Client, reference: &str, follow: bool) -> anyhow::Result<()> {
    let mut req = c.request(Method::GET, &["containers", reference, "logs"]);
    if follow {
        req = req.query(&[("follow", "true")]);
    }
    let resp = c.send(req).await?;
    let mut body = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(piece) = body.next().await {
        out.write_all(&piece.context("the node ended the log early")?)?;
        out.flush()?;
    }
    Ok(())
}

async fn run_container(c: &Client, a: RunArgs) -> anyhow::Result<()> {
    let spec = RunSpec {
        image: a.image,
        name: a.name,
        command: a.command,
        env: a.env,
        memory: a.memory.as_deref().map(parse_size).transpose()?,
        cpus: a.cpus,
        network: a.network.unwrap_or_default(),
        publish: a.publish,
        volumes: a.volume,
        restart: a.restart,
        // Attached, this command removes it once it has its exit code.
        remove: a.rm && a.detach,
        aliases: Vec::new(),
        userns: a.userns.unwrap_or_default(),
        site: a.site,
        node: a.node,
    };
    let info: ContainerInfo = c
        .json(c.request(Method::POST, &["containers"]).json(&spec))
        .await?;
    if a.detach {
        println!("{}", info.id);
        return Ok(());
    }
    print_logs(c, &info.id, true).await?;
    let done: ContainerInfo = c
        .json(c.request(Method::GET, &["containers", &info.id]))
        .await?;
    if a.rm {
        c.send(c.request(Method::DELETE, &["containers", &info.id]))
            .await?;
    }
    match done.exit_code {
        Some(0) => Ok(()),
        Some(code) if done.state == State::Exited => std::process::exit(code.clamp(1, 255)),
        _ => bail!("the container {} did not end", short(&info.id)),
    }
}

/// What the node starts `edgecloud lazy-root` with (see `containers::lazy_root`).
#[derive(clap::Args)]
pub struct LazyRootArgs {
    /// The image's tree (JSON)
    #[arg(long)]
    tree: PathBuf,
    /// The node's copies of image files
    #[arg(long)]
    cache: PathBuf,
    /// The node's fetch socket
    #[arg(long)]
    socket: PathBuf,
    /// Where first opens are logged
    #[arg(long)]
    reads: PathBuf,
    /// Added to owners' ids (the containers' user namespace)
    #[arg(long, default_value_t = 0)]
    id_shift: u32,
    /// Where to mount it
    mountpoint: PathBuf,
}

/// Serves a lazy root until it is unmounted.
pub fn lazy_root(a: &LazyRootArgs) -> anyhow::Result<()> {
    containers::lazy_root::serve(&containers::lazy_root::Options {
        tree: a.tree.clone(),
        cache: a.cache.clone(),
        socket: a.socket.clone(),
        reads: a.reads.clone(),
        mountpoint: a.mountpoint.clone(),
        id_shift: a.id_shift,
    })?;
    Ok(())
}

/// Containers as `ps` prints them (with their nodes, in a cluster).
pub(crate) fn print_table(list: Vec<ContainerInfo>) {
    let nodes = list.iter().any(|i| i.node.is_some());
    let node_header = if nodes { "NODE              " } else { "" };
    println!(
        "{:<12}  {:<24}  {:<30}  {:<14}  {node_header}NAME",
        "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
    );
    for i in list {
        let mut command = i.command.join(" ");
        if command.len() > 30 {
            command.truncate(27);
            command.push_str("...");
        }
        let status = match (i.state, i.exit_code) {
            (State::Running, _) => "running".to_string(),
            (State::Exited, Some(code)) => format!("exited ({code})"),
            (State::Exited, None) => "exited".to_string(),
        };
        let node = match (nodes, &i.node) {
            (false, _) => String::new(),
            (true, n) => format!("{:<16}  ", n.as_deref().unwrap_or("-")),
        };
        println!(
            "{:<12}  {:<24}  {:<30}  {:<14}  {node}{}",
            short(&i.id),
            i.image,
            command,
            status,
            i.name.unwrap_or_default()
        );
    }
}

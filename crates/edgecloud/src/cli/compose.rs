//! `edgecloud compose up|down|ps`: the services of a `docker-compose.yml` (the common
//! subset, `containers::compose`) as containers of the node, named
//! `PROJECT-SERVICE-1`, reaching one another by service name. In a cluster a project's
//! services run on one node (the one the first service is placed on), since they reach
//! one another through that node.

use std::path::PathBuf;

use anyhow::Context;
use containers::{ContainerInfo, State};
use reqwest::{Method, StatusCode};

use crate::cli::client::Client;

/// Where the compose file is and what the project is called.
#[derive(clap::Args)]
pub struct ProjectArgs {
    /// The compose file
    #[arg(short, long, default_value = "docker-compose.yml", value_name = "FILE")]
    file: PathBuf,
    /// The project's name, which container names start with [default: the file's
    /// `name:`, else its folder's name]
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    project: Option<String>,
}

/// `compose up`: the project, and where in a cluster it runs.
#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// In a cluster: run the project on a node of this site
    #[arg(long)]
    site: Option<String>,
    /// In a cluster: run the project on this node (id, id prefix or host, as `cluster
    /// status` lists them) [default: the node with most room]
    #[arg(long)]
    node: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum ComposeCmd {
    /// Start the file's services, each after those it depends on; a service already
    /// running is left as it is, an ended one is started anew. In a cluster they all
    /// run on one node.
    Up(UpArgs),
    /// Stop and remove the file's services, dependants first.
    Down(ProjectArgs),
    /// List the containers of the file's services.
    Ps(ProjectArgs),
}

fn load(a: &ProjectArgs) -> anyhow::Result<containers::compose::Project> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read the compose file {}", a.file.display()))?;
    let folder = std::fs::canonicalize(&a.file)
        .ok()
        .and_then(|p| {
            p.parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut project = containers::compose::parse(&text, &folder)?;
    if let Some(p) = &a.project {
        // -p wins over `name:`; container names follow the project.
        let name = containers::compose::project_name(p);
        for (service, spec) in &mut project.services {
            if spec.name.as_deref() == Some(&format!("{}-{service}-1", project.name)) {
                spec.name = Some(format!("{name}-{service}-1"));
            }
        }
        project.name = name;
    }
    Ok(project)
}

/// The container named `name`, if there is one.
async fn existing(c: &Client, name: &str) -> anyhow::Result<Option<ContainerInfo>> {
    let resp = c
        .request(Method::GET, &["containers", name])
        .send()
        .await
        .context("cannot reach the node")?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    Ok(Some(
        c.json(c.request(Method::GET, &["containers", name]))
            .await?,
    ))
}

pub async fn run(c: &Client, cmd: ComposeCmd) -> anyhow::Result<()> {
    match cmd {
        ComposeCmd::Up(a) => {
            let project = load(&a.project)?;
            // The node of the first service (None outside a cluster) takes the rest.
            let mut node = a.node;
            for (service, mut spec) in project.services {
                let name = spec.name.clone().unwrap_or_default();
                spec.site = a.site.clone();
                spec.node = node.clone();
                match existing(c, &name).await? {
                    Some(i) if i.state == State::Running => {
                        println!("{name}: running (left as it is)");
                        node = node.or(i.node);
                        continue;
                    }
                    Some(_) => {
                        c.send(c.request(Method::DELETE, &["containers", &name]))
                            .await?;
                    }
                    None => {}
                }
                let info: ContainerInfo = c
                    .json(c.request(Method::POST, &["containers"]).json(&spec))
                    .await
                    .with_context(|| format!("service {service}"))?;
                match &info.node {
                    Some(n) => println!("{name}: started ({}) on node {n}", &info.id[..12]),
                    None => println!("{name}: started ({})", &info.id[..12]),
                }
                node = node.or(info.node);
            }
            Ok(())
        }
        ComposeCmd::Down(a) => {
            let project = load(&a)?;
            for (_, spec) in project.services.iter().rev() {
                let name = spec.name.clone().unwrap_or_default();
                if existing(c, &name).await?.is_some() {
                    c.send(
                        c.request(Method::DELETE, &["containers", &name])
                            .query(&[("force", "true")]),
                    )
                    .await?;
                    println!("{name}: removed");
                }
            }
            Ok(())
        }
        ComposeCmd::Ps(a) => {
            let project = load(&a)?;
            let names: Vec<String> = project
                .services
                .iter()
                .filter_map(|(_, s)| s.name.clone())
                .collect();
            let all: Vec<ContainerInfo> = c
                .json(
                    c.request(Method::GET, &["containers"])
                        .query(&[("all", "true")]),
                )
                .await?;
            crate::cli::container::print_table(
                all.into_iter()
                    .filter(|i| i.name.as_ref().is_some_and(|n| names.contains(n)))
                    .collect(),
            );
            Ok(())
        }
    }
}

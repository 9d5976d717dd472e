//! `edgecloud cluster status|invite|approve|repair|drain|remove|logs`. Status: nodes, sites, disks, health, roles, what the layout
//! survives, and repair progress, from the catalog node's admin API.

use admin::ops::ClusterView;
use reqwest::Method;

use crate::cli::client::Client;

#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// Show nodes, sites, disks, capacity, health and roles, the default redundancy and
    /// which failures it survives, and repair progress.
    Status {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a repair pass now: rebuild missing shards and move shards back to where the
    /// layout places them (it also runs by itself after failures). Follow it with status.
    Repair,
    /// Move every shard off a node before it leaves; it takes no new shards meanwhile.
    /// Refused if the other nodes could not hold the widest policy in use.
    Drain {
        /// Node id (see `cluster status`).
        node: String,
    },
    /// Print a one-time invitation token: a new machine joins with
    /// `edgecloud serve --site SITE --invite TOKEN`, without being given the cluster
    /// secret. The token is valid once, until it expires, and only with this node.
    Invite {
        /// How long the token stays valid (e.g. 30m, 1h, 7d; at most 30 days).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        expires: String,
        /// The address (HOST:PORT of the node-to-node port, 9420) the new machine
        /// should dial, if this node's own is not reachable as it is.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// A machine invitation, for machines booted over the network (put the token in
        /// the boot arguments as edgecloud.invite=TOKEN): not used up, asked with at
        /// every boot. A machine it lists (--mac) is let in at once; any other shows a
        /// code on its console and waits for `edgecloud cluster approve CODE`. It
        /// expires for new machines only; `cluster invites --revoke` ends it for all.
        #[arg(long)]
        machines: bool,
        /// With --machines: a MAC address to let in without approval (repeatable).
        #[arg(long, value_name = "MAC", requires = "machines")]
        mac: Vec<String>,
    },
    /// Let a machine in that waits with a machine invitation: CODE is what its console
    /// shows. Without CODE, list the machines waiting at this node. An approved machine
    /// is let in at every later boot too (its MAC joins the invitation).
    Approve {
        /// The code the waiting machine shows (XXXX-XXXX).
        code: Option<String>,
    },
    /// List the invitations issued (open, used, revoked, expired), or revoke an open one.
    Invites {
        /// Revoke this invitation (its id, or the start of it), so its token gets nothing.
        #[arg(long, value_name = "ID")]
        revoke: Option<String>,
    },
    /// Print a node's recent log lines (the last 2000 are kept in its memory), asked
    /// through this node: how to read a booted node's console from anywhere. On a
    /// booted node, init's own lines (address, disks, secrets) come first.
    Logs {
        /// Node id (see `cluster status`); this node's own without it.
        node: Option<String>,
        /// How many of the last lines.
        #[arg(long, short = 'n', default_value_t = 200, value_name = "N")]
        lines: usize,
    },
    /// Take a node out for good: a drained node that holds no shards, or a down node
    /// whose shards were all rebuilt elsewhere. Its identity is refused from then on.
    Remove {
        /// Node id (see `cluster status`).
        node: String,
    },
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

pub async fn run(c: &Client, cmd: ClusterCmd) -> anyhow::Result<()> {
    let json = match cmd {
        ClusterCmd::Status { json } => json,
        ClusterCmd::Drain { node } => {
            c.send(c.request(Method::POST, &["cluster", "nodes", &node, "drain"]))
                .await?;
            println!("node {node} is draining; `edgecloud cluster status` shows its shards leave");
            return Ok(());
        }
        ClusterCmd::Remove { node } => {
            c.send(c.request(Method::DELETE, &["cluster", "nodes", &node]))
                .await?;
            println!("node {node} removed from the cluster");
            return Ok(());
        }
        ClusterCmd::Invite {
            expires,
            address,
            machines,
            mac,
        } => {
            let ttl = node::settings::parse_duration(&expires)?;
            let mut req = c
                .request(Method::POST, &["cluster", "invites"])
                .query(&[("ttl", ttl.as_secs().max(1).to_string())]);
            if let Some(a) = &address {
                req = req.query(&[("addr", a)]);
            }
            if machines {
                req = req.query(&[("machines", "true".to_string()), ("mac", mac.join(","))]);
            }
            let issued: admin::invites::Issued = c.json(req).await?;
            println!("{}", issued.token);
            if machines {
                eprintln!(
                    "machine invitation {}: boot machines with edgecloud.invite={}. {} listed; any other waits for `edgecloud cluster approve CODE` for {}. (`edgecloud cluster invites --revoke {}` ends it)",
                    issued.id,
                    issued.token,
                    if mac.is_empty() {
                        "No machine is".to_string()
                    } else {
                        format!("{} machine(s)", mac.len())
                    },
                    humantime::format_duration(ttl),
                    issued.id
                );
                return Ok(());
            }
            eprintln!(
                "invitation {}: valid once, for {}, to join through {}. On the new machine run:\n  edgecloud serve --site SITE --invite {}\n(`edgecloud cluster invites --revoke {}` withdraws it)",
                issued.id,
                humantime::format_duration(ttl),
                issued.addr,
                issued.token,
                issued.id
            );
            return Ok(());
        }
        ClusterCmd::Invites { revoke: Some(id) } => {
            c.send(c.request(Method::DELETE, &["cluster", "invites", &id]))
                .await?;
            println!("invitation {id} revoked");
            return Ok(());
        }
        ClusterCmd::Invites { revoke: None } => {
            let list: Vec<admin::invites::Listed> = c
                .json(c.request(Method::GET, &["cluster", "invites"]))
                .await?;
            if list.is_empty() {
                println!("no invitations issued; `edgecloud cluster invite` makes one");
                return Ok(());
            }
            let when = |ms: u64| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
                .to_string()
            };
            println!(
                "{:<13} {:<8} {:<21} {:<21} {:<22} USED BY",
                "ID", "STATE", "ISSUED", "EXPIRES", "THROUGH"
            );
            for i in list {
                println!(
                    "{:<13} {:<8} {:<21} {:<21} {:<22} {}",
                    i.id,
                    i.state,
                    when(i.record.created_ms),
                    when(i.record.expires_ms),
                    i.record.issued_by,
                    match i.record.machines {
                        true => format!("{} MAC(s) admitted", i.record.macs.len()),
                        false => i.record.redeemed_by.unwrap_or_else(|| "-".into()),
                    }
                );
            }
            return Ok(());
        }
        ClusterCmd::Approve { code: None } => {
            let list: Vec<admin::invites::WaitingMachine> = c
                .json(c.request(Method::GET, &["cluster", "join-requests"]))
                .await?;
            if list.is_empty() {
                println!("no machine waits for approval at this node");
                return Ok(());
            }
            println!("{:<10} {:<22} {:<13} MACS", "CODE", "FROM", "INVITATION");
            for w in list {
                println!(
                    "{:<10} {:<22} {:<13} {}",
                    w.code,
                    w.from,
                    w.invitation,
                    w.macs.join(",")
                );
            }
            return Ok(());
        }
        ClusterCmd::Approve { code: Some(code) } => {
            let w: admin::invites::WaitingMachine = c
                .json(c.request(Method::POST, &["cluster", "join-requests", &code]))
                .await?;
            println!(
                "machine {} ({}) approved: it joins now, and at every later boot",
                w.macs.join(","),
                w.from
            );
            return Ok(());
        }
        ClusterCmd::Logs { node, lines } => {
            let node = node.as_deref().unwrap_or("self");
            let logs: admin::node_logs::NodeLogs = c
                .json(
                    c.request(Method::GET, &["cluster", "nodes", node, "logs"])
                        .query(&[("lines", lines)]),
                )
                .await?;
            for line in logs.lines {
                println!("{line}");
            }
            return Ok(());
        }
        ClusterCmd::Repair => {
            c.send(c.request(Method::POST, &["cluster", "repair"]))
                .await?;
            println!("repair pass requested; follow it with `edgecloud cluster status`");
            return Ok(());
        }
    };
    let v: ClusterView = c.json(c.request(Method::GET, &["cluster"])).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(s) = &v.status {
        let members = s
            .nodes
            .iter()
            .filter(|n| n.info.state != cluster::NodeState::Removed)
            .count();
        println!(
            "layout epoch {} · {} node(s) in {} site(s) · this node {}",
            s.epoch,
            members,
            s.sites.len(),
            s.me
        );
        println!(
            "{:<17} {:<10} {:<22} {:<10} {:<8} {:>7} {:>6} {:>8} {:>22}  CONTAINERS, TASKS, MEMORY RESERVED",
            "NODE", "SITE", "ADDRESS", "STATE", "ROLE", "SEEN", "DISKS", "SHARDS", "FREE / TOTAL",
        );
        for n in &s.nodes {
            let state = if n.suspected {
                "suspected".to_string()
            } else {
                format!("{:?}", n.info.state).to_lowercase()
            };
            let seen = n.seen_ms_ago.map_or("never".to_string(), |ms| {
                format!("{:.1}s", ms as f64 / 1000.0)
            });
            let shards: u64 = n.disk_health.iter().map(|d| d.shards).sum();
            let free: u64 = n.disk_health.iter().map(|d| d.bytes_free).sum();
            let total: u64 = n.disk_health.iter().map(|d| d.bytes_total).sum();
            let bad = n.disk_health.iter().filter(|d| !d.ok).count();
            let work = n.capacity.as_ref().map_or("-".to_string(), |c| {
                format!(
                    "{}, {}, {} of {}",
                    c.load.containers,
                    c.load.tasks,
                    gib(c.load.memory_reserved),
                    gib(c.memory_total)
                )
            });
            println!(
                "{:<17} {:<10} {:<22} {:<10} {:<8} {:>7} {:>6} {:>8} {:>22}  {}",
                n.info.id.0,
                n.info.site,
                n.info.rpc_addr,
                state,
                n.role,
                seen,
                if bad > 0 {
                    format!("{}!{bad}", n.info.disks.len())
                } else {
                    n.info.disks.len().to_string()
                },
                shards,
                format!("{} / {}", gib(free), gib(total)),
                work,
            );
            if let Some(e) = &n.error {
                println!("{:<17} last error: {e}", "");
            }
        }
        println!("catalog: {}", catalog_survives(&s.nodes));
    } else {
        println!("not part of a cluster");
    }
    println!("new buckets: {}", v.survives);
    let r = &v.repair;
    match &r.report {
        None => println!("repair: no pass yet"),
        Some(rep) => println!(
            "repair: {}{} pass(es); {} chunks checked, {} shards missing, {} repaired, {} moved back, {} unrecoverable{}",
            if r.running { "running; " } else { "idle; " },
            r.passes,
            rep.chunks_checked,
            rep.shards_missing,
            rep.shards_repaired,
            rep.stray_shards_removed,
            rep.chunks_unrecoverable.len(),
            if !r.running && r.healthy {
                " · every chunk at full redundancy"
            } else {
                ""
            }
        ),
    }
    Ok(())
}

/// The catalog's voters by site and what losing some of them leaves: a majority of the
/// voters must answer for any change or read barrier.
fn catalog_survives(nodes: &[cluster::NodeStatus]) -> String {
    let mut per_site: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in nodes
        .iter()
        .filter(|n| n.role == "leader" || n.role == "voter")
    {
        *per_site.entry(n.info.site.as_str()).or_default() += 1;
    }
    let voters: usize = per_site.values().sum();
    if voters == 0 {
        return "no voters known yet".into();
    }
    let spare = (voters - 1) / 2;
    let sites = per_site
        .iter()
        .map(|(site, k)| format!("{site} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let site_loss = if per_site.len() > 1 && per_site.values().all(|&k| k <= spare) {
        ", or any one site"
    } else {
        ""
    };
    match spare {
        0 => format!("{voters} voter(s) ({sites}): every one is needed"),
        _ => format!("{voters} voters ({sites}): goes on after losing any {spare}{site_loss}"),
    }
}

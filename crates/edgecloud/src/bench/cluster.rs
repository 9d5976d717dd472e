//! `edgecloud bench --cluster`: starts a 3-site, 6-node cluster of this binary on
//! 127.0.0.101-106 and one node with six disks (same ec:4+2) on 127.0.0.100, runs the
//! S3 benchmark against both, then measures storage overhead, a compute job against
//! downloading its input, and the repair of one node's data after it is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::bench::Rng;
use crate::bench::net::{S3Target, Store};

const ACCESS: &str = "BENCHACCESSKEY";
const SECRET: &str = "bench-secret-key-0123456789";

struct Node {
    child: Child,
    data: PathBuf,
    ip: String,
}

impl Node {
    fn start(
        exe: &Path,
        root: &Path,
        ip: &str,
        site: &str,
        disks: usize,
        join: Option<&str>,
    ) -> anyhow::Result<Node> {
        let data = root.join(ip);
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--data"]).arg(&data);
        cmd.args(["--bind", ip, "--site", site, "--down-after", "2s"]);
        for d in 0..disks {
            cmd.arg("--disk").arg(data.join(format!("d{d}")));
        }
        if let Some(j) = join {
            cmd.args(["--join", j, "--secret-file"])
                .arg(root.join("127.0.0.101").join("cluster.secret"));
        }
        let child = cmd
            .env("EDGECLOUD_ACCESS_KEY", ACCESS)
            .env("EDGECLOUD_SECRET_KEY", SECRET)
            .env("EDGECLOUD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.join("serve.log"))?)
            .spawn()
            .context("cannot start edgecloud serve")?;
        let node = Node {
            child,
            data,
            ip: ip.to_string(),
        };
        node.wait_port(9420)?;
        Ok(node)
    }

    fn wait_port(&self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((self.ip.as_str(), port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {} did not start: see {}",
                self.ip,
                self.data.join("serve.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn shard_bytes(n: &Node) -> u64 {
    (0..6).map(|d| du(&n.data.join(format!("d{d}")))).sum()
}

async fn cluster_view(admin: &reqwest::Client, n: &Node) -> anyhow::Result<serde_json::Value> {
    let token = std::fs::read_to_string(n.data.join(admin::TOKEN_FILE))?;
    Ok(admin
        .get(format!("http://{}:9410/v1/cluster", n.ip))
        .bearer_auth(token.trim())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// 4 KiB GETs through a gateway that does not lead the catalog: each read asks the
/// leader for its read index (concurrent reads share one request).
async fn reads_through_another_node(
    leader: &S3Target,
    other: &S3Target,
    quick: bool,
) -> anyhow::Result<()> {
    use crate::bench::net::{S3Client, S3Store, small_gets, timed};
    let (writer, reader) = (S3Client::new(leader)?, S3Client::new(other)?);
    writer
        .send(reqwest::Method::PUT, "/elsewhere", &[], None)
        .await?;
    let count = if quick { 300 } else { 3000 };
    let mut rng = Rng::new(13);
    let bodies: Vec<Bytes> = (0..count).map(|_| Bytes::from(rng.bytes(4096))).collect();
    let put = S3Store::new(&writer, "elsewhere");
    timed(count, 16, |i| {
        let (put, name, body) = (&put, format!("s{i:06}"), bodies[i].clone());
        async move { put.put(&name, body).await }
    })
    .await?;
    println!(
        "4 KiB objects read through a node that does not lead ({}):",
        other.url
    );
    let get = S3Store::new(&reader, "elsewhere");
    for conc in [1usize, 32] {
        small_gets(&get, count, conc, |i| format!("s{i:06}")).await?;
    }
    Ok(())
}

/// A word count job on the cluster (tasks next to their data) against the naive way:
/// download every object through S3 to one process, then run the same code there.
async fn jobs_on_the_cluster(
    client: &crate::bench::net::S3Client,
    admin: &reqwest::Client,
    contact: &Node,
    quick: bool,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let (objects, size) = if quick { (24, 1 << 20) } else { (96, 4 << 20) };
    client
        .send(reqwest::Method::PUT, "/corpus", &[], None)
        .await?;
    let store = crate::bench::net::S3Store::new(client, "corpus");
    let mut rng = Rng::new(17);
    for i in 0..objects {
        store
            .put(
                &format!("t/{i:04}.txt"),
                Bytes::from(crate::bench::text(&mut rng, size)),
            )
            .await?;
    }
    let total = (objects * size) as u64;
    println!(
        "word count job over {objects} x {} MiB of text (Lua), ec:4+2:",
        size >> 20
    );
    let token = std::fs::read_to_string(contact.data.join(admin::TOKEN_FILE))?;
    let base = format!("http://{}:9410/v1/jobs", contact.ip);
    let spec = serde_json::json!({
        "bucket": "corpus", "prefix": "t/", "code": crate::bench::jobs::WORD_COUNT,
        "output": "out/wc.jsonl",
    });
    let started = Instant::now();
    let info: serde_json::Value = admin
        .post(&base)
        .bearer_auth(token.trim())
        .json(&spec)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let info = loop {
        let i: serde_json::Value = admin
            .get(format!("{base}/{id}"))
            .bearer_auth(token.trim())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if i["state"] != "running" {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let job_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        info["state"] == "succeeded",
        "the job failed: {}",
        info["error"]
    );
    let n = |k: &str| info[k].as_u64().unwrap_or(0);
    let shards = (n("bytes_local") + n("bytes_site") + n("bytes_cross_site")).max(1) as f64;
    crate::bench::row(
        "job on the cluster",
        format!(
            "{}   {} of {} tasks on their data's node; shard bytes {:.0}% local, {:.0}% site, {:.0}% across",
            crate::bench::mbps(total, job_secs),
            n("tasks_remote"),
            n("tasks_total"),
            100.0 * n("bytes_local") as f64 / shards,
            100.0 * n("bytes_site") as f64 / shards,
            100.0 * n("bytes_cross_site") as f64 / shards,
        ),
    );

    // The naive way: every object downloaded (8 at a time), then one process.
    let t = Instant::now();
    let bodies: Vec<Vec<u8>> = futures::stream::iter((0..objects).map(|i| async move {
        let r = client
            .send(
                reqwest::Method::GET,
                &format!("/corpus/t/{i:04}.txt"),
                &[],
                None,
            )
            .await?;
        anyhow::Ok(r.bytes().await?.to_vec())
    }))
    .buffered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;
    let download = t.elapsed().as_secs_f64();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let task = jobs::lua::LuaTask::new(
            crate::bench::jobs::WORD_COUNT,
            &crate::bench::jobs::ONE_PROCESS,
            Arc::new(AtomicBool::new(false)),
        )?;
        let o = task.object("all", "null", 0)?;
        for body in &bodies {
            for line in body.split(|b| *b == b'\n') {
                task.map(line, &o)?;
            }
        }
        task.finish()?;
        Ok(())
    })
    .await??;
    let naive = t.elapsed().as_secs_f64();
    crate::bench::row(
        "naive: download all, then one process",
        format!(
            "{}   (download {:.1} s); the job is {:.1}x faster",
            crate::bench::mbps(total, naive),
            download,
            naive / job_secs
        ),
    );
    Ok(())
}

fn target(ip: &str) -> S3Target {
    S3Target {
        url: format!("http://{ip}:9400"),
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        region: "us-east-1".into(),
    }
}

pub async fn run(quick: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let tmp = tempfile::Builder::new()
        .prefix("edgecloud-clusterbench-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())?;
    let root = tmp.path();
    println!(
        "cluster benchmark: 6 nodes in 3 sites (127.0.0.101-106) vs 1 node with 6 disks (127.0.0.100)"
    );

    let single = Node::start(&exe, root, "127.0.0.100", "main", 6, None)?;
    single.wait_port(9400)?;
    println!("\n== one node, six disks, ec:4+2 ==");
    crate::bench::net::run_s3(target("127.0.0.100"), quick).await?;
    drop(single);

    let mut nodes = vec![Node::start(&exe, root, "127.0.0.101", "s1", 1, None)?];
    for i in 2..=6u32 {
        let site = format!("s{}", i.div_ceil(2));
        nodes.push(Node::start(
            &exe,
            root,
            &format!("127.0.0.10{i}"),
            &site,
            1,
            Some("127.0.0.101:9420"),
        )?);
    }
    nodes[0].wait_port(9400)?;
    let admin = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster_view(&admin, &nodes[0]).await?;
        if v["policy"] == "ec:4+2" {
            println!(
                "\n== six nodes, three sites: {} ==",
                v["survives"].as_str().unwrap_or("")
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the six nodes did not form a cluster"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::bench::net::run_s3(target("127.0.0.101"), quick).await?;
    reads_through_another_node(&target("127.0.0.101"), &target("127.0.0.102"), quick).await?;

    // Storage overhead and repair: store a data set, kill one node, time its rebuild.
    let total: usize = if quick { 48 << 20 } else { 512 << 20 };
    let client = crate::bench::net::S3Client::new(&target("127.0.0.101"))?;
    client
        .send(reqwest::Method::PUT, "/overhead", &[], None)
        .await?;
    let store = crate::bench::net::S3Store::new(&client, "overhead");
    let before: u64 = nodes.iter().map(shard_bytes).sum();
    let mut rng = Rng::new(3);
    let object = 8 << 20;
    for i in 0..total / object {
        store
            .put(&format!("o{i}"), Bytes::from(rng.bytes(object)))
            .await?;
    }
    let stored: u64 = nodes.iter().map(shard_bytes).sum::<u64>() - before;
    println!("storage for {} MiB of incompressible objects:", total >> 20);
    crate::bench::row(
        "shard bytes on all disks / logical bytes",
        format!(
            "{:8.2}x   (3-way replication: 3.00x; this saves {:.0}% of its disks)",
            stored as f64 / total as f64,
            100.0 * (1.0 - stored as f64 / (3.0 * total as f64))
        ),
    );

    jobs_on_the_cluster(&client, &admin, &nodes[0], quick).await?;

    let victim = nodes.len() - 1;
    let lost = shard_bytes(&nodes[victim]);
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    nodes[victim].kill();
    let killed = Instant::now();
    let mut down_at = None;
    // Each repair pass as it ends: (started, seconds after the kill; how long; shards).
    let mut passes: Vec<(f64, f64, u64)> = Vec::new();
    let mut passes_seen = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = cluster_view(&admin, &nodes[0]).await?;
        let nodes_v = v["status"]["nodes"].as_array().cloned().unwrap_or_default();
        if down_at.is_none() && nodes_v.iter().any(|n| n["state"] == "down") {
            down_at = Some(Instant::now());
        }
        let r = &v["repair"];
        let count = r["passes"].as_u64().unwrap_or(0);
        if passes_seen.is_some_and(|seen| count > seen) {
            passes.push((
                r["last_started"].as_f64().unwrap_or(0.0) - killed_at,
                r["last_seconds"].as_f64().unwrap_or(0.0),
                r["report"]["shards_repaired"].as_u64().unwrap_or(0),
            ));
        }
        passes_seen = Some(count);
        if down_at.is_some()
            && r["last_started"].as_f64().unwrap_or(0.0) > killed_at
            && r["running"] == false
            && r["healthy"] == true
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "repair did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rebuild = down_at.map_or(Duration::ZERO, |d| d.elapsed());
    println!("repair after killing one node (declared down after 2 s):");
    crate::bench::row(
        &format!(
            "rebuild {:.1} MiB of its shards",
            lost as f64 / (1 << 20) as f64
        ),
        format!(
            "{:8.2} GB/min   ({:.1} s from down to full redundancy; {:.1} s from the kill)",
            lost as f64 / 1e9 / rebuild.as_secs_f64().max(1e-9) * 60.0,
            rebuild.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        ),
    );
    for (started, took, shards) in passes {
        crate::bench::row(
            "  a repair pass",
            format!(
                "{took:8.1} s    (started {started:.1} s after the kill; {shards} shards rebuilt or moved)"
            ),
        );
    }
    Ok(())
}

//! Client commands: each parses its arguments, calls the admin API and prints.

use std::path::PathBuf;

use admin::types::*;
use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::cli::client::Client;

/// Splits "bucket/key/with/slashes" into ("bucket", "key/with/slashes").
fn split_path(p: &str) -> (&str, &str) {
    match p.split_once('/') {
        Some((b, k)) => (b, k),
        None => (p, ""),
    }
}

pub(crate) fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    // Only large transfers get a bar; small ones would just flicker.
    if len.is_some_and(|n| n < 8 << 20) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

#[derive(clap::Subcommand)]
pub enum BucketCmd {
    /// Create a bucket.
    Create {
        name: String,
        /// none, replicate:N or ec:K+M [default: the node's default]
        #[arg(long)]
        policy: Option<String>,
        /// enabled (keep every version), suspended or off (S3's unversioned)
        #[arg(long, default_value = "enabled")]
        versioning: String,
    },
    /// List buckets.
    List,
    /// Delete an empty bucket.
    Delete { name: String },
    /// Set versioning: enabled or suspended.
    Versioning { name: String, state: String },
}

pub async fn bucket(c: &Client, cmd: BucketCmd) -> anyhow::Result<()> {
    match cmd {
        BucketCmd::Create {
            name,
            policy,
            versioning,
        } => {
            let mut q = vec![("versioning", versioning)];
            if let Some(p) = policy {
                q.push(("policy", p));
            }
            let b: BucketInfo = c
                .json(c.request(Method::PUT, &["buckets", &name]).query(&q))
                .await?;
            println!(
                "created bucket {} (policy {}, versioning {})",
                b.name, b.policy, b.versioning
            );
        }
        BucketCmd::List => {
            let list: Vec<BucketInfo> = c.json(c.request(Method::GET, &["buckets"])).await?;
            for b in list {
                let mut extra = String::new();
                if let Some(l) = &b.object_lock {
                    extra.push_str(&format!("  object lock {l}"));
                }
                if b.lifecycle_rules > 0 {
                    extra.push_str(&format!("  lifecycle {} rule(s)", b.lifecycle_rules));
                }
                println!(
                    "{:<30} {:<12} {:<10} {}{extra}",
                    b.name, b.policy, b.versioning, b.created
                );
            }
        }
        BucketCmd::Delete { name } => {
            c.send(c.request(Method::DELETE, &["buckets", &name]))
                .await?;
            println!("deleted bucket {name}");
        }
        BucketCmd::Versioning { name, state } => {
            let b: BucketInfo = c
                .json(
                    c.request(Method::PUT, &["buckets", &name, "versioning"])
                        .query(&[("state", state)]),
                )
                .await?;
            println!("bucket {}: versioning {}", b.name, b.versioning);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PutArgs {
    /// Local file, or - for standard input
    pub file: PathBuf,
    /// BUCKET/KEY; with BUCKET or BUCKET/PREFIX/ the file name is appended
    pub target: String,
    /// Content type stored with the object
    #[arg(long)]
    pub content_type: Option<String>,
}

pub async fn put(c: &Client, a: PutArgs) -> anyhow::Result<()> {
    let (bucket, key) = split_path(&a.target);
    let name = a
        .file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let key = if key.is_empty() || key.ends_with('/') {
        format!("{key}{name}")
    } else {
        key.to_string()
    };
    if key.is_empty()
        || a.file.as_os_str() == "-" && (a.target.ends_with('/') || !a.target.contains('/'))
    {
        bail!("give the key to store standard input under: edgecloud put - BUCKET/KEY");
    }
    let (body, len) = if a.file.as_os_str() == "-" {
        let s = tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), 1 << 20);
        (reqwest::Body::wrap_stream(s), None)
    } else {
        let f = tokio::fs::File::open(&a.file)
            .await
            .with_context(|| format!("cannot open {}", a.file.display()))?;
        let len = f.metadata().await?.len();
        let pb = progress(Some(len), &key);
        let s = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |r| {
            if let Ok(b) = r {
                pb.inc(b.len() as u64);
            }
        });
        (reqwest::Body::wrap_stream(s), Some(len))
    };
    let mut req = c
        .request(Method::PUT, &["objects", bucket, &key])
        .body(body);
    if let Some(ct) = a.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if let Some(len) = len {
        req = req.header(reqwest::header::CONTENT_LENGTH, len);
    }
    let v: ObjectInfo = c.json(req).await?;
    println!(
        "{bucket}/{}  {} bytes  version {}  etag {}",
        v.key, v.size, v.version_id, v.etag
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// BUCKET/KEY
    pub source: String,
    /// Where to write: a file, or - for standard output [default: the key's file name]
    pub file: Option<PathBuf>,
    /// A specific version id
    #[arg(long)]
    pub version: Option<String>,
    /// The version current at this RFC 3339 instant, e.g. 2026-11-25T10:00:00Z
    #[arg(long)]
    pub as_of: Option<String>,
    /// A byte range, e.g. 0-1023 or -500 (the last 500 bytes)
    #[arg(long)]
    pub range: Option<String>,
}

pub async fn get(c: &Client, a: GetArgs) -> anyhow::Result<()> {
    let (bucket, key) = split_path(&a.source);
    if key.is_empty() {
        bail!("give an object as BUCKET/KEY");
    }
    let mut req = c.request(Method::GET, &["objects", bucket, key]);
    if let Some(v) = &a.version {
        req = req.query(&[("version", v)]);
    }
    if let Some(t) = &a.as_of {
        req = req.query(&[("as_of", t)]);
    }
    if let Some(r) = &a.range {
        req = req.header(reqwest::header::RANGE, format!("bytes={r}"));
    }
    let resp = c.send(req).await?;
    let len = resp.content_length();
    let out = a
        .file
        .unwrap_or_else(|| PathBuf::from(key.rsplit('/').next().unwrap_or(key)));
    let to_stdout = out.as_os_str() == "-";
    let mut w: Box<dyn tokio::io::AsyncWrite + Unpin> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&out)
                .await
                .with_context(|| format!("cannot create {}", out.display()))?,
        )
    };
    let pb = progress(len, key);
    let mut got = 0u64;
    let mut s = resp.bytes_stream();
    while let Some(piece) = s.next().await {
        let piece =
            piece.context("the download broke off; nothing after this point was written")?;
        w.write_all(&piece).await?;
        got += piece.len() as u64;
        pb.inc(piece.len() as u64);
    }
    w.flush().await?;
    pb.finish_and_clear();
    if len.is_some_and(|l| l != got) {
        bail!("short download: got {got} of {} bytes", len.unwrap_or(0));
    }
    if !to_stdout {
        eprintln!("{bucket}/{key} -> {} ({got} bytes)", out.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// BUCKET or BUCKET/PREFIX (no argument lists buckets)
    pub path: Option<String>,
    /// List every key, not one level of folders
    #[arg(long, short)]
    pub recursive: bool,
    /// List the bucket as it was at this RFC 3339 instant
    #[arg(long)]
    pub as_of: Option<String>,
}

pub async fn ls(c: &Client, a: LsArgs) -> anyhow::Result<()> {
    let Some(path) = a.path else {
        return bucket(c, BucketCmd::List).await;
    };
    let (bucket, prefix) = split_path(&path);
    let mut marker: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = vec![("prefix", prefix.to_string())];
        if !a.recursive {
            q.push(("delimiter", "/".into()));
        }
        if let Some(m) = &marker {
            q.push(("start_after", m.clone()));
        }
        if let Some(t) = &a.as_of {
            q.push(("as_of", t.clone()));
        }
        let page: ListResult = c
            .json(c.request(Method::GET, &["list", bucket]).query(&q))
            .await?;
        for p in &page.prefixes {
            println!("{:>12}  {:<20}  {p}", "DIR", "");
        }
        for o in &page.objects {
            println!("{:>12}  {:<20}  {}", o.size, o.modified, o.key);
        }
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// BUCKET/KEY
    pub target: String,
    /// Delete this version for good (instead of adding a delete marker)
    #[arg(long)]
    pub version: Option<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> anyhow::Result<()> {
    let (bucket, key) = split_path(&a.target);
    if key.is_empty() {
        bail!("give an object as BUCKET/KEY");
    }
    let mut req = c.request(Method::DELETE, &["objects", bucket, key]);
    if let Some(v) = &a.version {
        req = req.query(&[("version", v)]);
    }
    let d: DeleteResult = c.json(req).await?;
    match (a.version, d.delete_marker) {
        (Some(v), _) => println!("deleted version {v} of {bucket}/{key}"),
        (None, true) => println!(
            "deleted {bucket}/{key} (delete marker {}; older versions are kept)",
            d.version_id.unwrap_or_default()
        ),
        (None, false) => println!("deleted {bucket}/{key}"),
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct VersionsArgs {
    /// BUCKET or BUCKET/PREFIX
    pub path: String,
}

pub async fn versions(c: &Client, a: VersionsArgs) -> anyhow::Result<()> {
    let (bucket, prefix) = split_path(&a.path);
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let mut q: Vec<(&str, String)> = vec![("prefix", prefix.to_string())];
        if let Some(k) = &km {
            q.push(("key_marker", k.clone()));
        }
        if let Some(v) = &vm {
            q.push(("version_id_marker", v.clone()));
        }
        let page: VersionsResult = c
            .json(c.request(Method::GET, &["versions", bucket]).query(&q))
            .await?;
        for v in &page.versions {
            let size = if v.delete_marker {
                "(deleted)".to_string()
            } else {
                v.size.to_string()
            };
            let latest = if v.is_latest { "latest" } else { "" };
            println!(
                "{:<34} {:>12}  {:<20}  {:<6}  {}",
                v.version_id, size, v.modified, latest, v.key
            );
        }
        if !page.truncated {
            break;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ScrubArgs {
    /// Also delete garbage past its grace period (unreferenced chunks, orphan shards)
    #[arg(long)]
    pub gc: bool,
}

pub async fn scrub(c: &Client, a: ScrubArgs) -> anyhow::Result<()> {
    let pb = ProgressBar::new_spinner();
    pb.set_message("scrubbing: reading and verifying every shard");
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    let res: ScrubResult = c
        .json(c.request(Method::POST, &["scrub"]).query(&[("gc", a.gc)]))
        .await?;
    pb.finish_and_clear();
    let r = &res.report;
    println!(
        "checked {} chunks ({} shards, {:.1} MB) in {:.1}s\nmissing {}, corrupt {}, repaired {}",
        r.chunks_checked,
        r.shards_checked,
        r.bytes_read as f64 / 1e6,
        res.seconds,
        r.shards_missing,
        r.shards_corrupt,
        r.shards_repaired
    );
    if a.gc {
        println!(
            "collected {} unreferenced chunks, {} orphan shards, {} expired history versions; reclaimed {:.1} MB",
            r.chunks_collected,
            r.orphan_shards_removed,
            r.history_versions_expired,
            r.bytes_reclaimed as f64 / 1e6
        );
    }
    if !r.chunks_unrecoverable.is_empty() {
        bail!(
            "{} chunks have lost more shards than their redundancy allows and cannot be rebuilt: {}",
            r.chunks_unrecoverable.len(),
            r.chunks_unrecoverable.join(", ")
        );
    }
    println!("all data at full redundancy");
    Ok(())
}

pub async fn status(c: &Client) -> anyhow::Result<()> {
    let s: Status = c.json(c.request(Method::GET, &["status"])).await?;
    println!(
        "edgecloud {}  data {}  buckets {}  default policy {}",
        s.version, s.data_dir, s.buckets, s.default_policy
    );
    for d in s.disks {
        println!(
            "  disk {:<40} {:>8} shards {:>4} segments {:>10.1} MB",
            d.path,
            d.shards,
            d.segments,
            d.bytes as f64 / 1e6
        );
    }
    Ok(())
}

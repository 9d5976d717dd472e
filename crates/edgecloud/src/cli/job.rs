//! `edgecloud job`: run map/reduce code next to the data, watch it, read its logs,
//! cancel it. The node does the work (crates/jobs); this submits and reports.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use jobs::{InputMode, JobInfo, JobSpec, JobState, Limits};
use reqwest::Method;

use crate::cli::client::Client;

#[derive(clap::Subcommand)]
pub enum JobCmd {
    /// Run CODE over the objects of BUCKET[/PREFIX] and wait for the result (a progress
    /// bar shows tasks done). CODE (Lua, JavaScript, Python, or WebAssembly built from Go,
    /// Rust or C) defines `map(record, object)` calling `emit(key, value)`, and optionally
    /// `combine(key, values)` and `reduce(key, values)`. The result is a JSON-lines
    /// object; see docs/jobs.md.
    Run(RunArgs),
    /// Show a job's state and counts.
    Status {
        id: String,
        /// Print the job as JSON (the API's answer).
        #[arg(long)]
        json: bool,
    },
    /// Print what a job's code logged.
    Logs { id: String },
    /// Stop a running job.
    Cancel { id: String },
    /// List the jobs the node remembers, newest first.
    Ls,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The input: BUCKET or BUCKET/PREFIX.
    pub input: String,
    /// The code: a Lua, JavaScript or Python file with `map` (and optionally `combine`,
    /// `reduce`), or a WebAssembly module (.wasm, or .wat text) built for the edgecloud ABI.
    pub code: PathBuf,
    /// lua, javascript, wasm or python [default: by the file: .js javascript, .wasm or
    /// .wat wasm, .py python, else lua]
    #[arg(long)]
    pub runtime: Option<String>,
    /// The output object's key [default: jobs/ID/result.jsonl in the input bucket]
    #[arg(long)]
    pub output: Option<String>,
    /// The output's bucket [default: the input bucket]
    #[arg(long)]
    pub output_bucket: Option<String>,
    /// Pass whole objects to `map` instead of lines.
    #[arg(long)]
    pub objects: bool,
    /// Read the bucket as it was at this instant (RFC 3339) [default: now]
    #[arg(long)]
    pub as_of: Option<String>,
    /// VM instructions per task [default: 20000000000]
    #[arg(long)]
    pub max_instructions: Option<u64>,
    /// Memory per task, MiB [default: 64]
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// Output per task and per job, MiB [default: 64]
    #[arg(long)]
    pub max_output_mb: Option<u64>,
    /// Seconds per task [default: 600]
    #[arg(long)]
    pub max_seconds: Option<u64>,
    /// Run only inputs whose version changed since the last run with this --output and
    /// code; reuse what the others emitted then (kept in OUTPUT.tasks). Needs --output.
    #[arg(long)]
    pub incremental: bool,
    /// Print the job's id and return at once instead of waiting.
    #[arg(long)]
    pub detach: bool,
}

fn print_info(i: &JobInfo) {
    println!("job {} ({:?})", i.id, i.state);
    println!("  input   {}/{} as of {}", i.bucket, i.prefix, i.as_of);
    println!("  code    {} (sha256 {})", i.runtime, i.code_sha256);
    println!(
        "  tasks   {}/{} done, {} records, {} bytes read, {:.2} s",
        i.tasks_done, i.tasks_total, i.records, i.bytes_read, i.seconds
    );
    if i.tasks_reused > 0 {
        println!(
            "  reused  {} inputs unchanged since the last run (--incremental)",
            i.tasks_reused
        );
    }
    if i.tasks_remote + i.tasks_rerun + i.tasks_speculative + i.tasks_moved > 0 {
        println!(
            "  where   {} tasks on the nodes holding their data, {} rerun here, {} copied here for being slow, {} moved after waiting for a busy node",
            i.tasks_remote, i.tasks_rerun, i.tasks_speculative, i.tasks_moved
        );
    }
    let shards = i.bytes_local + i.bytes_site + i.bytes_cross_site;
    if shards > 0 {
        let pct = |b: u64| 100.0 * b as f64 / shards as f64;
        println!(
            "  read    {shards} shard bytes: {:.1}% local, {:.1}% in the site, {:.1}% across sites",
            pct(i.bytes_local),
            pct(i.bytes_site),
            pct(i.bytes_cross_site)
        );
    }
    if i.tasks_by_node.len() > 1 || !i.tasks_by_node.contains_key("here") {
        let ran: Vec<String> = i
            .tasks_by_node
            .iter()
            .map(|(node, n)| format!("{node} {n}"))
            .collect();
        println!("  ran on  {}", ran.join(", "));
    }
    if let Some(o) = &i.output {
        println!(
            "  output  {}/{} version {} ({} keys, {} bytes, sha256 {})",
            o.bucket, o.key, o.version_id, o.keys, o.size, o.sha256
        );
    }
    if let Some(e) = &i.error {
        println!("  error   {e}");
    }
}

async fn get(c: &Client, id: &str) -> anyhow::Result<JobInfo> {
    c.json(c.request(Method::GET, &["jobs", id])).await
}

pub async fn run(c: &Client, cmd: JobCmd) -> anyhow::Result<()> {
    match cmd {
        JobCmd::Run(a) => {
            let bytes = std::fs::read(&a.code)
                .with_context(|| format!("cannot read the job's code from {}", a.code.display()))?;
            // A binary WebAssembly module travels as base64; everything else is text.
            let is_module = bytes.starts_with(b"\0asm");
            let code = if is_module {
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            } else {
                String::from_utf8(bytes).with_context(|| {
                    format!(
                        "{} is neither text nor a WebAssembly module",
                        a.code.display()
                    )
                })?
            };
            let (bucket, prefix) = match a.input.split_once('/') {
                Some((b, p)) => (b.to_string(), p.to_string()),
                None => (a.input.clone(), String::new()),
            };
            let runtime =
                a.runtime
                    .unwrap_or_else(|| match a.code.extension().and_then(|e| e.to_str()) {
                        Some("js" | "mjs") => "javascript".into(),
                        Some("wasm" | "wat") => "wasm".into(),
                        _ if is_module => "wasm".into(),
                        Some("py") => "python".into(),
                        _ => "lua".into(),
                    });
            let d = Limits::default();
            let spec = JobSpec {
                bucket,
                prefix,
                as_of: a.as_of,
                runtime,
                code,
                input: if a.objects {
                    InputMode::Objects
                } else {
                    InputMode::Lines
                },
                output: a.output,
                output_bucket: a.output_bucket,
                limits: Limits {
                    instructions: a.max_instructions.unwrap_or(d.instructions),
                    memory_mb: a.max_memory_mb.unwrap_or(d.memory_mb),
                    output_mb: a.max_output_mb.unwrap_or(d.output_mb),
                    seconds: a.max_seconds.unwrap_or(d.seconds),
                },
                incremental: a.incremental,
            };
            let info: JobInfo = c
                .json(c.request(Method::POST, &["jobs"]).json(&spec))
                .await?;
            if a.detach {
                println!("{}", info.id);
                return Ok(());
            }
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "job {msg} [{bar:30}] {pos}/{len} tasks {elapsed_precise}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            pb.set_message(info.id.clone());
            let done = loop {
                let i = get(c, &info.id).await?;
                pb.set_length(i.tasks_total);
                pb.set_position(i.tasks_done);
                if i.state != JobState::Running {
                    break i;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            pb.finish_and_clear();
            print_info(&done);
            match done.state {
                JobState::Succeeded => Ok(()),
                _ => bail!(
                    "job {} {}: {}",
                    done.id,
                    if done.state == JobState::Cancelled {
                        "was cancelled"
                    } else {
                        "failed"
                    },
                    done.error.unwrap_or_default()
                ),
            }
        }
        JobCmd::Status { id, json } => {
            let i = get(c, &id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print_info(&i);
            }
            Ok(())
        }
        JobCmd::Logs { id } => {
            let logs: admin::jobs::JobLogs = c
                .json(c.request(Method::GET, &["jobs", &id, "logs"]))
                .await?;
            for l in logs.lines {
                println!("{l}");
            }
            Ok(())
        }
        JobCmd::Cancel { id } => {
            c.send(c.request(Method::DELETE, &["jobs", &id])).await?;
            println!("asked job {id} to stop");
            Ok(())
        }
        JobCmd::Ls => {
            let all: Vec<JobInfo> = c.json(c.request(Method::GET, &["jobs"])).await?;
            if all.is_empty() {
                println!("no jobs on this node");
            }
            for i in all {
                println!(
                    "{}  {:<9}  {}/{}  {}/{} tasks  {:.1} s",
                    i.id,
                    format!("{:?}", i.state).to_lowercase(),
                    i.bucket,
                    i.prefix,
                    i.tasks_done,
                    i.tasks_total,
                    i.seconds
                );
            }
            Ok(())
        }
    }
}

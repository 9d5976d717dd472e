//! Compute next to the data: map/reduce jobs over a bucket's objects.
//!
//! A job names its input (a bucket and a prefix, pinned to an instant so a rerun reads
//! the same versions), its code (a `map` function, optional `combine` and `reduce`), and
//! an output key. Each input object version is one task: its bytes stream from the
//! archive into a sandboxed runtime ([`lua`]) record by record (lines, or the whole
//! object), and what `map` emits is grouped by key, folded per task by `combine` and
//! per job by `reduce`. The result is written as an ordinary versioned object (JSON
//! lines, `{"key": ..., "value": ...}` sorted by key), and a `job_run` ledger record
//! ties it to the code's hash and the exact input versions.
//!
//! Today tasks run on the node the job was submitted to (see docs/jobs.md for what
//! remains: placement on the nodes holding each input's shards, other runtimes).

pub mod js;
pub mod lua;
pub mod python;
pub mod sandbox;
pub mod wasm;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use archive::{Archive, ListQuery, PutOptions, VersionSel};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What tasks emitted: values per key.
pub type Emitted = BTreeMap<String, Vec<serde_json::Value>>;

/// Why a job (or one of its tasks) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobError {
    /// The job's code raised an error or is not valid.
    Code(String),
    /// A task hit one of its limits (which one, with its value).
    Limit(String),
    /// The job was cancelled.
    Cancelled,
    /// An input could not be read.
    Input(String),
    /// The result could not be written (or recorded).
    Output(String),
    /// The job itself is not valid (unknown runtime, no such bucket, ...).
    Invalid(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Code(m) => write!(f, "the job's code failed: {m}"),
            JobError::Limit(which) => {
                let knob = match which.split_whitespace().next().unwrap_or("") {
                    "instructions" => "raise limits.instructions",
                    "memory" => "raise limits.memory_mb",
                    "output" => "raise limits.output_mb",
                    "time" => "raise limits.seconds",
                    _ => "recurse less deeply",
                };
                write!(
                    f,
                    "a task went over its {which} limit: {knob}, or make the code cheaper"
                )
            }
            JobError::Cancelled => f.write_str("the job was cancelled"),
            JobError::Input(m) => write!(f, "cannot read an input: {m}"),
            JobError::Output(m) => write!(f, "cannot write the result: {m}"),
            JobError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for JobError {}

/// What each task may use. Defaults suit a few GB of text per job on a small node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Lua VM instructions per task.
    pub instructions: u64,
    /// Memory per task's runtime, MiB.
    pub memory_mb: u64,
    /// Bytes a task, and the whole job's result, may emit, MiB.
    pub output_mb: u64,
    /// Wall-clock seconds per task.
    pub seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instructions: 20_000_000_000,
            memory_mb: 64,
            output_mb: 64,
            seconds: 600,
        }
    }
}

impl Limits {
    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb.min(1 << 20) as usize) << 20
    }
    /// `output_mb` in bytes.
    pub fn output_bytes(&self) -> u64 {
        self.output_mb.min(1 << 30) << 20
    }
    /// `seconds` as a duration.
    pub fn wall_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

/// How `map` sees an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// One call per line (without the newline; a final line without one counts too).
    #[default]
    Lines,
    /// One call per object, with its whole content (it must fit in the memory limit).
    Objects,
}

/// A job as submitted (`POST /v1/jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The input bucket.
    pub bucket: String,
    /// Only objects whose key starts with this.
    #[serde(default)]
    pub prefix: String,
    /// Read the bucket as it was at this instant (RFC 3339); default: when submitted.
    #[serde(default)]
    pub as_of: Option<String>,
    /// "lua".
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// The code: defines `map`, and optionally `combine` and `reduce`.
    pub code: String,
    /// Lines (default) or whole objects.
    #[serde(default)]
    pub input: InputMode,
    /// The output object's key; default `jobs/ID/result.jsonl`.
    #[serde(default)]
    pub output: Option<String>,
    /// The output's bucket; default the input bucket.
    #[serde(default)]
    pub output_bucket: Option<String>,
    /// Limits per task.
    #[serde(default)]
    pub limits: Limits,
    /// Reuse what the last run with this output and code emitted for inputs whose
    /// version has not changed (kept in `OUTPUT.tasks`); needs `output`.
    #[serde(default)]
    pub incremental: bool,
}

fn default_runtime() -> String {
    "lua".into()
}

/// Where a job's state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running its tasks.
    Running,
    /// Done; the output is written.
    Succeeded,
    /// Stopped by an error (see `error`).
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// The job's output object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// The version the job wrote.
    pub version_id: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Keys in the result.
    pub keys: u64,
}

/// A job as `GET /v1/jobs/ID` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: String,
    /// Where it stands.
    pub state: JobState,
    /// Its runtime.
    pub runtime: String,
    /// The input bucket.
    pub bucket: String,
    /// The input prefix.
    pub prefix: String,
    /// The instant the inputs are pinned to (RFC 3339, ns precision).
    pub as_of: String,
    /// SHA-256 of the code, hex.
    pub code_sha256: String,
    /// Who submitted it.
    pub actor: Option<String>,
    /// When it was submitted (RFC 3339).
    pub submitted: String,
    /// Seconds from submission to the end (or until now).
    pub seconds: f64,
    /// Input objects, one task each (known once listed).
    pub tasks_total: u64,
    /// Tasks finished.
    pub tasks_done: u64,
    /// Records passed to `map`.
    pub records: u64,
    /// Input bytes read.
    pub bytes_read: u64,
    /// Tasks run on another node (the one holding their data).
    pub tasks_remote: u64,
    /// Tasks whose node could not be reached, run on this one instead.
    pub tasks_rerun: u64,
    /// Slow tasks that got a speculative copy on this node.
    pub tasks_speculative: u64,
    /// Tasks that waited `locality_wait` for the node holding most of their data and
    /// then ran on another holder or here (delay scheduling).
    #[serde(default)]
    pub tasks_moved: u64,
    /// Inputs whose earlier result was reused (`incremental`).
    #[serde(default)]
    pub tasks_reused: u64,
    /// Tasks done per node (its node-to-node address; "here" for this node).
    pub tasks_by_node: BTreeMap<String, u64>,
    /// Shard bytes the tasks read from the disks of the node each ran on (measured in
    /// the archive's read path; shards are compressed and sealed, so they are not the
    /// plaintext bytes).
    pub bytes_local: u64,
    /// ... on another node of that node's site.
    pub bytes_site: u64,
    /// ... in another site.
    pub bytes_cross_site: u64,
    /// The output, once written.
    pub output: Option<JobOutput>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Log lines kept per job.
const MAX_JOB_LOG_LINES: usize = 10_000;
/// Finished jobs remembered per node (the oldest are forgotten first).
const MAX_JOBS: usize = 1000;

struct Job {
    spec: JobSpec,
    as_of_ns: u64,
    info: Mutex<JobInfo>,
    logs: Mutex<Vec<String>>,
    cancel: Arc<AtomicBool>,
    started: std::time::Instant,
    /// How long finished tasks took, for spotting a slow one.
    times: Mutex<Vec<std::time::Duration>>,
}

impl Job {
    fn record_time(&self, d: std::time::Duration) {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).push(d);
    }

    /// When a task still running elsewhere gets a copy here: 4x the median task so far
    /// (between 1 and 60 s), or 5 s before any task has finished.
    fn speculate_after(&self) -> std::time::Duration {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if t.is_empty() {
            return std::time::Duration::from_secs(5);
        }
        t.sort();
        (t[t.len() / 2] * 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        )
    }

    /// How long a task waits for a slot on the node holding its data before it takes a
    /// free slot elsewhere (delay scheduling): the median task so far (between 20 ms and
    /// 3 s), or 0.5 s before any has finished. Sized to the tasks, so short tasks do not
    /// queue behind one busy node for a fixed wait (SPARK-18886) and long ones wait
    /// rather than move their data.
    fn locality_wait(&self) -> std::time::Duration {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if t.is_empty() {
            return std::time::Duration::from_millis(500);
        }
        t.sort();
        t[t.len() / 2].clamp(
            std::time::Duration::from_millis(20),
            std::time::Duration::from_secs(3),
        )
    }

    fn update(&self, f: impl FnOnce(&mut JobInfo)) {
        let mut i = self.info.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut i);
        i.seconds = self.started.elapsed().as_secs_f64();
    }

    fn snapshot(&self) -> JobInfo {
        let mut i = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if i.state == JobState::Running {
            i.seconds = self.started.elapsed().as_secs_f64();
        }
        i
    }

    fn log(&self, object: &str, lines: Vec<String>) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for l in lines {
            if logs.len() < MAX_JOB_LOG_LINES {
                logs.push(format!("[{object}] {l}"));
            }
        }
    }
}

/// The jobs of one node: submit, watch, cancel.
pub struct Jobs {
    archive: Archive,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    parallelism: usize,
    /// Task slots per node (this node is "").
    slots: Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Code of jobs other nodes placed tasks here for.
    code: CodeCache,
    /// Where job records are kept across restarts (None: memory only).
    dir: Option<std::path::PathBuf>,
}

/// A job as kept on disk: its state, its spec without the code, its logs.
#[derive(Serialize, Deserialize)]
struct SavedJob {
    info: JobInfo,
    spec: JobSpec,
    as_of_ns: u64,
    logs: Vec<String>,
}

/// RFC 3339 with nanoseconds, UTC (what `archive::parse_instant` reads back exactly).
fn rfc3339_ns(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl Jobs {
    /// The jobs of a node serving `archive`; tasks run `parallelism` at a time.
    pub fn new(archive: Archive, parallelism: usize) -> Arc<Self> {
        Self::with_jobs(archive, parallelism, BTreeMap::new(), None)
    }

    fn with_jobs(
        archive: Archive,
        parallelism: usize,
        jobs: BTreeMap<String, Arc<Job>>,
        dir: Option<std::path::PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Jobs {
            archive,
            jobs: Mutex::new(jobs),
            parallelism: parallelism.max(1),
            slots: Mutex::new(BTreeMap::new()),
            code: CodeCache::default(),
            dir,
        })
    }

    /// Jobs whose records are kept in `dir` (one JSON file per job), so that a
    /// restarted node still answers for the jobs it ran. A job that was running when
    /// the node stopped is loaded as failed.
    pub fn with_records(
        archive: Archive,
        parallelism: usize,
        dir: std::path::PathBuf,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let saved: SavedJob = match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(s) => s,
                None => {
                    tracing::warn!(file = %path.display(), "an unreadable job record: ignored");
                    continue;
                }
            };
            let mut info = saved.info;
            if info.state == JobState::Running {
                info.state = JobState::Failed;
                info.error = Some("the node stopped while the job ran: run it again".into());
            }
            let job = Job {
                spec: saved.spec,
                as_of_ns: saved.as_of_ns,
                info: Mutex::new(info.clone()),
                logs: Mutex::new(saved.logs),
                cancel: Arc::new(AtomicBool::new(true)),
                started: std::time::Instant::now(),
                times: Mutex::new(Vec::new()),
            };
            jobs.insert(info.id.clone(), Arc::new(job));
        }
        while jobs.len() > MAX_JOBS {
            if let Some((k, _)) = jobs.pop_first() {
                let _ = std::fs::remove_file(dir.join(format!("{k}.json")));
            }
        }
        Ok(Self::with_jobs(archive, parallelism, jobs, Some(dir)))
    }

    /// Writes a job's record (when records are kept): whole, then renamed into place.
    fn save(&self, job: &Job) {
        let Some(dir) = &self.dir else { return };
        let info = job.snapshot();
        let mut spec = job.spec.clone();
        spec.code = String::new(); // its hash is in the info; the code may be MBs
        let saved = SavedJob {
            info,
            spec,
            as_of_ns: job.as_of_ns,
            logs: job.logs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let path = dir.join(format!("{}.json", saved.info.id));
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot keep the job's record");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks and starts a job; answers at once (watch it with [`Jobs::get`]).
    pub fn submit(
        self: &Arc<Self>,
        spec: JobSpec,
        actor: Option<String>,
    ) -> Result<JobInfo, JobError> {
        self.archive
            .bucket(&spec.bucket)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        if let Some(b) = &spec.output_bucket {
            self.archive
                .bucket(b)
                .map_err(|e| JobError::Invalid(e.to_string()))?;
        }
        if spec.incremental && spec.output.is_none() {
            return Err(JobError::Invalid(
                "an incremental job needs an output key (--output), the one its earlier runs wrote"
                    .into(),
            ));
        }
        if spec.code.len() > MAX_CODE_BYTES {
            return Err(JobError::Invalid(format!(
                "the job's code is {} bytes; the most is {MAX_CODE_BYTES}",
                spec.code.len()
            )));
        }
        // Load the code once now, so a syntax error or a missing `map` is the
        // submitter's answer rather than a failed job.
        sandbox::open(
            &spec.runtime,
            &spec.code,
            &spec.limits,
            Arc::new(AtomicBool::new(false)),
            sandbox::ObjectInfo::default(),
        )?;
        let now = archive::now_ns();
        let as_of_ns = match &spec.as_of {
            Some(t) => archive::parse_instant(t).map_err(|e| JobError::Invalid(e.to_string()))?,
            None => now,
        };
        let mut rnd = [0u8; 4];
        getrandom::fill(&mut rnd).map_err(|e| JobError::Invalid(e.to_string()))?;
        let id = format!(
            "{now:016x}{}",
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let info = JobInfo {
            id: id.clone(),
            state: JobState::Running,
            runtime: spec.runtime.clone(),
            bucket: spec.bucket.clone(),
            prefix: spec.prefix.clone(),
            as_of: rfc3339_ns(as_of_ns),
            code_sha256: sha256_hex(spec.code.as_bytes()),
            actor: actor.clone(),
            submitted: rfc3339_ns(now),
            seconds: 0.0,
            tasks_total: 0,
            tasks_done: 0,
            records: 0,
            bytes_read: 0,
            tasks_remote: 0,
            tasks_rerun: 0,
            tasks_speculative: 0,
            tasks_reused: 0,
            tasks_moved: 0,
            tasks_by_node: BTreeMap::new(),
            bytes_local: 0,
            bytes_site: 0,
            bytes_cross_site: 0,
            output: None,
            error: None,
        };
        let job = Arc::new(Job {
            spec,
            as_of_ns,
            info: Mutex::new(info.clone()),
            logs: Mutex::new(Vec::new()),
            cancel: Arc::new(AtomicBool::new(false)),
            started: std::time::Instant::now(),
            times: Mutex::new(Vec::new()),
        });
        {
            let mut jobs = self.lock();
            if jobs.len() >= MAX_JOBS {
                // Ids start with the submission time: the first finished one is the oldest.
                let oldest = jobs
                    .iter()
                    .find(|(_, j)| j.snapshot().state != JobState::Running)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    jobs.remove(&k);
                    if let Some(dir) = &self.dir {
                        let _ = std::fs::remove_file(dir.join(format!("{k}.json")));
                    }
                }
            }
            jobs.insert(id.clone(), job.clone());
        }
        self.save(&job);
        tracing::info!(job = %id, bucket = %job.spec.bucket, prefix = %job.spec.prefix, "job submitted");
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.run(&job, actor).await;
            job.update(|i| match result {
                Ok(out) => {
                    i.state = JobState::Succeeded;
                    i.output = Some(out);
                }
                Err(JobError::Cancelled) => {
                    i.state = JobState::Cancelled;
                    i.error = Some(JobError::Cancelled.to_string());
                }
                Err(e) => {
                    i.state = JobState::Failed;
                    i.error = Some(e.to_string());
                }
            });
            me.save(&job);
            let i = job.snapshot();
            tracing::info!(job = %i.id, state = ?i.state, seconds = i.seconds, error = ?i.error, "job finished");
        });
        Ok(info)
    }

    /// A job's state.
    pub fn get(&self, id: &str) -> Option<JobInfo> {
        self.lock().get(id).map(|j| j.snapshot())
    }

    /// Every job this node remembers, newest first.
    pub fn list(&self) -> Vec<JobInfo> {
        self.lock().values().rev().map(|j| j.snapshot()).collect()
    }

    /// A job's log lines (what its code logged, by input object).
    pub fn logs(&self, id: &str) -> Option<Vec<String>> {
        let job = self.lock().get(id).cloned()?;
        let logs = job.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(logs)
    }

    /// Asks a running job to stop; false when there is no such job.
    pub fn cancel(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(j) => {
                j.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Lists the inputs, runs a task per input, reduces, writes the output and records
    /// the run in the ledger.
    async fn run(&self, job: &Arc<Job>, actor: Option<String>) -> Result<JobOutput, JobError> {
        let spec = &job.spec;
        let output_bucket = spec.output_bucket.clone().unwrap_or(spec.bucket.clone());
        let output_key = spec
            .output
            .clone()
            .unwrap_or_else(|| format!("jobs/{}/result.jsonl", job.snapshot().id));
        let state_key = format!("{output_key}{STATE_SUFFIX}");
        let inputs = self.inputs(job, &output_bucket, &output_key)?;
        job.update(|i| i.tasks_total = inputs.len() as u64);

        // Each input's emitted values, merged in input order at the end so that the
        // result does not depend on which task finished first.
        let mut per_input: BTreeMap<String, (String, String, Emitted)> = BTreeMap::new();
        let mut to_run = inputs.clone();
        if spec.incremental {
            let mut earlier = self.earlier_state(job, &output_bucket, &state_key).await;
            to_run.retain(|i| match earlier.remove(&i.key) {
                Some((v, e, emitted)) if v == i.version_id && e == i.etag => {
                    per_input.insert(i.key.clone(), (v, e, emitted));
                    false
                }
                _ => true,
            });
            let reused = per_input.len() as u64;
            job.update(|i| {
                i.tasks_reused = reused;
                i.tasks_done = reused;
            });
        }
        let mut total_out = 0u64;
        let mut tasks = futures::stream::iter(to_run)
            .map(|input| self.task(job, input))
            .buffer_unordered(self.parallelism * self.nodes());
        while let Some(done) = tasks.next().await {
            let done = match done {
                Ok(d) => d,
                Err(e) => {
                    job.cancel.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            job.log(&done.key, done.logs);
            job.update(|i| {
                i.tasks_done += 1;
                i.records += done.records;
                i.bytes_read += done.bytes;
                i.bytes_local += done.local;
                i.bytes_site += done.site;
                i.bytes_cross_site += done.cross;
                *i.tasks_by_node.entry(done.ran_on.clone()).or_default() += 1;
            });
            for (k, vs) in &done.emitted {
                total_out +=
                    (k.len() + vs.iter().map(|v| v.to_string().len()).sum::<usize>()) as u64;
            }
            per_input.insert(
                done.key.clone(),
                (done.version_id.clone(), done.etag.clone(), done.emitted),
            );
            if total_out > spec.limits.output_bytes() {
                job.cancel.store(true, Ordering::Relaxed);
                return Err(JobError::Limit(format!(
                    "output ({} bytes)",
                    spec.limits.output_bytes()
                )));
            }
        }
        drop(tasks);
        if job.cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }

        let state = if spec.incremental {
            Some(task_state(job, &per_input)?)
        } else {
            None
        };
        let mut emitted = Emitted::default();
        for (_, (_, _, e)) in per_input {
            for (k, mut vs) in e {
                emitted.entry(k).or_default().append(&mut vs);
            }
        }

        // Reduce and encode in the runtime's thread.
        let (runtime, code, limits, cancel) = (
            spec.runtime.clone(),
            spec.code.clone(),
            spec.limits.clone(),
            job.cancel.clone(),
        );
        let (body, keys) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u64), JobError> {
                let task = sandbox::open(&runtime, &code, &limits, cancel, Default::default())?;
                let mut body = Vec::new();
                let keys = emitted.len() as u64;
                for (key, values) in emitted {
                    let value = task.reduce(&key, values)?;
                    serde_json::to_writer(
                        &mut body,
                        &serde_json::json!({"key": key, "value": value}),
                    )
                    .map_err(|e| JobError::Code(e.to_string()))?;
                    body.push(b'\n');
                    if body.len() as u64 > limits.output_bytes() {
                        return Err(JobError::Limit(format!(
                            "output ({} bytes)",
                            limits.output_bytes()
                        )));
                    }
                }
                Ok((body, keys))
            })
            .await
            .map_err(|e| JobError::Code(format!("the reduce step stopped: {e}")))??;

        let sha256 = sha256_hex(&body);
        let size = body.len() as u64;
        let opts = PutOptions {
            content_type: Some("application/x-ndjson".into()),
            actor: actor.clone(),
            meta: [("x-edgecloud-job".to_string(), job.snapshot().id)].into(),
            ..Default::default()
        };
        let v = self
            .archive
            .put_bytes(&output_bucket, &output_key, Bytes::from(body), opts)
            .await
            .map_err(|e| JobError::Output(format!("{output_bucket}/{output_key}: {e}")))?;

        if let Some(state) = state {
            let opts = PutOptions {
                content_type: Some("application/x-ndjson".into()),
                actor: actor.clone(),
                meta: [("x-edgecloud-job".to_string(), job.snapshot().id)].into(),
                ..Default::default()
            };
            self.archive
                .put_bytes(&output_bucket, &state_key, Bytes::from(state), opts)
                .await
                .map_err(|e| JobError::Output(format!("{output_bucket}/{state_key}: {e}")))?;
        }

        let mut listing = Vec::new();
        for i in &inputs {
            listing
                .extend_from_slice(format!("{}\0{}\0{}\n", i.key, i.version_id, i.etag).as_bytes());
        }
        let info = job.snapshot();
        let change = ledger::record::Change::JobRun {
            job_id: info.id.clone(),
            runtime: spec.runtime.clone(),
            code_sha256: info.code_sha256.clone(),
            bucket: spec.bucket.clone(),
            prefix: spec.prefix.clone(),
            as_of_ns: job.as_of_ns,
            inputs: inputs.len() as u64,
            inputs_sha256: sha256_hex(&listing),
            output_bucket: output_bucket.clone(),
            output_key: output_key.clone(),
            output_version_id: v.version_id.clone(),
            output_sha256: sha256.clone(),
        };
        self.archive
            .record(change, actor)
            .await
            .map_err(|e| JobError::Output(format!("recording the run in the ledger: {e}")))?;
        Ok(JobOutput {
            bucket: output_bucket,
            key: output_key,
            version_id: v.version_id,
            size,
            sha256,
            keys,
        })
    }

    /// What the last run of an incremental job emitted per input, if it ran the same
    /// code the same way: input key -> (version id, ETag, emitted).
    async fn earlier_state(
        &self,
        job: &Job,
        bucket: &str,
        key: &str,
    ) -> BTreeMap<String, (String, String, Emitted)> {
        let mut out = BTreeMap::new();
        let body = match self
            .archive
            .get_bytes(bucket, key, &VersionSel::Latest)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                job.log(
                    "job",
                    vec![format!(
                        "no earlier run's state at {bucket}/{key} ({e}): every input runs"
                    )],
                );
                return out;
            }
        };
        let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let header: Option<StateHeader> = lines.next().and_then(|l| serde_json::from_slice(l).ok());
        if header.as_ref() != Some(&StateHeader::of(&job.spec)) {
            job.log(
                "job",
                vec![format!(
                    "the earlier run at {bucket}/{key} ran other code or inputs: every input runs"
                )],
            );
            return out;
        }
        for line in lines {
            if let Ok(t) = serde_json::from_slice::<StateLine>(line) {
                out.insert(
                    t.key.into_owned(),
                    (
                        t.version_id.into_owned(),
                        t.etag.into_owned(),
                        t.emitted.into_owned(),
                    ),
                );
            }
        }
        out
    }

    /// The input versions, in key order, as of the job's instant (never its own output).
    fn inputs(
        &self,
        job: &Job,
        output_bucket: &str,
        output_key: &str,
    ) -> Result<Vec<Input>, JobError> {
        let mut out = Vec::new();
        let mut q = ListQuery {
            prefix: job.spec.prefix.clone(),
            delimiter: None,
            start_after: None,
            max_keys: 1000,
            as_of: Some(job.as_of_ns),
        };
        loop {
            let page = self
                .archive
                .list(&job.spec.bucket, &q)
                .map_err(|e| JobError::Input(e.to_string()))?;
            for v in &page.objects {
                let own =
                    v.key == output_key || v.key.strip_suffix(STATE_SUFFIX) == Some(output_key);
                if !(job.spec.bucket == output_bucket && own) {
                    out.push(Input {
                        key: v.key.clone(),
                        version_id: v.version_id.clone(),
                        etag: v.etag.clone(),
                        placement: self.archive.data_placement(v),
                    });
                }
            }
            match page.next_marker {
                Some(m) if page.truncated => q.start_after = Some(m),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One task, placed next to its data: on the node that holds most of its input's
    /// data shards, or here. A node that cannot be reached has its task run here
    /// instead (counted in `tasks_rerun`).
    async fn task(&self, job: &Arc<Job>, input: Input) -> Result<TaskDone, JobError> {
        if job.cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }
        let mut here_slot = None;
        match self.place(job, &input).await {
            Placed::Here(slot) => here_slot = slot,
            Placed::There {
                node,
                addr,
                slot: _slot,
            } => {
                let req = TaskRequest {
                    spec: job.spec.clone(),
                    as_of_ns: job.as_of_ns,
                    key: input.key.clone(),
                    version_id: input.version_id.clone(),
                    etag: input.etag.clone(),
                    code_sha256: None,
                };
                let started = std::time::Instant::now();
                let remote = self.remote(&addr, &req);
                tokio::pin!(remote);
                // A task much slower than those done so far (a frozen or overloaded node) gets
                // a speculative copy here; whichever finishes first counts. Every copy reads
                // the same pinned version, so the result is the same.
                let answer = tokio::select! {
                    r = &mut remote => Some(r),
                    _ = tokio::time::sleep(job.speculate_after()) => None,
                };
                let answer = match answer {
                    Some(r) => r,
                    None => {
                        job.update(|i| i.tasks_speculative += 1);
                        tracing::info!(job = %job.snapshot().id, key = %input.key, node = %node,
                        "task slow: a speculative copy runs here");
                        let copy = self.local(job, &input, None);
                        tokio::pin!(copy);
                        tokio::select! {
                            r = &mut remote => match r {
                                Ok(Ok(r)) => Ok(Ok(r)),
                                // The slow node failed after all: the copy decides.
                                _ => Ok(copy.await),
                            },
                            l = &mut copy => {
                                let r = l?;
                                job.record_time(started.elapsed());
                                return Ok(self.done(input.clone(), r));
                            }
                        }
                    }
                };
                match answer {
                    Ok(Ok(r)) => {
                        job.record_time(started.elapsed());
                        job.update(|i| i.tasks_remote += 1);
                        let mut done = self.done(input, r);
                        done.ran_on = addr.clone();
                        return Ok(done);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(unreachable) => {
                        tracing::warn!(job = %job.snapshot().id, key = %input.key, node = %node,
                        "task rerun here: {unreachable}");
                        job.update(|i| i.tasks_rerun += 1);
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        let r = self.local(job, &input, here_slot).await?;
        job.record_time(started.elapsed());
        Ok(self.done(input, r))
    }

    /// Runs a task on this node, in the slot `place` took, or waiting for one.
    async fn local(
        &self,
        job: &Arc<Job>,
        input: &Input,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<TaskResult, JobError> {
        let _slot = match slot {
            Some(s) => Ok(s),
            None => self.slot("").acquire_owned().await,
        };
        let r = run_task(
            &self.archive,
            &job.spec,
            job.as_of_ns,
            &input.key,
            &input.version_id,
            &input.etag,
            job.cancel.clone(),
        )
        .await?;
        Ok(r)
    }

    /// How many nodes can run tasks (1 outside a cluster).
    fn nodes(&self) -> usize {
        self.active_nodes().len().max(1)
    }

    /// The active nodes of the cluster (this one too) with their node-to-node address;
    /// none outside a cluster.
    fn active_nodes(&self) -> Vec<(cluster::NodeId, String)> {
        let Some(m) = self.archive.cluster() else {
            return Vec::new();
        };
        m.layout()
            .nodes
            .iter()
            .filter(|n| n.state == cluster::NodeState::Active)
            .map(|n| (n.id.clone(), n.rpc_addr.clone()))
            .collect()
    }

    /// Runs a task another node placed here (the node-to-node `TASK_PATH`).
    pub async fn run_placed_task(&self, mut req: TaskRequest) -> Result<TaskResult, JobError> {
        match &req.code_sha256 {
            Some(sha) => match self.code.get(sha) {
                Some(code) => req.spec.code = code.to_string(),
                None => return Err(JobError::Invalid(NEED_CODE.into())),
            },
            None => self.code.put(&req.spec.code),
        }
        // This node's replica of the catalog may trail the one that listed the inputs:
        // catch up first, so the pinned versions are here to read.
        self.archive.catalog().read_barrier().await.map_err(|e| {
            JobError::Input(format!("this node cannot catch up with the catalog: {e}"))
        })?;
        let _slot = self.slot("").acquire_owned().await;
        run_task(
            &self.archive,
            &req.spec,
            req.as_of_ns,
            &req.key,
            &req.version_id,
            &req.etag,
            Arc::new(AtomicBool::new(false)),
        )
        .await
    }

    /// A semaphore of `parallelism` task slots per node ("" is this node: `slot_name`).
    fn slot(&self, node: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.parallelism)))
            .clone()
    }

    /// The active nodes holding the input's data shards, most bytes first (None in the
    /// placement is this node).
    fn holders(&self, input: &Input) -> Vec<(Option<(cluster::NodeId, String)>, u64)> {
        if self.archive.cluster().is_none() {
            return Vec::new();
        }
        let active = self.active_nodes();
        let mut out: Vec<_> = input
            .placement
            .iter()
            .filter_map(|(node, bytes)| match node {
                None => Some((None, *bytes)),
                Some(node) => active
                    .iter()
                    .find(|(id, _)| id == node)
                    .map(|found| (Some(found.clone()), *bytes)),
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.1));
        out
    }

    /// Where a task runs, with a slot held there. Delay scheduling: a node holding its
    /// data with a free slot, most data first; else the first holder to free a slot
    /// within `locality_wait` (about one task's time); else, after all, any node with a
    /// free slot (this one first); else the node holding most, as soon as it frees one.
    /// Slots are taken, not just looked at, so tasks that give up at the same moment
    /// spread instead of piling onto this node.
    async fn place(&self, job: &Job, input: &Input) -> Placed {
        let holders = self.holders(input);
        if holders.is_empty() {
            return Placed::Here(None); // one node, or data every node has (inline)
        }
        let moved = |rank: usize| {
            if rank > 0 {
                job.update(|i| i.tasks_moved += 1);
            }
        };
        for (rank, (holder, _)) in holders.iter().enumerate() {
            if let Ok(permit) = self.slot(&slot_name(holder)).try_acquire_owned() {
                moved(rank);
                return Placed::on(holder, permit);
            }
        }
        let waits = holders.iter().map(|(holder, _)| {
            let slot = self.slot(&slot_name(holder));
            Box::pin(async move { slot.acquire_owned().await })
        });
        if let Ok((Ok(permit), rank, _)) =
            tokio::time::timeout(job.locality_wait(), futures::future::select_all(waits)).await
        {
            moved(rank);
            return Placed::on(&holders[rank].0, permit);
        }
        job.update(|i| i.tasks_moved += 1);
        for node in self.by_room() {
            if let Ok(permit) = self.slot(&slot_name(&node)).try_acquire_owned() {
                return Placed::on(&node, permit);
            }
        }
        let best = &holders[0].0;
        match self.slot(&slot_name(best)).acquire_owned().await {
            Ok(permit) => Placed::on(best, permit),
            Err(_) => Placed::Here(None),
        }
    }

    /// The active nodes (None: this one), most room first, as the containers'
    /// scheduler ranks them (`cluster::capacity`): a task that gives up on locality
    /// goes where containers and other tasks leave the most CPU and memory.
    fn by_room(&self) -> Vec<Option<(cluster::NodeId, String)>> {
        let Some(m) = self.archive.cluster() else {
            return vec![None];
        };
        let task = cluster::capacity::Need {
            cpus: Some(1.0),
            memory: None,
        };
        match cluster::capacity::rank(&m.candidates(), &task, &Default::default()) {
            Ok(ranked) => ranked
                .into_iter()
                .map(|c| (!c.me).then_some((c.id, c.rpc_addr)))
                .collect(),
            Err(_) => vec![None],
        }
    }

    /// Job tasks running on this node now (its own jobs' and those placed here).
    pub fn tasks_running_here(&self) -> u32 {
        let free = self.slot("").available_permits();
        self.parallelism.saturating_sub(free) as u32
    }

    /// Sends a task to the node at `addr`; Err is "could not reach it".
    async fn remote(
        &self,
        addr: &str,
        req: &TaskRequest,
    ) -> Result<Result<TaskResult, JobError>, String> {
        let m = self.archive.cluster().ok_or("not in a cluster")?;
        let timeout = req.spec.limits.wall_time() + std::time::Duration::from_secs(60);
        // The code by hash first; in full only when the node has not cached it.
        let mut by_hash = req.clone();
        by_hash.code_sha256 = Some(sha256_hex(req.spec.code.as_bytes()));
        by_hash.spec.code = String::new();
        for attempt in [&by_hash, req] {
            let body = serde_json::to_vec(attempt).map_err(|e| e.to_string())?;
            let reply = m
                .client()
                .call(addr, TASK_PATH, body, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let result = serde_json::from_slice::<TaskReply>(&reply)
                .map(|r| r.result)
                .map_err(|e| format!("an unreadable answer: {e}"))?;
            if !matches!(&result, Err(JobError::Invalid(m)) if m == NEED_CODE) {
                return Ok(result);
            }
        }
        Err("the node asked for the job's code twice".into())
    }

    /// A task's result, with the shard bytes it read by origin (measured where it ran).
    fn done(&self, input: Input, r: TaskResult) -> TaskDone {
        TaskDone {
            key: input.key,
            version_id: input.version_id,
            etag: input.etag,
            emitted: r.emitted,
            logs: r.logs,
            records: r.records,
            bytes: r.bytes,
            local: r.shards_local,
            site: r.shards_site,
            cross: r.shards_cross,
            ran_on: "here".into(),
        }
    }
}

/// An incremental job keeps what each input emitted in its output key + this.
pub const STATE_SUFFIX: &str = ".tasks";

/// The first line of an incremental job's state: what must match for reuse.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateHeader {
    code_sha256: String,
    runtime: String,
    input: InputMode,
    bucket: String,
    prefix: String,
}

impl StateHeader {
    fn of(spec: &JobSpec) -> Self {
        StateHeader {
            code_sha256: sha256_hex(spec.code.as_bytes()),
            runtime: spec.runtime.clone(),
            input: spec.input,
            bucket: spec.bucket.clone(),
            prefix: spec.prefix.clone(),
        }
    }
}

/// One input's line in an incremental job's state (borrowed when written, owned when
/// read back).
#[derive(Debug, Serialize, Deserialize)]
struct StateLine<'a> {
    key: Cow<'a, str>,
    version_id: Cow<'a, str>,
    etag: Cow<'a, str>,
    emitted: Cow<'a, Emitted>,
}

/// An incremental job's state: the header, then a line per input.
fn task_state(
    job: &Job,
    per_input: &BTreeMap<String, (String, String, Emitted)>,
) -> Result<Vec<u8>, JobError> {
    let fail = |e: serde_json::Error| JobError::Output(e.to_string());
    let mut out = serde_json::to_vec(&StateHeader::of(&job.spec)).map_err(fail)?;
    out.push(b'\n');
    for (key, (version_id, etag, emitted)) in per_input {
        let line = StateLine {
            key: Cow::Borrowed(key),
            version_id: Cow::Borrowed(version_id),
            etag: Cow::Borrowed(etag),
            emitted: Cow::Borrowed(emitted),
        };
        serde_json::to_writer(&mut out, &line).map_err(fail)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The largest job code accepted (a WebAssembly module travels as base64).
pub const MAX_CODE_BYTES: usize = 32 << 20;

/// What a node answers a task sent without its code (by hash) that it has not cached.
const NEED_CODE: &str = "this node does not have the job's code: send it";

/// Job code by SHA-256, kept by nodes that run placed tasks so that a job's code (a
/// WebAssembly module may be MBs) crosses the network once per node, not once per task.
#[derive(Default)]
struct CodeCache(Mutex<BTreeMap<String, Arc<str>>>);

impl CodeCache {
    const ENTRIES: usize = 32;
    fn get(&self, sha256: &str) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned()
    }
    fn put(&self, code: &str) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= Self::ENTRIES {
            c.clear();
        }
        c.insert(sha256_hex(code.as_bytes()), code.into());
    }
}

/// The node-to-node path where a node runs a task another placed on it.
pub const TASK_PATH: &str = "/v1/jobs/task";

/// A task sent to the node that holds its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The job (its code, input mode, limits, bucket).
    pub spec: JobSpec,
    /// The instant its inputs are pinned to.
    pub as_of_ns: u64,
    /// The input object.
    pub key: String,
    /// Its version id, as listed.
    pub version_id: String,
    /// Its ETag, as listed (checked: the version read must be this one).
    pub etag: String,
    /// Set when `spec.code` is left out: the code's SHA-256, for the node's cache.
    #[serde(default)]
    pub code_sha256: Option<String>,
}

/// What a task produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskResult {
    /// Emitted values by key (combined when the code has `combine`).
    pub emitted: Emitted,
    /// What the code logged.
    pub logs: Vec<String>,
    /// Records passed to `map`.
    pub records: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Shard bytes read from the disks of the node it ran on, from another node of its
    /// site, and from other sites (measured; 0 for objects kept in the catalog).
    #[serde(default)]
    pub shards_local: u64,
    /// ... from another node of its site.
    #[serde(default)]
    pub shards_site: u64,
    /// ... from other sites.
    #[serde(default)]
    pub shards_cross: u64,
}

/// The answer of `TASK_PATH`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskReply {
    /// The task's result, or why it failed.
    pub result: Result<TaskResult, JobError>,
}

/// Runs one task, measuring where the shards it read came from.
async fn run_task(
    archive: &Archive,
    spec: &JobSpec,
    as_of_ns: u64,
    key: &str,
    version_id: &str,
    etag: &str,
    cancel: Arc<AtomicBool>,
) -> Result<TaskResult, JobError> {
    let tally = Arc::new(archive::ReadTally::default());
    let work = stream_task(archive, spec, as_of_ns, key, version_id, etag, cancel);
    let mut r = archive::tally_reads(tally.clone(), work).await?;
    (r.shards_local, r.shards_site, r.shards_cross) = tally.get();
    Ok(r)
}

/// Streams one input version into a fresh sandbox and runs `map` over it.
async fn stream_task(
    archive: &Archive,
    spec: &JobSpec,
    as_of_ns: u64,
    key: &str,
    version_id: &str,
    etag: &str,
    cancel: Arc<AtomicBool>,
) -> Result<TaskResult, JobError> {
    // Read as of the job's instant, not by version id: in an unversioned bucket every
    // version is "null", and the one current at the instant may be hidden history.
    let (v, _, mut stream) = archive
        .get(&spec.bucket, key, &VersionSel::AsOf(as_of_ns), None)
        .await
        .map_err(|e| JobError::Input(format!("{key}: {e}")))?;
    if v.etag != etag {
        return Err(JobError::Input(format!(
            "{key}: the version listed at the job's instant is gone (its history window passed?)"
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let (runtime, code, limits, mode) = (
        spec.runtime.clone(),
        spec.code.clone(),
        spec.limits.clone(),
        spec.input,
    );
    let object = sandbox::ObjectInfo {
        key: key.to_string(),
        version_id: version_id.to_string(),
        size: v.size,
    };
    let runner = tokio::task::spawn_blocking(move || {
        run_map(&runtime, &code, &limits, cancel, mode, rx, object)
    });
    let mut bytes = 0u64;
    let mut read_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                bytes += c.len() as u64;
                if tx.send(c).await.is_err() {
                    break; // the task stopped early (an error it reports itself)
                }
            }
            Err(e) => {
                read_error = Some(JobError::Input(format!("{key}: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let (emitted, logs, records) = runner
        .await
        .map_err(|e| JobError::Code(format!("the task for {key} stopped: {e}")))?
        .map_err(|e| match e {
            JobError::Code(m) => JobError::Code(format!("{key}: {m}")),
            other => other,
        })?;
    if let Some(e) = read_error {
        return Err(e);
    }
    Ok(TaskResult {
        emitted,
        logs,
        records,
        bytes,
        ..Default::default()
    })
}

/// Where `place` put a task, with the slot it holds there.
enum Placed {
    /// On this node; `None` when no slot was taken yet (the task waits for one).
    Here(Option<tokio::sync::OwnedSemaphorePermit>),
    /// On another node.
    There {
        node: cluster::NodeId,
        addr: String,
        slot: tokio::sync::OwnedSemaphorePermit,
    },
}

impl Placed {
    fn on(
        holder: &Option<(cluster::NodeId, String)>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Placed {
        match holder {
            None => Placed::Here(Some(slot)),
            Some((node, addr)) => Placed::There {
                node: node.clone(),
                addr: addr.clone(),
                slot,
            },
        }
    }
}

/// The name of a node's task slots: "" for this node.
fn slot_name(holder: &Option<(cluster::NodeId, String)>) -> String {
    holder
        .as_ref()
        .map_or(String::new(), |(node, _)| node.to_string())
}

/// One input version, as listed at the job's instant.
#[derive(Clone)]
struct Input {
    key: String,
    version_id: String,
    etag: String,
    /// Bytes of its data shards per node (None: this node).
    placement: Vec<(Option<cluster::NodeId>, u64)>,
}

struct TaskDone {
    key: String,
    version_id: String,
    etag: String,
    emitted: Emitted,
    logs: Vec<String>,
    records: u64,
    bytes: u64,
    /// Shard bytes it read from the node it ran on, elsewhere in that node's site, and
    /// from other sites (measured).
    local: u64,
    site: u64,
    cross: u64,
    /// The node-to-node address of the node it ran on ("here": this node).
    ran_on: String,
}

/// The blocking half of a task: feeds the chunks it receives to `map`, record by record.
fn run_map(
    runtime: &str,
    code: &str,
    limits: &Limits,
    cancel: Arc<AtomicBool>,
    mode: InputMode,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    object: sandbox::ObjectInfo,
) -> Result<(Emitted, Vec<String>, u64), JobError> {
    let size = object.size;
    let task = sandbox::open(runtime, code, limits, cancel, object)?;
    let mut records = 0u64;
    match mode {
        InputMode::Objects => {
            if size > limits.memory_bytes() as u64 {
                return Err(JobError::Limit(format!(
                    "memory ({} MiB; the object is {size} bytes and objects mode reads it whole)",
                    limits.memory_mb
                )));
            }
            let mut whole = Vec::with_capacity(size as usize);
            while let Some(c) = rx.blocking_recv() {
                whole.extend_from_slice(&c);
            }
            task.map(&whole)?;
            records = 1;
        }
        InputMode::Lines => {
            let mut carry: Vec<u8> = Vec::new();
            while let Some(c) = rx.blocking_recv() {
                let mut rest: &[u8] = &c;
                while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let line = &rest[..nl];
                    rest = &rest[nl + 1..];
                    if carry.is_empty() {
                        task.map(trim_cr(line))?;
                    } else {
                        carry.extend_from_slice(line);
                        task.map(trim_cr(&carry))?;
                        carry.clear();
                    }
                    records += 1;
                }
                carry.extend_from_slice(rest);
                if carry.len() > limits.memory_bytes() {
                    return Err(JobError::Limit(format!(
                        "memory ({} MiB; a line longer than that)",
                        limits.memory_mb
                    )));
                }
            }
            if !carry.is_empty() {
                task.map(trim_cr(&carry))?;
                records += 1;
            }
        }
    }
    let (emitted, logs) = task.finish()?;
    Ok((emitted, logs, records))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

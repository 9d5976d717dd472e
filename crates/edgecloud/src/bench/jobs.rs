//! `edgecloud bench --only jobs`: compute jobs on one node, in process. A word count in
//! Lua over many text objects, against reading the same objects (the node's GET
//! throughput, the ceiling of a scan) and against the naive way (fetch every object,
//! then run the same code in one process); tiny tasks per second; the time from
//! submitting a job to its result; a task's start time and memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use archive::{Archive, ChunkParams, PutOptions, VersionSel, Versioning};
use bytes::Bytes;
use futures::StreamExt;
use jobs::{JobSpec, JobState, Jobs, Limits};

use crate::bench::{Rng, bench_archive, mbps, row, text};

const WORD_COUNT: &str = r#"
function map(line) for w in line:gmatch("%S+") do emit(w, 1) end end
function combine(w, ones) local n = 0 for _, c in ipairs(ones) do n = n + c end return n end
reduce = combine
"#;

const WORD_COUNT_JS: &str = r#"
function map(line, object) { for (const w of line.match(/[A-Za-z]+/g) || []) emit(w.toLowerCase(), 1); }
function combine(word, counts) { return counts.reduce((a, b) => a + b, 0); }
const reduce = combine;
"#;

const WORD_COUNT_PY: &str = r#"
import re
def map(line, object):
    for word in re.findall(r"[A-Za-z]+", line):
        emit(word.lower(), 1)
def combine(word, counts):
    return sum(counts)
reduce = combine
"#;

/// A small module (a Go one needs a Go toolchain at bench time): emits each record.
const WASM_ECHO: &str = r#"(module
  (import "edgecloud" "emit" (func $emit (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "1")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "map") (param i32 i32)
    (call $emit (local.get 0) (local.get 1) (i32.const 16) (i32.const 1))))"#;

fn spec(prefix: &str, output: &str) -> JobSpec {
    JobSpec {
        bucket: "corpus".into(),
        prefix: prefix.into(),
        as_of: None,
        runtime: "lua".into(),
        code: WORD_COUNT.into(),
        input: jobs::InputMode::Lines,
        output: Some(output.into()),
        output_bucket: None,
        limits: Limits::default(),
        incremental: false,
    }
}

async fn finish(jobs: &Arc<Jobs>, spec: JobSpec) -> anyhow::Result<(jobs::JobInfo, f64)> {
    let t = Instant::now();
    let id = jobs.submit(spec, None)?.id;
    loop {
        let i = jobs
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
        if i.state != JobState::Running {
            anyhow::ensure!(i.state == JobState::Succeeded, "job failed: {:?}", i.error);
            return Ok((i, t.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn read_all(a: &Archive, key: &str) -> anyhow::Result<Vec<u8>> {
    let (_, _, mut s) = a.get("corpus", key, &VersionSel::Latest, None).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

pub async fn run(dir: &Path, quick: bool) -> anyhow::Result<()> {
    let (objects, size, tiny) = if quick {
        (64, 256 << 10, 2000)
    } else {
        (512, 1 << 20, 20_000)
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "compute jobs: word count in Lua over {objects} x {} KiB of text, {cores} cores, one node:",
        size >> 10
    );
    let a = bench_archive(dir, 1, ChunkParams::default())?;
    a.create_bucket("corpus", None, Versioning::Enabled).await?;
    let mut rng = Rng::new(7);
    let mut keys = Vec::new();
    for i in 0..objects {
        let key = format!("text/{i:05}.txt");
        a.put_bytes(
            "corpus",
            &key,
            Bytes::from(text(&mut rng, size)),
            PutOptions::default(),
        )
        .await?;
        keys.push(key);
    }
    let total = (objects * size) as u64;
    let jobs = Jobs::new(a.clone(), cores);

    // The ceiling: every object read through the archive, as many at a time as cores.
    let t = Instant::now();
    let mut reads =
        futures::stream::iter(keys.iter().map(|k| read_all(&a, k))).buffer_unordered(cores);
    while let Some(r) = reads.next().await {
        r?;
    }
    let get_secs = t.elapsed().as_secs_f64();
    row(
        "GET every object (the scan's ceiling)",
        mbps(total, get_secs),
    );

    let (info, secs) = finish(&jobs, spec("text/", "out/wc.jsonl")).await?;
    row(
        "word count job (map, combine, reduce)",
        format!(
            "{}   {:.0}% of GET, {} records",
            mbps(total, secs),
            100.0 * get_secs / secs,
            info.records
        ),
    );

    // The naive way: fetch everything to one place, then run the same code over it.
    let t = Instant::now();
    let mut all = Vec::with_capacity(total as usize);
    for k in &keys {
        all.push(read_all(&a, k).await?);
    }
    tokio::task::spawn_blocking(move || -> Result<(), jobs::JobError> {
        // One process holding everything: the memory the naive way needs.
        let limits = Limits {
            memory_mb: 8192,
            ..Limits::default()
        };
        let task = jobs::lua::LuaTask::new(WORD_COUNT, &limits, Arc::new(AtomicBool::new(false)))?;
        let o = task.object("all", "null", 0)?;
        for body in &all {
            for line in body.split(|b| *b == b'\n') {
                task.map(line, &o)?;
            }
        }
        task.finish()?;
        Ok(())
    })
    .await??;
    let naive_secs = t.elapsed().as_secs_f64();
    row(
        "naive: fetch all, then one process",
        format!(
            "{}   the job is {:.1}x faster",
            mbps(total, naive_secs),
            naive_secs / secs
        ),
    );

    // Tiny tasks: one small object each (kept inline in the catalog).
    for i in 0..tiny {
        a.put_bytes(
            "corpus",
            &format!("tiny/{i:06}"),
            Bytes::from_static(b"a b c\n"),
            PutOptions::default(),
        )
        .await?;
    }
    let (info, secs) = finish(&jobs, spec("tiny/", "out/tiny.jsonl")).await?;
    row(
        &format!("{} tiny tasks", info.tasks_done),
        format!("{:8.0} tasks/s", info.tasks_done as f64 / secs),
    );

    // Submit to result, one tiny input.
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (_, secs) = finish(&jobs, spec("tiny/000000", "out/one.jsonl")).await?;
        best = best.min(secs);
    }
    row(
        "submit to result, one tiny input",
        format!("{:8.2} ms", best * 1e3),
    );

    // A task's start: a fresh sandbox with the code loaded, per runtime.
    for (runtime, code, n) in [
        ("lua", WORD_COUNT, if quick { 2000 } else { 20_000 }),
        ("javascript", WORD_COUNT_JS, if quick { 500 } else { 5000 }),
        ("wasm", WASM_ECHO, if quick { 2000 } else { 20_000 }),
        ("python", WORD_COUNT_PY, if quick { 10 } else { 100 }),
    ] {
        let t = Instant::now();
        let mut memory = 0;
        for _ in 0..n {
            let task = match jobs::sandbox::open(
                runtime,
                code,
                &Limits::default(),
                Arc::new(AtomicBool::new(false)),
                Default::default(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    row(&format!("task start ({runtime})"), format!("skipped: {e}"));
                    break;
                }
            };
            memory = task.memory_used();
        }
        let per = t.elapsed().as_secs_f64() / n as f64;
        if memory == 0 && runtime != "wasm" {
            continue;
        }
        let unit = if per < 1e-3 {
            format!("{:8.1} µs", per * 1e6)
        } else {
            format!("{:8.1} ms", per * 1e3)
        };
        row(&format!("task start ({runtime}, code loaded)"), unit);
        row(
            &format!("memory of a {runtime} task before input"),
            format!("{:8.1} KiB", memory as f64 / 1024.0),
        );
    }
    Ok(())
}

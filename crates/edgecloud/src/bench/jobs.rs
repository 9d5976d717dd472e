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

/// The naive way's single process holds everything: no limit it could reach.
pub(crate) const ONE_PROCESS: Limits = Limits {
    memory_mb: 8192,
    output_mb: 1 << 20,
    instructions: u64::MAX,
    seconds: 86_400,
};

pub(crate) const WORD_COUNT: &str = r#"
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
        let task =
            jobs::lua::LuaTask::new(WORD_COUNT, &ONE_PROCESS, Arc::new(AtomicBool::new(false)))?;
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

/// Word count by letters (as Python's `re.findall(rb"[A-Za-z]+")`), lower-cased.
const WORD_COUNT_LETTERS: &str = r#"
function map(line) for w in line:gmatch("%a+") do emit(w:lower(), 1) end end
function combine(w, ones) local n = 0 for _, c in ipairs(ones) do n = n + c end return n end
reduce = combine
"#;

/// Lines and bytes per file extension.
const GROUP_BY_EXTENSION: &str = r#"
function map(line, o)
  emit(o.key:match("%.([%w_]+)$") or "(none)", {1, #line + 1})
end
function combine(ext, vs)
  local n, b = 0, 0
  for _, v in ipairs(vs) do n = n + v[1]; b = b + v[2] end
  return {n, b}
end
reduce = combine
"#;

/// The same word count in Python, outside edgecloud, over the files themselves.
const PYTHON_OUTSIDE: &str = r#"
import os, re, sys
from collections import Counter
words = Counter()
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fh:
                words.update(w.lower() for w in re.findall(rb"[A-Za-z]+", fh.read()))
print(sum(words.values()), len(words))
"#;

fn files_under(root: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `bench --only jobs --jobs-corpus TREE`: a word count and a group-by over every file of
/// TREE (e.g. an unpacked linux-source package) stored in one node, against fetching
/// everything then running the same code in one process, and against Python reading the
/// files directly.
pub async fn corpus(dir: &Path, tree: &Path) -> anyhow::Result<()> {
    let files = files_under(tree)?;
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "compute jobs over {} ({} files, {:.1} MB), {cores} cores, one node:",
        tree.display(),
        files.len(),
        total as f64 / 1e6
    );
    let a = bench_archive(dir, 1, ChunkParams::default())?;
    a.create_bucket("corpus", None, Versioning::Enabled).await?;
    let t = Instant::now();
    let keys: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(tree).unwrap_or(f).to_string_lossy();
            format!("tree/{rel}")
        })
        .collect();
    let mut puts = futures::stream::iter(files.iter().zip(&keys).map(|(f, k)| {
        let a = a.clone();
        async move {
            let body = tokio::fs::read(f).await?;
            a.put_bytes("corpus", k, Bytes::from(body), PutOptions::default())
                .await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(cores * 2);
    while let Some(r) = puts.next().await {
        r?;
    }
    let put_secs = t.elapsed().as_secs_f64();
    row(
        "store the tree",
        format!(
            "{}   {:.0} files/s",
            mbps(total, put_secs),
            files.len() as f64 / put_secs
        ),
    );
    let jobs = Jobs::new(a.clone(), cores);
    let lua = |code: &str, output: &str| {
        let mut s = spec("tree/", output);
        s.code = code.into();
        s
    };
    let (info, wc_secs) = finish(&jobs, lua(WORD_COUNT_LETTERS, "out/wc.jsonl")).await?;
    row(
        "word count job (Lua)",
        format!(
            "{}   {} tasks, {:.1} s, {:.0} tasks/s",
            mbps(total, wc_secs),
            info.tasks_done,
            wc_secs,
            info.tasks_done as f64 / wc_secs
        ),
    );
    let (_, gb_secs) = finish(&jobs, lua(GROUP_BY_EXTENSION, "out/by-ext.jsonl")).await?;
    row(
        "group-by extension job (Lua)",
        format!("{}   {:.1} s", mbps(total, gb_secs), gb_secs),
    );

    // The naive way: fetch each object to one place, run the same code there, one at
    // a time (what a script over an S3 listing does).
    let t = Instant::now();
    let task = jobs::lua::LuaTask::new(
        WORD_COUNT_LETTERS,
        &ONE_PROCESS,
        Arc::new(AtomicBool::new(false)),
    )?;
    let o = task.object("all", "null", 0)?;
    for k in &keys {
        let body = read_all(&a, k).await?;
        tokio::task::block_in_place(|| -> Result<(), jobs::JobError> {
            for line in body.split(|b| *b == b'\n') {
                task.map(line, &o)?;
            }
            Ok(())
        })?;
    }
    task.finish()?;
    let naive_secs = t.elapsed().as_secs_f64();
    row(
        "naive: fetch each, run in one process",
        format!(
            "{}   the job is {:.1}x faster",
            mbps(total, naive_secs),
            naive_secs / wc_secs
        ),
    );

    let t = Instant::now();
    let py = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_OUTSIDE])
        .arg(tree)
        .output()
        .await?;
    let py_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        py.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    row(
        "Python word count on the files, no edgecloud",
        format!(
            "{}   the job takes {:.1}x its time",
            mbps(total, py_secs),
            wc_secs / py_secs
        ),
    );
    Ok(())
}

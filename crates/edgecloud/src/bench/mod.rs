//! `edgecloud bench`: codec stages, end-to-end engine throughput, small-object ops/s, and
//! storage efficiency over ten versions of a generated file tree (optionally against
//! restic). `--quick` shrinks every size so CI runs it in well under a minute. Prints
//! figures; asserts nothing (figures depend on the machine).

pub mod cluster;
pub mod containers;
pub mod files;
pub mod jobs;
pub mod net;
pub mod repair_sim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use archive::{
    Archive, ArchiveConfig, ChunkParams, DataKey, PutOptions, Redundancy, VersionSel, Versioning,
};
use bytes::Bytes;
use futures::StreamExt;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// CI mode: small sizes, finishes in well under a minute
    #[arg(long)]
    pub quick: bool,
    /// Folder for the benchmark's data [default: a temporary folder under /var/tmp]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also back the same tree versions up with restic (on PATH) and compare stored bytes
    #[arg(long)]
    pub compare_restic: bool,
    /// Average chunk size for the per-file and tar dedup runs [default: 64KiB]
    #[arg(long, value_name = "SIZE")]
    pub chunk_avg: Option<String>,
    /// Only these sections: codec, large, small, ledger (ledger-cost: only its cost on
    /// puts), jobs, repair-sim (repair of a lost node in clusters of 6-100 nodes,
    /// computed from the placement code), dedup, containers (against crun and runc;
    /// needs root) (comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// With the jobs section: also run a word count and a group-by over every file of
    /// this folder (e.g. an unpacked linux-source package), against fetching everything
    /// to one process and against Python on the files
    #[arg(long, value_name = "DIR")]
    pub jobs_corpus: Option<PathBuf>,
    /// Benchmark this S3 server instead (any S3 server: edgecloud, MinIO, SeaweedFS...):
    /// large-object PUT/GET MB/s and 4 KiB ops/s at concurrency 1, 8 and 32
    #[arg(long, value_name = "URL")]
    pub s3: Option<String>,
    /// Benchmark this WebDAV server instead (e.g. http://127.0.0.1:9401); the same
    /// workload as --s3 in a new top-level folder
    #[arg(long, value_name = "URL", conflicts_with_all = ["s3", "ftp"])]
    pub webdav: Option<String>,
    /// Benchmark this FTP server instead (e.g. 127.0.0.1:9421); the same workload as --s3
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "s3")]
    pub ftp: Option<String>,
    /// Start a 3-site, 6-node cluster of this binary on 127.0.0.101-106 and a one-node
    /// comparison on 127.0.0.100 (ports 9400-9421 on those addresses must be free); report
    /// S3 throughput of both, storage overhead, and repair speed after a node is killed
    #[arg(long, conflicts_with_all = ["s3", "webdav", "ftp"])]
    pub cluster: bool,
    /// Access key for --s3 (user name for --webdav and --ftp)
    #[arg(long, env = "AWS_ACCESS_KEY_ID", value_name = "KEY")]
    pub access_key: Option<String>,
    /// Secret key for --s3 (password for --webdav and --ftp)
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret_key: Option<String>,
    /// Region for --s3 signatures
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    pub region: String,
}

/// Seeded xorshift64*: repeatable data without a dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Text that compresses like source code or logs (~3-4x with zstd).
pub(crate) fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the", "data", "node", "struct", "return", "if", "else", "for", "while", "let", "mut",
        "self", "error", "result", "value", "buffer", "length", "offset", "config", "server",
        "client", "request", "response", "chunk", "shard", "bucket", "version", "archive", "fn",
        "impl", "pub", "use", "match", "Some", "None", "Ok", "Err", "async", "await", "0x1f", "42",
        "1024", "{", "}", "(", ")", ";", "//", "==", "->",
    ];
    let mut out = Vec::with_capacity(n + 64);
    while out.len() < n {
        let indent = rng.below(4) as usize * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for _ in 0..3 + rng.below(9) {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        // Identifiers with numbers keep it from compressing unrealistically well.
        out.extend_from_slice(format!("v{}\n", rng.below(100_000)).as_bytes());
    }
    out.truncate(n);
    out
}

pub(crate) fn mbps(bytes: u64, secs: f64) -> String {
    format!("{:8.1} MB/s", bytes as f64 / 1e6 / secs.max(1e-9))
}

pub(crate) fn row(name: &str, value: String) {
    println!("  {name:<44} {value}");
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.webdav.is_some() || a.ftp.is_some() {
        let (Some(user), Some(password)) = (a.access_key.clone(), a.secret_key.clone()) else {
            anyhow::bail!(
                "--webdav and --ftp need --access-key and --secret-key (the user name and password)"
            );
        };
        let login = crate::bench::files::Login { user, password };
        return match (&a.webdav, &a.ftp) {
            (Some(url), _) => crate::bench::files::run_webdav(url, login, a.quick).await,
            (_, Some(addr)) => crate::bench::files::run_ftp(addr, login, a.quick).await,
            _ => unreachable!(),
        };
    }
    if a.cluster {
        return crate::bench::cluster::run(a.quick).await;
    }
    if let Some(url) = a.s3 {
        let (Some(access_key), Some(secret_key)) = (a.access_key, a.secret_key) else {
            anyhow::bail!(
                "--s3 needs --access-key and --secret-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            );
        };
        let target = crate::bench::net::S3Target {
            url,
            access_key,
            secret_key,
            region: a.region,
        };
        return crate::bench::net::run_s3(target, a.quick).await;
    }
    let want = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("edgecloud-bench-")
                .tempdir_in("/var/tmp")
                .or_else(|_| tempfile::tempdir())?;
            // Passable (not listable) by others, as a node's data folder is: containers
            // in user namespaces reach their roots in it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))?;
            tmp.path().to_path_buf()
        }
    };
    println!(
        "edgecloud bench{} (data in {})",
        if a.quick { " --quick" } else { "" },
        dir.display()
    );
    if want("codec") {
        codec_stages(a.quick);
    }
    if want("large") {
        large_objects(&dir.join("large"), a.quick).await?;
    }
    if want("small") {
        small_objects(&dir.join("small"), a.quick).await?;
    }
    if want("ledger") {
        ledger_appends(&dir.join("ledger"), a.quick)?;
    }
    if want("ledger") || want("ledger-cost") {
        ledger_put_overhead(&dir.join("ledger-cost"), a.quick).await?;
    }
    if want("containers") {
        crate::bench::containers::run(&dir.join("containers"), a.quick).await?;
    }
    if want("jobs") {
        crate::bench::jobs::run(&dir.join("jobs"), a.quick).await?;
        if let Some(tree) = &a.jobs_corpus {
            crate::bench::jobs::corpus(&dir.join("jobs-corpus"), tree).await?;
        }
    }
    if want("repair-sim") {
        crate::bench::repair_sim::run(a.quick);
    }
    if want("dedup") {
        let avg = match &a.chunk_avg {
            Some(s) => node::settings::parse_size(s)? as usize,
            None => ChunkParams::default().avg,
        };
        dedup(&dir.join("dedup"), a.quick, avg, a.compare_restic).await?;
    }
    Ok(())
}

fn codec_stages(quick: bool) {
    let size = if quick { 16 << 20 } else { 128 << 20 };
    println!(
        "codec stages, one core, {} MiB, default chunks (avg {} KiB):",
        size >> 20,
        ChunkParams::default().avg >> 10
    );
    let mut rng = Rng::new(1);
    let random = rng.bytes(size);
    let txt = text(&mut rng, size);
    let key = DataKey::generate();
    let chunker = codec::Chunker::new(ChunkParams::default());
    // Each stage runs twice and the second run is timed: the first pays page faults
    // for fresh output buffers, which is allocator noise, not the stage.
    let time = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let mut chunks = Vec::new();
    row(
        "chunk (FastCDC 2020)",
        mbps(size as u64, time(&mut || chunks = chunker.cut_all(&random))),
    );
    let mut ids = Vec::new();
    row(
        "hash (keyed BLAKE3)",
        mbps(
            size as u64,
            time(&mut || ids = chunks.iter().map(|c| codec::chunk_id(&key, c)).collect()),
        ),
    );
    // Timed loops drop their outputs as they go (as the data path does); the outputs
    // later stages need are made outside the timing.
    row(
        "encrypt (AES-256-GCM, no compression)",
        mbps(
            size as u64,
            time(&mut || {
                std::hint::black_box(
                    chunks
                        .iter()
                        .zip(&ids)
                        .map(|(c, id)| codec::seal(&key, id, c, 0).len())
                        .sum::<usize>(),
                );
            }),
        ),
    );
    let sealed: Vec<Vec<u8>> = chunks
        .iter()
        .zip(&ids)
        .map(|(c, id)| codec::seal(&key, id, c, 0))
        .collect();
    row(
        "compress check + encrypt, random data",
        mbps(
            size as u64,
            time(&mut || {
                for (c, id) in chunks.iter().zip(&ids) {
                    codec::seal(&key, id, c, 3);
                }
            }),
        ),
    );
    let tchunks = chunker.cut_all(&txt);
    let mut tsealed = 0usize;
    let t = time(&mut || {
        tsealed = tchunks
            .iter()
            .map(|c| codec::seal(&key, &codec::chunk_id(&key, c), c, 3).len())
            .sum();
    });
    row(
        "hash + compress (zstd 3) + encrypt, text",
        format!(
            "{}  ratio {:.2}x",
            mbps(size as u64, t),
            size as f64 / tsealed as f64
        ),
    );
    let ec = Redundancy::Ec { k: 4, m: 2 };
    row(
        "erasure-code ec:4+2 (reed-solomon-erasure)",
        mbps(
            size as u64,
            time(&mut || {
                std::hint::black_box(
                    sealed
                        .iter()
                        .map(|s| codec::split_shards(ec, s).len())
                        .sum::<usize>(),
                );
            }),
        ),
    );
    let shards: Vec<Vec<Vec<u8>>> = sealed.iter().map(|s| codec::split_shards(ec, s)).collect();
    let t = time(&mut || {
        for c in &chunks {
            let id = codec::chunk_id(&key, c);
            let s = codec::seal(&key, &id, c, 3);
            codec::split_shards(ec, &s);
        }
    });
    row("whole encode path, random, ec:4+2", mbps(size as u64, t));
    let t = time(&mut || {
        for ((s, id), sh) in sealed.iter().zip(&ids).zip(&shards) {
            let mut present: Vec<Option<Vec<u8>>> = sh.iter().cloned().map(Some).collect();
            present[0] = None; // force a reconstruction
            present[3] = None;
            let joined = codec::join_shards(ec, present, s.len()).expect("rebuild");
            codec::open(&key, id, joined).expect("open");
        }
    });
    row("decode path, 2 of 6 shards lost", mbps(size as u64, t));
}

fn bench_archive(dir: &Path, disks: usize, chunk: ChunkParams) -> anyhow::Result<Archive> {
    let disks = (0..disks).map(|i| dir.join(format!("disk{i}"))).collect();
    let mut cfg = ArchiveConfig::new(dir.join("data"), disks, DataKey::generate());
    cfg.chunk = chunk;
    Ok(Archive::open(cfg)?)
}

fn body(data: Bytes) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin {
    // 1 MiB pieces, as a network body would arrive.
    let n = data.len();
    futures::stream::iter(
        (0..n)
            .step_by(1 << 20)
            .map(move |i| Ok(data.slice(i..(i + (1 << 20)).min(n)))),
    )
}

async fn large_objects(dir: &Path, quick: bool) -> anyhow::Result<()> {
    let (obj, count) = if quick { (16 << 20, 8) } else { (64 << 20, 16) };
    println!(
        "large objects: {count} x {} MiB, one disk, fsync'd:",
        obj >> 20
    );
    let a = bench_archive(dir, 1, ChunkParams::default())?;
    a.create_bucket("bench", None, Versioning::Enabled).await?;
    let mut rng = Rng::new(2);
    let (mut put_s, mut get_s) = (0.0, 0.0);
    for i in 0..count {
        let data = Bytes::from(rng.bytes(obj));
        let t = Instant::now();
        a.put(
            "bench",
            &format!("obj{i}"),
            body(data),
            PutOptions::default(),
        )
        .await?;
        put_s += t.elapsed().as_secs_f64();
    }
    for i in 0..count {
        let t = Instant::now();
        let (_, _, mut s) = a
            .get("bench", &format!("obj{i}"), &VersionSel::Latest, None)
            .await?;
        let mut n = 0;
        while let Some(p) = s.next().await {
            n += p?.len();
        }
        anyhow::ensure!(n == obj, "short read");
        get_s += t.elapsed().as_secs_f64();
    }
    let total = (obj * count) as u64;
    row("put", mbps(total, put_s));
    row("get", mbps(total, get_s));
    Ok(())
}

async fn small_objects(dir: &Path, quick: bool) -> anyhow::Result<()> {
    let n = if quick { 1000 } else { 5000 };
    let conc = 32;
    println!("small objects: {n} x 4 KiB, concurrency {conc}, fsync'd (group commit):");
    let a = bench_archive(dir, 1, ChunkParams::default())?;
    a.create_bucket("small", None, Versioning::Enabled).await?;
    let mut rng = Rng::new(3);
    let bodies: Vec<Bytes> = (0..n).map(|_| Bytes::from(rng.bytes(4096))).collect();
    let put_s = put_small(&a, "small", "k", &bodies, conc).await?;
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let a = a.clone();
            async move {
                a.get_bytes("small", &format!("k{i:06}"), &VersionSel::Latest)
                    .await
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let get_s = t.elapsed().as_secs_f64();
    row("put", format!("{:8.0} ops/s", n as f64 / put_s));
    row("get", format!("{:8.0} ops/s", n as f64 / get_s));
    Ok(())
}

/// Puts each body as its own object, `conc` at a time; returns the seconds taken.
async fn put_small(
    a: &Archive,
    bucket: &str,
    prefix: &str,
    bodies: &[Bytes],
    conc: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    futures::stream::iter(bodies.iter().enumerate())
        .map(|(i, b)| {
            let a = a.clone();
            async move {
                a.put_bytes(
                    bucket,
                    &format!("{prefix}{i:06}"),
                    b.clone(),
                    PutOptions::default(),
                )
                .await
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(t.elapsed().as_secs_f64())
}

/// What the audit log costs a 4 KiB PUT: the same workload on archives with the log
/// and without, in alternating rounds so drift hits both alike. The log's rounds carry
/// all its work: the records in each commit, and publishing (tree, tiles, signed
/// checkpoint) beside the writes once a second of them is unpublished, as `serve` does.
/// Three ways: with the catalog's own group-commit writer (each batch fsynced); through
/// a one-voter Raft group as `serve` runs it (the Raft log is fsynced; the catalog
/// commits lazily); and as S3 clients see it, SigV4-signed PUTs over HTTP to the S3
/// gateway in front of those Raft archives.
///
/// Figures are totals over all rounds: throughput, and the server's CPU time per put,
/// with the mean and ~95% confidence interval of the cost round by round. Over S3 the
/// client shares this process and its cores, but runs on a runtime of its own whose
/// threads are named, so the server's CPU is told apart from the client's.
async fn ledger_put_overhead(dir: &Path, quick: bool) -> anyhow::Result<()> {
    let (rounds, n, conc) = if quick { (3, 500, 32) } else { (31, 1000, 32) };
    println!("ledger cost on 4 KiB puts ({rounds} alternating rounds of {n}, concurrency {conc}):");
    let open = |name: &str, logged: bool| -> anyhow::Result<Archive> {
        let d = dir.join(name);
        let mut cfg =
            ArchiveConfig::new(d.join("data"), vec![d.join("disk0")], DataKey::generate());
        cfg.audit_log = logged;
        Ok(Archive::open(cfg)?)
    };
    struct Setup {
        mode: &'static str,
        archive: Archive,
        s3: Option<std::sync::Arc<crate::bench::net::S3Client>>,
        auditor: Option<std::sync::Arc<archive::audit::Auditor>>,
    }
    let auditor = |a: &Archive, name: &str| -> anyhow::Result<_> {
        let (skey, vkey) = ledger::publish::generate_key("edgecloud.bench/ledger");
        let log = dir.join(name).join("log");
        Ok(std::sync::Arc::new(archive::audit::Auditor::open(
            a, &log, &skey, &vkey, None,
        )?))
    };
    // Pairs: with the log, then without.
    let mut setups: Vec<Setup> = Vec::new();
    for (name, mode, raft) in [
        ("local", "catalog writer", false),
        ("raft", "Raft, as serve", true),
    ] {
        for logged in [true, false] {
            let name = format!("{name}-{logged}");
            let a = open(&name, logged)?;
            if raft {
                replicate_alone(&a, &dir.join(&name)).await?;
            }
            setups.push(Setup {
                mode,
                auditor: logged.then(|| auditor(&a, &name)).transpose()?,
                archive: a,
                s3: None,
            });
        }
    }
    for i in [2, 3] {
        let a = setups[i].archive.clone();
        setups.push(Setup {
            mode: "S3 PUT, as serve",
            s3: Some(std::sync::Arc::new(s3_gateway_for_bench(&a).await?)),
            auditor: setups[i].auditor.clone(),
            archive: a,
        });
    }
    for s in &setups[..4] {
        s.archive
            .create_bucket("small", None, Versioning::Enabled)
            .await?;
    }
    let client = ClientRuntime::new()?;
    let mut rng = Rng::new(4);
    let bodies: Vec<Bytes> = (0..n).map(|_| Bytes::from(rng.bytes(4096))).collect();
    // Per setup and round: seconds, and CPU seconds of the server (this process but
    // the S3 client's threads) and of the client.
    let mut measured = vec![Vec::<(f64, f64, f64)>::new(); setups.len()];
    // Per setup: CPU seconds by thread name over all rounds, and of publishing.
    let mut by_thread = vec![std::collections::BTreeMap::<String, f64>::new(); setups.len()];
    let mut publishing_in = vec![0.0f64; setups.len()];
    // Per archive with the log (by its first setup): seconds written since it last
    // published; and the CPU seconds and entries of all publishing.
    let mut unpublished = vec![0.0f64; setups.len()];
    let (mut publish_cpu, mut published) = (0.0f64, 0u64);
    let slot = |i: usize| if i >= 4 { i - 2 } else { i };
    for r in 0..rounds {
        let mut order: Vec<usize> = (0..setups.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let s = &setups[i];
            let prefix = format!("m{i}r{r}-");
            let (t, cpu, threads) = (Instant::now(), process_cpu_secs(), threads_cpu());
            // As `serve`: publishing runs beside the writes once a second of them is
            // unpublished (whole tiles); it ends within the round, so the round carries
            // its CPU. The last round publishes everything.
            let publish = |a: std::sync::Arc<archive::audit::Auditor>, whole_tiles: bool| {
                tokio::task::spawn_blocking(move || {
                    let (size, cpu) = (a.size(), thread_cpu_secs());
                    match whole_tiles {
                        true => a.catch_up_whole_tiles(),
                        false => a.catch_up(),
                    }
                    .map(|now| (now - size, thread_cpu_secs() - cpu))
                })
            };
            let due = s.auditor.clone().filter(|_| unpublished[slot(i)] >= 1.0);
            let background = due.map(|a| {
                unpublished[slot(i)] = 0.0;
                publish(a, true)
            });
            match &s.s3 {
                None => put_small(&s.archive, "small", &prefix, &bodies, conc).await?,
                Some(c) => {
                    let put = put_small_s3(c.clone(), "small", prefix, bodies.clone(), conc);
                    client.rt().spawn(put).await??
                }
            };
            if let Some(a) = s.auditor.clone() {
                unpublished[slot(i)] += t.elapsed().as_secs_f64();
                let last = (r + 1 == rounds).then(|| publish(a, false));
                for p in background.into_iter().chain(last) {
                    let (entries, cpu) = p.await??;
                    published += entries;
                    publish_cpu += cpu;
                    publishing_in[i] += cpu;
                }
            }
            let threads = cpu_by_name(&threads, &threads_cpu());
            let client_cpu = threads.get(ClientRuntime::THREADS).copied().unwrap_or(0.0);
            for (name, secs) in threads {
                *by_thread[i].entry(name).or_default() += secs;
            }
            measured[i].push((
                t.elapsed().as_secs_f64(),
                process_cpu_secs() - cpu - client_cpu,
                client_cpu,
            ));
        }
    }
    let puts = (rounds * n) as f64;
    row(
        "publishing (tree, tiles, checkpoint)",
        format!(
            "{:6.1} µs CPU per entry ({published} entries)",
            publish_cpu / published.max(1) as f64 * 1e6
        ),
    );
    let us = |secs: f64| secs / puts * 1e6;
    let total = |rounds: &[(f64, f64, f64)]| {
        rounds
            .iter()
            .fold((0.0, 0.0, 0.0), |t, r| (t.0 + r.0, t.1 + r.1, t.2 + r.2))
    };
    for pair in 0..setups.len() / 2 {
        let mode = setups[2 * pair].mode;
        let (with_rounds, without_rounds) = (&measured[2 * pair], &measured[2 * pair + 1]);
        let (with, without) = (total(with_rounds), total(without_rounds));
        let over_s3 = setups[2 * pair].s3.is_some();
        for (label, t) in [("without the log", without), ("with the log", with)] {
            let client = if over_s3 {
                format!(" + {:3.0} client", us(t.2))
            } else {
                String::new()
            };
            row(
                &format!("{mode}: {label}"),
                format!(
                    "{:6.0} ops/s  {:5.0} µs server CPU per put{client}",
                    puts / t.0,
                    us(t.1)
                ),
            );
        }
        // The spread: the cost in each round, against the round without the log next to
        // it (publishing lands in some rounds only, so single rounds vary widely).
        let per_round: Vec<f64> = with_rounds
            .iter()
            .zip(without_rounds)
            .map(|(w, wo)| (w.1 / wo.1 - 1.0) * 100.0)
            .collect();
        let (mean, half) = mean_and_ci95(&per_round);
        // Where the added CPU went, by thread (publishing runs on a tokio blocking
        // thread: its own share is shown apart).
        let (w, wo) = (&by_thread[2 * pair], &by_thread[2 * pair + 1]);
        let mut added: Vec<String> = w
            .keys()
            .chain(wo.keys())
            .filter(|name| *name != ClientRuntime::THREADS)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|name| {
                let d = w.get(name).unwrap_or(&0.0) - wo.get(name).unwrap_or(&0.0);
                (name, us(d))
            })
            .filter(|(_, d)| d.abs() >= 0.5)
            .map(|(name, d)| format!("{name} {d:+.1}"))
            .collect();
        added.push(format!(
            "of which publishing {:+.1}",
            us(publishing_in[2 * pair])
        ));
        row(&format!("{mode}: added µs per put"), added.join(", "));
        row(
            &format!("{mode}: cost of the log"),
            format!(
                "{:6.1} % throughput {:5.1} % server CPU (rounds: {mean:.1} ± {half:.1} %)",
                (1.0 - without.0 / with.0) * 100.0,
                (with.1 / without.1 - 1.0) * 100.0
            ),
        );
    }
    Ok(())
}

/// The mean of `xs` and the half-width of its ~95% confidence interval (normal
/// approximation: 1.96 standard errors).
fn mean_and_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return (xs.first().copied().unwrap_or(0.0), f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// A runtime for a benchmark's client, beside the server's in the same process. Its
/// threads carry one name, so their CPU time can be read apart from the server's.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    /// Thread names are cut to 15 bytes by Linux; this one fits.
    const THREADS: &str = "bench-s3-client";

    fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(Self::THREADS)
            // Idle threads that exit would take their CPU time with them.
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .enable_all()
            .build()?;
        Ok(ClientRuntime(Some(rt)))
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until drop")
    }
}

/// This process's live threads: id -> (name, CPU nanoseconds), from
/// `/proc/self/task/*/{comm,schedstat}`.
fn threads_cpu() -> std::collections::HashMap<String, (String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Default::default();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = stat.split_whitespace().next()?.parse::<u64>().ok()?;
            // One name per kind of thread: shard writers carry their disk after ':'.
            let name = comm.trim_end().split(':').next()?.to_string();
            Some((t.file_name().to_string_lossy().into_owned(), (name, ns)))
        })
        .collect()
}

/// CPU seconds used between two `threads_cpu` snapshots, by thread name (a thread
/// that ended in between is missing; one that started counts from zero).
fn cpu_by_name(
    before: &std::collections::HashMap<String, (String, u64)>,
    after: &std::collections::HashMap<String, (String, u64)>,
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (tid, (name, ns)) in after {
        let was = before.get(tid).map_or(0, |b| b.1);
        *out.entry(name.clone()).or_insert(0.0) += ns.saturating_sub(was) as f64 * 1e-9;
    }
    out
}

impl Drop for ClientRuntime {
    /// A runtime cannot be dropped inside another one's async context; let it go.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// CPU time this process has used (every thread), in seconds.
fn process_cpu_secs() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time the calling thread has used, in seconds.
fn thread_cpu_secs() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// An S3 gateway for `a` on a free local port (as `serve` builds it), and a client.
async fn s3_gateway_for_bench(a: &Archive) -> anyhow::Result<crate::bench::net::S3Client> {
    let (access_key, secret_key) = ("benchkey".to_string(), "bench-secret-key-0123".to_string());
    let app = s3::router(
        a.clone(),
        s3::GatewayConfig {
            root: s3::RootKey {
                access_key: access_key.clone(),
                secret: secret_key.clone(),
            },
            domain: None,
            lifecycle_day: std::time::Duration::from_secs(86_400),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    crate::bench::net::S3Client::new(&crate::bench::net::S3Target {
        url,
        access_key,
        secret_key,
        region: "us-east-1".into(),
    })
}

/// `put_small` through an S3 gateway. It owns what it uses, to run on the client's
/// own runtime.
async fn put_small_s3(
    s3: std::sync::Arc<crate::bench::net::S3Client>,
    bucket: &'static str,
    prefix: String,
    bodies: Vec<Bytes>,
    conc: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, b)| {
            let (s3, path) = (s3.clone(), format!("/{bucket}/{prefix}{i:06}"));
            async move {
                s3.send(reqwest::Method::PUT, &path, &[], Some(b))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Puts an archive's catalog under a Raft group of one voter (this process), the way a
/// single `serve` runs.
async fn replicate_alone(a: &Archive, dir: &Path) -> anyhow::Result<()> {
    let secret = ::cluster::ClusterSecret::new("edgecloud-bench-only-secret")?;
    let key = ::cluster::NodeKey::load_or_create(&dir.join("node.key"))?;
    let tls = ::cluster::NodeTls::new(&secret, &key)?;
    let replica = consensus::Replica::start(consensus::ReplicaOptions {
        data_dir: dir.to_path_buf(),
        me: consensus::Member {
            node: key.id().0,
            addr: "127.0.0.1:1".into(),
            site: "bench".into(),
        },
        catalog: a.catalog().clone(),
        client: ::cluster::Client::new(&tls)?,
        max_message_bytes: consensus::MAX_MESSAGE_BYTES,
    })
    .await?;
    replica.initialize_alone().await?;
    Ok(())
}

/// A file tree that changes like a real one between backups.
struct Tree {
    files: Vec<(String, Vec<u8>, bool)>,
}

impl Tree {
    fn generate(rng: &mut Rng, n: usize, total: usize) -> Tree {
        // Log-uniform sizes from 1 KiB to 2 MiB, scaled to the total.
        let raw: Vec<f64> = (0..n)
            .map(|_| (10.0 + rng.below(1000) as f64 / 1000.0 * 11.0).exp2())
            .collect();
        let scale = total as f64 / raw.iter().sum::<f64>();
        let files = raw
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let size = (s * scale) as usize;
                let is_text = rng.below(100) < 60;
                let data = if is_text {
                    text(rng, size)
                } else {
                    rng.bytes(size)
                };
                let ext = if is_text { "txt" } else { "bin" };
                (
                    format!("dir{}/sub{}/file{i:04}.{ext}", i % 7, i % 3),
                    data,
                    is_text,
                )
            })
            .collect();
        Tree { files }
    }

    /// Rewrites 2% of the files and inserts a few bytes into the middle of another 5%.
    fn next_version(&mut self, rng: &mut Rng) {
        let n = self.files.len();
        for _ in 0..(n * 2).div_ceil(100) {
            let f = &mut self.files[rng.below(n as u64) as usize];
            f.1 = if f.2 {
                text(rng, f.1.len())
            } else {
                rng.bytes(f.1.len())
            };
        }
        for _ in 0..(n * 5).div_ceil(100) {
            let f = &mut self.files[rng.below(n as u64) as usize];
            let mid = f.1.len() / 2;
            let len = 1 + rng.below(16) as usize;
            let insert = rng.bytes(len);
            f.1.splice(mid..mid, insert);
        }
    }

    fn logical(&self) -> u64 {
        self.files.iter().map(|f| f.1.len() as u64).sum()
    }

    fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::with_capacity(
            self.logical() as usize + self.files.len() * 1024,
        ));
        for (name, data, _) in &self.files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_760_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..])?;
        }
        Ok(b.into_inner()?)
    }

    fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(dir);
        for (name, data, _) in &self.files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().expect("has parent"))?;
            std::fs::write(p, data)?;
        }
        Ok(())
    }
}

fn stored_bytes(a: &Archive, data_dir: &Path) -> u64 {
    let shards: u64 = a.disk_health().iter().map(|d| d.bytes).sum();
    let catalog = std::fs::metadata(data_dir.join("catalog.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    shards + catalog
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

async fn dedup(dir: &Path, quick: bool, avg: usize, restic: bool) -> anyhow::Result<()> {
    let (files, total, versions) = if quick {
        (100, 10 << 20, 4)
    } else {
        (500, 100 << 20, 10)
    };
    let chunk = ChunkParams::from_avg(avg);
    println!(
        "dedup: {versions} versions of a {} MiB tree of {files} files (60% text), chunks avg {} KiB:",
        total >> 20,
        avg >> 10
    );
    let mut rng = Rng::new(4);
    let mut tree = Tree::generate(&mut rng, files, total);
    let a = bench_archive(dir, 1, chunk)?;
    a.create_bucket("files", Some(Redundancy::None), Versioning::Enabled)
        .await?;
    let tars_dir = dir.join("tars");
    let t = bench_archive(&tars_dir, 1, chunk)?;
    t.create_bucket("tars", Some(Redundancy::None), Versioning::Enabled)
        .await?;
    let restic_repo = dir.join("restic-repo");
    let tree_dir = dir.join("tree");
    if restic {
        let st = std::process::Command::new("restic")
            .args(["init", "--repo"])
            .arg(&restic_repo)
            .env("RESTIC_PASSWORD", "bench")
            .output()
            .context("cannot run restic (install it: apt-get install restic)")?;
        anyhow::ensure!(
            st.status.success(),
            "restic init failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let (mut logical, mut tar_logical, mut first_tar) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for v in 0..versions {
        if v > 0 {
            tree.next_version(&mut rng);
        }
        logical += tree.logical();
        for (name, data, _) in &tree.files {
            a.put(
                "files",
                name,
                body(Bytes::from(data.clone())),
                PutOptions::default(),
            )
            .await?;
        }
        let tarball = tree.tar()?;
        tar_logical += tarball.len() as u64;
        t.put(
            "tars",
            &format!("backup-{v:02}.tar"),
            body(Bytes::from(tarball)),
            PutOptions::default(),
        )
        .await?;
        if v == 0 {
            first_tar = stored_bytes(&t, &tars_dir.join("data"));
        }
        if restic {
            tree.write_to(&tree_dir)?;
            let st = std::process::Command::new("restic")
                .args(["backup", "--quiet", "--repo"])
                .arg(&restic_repo)
                .arg(".")
                .current_dir(&tree_dir)
                .env("RESTIC_PASSWORD", "bench")
                .output()?;
            anyhow::ensure!(
                st.status.success(),
                "restic backup failed: {}",
                String::from_utf8_lossy(&st.stderr)
            );
        }
    }
    let files_stored = stored_bytes(&a, &dir.join("data"));
    let tars_stored = stored_bytes(&t, &tars_dir.join("data"));
    row(
        "logical bytes, all versions",
        format!("{:8.1} MB", logical as f64 / 1e6),
    );
    row(
        "(a) one object per file: stored",
        format!(
            "{:8.1} MB  ({:.1}x smaller than logical)",
            files_stored as f64 / 1e6,
            logical as f64 / files_stored as f64
        ),
    );
    row(
        "(b) one tar per version: stored",
        format!(
            "{:8.1} MB  ({:.1}x smaller than logical)",
            tars_stored as f64 / 1e6,
            tar_logical as f64 / tars_stored as f64
        ),
    );
    row(
        "(b) all tars vs the first tar alone",
        format!("{:8.2}x", tars_stored as f64 / first_tar.max(1) as f64),
    );
    if restic {
        let r = du(&restic_repo);
        row(
            "restic repository, same versions",
            format!(
                "{:8.1} MB  (edgecloud (a) is {:.2}x of restic)",
                r as f64 / 1e6,
                files_stored as f64 / r as f64
            ),
        );
    }
    row("time", format!("{:8.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// The audit log: batched appends per second, inclusion-proof time on a large tree,
/// bytes stored per leaf.
fn ledger_appends(dir: &Path, quick: bool) -> anyhow::Result<()> {
    use ledger::entries::FileEntries;
    use ledger::tree::Tree;
    std::fs::create_dir_all(dir)?;
    let leaves: u64 = if quick { 200_000 } else { 10_000_000 };
    println!("ledger ({leaves} leaves, batches of 1000):");
    let entries = FileEntries::open(dir)?;
    let tree = Tree::open(&dir.join("hashes.bin"), 0, |_| {
        unreachable!("a new tree has no entries")
    })?;
    let start = Instant::now();
    let mut i = 0u64;
    while i < leaves {
        let batch: Vec<Vec<u8>> = (i..(i + 1000).min(leaves))
            .map(|n| {
                let change = ledger::record::Change::VersionWritten {
                    bucket: "bench".into(),
                    key: format!("dir/object-{n:08}"),
                    version_id: format!("{n:016x}"),
                    size: 4096,
                    sha256: Some("0".repeat(64)),
                    parts: vec![],
                };
                ledger::record::Record::new(n, Some("ECBENCH".into()), change).to_bytes()
            })
            .collect();
        entries.append(&batch)?;
        let hashes: Vec<ledger::Hash> = batch.iter().map(|r| ledger::leaf_hash(r)).collect();
        tree.append(&hashes, true)?;
        i += batch.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    row(
        "appends (entries + hashes, fsync per batch)",
        format!("{:8.0} leaves/s", leaves as f64 / secs),
    );
    let probes = 1000u64;
    let start = Instant::now();
    let mut rng = Rng::new(5);
    for _ in 0..probes {
        let idx = rng.below(leaves);
        std::hint::black_box(tree.inclusion_proof(idx, leaves)?);
    }
    row(
        &format!("inclusion proof at {leaves} leaves"),
        format!(
            "{:8.1} us",
            start.elapsed().as_secs_f64() * 1e6 / probes as f64
        ),
    );
    let bytes = du(dir);
    row(
        "bytes stored per leaf (entries + hashes)",
        format!("{:8.1} B", bytes as f64 / leaves as f64),
    );
    Ok(())
}

//! `edgecloud bench --only containers`: containers run by this process (as a node runs
//! them, youki's libcontainer in process) against crun and runc on the same root file
//! system: create → start → wait → delete of `/bin/true` (on a lazy root, and on an
//! unpacked one); the first start of an image never seen on this node (a lazy root
//! reads only what starts it; unpacked, all of it; on a further node, fetched ahead
//! from the first start's record); this process's memory per idle container. Needs root and /bin/busybox (busybox-static); skipped without them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use archive::ChunkParams;
use containers::{Containers, RunSpec, State};
use images::ImageStore;
use sha2::Digest;

use crate::bench::{Rng, bench_archive, row};

fn hex(d: &[u8]) -> String {
    sha2::Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `docker save` tarball named `tag`: busybox with `true`, `sh` and `sleep`, and
/// `extra` bytes of random files (256 KiB each) under /data.
fn image_tarball(dir: &Path, tag: &str, extra: usize, seed: u64) -> anyhow::Result<PathBuf> {
    let mut layer = tar::Builder::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox")?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    layer.append_data(&mut h, "bin/busybox", &busybox[..])?;
    for tool in ["true", "sh", "sleep"] {
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        layer.append_link(&mut l, format!("bin/{tool}"), "busybox")?;
    }
    let mut rng = Rng::new(seed);
    let piece = 256 << 10;
    for i in 0..extra.div_ceil(piece) {
        let mut data = vec![0u8; piece];
        rng.fill(&mut data);
        let mut f = tar::Header::new_gnu();
        f.set_mode(0o644);
        f.set_size(data.len() as u64);
        layer.append_data(&mut f, format!("data/{i:05}.bin"), &data[..])?;
    }
    let layer = layer.into_inner()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))]},
    }))?;
    let cfg_name = format!("{}.json", hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name, "RepoTags": [tag], "Layers": ["l/layer.tar"]}]))?;
    let mut outer = tar::Builder::new(Vec::new());
    for (name, body) in [
        (cfg_name.as_str(), &config),
        ("l/layer.tar", &layer),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        outer.append_data(&mut h, name, &body[..])?;
    }
    let path = dir.join(format!("{}.tar", tag.replace(':', "-")));
    std::fs::write(&path, outer.into_inner()?)?;
    Ok(path)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

async fn wait_exited(c: &Containers, id: &str) -> anyhow::Result<()> {
    for _ in 0..5000 {
        if c.get(id)?.state == State::Exited {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    anyhow::bail!("container {id} did not exit")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) async fn run(dir: &Path, quick: bool) -> anyhow::Result<()> {
    println!("containers:");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").exists() {
        row(
            "skipped",
            "needs root and /bin/busybox (busybox-static)".into(),
        );
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let archive = bench_archive(dir, 1, ChunkParams::default())?;
    let store = ImageStore::new(archive);
    store
        .import(&image_tarball(dir, "bench-true:1", 0, 1)?, None, None)
        .await?;
    let node = dir.join("node");
    // As `edgecloud serve` does: lazy roots are served by this binary's `lazy-root`.
    let program = std::env::current_exe()?;
    let c = Containers::open(&node, store.clone())?;
    c.set_up_by(program.clone());
    c.enable_lazy_roots(program.clone())?;
    let unpacked = Containers::open(&dir.join("node-unpacked"), store.clone())?;
    let spec = |image: &str, command: &[&str]| RunSpec {
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };

    let runs = if quick { 10 } else { 50 };

    // Ours: the whole of `edgecloud run --rm IMAGE true` on the node (overlay, spec,
    // record, libcontainer create and start, wait, delete, unmount).
    let mut ours_ms = 0.0;
    if let Some(why) = c.no_user_namespaces() {
        row("in a user namespace of its own", format!("skipped: {why}"));
    }
    let variants = [
        ("a lazy root, its own user namespace", &c, ""),
        ("a lazy root, the node's user namespace", &c, "host"),
        ("an unpacked root", &unpacked, ""),
    ];
    for (root, c, userns) in variants {
        if c.no_user_namespaces().is_some() && root.contains("its own") {
            continue;
        }
        let spec = |image: &str, command: &[&str]| RunSpec {
            userns: userns.into(),
            ..spec(image, command)
        };
        let warm = c.run(spec("bench-true:1", &["true"]), None).await?;
        wait_exited(c, &warm.id).await?;
        c.remove(&warm.id, false).await?;
        let (mut ours, mut starts, mut removals) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let info = c.run(spec("bench-true:1", &["true"]), None).await?;
            starts.push(t.elapsed());
            wait_exited(c, &info.id).await?;
            let r = Instant::now();
            c.remove(&info.id, false).await?;
            removals.push(r.elapsed());
            ours.push(t.elapsed());
        }
        let ms = median_ms(ours);
        // The others are compared with the first: what `edgecloud run` does by default.
        if ours_ms == 0.0 {
            ours_ms = ms;
        }
        row(
            &format!("create → start → wait → delete of /bin/true, {root}"),
            format!("{ms:8.1} ms  (edgecloud, median of {runs}; overlay and record included)"),
        );
        row(
            "  of which run (to started) / remove",
            format!(
                "{:8.1} ms / {:.1} ms",
                median_ms(starts),
                median_ms(removals)
            ),
        );
    }

    // crun and runc on the same unpacked root file system, each `run` a process.
    let image = store.find("bench-true:1").await?;
    let rootfs = dir
        .join("node-unpacked/containers/images")
        .join(image.id.trim_start_matches("sha256:"));
    for runtime in ["crun", "runc"] {
        let Some(bin) = ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(runtime))
            .find(|p| p.exists())
        else {
            row(runtime, "not installed (apt-get install crun runc)".into());
            continue;
        };
        let bundle = dir.join(format!("bundle-{runtime}"));
        std::fs::create_dir_all(&bundle)?;
        let run_spec = spec("bench-true:1", &["true"]);
        let config = containers::spec::runtime_spec(&containers::spec::SpecInput {
            id: &format!("bench-{runtime}"),
            hostname: runtime,
            rootfs: &rootfs,
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: (0, 0),
            run: &run_spec,
            user_namespace: None,
            binds: Vec::new(),
        });
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
        let mut times = Vec::new();
        let mut failed = None;
        for i in 0..=runs {
            let t = Instant::now();
            let out = std::process::Command::new(&bin)
                .args(["run", "-b"])
                .arg(&bundle)
                .arg(format!("bench-{runtime}-{i}"))
                .stdin(std::process::Stdio::null())
                .output()?;
            if !out.status.success() {
                failed = Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
                break;
            }
            if i > 0 {
                times.push(t.elapsed()); // the first run warms the page cache
            }
        }
        match failed {
            Some(why) => row(runtime, format!("failed: {why}")),
            None => {
                let ms = median_ms(times);
                row(
                    &format!("  the same with {runtime} run"),
                    format!("{ms:8.1} ms  (edgecloud / {runtime}: {:.2}x)", ours_ms / ms),
                );
            }
        }
    }

    // An image never seen on this node, with `size` bytes its start does not read.
    let size = if quick { 16 << 20 } else { 100 << 20 };
    docker_rows(dir, runs, ours_ms, size).await?;

    for (tag, seed) in [("bench-big:1", 2), ("bench-big:2", 3)] {
        store
            .import(&image_tarball(dir, tag, size, seed)?, None, None)
            .await?;
    }
    let big = store.find("bench-big:1").await?;
    let files_dir = node.join("containers/files");
    let fetched_before = dir_bytes(&files_dir);
    let first = first_start(&c, "bench-big:1").await?;
    let fetched = dir_bytes(&files_dir) - fetched_before;
    let next = first_start(&c, "bench-big:1").await?;
    row(
        &format!("first start of an unseen {} MiB image", size >> 20),
        format!(
            "{:8.3} s   (lazy root: {:.1}% of its bytes fetched, busybox being here from another image; the next start {:.1} ms)",
            first.as_secs_f64(),
            fetched as f64 * 100.0 / big.size.max(1) as f64,
            next.as_secs_f64() * 1e3
        ),
    );
    // Another node: the first start's record (kept in the store when it ended) is
    // fetched ahead while its lazy root mounts.
    for _ in 0..100 {
        if !store.first_reads(&big).await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = Containers::open(&dir.join("node-2"), store.clone())?;
    other.enable_lazy_roots(program)?;
    let t = first_start(&other, "bench-big:1").await?;
    let fetched = dir_bytes(&dir.join("node-2/containers/files"));
    row(
        "  the same on a node holding none of its files",
        format!(
            "{:8.3} s   ({:.1}% of its bytes fetched, ahead, from the first start's record)",
            t.as_secs_f64(),
            fetched as f64 * 100.0 / big.size.max(1) as f64,
        ),
    );
    let t = first_start(&unpacked, "bench-big:2").await?;
    row(
        "  the same unpacked whole",
        format!("{:8.3} s   (100% of its bytes read)", t.as_secs_f64()),
    );

    // Memory: this process (the node's part) per idle container.
    let idle = if quick { 5 } else { 20 };
    let before = rss_kib();
    let mut ids = Vec::new();
    for _ in 0..idle {
        ids.push(
            c.run(spec("bench-true:1", &["sleep", "3600"]), None)
                .await?
                .id,
        );
    }
    let after = rss_kib();
    row(
        &format!("node memory per idle container ({idle})"),
        format!(
            "{:8.1} KiB (no shim process; the container's own process aside)",
            after.saturating_sub(before) as f64 / idle as f64
        ),
    );
    for id in ids {
        c.remove(&id, true).await?;
    }
    // Lazy roots outlive their node (as they must, for its containers): end them.
    for img in store.list().await? {
        for node in [&c, &other, &unpacked] {
            node.forget_image(&img.id).await?;
        }
    }
    Ok(())
}

/// Docker side by side, when a Docker daemon answers here (it is not started for the
/// bench): `docker run --rm` of `/bin/true` from the same image, the first start of an
/// unseen image (`docker load` and run), and the bytes five related images take (each
/// one layer: the same busybox and 1 MiB of its own) in Docker's overlay2 store and in
/// the image store.
async fn docker_rows(dir: &Path, runs: usize, ours_ms: f64, size: usize) -> anyhow::Result<()> {
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    };
    match docker(&["info", "--format", "{{.Driver}}"]) {
        Ok(o) if o.status.success() => {}
        _ => {
            row(
                "  the same with docker run --rm",
                "skipped: no Docker daemon answers (apt-get install docker.io; dockerd)".into(),
            );
            return Ok(());
        }
    }
    let run_ok = |args: &[&str]| -> anyhow::Result<()> {
        let o = docker(args)?;
        anyhow::ensure!(
            o.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(())
    };
    let tar = image_tarball(dir, "bench-docker-true:1", 0, 1)?;
    run_ok(&["load", "-q", "-i", &tar.to_string_lossy()])?;
    let mut times = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        run_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "bench-docker-true:1",
            "/bin/true",
        ])?;
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    let ms = median_ms(times);
    row(
        "  the same with docker run --rm",
        format!("{ms:8.1} ms  (edgecloud / docker: {:.2}x)", ours_ms / ms),
    );
    let big = image_tarball(dir, "bench-docker-big:1", size, 7)?;
    let t = Instant::now();
    run_ok(&["load", "-q", "-i", &big.to_string_lossy()])?;
    run_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bench-docker-big:1",
        "/bin/true",
    ])?;
    row(
        &format!(
            "  docker: first start of an unseen {} MiB image",
            size >> 20
        ),
        format!(
            "{:8.3} s   (docker load, then run: every byte read)",
            t.elapsed().as_secs_f64()
        ),
    );
    // Five related images, in Docker and in the image store.
    let overlay = || {
        let o = std::process::Command::new("du")
            .args(["-sb", "/var/lib/docker/overlay2"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let archive = bench_archive(&dir.join("five"), 1, ChunkParams::default())?;
    let store = ImageStore::new(archive);
    let before = overlay().unwrap_or(0);
    let mut tags = Vec::new();
    for n in 0..5u64 {
        let tag = format!("bench-related:{n}");
        let tar = image_tarball(dir, &tag, 1 << 20, 100 + n)?;
        run_ok(&["load", "-q", "-i", &tar.to_string_lossy()])?;
        store.import(&tar, None, None).await?;
        tags.push(tag);
    }
    let docker_bytes = overlay().unwrap_or(0).saturating_sub(before);
    let ours = store.usage().await?.stored_bytes;
    row(
        "five related images: bytes stored",
        format!(
            "{:8.1} MB edgecloud, {:.1} MB docker ({:.2}x; busybox once, against once per image)",
            ours as f64 / 1e6,
            docker_bytes as f64 / 1e6,
            ours as f64 / docker_bytes.max(1) as f64
        ),
    );
    let mut rmi = vec!["rmi", "-f", "bench-docker-true:1", "bench-docker-big:1"];
    rmi.extend(tags.iter().map(String::as_str));
    run_ok(&rmi)?;
    Ok(())
}

/// The time to run `true` in a new container from `image` (then waited for and removed).
async fn first_start(c: &Containers, image: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let info = c
        .run(
            RunSpec {
                image: image.into(),
                command: vec!["true".into()],
                ..Default::default()
            },
            None,
        )
        .await?;
    let took = t.elapsed();
    wait_exited(c, &info.id).await?;
    c.remove(&info.id, false).await?;
    Ok(took)
}

/// Bytes of the files in `dir` (0 if there is none).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

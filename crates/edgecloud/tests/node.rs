//! The binary end to end: a real `edgecloud serve` process driven by the real CLI.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edgecloud");

struct Node {
    child: Option<Child>,
    data: PathBuf,
    url: String,
    disks: Vec<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `try_start` (which starts `serve` on ports from `free_port()`) until a node is
/// up. A port can be taken by another test's node before this one binds it; then this
/// node exits and is started again on other ports (and the CLI never talks to the other
/// node: readiness is an answer to this node's own admin token).
fn start_on_free_ports<T>(mut try_start: impl FnMut() -> Option<T>) -> T {
    for attempt in 1.. {
        if let Some(started) = try_start() {
            return started;
        }
        assert!(
            attempt < 5,
            "edgecloud serve exited at start {attempt} times"
        );
    }
    unreachable!()
}

/// Waits until a just-spawned `serve` makes `ready` true; None if it exited first.
fn wait_until_ready(mut child: Child, ready: impl Fn() -> bool) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if ready() {
            return Some(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("edgecloud serve did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Node {
    fn start(root: &Path, disks: usize) -> Node {
        let data = root.join("data");
        let disks: Vec<PathBuf> = (0..disks).map(|i| root.join(format!("disk{i}"))).collect();
        let mut n = Node {
            child: None,
            data,
            url: String::new(),
            disks,
        };
        n.restart();
        n
    }

    /// Starts `serve` on fresh ports (see `start_on_free_ports`).
    fn restart(&mut self) {
        start_on_free_ports(|| self.try_start().then_some(()));
    }

    fn try_start(&mut self) -> bool {
        let port = free_port();
        self.url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{port}"));
        cmd.arg("--s3-listen")
            .arg(format!("127.0.0.1:{}", free_port()));
        cmd.args(["--dav-listen", "127.0.0.1:0", "--ftp-listen", "127.0.0.1:0"]);
        cmd.args(["--rpc-listen", "127.0.0.1:0"]);
        cmd.args(["--chunk-avg", "64KiB"]);
        for d in &self.disks {
            cmd.arg("--disk").arg(d);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = wait_until_ready(child, || self.cli(&["bucket", "list"]).status.success());
        self.child.is_some()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data")
            .arg(&self.data)
            .arg("--admin")
            .arg(&self.url)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "edgecloud {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn random_file(path: &Path, seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn cli_round_trip_versions_and_as_of() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 1);
    assert!(
        node.ok(&["bucket", "create", "photos"])
            .contains("policy none")
    );
    let f = dir.path().join("holiday.bin");
    let v1 = random_file(&f, 1, 5_000_000);
    let out = node.ok(&["put", f.to_str().unwrap(), "photos/2026/"]);
    assert!(
        out.contains("photos/2026/holiday.bin") && out.contains("5000000 bytes"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let between = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let v2 = random_file(&f, 2, 3_000);
    node.ok(&["put", f.to_str().unwrap(), "photos/2026/holiday.bin"]);
    let got = dir.path().join("got");
    node.ok(&["get", "photos/2026/holiday.bin", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), v2);
    node.ok(&[
        "get",
        "photos/2026/holiday.bin",
        got.to_str().unwrap(),
        "--as-of",
        &between,
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), v1);
    node.ok(&[
        "get",
        "photos/2026/holiday.bin",
        got.to_str().unwrap(),
        "--as-of",
        &between,
        "--range",
        "100-199",
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), &v1[100..200]);
    assert!(node.ok(&["ls", "photos"]).contains("2026/"));
    assert!(
        node.ok(&["ls", "photos", "--recursive"])
            .contains("2026/holiday.bin")
    );
    assert!(
        node.ok(&["rm", "photos/2026/holiday.bin"])
            .contains("delete marker")
    );
    let versions = node.ok(&["versions", "photos"]);
    assert_eq!(versions.lines().count(), 3, "{versions}");
    let out = node.cli(&["get", "photos/2026/holiday.bin", got.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoSuchKey"));
    assert!(
        node.ok(&["ls", "photos", "-r", "--as-of", &between])
            .contains("5000000")
    );
    let out = node.cli(&["bucket", "delete", "photos"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn client_commands_say_what_to_do_without_a_node_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data"])
        .arg(dir.path())
        .args(["ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("edgecloud serve"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "--admin",
            &format!("http://127.0.0.1:{}", free_port()),
            "--token",
            "x",
            "ls",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no edgecloud node answers") && err.contains("edgecloud serve"),
        "{err}"
    );
}

#[test]
fn a_wrong_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 1);
    let out = Command::new(BIN)
        .args(["--admin", &node.url, "--token", "wrong", "bucket", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Say what answered, so a wrong message is told apart from another answer.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong admin token"), "{err}");
}

/// kill -9 while many uploads run: every acknowledged object survives intact, and
/// nothing half-written is ever visible.
#[test]
fn kill_9_during_writes_loses_no_acknowledged_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), 3);
    node.ok(&["bucket", "create", "crash"]);
    let files: Vec<(String, Vec<u8>)> = (0..240)
        .map(|i| {
            let name = format!("f{i:03}");
            let len = if i % 3 == 0 {
                2_000
            } else {
                100_000 + i * 1_000
            };
            (
                name.clone(),
                random_file(&dir.path().join(&name), i as u64 + 7, len),
            )
        })
        .collect();
    let acked = std::sync::Mutex::new(Vec::new());
    let pid = node.child.as_ref().unwrap().id().to_string();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (node, files, acked, dir) = (&node, &files, &acked, dir.path());
            s.spawn(move || {
                for (name, _) in files.iter().skip(t).step_by(4) {
                    let path = dir.join(name);
                    let out = node.cli(&["put", path.to_str().unwrap(), &format!("crash/{name}")]);
                    if out.status.success() {
                        acked.lock().unwrap().push(name.clone());
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
    });
    node.kill9(); // reap
    let acked = acked.into_inner().unwrap();
    assert!(
        !acked.is_empty(),
        "no write finished before the kill; the test proves nothing"
    );
    eprintln!(
        "{} of {} uploads acknowledged before kill -9",
        acked.len(),
        files.len()
    );
    node.restart();
    let listed = node.ok(&["ls", "crash", "-r"]);
    let got = dir.path().join("got");
    let (bundle, original) = (dir.path().join("bundle.json"), dir.path().join("original"));
    let public_key = node.data.join("ledger.pub");
    let mut visible_count = 0;
    for (name, data) in &files {
        let visible = listed.lines().any(|l| l.ends_with(&format!(" {name}")));
        if acked.contains(name) {
            assert!(visible, "acknowledged {name} is missing after kill -9");
        }
        if visible {
            visible_count += 1;
            node.ok(&["get", &format!("crash/{name}"), got.to_str().unwrap()]);
            assert_eq!(
                &std::fs::read(&got).unwrap(),
                data,
                "{name} reads back different bytes"
            );
            // every stored version has its ledger leaf, provable against the rebuilt tree
            std::fs::write(
                &bundle,
                node.ok(&["ledger", "prove", &format!("crash/{name}")]),
            )
            .unwrap();
            std::fs::write(&original, data).unwrap();
            node.ok(&[
                "ledger",
                "check",
                bundle.to_str().unwrap(),
                "--key",
                public_key.to_str().unwrap(),
                "--file",
                original.to_str().unwrap(),
            ]);
        }
    }
    // and no leaf without a version: the bucket's creation plus one per stored object
    let status = node.ok(&["ledger", "status"]);
    assert!(
        status.contains(&format!("entries:    {}", 1 + visible_count)),
        "{status}"
    );
    let out = node.ok(&["scrub"]);
    assert!(out.contains("all data at full redundancy"), "{out}");
}

/// The issue's disk-loss scenario through the binary: 6 disks, ec:4+2, two disk
/// folders removed while the node is down; reads stay correct and `edgecloud scrub`
/// brings back full redundancy.
#[test]
fn six_disks_two_wiped_scrub_restores_full_redundancy() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), 6);
    assert!(node.ok(&["bucket", "create", "vault"]).contains("ec:4+2"));
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("o{i}"),
                random_file(
                    &dir.path().join(format!("o{i}")),
                    50 + i,
                    400_000 + i as usize * 77_777,
                ),
            )
        })
        .collect();
    for (name, _) in &files {
        node.ok(&[
            "put",
            dir.path().join(name).to_str().unwrap(),
            &format!("vault/{name}"),
        ]);
    }
    node.kill9();
    std::fs::remove_dir_all(&node.disks[0]).unwrap();
    std::fs::remove_dir_all(&node.disks[3]).unwrap();
    node.restart();
    let got = dir.path().join("got");
    for (name, data) in &files {
        node.ok(&["get", &format!("vault/{name}"), got.to_str().unwrap()]);
        assert_eq!(&std::fs::read(&got).unwrap(), data);
    }
    let out = node.ok(&["scrub"]);
    assert!(
        out.contains("missing") && !out.contains("missing 0,"),
        "{out}"
    );
    let out = node.ok(&["scrub"]);
    assert!(out.contains("missing 0, corrupt 0, repaired 0"), "{out}");
    let status = node.ok(&["status"]);
    assert_eq!(status.matches(" shards ").count(), 6, "{status}");
}

#[test]
fn config_file_and_env_set_options() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edgecloud.toml");
    let cli = |port: u16, args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .env("EDGECLOUD_ADMIN", format!("http://127.0.0.1:{port}"))
            .args(args)
            .output()
            .unwrap()
    };
    let (mut child, port) = start_on_free_ports(|| {
        let port = free_port();
        std::fs::write(&cfg, format!("data = \"{}\"\nadmin-listen = \"127.0.0.1:{port}\"\ns3-listen = \"127.0.0.1:{}\"\ndav-listen = \"127.0.0.1:0\"\nftp-listen = \"127.0.0.1:0\"\nrpc-listen = \"127.0.0.1:0\"\npolicy = \"replicate:2\"\n", dir.path().join("d").display(), free_port())).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env(
                "EDGECLOUD_DISKS",
                format!("{0}/a,{0}/b", dir.path().display()),
            )
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_ready(child, || cli(port, &["bucket", "list"]).status.success())
            .map(|child| (child, port))
    });
    let out = cli(port, &["bucket", "create", "cfgtest"]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("replicate:2"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no-such-option = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("status")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
}

#[test]
fn a_truncated_catalog_is_refused_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), 1);
    node.ok(&["bucket", "create", "trunc"]);
    node.kill9();
    let catalog = node.data.join("catalog.redb");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&catalog)
        .unwrap()
        .set_len(5000)
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--rpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data",
        ])
        .arg(&node.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("catalog.redb") && err.contains("corrupt"),
        "{err}"
    );
}

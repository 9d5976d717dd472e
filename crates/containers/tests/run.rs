//! Containers started for real (root, overlayfs): a busybox image built here, imported
//! into a real archive, run with libcontainer; output, exit codes, environment, limits,
//! stop, restart policies and removal.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

use std::time::Duration;

use containers::{Containers, RunSpec, State};
use images::ImageStore;

/// A `docker save` tarball of one layer holding busybox and its `sh` link.
fn busybox_image(dir: &std::path::Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let hex = |d: &[u8]| -> String {
        Sha256::digest(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut layer = tar::Builder::new(Vec::new());
    let mut dirh = tar::Header::new_gnu();
    dirh.set_entry_type(tar::EntryType::Directory);
    dirh.set_mode(0o755);
    dirh.set_size(0);
    for d in ["bin", "etc", "tmp"] {
        layer
            .append_data(&mut dirh.clone(), d, std::io::empty())
            .unwrap();
    }
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    layer
        .append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    for tool in [
        "sh", "echo", "sleep", "cat", "env", "id", "hostname", "ip", "nc", "ls",
    ] {
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        layer
            .append_link(&mut l, format!("bin/{tool}"), "busybox")
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    let mut p = tar::Header::new_gnu();
    p.set_mode(0o644);
    p.set_size(passwd.len() as u64);
    layer
        .append_data(&mut p, "etc/passwd", &passwd[..])
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["FROM_IMAGE=yes"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))]},
    }))
    .unwrap();
    let cfg_name = format!("{}.json", hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name, "RepoTags": ["busybox:test"], "Layers": ["l/layer.tar"]}]))
    .unwrap();
    let mut outer = tar::Builder::new(Vec::new());
    for (name, body) in [
        (cfg_name.as_str(), &config),
        ("l/layer.tar", &layer),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        outer.append_data(&mut h, name, &body[..]).unwrap();
    }
    let path = dir.join("busybox.tar");
    std::fs::write(&path, outer.into_inner().unwrap()).unwrap();
    path
}

/// An archive whose image store holds `busybox:test`.
async fn busybox_store() -> (testkit::TestArchive, ImageStore) {
    let t = testkit::archive_with_bucket(9, "data").await;
    let store = ImageStore::new(t.archive.clone());
    store
        .import(&busybox_image(t.dir.path()), None, None)
        .await
        .unwrap();
    (t, store)
}

async fn wait_exit(c: &Containers, id: &str) -> containers::ContainerInfo {
    for _ in 0..500 {
        let info = c.get(id).unwrap();
        if info.state == State::Exited {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("container {id} did not exit");
}

fn log(c: &Containers, id: &str) -> String {
    std::fs::read_to_string(c.log_path(id).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_from_the_store_and_end_as_asked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipped: containers need root and /bin/busybox (busybox-static)");
        return;
    }
    let (t, store) = busybox_store().await;
    let node = t.dir.path().join("node");
    let c = Containers::open(&node, store.clone()).unwrap();
    let run = |command: &[&str]| RunSpec {
        image: "busybox:test".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };

    // Output, the environment (image's, then -e), the host name, the exit code.
    let mut spec = run(&[
        "sh",
        "-c",
        "echo hello; echo \"$FROM_IMAGE $MINE\"; hostname; exit 3",
    ]);
    spec.env = vec!["MINE=set".into()];
    spec.name = Some("first".into());
    let first = c.run(spec, None).await.unwrap();
    let done = wait_exit(&c, &first.id).await;
    assert_eq!(done.exit_code, Some(3));
    // The deployment is in the audit log with the image's digest.
    let size = t.archive.catalog().ledger_size().unwrap();
    let entry = t.archive.catalog().ledger_entry(size - 1).unwrap().unwrap();
    match ledger::record::Record::from_bytes(&entry).unwrap().change {
        ledger::record::Change::ContainerStarted {
            container_id,
            name,
            image,
            image_id,
            ..
        } => {
            assert_eq!(
                (container_id, name, image),
                (
                    first.id.clone(),
                    Some("first".into()),
                    "busybox:test".into()
                )
            );
            assert_eq!(image_id, first.image_id);
        }
        other => panic!("the last record is {other:?}"),
    }
    assert_eq!(log(&c, "first"), "hello\nyes set\nfirst\n");

    // Its own namespaces: pid 1 inside; only loopback in its network namespace.
    let ns = c
        .run(run(&["sh", "-c", "echo $$; ls /sys/class/net"]), None)
        .await
        .unwrap();
    wait_exit(&c, &ns.id).await;
    assert_eq!(log(&c, &ns.id), "1\nlo\n");

    // Writes go to the container's upper directory, never to the image.
    let w = c
        .run(
            run(&["sh", "-c", "echo x > /etc/passwd && cat /etc/passwd"]),
            None,
        )
        .await
        .unwrap();
    wait_exit(&c, &w.id).await;
    assert_eq!(log(&c, &w.id), "x\n");
    let r = c.run(run(&["cat", "/etc/passwd"]), None).await.unwrap();
    wait_exit(&c, &r.id).await;
    assert!(
        log(&c, &r.id).starts_with("root:x:0:0"),
        "{}",
        log(&c, &r.id)
    );

    // A published port: the node proxies it to the container's own address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = c
        .run(
            RunSpec {
                publish: vec![format!("127.0.0.1:{port}:80")],
                ..run(&["sh", "-c", "ls /sys/class/net; echo served | nc -l -p 80"])
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (served.spec.network.as_str(), served.address.is_some()),
        ("bridge", true)
    );
    let mut answer = String::new();
    for _ in 0..100 {
        use std::io::Read;
        answer.clear();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.read_to_string(&mut answer);
            if !answer.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer, "served\n");
    wait_exit(&c, &served.id).await;
    assert_eq!(log(&c, &served.id), "eth0\nlo\n");
    let taken = c
        .run(
            RunSpec {
                publish: vec![format!("127.0.0.1:{port}:80")],
                ..run(&["true"])
            },
            None,
        )
        .await;
    assert!(
        taken.unwrap_err().to_string().contains("cannot listen"),
        "the port is still published"
    );
    c.remove(&served.id, false).await.unwrap();
    let bad = c
        .run(
            RunSpec {
                publish: vec!["80".into()],
                ..run(&["true"])
            },
            None,
        )
        .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("HOST_PORT:CONTAINER_PORT")
    );

    // A command runs inside a running container: its root, its pid namespace.
    let host = c
        .run(
            RunSpec {
                name: Some("host".into()),
                ..run(&["sleep", "30"])
            },
            None,
        )
        .await
        .unwrap();
    let done = c
        .exec(
            "host",
            vec![
                "sh".into(),
                "-c".into(),
                "echo $X; cat /etc/passwd | head -1; exit 4".into(),
            ],
            vec!["X=inside".into()],
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code, 4);
    assert_eq!(done.output, "inside\nroot:x:0:0:root:/root:/bin/sh\n");
    let init = c
        .exec("host", vec!["cat".into(), "/proc/1/cmdline".into()], vec![])
        .await
        .unwrap();
    assert_eq!(
        init.output, "sleep\u{0}30\u{0}",
        "pid 1 is the container's own process"
    );
    c.remove(&host.id, true).await.unwrap();
    assert!(
        c.exec(&host.id[..12], vec!["true".into()], vec![])
            .await
            .is_err()
    );

    // Limits land in its cgroup.
    let mut limited = run(&["sleep", "30"]);
    limited.memory = Some(64 << 20);
    limited.name = Some("limited".into());
    let l = c.run(limited, None).await.unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", l.pid.unwrap()))
        .unwrap_or_else(|e| panic!("{e}: {:?} {}", c.get(&l.id), log(&c, &l.id)));
    assert!(cgroup.contains("/edgecloud/"), "{cgroup}");
    // Stop: pid 1 ignores SIGTERM without a handler, so the grace ends in SIGKILL.
    let stopped = c.stop("limited", Duration::from_millis(200)).await.unwrap();
    assert_eq!(stopped.exit_code, Some(137));

    // A restart policy starts it again; stop ends that.
    let mut again = run(&["sh", "-c", "echo run; exit 1"]);
    again.restart = "on-failure:2".into();
    let a = c.run(again, None).await.unwrap();
    for _ in 0..300 {
        if c.get(&a.id).unwrap().restarts == 2 && c.get(&a.id).unwrap().state == State::Exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = c.get(&a.id).unwrap();
    assert_eq!((a.restarts, a.state), (2, State::Exited));
    assert_eq!(log(&c, &a.id), "run\nrun\nrun\n");

    // Names are unique; a running container is removed only with force.
    let dup = c
        .run(
            RunSpec {
                name: Some("first".into()),
                ..run(&["true"])
            },
            None,
        )
        .await;
    assert!(dup.unwrap_err().to_string().contains("exists"));
    let long = c
        .run(
            RunSpec {
                name: Some("long".into()),
                ..run(&["sleep", "30"])
            },
            None,
        )
        .await
        .unwrap();
    assert!(
        c.remove("long", false)
            .await
            .unwrap_err()
            .to_string()
            .contains("running")
    );
    c.remove("long", true).await.unwrap();
    assert!(!node.join("containers/run").join(&long.id).exists());
    assert!(c.get("long").is_err());

    // The node restarts: records come back.
    drop(c);
    let c = Containers::open(&node, store).unwrap();
    assert_eq!(c.get("first").unwrap().exit_code, Some(3));
    for info in c.list(true) {
        c.remove(&info.id, true).await.unwrap();
    }
    assert!(c.list(true).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_cache_keeps_checked_copies_and_answers_lazy_roots() {
    use containers::file_cache::FileCache;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (t, store) = busybox_store().await;
    let image = store.find("busybox:test").await.unwrap();
    let tree = store.tree(&image).await.unwrap();
    let file = |path: &str| {
        let e = tree.get(path).unwrap();
        (e.digest.clone().unwrap(), e.size)
    };
    let (busybox, busybox_size) = file("bin/busybox");
    let (passwd, passwd_size) = file("etc/passwd");
    let cache = FileCache::new(t.dir.path().join("files"), store.clone()).unwrap();

    // Fetched once, checked, then served from here.
    assert!(cache.ensure(&busybox, busybox_size).await.unwrap());
    assert!(!cache.ensure(&busybox, busybox_size).await.unwrap());
    assert_eq!(
        std::fs::read(cache.path(&busybox)).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    // A copy that does not match what was asked for is refused and leaves nothing.
    let e = cache.ensure(&passwd, passwd_size + 1).await.unwrap_err();
    assert!(e.to_string().contains("reads back"), "{e}");
    assert_eq!(
        std::fs::read_dir(t.dir.path().join("files"))
            .unwrap()
            .count(),
        1
    );
    // Names that are not digests never become paths.
    for bad in ["../../etc/shadow", "", &busybox.to_uppercase()] {
        assert!(cache.ensure(bad, 1).await.is_err(), "{bad:?}");
    }

    // The socket lazy roots ask on: one line in, one out; garbage gets an error.
    let socket = t.dir.path().join("fetch.sock");
    let server = cache.listen(&socket).unwrap();
    let ask = |line: Vec<u8>| {
        let socket = socket.clone();
        async move {
            let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
            // An oversized line is answered (and the socket closed) before it is all
            // sent: the write may then fail, and so may the read.
            let _ = s.write_all(&line).await;
            let _ = s.shutdown().await;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            answer
        }
    };
    assert_eq!(
        ask(format!("{passwd} {passwd_size}\n").into()).await,
        "ok\n"
    );
    assert_eq!(
        std::fs::read(cache.path(&passwd)).unwrap().len() as u64,
        passwd_size
    );
    for hostile in [
        b"no space\n".to_vec(),
        format!("{passwd} many\n").into_bytes(),
        b"../../x 1\n".to_vec(),
    ] {
        let answer = ask(hostile).await;
        assert!(answer.starts_with("error: "), "{answer}");
    }
    let answer = ask(vec![b'a'; 100_000]).await;
    assert!(
        answer.is_empty() || answer.starts_with("error: "),
        "{answer}"
    );
    // A request still in flight when the node stops (the task is aborted) ends with
    // no answer, not an error: the lazy root asks again and the next node answers.
    let mut in_flight = tokio::net::UnixStream::connect(&socket).await.unwrap();
    in_flight.write_all(passwd.as_bytes()).await.unwrap();
    // Accepted in order: once a later request is answered, this one was accepted.
    assert_eq!(
        ask(format!("{passwd} {passwd_size}\n").into()).await,
        "ok\n"
    );
    server.abort();
    let _ = server.await;
    let _ = in_flight
        .write_all(format!(" {passwd_size}\n").as_bytes())
        .await;
    let mut answer = String::new();
    let _ = in_flight.read_to_string(&mut answer).await;
    assert_eq!(answer, "", "no answer from a stopped node");

    // What a first start read is kept for later starts, only the image's own files.
    std::fs::remove_file(cache.path(&busybox)).unwrap();
    assert_eq!(
        cache
            .prefetch(vec![
                (busybox.clone(), busybox_size),
                (passwd.clone(), passwd_size)
            ])
            .await,
        1
    );
    store
        .record_first_reads(&image, vec![passwd.clone(), "f".repeat(64), passwd.clone()])
        .await
        .unwrap();
    assert_eq!(store.first_reads(&image).await.unwrap(), vec![passwd]);
}

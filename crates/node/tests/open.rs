//! A node started as a library: `Node::open` on free ports, driven over its admin API
//! and WebDAV gateway with a real HTTP client, stopped, and opened again on the same
//! data directory.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

use std::path::Path;

use node::{Node, NodeSettings};

/// Settings with every listener on a free port of 127.0.0.1, the rest default.
fn free_ports() -> NodeSettings {
    let any = || Some("127.0.0.1:0".to_string());
    NodeSettings {
        s3_listen: any(),
        dav_listen: any(),
        ftp_listen: any(),
        admin_listen: any(),
        rpc_listen: any(),
        ..NodeSettings::default()
    }
}

fn on_free_ports(data: &Path) -> node::NodeConfig {
    free_ports().resolve(data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_opens_serves_stops_and_reopens_with_its_data() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();

    let node = Node::open(on_free_ports(&data)).await.unwrap();
    let s = node.summary().clone();
    assert_eq!(s.nodes, 1);
    assert!(
        s.admin_url.starts_with("http://127.0.0.1:"),
        "{}",
        s.admin_url
    );
    assert_eq!(
        std::fs::read_to_string(data.join("admin.url"))
            .unwrap()
            .trim(),
        s.admin_url
    );
    for secret in [
        "master.key",
        "node.key",
        "cluster.secret",
        "s3-credentials",
        "ledger.key",
    ] {
        assert!(data.join(secret).exists(), "{secret} was not created");
    }
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim();
    let created = http
        .put(format!("{}/v1/buckets/photos", s.admin_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let refused = http
        .get(format!("{}/v1/buckets", s.admin_url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let creds = std::fs::read_to_string(data.join("s3-credentials")).unwrap();
    let (user, pass) = creds.trim().split_once(':').unwrap();
    let url = format!("http://{}/photos/holiday.txt", s.dav);
    let put = http
        .put(&url)
        .basic_auth(user, Some(pass))
        .body("sun and sea")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    node.stop().await.unwrap();

    // The same data directory again: same keys, same object, the ledger kept.
    let master = std::fs::read(data.join("master.key")).unwrap();
    let node = Node::open(on_free_ports(&data)).await.unwrap();
    let s2 = node.summary().clone();
    assert_eq!(std::fs::read(data.join("master.key")).unwrap(), master);
    assert_eq!(s2.node_id, s.node_id);
    // The bucket and the object are in the ledger (published within a second or so).
    let mut size = 0;
    for _ in 0..100 {
        let checkpoint = http
            .get(format!("{}/v1/ledger/checkpoint", s2.admin_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        size = checkpoint.lines().nth(1).unwrap().parse::<u64>().unwrap();
        if size >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(size >= 2, "the ledger holds {size} entries");
    let got = http
        .get(format!("http://{}/photos/holiday.txt", s2.dav))
        .basic_auth(user, Some(pass))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "sun and sea");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_without_its_master_key_refuses_to_start() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Node::open(on_free_ports(&data))
        .await
        .unwrap()
        .stop()
        .await
        .unwrap();
    std::fs::remove_file(data.join("master.key")).unwrap();
    let e = Node::open(on_free_ports(&data)).await.err().unwrap();
    assert!(
        e.to_string().contains("master key file") && e.to_string().contains("backup"),
        "{e}"
    );
    assert!(
        !data.join("master.key").exists(),
        "a new master key was made"
    );
}

/// `--secrets-dir` elsewhere than the data directory: a node that joins keeps no secret
/// in its data directory; emptied (a reboot, the folder in memory), it comes back as
/// the same node with the cluster's keys fetched again. Without --join it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeping_its_secrets_elsewhere_leaves_none_in_its_data_and_rejoins_as_itself() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (founder_data, data, keys) = (
        dir.path().join("founder"),
        dir.path().join("data"),
        dir.path().join("in-memory"),
    );
    let with_secrets_elsewhere = |join: Option<String>| {
        NodeSettings {
            secrets_dir: Some(keys.clone()),
            secret_file: Some(founder_data.join("cluster.secret")),
            site: Some("s2".into()),
            join,
            ..free_ports()
        }
        .resolve(&data)
        .unwrap()
    };
    let alone = Node::open(with_secrets_elsewhere(None))
        .await
        .err()
        .unwrap();
    assert!(alone.to_string().contains("--join"), "{alone}");

    let founder = Node::open(on_free_ports(&founder_data)).await.unwrap();
    let join = Some(founder.summary().rpc_addr.clone());
    let node = Node::open(with_secrets_elsewhere(join.clone()))
        .await
        .unwrap();
    let id = node.summary().node_id.clone();
    assert_ne!(id, founder.summary().node_id);
    let master = std::fs::read_to_string(founder_data.join("master.key")).unwrap();
    assert_eq!(
        std::fs::read_to_string(keys.join("master.key"))
            .unwrap()
            .trim(),
        master.trim()
    );
    let secret_files = [
        "node.key",
        "cluster.secret",
        "master.key",
        "s3-credentials",
        "ledger.key",
        "cosigner.key",
        "admin.token",
    ];
    for name in secret_files {
        assert!(!data.join(name).exists(), "{name} is in the data directory");
    }
    assert!(data.join("node.salt").exists() && data.join("catalog.redb").exists());
    node.stop().await.unwrap();

    // The secrets were in memory: gone. The same data is the same node again.
    std::fs::remove_dir_all(&keys).unwrap();
    let node = Node::open(with_secrets_elsewhere(join)).await.unwrap();
    assert_eq!(
        node.summary().node_id,
        id,
        "the same node, its key derived again"
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("master.key"))
            .unwrap()
            .trim(),
        master.trim()
    );
    node.stop().await.unwrap();
    founder.stop().await.unwrap();
}

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

/// A machine invitation (for machines booted over the network, which keep their
/// secrets in memory): a machine it does not list waits, with a code, until an operator
/// approves the code; it then joins, and after a reboot (its secrets gone) it is let in
/// again without anyone. A revoked invitation lets no one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_invitation_lets_an_approved_machine_in_at_every_boot() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (founder_data, data, keys) = (
        dir.path().join("founder"),
        dir.path().join("data"),
        dir.path().join("in-memory"),
    );
    let founder = Node::open(on_free_ports(&founder_data)).await.unwrap();
    let admin = founder.summary().admin_url.clone();
    let token = std::fs::read_to_string(founder_data.join("admin.token")).unwrap();
    let token = token.trim().to_string();
    let http = reqwest::Client::new();
    let issued: serde_json::Value = http
        .post(format!("{admin}/v1/cluster/invites?machines=true&ttl=600"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invite = issued["token"].as_str().unwrap().to_string();
    assert!(invite.starts_with("ecmac2_"), "{invite}");
    let machine = || {
        NodeSettings {
            secrets_dir: Some(keys.clone()),
            invite: Some(invite.clone()),
            site: Some("s2".into()),
            ..free_ports()
        }
        .resolve(&data)
        .unwrap()
    };

    // The operator's side: waits for the machine to show up, checks it, approves it.
    let operator = {
        let (http, admin, token) = (http.clone(), admin.clone(), token.clone());
        tokio::spawn(async move {
            let waiting = loop {
                let list: Vec<serde_json::Value> = http
                    .get(format!("{admin}/v1/cluster/join-requests"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(w) = list.into_iter().next() {
                    break w;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            let approve = |code: &str| {
                http.post(format!("{admin}/v1/cluster/join-requests/{code}"))
                    .bearer_auth(&token)
                    .send()
            };
            assert!(
                approve("ZZZZ-ZZZZ")
                    .await
                    .unwrap()
                    .status()
                    .is_client_error()
            );
            let unauthenticated = reqwest::Client::new()
                .post(format!("{admin}/v1/cluster/join-requests/ZZZZ-ZZZZ"))
                .send()
                .await
                .unwrap();
            assert_eq!(unauthenticated.status(), 401);
            let code = waiting["code"].as_str().unwrap().to_string();
            let approved = approve(&code).await.unwrap();
            assert!(
                approved.status().is_success(),
                "{}",
                approved.text().await.unwrap()
            );
            waiting
        })
    };
    let node = Node::open(machine()).await.unwrap();
    let waiting = operator.await.unwrap();
    assert_eq!(
        waiting["macs"],
        serde_json::json!(cluster::invite::machine_macs()),
        "it asked with this machine's MACs"
    );
    let id = node.summary().node_id.clone();
    assert_ne!(id, founder.summary().node_id);
    assert!(!data.join("cluster.secret").exists() && keys.join("cluster.secret").exists());
    node.stop().await.unwrap();

    // A reboot: the secrets in memory are gone; the approved machine is let in at once.
    std::fs::remove_dir_all(&keys).unwrap();
    let node = tokio::time::timeout(std::time::Duration::from_secs(60), Node::open(machine()))
        .await
        .expect("let in without a second approval")
        .unwrap();
    assert_eq!(node.summary().node_id, id, "the same node");
    node.stop().await.unwrap();

    // Revoked: no machine gets the secret any more.
    let id = issued["id"].as_str().unwrap();
    let revoked = http
        .delete(format!("{admin}/v1/cluster/invites/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    std::fs::remove_dir_all(&keys).unwrap();
    let refused = Node::open(machine()).await.err().unwrap();
    assert!(refused.to_string().contains("revoked"), "{refused}");
    founder.stop().await.unwrap();
}

/// A node keeping its secrets in memory fetches them at every start from the member
/// `--join` names, or, when that one is down, from another member it knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeping_its_secrets_elsewhere_starts_while_its_join_member_is_down() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let founder = Node::open(on_free_ports(&path("founder"))).await.unwrap();
    let join = Some(founder.summary().rpc_addr.clone());
    let secret_file = Some(path("founder").join("cluster.secret"));
    let member = Node::open(
        NodeSettings {
            secret_file: secret_file.clone(),
            join: join.clone(),
            ..free_ports()
        }
        .resolve(&path("member"))
        .unwrap(),
    )
    .await
    .unwrap();
    let in_memory = || {
        NodeSettings {
            secrets_dir: Some(path("in-memory")),
            secret_file: secret_file.clone(),
            join: join.clone(),
            ..free_ports()
        }
        .resolve(&path("data"))
        .unwrap()
    };
    let node = Node::open(in_memory()).await.unwrap();
    let id = node.summary().node_id.clone();
    // The other member learns of it through the replicated layout.
    let layout = path("member").join("cluster/layout.json");
    for _ in 0..300 {
        if std::fs::read_to_string(&layout).is_ok_and(|l| l.contains(&id)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    node.stop().await.unwrap();
    founder.stop().await.unwrap();

    // Its secrets gone with the power, its --join member down: another member answers.
    std::fs::remove_dir_all(path("in-memory")).unwrap();
    let node = tokio::time::timeout(std::time::Duration::from_secs(120), Node::open(in_memory()))
        .await
        .expect("started without its --join member")
        .unwrap();
    assert_eq!(node.summary().node_id, id);
    assert_eq!(
        std::fs::read_to_string(path("in-memory").join("master.key")).unwrap(),
        std::fs::read_to_string(path("founder").join("master.key")).unwrap()
    );
    node.stop().await.unwrap();
    member.stop().await.unwrap();
}

/// A machine invitation names other members besides the one that issued it: a machine
/// whose token's first member is down is let in by the next, and joins through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_invitation_is_redeemed_at_another_member_when_the_issuing_one_is_down() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let founder = Node::open(on_free_ports(&path("founder"))).await.unwrap();
    let member = |name: &str| {
        NodeSettings {
            secret_file: Some(path("founder").join("cluster.secret")),
            join: Some(founder.summary().rpc_addr.clone()),
            ..free_ports()
        }
        .resolve(&path(name))
        .unwrap()
    };
    let first = Node::open(member("first")).await.unwrap();
    let second = Node::open(member("second")).await.unwrap();
    // The founder knows both (they joined through it), so its token names them.
    let admin = founder.summary().admin_url.clone();
    let token = std::fs::read_to_string(path("founder").join("admin.token")).unwrap();
    let macs = cluster::invite::machine_macs().join(",");
    let issued: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{admin}/v1/cluster/invites?machines=true&ttl=600&mac={macs}"
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invite = issued["token"].as_str().unwrap().to_string();
    let parsed = cluster::invite::Invitation::decode(&invite).unwrap();
    let others: Vec<_> = parsed.also.iter().map(|m| m.addr.clone()).collect();
    assert_eq!(parsed.addr, founder.summary().rpc_addr);
    assert!(
        others.contains(&first.summary().rpc_addr) && others.contains(&second.summary().rpc_addr),
        "{others:?}"
    );
    // Three voters (the catalog's majority survives the founder's stop).
    let mut voters = 0;
    for _ in 0..300 {
        let view: serde_json::Value = reqwest::Client::new()
            .get(format!("{admin}/v1/cluster"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        voters = view["status"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "voter" || n["role"] == "leader")
            .count();
        if voters == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(voters, 3);
    founder.stop().await.unwrap();

    let machine = NodeSettings {
        secrets_dir: Some(path("in-memory")),
        invite: Some(invite),
        ..free_ports()
    }
    .resolve(&path("machine"))
    .unwrap();
    let node = tokio::time::timeout(std::time::Duration::from_secs(120), Node::open(machine))
        .await
        .expect("let in while the issuing member is down")
        .unwrap();
    // It is a member: the others' replicated layout lists it.
    let id = node.summary().node_id.clone();
    let layout = path("first").join("cluster/layout.json");
    let mut listed = false;
    for _ in 0..300 {
        listed = std::fs::read_to_string(&layout).is_ok_and(|l| l.contains(&id));
        if listed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(listed, "the machine is in the layout");
    node.stop().await.unwrap();
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}

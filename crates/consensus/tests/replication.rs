//! The catalog replicated by Raft between real replicas talking over mutual TLS: writes
//! through any replica, linearizable reads on followers, identical catalogs everywhere,
//! a new leader after the old one dies, snapshots for a late joiner, and refusals of
//! non-members.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use catalog::{Bucket, Catalog, CatalogOptions, NewVersion, PutCondition, VersionSel, Versioning};
use cluster::{ClusterSecret, NodeKey, NodeTls};
use consensus::network::{Authorize, routes};
use consensus::{Member, Replica, ReplicaOptions};

struct Node {
    replica: Arc<Replica>,
    catalog: Catalog,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn secret() -> ClusterSecret {
    ClusterSecret::new("replication-test-secret-0123456789").unwrap()
}

/// Members are the nodes made from seeds 1..=9; anything else is refused.
fn authorize() -> Authorize {
    let members: BTreeSet<String> = (1..=9u8)
        .map(|i| NodeKey::from_seed([i; 32]).id().0)
        .collect();
    Arc::new(move |id: &cluster::NodeId| {
        if members.contains(&id.0) {
            Ok(())
        } else {
            Err(cluster::ClusterError::Refused(format!(
                "node {id} is not a member of this cluster"
            )))
        }
    })
}

async fn node(seed: u8, site: &str) -> Node {
    node_with_limit(seed, site, consensus::MAX_MESSAGE_BYTES).await
}

/// A node whose Raft messages may be at most `max_message_bytes`.
async fn node_with_limit(seed: u8, site: &str, max_message_bytes: usize) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::from_seed([seed; 32]);
    let tls = NodeTls::new(&secret(), &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let catalog =
        Catalog::open(&dir.path().join("catalog.redb"), CatalogOptions::default()).unwrap();
    let replica = Replica::start(ReplicaOptions {
        data_dir: dir.path().into(),
        me: Member {
            node: key.id().0,
            addr,
            site: site.into(),
        },
        catalog: catalog.clone(),
        client: cluster::Client::new(&tls).unwrap(),
        max_message_bytes,
    })
    .await
    .unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    cluster::rpc::serve(
        listener,
        routes(replica.clone(), authorize()),
        axum::Router::new(),
        &tls,
        stop_rx,
    );
    Node {
        replica,
        catalog,
        stop,
        _dir: dir,
    }
}

async fn dump(n: &Node) -> Vec<u8> {
    n.catalog.dump_with(|_| ()).await.unwrap().0
}

fn bucket(name: &str) -> Bucket {
    Bucket {
        name: name.into(),
        created_ns: 1,
        versioning: Versioning::Enabled,
        policy: codec::Redundancy::None,
        wrapped_key: vec![1, 2, 3],
        wrapped_key_id: [0; 32],
        compression: 0,
        chunk_min: 1,
        chunk_avg: 2,
        chunk_max: 4,
        settings: Default::default(),
    }
}

fn version(etag: &str) -> NewVersion {
    NewVersion {
        size: 3,
        etag: etag.into(),
        sha256: Some("00".repeat(32)),
        ..Default::default()
    }
}

async fn wait_for_leader(nodes: &[&Node]) -> usize {
    for _ in 0..200 {
        if let Some(i) = nodes.iter().position(|n| n.replica.is_leader()) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_anywhere_read_everywhere_and_survive_the_leader() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = node(1, "s1").await;
    let b = node(2, "s2").await;
    let c = node(3, "s3").await;
    a.replica.initialize_alone().await.unwrap();
    wait_for_leader(&[&a]).await;
    a.replica
        .add_member(b.replica.me.clone(), true)
        .await
        .unwrap();
    a.replica
        .add_member(c.replica.me.clone(), true)
        .await
        .unwrap();
    assert_eq!(a.replica.voters().len(), 3);

    // A write through a follower is forwarded to the leader; the reply is the catalog's.
    b.catalog.create_bucket(bucket("photos")).await.unwrap();
    let err = c.catalog.create_bucket(bucket("photos")).await.unwrap_err();
    assert!(
        matches!(err, catalog::CatalogError::BucketExists(_)),
        "{err:?}"
    );
    let mut written = Vec::new();
    for (i, n) in [&a, &b, &c].iter().cycle().take(30).enumerate() {
        let v = n
            .catalog
            .put_version(
                "photos",
                &format!("k{i}"),
                version(&format!("e{i}")),
                PutCondition::default(),
            )
            .await
            .unwrap();
        written.push((format!("k{i}"), v.version_id));
        // Read-after-write on another replica: the barrier makes it see the write.
        let other = [&a, &b, &c][(i + 1) % 3];
        other.catalog.read_barrier().await.unwrap();
        let got = other
            .catalog
            .version("photos", &format!("k{i}"), &VersionSel::Latest)
            .unwrap();
        assert_eq!(got.etag, format!("e{i}"));
    }
    // Compare-and-swap updates from two replicas at once both land.
    let (r1, r2) = tokio::join!(
        a.catalog.update_bucket("photos", |b| {
            b.settings.insert("x".into(), "1".into());
            Ok(())
        }),
        c.catalog.update_bucket("photos", |b| {
            b.settings.insert("y".into(), "2".into());
            Ok(())
        }),
    );
    r1.unwrap();
    r2.unwrap();
    b.catalog.read_barrier().await.unwrap();
    let settings = b.catalog.bucket("photos").unwrap().settings;
    assert_eq!(settings.get("x").map(String::as_str), Some("1"));
    assert_eq!(settings.get("y").map(String::as_str), Some("2"));

    // Every replica holds the same catalog, byte for byte (apply is deterministic).
    for n in [&a, &b, &c] {
        n.catalog.read_barrier().await.unwrap();
    }
    let (da, db, dc) = (dump(&a).await, dump(&b).await, dump(&c).await);
    assert_eq!(da, db);
    assert_eq!(da, dc);

    // The leader dies: the other two elect a new one and go on; nothing is lost.
    let nodes = [&a, &b, &c];
    let old = wait_for_leader(&nodes).await;
    nodes[old].replica.raft.shutdown().await.unwrap();
    nodes[old].stop.send(true).unwrap();
    let rest: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, n)| *n)
        .collect();
    let new = wait_for_leader(&rest).await;
    let follower = rest[1 - new];
    follower
        .catalog
        .put_version("photos", "after", version("late"), PutCondition::default())
        .await
        .unwrap();
    for n in &rest {
        n.catalog.read_barrier().await.unwrap();
        for (k, id) in &written {
            let v = n
                .catalog
                .version("photos", k, &VersionSel::Id(id.clone()))
                .unwrap();
            assert_eq!(&v.version_id, id);
        }
        assert_eq!(
            n.catalog
                .version("photos", "after", &VersionSel::Latest)
                .unwrap()
                .etag,
            "late"
        );
    }

    // A late joiner gets a snapshot (the log before it is purged) and then the log.
    let leader = rest[wait_for_leader(&rest).await];
    leader.replica.raft.trigger().snapshot().await.unwrap();
    // (Never hold a metrics borrow across an await: it blocks the Raft core.)
    let applied = leader.replica.raft.metrics().borrow().last_applied.unwrap();
    for _ in 0..200 {
        if leader.replica.raft.metrics().borrow().snapshot == Some(applied) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leader
        .replica
        .raft
        .trigger()
        .purge_log(applied.index)
        .await
        .unwrap();
    let d = node(4, "s1").await;
    leader
        .replica
        .add_member(d.replica.me.clone(), false)
        .await
        .unwrap();
    d.catalog.read_barrier().await.unwrap();
    assert_eq!(dump(&d).await, dump(leader).await);
    assert!(d.replica.raft.metrics().borrow().snapshot.is_some());
}

/// Messages are bounded: changes that together pass the message limit are spread over
/// entries and appends (a late joiner catches up on a log far larger than one message),
/// and a single change too large to ever replicate is refused with a clear error
/// instead of stopping the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_changes_are_spread_over_messages_and_an_oversized_one_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const LIMIT: usize = 256 << 10;
    let a = node_with_limit(7, "s1", LIMIT).await;
    let b = node_with_limit(8, "s2", LIMIT).await;
    a.replica.initialize_alone().await.unwrap();
    wait_for_leader(&[&a]).await;
    a.replica
        .add_member(b.replica.me.clone(), true)
        .await
        .unwrap();
    b.catalog.create_bucket(bucket("big")).await.unwrap();
    // 24 changes of ~60 KB each at once, through both nodes: ~1.4 MB, five messages' worth.
    let big = |i: usize| {
        let mut v = version(&format!("e{i}"));
        v.meta.insert(
            "pad".into(),
            format!("{i:x}").repeat(60_000 / format!("{i:x}").len()),
        );
        v
    };
    let writes = (0..24).map(|i| {
        let n = if i % 2 == 0 { &a } else { &b };
        let big = big(i);
        async move {
            n.catalog
                .put_version("big", &format!("k{i}"), big, PutCondition::default())
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    // A late voter receives the whole log by appends (nothing is purged): they must be split.
    let c = node_with_limit(9, "s3", LIMIT).await;
    a.replica
        .add_member(c.replica.me.clone(), true)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), c.catalog.read_barrier())
        .await
        .expect("the late voter catches up")
        .unwrap();
    for i in 0..24 {
        let v = c
            .catalog
            .version("big", &format!("k{i}"), &VersionSel::Latest)
            .unwrap();
        assert_eq!(v.etag, format!("e{i}"));
    }
    // One change over half the limit is refused on any node, and the log goes on.
    let mut huge = version("huge");
    huge.meta.insert("pad".into(), "x".repeat(LIMIT / 2 + 1));
    for n in [&a, &c] {
        let err = n
            .catalog
            .put_version("big", "huge", huge.clone(), PutCondition::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, catalog::CatalogError::Invalid(m) if m.contains("cluster's log")),
            "{err:?}"
        );
    }
    c.catalog
        .put_version("big", "after", version("after"), PutCondition::default())
        .await
        .unwrap();
    for n in [&a, &b, &c] {
        n.catalog.read_barrier().await.unwrap();
        assert!(
            n.catalog
                .version("big", "huge", &VersionSel::Latest)
                .is_err()
        );
    }
    let (da, db, dc) = (dump(&a).await, dump(&b).await, dump(&c).await);
    assert_eq!(da, db);
    assert_eq!(da, dc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_reads_under_its_lease_only_while_a_majority_hears_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = node(4, "s1").await;
    let b = node(5, "s2").await;
    let c = node(6, "s3").await;
    a.replica.initialize_alone().await.unwrap();
    wait_for_leader(&[&a]).await;
    for n in [&b, &c] {
        a.replica
            .add_member(n.replica.me.clone(), true)
            .await
            .unwrap();
    }
    b.catalog.create_bucket(bucket("leased")).await.unwrap();
    // Heartbeats every 250 ms keep the lease fresh: reads on the leader skip the round,
    // and a write acknowledged through a follower is seen by the leader's next read.
    assert!(a.replica.holds_read_lease());
    c.catalog
        .put_version("leased", "k", version("e1"), PutCondition::default())
        .await
        .unwrap();
    a.catalog.read_barrier().await.unwrap();
    let v = a
        .catalog
        .version("leased", "k", &VersionSel::Latest)
        .unwrap();
    assert_eq!(v.etag, "e1");
    // The followers stop answering: the lease runs out within half an election timeout
    // and the leader no longer answers reads on its own.
    for n in [&b, &c] {
        n.replica.raft.shutdown().await.unwrap();
        n.stop.send(true).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!a.replica.holds_read_lease());
    let read = tokio::time::timeout(Duration::from_secs(30), a.catalog.read_barrier()).await;
    assert!(
        matches!(read, Err(_) | Ok(Err(_))),
        "a leader cut off from its voters answered a read: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_cannot_vote_or_append() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = node(1, "s1").await;
    a.replica.initialize_alone().await.unwrap();
    wait_for_leader(&[&a]).await;
    // Seed 42 has the cluster secret (so TLS lets it in) but is not a member.
    let outsider = NodeKey::from_seed([42; 32]);
    let client = cluster::Client::new(&NodeTls::new(&secret(), &outsider).unwrap()).unwrap();
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(99, 7), None);
    let err = client
        .call(
            &a.replica.me.addr,
            consensus::network::VOTE,
            postcard::to_stdvec(&vote).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
    // The leader is undisturbed: still leader, same term.
    assert!(a.replica.is_leader());
    assert_eq!(a.replica.raft.metrics().borrow().current_term, 1);
    // Malformed messages from a member are refused, not applied.
    let member =
        cluster::Client::new(&NodeTls::new(&secret(), &NodeKey::from_seed([2; 32])).unwrap())
            .unwrap();
    let err = member
        .call(
            &a.replica.me.addr,
            consensus::network::APPEND,
            b"\xff\xff garbage".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
    assert!(a.replica.is_leader());
}

/// One leader for the whole property test below, on a runtime of its own.
fn hostile_target() -> &'static (tokio::runtime::Runtime, Node, cluster::Client) {
    static TARGET: std::sync::OnceLock<(tokio::runtime::Runtime, Node, cluster::Client)> =
        std::sync::OnceLock::new();
    TARGET.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = testkit::runtime();
        let n = rt.block_on(async {
            let n = node(5, "s1").await;
            n.replica.initialize_alone().await.unwrap();
            wait_for_leader(&[&n]).await;
            n.catalog.create_bucket(bucket("target")).await.unwrap();
            n
        });
        // Seed 6 is a member by its certificate (not a voter): its messages reach the
        // decoders and Raft itself.
        let member =
            cluster::Client::new(&NodeTls::new(&secret(), &NodeKey::from_seed([6; 32])).unwrap())
                .unwrap();
        (rt, n, member)
    })
}

/// Well-formed messages a member could send, to be cut and flipped.
fn raft_messages() -> Vec<(&'static str, Vec<u8>)> {
    use consensus::network::{APPEND, PROPOSE, READ_INDEX, SNAPSHOT, VOTE};
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1, 7), None);
    let append = |vote| openraft::raft::AppendEntriesRequest::<consensus::TypeConfig> {
        vote,
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let proposal = catalog::Proposal {
        stamp: catalog::Stamp { at_ns: 1, nonce: 1 },
        command: catalog::Command::CreateBucket {
            bucket: bucket("fuzzed"),
            actor: None,
        },
    };
    vec![
        (VOTE, postcard::to_stdvec(&vote).unwrap()),
        (
            APPEND,
            postcard::to_stdvec(&append(openraft::Vote::new(1, 7))).unwrap(),
        ),
        (
            APPEND,
            postcard::to_stdvec(&append(openraft::Vote::new_committed(1, 7))).unwrap(),
        ),
        (PROPOSE, postcard::to_stdvec(&proposal).unwrap()),
        (READ_INDEX, postcard::to_stdvec(&()).unwrap()),
        (SNAPSHOT, vec![0; 16]),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: testkit::proptest_cases(64), ..Default::default() })]

    /// Cut, flipped and random Raft messages from a member: never a panic, a refused
    /// message changes no catalog, and the node still commits changes afterwards.
    #[test]
    fn hostile_raft_messages_are_refused_and_the_log_goes_on(
        which in 0usize..6,
        cut in proptest::option::of(0usize..64),
        flips in proptest::collection::vec((0usize..64, 1u8..=255), 0..4),
        noise in proptest::option::weighted(0.3, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)),
    ) {
        let (rt, n, member) = hostile_target();
        rt.block_on(async {
            let (path, mut body) = raft_messages().swap_remove(which);
            if let Some(noise) = noise {
                body = noise;
            }
            for (at, x) in flips {
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] ^= x;
                }
            }
            if let Some(c) = cut {
                body.truncate(c);
            }
            let before = dump(n).await;
            let answer = member
                .call(&n.replica.me.addr, path, body, Duration::from_secs(20))
                .await;
            if let Err(e) = &answer {
                let refused = matches!(e, cluster::RpcError::Refused { .. });
                assert!(refused, "{path}: not a clean refusal: {e}");
                assert_eq!(dump(n).await, before, "{path}: refused but the catalog changed");
            }
            // The log goes on: a change commits (a flipped vote may have cost an election).
            let k = format!("after-{}", rand_suffix());
            tokio::time::timeout(
                Duration::from_secs(30),
                n.catalog.put_version("target", &k, version("ok"), PutCondition::default()),
            )
            .await
            .expect("the node commits again")
            .unwrap();
        });
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

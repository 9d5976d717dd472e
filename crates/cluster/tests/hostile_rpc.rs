//! Fuzzes the node-to-node API (shards, heartbeats, joining, layout pushes) with
//! generated hostile requests over real mutual TLS, from a member (past the membership
//! check, so the parsers behind it are reached) and from a node that is not one.
//! Properties: the server never panics or answers 500, a refused request stores no shard
//! and changes no layout, memory stays bounded under a body that claims 4 GiB, and the
//! node serves its members afterwards.
//!
//! Cases: 96 by default; `PROPTEST_CASES=20000 cargo test -p cluster --test hostile_rpc
//! --release` for a long run.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod common;

use cluster::{Client, ClusterSecret, Membership, NodeKey, NodeTls};
use common::info;
use proptest::prelude::*;
use shards::ShardStore;

struct Env {
    rt: tokio::runtime::Runtime,
    addr: String,
    membership: Arc<Membership>,
    store: Arc<ShardStore>,
    /// Raw HTTPS clients with a member's certificate and with an outsider's.
    member: reqwest::Client,
    outsider: reqwest::Client,
    member_tls: NodeTls,
    _dir: tempfile::TempDir,
}

fn raw(tls: &NodeTls) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls.client).clone())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = testkit::runtime();
        let dir = tempfile::tempdir().unwrap();
        let secret = ClusterSecret::new("hostile-rpc-secret-0123456789").unwrap();
        let founder = NodeKey::from_seed([1; 32]);
        let member_key = NodeKey::from_seed([2; 32]);
        let member_tls = NodeTls::new(&secret, &member_key).unwrap();
        let outsider_tls = NodeTls::new(&secret, &NodeKey::from_seed([3; 32])).unwrap();
        let (addr, membership, store) = rt.block_on(async {
            let f = common::start_founder(dir.path(), &secret, &founder).await;
            std::mem::forget(f.stop); // serves for the whole test binary
            let (addr, membership, store) = (f.addr, f.membership, f.store);
            Client::new(&member_tls)
                .unwrap()
                .join(&addr, &info(&member_key, "127.0.0.1:1"))
                .await
                .unwrap();
            (addr, membership, store)
        });
        Env {
            rt,
            addr,
            membership,
            store,
            member: raw(&member_tls),
            outsider: raw(&outsider_tls),
            member_tls,
            _dir: dir,
        }
    })
}

/// Shards stored and the layout: what a refused request must leave as it was.
fn state(e: &Env) -> (usize, String) {
    let shards = e.store.disks().iter().map(|d| d.shard_count()).sum();
    let layout = serde_json::to_string(&*e.membership.layout()).unwrap();
    (shards, layout)
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("any".to_string()),
        Just("4294967296".to_string()),
        Just("-1".to_string()),
        Just("7".repeat(64)),
        "[0-9a-f]{0,70}",
        "(%2e%2e|\\.\\.|%00|%ff)[a-z]{0,5}",
        "[a-zA-Z0-9%._-]{0,20}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (segment(), segment(), segment()).prop_map(|(d, c, i)| format!("/v1/shards/{d}/{c}/{i}")),
        Just("/v1/shards".to_string()),
        Just("/v1/health".to_string()),
        Just("/v1/uploading".to_string()),
        Just("/v1/join".to_string()),
        Just("/v1/repair".to_string()),
        Just("/v1/layout".to_string()),
        Just("/v1/shard-batch/get".to_string()),
        Just("/v1/shard-batch/put".to_string()),
        Just("/v1/shard-batch/delete".to_string()),
        "/v1/[a-z/]{0,20}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..4096),
        Just(br#"{"epoch":18446744073709551615,"nodes":[]}"#.to_vec()),
        Just(br#"{"id":"x","seq":0,"public_key":"00","site":"a","rpc_addr":"127.0.0.1:9","disks":[],"state":"Active"}"#.to_vec()),
        "\\{[ -~]{0,200}".prop_map(String::into_bytes),
        (1usize..10_000).prop_map(|d| "[".repeat(d).into_bytes()),
        // Shard batches: lists of shards to get or delete, and framed puts (a frame is a
        // tag byte, a u32 length, the bytes), well formed or not.
        (segment(), segment(), 0u8..9).prop_map(|(d, c, i)| {
            format!(r#"[{{"disk":{d:?},"chunk":{c:?},"index":{i}}},{{"disk":0,"chunk":"{}","index":{i}}}]"#, "7".repeat(64)).into_bytes()
        }),
        (0u32..9, segment(), 0u8..9, 0u32..70_000, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(d, c, i, sealed, claimed, data)| {
                let header = format!(r#"{{"disk":{d},"chunk":{c:?},"index":{i},"policy":"ec:4+2","sealed_len":{sealed}}}"#);
                let mut out = vec![0u8];
                out.extend_from_slice(&(header.len() as u32).to_le_bytes());
                out.extend_from_slice(header.as_bytes());
                out.push(1);
                out.extend_from_slice(&claimed.min(data.len() as u32 + 1).to_le_bytes());
                out.extend_from_slice(&data);
                out
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::proptest_cases(96), ..ProptestConfig::default() })]

    #[test]
    fn hostile_node_requests_are_refused_cleanly(
        method in "(GET|PUT|POST|DELETE|PATCH)",
        path in path(),
        policy in prop_oneof![Just("ec:4+2".to_string()), Just("none".to_string()), "[ -~]{0,12}"],
        sealed in prop_oneof![Just("100".to_string()), Just("18446744073709551616".to_string()), "[ -~]{0,12}"],
        body in body(),
        from_member in prop::bool::weighted(0.8),
    ) {
        let e = env();
        e.rt.block_on(async {
            let before = state(e);
            let http = if from_member { &e.member } else { &e.outsider };
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let resp = http
                .request(method.clone(), format!("https://{}{path}", e.addr))
                .header("x-edgecloud-policy", policy.as_str())
                .header("x-edgecloud-sealed-len", sealed.as_str())
                .body(body)
                .send()
                .await
                .expect("the node answers");
            let status = resp.status();
            assert_ne!(status.as_u16(), 500, "{method} {path}: 500 {}", resp.text().await.unwrap_or_default());
            if !from_member && path == "/v1/join" {
                // Joining is the one path open to a node with the secret; these bodies
                // never name the caller's own identity, so none gets in.
                assert!(!status.is_success(), "{method} {path}: a non-member joined");
            } else if !from_member {
                assert_eq!(status.as_u16(), 403, "{method} {path} from a non-member");
            }
            if !status.is_success() {
                assert_eq!(state(e), before, "{method} {path} was refused ({status}) but changed the node");
            }
            let health = e.member.get(format!("https://{}/v1/health", e.addr)).send().await.unwrap();
            assert!(health.status().is_success(), "{}", health.status());
        });
    }
}

/// A member that claims a 4 GiB shard and streams it is cut off at the body limit: the
/// node's memory grows by at most about that limit, nothing is stored, and it goes on.
#[test]
fn a_body_that_claims_gigabytes_is_refused_at_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env();
    e.rt.block_on(async {
        let before = state(e);
        let rss = testkit::rss_kib();
        let tcp = tokio::net::TcpStream::connect(&e.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(e.member_tls.client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let head = format!(
            "PUT /v1/shards/0/{}/0 HTTP/1.1\r\nhost: x\r\nx-edgecloud-policy: none\r\n\
             x-edgecloud-sealed-len: 4\r\ncontent-length: {}\r\n\r\n",
            "ab".repeat(32),
            4u64 << 30
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let block = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        for _ in 0..512 {
            match tokio::time::timeout(Duration::from_secs(10), tls.write_all(&block)).await {
                Ok(Ok(())) => sent += block.len() as u64,
                _ => break,
            }
        }
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut answer))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            sent < 512 << 20,
            "the node read {sent} bytes of a refused body"
        );
        assert!(answer.is_empty() || answer.contains("413"), "{answer}");
        let grown = testkit::rss_kib().saturating_sub(rss);
        assert!(grown < 200 << 10, "memory grew by {grown} KiB");
        assert_eq!(state(e), before);
        let health = e
            .member
            .get(format!("https://{}/v1/health", e.addr))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success());
    });
}

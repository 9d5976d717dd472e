//! What the node-to-node tests share: a founding node serving the API on loopback.
#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;
use std::time::Duration;

use cluster::rpc::{RpcState, router, serve};
use cluster::{
    Client, ClusterSecret, DiskInfo, Membership, NodeInfo, NodeKey, NodeState, NodeTls,
    StartOptions,
};
use shards::ShardStore;

pub fn info(k: &NodeKey, addr: &str) -> NodeInfo {
    NodeInfo {
        id: k.id(),
        seq: 0,
        public_key: k.public_hex(),
        site: "a".into(),
        rpc_addr: addr.into(),
        disks: vec![DiskInfo { weight: 1.0 }],
        state: NodeState::Active,
    }
}

/// A cluster of one, serving its node-to-node API until `stop` is dropped or sent.
pub struct Founder {
    pub addr: String,
    pub membership: Arc<Membership>,
    pub store: Arc<ShardStore>,
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// Founds a cluster under `secret` as `key`, its data and one shard disk in `dir`.
pub async fn start_founder(
    dir: &std::path::Path,
    secret: &ClusterSecret,
    key: &NodeKey,
) -> Founder {
    let tls = NodeTls::new(secret, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let membership = Membership::start(
        StartOptions {
            data_dir: dir.into(),
            me: info(key, &addr),
            join: None,
            down_after: Duration::from_secs(600),
        },
        Client::new(&tls).unwrap(),
    )
    .await
    .unwrap();
    let store = Arc::new(ShardStore::open(&[dir.join("d0")], Default::default()).unwrap());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let _server = serve(
        listener,
        router(RpcState {
            membership: membership.clone(),
            store: store.clone(),
        }),
        axum::Router::new(),
        &tls,
        stop_rx,
    );
    Founder {
        addr,
        membership,
        store,
        stop,
    }
}

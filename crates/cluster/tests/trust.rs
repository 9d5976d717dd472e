//! Who may talk to a node: a real node-to-node server over mutual TLS, and clients with
//! the right secret, a forged identity, another cluster's secret, no membership, and a
//! removed identity.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::time::Duration;

mod common;

use cluster::{Client, ClusterSecret, NodeKey, NodeState, NodeTls, RpcError};
use common::info;
use shards::ShardKey;

fn client(secret: &ClusterSecret, k: &NodeKey) -> Client {
    Client::new(&NodeTls::new(secret, k).unwrap()).unwrap()
}

fn refused(r: Result<impl std::fmt::Debug, RpcError>, why: &str) {
    match r {
        Err(RpcError::Refused { reason, .. }) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_members_with_the_secret_and_their_own_identity_are_heard() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let secret = ClusterSecret::new("the-cluster-secret-0123456789").unwrap();
    let founder = NodeKey::from_seed([1; 32]);
    let common::Founder {
        addr,
        membership,
        stop: _stop,
        ..
    } = common::start_founder(dir.path(), &secret, &founder).await;
    let shard = ShardKey {
        chunk: [7; 32],
        index: 0,
    };

    // A node with the secret joins and may then use the API.
    let member = NodeKey::from_seed([2; 32]);
    let member_client = client(&secret, &member);
    let layout = member_client
        .join(&addr, &info(&member, "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(layout.members().count(), 2);
    assert!(matches!(
        member_client.get_shard(&addr, Some(0), &shard).await,
        Err(RpcError::Missing)
    ));

    // Another node with the secret claims the member's identity: refused.
    let forger = NodeKey::from_seed([3; 32]);
    refused(
        client(&secret, &forger)
            .join(&addr, &info(&member, "127.0.0.1:2"))
            .await,
        "forged node identity",
    );
    // It is no member either: it cannot read shards.
    refused(
        client(&secret, &forger)
            .get_shard(&addr, Some(0), &shard)
            .await,
        "not a member",
    );

    // A process with another cluster's secret fails the TLS handshake.
    let other = ClusterSecret::new("another-cluster-secret-987654").unwrap();
    let foreign = NodeKey::from_seed([4; 32]);
    match client(&other, &foreign)
        .join(&addr, &info(&foreign, "127.0.0.1:3"))
        .await
    {
        Err(RpcError::Unreachable { .. }) => {}
        r => panic!("a foreign node must not get through TLS: {r:?}"),
    }

    // A client without any certificate gets through TLS as a guest, which is served
    // only the invitation route (none here): 403 on every member path.
    let guest = reqwest::Client::builder()
        .tls_backend_preconfigured((*cluster::invite::guest_tls(founder.public()).unwrap()).clone())
        .build()
        .unwrap();
    for path in ["/v1/health", "/v1/shards", "/v1/join", "/v1/layout"] {
        let r = guest
            .post(format!("https://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("members only"));
    }
    // A guest that pins another key does not believe the server.
    let wary = reqwest::Client::builder()
        .tls_backend_preconfigured((*cluster::invite::guest_tls([9; 32]).unwrap()).clone())
        .build()
        .unwrap();
    assert!(
        wary.post(format!("https://{addr}/v1/health"))
            .send()
            .await
            .is_err()
    );

    // Layouts are taken only from the catalog node.
    refused(
        member_client.push_layout(&addr, &layout).await,
        "only from the catalog node",
    );

    // A removed node is refused from then on, and cannot join again.
    membership
        .change(|l| {
            l.node_mut(&member.id()).unwrap().state = NodeState::Removed;
            Ok(())
        })
        .await
        .unwrap();
    refused(
        member_client.health(&addr, Duration::from_secs(5)).await,
        "removed",
    );
    refused(
        member_client
            .join(&addr, &info(&member, "127.0.0.1:1"))
            .await,
        "cannot rejoin",
    );
    let epoch = membership.layout().epoch;
    assert_eq!(membership.layout().members().count(), 1);
    assert_eq!(membership.layout().epoch, epoch, "refusals change nothing");
}

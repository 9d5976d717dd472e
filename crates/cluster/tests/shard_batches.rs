//! The batched shard routes through the real client, over mutual TLS: what one node
//! writes to another in a batch it reads back in a batch, in order, with a missing
//! shard answered as missing; a batch delete removes them.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

mod common;

use cluster::{Client, ClusterSecret, Fetched, NodeKey, NodeTls, PutHeader, ShardRef};
use common::info;
use shards::ShardKey;

#[test]
fn a_batch_written_is_read_back_in_order_and_deleted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = testkit::runtime();
    let dir = tempfile::tempdir().unwrap();
    let secret = ClusterSecret::new("shard-batches-secret-0123456789").unwrap();
    let founder = NodeKey::from_seed([1; 32]);
    let member_key = NodeKey::from_seed([2; 32]);
    let member = Client::new(&NodeTls::new(&secret, &member_key).unwrap()).unwrap();
    rt.block_on(async {
        let f = common::start_founder(dir.path(), &secret, &founder).await;
        member
            .join(&f.addr, &info(&member_key, "127.0.0.1:1"))
            .await
            .unwrap();
        let key = |i: u8| ShardKey {
            chunk: [i; 32],
            index: 1,
        };
        let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let puts: Vec<(PutHeader, &[u8])> = (0..3u8)
            .map(|i| {
                let header = PutHeader {
                    disk: 0,
                    chunk: codec::hex(&key(i).chunk),
                    index: 1,
                    policy: "ec:4+2".into(),
                    sealed_len: 4000,
                };
                (header, data[i as usize].as_slice())
            })
            .collect();
        let written = member.put_shards(&f.addr, &puts).await.unwrap();
        assert!(written.iter().all(Result::is_ok), "{written:?}");

        // Read back, with a shard never written in the middle and one from any disk.
        let refs = vec![
            ShardRef::new(Some(0), &key(2)),
            ShardRef::new(Some(0), &key(9)),
            ShardRef::new(None, &key(0)),
            ShardRef::new(Some(0), &key(1)),
        ];
        let got = member.get_shards(&f.addr, &refs).await.unwrap();
        assert_eq!(got.len(), 4);
        assert!(matches!(&got[0], Fetched::Data(d) if d == &data[2]));
        assert!(matches!(got[1], Fetched::Missing));
        assert!(matches!(&got[2], Fetched::Data(d) if d == &data[0]));
        assert!(matches!(&got[3], Fetched::Data(d) if d == &data[1]));

        let gone = member.delete_shards(&f.addr, &refs[2..]).await.unwrap();
        assert!(gone.iter().all(Result::is_ok), "{gone:?}");
        let got = member.get_shards(&f.addr, &refs).await.unwrap();
        assert!(matches!(&got[0], Fetched::Data(d) if d == &data[2]));
        assert!(got[1..].iter().all(|f| matches!(f, Fetched::Missing)));
    });
}

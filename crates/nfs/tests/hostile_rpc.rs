//! NFS's RPC decoding against hostile and malformed input: a fragment header announcing
//! gigabytes is refused without allocating them, random fragments never panic the
//! server, nothing is stored, and a proper call is answered afterwards.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    test: testkit::TestArchive,
    port: u16,
}

async fn start() -> Server {
    let test = testkit::archive_with_bucket(6, "hostile").await;
    let files = testkit::files(&test.archive, "ROOT", "root-secret-0123456789");
    let session = files.session_after_login("ROOT").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let staging = test.dir.path().join("staging");
    tokio::spawn(async move {
        nfs::serve(
            session,
            &format!("127.0.0.1:{port}"),
            staging,
            None,
            std::future::pending(),
        )
        .await
    });
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server { test, port }
}

/// An NFS v3 NULL call (AUTH_NONE) as one record-marked fragment.
fn null_call(xid: u32) -> Vec<u8> {
    let words = [xid, 0, 2, 100003, 3, 0, 0, 0, 0, 0];
    let body: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let mut out = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// A NULL call is answered with its xid: the server still serves.
async fn answers(port: u16) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(&null_call(0x1234_5678)).await.unwrap();
    let mut head = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut head))
        .await
        .expect("the server answers")
        .unwrap();
    assert_eq!(&head[4..8], &0x1234_5678u32.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragment_announcing_gigabytes_is_refused_without_allocating_them() {
    let s = start().await;
    answers(s.port).await;
    let before = testkit::rss_kib();
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        // not the last fragment, 2 GiB - 1 announced; then a few bytes of it
        c.write_all(&0x7fff_ffffu32.to_be_bytes()).await.unwrap();
        c.write_all(&[0u8; 1024]).await.unwrap();
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut c in conns {
        let mut b = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(20), c.read(&mut b)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
    let grown = testkit::rss_kib().saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "memory grew by {grown} KiB for announced lengths"
    );
    answers(s.port).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::proptest_cases(32), ..ProptestConfig::default() })]

    #[test]
    fn random_fragments_never_stop_the_server_or_store_anything(
        frames in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..400)),
            1..8,
        ),
        xid in any::<u32>(),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = start().await;
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
            for (last, body) in &frames {
                // a plausible RPC call header, then garbage: reaches the procedure decoders
                let mut msg: Vec<u8> = [xid, 0, 2, 100003, 3].iter().flat_map(|w| w.to_be_bytes()).collect();
                msg.extend(body);
                let mark = (msg.len() as u32) | if *last { 0x8000_0000 } else { 0 };
                if c.write_all(&mark.to_be_bytes()).await.is_err() || c.write_all(&msg).await.is_err() {
                    break;
                }
            }
            let mut b = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await;
            drop(c);
            answers(s.port).await;
            let page = s.test.archive.list("hostile", &archive::ListQuery { max_keys: 10, ..Default::default() }).unwrap();
            assert!(page.objects.is_empty(), "garbage stored something");
        });
    }
}

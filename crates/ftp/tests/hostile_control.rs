//! The FTP control channel against hostile and malformed input, before and after login:
//! the server never panics, keeps its memory bounded (an endless line is cut off) and
//! stores nothing for a refused request, and a proper session works afterwards.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ACCESS: &str = "ROOTKEY";
const SECRET: &str = "root-secret-0123456789";

struct Server {
    test: testkit::TestArchive,
    port: u16,
}

async fn start() -> Server {
    let test = testkit::archive_with_bucket(5, "hostile").await;
    let files = testkit::files(&test.archive, ACCESS, SECRET);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = ftp::FtpConfig {
        passive_ports: 50000..=50100,
        tls: None,
        on_op: None,
    };
    tokio::spawn(ftp::serve(files, listener, cfg, std::future::pending()));
    Server { test, port }
}

/// Reads one reply line (with a timeout: a server that stalls fails the test).
async fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut line))
        .await
        .expect("the server answers")
        .expect("read");
    line
}

/// A proper session: logs in and lists the root. Proves the server still serves.
async fn logs_in(port: u16) {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = BufReader::new(s);
    assert!(reply(&mut r).await.starts_with("220"));
    r.get_mut()
        .write_all(format!("USER {ACCESS}\r\n").as_bytes())
        .await
        .unwrap();
    assert!(reply(&mut r).await.starts_with("331"));
    r.get_mut()
        .write_all(format!("PASS {SECRET}\r\n").as_bytes())
        .await
        .unwrap();
    let l = reply(&mut r).await;
    assert!(l.starts_with("230"), "{l}");
}

fn objects(a: &archive::Archive) -> usize {
    a.list(
        "hostile",
        &archive::ListQuery {
            max_keys: 100,
            ..Default::default()
        },
    )
    .unwrap()
    .objects
    .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_command_line_is_cut_off_before_login() {
    let s = start().await;
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let mut greeting = [0u8; 256];
    let _ = c.read(&mut greeting).await.unwrap();
    // 64 MiB without a newline: the server must close the session long before.
    let chunk = vec![b'A'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_secs(10), c.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    assert!(sent < 64 << 20, "the server kept reading an endless line");
    logs_in(s.port).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::proptest_cases(24), ..ProptestConfig::default() })]

    #[test]
    fn hostile_lines_change_nothing(lines in proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "(USER|PASS|STOR|RETR|DELE|RNFR|RNTO|MKD|RMD|CWD|LIST|PORT|PASV|EPRT|REST|SIZE|AUTH|PBSZ|PROT|OPTS|FEAT|SITE|ABOR) [ -~]{0,80}"
                .prop_map(|s| s.into_bytes()),
        ],
        1..20,
    ), login in any::<bool>()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = start().await;
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            if login {
                // a logged-in session with a wrong secret: still refused
                let _ = c.write_all(format!("USER {ACCESS}\r\nPASS wrong\r\n").as_bytes()).await;
            }
            for l in &lines {
                let mut l = l.clone();
                l.extend_from_slice(b"\r\n");
                if c.write_all(&l).await.is_err() {
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await;
            drop(c);
            logs_in(s.port).await;
            assert_eq!(objects(&s.test.archive), 0, "a refused session stored something");
        });
    }
}

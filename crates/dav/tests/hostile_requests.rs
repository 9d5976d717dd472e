//! Fuzzes the WebDAV request path (Basic auth, methods, Depth/Destination/Overwrite/If/
//! Timeout/Content-Range headers, PROPFIND/PROPPATCH/LOCK XML bodies, paths) with
//! generated hostile requests, in process. Properties: the gateway never panics or
//! answers 500, a request it refuses stores nothing, and it serves a proper request
//! afterwards. Most requests carry the right credentials so they reach the parsers.
//!
//! Cases: 128 by default; `PROPTEST_CASES=20000 cargo test -p dav --test
//! hostile_requests --release` for a long run.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::sync::OnceLock;

use archive::Archive;
use axum::body::Body;
use base64::Engine;
use http::Request;
use proptest::prelude::*;
use tower::ServiceExt;

const ACCESS: &str = "DAVFUZZ";
const SECRET: &str = "dav-fuzz-secret";

fn env() -> &'static testkit::RouterEnv {
    static ENV: OnceLock<testkit::RouterEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        testkit::router_env(4, "dfz", ("seed.txt", b"seed"), |a| {
            dav::router(testkit::files(a, ACCESS, SECRET))
        })
    })
}

/// Every version of every key in the test bucket, and the bucket count: what a refused
/// request must leave as it was.
fn state(a: &Archive) -> (Vec<(String, String)>, usize) {
    let q = archive::VersionsQuery {
        max_keys: 1000,
        ..Default::default()
    };
    let page = a.list_versions("dfz", &q).unwrap();
    let mut v: Vec<(String, String)> = page
        .versions
        .iter()
        .map(|(v, _)| (v.key.clone(), v.version_id.clone()))
        .collect();
    v.sort();
    (v, a.buckets().unwrap().len())
}

fn auth(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// XML bodies the parsers meet: well-formed requests with hostile contents, cut ones,
/// deep nesting, entity tricks, and noise.
fn xml_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#.to_vec()),
        "[ -~]{0,40}".prop_map(|n| format!(
            r#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:{n}>v</Z:{n}></D:prop></D:set></D:propertyupdate>"#
        ).into_bytes()),
        "[ -~]{0,60}".prop_map(|o| format!(
            r#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{o}</D:owner></D:lockinfo>"#
        ).into_bytes()),
        (1usize..20_000).prop_map(|depth| {
            let mut b = br#"<D:propfind xmlns:D="DAV:">"#.to_vec();
            b.extend(b"<D:prop>".repeat(depth));
            b.extend(b"</D:prop>".repeat(depth));
            b.extend(b"</D:propfind>");
            b
        }),
        Just(br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><D:propfind xmlns:D="DAV:"><D:prop><D:x>&c;&c;&c;</D:x></D:prop></D:propfind>"#.to_vec()),
        (Just(br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>"#.to_vec()), 0usize..60)
            .prop_map(|(b, cut)| b[..b.len().saturating_sub(cut)].to_vec()),
        proptest::collection::vec(any::<u8>(), 0..2000),
        (70_000usize..200_000).prop_map(|n| {
            let mut b = br#"<D:propfind xmlns:D="DAV:"><D:prop><D:x>"#.to_vec();
            b.extend(std::iter::repeat_n(b'z', n));
            b
        }),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        Just("/dfz/".to_string()),
        Just("/dfz/seed.txt".to_string()),
        "[a-z%./]{0,30}".prop_map(|p| format!("/dfz/{p}")),
        "(%2e%2e|\\.\\.|%00|%2f|%ff|//|/\\.snapshots/)[a-z]{0,8}".prop_map(|p| format!("/dfz/{p}")),
        "[a-z]{0,4}".prop_map(|p| format!("/{}/{p}", "x".repeat(300))),
        "[ -~]{0,40}".prop_map(|p| format!("/dfz/{}", p.replace(['?', '#', ' '], "_"))),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("infinity".to_string()),
        Just("T".to_string()),
        Just("F".to_string()),
        Just("http://localhost/dfz/moved".to_string()),
        Just("/dfz/../../etc/passwd".to_string()),
        Just("(<opaquelocktoken:00000000-0000-0000-0000-000000000000>)".to_string()),
        Just("Second-99999999999999999999".to_string()),
        Just("bytes 0-18446744073709551615/*".to_string()),
        Just("bytes 5-2/10".to_string()),
        Just("bytes=0-18446744073709551615".to_string()),
        Just("\"".to_string()),
        Just("W/\"".to_string()),
        Just("application/x-sabredav-partialupdate".to_string()),
        "[ -~]{0,80}",
    ]
}

prop_compose! {
    fn request()(
        method in prop_oneof![
            "(GET|HEAD|PUT|PATCH|DELETE|OPTIONS|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK)",
            "[A-Z]{1,12}",
        ],
        path in path(),
        headers in proptest::collection::vec(
            (prop_oneof![
                Just("Depth"), Just("Destination"), Just("Overwrite"), Just("If"),
                Just("Timeout"), Just("Lock-Token"), Just("Content-Range"), Just("Range"),
                Just("Content-Type"), Just("If-Match"), Just("If-None-Match"),
                Just("X-Update-Range"), Just("If-Modified-Since"), Just("Accept-Encoding"),
            ], header_value()),
            0..5,
        ),
        body in xml_body(),
        creds in prop_oneof![
            4 => Just(Some((ACCESS.to_string(), SECRET.to_string()))),
            1 => Just(Some((ACCESS.to_string(), "wrong".to_string()))),
            1 => Just(None),
        ],
    ) -> (String, String, Vec<(&'static str, String)>, Vec<u8>, Option<(String, String)>) {
        (method, path, headers, body, creds)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::proptest_cases(128), ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_are_refused_cleanly((method, path, headers, body, creds) in request()) {
        let e = env();
        e.rt.block_on(async {
            let before = state(&e.test.archive);
            let mut b = Request::builder().method(method.as_str()).uri(&path);
            for (name, value) in &headers {
                b = b.header(*name, value);
            }
            if let Some((u, p)) = &creds {
                b = b.header("Authorization", auth(u, p));
            }
            let Ok(req) = b.body(Body::from(body)) else {
                return; // not even an HTTP request; hyper would not pass it on
            };
            let resp = e.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
            assert_ne!(status.as_u16(), 500, "{method} {path} {headers:?} answered 500");
            if creds.as_ref().is_none_or(|(_, p)| p != SECRET) {
                assert_eq!(status.as_u16(), 401, "{method} {path} without the secret: {status}");
            }
            if !status.is_success() {
                assert_eq!(state(&e.test.archive), before, "{method} {path} {headers:?} was refused ({status}) but changed the bucket");
            }
            // A proper request is still served.
            let ok = Request::builder()
                .method("PROPFIND")
                .uri("/dfz/")
                .header("Depth", "1")
                .header("Authorization", auth(ACCESS, SECRET))
                .body(Body::empty())
                .unwrap();
            let resp = e.router.clone().oneshot(ok).await.unwrap();
            assert_eq!(resp.status().as_u16(), 207);
        });
    }
}

/// The deepest XML a request body can hold (64 KiB of nested elements) neither
/// overflows a stack nor takes the gateway down; the body size cap keeps memory bounded.
#[test]
fn deeply_nested_and_oversized_xml_is_refused_and_the_gateway_goes_on() {
    let e = env();
    e.rt.block_on(async {
        let before = state(&e.test.archive);
        for body in [
            {
                let mut b = b"<D:propfind xmlns:D=\"DAV:\">".to_vec();
                b.extend(b"<a>".repeat(21_000));
                b
            },
            vec![b'<'; 10 << 20],
        ] {
            let req = Request::builder()
                .method("PROPFIND")
                .uri("/dfz/")
                .header("Authorization", auth(ACCESS, SECRET))
                .body(Body::from(body))
                .unwrap();
            let status = e.router.clone().oneshot(req).await.unwrap().status();
            assert!(status.is_client_error(), "{status}");
        }
        assert_eq!(
            state(&e.test.archive),
            before,
            "a refused request changed the bucket"
        );
    });
}

/// A PROPFIND whose body never ends (256 MiB here, without a length) is cut off at the
/// XML body limit: memory stays bounded and nothing is stored.
#[test]
fn an_endless_xml_body_is_cut_off_at_the_limit() {
    let e = env();
    e.rt.block_on(async {
        let before = state(&e.test.archive);
        let rss = testkit::rss_kib();
        let endless = futures::stream::iter(
            (0..4096).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'<'; 64 << 10]))),
        );
        let req = Request::builder()
            .method("PROPFIND")
            .uri("/dfz/")
            .header("Authorization", auth(ACCESS, SECRET))
            .body(Body::from_stream(endless))
            .unwrap();
        let status = e.router.clone().oneshot(req).await.unwrap().status();
        assert_eq!(status.as_u16(), 413);
        let grown = testkit::rss_kib().saturating_sub(rss);
        assert!(grown < 64 << 10, "memory grew by {grown} KiB");
        assert_eq!(state(&e.test.archive), before);
    });
}

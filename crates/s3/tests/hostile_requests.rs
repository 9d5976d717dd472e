//! Fuzzes the whole S3 request path (s3s parsing, SigV4, our access checks, XML bodies,
//! headers, ranges, keys) with generated hostile requests, in process. Properties:
//! the gateway never panics or answers 5xx (bar 501 NotImplemented), and a request it
//! refuses changes nothing. Most requests are validly signed so they reach the parsers
//! behind authentication.
//!
//! Cases: 256 by default; `PROPTEST_CASES=50000 cargo test -p s3 --test
//! hostile_requests --release` for a long run.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::sync::OnceLock;

use archive::{Archive, VersionsQuery};
use axum::body::Body;
use http::Request;
use proptest::prelude::*;
use s3::sign::{Signer, uri_encode};
use tower::ServiceExt;

const ACCESS: &str = "FUZZACCESS";
const SECRET: &str = "fuzz-secret";

fn env() -> &'static testkit::RouterEnv {
    static ENV: OnceLock<testkit::RouterEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        testkit::router_env(3, "fzz", ("seed", b"seed data"), |a| {
            let root = s3::RootKey {
                access_key: ACCESS.into(),
                secret: SECRET.into(),
            };
            let cfg = s3::GatewayConfig {
                root,
                domain: Some("s3.fuzz".into()),
                lifecycle_day: std::time::Duration::from_secs(86_400),
            };
            s3::router(a.clone(), cfg).unwrap()
        })
    })
}

/// Everything a refused request must leave as it was: every version of bucket "fzz".
fn snapshot(a: &Archive) -> Vec<(String, String, String)> {
    let q = VersionsQuery {
        max_keys: 10_000,
        ..Default::default()
    };
    let page = a.list_versions("fzz", &q).unwrap();
    page.versions
        .into_iter()
        .map(|(v, _)| (v.key, v.version_id, v.etag))
        .collect()
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH",
    ])
}

fn bucket() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just("fzz".to_string()),
        1 => Just("missing-bucket".to_string()),
        1 => Just(String::new()),
        1 => Just("..".to_string()),
        1 => Just("UPPER".to_string()),
        1 => Just("x".repeat(70)),
        1 => "[a-z0-9.-]{1,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("seed".to_string()),
        1 => Just("../../etc/passwd".to_string()),
        1 => Just("/abs/path".to_string()),
        1 => Just("a\0b".to_string()),
        1 => Just("k".repeat(1500)),
        1 => Just("dir//x/./y/../z".to_string()),
        4 => "[a-zA-Z0-9/._ ~%+-]{0,40}",
        2 => "\\PC{0,12}",
    ]
}

fn param() -> impl Strategy<Value = (String, String)> {
    let names = prop::sample::select(vec![
        "uploads",
        "uploadId",
        "partNumber",
        "versionId",
        "versioning",
        "tagging",
        "cors",
        "policy",
        "acl",
        "delete",
        "list-type",
        "max-keys",
        "prefix",
        "delimiter",
        "marker",
        "continuation-token",
        "encoding-type",
        "x-edgecloud-as-of",
        "response-content-type",
        "response-expires",
        "versions",
        "location",
        "start-after",
        "fetch-owner",
        "key-marker",
        "version-id-marker",
        "max-parts",
        "part-number-marker",
        "X-Amz-Expires",
        "X-Amz-Signature",
        "x-id",
    ]);
    let values = prop_oneof![
        Just(String::new()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("99999999999999999999".to_string()),
        Just("2026-13-45T99:00:00Z".to_string()),
        "[ -~]{0,24}",
    ];
    (names.prop_map(str::to_string), values)
}

fn header() -> impl Strategy<Value = (String, String)> {
    let names = prop::sample::select(vec![
        "content-md5",
        "x-amz-checksum-crc32",
        "x-amz-checksum-sha256",
        "x-amz-trailer",
        "x-amz-sdk-checksum-algorithm",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "x-amz-copy-source",
        "x-amz-copy-source-range",
        "x-amz-tagging",
        "x-amz-acl",
        "x-amz-meta-a",
        "content-type",
        "x-amz-metadata-directive",
        "expires",
        "content-encoding",
        "x-amz-decoded-content-length",
        "content-length",
        "origin",
        "access-control-request-method",
        "x-amz-content-sha256",
        "x-amz-date",
        "authorization",
    ]);
    let values = prop_oneof![
        Just("bytes=0-".to_string()),
        Just("bytes=-0".to_string()),
        Just("bytes=5-1".to_string()),
        Just("bytes=0-1,3-4".to_string()),
        Just("/fzz/seed".to_string()),
        Just("*".to_string()),
        Just("aws-chunked".to_string()),
        Just("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_string()),
        Just("x-amz-checksum-crc32".to_string()),
        Just("public-read-write".to_string()),
        Just("a=b&c".to_string()),
        "[ -~]{0,40}",
    ];
    (names.prop_map(str::to_string), values)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let xml = prop_oneof![
        Just("<Delete><Object><Key>seed</Key></Object><Quiet>true</Quiet></Delete>"),
        Just(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>"
        ),
        Just("<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>"),
        Just(
            "<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>"
        ),
        Just("<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"),
        Just(
            "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;\">]><Tagging>&b;</Tagging>"
        ),
        Just("{\"Statement\": [{\"Effect\": \"Allow\"}]}"),
    ];
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..3000),
        // an XML body, cut short at a random point
        (xml, any::<prop::sample::Index>())
            .prop_map(|(x, i)| x.as_bytes()[..i.index(x.len() + 1)].to_vec()),
        (xml_str(), 0..3usize).prop_map(|(s, n)| s.repeat(n + 1).into_bytes()),
    ]
}

fn xml_str() -> impl Strategy<Value = String> {
    "<[A-Za-z]{1,12}>[ -~]{0,20}</[A-Za-z]{0,12}>"
}

#[derive(Debug, Clone)]
struct Hostile {
    method: &'static str,
    bucket: String,
    key: String,
    virtual_host: bool,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    signed: bool,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        method(),
        bucket(),
        key(),
        prop::bool::weighted(0.2),
        prop::collection::vec(param(), 0..4),
        prop::collection::vec(header(), 0..5),
        body(),
        prop::bool::weighted(0.85),
    )
        .prop_map(
            |(method, bucket, key, virtual_host, params, headers, body, signed)| Hostile {
                method,
                bucket,
                key,
                virtual_host,
                params,
                headers,
                body,
                signed,
            },
        )
}

fn build(h: &Hostile) -> Option<Request<Body>> {
    let (host, path) = if h.virtual_host && !h.bucket.is_empty() {
        (format!("{}.s3.fuzz", h.bucket), format!("/{}", h.key))
    } else if h.key.is_empty() {
        ("localhost".to_string(), format!("/{}", h.bucket))
    } else {
        ("localhost".to_string(), format!("/{}/{}", h.bucket, h.key))
    };
    let query: Vec<(&str, &str)> = h
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let qs = query.iter().map(|(k, v)| {
        if v.is_empty() {
            uri_encode(k, false)
        } else {
            format!("{}={}", uri_encode(k, false), uri_encode(v, false))
        }
    });
    let qs = qs.collect::<Vec<_>>().join("&");
    let uri = if qs.is_empty() {
        uri_encode(&path, true)
    } else {
        format!("{}?{qs}", uri_encode(&path, true))
    };
    let mut b = Request::builder()
        .method(h.method)
        .uri(uri)
        .header("host", &host);
    for (k, v) in &h.headers {
        if http::HeaderValue::from_str(v).is_ok() {
            b = b.header(k.as_str(), v.as_str());
        }
    }
    if h.signed {
        let signer = Signer {
            access_key: ACCESS.into(),
            secret_key: SECRET.into(),
            region: "us-east-1".into(),
        };
        for (k, v) in signer.headers(h.method, &host, &path, &query) {
            b = b.header(k, v);
        }
    }
    b.body(Body::from(h.body.clone())).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_s3_errors_and_change_nothing(h in hostile()) {
        let env = env();
        let Some(req) = build(&h) else { return Ok(()) };
        let before = snapshot(&env.test.archive);
        let resp = env.rt.block_on(async {
            let r = env.router.clone().oneshot(req).await.unwrap();
            let status = r.status();
            // Read the whole answer: a streaming body can fail too.
            let body = axum::body::to_bytes(r.into_body(), 64 << 20).await;
            if std::env::var_os("FUZZ_TRACE").is_some()
                && let Ok(b) = &body {
                    let t = String::from_utf8_lossy(b);
                    let code = t.split("<Code>").nth(1).and_then(|c| c.split('<').next()).unwrap_or("-");
                    eprintln!("code {} {}", status.as_u16(), code);
                }
            (status, body.is_ok())
        });
        let (status, body_ok) = resp;
        if std::env::var_os("FUZZ_TRACE").is_some() {
            eprintln!("{} {} {:?} {:?}", status.as_u16(), h.method, h.bucket, h.params);
        }
        prop_assert!(body_ok, "the response body failed for {:?}", h);
        prop_assert!(!status.is_server_error() || status == http::StatusCode::NOT_IMPLEMENTED,
            "{} for {:?}", status, h);
        if status.is_client_error() {
            prop_assert_eq!(before, snapshot(&env.test.archive), "a refused request changed the bucket: {:?}", h);
        }
    }
}

#[test]
fn the_gateway_still_serves_after_the_fuzzing() {
    let env = env();
    let signer = Signer {
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        region: "us-east-1".into(),
    };
    let mut b = Request::builder()
        .method("GET")
        .uri("/fzz")
        .header("host", "localhost");
    for (k, v) in signer.headers("GET", "localhost", "/fzz", &[]) {
        b = b.header(k, v);
    }
    let r = env
        .rt
        .block_on(env.router.clone().oneshot(b.body(Body::empty()).unwrap()))
        .unwrap();
    assert_eq!(r.status(), 200);
}

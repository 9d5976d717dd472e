//! Every answer carries a request id (`x-amz-request-id`, and `x-amz-id-2` as S3 sends),
//! and error bodies repeat it in `<RequestId>`, so a user's report can be matched with
//! the server's log line.

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};

/// Error bodies are small; anything bigger is passed on untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub(crate) async fn middleware(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let id = random_id();
    tracing::debug!(request_id = %id, method = %req.method(), path = %req.uri().path(), "S3 request");
    let resp = next.run(req).await;
    let (mut parts, body) = resp.into_parts();
    let value = HeaderValue::from_str(&id).expect("hex is a valid header value");
    parts.headers.insert("x-amz-request-id", value.clone());
    parts.headers.insert("x-amz-id-2", value);
    let is_xml_error = parts.status.as_u16() >= 300
        && parts
            .headers
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/xml"));
    if !is_xml_error {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let text = String::from_utf8_lossy(&bytes);
    let out = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..])
        }
        _ => text.into_owned(),
    };
    parts.headers.remove("content-length");
    Response::from_parts(parts, Body::from(out))
}

/// 16 random hex characters.
fn random_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source failed");
    b.iter().map(|x| format!("{x:02X}")).collect()
}

//! The WebDAV gateway (port 9401): `dav-server` speaks the protocol (PROPFIND,
//! PROPPATCH, MKCOL, COPY, MOVE, LOCK/UNLOCK class 2, ranges), `fs.rs` maps it onto
//! `files` (buckets as top folders, the same access keys as S3: user name = access key,
//! password = secret, HTTP Basic on every request), `file.rs` streams bodies both ways.
//!
//! Locks live in memory (dav-server's `MemLs`): a restart forgets them, as clients that
//! refresh locks expect of a server restart.

mod file;
mod fs;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dav_server::DavHandler;
use files::{Files, Session};
use http::{HeaderValue, StatusCode, header};

#[derive(Clone)]
struct Gateway {
    files: Files,
    dav: DavHandler<Session>,
}

/// The WebDAV service for `files`' buckets.
pub fn router(files: Files) -> axum::Router {
    let dav = DavHandler::builder()
        .filesystem(Box::new(fs::EdgeFs))
        .locksystem(dav_server::memls::MemLs::new())
        .autoindex(true)
        .build_handler();
    axum::Router::new()
        .fallback(handle)
        .with_state(Gateway { files, dav })
}

fn basic_credentials(req: &Request) -> Option<(String, String)> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn unauthorized(why: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        format!(
            "{why}: log in with an access key as the user name and its secret as the password\n"
        ),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"edgecloud\", charset=\"UTF-8\""),
    );
    r
}

async fn handle(State(g): State<Gateway>, req: Request) -> Response {
    let Some((user, pass)) = basic_credentials(&req) else {
        return unauthorized("authentication required");
    };
    let session = match g.files.login_fresh(&user, &pass).await {
        Ok(s) => s,
        Err(files::FsError::Denied) => {
            tracing::info!("webdav: refused login for access key {user:?}");
            return unauthorized("wrong access key or secret");
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    // Like S3: each request sees every change acknowledged before it began, whichever
    // node took it.
    if let Err(e) = session.catch_up().await {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    let req = match checked_xml_body(req).await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    g.dav
        .handle_guarded(req, user, session)
        .await
        .map(axum::body::Body::new)
}

/// The most bytes of an XML request body (PROPFIND, PROPPATCH, LOCK): dav-server's own
/// limit, checked here first.
const MAX_XML_BODY: usize = 64 << 10;
/// The deepest nesting of elements a request body may have. Real clients send 4-6
/// levels; dav-server's XML parser recurses per level, and 20,000 levels in 64 KiB
/// overflow a thread's stack, which aborts the whole node.
const MAX_XML_DEPTH: usize = 64;

/// Every body but a PUT's is XML for dav-server to parse: read it (bounded) and refuse
/// one nested too deeply before the parser sees it.
async fn checked_xml_body(req: Request) -> Result<Request, Response> {
    if req.method() == http::Method::PUT {
        return Ok(req); // streamed into the archive, never parsed
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_XML_BODY)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a WebDAV request body may have at most {MAX_XML_BODY} bytes\n"),
            )
                .into_response()
        })?;
    if xml_depth(&bytes) > MAX_XML_DEPTH {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("the request's XML nests deeper than {MAX_XML_DEPTH} elements\n"),
        )
            .into_response());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// The deepest element nesting in `xml`, counted from its tags without parsing it
/// (comments, declarations and CDATA open no element).
fn xml_depth(xml: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while let Some(at) = xml[i..].iter().position(|&c| c == b'<') {
        let start = i + at;
        let close: &[u8] = if xml[start..].starts_with(b"<!--") {
            b"-->"
        } else {
            b">"
        };
        let end = xml[start..]
            .windows(close.len())
            .position(|w| w == close)
            .map_or(xml.len(), |e| start + e + close.len() - 1);
        let tag = &xml[start + 1..end];
        match tag.first() {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(b'?' | b'!') | None => {}
            Some(_) if tag.ends_with(b"/") => {}
            Some(_) => {
                depth += 1;
                deepest = deepest.max(depth);
            }
        }
        i = (end + 1).min(xml.len());
    }
    deepest
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_depth_counts_open_elements() {
        assert_eq!(
            super::xml_depth(b"<?xml version=\"1.0\"?><a><b/><c><d>x</d></c></a>"),
            3
        );
        assert_eq!(super::xml_depth(b"<!-- <x><y> --><a>"), 1);
        assert_eq!(super::xml_depth(&b"<p>".repeat(1000)), 1000);
        assert_eq!(super::xml_depth(b""), 0);
    }
}

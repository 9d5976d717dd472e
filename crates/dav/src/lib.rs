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
    g.dav
        .handle_guarded(req, user, session)
        .await
        .map(axum::body::Body::new)
}

//! The admin HTTP API (port 9410): what the `edgecloud` CLI and the web console talk to.
//! Every route needs the bearer token that `serve` writes into the data directory
//! (compared in constant time) or a console session ([`session`]); the console's own
//! pages ([`console`]) are public and hold no data. Object bodies stream both ways;
//! nothing is buffered whole.

mod access_keys;
mod buckets;
pub mod console;
pub mod containers;
mod error;
mod images;
pub mod invites;
pub mod jobs;
pub mod ledger;
pub mod node_logs;
mod objects;
/// Operations on the running node: cluster view, scrub, repair.
pub mod ops;
pub mod peers;
pub mod session;
pub mod types;

use std::path::Path;

use archive::Archive;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use session::Principal;

pub use error::ApiError;

/// The token file inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Where a running node says, inside its data directory, at which URL its admin API
/// answers (`https://` with TLS), so that the CLI finds it without `--admin`.
pub const URL_FILE: &str = "admin.url";
/// The admin API described in OpenAPI 3 (served at `/openapi.yaml`; checked against a
/// running node by schemathesis in `tests/ops`).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// The certificate (chain) the admin API serves with TLS, for the CLI to trust.
pub const CERT_FILE: &str = "admin-cert.pem";

/// What every admin handler shares.
#[derive(Clone)]
pub struct AdminState {
    /// The node's archive.
    pub archive: Archive,
    /// The admin bearer token (`DATA/admin.token`).
    pub token: String,
    /// The audit log, when the node keeps one.
    pub auditor: Option<std::sync::Arc<archive::audit::Auditor>>,
    /// Serve the log's published data (checkpoint, public key, tiles, proofs by index)
    /// without the token. Proof bundles by object name still need it.
    pub public_ledger: bool,
    /// Issues invitation tokens (a node in a cluster).
    pub inviter: Option<std::sync::Arc<invites::Inviter>>,
    /// Runs compute jobs (None: this node runs none).
    pub jobs: Option<std::sync::Arc<::jobs::Jobs>>,
    /// Keeps container images (None: this node keeps none).
    pub images: Option<::images::ImageStore>,
    /// Runs containers (None: this node runs none).
    pub containers: Option<::containers::Containers>,
    /// The web console's live sessions.
    pub sessions: std::sync::Arc<session::Sessions>,
    /// The admin API is served over TLS: session cookies are marked `Secure`.
    pub secure_cookies: bool,
}

/// Whether a request only reads the log's published data.
fn reads_published_ledger(req: &Request) -> bool {
    let p = req.uri().path();
    req.method() == axum::http::Method::GET
        && [
            "/v1/ledger/checkpoint",
            "/v1/ledger/public-key",
            "/v1/ledger/proof/inclusion",
            "/v1/ledger/proof/consistency",
        ]
        .contains(&p)
        || req.method() == axum::http::Method::GET && p.starts_with("/v1/ledger/tile/")
}

/// Reads the admin token from the data directory, creating one (mode 0600) if absent.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

async fn require_auth(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    if state.public_ledger && reads_published_ledger(&req) {
        return next.run(req).await;
    }
    // Logging in is how a session starts; the handler checks the credentials.
    if req.method() == Method::POST && req.uri().path() == "/v1/session" {
        return next.run(req).await;
    }
    let who = match session::authenticate(&state, &req) {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    if let Principal::Key(key) = &who
        && !session::key_may(key, req.method(), req.uri())
    {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(types::ErrorBody {
                error: "AccessDenied".into(),
                message: format!(
                    "access key {} may not do this: ask an admin for a grant",
                    key.access_key
                ),
            }),
        )
            .into_response();
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The admin API: every route behind the token or session check, and the console's
/// pages; every answer carries the security headers of [`console::secure_headers`].
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/v1/session",
            post(session::login)
                .get(session::current)
                .delete(session::logout),
        )
        .route(
            "/v1/jobs",
            post(jobs::submit)
                .get(jobs::list)
                // A WebAssembly module compiled from Go is a few MB (as base64).
                .layer(axum::extract::DefaultBodyLimit::max(
                    ::jobs::MAX_CODE_BYTES + 64 * 1024,
                )),
        )
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route(
            "/v1/images",
            // The body streams to a spool file: an image is as large as it is.
            post(images::import)
                .get(images::list)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/image-pulls", post(images::pull))
        .route(
            "/v1/containers",
            post(containers::run).get(containers::list),
        )
        .route(
            "/v1/containers/{reference}",
            get(containers::get).delete(containers::remove),
        )
        .route("/v1/containers/{reference}/stop", post(containers::stop))
        .route("/v1/containers/{reference}/logs", get(containers::logs))
        .route("/v1/containers/{reference}/exec", post(containers::exec))
        .route(
            "/v1/images/{*reference}",
            get(images::inspect).delete(images::remove),
        )
        .route("/v1/jobs/{id}/logs", get(jobs::logs))
        .route("/v1/status", get(ops::status))
        .route("/v1/scrub", post(ops::scrub).get(ops::scrub_state))
        .route("/v1/cluster", get(ops::cluster))
        .route("/v1/cluster/repair", post(ops::repair))
        .route(
            "/v1/cluster/invites",
            post(invites::issue).get(invites::list),
        )
        .route(
            "/v1/cluster/invites/{id}",
            axum::routing::delete(invites::revoke),
        )
        .route(
            "/v1/cluster/join-requests",
            axum::routing::get(invites::waiting),
        )
        .route("/v1/cluster/join-requests/{code}", post(invites::approve))
        .route("/v1/cluster/nodes/{node}/drain", post(ops::drain))
        .route("/v1/cluster/nodes/{node}/logs", get(node_logs::get))
        .route(
            "/v1/cluster/nodes/{node}",
            axum::routing::delete(ops::remove),
        )
        .route("/v1/buckets", get(buckets::list))
        .route(
            "/v1/buckets/{bucket}",
            put(buckets::create).delete(buckets::delete),
        )
        .route(
            "/v1/buckets/{bucket}/versioning",
            put(buckets::set_versioning),
        )
        .route(
            "/v1/buckets/{bucket}/policy",
            get(buckets::get_policy).put(buckets::put_policy),
        )
        .route("/v1/keys", get(access_keys::list).post(access_keys::create))
        .route("/v1/keys/{key}", axum::routing::delete(access_keys::delete))
        .route("/v1/keys/{key}/buckets/{bucket}", put(access_keys::grant))
        .route("/v1/ledger/checkpoint", get(ledger::checkpoint))
        .route("/v1/ledger/public-key", get(ledger::public_key))
        .route("/v1/ledger/tile/{*path}", get(ledger::tile))
        .route("/v1/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/v1/ledger/proof/consistency", get(ledger::consistency))
        .route("/v1/ledger/prove/{bucket}/{*key}", get(ledger::prove))
        .route("/v1/list/{bucket}", get(objects::list))
        .route("/v1/versions/{bucket}", get(objects::versions))
        .route(
            "/v1/objects/{bucket}/{*key}",
            put(objects::put)
                .get(objects::get)
                .head(objects::head)
                .delete(objects::delete),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .merge(console::router())
        .layer(middleware::from_fn(console::secure_headers))
        .with_state(state)
}

//! Who is calling, and browser sessions for the web console.
//!
//! The CLI sends the admin token as a bearer token. The console trades the token, or an
//! S3 access key and its secret, for a session: an `HttpOnly`, `SameSite=Strict` cookie
//! (never a token in a URL or in JavaScript's reach) plus a CSRF token that every
//! request other than GET and HEAD must echo in `X-CSRF-Token`. Sessions live in memory
//! (a restart logs everyone out), expire after 30 minutes unused and 12 hours at most,
//! and a session of a deleted key ends with the key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use archive::{AccessKey, Permission};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AdminState;
use crate::types::ErrorBody;

/// The session cookie's name.
pub const COOKIE: &str = "edgecloud_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// And after this long in any case.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many live sessions per node (each is a few hundred bytes).
const MAX_SESSIONS: usize = 10_000;
/// A failed login answers only after this pause, so guessing is slow.
const FAILED_LOGIN_PAUSE: Duration = Duration::from_millis(500);

/// Who a request acts as.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The admin token, or an access key marked admin: everything.
    Admin,
    /// A non-admin access key: what its grants allow, nothing of the cluster.
    Key(AccessKey),
}

impl Principal {
    /// The name the ledger records as the actor of a change.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => archive::ADMIN_ACTOR.into(),
            Principal::Key(k) => k.access_key.clone(),
        }
    }

    /// What it may do in `bucket`.
    pub fn permission(&self, bucket: &str) -> Option<Permission> {
        match self {
            Principal::Admin => Some(Permission::Owner),
            Principal::Key(k) => k.permission(bucket),
        }
    }
}

/// Who a session belongs to: the admin, or an access key (looked up again on every
/// request, so a revoked key or grant takes effect at once).
#[derive(Clone)]
enum Holder {
    Admin,
    Key(String),
}

struct Session {
    holder: Holder,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_used) > IDLE || now.duration_since(self.created) > LIFETIME
    }
}

/// The node's live console sessions, by session id.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the map leaves it consistent (single inserts/removes).
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session: returns (session id, CSRF token), or None when the node has
    /// no randomness or too many sessions.
    fn start(&self, holder: Holder) -> Option<(String, String)> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let now = Instant::now();
        let mut live = self.lock();
        if live.len() >= MAX_SESSIONS {
            live.retain(|_, s| !s.expired(now));
            if live.len() >= MAX_SESSIONS {
                return None;
            }
        }
        live.insert(
            id.clone(),
            Session {
                holder,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Some((id, csrf))
    }

    /// The live session `id` (touched), as (holder, CSRF token).
    fn touch(&self, id: &str) -> Option<(Holder, String)> {
        let now = Instant::now();
        let mut live = self.lock();
        let s = live.get_mut(id)?;
        if s.expired(now) {
            live.remove(id);
            return None;
        }
        s.last_used = now;
        Some((s.holder.clone(), s.csrf.clone()))
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many sessions are live (for tests and metrics).
    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| !s.expired(now)).count()
    }
}

fn refuse(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: error.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A cross-site form or script has an Origin whose host is not ours. (SameSite=Strict
/// already keeps the cookie off such requests; this is the second lock.)
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h);
    origin_host.is_none() || origin_host != host
}

/// Works out who sends `req`: the bearer token, or a session cookie (with its CSRF
/// token on anything but reads). Err is the answer to send instead.
pub(crate) fn authenticate(state: &AdminState, req: &Request) -> Result<Principal, Response> {
    let headers = req.headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let given = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        return if constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
            Ok(Principal::Admin)
        } else {
            Err(unauthorized())
        };
    }
    let Some(id) = session_cookie(headers) else {
        return Err(unauthorized());
    };
    let Some((holder, csrf)) = state.sessions.touch(id) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "SessionExpired",
            "the session has expired or ended: log in again",
        ));
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads {
        let echoed = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !constant_time_eq(echoed, csrf.as_bytes()) || foreign_origin(headers) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "CsrfCheckFailed",
                "a change through a session needs the session's X-CSRF-Token header and a same-origin request",
            ));
        }
    }
    match holder {
        Holder::Admin => Ok(Principal::Admin),
        Holder::Key(k) => match state.archive.access_key(&k) {
            Ok(Some(key)) if key.admin => Ok(Principal::Admin),
            Ok(Some(key)) => Ok(Principal::Key(key)),
            _ => {
                state.sessions.end(id);
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "SessionExpired",
                    "the access key of this session no longer exists: log in again",
                ))
            }
        },
    }
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "missing or wrong admin token (see admin.token in the data directory), or no console session",
    )
}

/// Whether a non-admin key may make this request: object and listing routes by its
/// grant on the bucket, the published ledger and its own session; nothing else. As on
/// S3, deleting a version for good takes `owner`: a leaked `write` key cannot erase
/// what was kept.
pub(crate) fn key_may(key: &AccessKey, method: &Method, uri: &axum::http::Uri) -> bool {
    let segs: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let names_version = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.split('=').next() == Some("version"));
    let read = matches!(*method, Method::GET | Method::HEAD);
    let at_least = |bucket: &str, p: Permission| key.permission(bucket).is_some_and(|g| g >= p);
    match segs.as_slice() {
        ["v1", "session"] => true,
        ["v1", "buckets"] => read,
        ["v1", "list" | "versions", b] => read && at_least(b, Permission::Read),
        ["v1", "objects", b, _, ..] if read => at_least(b, Permission::Read),
        ["v1", "objects", b, _, ..] if *method == Method::DELETE && names_version => {
            at_least(b, Permission::Owner)
        }
        ["v1", "objects", b, _, ..] => {
            matches!(*method, Method::PUT | Method::DELETE) && at_least(b, Permission::Write)
        }
        ["v1", "ledger", "prove", b, _, ..] => read && at_least(b, Permission::Read),
        [
            "v1",
            "ledger",
            "checkpoint" | "public-key" | "tile" | "proof",
            ..,
        ] => read,
        ["v1", "buckets", b, "versioning"] => {
            *method == Method::PUT && at_least(b, Permission::Owner)
        }
        ["v1", "buckets", b, "policy"] => at_least(b, Permission::Owner),
        ["v1", "buckets", b] => *method == Method::DELETE && at_least(b, Permission::Owner),
        _ => false,
    }
}

/// Login: the admin token, or an access key and its secret.
#[derive(Deserialize)]
pub(crate) struct Login {
    token: Option<String>,
    access_key: Option<String>,
    secret: Option<String>,
}

/// A session as the console sees it.
#[derive(Serialize, Deserialize)]
pub struct SessionInfo {
    /// "admin", or the access key id.
    pub user: String,
    /// May manage the cluster, keys and every bucket.
    pub admin: bool,
    /// Echo this in `X-CSRF-Token` on every change (null for bearer-token callers).
    pub csrf: Option<String>,
    /// Seconds a session lives without use.
    pub idle_seconds: u64,
    /// A key's grants: bucket -> "read", "write" or "owner" (empty for the admin).
    #[serde(default)]
    pub grants: std::collections::BTreeMap<String, String>,
}

fn grants(k: &AccessKey) -> std::collections::BTreeMap<String, String> {
    k.buckets
        .iter()
        .map(|(b, p)| (b.clone(), p.name().to_string()))
        .collect()
}

fn cookie(id: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("edgecloud_session=; Max-Age=0"))
}

/// `POST /v1/session`: checks the credentials and sets the session cookie.
pub(crate) async fn login(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            r#"send JSON: {"token": "..."} or {"access_key": "...", "secret": "..."}"#,
        );
    };
    let (holder, user, admin, grants) = match (login.token, login.access_key, login.secret) {
        (Some(t), None, None) if constant_time_eq(t.as_bytes(), s.token.as_bytes()) => {
            (Holder::Admin, "admin".to_string(), true, Default::default())
        }
        (None, Some(ak), Some(secret)) => match s.archive.access_key(&ak) {
            Ok(Some(k)) if constant_time_eq(secret.as_bytes(), k.secret.as_bytes()) => {
                let g = if k.admin {
                    Default::default()
                } else {
                    grants(&k)
                };
                (Holder::Key(ak), k.access_key, k.admin, g)
            }
            _ => return failed_login().await,
        },
        _ => return failed_login().await,
    };
    let Some((id, csrf)) = s.sessions.start(holder) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "too many console sessions on this node: try again later",
        );
    };
    tracing::info!(%user, "console login");
    let mut resp = Json(SessionInfo {
        user,
        admin,
        csrf: Some(csrf),
        idle_seconds: IDLE.as_secs(),
        grants,
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&id, s.secure_cookies, LIFETIME.as_secs()),
    );
    resp
}

async fn failed_login() -> Response {
    tokio::time::sleep(FAILED_LOGIN_PAUSE).await;
    refuse(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "wrong admin token, or wrong access key or secret",
    )
}

/// `GET /v1/session`: who the caller is (and the CSRF token again, for a reloaded page).
pub(crate) async fn current(
    State(s): State<AdminState>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
) -> Json<SessionInfo> {
    let session = session_cookie(&headers).and_then(|id| s.sessions.touch(id));
    let user = match (&session, &who) {
        (Some((Holder::Key(k), _)), _) => k.clone(),
        (_, Principal::Key(k)) => k.access_key.clone(),
        _ => "admin".to_string(),
    };
    let (admin, grants) = match &who {
        Principal::Admin => (true, Default::default()),
        Principal::Key(k) => (false, grants(k)),
    };
    let csrf = session.map(|(_, csrf)| csrf);
    Json(SessionInfo {
        user,
        admin,
        csrf,
        idle_seconds: IDLE.as_secs(),
        grants,
    })
}

/// `DELETE /v1/session`: logs out.
pub(crate) async fn logout(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        s.sessions.end(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie("", s.secure_cookies, 0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(buckets: &[(&str, Permission)]) -> AccessKey {
        AccessKey {
            access_key: "EC1".into(),
            secret: "s".into(),
            name: "t".into(),
            created_ns: 0,
            admin: false,
            create_buckets: false,
            buckets: buckets.iter().map(|(b, p)| (b.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn a_key_may_only_what_its_grants_allow() {
        let k = key(&[("photos", Permission::Read), ("work", Permission::Write)]);
        let may = |m: Method, p: &str| key_may(&k, &m, &p.parse().unwrap());
        assert!(may(Method::GET, "/v1/list/photos"));
        assert!(may(Method::GET, "/v1/objects/photos/a/b.jpg"));
        assert!(!may(Method::PUT, "/v1/objects/photos/a"));
        assert!(may(Method::PUT, "/v1/objects/work/a"));
        assert!(may(Method::DELETE, "/v1/objects/work/a"));
        assert!(!may(Method::DELETE, "/v1/objects/work/a?version=v1"));
        assert!(!may(Method::DELETE, "/v1/objects/work/a?x=1&version=v1"));
        assert!(!may(Method::PUT, "/v1/buckets/work/versioning"));
        assert!(!may(Method::GET, "/v1/buckets/work/policy"));
        assert!(!may(Method::DELETE, "/v1/buckets/work"));
        assert!(!may(Method::GET, "/v1/list/other"));
        assert!(!may(Method::GET, "/v1/keys"));
        assert!(!may(Method::POST, "/v1/scrub"));
        assert!(!may(Method::GET, "/v1/cluster"));
        assert!(!may(Method::GET, "/v1/status"));
        assert!(may(Method::GET, "/v1/ledger/checkpoint"));
        assert!(may(Method::GET, "/v1/ledger/prove/photos/a"));
        assert!(!may(Method::GET, "/v1/ledger/prove/other/a"));
        assert!(may(Method::GET, "/v1/buckets"));
        assert!(!may(Method::PUT, "/v1/buckets/new"));
        // An encoded bucket name is not decoded here: it is refused, never widened.
        assert!(!may(Method::GET, "/v1/list/%70hotos"));
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::default();
        let (id, csrf) = s.start(Holder::Admin).unwrap();
        assert_eq!(s.touch(&id).unwrap().1, csrf);
        s.lock().get_mut(&id).unwrap().last_used = Instant::now() - IDLE - Duration::from_secs(1);
        assert!(s.touch(&id).is_none(), "an idle session expires");
        let (id, _) = s.start(Holder::Admin).unwrap();
        s.end(&id);
        assert!(s.touch(&id).is_none());
        assert!(s.touch("made-up").is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; edgecloud_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        h.insert(header::HOST, "127.0.0.1:9410".parse().unwrap());
        assert!(foreign_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9410".parse().unwrap());
        assert!(!foreign_origin(&h));
    }
}

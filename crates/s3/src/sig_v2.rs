//! SigV2 (`Authorization: AWS KEY:SIGNATURE`, and `?AWSAccessKeyId=..&Signature=..`
//! presigned URLs), which s3s checks, with one fix in front: clients sign a path-style
//! bucket request (`PUT /bucket`) over the canonical resource `/bucket/`, as S3 defines
//! it, while s3s signs the path as sent. Such requests get the slash before s3s sees them.

use axum::body::Body;
use axum::http::{Request, Response, Uri};

fn is_v2(req: &Request<Body>) -> bool {
    let header = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS "));
    let query = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("AWSAccessKeyId=") && q.contains("Signature="));
    header || query
}

/// Whether the Host names a bucket under the virtual-hosted-style domain.
fn virtual_host(req: &Request<Body>, domain: Option<&str>) -> bool {
    let (Some(d), Some(host)) = (domain, req.headers().get("host")) else {
        return false;
    };
    let host = host.to_str().unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    name.len() > d.len() + 1
        && name[name.len() - d.len()..].eq_ignore_ascii_case(d)
        && name.as_bytes()[name.len() - d.len() - 1] == b'.'
}

pub(crate) async fn middleware(
    domain: Option<String>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let path = req.uri().path();
    let one_segment = path.len() > 1 && !path[1..].contains('/');
    if one_segment && is_v2(&req) && !virtual_host(&req, domain.as_deref()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

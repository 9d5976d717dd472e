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

/// Whether the Host names a bucket under the virtual-hosted-style domain (as the
/// gateway's own host parsing reads it).
fn virtual_host(req: &Request<Body>, domain: Option<&crate::DomainHost>) -> bool {
    use s3s::host::S3Host;
    let (Some(d), Some(host)) = (domain, req.headers().get("host")) else {
        return false;
    };
    host.to_str()
        .ok()
        .and_then(|h| d.parse_host_header(h).ok())
        .is_some_and(|vh| vh.bucket().is_some())
}

pub(crate) async fn middleware(
    domain: Option<crate::DomainHost>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let path = req.uri().path();
    let one_segment = path.len() > 1 && !path[1..].contains('/');
    if one_segment && is_v2(&req) && !virtual_host(&req, domain.as_ref()) {
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

//! CORS: per-bucket rules (Put/Get/DeleteBucketCors), preflight `OPTIONS` answered
//! here, and `Access-Control-*` headers added to the answers of cross-origin requests
//! (errors included, so browsers can read them), as S3 does.

use archive::Archive;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::EdgeS3;
use crate::error::{OrS3, answer as error};

const CORS: &str = "cors";

/// One rule as stored in the bucket's settings (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rule {
    id: Option<String>,
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    expose: Vec<String>,
    max_age: Option<i32>,
}

fn rules(b: &archive::Bucket) -> Vec<Rule> {
    b.settings
        .get(CORS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// `*` wildcards, at most one per pattern as S3 allows; header names compare without case.
fn wildcard(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, suf)) => {
            s.len() >= pre.len() + suf.len() && s.starts_with(pre) && s.ends_with(suf)
        }
    }
}

/// The first rule allowing this origin, method and request headers.
fn matching<'a>(
    rules: &'a [Rule],
    origin: &str,
    method: &str,
    req_headers: &[String],
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        r.origins.iter().any(|o| wildcard(o, origin))
            && r.methods.iter().any(|m| m == method)
            && req_headers.iter().all(|h| {
                r.headers
                    .iter()
                    .any(|p| wildcard(&p.to_ascii_lowercase(), &h.to_ascii_lowercase()))
            })
    })
}

fn allow_headers(out: &mut HeaderMap, r: &Rule, origin: &str, req_headers: &[String]) {
    let origin_value = if r.origins.iter().any(|o| o == "*") {
        "*"
    } else {
        origin
    };
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.insert(name, v);
        }
    };
    put("access-control-allow-origin", origin_value.to_string());
    put("access-control-allow-methods", r.methods.join(", "));
    if !req_headers.is_empty() {
        put("access-control-allow-headers", req_headers.join(", "));
    }
    if !r.expose.is_empty() {
        put("access-control-expose-headers", r.expose.join(", "));
    }
    if let Some(a) = r.max_age {
        put("access-control-max-age", a.to_string());
    }
    out.append("vary", HeaderValue::from_static("Origin"));
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn requested_headers(h: &HeaderMap) -> Vec<String> {
    header(h, "access-control-request-headers")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Which bucket a request addresses: the host's first label under `domain`
/// (virtual-hosted style), else the first path segment.
pub(crate) fn bucket_of(
    req_headers: &HeaderMap,
    path: &str,
    domain: Option<&str>,
) -> Option<String> {
    if let (Some(d), Some(host)) = (domain, header(req_headers, "host")) {
        let host = host.split(':').next().unwrap_or(host);
        if let Some(b) = host.strip_suffix(d).and_then(|p| p.strip_suffix('.')) {
            return Some(b.to_string());
        }
    }
    let seg = path.trim_start_matches('/').split('/').next()?;
    (!seg.is_empty()).then(|| seg.to_string())
}

/// Answers preflights itself; passes everything else on and adds CORS headers to the
/// answer when the request carries an `Origin` a bucket rule allows.
pub(crate) async fn middleware(
    archive: Archive,
    domain: Option<String>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let origin = header(req.headers(), "origin").map(str::to_string);
    let bucket = bucket_of(req.headers(), req.uri().path(), domain.as_deref());
    let rules = || {
        bucket
            .as_deref()
            .and_then(|b| archive.bucket(b).ok())
            .map(|b| rules(&b))
            .unwrap_or_default()
    };
    if req.method() == Method::OPTIONS {
        let (Some(origin), Some(method)) = (
            origin,
            header(req.headers(), "access-control-request-method"),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
            );
        };
        let wanted = requested_headers(req.headers());
        let rules = rules();
        return match matching(&rules, &origin, method, &wanted) {
            Some(r) => {
                let mut resp = Response::new(Body::empty());
                allow_headers(resp.headers_mut(), r, &origin, &wanted);
                resp
            }
            None => error(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                "CORSResponse: This CORS request is not allowed.",
            ),
        };
    }
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let method = header(req.headers(), "access-control-request-method")
        .unwrap_or(req.method().as_str())
        .to_string();
    let rules = rules();
    let mut resp = next.run(req).await;
    if let Some(r) = matching(&rules, &origin, &method, &[]) {
        allow_headers(resp.headers_mut(), r, &origin, &[]);
    }
    resp
}

const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

impl EdgeS3 {
    pub(crate) async fn put_bucket_cors_op(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let i = req.input;
        let mut stored = Vec::new();
        for r in i.cors_configuration.cors_rules {
            if let Some(m) = r
                .allowed_methods
                .iter()
                .find(|m| !METHODS.contains(&m.as_str()))
            {
                return Err(s3s::s3_error!(
                    InvalidRequest,
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                ));
            }
            if r.allowed_origins
                .iter()
                .chain(r.allowed_headers.iter().flatten())
                .any(|o| o.matches('*').count() > 1)
            {
                return Err(s3s::s3_error!(
                    InvalidRequest,
                    "AllowedOrigin and AllowedHeader can have at most one * wildcard"
                ));
            }
            stored.push(Rule {
                id: r.id,
                origins: r.allowed_origins,
                methods: r.allowed_methods,
                headers: r.allowed_headers.unwrap_or_default(),
                expose: r.expose_headers.unwrap_or_default(),
                max_age: r.max_age_seconds,
            });
        }
        if stored.is_empty() || stored.len() > 100 {
            return Err(s3s::s3_error!(
                MalformedXML,
                "a CORS configuration holds 1 to 100 rules"
            ));
        }
        let json = serde_json::to_string(&stored).expect("rules serialize");
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(CORS.into(), json.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketCorsOutput {}))
    }

    pub(crate) async fn get_bucket_cors_op(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let rules = rules(&b);
        if rules.is_empty() {
            return Err(s3s::s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        let cors_rules = rules
            .into_iter()
            .map(|r| CORSRule {
                id: r.id,
                allowed_origins: r.origins,
                allowed_methods: r.methods,
                allowed_headers: (!r.headers.is_empty()).then_some(r.headers),
                expose_headers: (!r.expose.is_empty()).then_some(r.expose),
                max_age_seconds: r.max_age,
            })
            .collect();
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(cors_rules),
        }))
    }

    pub(crate) async fn delete_bucket_cors_op(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(CORS);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketCorsOutput {}))
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn one_wildcard_patterns() {
        assert!(wildcard("*suffix", "foo.suffix"));
        assert!(wildcard("start*end", "startend"));
        assert!(!wildcard("start*end", "0start12end"));
        assert!(wildcard("prefix*", "prefix"));
        assert!(!wildcard("prefix*", "bla.prefix"));
        assert!(wildcard("*", "http://anything"));
    }
}

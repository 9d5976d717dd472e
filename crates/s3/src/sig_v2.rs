//! SigV2 (`Authorization: AWS KEY:SIGNATURE`, and `?AWSAccessKeyId=..&Signature=..`
//! presigned URLs), which s3s checks, with two things in front:
//! - the request's date: s3s checks a header-signed request's signature but not its
//!   date, so a captured request could be replayed forever. As S3 does, `x-amz-date`
//!   (else `Date`) must be a valid HTTP date (AccessDenied) within 15 minutes of the
//!   server's clock (RequestTimeTooSkewed);
//! - the path: clients sign a path-style bucket request (`PUT /bucket`) over the
//!   canonical resource `/bucket/`, as S3 defines it, while s3s signs the path as sent.
//!   Such requests get the slash before s3s sees them.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, Uri};

/// How far a signed request's date may be from the server's clock, as S3 allows.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// An HTTP date (RFC 1123 with `GMT`, or RFC 2822 with a numeric zone as s3cmd sends),
/// ignoring the weekday as S3 does (a wrong weekday is a wrong request, not an invalid
/// date). Dates before 1970: None.
fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let rest = text.split_once(", ").map_or(text, |(_, r)| r);
    let gmt = time::macros::format_description!(
        "[day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let zoned = time::macros::format_description!(
        "[day] [month repr:short] [year] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    let at = match time::PrimitiveDateTime::parse(rest, gmt) {
        Ok(t) => t.assume_utc(),
        Err(_) => time::OffsetDateTime::parse(rest, zoned).ok()?,
    };
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Whether a header-signed SigV2 request's date is acceptable, at `now`; Err has the
/// S3 error code and message.
fn check_date(req: &Request<Body>, now: SystemTime) -> Result<(), (&'static str, &'static str)> {
    let headers = req.headers();
    let date = headers.get("x-amz-date").or_else(|| headers.get("date"));
    let parsed = date.and_then(|d| d.to_str().ok()).and_then(parse_date);
    let Some(at) = parsed else {
        return Err((
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    };
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err((
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
        ));
    }
    Ok(())
}

fn is_v2_header(req: &Request<Body>) -> bool {
    req.headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS "))
}

fn is_v2(req: &Request<Body>) -> bool {
    let header = is_v2_header(req);
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
    if is_v2_header(&req)
        && let Err((code, message)) = check_date(&req, SystemTime::now())
    {
        return crate::error::answer(StatusCode::FORBIDDEN, code, message);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::builder().uri("/b/k");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    fn code(r: Result<(), (&'static str, &'static str)>) -> Option<&'static str> {
        r.err().map(|(code, _)| code)
    }

    #[test]
    fn a_v2_date_must_be_valid_and_close_to_now() {
        let now = parse_date("Sun, 06 Dec 2026 22:00:00 GMT").unwrap();
        assert_eq!(parse_date("Tue, 07 Jul 1950 21:53:04 GMT"), None);
        assert_eq!(parse_date("Bad Date"), None);
        assert_eq!(
            parse_date("Sun, 06 Dec 2026 23:00:00 +0100"),
            parse_date("Sun, 06 Dec 2026 22:00:00 GMT")
        );
        let ok = with_headers(&[("date", "Sun, 06 Dec 2026 22:10:00 GMT")]);
        assert_eq!(code(check_date(&ok, now)), None);
        // x-amz-date wins over Date.
        let amz = with_headers(&[
            ("date", "Sun, 06 Dec 2026 22:00:00 GMT"),
            ("x-amz-date", "Bad Date"),
        ]);
        assert_eq!(code(check_date(&amz, now)), Some("AccessDenied"));
        for invalid in [with_headers(&[]), with_headers(&[("x-amz-date", "")])] {
            assert_eq!(code(check_date(&invalid, now)), Some("AccessDenied"));
        }
        for skewed in [
            with_headers(&[("date", "Sun, 06 Dec 2026 21:44:00 GMT")]),
            with_headers(&[("date", "Tue, 07 Jul 9999 21:53:04 GMT")]),
            // a wrong weekday is still a date: too old here
            with_headers(&[("date", "Tue, 07 Jul 2010 21:53:04 GMT")]),
        ] {
            assert_eq!(code(check_date(&skewed, now)), Some("RequestTimeTooSkewed"));
        }
    }
}

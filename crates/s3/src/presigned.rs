//! Presigned V4 URLs: how long one may live. s3s takes any `X-Amz-Expires` and answers
//! a negative one as a malformed request (400); S3 allows at most a week, and a URL
//! whose lifetime is over, or negative, is refused with 403 before anything else.

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};

/// The longest lifetime S3 gives a presigned URL: seven days.
const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;

fn check(query: &str) -> Result<(), Response<Body>> {
    let Some(expires) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "X-Amz-Expires")
        .map(|(_, v)| v)
    else {
        return Ok(());
    };
    let refuse = |message| {
        Err(crate::error::answer(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            message,
        ))
    };
    match expires.parse::<i64>() {
        Ok(s) if s > MAX_EXPIRES_SECS => {
            refuse("X-Amz-Expires must be less than a week (in seconds); that is, 604800 or less")
        }
        Ok(s) if s < 0 => refuse("Request has expired"),
        _ => Ok(()),
    }
}

pub(crate) async fn middleware(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    if let Some(q) = req.uri().query()
        && q.contains("X-Amz-Expires=")
        && let Err(refused) = check(q)
    {
        return refused;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presigned_url_lives_at_most_a_week_and_never_negatively() {
        assert!(check("X-Amz-Expires=3600&X-Amz-Signature=x").is_ok());
        assert!(check("X-Amz-Expires=604800").is_ok());
        assert!(check("X-Amz-Expires=604801").is_err());
        assert!(check("X-Amz-Expires=-7").is_err());
        assert!(check("versionId=1").is_ok());
    }
}

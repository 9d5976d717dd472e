//! Archive errors as S3 error codes.

use archive::{ArchiveError, CatalogError};
use s3s::{S3Error, S3ErrorCode};

pub(crate) fn s3_error(e: ArchiveError) -> S3Error {
    use ArchiveError as A;
    use CatalogError as C;
    let code = match &e {
        A::Catalog(C::NoSuchBucket(_)) => S3ErrorCode::NoSuchBucket,
        A::Catalog(C::NoSuchKey(_)) | A::DeleteMarker { .. } => S3ErrorCode::NoSuchKey,
        A::Catalog(C::NoSuchVersion { .. }) => S3ErrorCode::NoSuchVersion,
        A::Catalog(C::NoSuchUpload(_)) => S3ErrorCode::NoSuchUpload,
        A::Catalog(C::BucketExists(_)) => S3ErrorCode::BucketAlreadyOwnedByYou,
        A::Catalog(C::BucketNotEmpty(_)) => S3ErrorCode::BucketNotEmpty,
        A::Catalog(C::PreconditionFailed) => S3ErrorCode::PreconditionFailed,
        A::Catalog(C::InvalidPart(_)) => S3ErrorCode::InvalidPart,
        A::Catalog(C::EntityTooSmall { .. }) => S3ErrorCode::EntityTooSmall,
        A::Catalog(C::Invalid(_)) | A::Invalid(_) => S3ErrorCode::InvalidArgument,
        A::Catalog(C::Locked(_)) => S3ErrorCode::AccessDenied,
        A::Catalog(C::InvalidState(_)) => S3ErrorCode::InvalidBucketState,
        A::Catalog(C::ChunkVanished) => S3ErrorCode::SlowDown,
        // No catalog leader (a majority of voters unreachable): the client retries.
        A::Catalog(C::Unavailable(_)) => S3ErrorCode::ServiceUnavailable,
        A::InvalidName(_) => S3ErrorCode::InvalidArgument,
        A::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        A::BadDigest => S3ErrorCode::BadDigest,
        A::CustomerKey(_) => S3ErrorCode::InvalidRequest,
        A::TooManyChunks { .. } | A::ObjectTooLarge { .. } => S3ErrorCode::EntityTooLarge,
        A::Body(_) => S3ErrorCode::IncompleteBody,
        _ => S3ErrorCode::InternalError,
    };
    if code == S3ErrorCode::InternalError {
        tracing::error!(error = %e, "S3 request failed");
    }
    S3Error::with_message(code, e.to_string())
}

pub(crate) trait OrS3<T> {
    fn s3(self) -> Result<T, S3Error>;
}

impl<T> OrS3<T> for Result<T, ArchiveError> {
    fn s3(self) -> Result<T, S3Error> {
        self.map_err(s3_error)
    }
}

/// An S3 error answer made by a middleware, before s3s sees the request (CORS,
/// SigV2 dates, presigned lifetimes).
pub(crate) fn answer(
    status: axum::http::StatusCode,
    code: &str,
    message: &str,
) -> axum::http::Response<axum::body::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = axum::http::Response::new(axum::body::Body::from(xml));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/xml"),
    );
    r
}

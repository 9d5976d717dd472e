//! Archive errors as HTTP answers: a status and a JSON body that says what to do.

use archive::{ArchiveError, CatalogError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::types::ErrorBody;

/// An answer with `status` and the JSON error body every route uses.
pub(crate) fn problem(status: StatusCode, error: &str, message: String) -> Response {
    let body = ErrorBody {
        error: error.into(),
        message,
    };
    (status, axum::Json(body)).into_response()
}

/// An archive error as the admin API answers it: a status code and a JSON body.
pub struct ApiError(pub ArchiveError);

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use ArchiveError as A;
        use CatalogError as C;
        let (status, code) = match &self.0 {
            A::Catalog(C::NoSuchBucket(_)) => (StatusCode::NOT_FOUND, "NoSuchBucket"),
            A::Catalog(C::NoSuchKey(_)) | A::DeleteMarker { .. } => {
                (StatusCode::NOT_FOUND, "NoSuchKey")
            }
            A::Catalog(C::NoSuchVersion { .. }) => (StatusCode::NOT_FOUND, "NoSuchVersion"),
            A::Catalog(C::NoSuchUpload(_)) => (StatusCode::NOT_FOUND, "NoSuchUpload"),
            A::Catalog(C::BucketExists(_)) => (StatusCode::CONFLICT, "BucketAlreadyExists"),
            A::Catalog(C::BucketNotEmpty(_)) => (StatusCode::CONFLICT, "BucketNotEmpty"),
            A::Catalog(C::PreconditionFailed) => {
                (StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
            }
            A::Catalog(C::InvalidPart(_)) => (StatusCode::BAD_REQUEST, "InvalidPart"),
            A::Catalog(C::EntityTooSmall { .. }) => (StatusCode::BAD_REQUEST, "EntityTooSmall"),
            A::Catalog(C::Invalid(_))
            | A::Invalid(_)
            | A::Ledger(ledger::LedgerError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "InvalidArgument")
            }
            A::Catalog(C::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            A::Catalog(C::ChunkVanished) => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
            A::Catalog(C::Locked(_)) => (StatusCode::FORBIDDEN, "ObjectLocked"),
            A::Catalog(C::InvalidState(_)) => (StatusCode::CONFLICT, "InvalidBucketState"),
            A::InvalidName(_) => (StatusCode::BAD_REQUEST, "InvalidName"),
            A::BadDigest => (StatusCode::BAD_REQUEST, "BadDigest"),
            A::TooManyChunks { .. } | A::ObjectTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "EntityTooLarge")
            }
            A::InvalidRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
            A::Body(_) => (StatusCode::BAD_REQUEST, "IncompleteBody"),
            A::DataLoss { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "DataLoss"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self.0, "admin request failed");
        }
        problem(status, code, self.0.to_string())
    }
}

//! `ApiError`: every error the HTTP layer can answer with, mapped to a status and
//! the contract's JSON body in one place:
//! `{"error": code, "detail": text, "errors": [{"index", "field", "reason"}]}`.
//! 5xx causes are logged here with their chain; clients get a generic message.
//! Each response carries its code as an [`ErrorCode`] extension, which the HTTP
//! guard counts (`requests_rejected{reason}` uses the same codes as the body).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ack::FailReason;
use crate::decode::{ContentError, DecodeError};
use crate::event::{FieldError, FieldErrorKind};
use crate::ingest::IngestError;
use crate::store::ReadError;

/// Seconds a client should wait before retrying a 503 or 429.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid query parameter: {0}")]
    Query(String),
    #[error("{0}")]
    Unavailable(FailReason),
    #[error("too many concurrent requests")]
    TooManyRequests,
    #[error("missing or wrong bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("request timed out")]
    Timeout,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("storage error: {0}")]
    Store(#[from] ReadError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Unavailable(reason) => ApiError::Unavailable(reason),
            IngestError::Store(e) => ApiError::Store(e),
            IngestError::Join(e) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Error body of every 4xx and 5xx.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// Machine-readable code, e.g. `validation_failed`.
    pub error: &'static str,
    pub detail: String,
    /// Every bad event and field (422/413), or the bad NDJSON line (400).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<ErrorItem<'a>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorItem<'a> {
    /// Position of the event in the request (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub index: Option<usize>,
    pub field: &'a str,
    pub reason: &'a str,
}

/// The `error` code of a response, for the guard's count of refused requests.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ContentError as C;
        use DecodeError as D;
        match self {
            ApiError::Content(C::Corrupt(_) | C::Unreadable(_))
            | ApiError::Decode(D::Malformed(_) | D::MalformedLine { .. }) => {
                (StatusCode::BAD_REQUEST, "malformed_body")
            }
            ApiError::Decode(D::NotEvents) => (StatusCode::UNPROCESSABLE_ENTITY, "not_events"),
            ApiError::Decode(D::Invalid(errs)) if errs.iter().any(|e| e.kind == FieldErrorKind::TooLarge) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::Decode(D::Invalid(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Content(C::BodyTooLarge { .. }) | ApiError::Decode(D::BatchTooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::Content(C::UnsupportedType(_) | C::UnsupportedEncoding(_)) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Query(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"),
            ApiError::Unavailable(_) | ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Store(_) => "storage is unavailable; nothing was stored, retry later".into(),
            ApiError::Internal(_) => "internal error; nothing was stored".into(),
            // A failed commit may yet turn out stored (see `writer::recovery`); a retry is
            // safe either way, and finds such events as duplicates.
            ApiError::Unavailable(reason) => format!("{reason}; nothing was acknowledged, retrying is safe"),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let field_errors: &[FieldError] = match &self {
            ApiError::Decode(DecodeError::Invalid(errs)) => errs,
            _ => &[],
        };
        let mut errors: Vec<ErrorItem<'_>> = field_errors
            .iter()
            .map(|e| ErrorItem { index: Some(e.index), field: e.field, reason: &e.reason })
            .collect();
        if let ApiError::Decode(DecodeError::MalformedLine { reason, .. }) = &self {
            errors.push(ErrorItem { index: None, field: "body", reason });
        }
        let body = ErrorBody { error, detail: self.detail(), errors };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(error));
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

//! `ApiError`: every error the HTTP layer can answer with, mapped to a status and
//! the contract's JSON body in one place:
//! `{"error": code, "detail": text, "errors": [{"index", "field", "reason"}]}`.
//! 5xx causes are logged here with their chain; clients get a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ack::FailReason;
use crate::decode::DecodeError;
use crate::event::{FieldError, FieldErrorKind};
use crate::ingest::IngestError;
use crate::store::StoreError;

/// Seconds a client should wait before retrying a 503 or 429.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid query parameter: {0}")]
    Query(String),
    #[error("{0}")]
    Unavailable(FailReason),
    #[error("too many concurrent requests")]
    TooManyRequests,
    #[error("request timed out")]
    Timeout,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
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

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ErrorItem<'a>],
}

#[derive(Serialize)]
struct ErrorItem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    field: &'a str,
    reason: &'a str,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use DecodeError as D;
        match self {
            ApiError::Decode(D::Malformed(_) | D::MalformedLine { .. } | D::Corrupt(_)) => {
                (StatusCode::BAD_REQUEST, "malformed_body")
            }
            ApiError::Decode(D::NotEvents) => (StatusCode::UNPROCESSABLE_ENTITY, "not_events"),
            ApiError::Decode(D::Invalid(errs)) if errs.iter().any(|e| e.kind == FieldErrorKind::TooLarge) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::Decode(D::Invalid(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Decode(D::BodyTooLarge { .. } | D::BatchTooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::Decode(D::UnsupportedType(_) | D::UnsupportedEncoding(_)) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Query(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"),
            ApiError::Unavailable(_) | ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Store(_) => "storage is unavailable; nothing was stored, retry later".into(),
            ApiError::Internal(_) => "internal error; nothing was stored".into(),
            ApiError::Unavailable(reason) => format!("{reason}; nothing was stored, retry later"),
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
        let mut items: Vec<ErrorItem<'_>> = field_errors
            .iter()
            .map(|e| ErrorItem { index: Some(e.index), field: e.field, reason: &e.reason })
            .collect();
        if let ApiError::Decode(DecodeError::MalformedLine { reason, .. }) = &self {
            items.push(ErrorItem { index: None, field: "body", reason });
        }
        let body = Body { error, detail: self.detail(), errors: &items };
        let mut response = (status, Json(body)).into_response();
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

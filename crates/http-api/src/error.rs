//! The error body of the contract, `{"error": {"code", "message", "details", "trace_id"}}`, and
//! the conversion of axum's own rejections into ordo's error model. The status comes from the
//! error kind (ordo_domain::error), never from here.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ordo_domain::error::FieldViolation;
use ordo_domain::{Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// An ordo error on its way out of an HTTP handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The error kind: one code per kind (`ordo_domain::ErrorKind`), each with one status.
    #[schema(schema_with = ordo_service::api::schema::error_code)]
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldViolationDto>,
    /// The trace this request belongs to (32 hex digits).
    pub trace_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldViolationDto {
    pub field: String,
    pub description: String,
}

impl From<FieldViolation> for FieldViolationDto {
    fn from(v: FieldViolation) -> Self {
        FieldViolationDto {
            field: v.field,
            description: v.description,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Error {
            kind,
            message,
            details,
        } = self.0;
        let status =
            StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if kind.is_server_fault() {
            tracing::error!(error.kind = kind.code(), error.message = %message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: kind.code(),
                message,
                details: details.into_iter().map(Into::into).collect(),
                trace_id: ordo_telemetry::propagation::current_ids().map(|ids| ids.trace_id),
            },
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(kind);
        response
    }
}

/// Maps a rejection's status to the kind that answers with that status.
fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType,
        s if s.is_server_error() => ErrorKind::Internal,
        _ => ErrorKind::InvalidArgument,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let kind = kind_for_status(rejection.status());
        let message = match kind {
            ErrorKind::PayloadTooLarge => "the request body is too large".to_owned(),
            ErrorKind::UnsupportedMediaType => {
                "the request body must be JSON (Content-Type: application/json)".to_owned()
            }
            // serde's message names the field and the problem, never the whole body.
            _ => rejection.body_text(),
        };
        ApiError(Error::new(kind, message))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError(Error::new(
            ErrorKind::InvalidArgument,
            rejection.body_text(),
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError(Error::new(
            kind_for_status(rejection.status()),
            rejection.body_text(),
        ))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let kind = kind_for_status(rejection.status());
        let message = match kind {
            ErrorKind::PayloadTooLarge => "the request body is too large".to_owned(),
            _ => rejection.body_text(),
        };
        ApiError(Error::new(kind, message))
    }
}

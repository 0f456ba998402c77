//! The one error model of ordo.
//!
//! Every failure that can reach a caller is an [`Error`] with one [`ErrorKind`]. The kind decides,
//! in this file and nowhere else, the HTTP status, the gRPC code, the stable `code` string of the
//! error body and the metric label. Adapters convert their own failures into an `Error` once, at
//! their edge, and never choose a status themselves.

use std::fmt;

/// The small, documented set of error kinds. Adding one is an API change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or a value is out of its allowed range.
    InvalidArgument,
    /// The named resource does not exist.
    NotFound,
    /// Not enough available stock to reserve every item of the order.
    InsufficientStock,
    /// The request conflicts with the current state (an idempotency key reused with another
    /// body, an illegal status transition, stock below what is reserved).
    Conflict,
    /// No or invalid credentials.
    Unauthenticated,
    /// Valid credentials without the right to do this.
    PermissionDenied,
    /// The caller exceeded its rate limit.
    RateLimited,
    /// The request body is larger than the service accepts.
    PayloadTooLarge,
    /// The request body is not in a media type the endpoint accepts.
    UnsupportedMediaType,
    /// The path exists but not for this method.
    MethodNotAllowed,
    /// A dependency (database, broker, cache) cannot be reached now; retrying later may work.
    Unavailable,
    /// The request's deadline passed before the work finished.
    DeadlineExceeded,
    /// A bug or an invariant violation inside ordo.
    Internal,
}

impl ErrorKind {
    /// Every kind, for documentation and exhaustive tests.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::InsufficientStock,
        ErrorKind::Conflict,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::RateLimited,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Unavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Internal,
    ];

    /// The stable `code` of the error body; also the `error_kind` metric label.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InsufficientStock => "insufficient_stock",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status code this kind is answered with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::InsufficientStock => 409,
            ErrorKind::Conflict => 409,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::RateLimited => 429,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Unavailable => 503,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// The gRPC status code (numeric, per `google.rpc.Code`) this kind is answered with.
    pub const fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => 3,      // INVALID_ARGUMENT
            ErrorKind::NotFound => 5,             // NOT_FOUND
            ErrorKind::InsufficientStock => 9,    // FAILED_PRECONDITION
            ErrorKind::Conflict => 10,            // ABORTED
            ErrorKind::Unauthenticated => 16,     // UNAUTHENTICATED
            ErrorKind::PermissionDenied => 7,     // PERMISSION_DENIED
            ErrorKind::RateLimited => 8,          // RESOURCE_EXHAUSTED
            ErrorKind::PayloadTooLarge => 8,      // RESOURCE_EXHAUSTED
            ErrorKind::UnsupportedMediaType => 3, // INVALID_ARGUMENT
            ErrorKind::MethodNotAllowed => 12,    // UNIMPLEMENTED
            ErrorKind::Unavailable => 14,         // UNAVAILABLE
            ErrorKind::DeadlineExceeded => 4,     // DEADLINE_EXCEEDED
            ErrorKind::Internal => 13,            // INTERNAL
        }
    }

    /// Whether a span that ends with this error is marked as failed. Per the OpenTelemetry HTTP
    /// conventions only server faults are span errors; a caller's mistake is not.
    pub const fn is_server_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded | ErrorKind::Internal
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One violated rule on one field of a request, reported in the error body's `details`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// An error with its kind, a message safe to show to the caller, and optional details.
///
/// The message never contains personal data: it names fields and rules, not the values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub details: Vec<FieldViolation>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// An invalid field: the message names the field, a detail carries the rule it broke.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        Error {
            kind: ErrorKind::InvalidArgument,
            message: format!("invalid `{field}`: {description}"),
            details: vec![FieldViolation { field, description }],
        }
    }

    /// An error of another kind than `invalid_argument` about one field of a request that is
    /// valid in itself but not against the current state (an order naming a product that does
    /// not exist is `not_found`): the message names the field, a detail carries the reason.
    pub fn on_field(
        kind: ErrorKind,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let field = field.into();
        let description = description.into();
        Error {
            kind,
            message: format!("`{field}` {description}"),
            details: vec![FieldViolation { field, description }],
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, format!("{} not found", what.into()))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Prefixes the field of every violation with `prefix.` (for nested request objects).
    pub fn in_field(mut self, prefix: &str) -> Self {
        for violation in &mut self.details {
            violation.field = format!("{prefix}.{}", violation.field);
        }
        if let [only] = self.details.as_slice() {
            self.message = format!("invalid `{}`: {}", only.field, only.description);
        }
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_kind_has_a_distinct_code() {
        let codes: HashSet<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn only_server_faults_map_to_5xx() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.http_status() >= 500, kind.is_server_fault(), "{kind}");
        }
    }

    #[test]
    fn nested_field_violations_carry_their_path() {
        let error = Error::invalid_field("city", "must not be empty").in_field("shipping_address");
        assert_eq!(error.details[0].field, "shipping_address.city");
        assert!(error.message.contains("shipping_address.city"));
    }
}

//! An [`ordo_domain::Error`] as a gRPC status: the code its kind decides
//! ([`ErrorKind::grpc_code`], nowhere else), the message, and the details a client can read
//! without our protos — `google.rpc.ErrorInfo` (reason: the REST `code` upper-cased, domain
//! `ordo`) and `google.rpc.BadRequest` field violations — plus the metadata `ordo-error-code`
//! (the REST `code`) for clients that only read metadata (gRPC-Web in a browser).

use ordo_domain::{Error, ErrorKind};
use std::collections::HashMap;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

/// Metadata key carrying the error's `code` of the one error model.
pub const ERROR_CODE_KEY: &str = "ordo-error-code";

/// The gRPC status of `error`. Server faults are logged here, once, like the REST side does.
pub fn status_of(error: Error) -> tonic::Status {
    let Error {
        kind,
        message,
        details,
    } = error;
    if kind.is_server_fault() {
        tracing::error!(error.kind = kind.code(), error.message = %message, "call failed");
    }
    let mut rich = ErrorDetails::new();
    rich.set_error_info(
        kind.code().to_ascii_uppercase(),
        "ordo",
        HashMap::<String, String>::new(),
    );
    for violation in details {
        rich.add_bad_request_violation(violation.field, violation.description);
    }
    let mut metadata = MetadataMap::new();
    metadata.insert(ERROR_CODE_KEY, MetadataValue::from_static(kind.code()));
    tonic::Status::with_error_details_and_metadata(code_of(kind), message, rich, metadata)
}

pub fn code_of(kind: ErrorKind) -> tonic::Code {
    tonic::Code::from_i32(kind.grpc_code())
}

/// The kind of a gRPC code a peer answered (for a call made by ordo to another ordo role).
/// Codes outside the error model count as `internal`.
pub fn kind_of(code: tonic::Code) -> ErrorKind {
    ErrorKind::ALL
        .into_iter()
        .find(|kind| code_of(*kind) == code)
        .unwrap_or(ErrorKind::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_domain::error::FieldViolation;

    #[test]
    fn insufficient_stock_is_failed_precondition_with_its_code() {
        let status = status_of(Error::new(ErrorKind::InsufficientStock, "not enough TEA"));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "not enough TEA");
        assert_eq!(
            status.metadata().get(ERROR_CODE_KEY).unwrap(),
            "insufficient_stock"
        );
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "INSUFFICIENT_STOCK");
    }

    #[test]
    fn field_violations_become_bad_request_details() {
        let mut error = Error::invalid_field("items", "must not be empty");
        error.details.push(FieldViolation {
            field: "currency".into(),
            description: "unknown".into(),
        });
        let status = status_of(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].field, "items");
    }

    #[test]
    fn every_kind_maps_to_a_code_and_back_to_a_kind_with_that_code() {
        for kind in ErrorKind::ALL {
            let code = code_of(kind);
            assert_ne!(code, tonic::Code::Ok, "{kind}");
            assert_eq!(code_of(kind_of(code)), code, "{kind}");
        }
    }
}

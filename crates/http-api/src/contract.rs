//! What the OpenAPI document says that no single handler decides: the statuses every operation
//! can answer because of the layers and extractors it passes (bad input, API keys, rate limits,
//! load shedding, body limits, content types, time-outs, server faults), each with the error
//! body; the API-key security schemes; the `traceparent` header of every response.
//!
//! Each rule here mirrors a piece of code, named beside it; `tests` in `lib.rs` hold the
//! document to them.

use crate::middleware::{CALLBACKS_ROUTE, OPEN_ROUTES};
use ordo_domain::ErrorKind;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, SecurityRequirement};

/// The security schemes of `ordo_edge::auth::ApiKeys`.
pub(crate) const API_KEY_SCHEME: &str = "api_key";
pub(crate) const BEARER_SCHEME: &str = "bearer";

/// The W3C `traceparent` every response carries (the edge, `ordo_edge::call::Call::stamp`).
const TRACEPARENT_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// The shared error responses: (component name, the kind whose status it is, description).
/// Operations reference them as `#/components/responses/<name>`.
const SHARED_ERRORS: &[(&str, ErrorKind, &str)] = &[
    (
        "BadRequest",
        ErrorKind::InvalidArgument,
        "`invalid_argument`: malformed JSON, a wrong type, an unknown field, a value out of its \
         range or pattern, in the body, the path, the query or a header; `details` names the \
         field. Nothing was written.",
    ),
    (
        "Unauthenticated",
        ErrorKind::Unauthenticated,
        "`unauthenticated`: API keys are enforced (`ORDO_API_KEYS`) and the request carries no \
         valid one (`x-api-key` or `authorization: Bearer`).",
    ),
    (
        "PayloadTooLarge",
        ErrorKind::PayloadTooLarge,
        "`payload_too_large`: the body is larger than the service accepts.",
    ),
    (
        "UnsupportedMediaType",
        ErrorKind::UnsupportedMediaType,
        "`unsupported_media_type`: a body that is not `application/json`.",
    ),
    (
        "RateLimited",
        ErrorKind::RateLimited,
        "`rate_limited`: the caller is over its rate limit (`ORDO_RATE_LIMIT_PER_SECOND`); \
         `Retry-After` says when to come back.",
    ),
    (
        "Internal",
        ErrorKind::Internal,
        "`internal`: a fault of the service (the process keeps serving).",
    ),
    (
        "Unavailable",
        ErrorKind::Unavailable,
        "`unavailable`: the request was shed under load (with `Retry-After`), or a dependency \
         (the database) cannot be reached now; retrying later may work.",
    ),
    (
        "DeadlineExceeded",
        ErrorKind::DeadlineExceeded,
        "`deadline_exceeded`: the request took longer than the service's time-out.",
    ),
];

/// Completes `doc`: shared error responses, security, `traceparent`, descriptions.
pub(crate) fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for &(name, kind, description) in SHARED_ERRORS {
        components
            .responses
            .insert(name.to_owned(), RefOr::T(error_response(kind, description)));
    }
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "One of `ORDO_API_KEYS`. Without keys configured (the dev profile) the API is open.",
        ))),
    );
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "One of `ORDO_API_KEYS`, as `authorization: Bearer <key>`.",
                ))
                .build(),
        ),
    );
    // Either scheme admits a request.
    doc.security = Some(vec![
        SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
    ]);

    for (path, item) in doc.paths.paths.iter_mut() {
        let open = OPEN_ROUTES.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            complete_operation(operation, path, open);
        }
    }
}

/// The statuses `operation` on `path` can answer beyond its own, in the order a request meets
/// the code that answers them.
fn complete_operation(operation: &mut Operation, path: &str, open: bool) {
    let mut shared: Vec<(ErrorKind, &str)> = Vec::new();
    if open {
        // `middleware::OPEN_ROUTES`: no API key; callbacks authenticate by their signature.
        operation.security = Some(Vec::new());
    } else {
        // The edge (`ordo_edge::admit`): the API key, then admission (the rate limit).
        shared.push((ErrorKind::Unauthenticated, "Unauthenticated"));
        shared.push((ErrorKind::RateLimited, "RateLimited"));
    }
    // Every operation takes a path parameter, a query or a body that the service parses
    // (`extract`, `ordo_domain`): every one can refuse bad input.
    shared.push((ErrorKind::InvalidArgument, "BadRequest"));
    if operation.request_body.is_some() {
        // The body limit (`DefaultBodyLimit`) applies to every body read.
        shared.push((ErrorKind::PayloadTooLarge, "PayloadTooLarge"));
        // `extract::Json` and `extract::OptionalJson` refuse other media types; the signed
        // callbacks read their raw bytes (`extract::RawBody`), whatever the type says.
        if path != CALLBACKS_ROUTE {
            shared.push((ErrorKind::UnsupportedMediaType, "UnsupportedMediaType"));
        }
    }
    // Panics and bugs (`middleware::panic_response`), load shedding and an unreachable
    // database (callbacks are never shed, but need the database), the request deadline.
    shared.push((ErrorKind::Internal, "Internal"));
    shared.push((ErrorKind::Unavailable, "Unavailable"));
    shared.push((ErrorKind::DeadlineExceeded, "DeadlineExceeded"));

    let responses = &mut operation.responses.responses;
    for (kind, component) in shared {
        responses
            .entry(kind.http_status().to_string())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{component}"))));
    }
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response {
            if response.description.is_empty() {
                response.description = default_description(status);
            }
            response
                .headers
                .entry("traceparent".to_owned())
                .or_insert_with(|| RefOr::T(traceparent_header()));
        }
    }
}

/// An error response of `kind`: the error body, `traceparent`, and `Retry-After` where
/// admission sets it.
fn error_response(kind: ErrorKind, description: &str) -> Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .header("traceparent", traceparent_header());
    if matches!(kind, ErrorKind::RateLimited | ErrorKind::Unavailable) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some(
                    "Whole seconds to wait before retrying (set when admission refused the \
                     request)",
                ))
                .build(),
        );
    }
    response.build()
}

fn traceparent_header() -> Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(TRACEPARENT_PATTERN)),
        ))
        .description(Some(
            "The W3C trace context of the trace this response belongs to",
        ))
        .build()
}

/// A description for a response its attribute left without one (OpenAPI requires it).
fn default_description(status: &str) -> String {
    match status {
        "200" => "OK".to_owned(),
        "201" => "Created".to_owned(),
        other => {
            let kind = ErrorKind::ALL
                .into_iter()
                .find(|kind| kind.http_status().to_string() == other);
            kind.map_or_else(
                || format!("HTTP {other}"),
                |kind| format!("`{}`", kind.code()),
            )
        }
    }
}

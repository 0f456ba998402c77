//! The cross-cutting layer every request goes through: the SERVER span (a child of a valid
//! incoming `traceparent`), the request deadline, the error body for statuses axum produces
//! itself (405), and the `traceparent` response header.

use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName};
use ordo_domain::{Error, ErrorKind};
use ordo_telemetry::propagation;
use std::time::Duration;
use tracing::{Instrument, field};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

pub(crate) async fn serve_request(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let span_name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %span_name,
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = field::Empty,
        url.path = %request.uri().path(),
        http.response.status_code = field::Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    propagation::adopt_http_parent(&span, request.headers());

    let mut response = async move {
        let response = match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("the request took longer than {} ms", timeout.as_millis()),
            ))
            .into_response(),
        };
        // axum answers a wrong method itself, with an empty body; give it the contract's body.
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && !response.headers().contains_key(CONTENT_TYPE)
        {
            let allow = response.headers().get(http::header::ALLOW).cloned();
            let mut replaced = ApiError(Error::new(
                ErrorKind::MethodNotAllowed,
                "this path does not accept this method",
            ))
            .into_response();
            if let Some(allow) = allow {
                replaced.headers_mut().insert(http::header::ALLOW, allow);
            }
            return replaced;
        }
        response
    }
    .instrument(span.clone())
    .await;

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(traceparent) = propagation::traceparent_of(&span) {
        response
            .headers_mut()
            .insert(TRACEPARENT.clone(), traceparent);
    }
    response
}

/// A panic in a handler becomes a 500 with the error body; the process keeps serving.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    tracing::error!(panic.message = %message, "a request handler panicked");
    ApiError(Error::internal("internal error")).into_response()
}

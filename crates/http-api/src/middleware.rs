//! The cross-cutting layer every request goes through: the SERVER span (a child of a valid
//! incoming `traceparent`), API keys, admission (load shedding and the caller's rate limit,
//! decided by `ordo_admission`; a refusal carries `Retry-After`), the request deadline, the
//! error body for statuses axum produces itself (405), the `traceparent` response header, and
//! the request's telemetry: the duration histogram (with the trace as exemplar),
//! `errors_total` and one access log line.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, RETRY_AFTER};
use ordo_admission::{Admission, Caller, Rejection};
use ordo_domain::{Error, ErrorKind};
use ordo_service::auth::ApiKeys;
use ordo_telemetry::metrics::{self, HttpLabels, TraceExemplar, labels};
use ordo_telemetry::{conventions, propagation};
use std::time::{Duration, Instant};
use tracing::{Instrument, field};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Routes served without an API key: payment callbacks authenticate by their signature, and
/// the API's description is public.
pub(crate) const OPEN_ROUTES: [&str; 2] = [CALLBACKS_ROUTE, "/openapi.json"];
/// Never shed nor limited: a provider's callback refused would be retried later at best, and a
/// payment's outcome must not wait on our load.
pub(crate) const CALLBACKS_ROUTE: &str = "/v1/payments/callbacks/{provider}";

/// The middleware's settings.
#[derive(Clone)]
pub(crate) struct Edge {
    pub timeout: Duration,
    pub api_keys: ApiKeys,
    pub admission: Admission,
}

pub(crate) async fn serve_request(
    State(edge): State<Edge>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = edge.timeout;
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let span_name = match &route {
        Some(route) => format!("{method} {}", route.as_str()),
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
        // The API is served in plain HTTP (TLS ends in front of ordo).
        url.scheme = "http",
        network.protocol.version = conventions::http_protocol_version(request.version()),
        http.response.status_code = field::Empty,
        error.type = field::Empty,
        // Filled in by a read that needs no span of its own (`Service::order`).
        order.id = field::Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    propagation::adopt_http_parent(&span, request.headers());

    let open = route
        .as_ref()
        .is_some_and(|r| OPEN_ROUTES.contains(&r.as_str()));
    let authorized = open || edge.api_keys.admits(request.headers());
    let admitted = route.as_ref().is_none_or(|r| r.as_str() != CALLBACKS_ROUTE);

    let mut response = async move {
        if !authorized {
            return ApiError(Error::new(
                ErrorKind::Unauthenticated,
                "a valid API key is required (x-api-key or authorization: Bearer)",
            ))
            .into_response();
        }
        let ticket = match admitted {
            true => {
                let caller = match edge.api_keys.caller_key(request.headers()) {
                    Some(key) => Caller::ApiKey(key),
                    None => request
                        .extensions()
                        .get::<ConnectInfo<std::net::SocketAddr>>()
                        .map_or(Caller::Unknown, |peer| Caller::Address(peer.0.ip())),
                };
                match edge.admission.admit(caller).await {
                    Ok(ticket) => Some(ticket),
                    Err(rejection) => return refused(rejection),
                }
            }
            false => None,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let handled = ordo_service::deadline::within(deadline, next.run(request));
        let response = match tokio::time::timeout_at(deadline, handled).await {
            Ok(response) => response,
            Err(_) => ApiError(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("the request took longer than {} ms", timeout.as_millis()),
            ))
            .into_response(),
        };
        if let Some(ticket) = ticket {
            ticket.finish(!response.status().is_server_error());
        }
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
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
        // The conventions' `error.type` of a failed HTTP call: its status code, as text.
        span.record("error.type", status.as_str());
    }
    let mut exemplar = None;
    if let Some(traceparent) = propagation::traceparent_of(&span) {
        exemplar = TraceExemplar::from_sampled_traceparent(traceparent.as_bytes());
        response
            .headers_mut()
            .insert(TRACEPARENT.clone(), traceparent);
    }

    if let Some(kind) = response.extensions().get::<ErrorKind>() {
        metrics::count_error(kind.code());
    }
    let labels = HttpLabels::new(
        &method,
        route.as_ref().map(MatchedPath::as_str),
        status.as_u16(),
    );
    let seconds = started.elapsed().as_secs_f64();
    metrics::observe_http(labels, seconds, exemplar);
    // Inside the span, so the line carries its trace_id and span_id.
    span.in_scope(|| {
        tracing::info!(
            target: "ordo::access",
            {
                { labels::METHOD } = labels.method,
                { labels::ROUTE } = labels.route,
                { labels::STATUS_CODE } = labels.status_code,
                duration_seconds = seconds,
            },
            "request"
        )
    });
    response
}

/// A request admission turned away: the error body of its kind, and when to come back.
fn refused(rejection: Rejection) -> Response {
    let mut response = ApiError(rejection.error()).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, rejection.retry_after_secs().into());
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
    metrics::count_panic();
    ApiError(Error::internal("internal error")).into_response()
}

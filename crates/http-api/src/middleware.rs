//! REST's side of the edge (`ordo_edge`): every request passes [`ordo_edge::EdgeLayer`] over
//! [`Http`], which tells the edge what only HTTP knows — the matched route (span name,
//! exemptions, labels), the client's address, the error body, that a 5xx is a server fault —
//! and gives the status axum produces itself (405) the contract's error body.
//!
//! A tower layer rather than axum's `from_fn_with_state`: the same layer as gRPC's, and fewer
//! allocations per request (see `ordo_edge::layer`).

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Extensions, Method, Request, StatusCode};
use ordo_domain::{Error, ErrorKind};
use ordo_edge::{Call, Exemptions, Labels, Opened, Outcome, Transport};
use ordo_telemetry::metrics::{self, HttpLabels};
use std::net::{IpAddr, SocketAddr};

/// Routes served without an API key: payment callbacks authenticate by their signature, and
/// the API's description is public.
pub(crate) const OPEN_ROUTES: [&str; 2] = [CALLBACKS_ROUTE, "/openapi.json"];
/// Never shed nor limited: a provider's callback refused would be retried later at best, and a
/// payment's outcome must not wait on our load.
pub(crate) const CALLBACKS_ROUTE: &str = "/v1/payments/callbacks/{provider}";

const EXEMPTIONS: Exemptions = Exemptions {
    keyless: &OPEN_ROUTES,
    unlimited: &[CALLBACKS_ROUTE],
};

/// HTTP, as the edge sees it.
pub(crate) struct Http;

/// A request being served: its labels, known from its head, and the edge's call.
pub(crate) struct HttpCall {
    call: Call,
    method: Method,
    route: Option<MatchedPath>,
}

impl Transport for Http {
    const NOUN: &'static str = "request";
    type Call = HttpCall;
    type Body = Body;

    fn open<B>(&self, request: &Request<B>) -> Opened<HttpCall> {
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let template = route.as_ref().map(MatchedPath::as_str);
        let call = Call::http(
            &method,
            template,
            request.uri().path(),
            request.version(),
            request.headers(),
        );
        Opened {
            exempt: EXEMPTIONS.of(template),
            asked: None,
            call: HttpCall {
                call,
                method,
                route,
            },
        }
    }

    fn span(call: &HttpCall) -> &tracing::Span {
        call.call.span()
    }

    fn peer(extensions: &Extensions) -> Option<IpAddr> {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|peer| peer.0.ip())
    }

    fn render(error: Error) -> Response {
        ApiError(error).into_response()
    }

    fn answered<B>(response: http::Response<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
        // axum answers a wrong method itself, with an empty body; give it the contract's body.
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && !response.headers().contains_key(CONTENT_TYPE)
        {
            let mut replaced = ApiError(Error::new(
                ErrorKind::MethodNotAllowed,
                "this path does not accept this method",
            ))
            .into_response();
            if let Some(allow) = response.headers().get(ALLOW) {
                replaced.headers_mut().insert(ALLOW, allow.clone());
            }
            return replaced;
        }
        response.map(Body::new)
    }

    fn served(response: &Response) -> bool {
        !response.status().is_server_error()
    }

    fn close(call: HttpCall, mut response: Response) -> Response {
        let HttpCall {
            mut call,
            method,
            route,
        } = call;
        call.stamp(response.headers_mut());
        let status = response.status();
        call.finish(Outcome {
            labels: Labels::Http(HttpLabels::new(
                &method,
                route.as_ref().map(MatchedPath::as_str),
                status.as_u16(),
            )),
            // The conventions' `error.type` of a failed HTTP call: its status code, as text.
            failure: status.is_server_error().then(|| status.as_str()),
            kind: response.extensions().get::<ErrorKind>().copied(),
        });
        response
    }
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

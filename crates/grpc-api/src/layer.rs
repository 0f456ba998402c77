//! The tower layer every gRPC call passes (health, reflection and gRPC-Web calls included):
//! the SERVER span (a child of a valid incoming `traceparent` in the metadata, through the
//! propagation module), API-key authentication, admission (load shedding → UNAVAILABLE, the
//! caller's rate limit → RESOURCE_EXHAUSTED, both with `retry-after` in seconds; health and
//! payment callbacks are exempt), the deadline (`grpc-timeout`, capped by the
//! request timeout), the `traceparent` response metadata, and the call's telemetry when its
//! status is known — from the trailers, at the end of the response body: the span's
//! `rpc.grpc.status_code`, `rpc_server_duration_seconds` by service, method and code (with the
//! trace as exemplar), `errors_total` by error kind and one access log line.
//!
//! Invariant: a call's span and metric end exactly once — at its trailers, at a trailers-only
//! answer, or (a client that went away mid-stream) when the body is dropped, as CANCELLED.

use crate::error::{ERROR_CODE_KEY, status_of};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use ordo_admission::{Admission, Caller, Rejection};
use ordo_domain::{Error, ErrorKind};
use ordo_service::auth::ApiKeys;
use ordo_telemetry::metrics::{self, OTHER_RPC, RpcLabels, TraceExemplar, labels};
use ordo_telemetry::{conventions, propagation};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::{Instrument, field};

/// Paths served without an API key: probes must work without credentials.
const OPEN_PATHS: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];
/// Never shed nor limited: probes, and payment callbacks (a provider's retry is no substitute).
const UNLIMITED_PATHS: [&str; 3] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/ordo.v1.PaymentsService/PaymentCallback",
];
/// Kept from the caller's deadline to answer DEADLINE_EXCEEDED before the caller gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// See the module documentation.
#[derive(Clone)]
pub struct GrpcServerLayer {
    shared: Arc<Shared>,
}

struct Shared {
    keys: ApiKeys,
    request_timeout: Duration,
    admission: Admission,
    /// `/package.Service/Method` → (service, method): the label values, bounded to the methods
    /// served; any other path is `_OTHER`.
    methods: HashMap<String, (&'static str, &'static str)>,
}

impl GrpcServerLayer {
    /// `methods`: the full names (`package.Service/Method`) of every method served.
    pub fn new<'a>(
        keys: ApiKeys,
        request_timeout: Duration,
        admission: Admission,
        methods: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let methods = methods
            .into_iter()
            .filter_map(|full| {
                let (service, method) = full.split_once('/')?;
                let service: &'static str = Box::leak(service.to_owned().into_boxed_str());
                let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
                Some((format!("/{full}"), (service, method)))
            })
            .collect();
        GrpcServerLayer {
            shared: Arc::new(Shared {
                keys,
                request_timeout,
                admission,
                methods,
            }),
        }
    }
}

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServer {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct GrpcServer<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for GrpcServer<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let path = request.uri().path();
        let (service, method) = shared
            .methods
            .get(path)
            .copied()
            .unwrap_or((OTHER_RPC, OTHER_RPC));
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = %if service == OTHER_RPC { "grpc" } else { path.trim_start_matches('/') },
            otel.kind = "server",
            otel.status_code = field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = field::Empty,
            error.type = field::Empty,
            // Filled in by a read that needs no span of its own (`Service::order`).
            order.id = field::Empty,
        );
        propagation::adopt_http_parent(&span, request.headers());
        let call = CallEnd {
            span: span.clone(),
            started: Instant::now(),
            service,
            method,
            finished: false,
        };
        let authorized = OPEN_PATHS.contains(&path) || shared.keys.admits(request.headers());
        let admitted = !UNLIMITED_PATHS.contains(&path);
        let timeout = grpc_timeout(request.headers())
            .map(|t| t.saturating_sub(DEADLINE_MARGIN))
            .map_or(shared.request_timeout, |t| t.min(shared.request_timeout));
        Box::pin(
            async move {
                let response = if !authorized {
                    error_response(Error::new(
                        ErrorKind::Unauthenticated,
                        "a valid API key is required (x-api-key or authorization: Bearer)",
                    ))
                } else {
                    let ticket = match admitted {
                        true => {
                            let caller = match shared.keys.caller_key(request.headers()) {
                                Some(key) => Caller::ApiKey(key),
                                None => request
                                    .extensions()
                                    .get::<tonic::transport::server::TcpConnectInfo>()
                                    .and_then(|info| info.remote_addr())
                                    .map_or(Caller::Unknown, |peer| Caller::Address(peer.ip())),
                            };
                            match shared.admission.admit(caller).await {
                                Ok(ticket) => Some(ticket),
                                Err(rejection) => return Ok(call.observe(refused(rejection))),
                            }
                        }
                        false => None,
                    };
                    let late = |what: String| {
                        error_response(Error::new(ErrorKind::DeadlineExceeded, what))
                    };
                    let response = if timeout.is_zero() {
                        // A deadline already spent starts no work at all.
                        late("the call's deadline had passed before it began".to_owned())
                    } else {
                        let deadline = tokio::time::Instant::now() + timeout;
                        let handled = ordo_service::deadline::within(deadline, inner.call(request));
                        match tokio::time::timeout_at(deadline, handled).await {
                            Ok(response) => response?.map(tonic::body::Body::new),
                            Err(_) => late(format!(
                                "the call took longer than {} ms",
                                timeout.as_millis()
                            )),
                        }
                    };
                    if let Some(ticket) = ticket {
                        // A status in the headers (a trailers-only answer) is known now; a
                        // streamed answer counts as served.
                        let fault = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .is_some_and(is_server_fault);
                        ticket.finish(!fault);
                    }
                    response
                };
                Ok(call.observe(response))
            }
            .instrument(span),
        )
    }
}

fn error_response(error: Error) -> Response<tonic::body::Body> {
    status_of(error).into_http()
}

/// A call admission turned away: its status, and `retry-after` (seconds) as HTTP has it.
fn refused(rejection: Rejection) -> Response<tonic::body::Body> {
    let mut response = error_response(rejection.error());
    response
        .headers_mut()
        .insert("retry-after", rejection.retry_after_secs().into());
    response
}

/// The caller's `grpc-timeout` (`<up to 8 digits><H|M|S|m|u|n>`); absent or malformed: none.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The end of one call: records its status once (see the module invariant).
struct CallEnd {
    span: tracing::Span,
    started: Instant,
    service: &'static str,
    method: &'static str,
    finished: bool,
}

impl CallEnd {
    /// Adds `traceparent` to the response, and finishes now if the status is already in the
    /// headers (a trailers-only answer); otherwise at the end of the body.
    fn observe(self, mut response: Response<tonic::body::Body>) -> Response<tonic::body::Body> {
        if let Some(traceparent) = propagation::traceparent_of(&self.span) {
            response.headers_mut().insert("traceparent", traceparent);
        }
        if response.headers().contains_key("grpc-status") {
            let headers = response.headers().clone();
            self.finish(&headers);
            return response;
        }
        response.map(|body| {
            tonic::body::Body::new(ObservedBody {
                inner: body,
                call: Some(self),
            })
        })
    }

    fn finish(mut self, status: &HeaderMap) {
        let code = status
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            // A body that ended without a status is a broken call.
            .unwrap_or(tonic::Code::Unknown as i32);
        let kind = status
            .get(ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|code| ErrorKind::ALL.into_iter().find(|k| k.code() == code));
        self.record(code, kind);
    }

    fn record(&mut self, code: i32, kind: Option<ErrorKind>) {
        self.finished = true;
        let span = &self.span;
        span.record("rpc.grpc.status_code", code);
        if is_server_fault(code) {
            span.record("otel.status_code", "error");
            span.record("error.type", conventions::grpc_error_type(code));
        }
        if let Some(kind) = kind {
            metrics::count_error(kind.code());
        }
        let exemplar = propagation::traceparent_of(span)
            .and_then(|tp| TraceExemplar::from_sampled_traceparent(tp.as_bytes()));
        let labels = RpcLabels {
            service: self.service,
            method: self.method,
            status_code: code,
        };
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::observe_rpc_server(labels, seconds, exemplar);
        span.in_scope(|| {
            tracing::info!(
                target: "ordo::access",
                {
                    { labels::RPC_SERVICE } = labels.service,
                    { labels::RPC_METHOD } = labels.method,
                    { labels::RPC_GRPC_STATUS_CODE } = labels.status_code,
                    duration_seconds = seconds,
                },
                "call"
            )
        });
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if !self.finished {
            self.record(tonic::Code::Cancelled as i32, None);
        }
    }
}

/// Per the OpenTelemetry RPC conventions, the codes that mark a SERVER span as failed.
fn is_server_fault(code: i32) -> bool {
    use tonic::Code;
    [
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

pin_project_lite::pin_project! {
    /// A response body that finishes its call at the trailers.
    struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<CallEnd>,
    }
}

impl<B: Body<Data = Bytes>> Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    call.finish(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut call) = this.call.take() {
                    call.record(tonic::Code::Internal as i32, None);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish(&HeaderMap::new());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn timeout_of(value: &'static str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static(value));
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "10", "123456789S", "-1S", "1.5S", "10x"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_server_faults_fail_the_span() {
        assert!(is_server_fault(tonic::Code::Internal as i32));
        assert!(is_server_fault(tonic::Code::Unavailable as i32));
        assert!(!is_server_fault(tonic::Code::NotFound as i32));
        assert!(!is_server_fault(tonic::Code::InvalidArgument as i32));
        assert!(!is_server_fault(0));
    }
}

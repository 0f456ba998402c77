//! gRPC's side of the edge (`ordo_edge`): every call (health, reflection and gRPC-Web calls
//! included) passes [`ordo_edge::EdgeLayer`] over [`Grpc`], which tells the edge what only
//! gRPC knows — the method of a path (span, exemptions, labels), the caller's `grpc-timeout`,
//! the client's address, an error as a status, and when a call's status is known: in the
//! headers of a trailers-only answer, else in the trailers at the end of the response body.
//! Then the span's `rpc.grpc.status_code`, `rpc_server_duration_seconds` by service, method
//! and code, `errors_total` by error kind and the access log line are recorded.
//!
//! Exempt: health needs no key and is never limited (probes), payment callbacks are never
//! limited; shedding answers UNAVAILABLE, a rate limit RESOURCE_EXHAUSTED, both with
//! `retry-after` in seconds as HTTP has it.
//!
//! Invariant: a call's span and metric end exactly once — at its trailers, at a trailers-only
//! answer, or (a client that went away mid-stream) when the body is dropped, as CANCELLED.

use crate::error::{ERROR_CODE_KEY, status_of};
use bytes::Bytes;
use http::{Extensions, HeaderMap, Request, Response};
use http_body::{Body, Frame};
use ordo_domain::{Error, ErrorKind};
use ordo_edge::{Call, Exemptions, Labels, Opened, Outcome, Transport};
use ordo_telemetry::conventions;
use ordo_telemetry::metrics::{OTHER_RPC, RpcLabels};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Probes must work without credentials, and are never limited; a payment provider's callback
/// is never limited (its retry is no substitute).
const EXEMPTIONS: Exemptions = Exemptions {
    keyless: &[
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ],
    unlimited: &[
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/ordo.v1.PaymentsService/PaymentCallback",
    ],
};

/// gRPC, as the edge sees it.
pub struct Grpc {
    /// `/package.Service/Method` → (service, method): the label values, bounded to the methods
    /// served; any other path is `_OTHER`.
    methods: HashMap<String, (&'static str, &'static str)>,
}

impl Grpc {
    /// `methods`: the full names (`package.Service/Method`) of every method served.
    pub fn new<'a>(methods: impl IntoIterator<Item = &'a str>) -> Self {
        let methods = methods
            .into_iter()
            .filter_map(|full| {
                let (service, method) = full.split_once('/')?;
                let service: &'static str = Box::leak(service.to_owned().into_boxed_str());
                let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
                Some((format!("/{full}"), (service, method)))
            })
            .collect();
        Grpc { methods }
    }
}

impl Transport for Grpc {
    const NOUN: &'static str = "call";
    type Call = CallEnd;
    type Body = tonic::body::Body;

    fn open<B>(&self, request: &Request<B>) -> Opened<CallEnd> {
        let path = request.uri().path();
        let (service, method) = self
            .methods
            .get(path)
            .copied()
            .unwrap_or((OTHER_RPC, OTHER_RPC));
        Opened {
            call: CallEnd {
                call: Call::rpc(service, method, path, request.headers()),
                service,
                method,
            },
            exempt: EXEMPTIONS.of(Some(path)),
            asked: grpc_timeout(request.headers()),
        }
    }

    fn span(call: &CallEnd) -> &tracing::Span {
        call.call.span()
    }

    fn peer(extensions: &Extensions) -> Option<IpAddr> {
        extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|peer| peer.ip())
    }

    fn render(error: Error) -> Response<tonic::body::Body> {
        status_of(error).into_http()
    }

    fn answered<B>(response: Response<B>) -> Response<tonic::body::Body>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
        response.map(tonic::body::Body::new)
    }

    /// A status in the headers (a trailers-only answer) is known now; a streamed answer counts
    /// as served.
    fn served(response: &Response<tonic::body::Body>) -> bool {
        !status_in(response.headers()).is_some_and(is_server_fault)
    }

    /// Finishes now if the status is already in the headers (a trailers-only answer);
    /// otherwise at the end of the body.
    fn close(
        mut call: CallEnd,
        mut response: Response<tonic::body::Body>,
    ) -> Response<tonic::body::Body> {
        call.call.stamp(response.headers_mut());
        if response.headers().contains_key("grpc-status") {
            call.finish(response.headers());
            return response;
        }
        response.map(|body| tonic::body::Body::new(ObservedBody { inner: body, call }))
    }
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

fn status_in(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A call being served: the edge's call and its labels. Dropped before its status is known,
/// it ends as CANCELLED (see the module invariant).
pub struct CallEnd {
    call: Call,
    service: &'static str,
    method: &'static str,
}

impl CallEnd {
    /// Ends the call with the status in `status` (headers or trailers).
    fn finish(&mut self, status: &HeaderMap) {
        // A body that ended without a status is a broken call.
        let code = status_in(status).unwrap_or(tonic::Code::Unknown as i32);
        let kind = status
            .get(ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|code| ErrorKind::ALL.into_iter().find(|k| k.code() == code));
        self.record(code, kind);
    }

    fn record(&mut self, code: i32, kind: Option<ErrorKind>) {
        self.call.finish(Outcome {
            labels: Labels::Rpc(RpcLabels {
                service: self.service,
                method: self.method,
                status_code: code,
            }),
            failure: is_server_fault(code).then(|| conventions::grpc_error_type(code)),
            kind,
        });
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        // A no-op for a call that ended already.
        self.record(tonic::Code::Cancelled as i32, None);
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
        call: CallEnd,
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
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.record(tonic::Code::Internal as i32, None),
            Poll::Ready(None) => this.call.finish(&HeaderMap::new()),
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

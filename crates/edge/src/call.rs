//! One call from its request head to its end: the SERVER span of its transport (named and
//! attributed as the OpenTelemetry conventions say, a child of a valid incoming `traceparent`),
//! the `traceparent` of the answer, and the end — the status on the span, the duration
//! histogram with the trace as exemplar, `errors_total` by error kind and one access log line,
//! whose labels are the histogram's.
//!
//! Invariant: a call ends once. [`Call::finish`] records the first outcome it is given and
//! ignores any later one (a gRPC call may end at its trailers, then be dropped).
//!
//! The HTTP side is the hot path: nothing here allocates but the span's name and the
//! `traceparent` text, as before the edge existed; labels are static or interned, the exemplar
//! is kept inline.

use http::header::HeaderName;
use http::{HeaderMap, Method, Version};
use ordo_domain::ErrorKind;
use ordo_telemetry::metrics::{self, HttpLabels, OTHER_RPC, RpcLabels, TraceExemplar, labels};
use ordo_telemetry::{conventions, propagation};
use std::time::Instant;
use tracing::{Span, field};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A call being served. See the module documentation.
#[derive(Debug)]
pub struct Call {
    span: Span,
    started: Instant,
    /// The trace named by the `traceparent` answered, when it is sampled.
    exemplar: Option<TraceExemplar>,
    finished: bool,
}

/// How a call ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The labels of the duration histogram and the access log, status included.
    pub labels: Labels,
    /// Set when the call failed on the server's side: the span's `error.type` (an HTTP status
    /// code as text, a gRPC status name).
    pub failure: Option<&'a str>,
    /// The error kind answered, counted in `errors_total`.
    pub kind: Option<ErrorKind>,
}

/// The labels of a call, by transport.
#[derive(Debug, Clone, Copy)]
pub enum Labels {
    Http(HttpLabels),
    Rpc(RpcLabels),
}

impl Call {
    /// The span `http.server.request` of a request: named `<method> <route>` (the method alone
    /// when no route matched), with `url.path`; `route` is the matched route template.
    pub fn http(
        method: &Method,
        route: Option<&str>,
        path: &str,
        version: Version,
        headers: &HeaderMap,
    ) -> Call {
        let started = Instant::now();
        let span_name = match route {
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
            url.path = %path,
            // The API is served in plain HTTP (TLS ends in front of ordo).
            url.scheme = "http",
            network.protocol.version = conventions::http_protocol_version(version),
            http.response.status_code = field::Empty,
            error.type = field::Empty,
            // Filled in by a read that needs no span of its own (`Orders::order`).
            order.id = field::Empty,
        );
        if let Some(route) = route {
            span.record("http.route", route);
        }
        Call::opened(span, started, headers)
    }

    /// The span `rpc.server` of a gRPC call to `path` (`/package.Service/Method`), of the
    /// method `service`/`method` ([`OTHER_RPC`] for a path not served: the span is then `grpc`).
    pub fn rpc(
        service: &'static str,
        method: &'static str,
        path: &str,
        headers: &HeaderMap,
    ) -> Call {
        let started = Instant::now();
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
            // Filled in by a read that needs no span of its own (`Orders::order`).
            order.id = field::Empty,
        );
        Call::opened(span, started, headers)
    }

    fn opened(span: Span, started: Instant, headers: &HeaderMap) -> Call {
        propagation::adopt_http_parent(&span, headers);
        Call {
            span,
            started,
            exemplar: None,
            finished: false,
        }
    }

    /// The call's server span: the call runs in it.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Writes `traceparent` into the answer's `headers` (it tells the caller which trace its
    /// call became), and keeps its trace as the exemplar of the duration, if sampled.
    pub fn stamp(&mut self, headers: &mut HeaderMap) {
        if let Some(traceparent) = propagation::traceparent_of(&self.span) {
            self.exemplar = TraceExemplar::from_sampled_traceparent(traceparent.as_bytes());
            headers.insert(TRACEPARENT.clone(), traceparent);
        }
    }

    /// Ends the call with `outcome`, unless it has ended already (see the module invariant).
    pub fn finish(&mut self, outcome: Outcome<'_>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let span = &self.span;
        match outcome.labels {
            Labels::Http(labels) => {
                span.record("http.response.status_code", i64::from(labels.status_code))
            }
            Labels::Rpc(labels) => span.record("rpc.grpc.status_code", labels.status_code),
        };
        if let Some(error_type) = outcome.failure {
            span.record("otel.status_code", "error");
            span.record("error.type", error_type);
        }
        if let Some(kind) = outcome.kind {
            metrics::count_error(kind.code());
        }
        let seconds = self.started.elapsed().as_secs_f64();
        // The access lines are written inside the span, so they carry its trace_id and span_id.
        match outcome.labels {
            Labels::Http(labels) => {
                metrics::observe_http(labels, seconds, self.exemplar);
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
            }
            Labels::Rpc(labels) => {
                metrics::observe_rpc_server(labels, seconds, self.exemplar);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many durations the histogram of `labels` holds, from the text exposition.
    fn observed(name: &str, labels: &str) -> u64 {
        let (_, text) = metrics::encode(false);
        let wanted = format!("{name}_count{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .map_or(0, |count| count.trim().parse().unwrap())
    }

    fn errors(kind: &str) -> u64 {
        let (_, text) = metrics::encode(false);
        let wanted = format!("errors_total{{error_kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .map_or(0, |count| count.trim().parse().unwrap())
    }

    #[test]
    fn a_call_ends_once_whatever_ends_it_later() {
        let labels = RpcLabels {
            service: "edge.test.OnceService",
            method: "End",
            status_code: 13,
        };
        let series = "rpc_service=\"edge.test.OnceService\",rpc_method=\"End\",\
                      rpc_grpc_status_code=\"13\"";
        let errors_before = errors("permission_denied");
        let mut call = Call::rpc(labels.service, labels.method, "/x", &HeaderMap::new());
        for code in [13, 1] {
            call.finish(Outcome {
                labels: Labels::Rpc(RpcLabels {
                    status_code: code,
                    ..labels
                }),
                failure: Some("INTERNAL"),
                kind: Some(ErrorKind::PermissionDenied),
            });
        }
        assert_eq!(observed("rpc_server_duration_seconds", series), 1);
        let cancelled = series.replace("\"13\"", "\"1\"");
        assert_eq!(observed("rpc_server_duration_seconds", &cancelled), 0);
        assert_eq!(errors("permission_denied"), errors_before + 1);
    }

    #[test]
    fn an_http_request_is_measured_by_method_route_and_status() {
        let method = Method::PATCH;
        let route = "/edge-test/{id}";
        let mut call = Call::http(
            &method,
            Some(route),
            "/edge-test/7",
            Version::HTTP_11,
            &HeaderMap::new(),
        );
        let mut headers = HeaderMap::new();
        // Without telemetry installed the span has no context: nothing to answer.
        call.stamp(&mut headers);
        assert!(headers.is_empty());
        call.finish(Outcome {
            labels: Labels::Http(HttpLabels::new(&method, Some(route), 503)),
            failure: Some("503"),
            kind: None,
        });
        let series = "method=\"PATCH\",route=\"/edge-test/{id}\",status_code=\"503\"";
        assert_eq!(observed("http_server_request_duration_seconds", series), 1);
    }
}

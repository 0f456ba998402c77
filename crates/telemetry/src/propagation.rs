//! The one place that owns W3C trace-context propagation (`traceparent`, `tracestate`,
//! `baggage`): extracting it from what arrives, attaching it to our spans, and injecting it into
//! what leaves. HTTP headers are covered here; message headers, gRPC metadata and stored
//! carriers (outbox rows) are added beside them, so every transport goes through the same code.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The ids of one span, in their W3C hex form, as stored on rows and timeline entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace context carried by incoming HTTP `headers`. An absent or
/// invalid `traceparent` leaves `span` a root: a caller's garbage never becomes our parent.
/// Call before the span is first entered.
pub fn adopt_http_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when telemetry is not installed (unit tests); nothing to adopt then.
        let _ = span.set_parent(parent);
    }
}

/// Writes the trace context of `span` into outgoing HTTP `headers` (a request we send, or the
/// response we answer with, so the caller learns which trace its request became).
pub fn inject_http(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers))
        });
    }
}

/// The ids of `span`, if telemetry is installed.
pub fn ids_of(span: &tracing::Span) -> Option<TraceIds> {
    ids_from(span.context().span().span_context())
}

/// The ids of the span the caller is in.
pub fn current_ids() -> Option<TraceIds> {
    ids_of(&tracing::Span::current())
}

fn ids_from(span_context: &SpanContext) -> Option<TraceIds> {
    span_context.is_valid().then(|| TraceIds {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    })
}

/// The ids of the OpenTelemetry context active on this thread (the entered span's), without
/// going through the tracing dispatcher: safe to call while a subscriber is formatting an event.
pub(crate) fn active_ids() -> Option<TraceIds> {
    opentelemetry::Context::map_current(|cx| ids_from(cx.span().span_context()))
}

/// The W3C `traceparent` naming `span`, for a response header: it tells the caller which trace
/// its request became. Only `traceparent`: a response does not echo `tracestate` or baggage.
pub fn traceparent_of(span: &tracing::Span) -> Option<HeaderValue> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    HeaderValue::from_str(&value).ok()
}

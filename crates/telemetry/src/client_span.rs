//! CLIENT spans of the hottest calls (one per database round trip), made straight through the
//! OpenTelemetry API instead of through a `tracing` span.
//!
//! Why: a `tracing` span pays for the subscriber's registry (an entry, enter and exit on every
//! poll of the future it instruments) and for the bridge's conversion of each field into an
//! attribute, on top of the OpenTelemetry span itself. A database call is a leaf: nothing runs
//! inside it that needs it as the current span, so the registry's work buys nothing there. A
//! [`ClientSpan`] is the OpenTelemetry span alone: child of the current `tracing` span (whose
//! sampling decision it follows), static attribute values (no allocation), ended on drop.
//!
//! Without [`crate::init`] (tools, tests of other crates) no span is made at all.

pub use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Called once by [`crate::init`].
pub(crate) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// A CLIENT span in the current trace; it ends when dropped.
pub struct ClientSpan(Option<Span>);

impl ClientSpan {
    /// Starts a CLIENT span named `name` with `attributes`, a child of the current `tracing`
    /// span. A parent that is not sampled (or none, when tracing is off) yields a span that
    /// records nothing.
    pub fn start(name: &'static str, attributes: Vec<KeyValue>) -> ClientSpan {
        let Some(tracer) = TRACER.get() else {
            return ClientSpan(None);
        };
        let current = tracing::Span::current();
        if current.is_disabled() {
            // No span of ours around the call (it is not part of any trace).
            return ClientSpan(None);
        }
        let parent = current.context();
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        ClientSpan(Some(span))
    }

    /// Adds an attribute (a value known only after the start).
    pub fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute);
        }
    }

    /// Marks the call failed (a fault of the server, not of the caller), with the few-valued
    /// `error.type` the conventions ask of a failed call.
    pub fn set_error(&mut self, error_type: &'static str) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(""));
        }
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}

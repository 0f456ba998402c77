//! Telemetry of ordo: the tracing subscriber (JSON or pretty logs carrying trace and span ids),
//! the OpenTelemetry tracer provider behind `tracing` spans, and [`propagation`], the one module
//! that moves W3C trace context in and out of the process.
//!
//! Invariant: code elsewhere never touches `traceparent` headers or OpenTelemetry propagators
//! directly; it calls [`propagation`], so no call site can forget a step.

mod json_log;
pub mod propagation;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// One JSON object a line: `timestamp`, `level`, `target`, `message`, fields, `trace_id`,
    /// `span_id`.
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// Owns the tracer provider; [`Telemetry::shutdown`] flushes what is pending.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

#[derive(Debug)]
pub struct TelemetryError(String);

impl std::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// Installs the global subscriber and propagators. Call once, first thing in `main`.
///
/// The log filter comes from `RUST_LOG` (default `info`). Spans always get OpenTelemetry ids so
/// that responses, rows and logs can name their trace; exporting them is configured separately.
pub fn init(style: LogStyle, service_name: &str) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer(service_name.to_owned());
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match style {
        LogStyle::Json => registry.with(json_log::JsonLogLayer).try_init(),
        LogStyle::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init(),
    };
    result.map_err(|e| TelemetryError(format!("cannot install the tracing subscriber: {e}")))?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flushes and stops the tracer provider. Spans ended after this are dropped.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

//! Telemetry of ordo: the tracing subscriber (JSON or pretty logs carrying trace and span ids),
//! the OpenTelemetry tracer provider behind `tracing` spans, and [`propagation`], the one module
//! that moves W3C trace context in and out of the process, and [`deadline`], the call's deadline
//! that travels with it.
//!
//! Configuration follows the OpenTelemetry specification's variables (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_PROPAGATORS`); the log filter and the sampling ratio can change live ([`ReloadHandle`]).
//! The log filter never decides which spans exist: traces keep their spans whatever `RUST_LOG`
//! says, so a quiet log level cannot break a trace.
//!
//! Invariant: code elsewhere never touches `traceparent` headers or OpenTelemetry propagators
//! directly; it calls [`propagation`], so no call site can forget a step.

pub mod client_span;
pub mod conventions;
pub mod deadline;
mod export;
mod json_log;
pub mod metrics;
pub mod propagation;
mod sampler;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// How logs are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// One JSON object a line: `timestamp`, `level`, `target`, `message`, fields, `trace_id`,
    /// `span_id`.
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// Who is emitting: becomes the resource of every exported span.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    /// `service.name`, unless `OTEL_SERVICE_NAME` says otherwise.
    pub name: String,
    pub version: String,
    /// Unique per process start.
    pub instance_id: String,
    /// `deployment.environment`: the configuration profile.
    pub environment: String,
    /// The git commit the binary was built from.
    pub git_commit: String,
}

/// What [`init`] needs besides the `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    pub style: LogStyle,
    pub identity: ServiceIdentity,
    /// The log filter when `RUST_LOG` is unset (from the configuration file); default `info`.
    pub log_filter: Option<String>,
    /// The sampling ratio when `OTEL_TRACES_SAMPLER_ARG` is unset (configuration file).
    pub sampling_ratio: Option<f64>,
}

/// Owns the tracer provider and the log writer; [`Telemetry::shutdown`] flushes both.
pub struct Telemetry {
    provider: SdkTracerProvider,
    log_guard: WorkerGuard,
    reload: ReloadHandle,
}

/// Changes the log filter and the sampling ratio of the running process (SIGHUP).
#[derive(Clone)]
pub struct ReloadHandle {
    log_filter: reload::Handle<EnvFilter, Registry>,
    sampling_ratio: Arc<AtomicU64>,
}

#[derive(Debug)]
pub struct TelemetryError(String);

impl std::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// How many log lines the bounded log queue had to drop since start.
pub fn dropped_log_lines() -> u64 {
    DROPPED_LOG_LINES
        .get()
        .map_or(0, ErrorCounter::dropped_lines) as u64
}

static DROPPED_LOG_LINES: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines waiting for stdout before new ones are dropped.
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Spans of these crates are plumbing below ordo's own spans (and the exporter's own HTTP/gRPC
/// calls must never trace themselves); they are kept out of traces. So is the access log
/// (`ordo::access`): its line repeats the SERVER span's own attributes, and as a span event it
/// would be built, kept and exported once more for every request.
const TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
    reqwest=off,sqlx=off,opentelemetry=off,opentelemetry_sdk=off,\
    ordo::access=off";

/// Installs the global subscriber, propagators and tracer provider. Call once, first thing
/// (the span export runs on a thread and runtime of its own). `env` reads the `OTEL_*`
/// variables.
pub fn init(
    options: TelemetryOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let mut warnings = Vec::new();
    opentelemetry::global::set_text_map_propagator(propagator(
        env("OTEL_PROPAGATORS").as_deref(),
        &mut warnings,
    ));

    let sampler_arg =
        env("OTEL_TRACES_SAMPLER_ARG").or_else(|| options.sampling_ratio.map(|r| r.to_string()));
    let (sampler, sampler_warnings) = sampler::LiveSampler::from_env(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        sampler_arg.as_deref(),
    );
    warnings.extend(sampler_warnings);
    let sampling_ratio = sampler.ratio_handle();

    let mut provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(export::resource(&options.identity, &env));
    let exporting = match export::otlp_processor(&env, &mut warnings)? {
        Some(processor) => {
            provider = provider.with_span_processor(processor);
            true
        }
        None => false,
    };
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    client_span::install(provider.tracer("ordo"));
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ordo"))
        .with_tracked_inactivity(false)
        // No OpenTelemetry context attached on every poll of every instrumented future (a
        // clone, a thread-local push and pop: 2.6% of a cached read's CPU). Nothing reads the
        // thread's OpenTelemetry context: spans find their parent through the registry, and
        // log lines their trace ids through the span they happened in (`json_log`).
        .with_context_activation(false)
        .with_threads(false)
        // No `code.*` attributes: three allocated strings on every span, while every ordo span
        // is named for what it does and carries its own semantic attributes.
        .with_location(false)
        // `Targets`, not `EnvFilter`: the same syntax for targets and levels, without the
        // per-span field matching an `EnvFilter` evaluates on every span it sees.
        .with_filter(
            TRACE_FILTER
                .parse::<tracing_subscriber::filter::Targets>()
                .map_err(|e| TelemetryError(format!("invalid trace filter: {e}")))?,
        );

    let directives = env("RUST_LOG")
        .filter(|v| !v.is_empty())
        .or(options.log_filter)
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| TelemetryError(format!("invalid log filter {directives:?}: {e}")))?;
    let (log_filter, log_filter_handle) = reload::Layer::new(filter);

    let (writer, log_guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stdout());
    let _ = DROPPED_LOG_LINES.set(writer.error_counter());
    let log_layer: Box<dyn Layer<Registry> + Send + Sync> = match options.style {
        LogStyle::Json => Box::new(json_log::JsonLogLayer::new(writer)),
        LogStyle::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_writer(writer),
        ),
    };

    tracing_subscriber::registry()
        .with(log_layer.with_filter(log_filter))
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError(format!("cannot install the tracing subscriber: {e}")))?;

    install_panic_hook();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    tracing::debug!(exporting, "telemetry installed");
    Ok(Telemetry {
        provider,
        log_guard,
        reload: ReloadHandle {
            log_filter: log_filter_handle,
            sampling_ratio,
        },
    })
}

/// Logs every panic as an error line with its location, inside the span it happened in (so with
/// its trace id), before the default hook prints it to stderr.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown panic");
        tracing::error!(panic.location = %location, panic.message = message, "panic");
        previous(info);
    }));
}

/// Installs only the propagators [`init`] installs when `OTEL_PROPAGATORS` is unset (W3C trace
/// context and baggage), without a subscriber or exporter: for the fuzz targets, which drive
/// [`propagation`] with the production propagators.
#[doc(hidden)]
pub fn install_default_propagators() {
    opentelemetry::global::set_text_map_propagator(propagator(None, &mut Vec::new()));
}

/// `OTEL_PROPAGATORS`: `tracecontext` and `baggage` (the default is both), or `none`.
fn propagator(setting: Option<&str>, warnings: &mut Vec<String>) -> TextMapCompositePropagator {
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in setting
        .unwrap_or("tracecontext,baggage")
        .split(',')
        .map(str::trim)
    {
        match name {
            "tracecontext" => propagators.push(Box::new(TraceContextPropagator::new())),
            "baggage" => propagators.push(Box::new(BaggagePropagator::new())),
            "none" | "" => {}
            other => warnings.push(format!("OTEL_PROPAGATORS: {other:?} is not supported")),
        }
    }
    TextMapCompositePropagator::new(propagators)
}

impl Telemetry {
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Exports the spans still queued, stops the exporter and flushes the log queue.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry shutdown");
        }
        drop(self.log_guard);
    }
}

impl ReloadHandle {
    pub fn set_log_filter(&self, directives: &str) -> Result<(), TelemetryError> {
        let filter = EnvFilter::try_new(directives)
            .map_err(|e| TelemetryError(format!("invalid log filter {directives:?}: {e}")))?;
        self.log_filter
            .reload(filter)
            .map_err(|e| TelemetryError(format!("cannot change the log filter: {e}")))
    }

    /// Takes effect for new root spans; children follow their parent's decision.
    pub fn set_sampling_ratio(&self, ratio: f64) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TelemetryError(format!(
                "the sampling ratio must be in [0, 1], not {ratio}"
            )));
        }
        self.sampling_ratio
            .store(ratio.to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

impl ServiceIdentity {
    /// `ordo` with a fresh instance id.
    pub fn new(version: &str, environment: &str, git_commit: &str) -> Self {
        ServiceIdentity {
            name: "ordo".to_owned(),
            version: version.to_owned(),
            instance_id: uuid::Uuid::now_v7().to_string(),
            environment: environment.to_owned(),
            git_commit: git_commit.to_owned(),
        }
    }
}

//! Prometheus metrics of the process: one registry for the whole process ([`global`]), the
//! families every layer records into, and [`encode`] for the admin port's `/metrics`.
//!
//! - HTTP: `http_server_request_duration_seconds{method, route, status_code}`, a histogram whose
//!   buckets carry the trace id of a sampled request as an OpenMetrics exemplar.
//! - Database: `db_client_operation_duration_seconds{db_system, operation}` ([`observe_db`]).
//! - Errors and panics: `errors_total{error_kind}` ([`count_error`]), `panics_total`.
//! - Business: `orders_created_total`, `orders_cancelled_total`, `orders_rejected_total{reason}`.
//! - Cache: `cache_requests_total{cache, result}`.
//! - Admission: `rate_limited_requests_total`, `shed_requests_total{reason}` (`max_in_flight`,
//!   `overload`).
//! - Async runtime health: `tokio_alive_tasks`, `tokio_workers`, `tokio_busy_ratio`,
//!   `tokio_global_queue_depth`, sampled every second by [`spawn_runtime_sampler`].
//! - Process (Linux): `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//!   `process_open_fds`, `process_start_time_seconds`, read from `/proc` at scrape time.
//!
//! Label names are the constants in [`labels`]; the access log uses the same constants, so a
//! log line and a series of the same request agree on names and values.
//!
//! Cardinality is bounded by construction: methods outside the standard set are `_OTHER`, a
//! path no route matched is `unmatched`, and route templates come from the router only.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

/// The label names shared by metrics and logs.
pub mod labels {
    /// The HTTP method, upper case; `_OTHER` for a non-standard one.
    pub const METHOD: &str = "method";
    /// The matched route template (`/v1/orders/{id}`), or [`super::UNMATCHED_ROUTE`].
    pub const ROUTE: &str = "route";
    /// The HTTP status code of the response.
    pub const STATUS_CODE: &str = "status_code";
    /// `ordo_domain::ErrorKind::code()`.
    pub const ERROR_KIND: &str = "error_kind";
    /// Why an order was rejected: the error kind code of the failed create.
    pub const REASON: &str = "reason";
    /// `sqlite` or `postgresql`.
    pub const DB_SYSTEM: &str = "db_system";
    /// A short static name of the database operation (`create_order`).
    pub const OPERATION: &str = "operation";
    /// A consumer of events (a pipeline stage).
    pub const CONSUMER: &str = "consumer";
    /// How one processing of an event ended: `ok`, `duplicate`, `error` or `given_up`.
    pub const OUTCOME: &str = "outcome";
    /// The exemplar label naming the trace of an observation.
    pub const TRACE_ID: &str = "trace_id";
    /// The full gRPC service name (`ordo.v1.OrdersService`), or `_OTHER`.
    pub const RPC_SERVICE: &str = "rpc_service";
    /// The gRPC method (`CreateOrder`), or `_OTHER`.
    pub const RPC_METHOD: &str = "rpc_method";
    /// The numeric gRPC status code of the call (0 is OK).
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc_grpc_status_code";
}

/// The `rpc_service` / `rpc_method` of a call to a method the server does not know: one value,
/// whatever the path.
pub const OTHER_RPC: &str = "_OTHER";

/// The `route` of every request no route template matched: one value, whatever the path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text exposition format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request and database durations: 0.5 ms to 10 s.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Database statements are often faster than a request: start at 0.1 ms.
const DB_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Route templates come from the router, a small fixed set; this only guards against a bug
/// that would feed raw paths in.
const MAX_ROUTES: usize = 512;
/// How often [`spawn_runtime_sampler`] samples the runtime.
const RUNTIME_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Label sets
// ---------------------------------------------------------------------------------------------

/// The labels of one HTTP request, shared by the duration histogram and the access log. Built
/// by [`HttpLabels::new`] without allocating: every value is static or interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status_code: u16,
}

impl HttpLabels {
    /// `route` is the matched route template, `None` when no route matched.
    pub fn new(method: &http::Method, route: Option<&str>, status_code: u16) -> HttpLabels {
        HttpLabels {
            method: method_label(method),
            route: route.map_or(UNMATCHED_ROUTE, intern_route),
            status_code,
        }
    }
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        (labels::METHOD, self.method).encode(encoder.encode_label())?;
        (labels::ROUTE, self.route).encode(encoder.encode_label())?;
        (labels::STATUS_CODE, self.status_code).encode(encoder.encode_label())
    }
}

/// The labels of one gRPC call, shared by the duration histograms and the access log. Service
/// and method are static: the layers map a path to them from the methods known at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RpcLabels {
    pub service: &'static str,
    pub method: &'static str,
    pub status_code: i32,
}

impl EncodeLabelSet for RpcLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        (labels::RPC_SERVICE, self.service).encode(encoder.encode_label())?;
        (labels::RPC_METHOD, self.method).encode(encoder.encode_label())?;
        (labels::RPC_GRPC_STATUS_CODE, i64::from(self.status_code)).encode(encoder.encode_label())
    }
}

/// One label whose value is a static string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StaticLabel<const N: usize>([(&'static str, &'static str); N]);

impl<const N: usize> EncodeLabelSet for StaticLabel<N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// The `target` label of an outbound dependency (a carrier); few, chosen by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetLabel(String);

impl EncodeLabelSet for TargetLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("target", self.0.as_str())].encode(encoder)
    }
}

/// The `terminal` label of a POS terminal (one series per terminal of the deployment).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TerminalLabel(String);

impl EncodeLabelSet for TerminalLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("terminal", self.0.as_str())].encode(encoder)
    }
}

/// The exemplar of an HTTP observation: the trace id, 32 lower-case hex digits, kept inline so
/// that recording one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceExemplar([u8; 32]);

impl TraceExemplar {
    /// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) when the trace
    /// is sampled: an exemplar pointing at a trace that was never exported is a dead link.
    pub fn from_sampled_traceparent(traceparent: &[u8]) -> Option<TraceExemplar> {
        if traceparent.len() != 55
            || &traceparent[..3] != b"00-"
            || traceparent[35] != b'-'
            || traceparent[52] != b'-'
        {
            return None;
        }
        let flags = hex_value(traceparent[53])? << 4 | hex_value(traceparent[54])?;
        if flags & 1 == 0 {
            return None;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&traceparent[3..35]);
        id.iter()
            .all(|&b| hex_value(b).is_some())
            .then_some(TraceExemplar(id))
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [(labels::TRACE_ID, self.trace_id())].encode(encoder)
    }
}

fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The route template as a `&'static str`: each distinct template is leaked once. Templates
/// come from the router, so the set is small and fixed.
fn intern_route(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(interned) = routes.read().ok().and_then(|set| set.get(route).copied()) {
        return interned;
    }
    let Ok(mut set) = routes.write() else {
        return UNMATCHED_ROUTE;
    };
    if let Some(interned) = set.get(route) {
        return interned;
    }
    if set.len() >= MAX_ROUTES {
        return UNMATCHED_ROUTE;
    }
    let interned: &'static str = Box::leak(route.to_owned().into_boxed_str());
    set.insert(interned);
    interned
}

// ---------------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------------

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric family of the process.
pub struct Metrics {
    registry: Registry,
    http_duration: Family<HttpLabels, HistogramWithExemplars<TraceExemplar>>,
    rpc_server_duration: Family<RpcLabels, HistogramWithExemplars<TraceExemplar>>,
    rpc_client_duration: Family<RpcLabels, HistogramWithExemplars<TraceExemplar>>,
    db_duration: Family<StaticLabel<2>, Histogram>,
    errors: Family<StaticLabel<1>, Counter>,
    panics: Counter,
    orders_created: Counter,
    orders_cancelled: Counter,
    orders_rejected: Family<StaticLabel<1>, Counter>,
    cache_requests: Family<StaticLabel<2>, Counter>,
    circuit_breakers: Family<TargetLabel, Gauge>,
    refused_connections: Family<StaticLabel<1>, Counter>,
    pos_sales: Family<StaticLabel<1>, Counter>,
    erasure_requests: Counter,
    saga_redriven: Counter,
    orders_erased: Counter,
    pos_stock_deficit: Counter,
    pos_terminal_last_sync: Family<TerminalLabel, FloatGauge>,
    rate_limited_requests: Counter,
    shed_requests: Family<StaticLabel<1>, Counter>,
    tokio_alive_tasks: Gauge,
    tokio_workers: Gauge,
    tokio_busy_ratio: FloatGauge,
    tokio_global_queue_depth: Gauge,
    outbox: OutboxMetrics,
}

/// The event flow: what the relay published, retried and dead-lettered, what waits, and the
/// duplicates consumers absorbed.
struct OutboxMetrics {
    published: Counter,
    failures: Counter,
    dead_lettered: Counter,
    backlog: Gauge,
    lag_seconds: FloatGauge,
    dead_letters: Gauge,
    duplicates: Family<StaticLabel<1>, Counter>,
    consumer_dead_lettered: Family<StaticLabel<1>, Counter>,
    shipments_dead_lettered: Counter,
    /// One pipeline stage's processing of one event, from the CONSUMER span's start to its end.
    process_duration: Family<StaticLabel<2>, HistogramWithExemplars<TraceExemplar>>,
}

impl OutboxMetrics {
    fn register(registry: &mut Registry) -> OutboxMetrics {
        let metrics = OutboxMetrics {
            published: Counter::default(),
            failures: Counter::default(),
            dead_lettered: Counter::default(),
            backlog: Gauge::default(),
            lag_seconds: FloatGauge::default(),
            dead_letters: Gauge::default(),
            duplicates: Family::default(),
            consumer_dead_lettered: Family::default(),
            shipments_dead_lettered: Counter::default(),
            process_duration: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(DB_BUCKETS.into_iter())
            }),
        };
        registry.register(
            "outbox_events_published",
            "Events the outbox relay published and the transport acknowledged",
            metrics.published.clone(),
        );
        registry.register(
            "outbox_publish_failures",
            "Publish attempts that failed (the event is retried with backoff)",
            metrics.failures.clone(),
        );
        registry.register(
            "outbox_events_dead_lettered",
            "Events given up on after the last attempt",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Committed events not yet published",
            metrics.backlog.clone(),
        );
        registry.register_with_unit(
            "outbox_lag",
            "Age of the oldest committed event not yet published",
            Unit::Seconds,
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "outbox_dead_letters",
            "Dead-lettered events waiting for an operator",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "consumer_duplicate_events",
            "Redelivered events a consumer recognised and ignored, by consumer",
            metrics.duplicates.clone(),
        );
        registry.register(
            "consumer_events_dead_lettered",
            "Broker messages a consumer gave up on after its last delivery, by consumer",
            metrics.consumer_dead_lettered.clone(),
        );
        registry.register(
            "shipments_dead_lettered",
            "Shipments the carrier refused for good or that failed after the last retry",
            metrics.shipments_dead_lettered.clone(),
        );
        registry.register_with_unit(
            "consumer_process_duration",
            "Duration of one pipeline stage processing one event (its CONSUMER span), by consumer \
             and outcome",
            Unit::Seconds,
            metrics.process_duration.clone(),
        );
        metrics
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_duration =
            Family::<HttpLabels, HistogramWithExemplars<TraceExemplar>>::new_with_constructor(
                || HistogramWithExemplars::new(HTTP_BUCKETS.into_iter()),
            );
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests, from the request's arrival to its response",
            Unit::Seconds,
            http_duration.clone(),
        );
        let rpc_histograms = || {
            Family::<RpcLabels, HistogramWithExemplars<TraceExemplar>>::new_with_constructor(|| {
                HistogramWithExemplars::new(HTTP_BUCKETS.into_iter())
            })
        };
        let rpc_server_duration = rpc_histograms();
        registry.register_with_unit(
            "rpc_server_duration",
            "Duration of gRPC calls served, from the request's arrival to the last message",
            Unit::Seconds,
            rpc_server_duration.clone(),
        );
        let rpc_client_duration = rpc_histograms();
        registry.register_with_unit(
            "rpc_client_duration",
            "Duration of gRPC calls made to other ordo roles, retries included",
            Unit::Seconds,
            rpc_client_duration.clone(),
        );
        let db_duration = Family::<StaticLabel<2>, Histogram>::new_with_constructor(|| {
            Histogram::new(DB_BUCKETS)
        });
        registry.register_with_unit(
            "db_client_operation_duration",
            "Duration of database operations",
            Unit::Seconds,
            db_duration.clone(),
        );
        let errors = Family::<StaticLabel<1>, Counter>::default();
        registry.register(
            "errors",
            "Requests answered with an error, by error kind",
            errors.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "panics",
            "Panics caught while serving a request",
            panics.clone(),
        );
        let orders_created = Counter::default();
        registry.register(
            "orders_created",
            "Orders created (idempotent replays not counted)",
            orders_created.clone(),
        );
        let orders_cancelled = Counter::default();
        registry.register(
            "orders_cancelled",
            "Orders cancelled",
            orders_cancelled.clone(),
        );
        let orders_rejected = Family::<StaticLabel<1>, Counter>::default();
        registry.register(
            "orders_rejected",
            "Order creations that failed, by the error kind of the failure",
            orders_rejected.clone(),
        );
        let cache_requests = Family::<StaticLabel<2>, Counter>::default();
        registry.register(
            "cache_requests",
            "Cache lookups by cache (local, redis) and result (hit, miss, absent, error)",
            cache_requests.clone(),
        );
        let circuit_breakers = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "circuit_breaker_state",
            "State of the circuit breaker of an outbound target (0 closed, 1 half-open, 2 open)",
            circuit_breakers.clone(),
        );
        let refused_connections = Family::<StaticLabel<1>, Counter>::default();
        registry.register(
            "http_connections_refused",
            "API connections answered 503 and closed at once, by the cap they hit \
             (max_connections, max_connections_per_client)",
            refused_connections.clone(),
        );
        let rate_limited_requests = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused because their caller spent its rate limit (HTTP 429, gRPC \
             RESOURCE_EXHAUSTED)",
            rate_limited_requests.clone(),
        );
        let shed_requests = Family::<StaticLabel<1>, Counter>::default();
        registry.register(
            "shed_requests",
            "Requests refused at once to protect the process (HTTP 503, gRPC UNAVAILABLE), by \
             reason: max_in_flight (ORDO_MAX_IN_FLIGHT reached) or overload (CPU over its \
             threshold and more requests in progress than the measured capacity)",
            shed_requests.clone(),
        );
        let saga_redriven = Counter::default();
        registry.register(
            "saga_redriven_orders",
            "Orders the saga watchdog found sitting in a stage with no event to move them, and \
             whose stage event it sent again",
            saga_redriven.clone(),
        );
        let erasure_requests = Counter::default();
        registry.register(
            "customer_erasure_requests",
            "Requests to erase a customer's personal data (repeats included)",
            erasure_requests.clone(),
        );
        let orders_erased = Counter::default();
        registry.register(
            "orders_personal_data_erased",
            "Orders whose personal data was erased (at the request, or once terminal)",
            orders_erased.clone(),
        );
        let pos_sales = Family::<StaticLabel<1>, Counter>::default();
        registry.register(
            "pos_sales",
            "Sales in POS batches by outcome (accepted, duplicate, rejected); replays not counted",
            pos_sales.clone(),
        );
        let pos_stock_deficit = Counter::default();
        registry.register(
            "pos_stock_deficit_units",
            "Units POS terminals sold that the warehouse's free stock did not cover",
            pos_stock_deficit.clone(),
        );
        let pos_terminal_last_sync = Family::<TerminalLabel, FloatGauge>::default();
        registry.register(
            "pos_terminal_last_sync_timestamp_seconds",
            "When each POS terminal's last new batch was recorded (Unix seconds): a terminal \
             that stops syncing shows as an old value",
            pos_terminal_last_sync.clone(),
        );
        let tokio_alive_tasks = Gauge::default();
        registry.register(
            "tokio_alive_tasks",
            "Tasks alive in the async runtime (a steady climb is a task leak)",
            tokio_alive_tasks.clone(),
        );
        let tokio_workers = Gauge::default();
        registry.register(
            "tokio_workers",
            "Worker threads of the async runtime",
            tokio_workers.clone(),
        );
        let tokio_busy_ratio = FloatGauge::default();
        registry.register(
            "tokio_busy_ratio",
            "Share of the last sampling interval the runtime's workers were busy, averaged over \
             workers (0 to 1)",
            tokio_busy_ratio.clone(),
        );
        let tokio_global_queue_depth = Gauge::default();
        registry.register(
            "tokio_global_queue_depth",
            "Tasks waiting in the async runtime's global queue",
            tokio_global_queue_depth.clone(),
        );
        let outbox = OutboxMetrics::register(&mut registry);
        registry.register_collector(Box::new(DroppedLogLines));
        registry.register_collector(Box::new(SpanExport));
        #[cfg(target_os = "linux")]
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry,
            http_duration,
            rpc_server_duration,
            rpc_client_duration,
            db_duration,
            errors,
            panics,
            orders_created,
            orders_cancelled,
            orders_rejected,
            cache_requests,
            circuit_breakers,
            refused_connections,
            pos_sales,
            erasure_requests,
            saga_redriven,
            orders_erased,
            pos_stock_deficit,
            pos_terminal_last_sync,
            rate_limited_requests,
            shed_requests,
            tokio_alive_tasks,
            tokio_workers,
            tokio_busy_ratio,
            tokio_global_queue_depth,
            outbox,
        }
    }
}

/// `log_lines_dropped_total`: lines the bounded log queue refused, read at scrape time.
#[derive(Debug)]
struct DroppedLogLines;

impl prometheus_client::collector::Collector for DroppedLogLines {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let counter =
            prometheus_client::metrics::counter::ConstCounter::new(crate::dropped_log_lines());
        counter.encode(encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log queue was full (stdout too slow)",
            None,
            counter.metric_type(),
        )?)
    }
}

/// `otel_spans_exported_total` and `otel_spans_dropped_total{reason}`: what the OTLP export
/// did with the sampled spans, read at scrape time. A dropped span is a hole in a trace: the
/// counter says so instead of the trace quietly missing a part.
#[derive(Debug)]
struct SpanExport;

impl prometheus_client::collector::Collector for SpanExport {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::export::{
            SPANS_DROPPED_EXPORT_FAILED, SPANS_DROPPED_QUEUE_FULL, SPANS_EXPORTED,
        };
        use prometheus_client::metrics::counter::ConstCounter;
        use std::sync::atomic::Ordering::Relaxed;
        let exported = ConstCounter::new(SPANS_EXPORTED.load(Relaxed));
        exported.encode(encoder.encode_descriptor(
            "otel_spans_exported",
            "Sampled spans the OTLP collector accepted",
            None,
            exported.metric_type(),
        )?)?;
        let mut dropped = encoder.encode_descriptor(
            "otel_spans_dropped",
            "Sampled spans never exported: the export queue was full (queue_full) or the \
             collector did not accept their batch (export_failed)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in [
            ("queue_full", &SPANS_DROPPED_QUEUE_FULL),
            ("export_failed", &SPANS_DROPPED_EXPORT_FAILED),
        ] {
            ConstCounter::new(count.load(Relaxed))
                .encode(dropped.encode_family(&StaticLabel([(labels::REASON, reason)]))?)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

/// Records one HTTP request's duration, with the trace id of a sampled request as exemplar.
pub fn observe_http(labels: HttpLabels, seconds: f64, exemplar: Option<TraceExemplar>) {
    global()
        .http_duration
        .get_or_create(&labels)
        .observe(seconds, exemplar, None);
}

/// Records one gRPC call served, with the trace id of a sampled call as exemplar.
pub fn observe_rpc_server(labels: RpcLabels, seconds: f64, exemplar: Option<TraceExemplar>) {
    global()
        .rpc_server_duration
        .get_or_create(&labels)
        .observe(seconds, exemplar, None);
}

/// Records one gRPC call made to another role (all its attempts together).
pub fn observe_rpc_client(labels: RpcLabels, seconds: f64, exemplar: Option<TraceExemplar>) {
    global()
        .rpc_client_duration
        .get_or_create(&labels)
        .observe(seconds, exemplar, None);
}

/// Records one database operation's duration. `system` is `sqlite` or `postgresql`,
/// `operation` a short static name such as `create_order`.
pub fn observe_db(system: &'static str, operation: &'static str, seconds: f64) {
    global()
        .db_duration
        .get_or_create(&StaticLabel([
            (labels::DB_SYSTEM, system),
            (labels::OPERATION, operation),
        ]))
        .observe(seconds);
}

/// Counts one error answered to a caller; `kind_code` is `ordo_domain::ErrorKind::code()`.
pub fn count_error(kind_code: &'static str) {
    global()
        .errors
        .get_or_create(&StaticLabel([(labels::ERROR_KIND, kind_code)]))
        .inc();
}

/// Counts one panic caught while serving a request.
pub fn count_panic() {
    global().panics.inc();
}

/// Counts one order created (after its commit; not for an idempotent replay).
pub fn count_order_created() {
    global().orders_created.inc();
}

/// Counts one order cancelled (after its commit).
pub fn count_order_cancelled() {
    global().orders_cancelled.inc();
}

/// Counts one failed order creation; `reason` is the error kind code of the failure.
pub fn count_order_rejected(reason: &'static str) {
    global()
        .orders_rejected
        .get_or_create(&StaticLabel([(labels::REASON, reason)]))
        .inc();
}

/// Counts one lookup of a cache (`cache`: `local` or `redis`) and how it went (`hit`, `miss`,
/// `absent`, `error`).
pub fn count_cache_request(cache: &'static str, result: &'static str) {
    global()
        .cache_requests
        .get_or_create(&StaticLabel([("cache", cache), ("result", result)]))
        .inc();
}

/// Publishes the state of the circuit breaker of `target` (e.g. `carrier:dhl`): 0 closed,
/// 1 half-open, 2 open.
pub fn set_circuit_breaker_state(target: &str, state: i64) {
    let breakers = &global().circuit_breakers;
    breakers
        .get_or_create(&TargetLabel(target.to_owned()))
        .set(state);
}

/// Counts one API connection refused at the cap `reason`.
pub fn count_refused_connection(reason: &'static str) {
    global()
        .refused_connections
        .get_or_create(&StaticLabel([(labels::REASON, reason)]))
        .inc();
}

/// Counts orders the saga watchdog re-drove.
pub fn count_saga_redriven(orders: u64) {
    global().saga_redriven.inc_by(orders);
}

/// Counts one request to erase a customer's personal data.
pub fn count_erasure_request() {
    global().erasure_requests.inc();
}

/// Counts orders whose personal data was erased.
pub fn count_orders_erased(orders: u64) {
    global().orders_erased.inc_by(orders);
}

/// Counts one sale of a POS batch by its `outcome`.
pub fn count_pos_sale(outcome: &'static str) {
    global()
        .pos_sales
        .get_or_create(&StaticLabel([("outcome", outcome)]))
        .inc();
}

/// Counts units POS terminals sold beyond the free stock.
pub fn count_pos_stock_deficit(units: u64) {
    global().pos_stock_deficit.inc_by(units);
}

/// Records that `terminal` synced a new batch at `at_ms` (Unix milliseconds).
pub fn set_pos_terminal_last_sync(terminal: &str, at_ms: i64) {
    global()
        .pos_terminal_last_sync
        .get_or_create(&TerminalLabel(terminal.to_owned()))
        .set(at_ms as f64 / 1000.0);
}

/// Counts one request refused by its caller's rate limit.
pub fn count_rate_limited_request() {
    global().rate_limited_requests.inc();
}

/// Counts one request shed; `reason` is `max_in_flight` or `overload`.
pub fn count_shed_request(reason: &'static str) {
    global()
        .shed_requests
        .get_or_create(&StaticLabel([(labels::REASON, reason)]))
        .inc();
}

/// Counts one relay round's outcome.
pub fn count_outbox(published: u64, failed: u64, dead_lettered: u64) {
    let outbox = &global().outbox;
    outbox.published.inc_by(published);
    outbox.failures.inc_by(failed);
    outbox.dead_lettered.inc_by(dead_lettered);
}

/// Sets the backlog gauges from the relay's latest look at the outbox.
pub fn set_outbox_backlog(pending: i64, lag_seconds: f64, dead: i64) {
    set_outbox_pending(pending, lag_seconds);
    global().outbox.dead_letters.set(dead);
}

/// The pending part of [`set_outbox_backlog`], measured more often than the dead letters.
pub fn set_outbox_pending(pending: i64, lag_seconds: f64) {
    let outbox = &global().outbox;
    outbox.backlog.set(pending);
    outbox.lag_seconds.set(lag_seconds);
}

/// Counts one redelivered event that `consumer` had already processed.
pub fn count_duplicate_event(consumer: &'static str) {
    global()
        .outbox
        .duplicates
        .get_or_create(&StaticLabel([(labels::CONSUMER, consumer)]))
        .inc();
}

/// Counts one broker message `consumer` gave up on after its last delivery (moved to its
/// dead-letter queue or subject).
pub fn count_consumer_dead_letter(consumer: &'static str) {
    global()
        .outbox
        .consumer_dead_lettered
        .get_or_create(&StaticLabel([(labels::CONSUMER, consumer)]))
        .inc();
}

/// Records how long `consumer` took to process one event and how it ended (see
/// [`labels::OUTCOME`]), with the trace id of a sampled event as exemplar.
pub fn observe_consumer_process(
    consumer: &'static str,
    outcome: &'static str,
    seconds: f64,
    exemplar: Option<TraceExemplar>,
) {
    global()
        .outbox
        .process_duration
        .get_or_create(&StaticLabel([
            (labels::CONSUMER, consumer),
            (labels::OUTCOME, outcome),
        ]))
        .observe(seconds, exemplar, None);
}

/// Counts one shipment given up on (carrier refused it, or the last retry failed).
pub fn count_shipment_dead_lettered() {
    global().outbox.shipments_dead_lettered.inc();
}

// ---------------------------------------------------------------------------------------------
// Async runtime health
// ---------------------------------------------------------------------------------------------

/// Samples the runtime behind `handle` now and then every second, into the `tokio_*` gauges.
/// The task runs until the returned handle is aborted (at shutdown) or the runtime stops.
pub fn spawn_runtime_sampler(handle: &tokio::runtime::Handle) -> tokio::task::JoinHandle<()> {
    let monitor = tokio_metrics::RuntimeMonitor::new(handle);
    handle.spawn(async move {
        let metrics = global();
        let mut ticks = tokio::time::interval(RUNTIME_SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        for interval in monitor.intervals() {
            metrics
                .tokio_alive_tasks
                .set(gauge_value(interval.live_tasks_count));
            metrics
                .tokio_workers
                .set(gauge_value(interval.workers_count));
            metrics
                .tokio_global_queue_depth
                .set(gauge_value(interval.global_queue_depth));
            // The first interval is a few microseconds long: too short to say anything.
            let elapsed = interval.elapsed.as_secs_f64() * interval.workers_count as f64;
            if interval.elapsed >= RUNTIME_SAMPLE_INTERVAL / 2 && elapsed > 0.0 {
                let busy = interval.total_busy_duration.as_secs_f64() / elapsed;
                metrics.tokio_busy_ratio.set(busy.clamp(0.0, 1.0));
            }
            ticks.tick().await;
        }
    })
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Process metrics
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod process {
    use super::*;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    /// Reads `/proc/self` on each scrape. A value that cannot be read is left out. Help texts
    /// end with a period here: the registry adds one only to the metrics registered with it.
    #[derive(Debug)]
    pub(super) struct ProcessCollector;

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let stat = ProcStat::read();
            if let Some(bytes) = resident_memory_bytes() {
                let gauge = ConstGauge::new(bytes);
                gauge.encode(encoder.encode_descriptor(
                    "process_resident_memory",
                    "Resident memory size.",
                    Some(&Unit::Bytes),
                    gauge.metric_type(),
                )?)?;
            }
            if let Some(stat) = &stat {
                let counter = ConstCounter::new(stat.cpu_seconds);
                counter.encode(encoder.encode_descriptor(
                    "process_cpu",
                    "User and system CPU time spent.",
                    Some(&Unit::Seconds),
                    counter.metric_type(),
                )?)?;
            }
            if let Some(fds) = open_fds() {
                let gauge = ConstGauge::new(fds);
                gauge.encode(encoder.encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors.",
                    None,
                    gauge.metric_type(),
                )?)?;
            }
            if let Some(start) = stat.and_then(|s| s.start_time_seconds) {
                let gauge = ConstGauge::new(start);
                gauge.encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since the Unix epoch.",
                    Some(&Unit::Seconds),
                    gauge.metric_type(),
                )?)?;
            }
            Ok(())
        }
    }

    struct ProcStat {
        cpu_seconds: f64,
        start_time_seconds: Option<f64>,
    }

    impl ProcStat {
        fn read() -> Option<ProcStat> {
            let text = std::fs::read_to_string("/proc/self/stat").ok()?;
            // The command name (field 2) is in parentheses and may contain spaces.
            let after_name = &text[text.rfind(')')? + 1..];
            // Fields from 3 (state) on; utime is 14, stime 15, starttime 22.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            let ticks = clock_ticks_per_second()?;
            let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
            let start_time_seconds = field(22)
                .zip(boot_time_seconds())
                .map(|(start, boot)| boot as f64 + start as f64 / ticks);
            Some(ProcStat {
                cpu_seconds,
                start_time_seconds,
            })
        }
    }

    fn clock_ticks_per_second() -> Option<f64> {
        static TICKS: OnceLock<Option<f64>> = OnceLock::new();
        *TICKS.get_or_init(|| {
            // SAFETY: sysconf has no memory-safety preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            (ticks > 0).then_some(ticks as f64)
        })
    }

    fn boot_time_seconds() -> Option<u64> {
        static BOOT: OnceLock<Option<u64>> = OnceLock::new();
        *BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse().ok())
        })
    }

    fn resident_memory_bytes() -> Option<i64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: i64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    fn open_fds() -> Option<i64> {
        // The directory's own descriptor is among the entries while it is read.
        let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(gauge_value(count.saturating_sub(1)))
    }
}

// ---------------------------------------------------------------------------------------------
// Exposition
// ---------------------------------------------------------------------------------------------

/// The whole registry as `(content type, body)`: OpenMetrics 1.0.0 text with exemplars when
/// `openmetrics`, otherwise the Prometheus text format 0.0.4.
pub fn encode(openmetrics: bool) -> (&'static str, String) {
    let mut body = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; a metric that fails to encode is a bug, and a partial
    // scrape is still more useful than none.
    let _ = prometheus_client::encoding::text::encode(&mut body, &global().registry);
    if openmetrics {
        (OPENMETRICS_TEXT, body)
    } else {
        (PROMETHEUS_TEXT, openmetrics_to_prometheus(&body))
    }
}

/// Converts prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4:
/// exemplars, `# UNIT` and `# EOF` are dropped, counter families are named with their
/// `_total` suffix (OpenMetrics names the family without it), and `unknown` is `untyped`.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        if let Some((keyword, rest)) = metadata {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(keyword);
            out.push_str(name);
            if counters.contains(name) {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(if keyword == "# TYPE " && tail == "unknown" {
                "untyped"
            } else {
                tail
            });
        } else if line.starts_with('#') {
            continue;
        } else {
            out.push_str(without_exemplar(line));
        }
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar (` # {...} value [timestamp]`), found after the label
/// set so that a label value containing `#` cannot confuse it.
fn without_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    // The metric name, then an optional label set with quoted values.
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'{' {
        let mut in_quotes = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b'}' if !in_quotes => break,
                _ => {}
            }
            i += 1;
        }
    }
    match line[i.min(line.len())..].find(" # ") {
        Some(at) => &line[..i + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_traceparents_give_exemplars() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let sampled = format!("00-{trace}-00f067aa0ba902b7-01");
        let exemplar = TraceExemplar::from_sampled_traceparent(sampled.as_bytes()).unwrap();
        assert_eq!(exemplar.trace_id(), trace);
        let unsampled = format!("00-{trace}-00f067aa0ba902b7-00");
        assert!(TraceExemplar::from_sampled_traceparent(unsampled.as_bytes()).is_none());
        assert!(TraceExemplar::from_sampled_traceparent(b"garbage").is_none());
    }

    #[test]
    fn unknown_methods_and_unmatched_paths_share_one_value() {
        let custom = http::Method::from_bytes(b"BREW").unwrap();
        let labels = HttpLabels::new(&custom, None, 404);
        assert_eq!((labels.method, labels.route), ("_OTHER", UNMATCHED_ROUTE));
        let a = HttpLabels::new(&http::Method::GET, Some("/v1/orders/{id}"), 200);
        let b = HttpLabels::new(&http::Method::GET, Some("/v1/orders/{id}"), 200);
        assert!(
            std::ptr::eq(a.route, b.route),
            "route templates are interned"
        );
    }

    #[test]
    fn prometheus_text_drops_what_it_cannot_carry() {
        let openmetrics = "# HELP errors Errors.\n# TYPE errors counter\n\
            errors_total{error_kind=\"a # {b}\"} 3\n\
            # HELP d_seconds D.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\n\
            d_seconds_bucket{le=\"0.5\"} 1 # {trace_id=\"ab\"} 0.2\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(openmetrics),
            "# HELP errors_total Errors.\n# TYPE errors_total counter\n\
             errors_total{error_kind=\"a # {b}\"} 3\n\
             # HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{le=\"0.5\"} 1\n"
        );
    }

    #[test]
    fn every_family_is_exposed() {
        count_panic();
        observe_http(
            HttpLabels::new(&http::Method::POST, Some("/v1/orders"), 201),
            0.003,
            TraceExemplar::from_sampled_traceparent(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        observe_db("sqlite", "create_order", 0.0004);
        count_error("invalid_argument");
        count_shed_request("overload");
        let (content_type, openmetrics) = encode(true);
        assert_eq!(content_type, OPENMETRICS_TEXT);
        assert!(openmetrics.ends_with("# EOF\n"));
        assert!(openmetrics.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003"));
        let (content_type, text) = encode(false);
        assert_eq!(content_type, PROMETHEUS_TEXT);
        for expected in [
            "# TYPE http_server_request_duration_seconds histogram",
            "method=\"POST\",route=\"/v1/orders\",status_code=\"201\"",
            "db_client_operation_duration_seconds_count{db_system=\"sqlite\",operation=\"create_order\"} 1",
            "errors_total{error_kind=\"invalid_argument\"} 1",
            "# TYPE panics_total counter",
            "# TYPE tokio_busy_ratio gauge",
            "# TYPE rate_limited_requests_total counter",
            "shed_requests_total{reason=\"overload\"} 1",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(!text.contains("trace_id"));
        assert!(!text.contains("# EOF"));
        #[cfg(target_os = "linux")]
        for expected in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }
}

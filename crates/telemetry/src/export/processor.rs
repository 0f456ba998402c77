//! The span processor of the OTLP export: each sampled span is encoded as it ends
//! ([`super::encode`]) into the open batch; full batches (and, on a timer, the open one) are
//! sent by one exporter thread, one request at a time.
//!
//! Bounded: at most `max_queue` spans wait (queued or being sent); beyond that a span is
//! dropped and counted (`otel_spans_dropped_total`), never a request slowed down. The exporter
//! thread has a single-threaded runtime of its own, so exporting never takes a worker of the
//! service's runtime and a flush can wait for it from anywhere.
//!
//! Settings follow the specification's batch processor variables: `OTEL_BSP_SCHEDULE_DELAY`
//! (ms between exports of a batch that is not full), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
//! `OTEL_BSP_MAX_QUEUE_SIZE`, and the exporter's `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`.

use super::encode::{self, EncodedPart};
use super::transport::{Transport, TransportConfig};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

/// Spans exported, dropped because the queue was full, and lost to failed exports, since start
/// (read by the metrics at scrape time).
pub(crate) static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPANS_DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPANS_DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub(crate) struct BatchConfig {
    pub schedule_delay: Duration,
    pub max_export_batch_size: usize,
    pub max_queue_size: usize,
    pub export_timeout: Duration,
}

/// The spans of one instrumentation scope in a batch, encoded.
#[derive(Debug)]
struct ScopeBatch {
    scope: InstrumentationScope,
    encoded_scope: EncodedPart,
    spans: Vec<u8>,
}

#[derive(Debug, Default)]
struct Batch {
    scopes: Vec<ScopeBatch>,
    spans: usize,
}

impl Batch {
    fn push(&mut self, span: &SpanData) {
        let index = match self
            .scopes
            .iter()
            .position(|batch| batch.scope == span.instrumentation_scope)
        {
            Some(index) => index,
            None => {
                self.scopes.push(ScopeBatch {
                    encoded_scope: encode::scope(&span.instrumentation_scope),
                    scope: span.instrumentation_scope.clone(),
                    spans: Vec::with_capacity(64 * 1024),
                });
                self.scopes.len() - 1
            }
        };
        encode::append_span(span, &mut self.scopes[index].spans);
        self.spans += 1;
    }
}

/// What waits for the exporter thread.
#[derive(Debug, Default)]
struct Queue {
    open: Batch,
    full: VecDeque<Batch>,
    /// Spans in `open`, in `full` and in the request being sent.
    spans: usize,
    /// Flushes asked for: each is answered once everything queued before it was sent.
    flushes: Vec<mpsc::Sender<OTelSdkResult>>,
    shutting_down: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    config: BatchConfig,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct OtlpSpanProcessor {
    shared: Arc<Shared>,
    /// Taken by the exporter thread when it starts (after [`SpanProcessor::set_resource`]).
    start: Mutex<Option<Start>>,
    started: std::sync::Once,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Start {
    transport: TransportConfig,
    resource: EncodedPart,
}

impl OtlpSpanProcessor {
    pub(crate) fn new(transport: TransportConfig, config: BatchConfig) -> OtlpSpanProcessor {
        OtlpSpanProcessor {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: tokio::sync::Notify::new(),
                config,
            }),
            start: Mutex::new(Some(Start {
                transport,
                resource: EncodedPart::default(),
            })),
            started: std::sync::Once::new(),
            thread: Mutex::new(None),
        }
    }

    /// Starts the exporter thread on the first span (or flush): by then the provider has given
    /// the processor its resource.
    fn ensure_started(&self) {
        self.started.call_once(|| self.start_thread());
    }

    fn start_thread(&self) {
        let Some(start) = self.start.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("otlp-exporter".to_owned())
            .spawn(move || export_loop(shared, start));
        match spawned {
            Ok(handle) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle),
            Err(error) => tracing::error!(%error, "cannot start the span exporter thread"),
        }
    }

    /// Asks the exporter to send everything queued and waits up to `timeout` for it.
    fn flush(&self, timeout: Duration, shut_down: bool) -> OTelSdkResult {
        self.ensure_started();
        let (answer, answered) = mpsc::channel();
        {
            let mut queue = self.shared.queue();
            if queue.shutting_down {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            queue.shutting_down |= shut_down;
            queue.flushes.push(answer);
        }
        self.shared.wake.notify_one();
        let result = answered
            .recv_timeout(timeout)
            .unwrap_or(Err(OTelSdkError::Timeout(timeout)));
        if shut_down
            && let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            // The thread ends after its answer; joining cannot wait for an export.
            if result.is_ok() {
                let _ = thread.join();
            }
        }
        result
    }
}

impl SpanProcessor for OtlpSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        self.ensure_started();
        let full = {
            let mut queue = self.shared.queue();
            if queue.shutting_down {
                return;
            }
            if queue.spans >= self.shared.config.max_queue_size {
                SPANS_DROPPED_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
                return;
            }
            queue.open.push(&span);
            queue.spans += 1;
            if queue.open.spans >= self.shared.config.max_export_batch_size {
                let batch = std::mem::take(&mut queue.open);
                queue.full.push_back(batch);
                true
            } else {
                false
            }
        };
        if full {
            self.shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(self.shared.config.export_timeout * 2, false)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(timeout, true)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(start) = self.start.get_mut().unwrap_or_else(|e| e.into_inner()) {
            start.resource = encode::resource(resource);
        }
    }
}

/// What the exporter thread does next.
enum Next {
    /// Send these batches, then answer these flushes (and end the thread if shutting down).
    Send {
        batches: Vec<Batch>,
        flushes: Vec<mpsc::Sender<OTelSdkResult>>,
        shut_down: bool,
    },
    Wait,
}

impl Queue {
    fn next(&mut self, due: bool) -> Next {
        if !self.flushes.is_empty() {
            // A flush waits for what was queued before it, not for spans that keep coming.
            if self.open.spans > 0 {
                let open = std::mem::take(&mut self.open);
                self.full.push_back(open);
            }
            return Next::Send {
                batches: self.full.drain(..).collect(),
                flushes: std::mem::take(&mut self.flushes),
                shut_down: self.shutting_down,
            };
        }
        let batch = match self.full.pop_front() {
            Some(batch) => batch,
            None if self.open.spans > 0 && due => std::mem::take(&mut self.open),
            None => return Next::Wait,
        };
        Next::Send {
            batches: vec![batch],
            flushes: Vec::new(),
            shut_down: false,
        }
    }
}

/// The exporter thread: sends full batches as they come, the open batch when the schedule
/// delay has passed since the last export, and everything when a flush asks.
fn export_loop(shared: Arc<Shared>, start: Start) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the span exporter's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let transport = Transport::new(start.transport);
        let mut failures = FailureLog::default();
        let mut last_export = Instant::now();
        loop {
            let due = last_export.elapsed() >= shared.config.schedule_delay;
            let next = shared.queue().next(due);
            let Next::Send {
                batches,
                flushes,
                shut_down,
            } = next
            else {
                let deadline = last_export + shared.config.schedule_delay;
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline.into()) => {
                        // Nothing was waiting when it was due: the delay counts from now.
                        if shared.queue().open.spans == 0 {
                            last_export = Instant::now();
                        }
                    }
                }
                continue;
            };
            let mut all_sent = true;
            for batch in batches {
                let spans = batch.spans;
                let body = encode::request(
                    &start.resource,
                    batch
                        .scopes
                        .iter()
                        .map(|s| (&s.encoded_scope, s.spans.as_slice())),
                );
                drop(batch);
                let sent = tokio::time::timeout(shared.config.export_timeout, transport.send(body))
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                match sent {
                    Ok(()) => {
                        SPANS_EXPORTED.fetch_add(spans as u64, Ordering::Relaxed);
                    }
                    Err(error) => {
                        all_sent = false;
                        failures.record(spans, &error);
                        SPANS_DROPPED_EXPORT_FAILED.fetch_add(spans as u64, Ordering::Relaxed);
                    }
                }
                shared.queue().spans -= spans;
                last_export = Instant::now();
            }
            for flush in flushes {
                let _ = flush.send(if all_sent {
                    Ok(())
                } else {
                    Err(OTelSdkError::InternalFailure(
                        "some spans could not be exported".to_owned(),
                    ))
                });
            }
            if shut_down {
                return;
            }
        }
    });
}

/// Export failures are logged at most once every ten seconds, with how many spans were lost
/// meanwhile: a collector that is down must not flood the log.
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    lost: usize,
}

impl FailureLog {
    fn record(&mut self, spans: usize, error: &str) {
        self.lost += spans;
        if self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                target: "ordo::telemetry",
                error,
                spans_lost = self.lost,
                "cannot export spans"
            );
            self.last = Some(Instant::now());
            self.lost = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Counts the spans of each request it is sent.
    #[derive(Clone, Default)]
    struct Collector(Arc<Mutex<Vec<usize>>>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let spans = request
                .into_inner()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.0.lock().unwrap().push(spans);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    fn provider(
        endpoint: String,
        batch: usize,
        queue: usize,
        timeout: Duration,
    ) -> SdkTracerProvider {
        let processor = OtlpSpanProcessor::new(
            TransportConfig::Grpc {
                endpoint,
                headers: Vec::new(),
                timeout,
            },
            BatchConfig {
                // Only full batches and flushes send anything during a test.
                schedule_delay: Duration::from_secs(3600),
                max_export_batch_size: batch,
                max_queue_size: queue,
                export_timeout: timeout,
            },
        );
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build()
    }

    fn end_spans(provider: &SdkTracerProvider, count: usize) {
        let tracer = provider.tracer("processor-test");
        for _ in 0..count {
            tracer.in_span("unit", |_| {});
        }
    }

    async fn eventually_sent(collector: &Collector, batches: &[usize]) {
        for _ in 0..200 {
            if collector.0.lock().unwrap().as_slice() == batches {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "sent {:?}, expected {batches:?}",
            collector.0.lock().unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn full_batches_go_at_once_and_a_flush_sends_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let provider = provider(endpoint, 4, 100, Duration::from_secs(10));

        end_spans(&provider, 10);
        eventually_sent(&collector, &[4, 4]).await;
        let flushed = tokio::task::spawn_blocking({
            let provider = provider.clone();
            move || provider.force_flush()
        });
        assert!(flushed.await.unwrap().is_ok());
        eventually_sent(&collector, &[4, 4, 2]).await;

        end_spans(&provider, 1);
        let shut = tokio::task::spawn_blocking(move || provider.shutdown());
        assert!(shut.await.unwrap().is_ok());
        eventually_sent(&collector, &[4, 4, 2, 1]).await;
        server.abort();
    }

    /// A collector that accepts the connection and never answers: the first batch hangs in
    /// flight, the second waits, everything after them is dropped and counted, and the request
    /// path never waits for any of it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_drops_spans_and_counts_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        // The batch in flight fails after the time-out, well after the spans were ended.
        let provider = provider(endpoint, 2, 4, Duration::from_millis(500));
        let dropped_before = SPANS_DROPPED_QUEUE_FULL.load(Ordering::Relaxed);

        let started = Instant::now();
        end_spans(&provider, 10);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            SPANS_DROPPED_QUEUE_FULL.load(Ordering::Relaxed) - dropped_before,
            6
        );
        // Shutting down sends what is queued: it fails, and says so, in bounded time.
        let shut = tokio::task::spawn_blocking(move || provider.shutdown());
        assert!(shut.await.unwrap().is_err());
        silent.abort();
    }
}

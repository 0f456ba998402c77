//! The one place that owns W3C trace-context propagation (`traceparent`, `tracestate`,
//! `baggage`): extracting it from what arrives, attaching it to our spans, and injecting it into
//! what leaves. HTTP headers are covered here; message headers, gRPC metadata and stored
//! carriers (outbox rows) are added beside them, so every transport goes through the same code.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The ids of one span, in their W3C hex form, as stored on rows and timeline entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
}

/// Whether `value` is a `traceparent` of W3C Trace Context: `<version>-<trace id>-<span id>-
/// <flags>`, 2, 32, 16 and 2 lower-case hex digits, version `ff` invalid, nothing after version
/// `00`'s flags, a `-` before whatever a later version adds. The SDK's propagator is laxer (it
/// reads the ids with `from_str_radix`: any length, a `+` sign), so garbage like `00-1-+1-01`
/// would become our parent; it sees only what passes here.
fn well_formed_traceparent(value: &str) -> bool {
    let value = value.trim();
    let Some(head) = value.get(..55) else {
        return false;
    };
    let rest = &value[55..];
    let mut fields = head.split('-');
    let (Some(version), Some(trace_id), Some(span_id), Some(flags), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let sized = version.len() == 2 && trace_id.len() == 32 && span_id.len() == 16;
    let hex = [version, trace_id, span_id, flags]
        .iter()
        .all(|f| is_lower_hex(f));
    let tail = match version {
        "ff" => false,
        "00" => rest.is_empty(),
        _ => rest.is_empty() || rest.starts_with('-'),
    };
    sized && flags.len() == 2 && hex && tail
}

fn is_lower_hex(field: &str) -> bool {
    field
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hands a propagator only a well-formed `traceparent` ([`well_formed_traceparent`]).
struct WellFormed<'a>(&'a dyn Extractor);

impl Extractor for WellFormed<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        let refused = key.eq_ignore_ascii_case("traceparent") && !well_formed_traceparent(value);
        (!refused).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

/// The context `carrier` holds, through the global propagators, whose `traceparent` is
/// well-formed: the one way in for every transport.
fn extract(carrier: &dyn Extractor) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&WellFormed(carrier))
    })
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
    let parent = extract(&HeaderExtractor(headers));
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

/// The ids of the span `id` of `dispatch`, asked of the subscriber directly rather than through
/// the thread's default dispatcher: safe to call while a subscriber is formatting an event
/// (the dispatcher is busy then, and would answer with none).
pub(crate) fn ids_of_span_id(
    id: &tracing::span::Id,
    dispatch: &tracing::Dispatch,
) -> Option<TraceIds> {
    let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    ids_from(context.span().span_context())
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

/// The trace context of `span` as text pairs (`traceparent`, `tracestate`, `baggage`), for a
/// carrier that is not HTTP: message headers, an outbox row's stored context.
pub fn inject_map(span: &tracing::Span) -> std::collections::HashMap<String, String> {
    let context = span.context();
    let mut carrier = std::collections::HashMap::new();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut carrier)
        });
    }
    carrier
}

/// Makes `span` a child of the context stored in `carrier` (see [`inject_map`]); an absent or
/// invalid context leaves it a root. Call before the span is first entered.
pub fn adopt_parent_from_map(
    span: &tracing::Span,
    carrier: &std::collections::HashMap<String, String>,
) {
    let parent = extract(carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// A remote, sampled span context from the hex ids stored on a row; `None` when they do not
/// parse or are all zeros (a row written without telemetry).
fn remote_context(trace_id_hex: &str, span_id_hex: &str) -> Option<SpanContext> {
    // The form we store, exactly (`from_hex` alone takes any length and a sign).
    let stored_form = trace_id_hex.len() == 32
        && span_id_hex.len() == 16
        && is_lower_hex(trace_id_hex)
        && is_lower_hex(span_id_hex);
    if !stored_form {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id_hex).ok()?;
    let span_id = SpanId::from_hex(span_id_hex).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// A span for background polling (the outbox relay looking for work every 200 ms): it and the
/// database spans below it are never exported, so an idle service does not fill the trace
/// backend with one-span traces. It is the child of an unsampled remote parent, which the
/// parent-based sampler follows. Spans under it that adopt a parent of their own (a publish
/// continuing its order's trace) are exported as usual.
pub fn unexported_span(name: &'static str) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "housekeeping", otel.name = name);
    let ids = uuid::Uuid::new_v4().as_u128();
    let unsampled = SpanContext::new(
        TraceId::from(ids | 1),
        SpanId::from((ids as u64) | 1),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(unsampled));
    span
}

/// Makes `span` a child of the span whose ids a row stored (an order's `trace_id`/`span_id`),
/// taken as a remote, sampled parent: work done later for that row (a scheduled job) joins
/// its trace. Ids that do not parse leave `span` a root. Call before the span is first
/// entered; returns whether the parent was adopted.
pub fn adopt_parent_from_ids(span: &tracing::Span, trace_id_hex: &str, span_id_hex: &str) -> bool {
    match remote_context(trace_id_hex, span_id_hex) {
        Some(parent) => span
            .set_parent(opentelemetry::Context::new().with_remote_span_context(parent))
            .is_ok(),
        None => false,
    }
}

/// Puts `span` in the trace of the step with the stored ids `trace_id_hex`/`span_id_hex` (an
/// order's creation), as its child, and links it to the caller's current span (the request or
/// job run that is this step's second cause). So one order keeps one trace however many
/// requests and jobs act on it. Call before `span` is first entered.
pub fn continue_stored_trace(span: &tracing::Span, trace_id_hex: &str, span_id_hex: &str) {
    if adopt_parent_from_ids(span, trace_id_hex, span_id_hex) {
        link_to(span, &tracing::Span::current());
    } else {
        // Unreadable stored ids: stay at least in the caller's trace.
        let _ = span.set_parent(tracing::Span::current().context());
    }
}

/// Makes `span` a child of `parent` (a span of another task: the batch that serves it).
pub fn adopt_parent_span(span: &tracing::Span, parent: &tracing::Span) {
    let _ = span.set_parent(parent.context());
}

/// Makes `span` (a root) a scheduled job's work on one row: a child of the span whose ids the
/// row stored, in that row's trace ([`adopt_parent_from_ids`]), linked to the job run's span
/// that is current ([`link_to`]). Returns `span`.
pub fn job_work_in_row_trace(
    span: tracing::Span,
    trace_id_hex: &str,
    span_id_hex: &str,
) -> tracing::Span {
    adopt_parent_from_ids(&span, trace_id_hex, span_id_hex);
    link_to(&span, &tracing::Span::current());
    span
}

/// Adds to `span` a link to `linked` (a job run's span, from each piece of work it did in
/// another trace). Nothing happens when either has no valid context.
pub fn link_to(span: &tracing::Span, linked: &tracing::Span) {
    let context = linked.context();
    let linked_context = context.span().span_context().clone();
    if linked_context.is_valid() {
        span.add_link(linked_context);
    }
}

/// Adds to `span` a link to the context stored in `carrier` (see [`inject_map`]): the span of
/// an earlier attempt at the same work (a redelivered message, a retried publish). Nothing
/// happens when the carrier holds no valid context.
pub fn link_to_map(span: &tracing::Span, carrier: &std::collections::HashMap<String, String>) {
    let context = extract(carrier);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Adds to `span` a link to the span whose ids a row stored (e.g. the step that created an
/// order, from a request about that order that arrived in another trace).
pub fn link_to_ids(span: &tracing::Span, trace_id_hex: &str, span_id_hex: &str) {
    if let Some(linked) = remote_context(trace_id_hex, span_id_hex) {
        span.add_link(linked);
    }
}

/// Spawns `future` instrumented with `span`, which becomes a child of the caller's current
/// span in the trace, without keeping the caller's span open: for work that outlives the
/// request that started it (a delayed callback), so the request's spans end when it ends.
/// Create `span` with `parent: None`; it must not have been entered yet.
pub fn spawn_child_in_current_trace<F>(
    span: tracing::Span,
    future: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    let parent = tracing::Span::current().context();
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    tokio::spawn(future.instrument(span))
}

/// Spawns `future` on the runtime as a child of the caller's current span. A bare
/// `tokio::spawn` starts with no span, and whatever it traces becomes a new root: the classic
/// broken trace. Use this instead.
pub fn spawn_in_current_span<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(future.instrument(tracing::Span::current()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    fn with_tracing<T>(test: impl FnOnce() -> T) -> T {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, test)
    }

    #[test]
    fn a_stored_context_makes_the_next_span_a_child_in_the_same_trace() {
        with_tracing(|| {
            let producer = tracing::info_span!("produce");
            let carrier = inject_map(&producer);
            assert!(carrier.contains_key("traceparent"), "{carrier:?}");

            let consumer = tracing::info_span!("consume");
            adopt_parent_from_map(&consumer, &carrier);
            let (produced, consumed) = (ids_of(&producer).unwrap(), ids_of(&consumer).unwrap());
            assert_eq!(consumed.trace_id, produced.trace_id);
            assert_ne!(consumed.span_id, produced.span_id);
            assert!(carrier["traceparent"].contains(&produced.span_id));
        });
    }

    #[test]
    fn a_garbage_context_is_ignored() {
        with_tracing(|| {
            let carrier =
                std::collections::HashMap::from([("traceparent".to_owned(), "garbage".to_owned())]);
            let span = tracing::info_span!("consume");
            adopt_parent_from_map(&span, &carrier);
            assert!(ids_of(&span).is_some(), "still a valid root span");
        });
    }

    /// Found by fuzzing (fuzz/ trace_context): the SDK's propagator read `00-1-1-01` as trace 1,
    /// span 1, and a stored `+1` as an id, so such garbage became the parent of our spans.
    #[test]
    fn only_a_well_formed_traceparent_becomes_the_parent() {
        with_tracing(|| {
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            let joins = |traceparent: &str| {
                let mut headers = HeaderMap::new();
                headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
                let span = tracing::info_span!(parent: None, "serve");
                adopt_http_parent(&span, &headers);
                let carrier = std::collections::HashMap::from([(
                    "traceparent".to_owned(),
                    traceparent.to_owned(),
                )]);
                let consumer = tracing::info_span!(parent: None, "consume");
                adopt_parent_from_map(&consumer, &carrier);
                let (http, map) = (ids_of(&span).unwrap(), ids_of(&consumer).unwrap());
                assert_eq!(
                    http.trace_id == trace,
                    map.trace_id == trace,
                    "{traceparent}"
                );
                http.trace_id == trace || http.trace_id == format!("{:032x}", 1)
            };
            for good in [
                format!("00-{trace}-00f067aa0ba902b7-01"),
                format!("00-{trace}-00f067aa0ba902b7-00"),
                format!("cc-{trace}-00f067aa0ba902b7-01-future"),
            ] {
                assert!(joins(&good), "{good}");
            }
            for bad in [
                "00-1-1-01".to_owned(),
                "00-+1-+1-01".to_owned(),
                format!("00-{trace}-00f067aa0ba902b7-01-"),
                format!("00-{trace}-00f067aa0ba902b7-1"),
                format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
                format!("ff-{trace}-00f067aa0ba902b7-01"),
                format!("cc-{trace}-00f067aa0ba902b7-01x"),
                format!("00-0{trace}-0f067aa0ba902b7-01"),
            ] {
                assert!(!joins(&bad), "{bad}");
            }
            let orphan = tracing::info_span!(parent: None, "orphan");
            assert!(!adopt_parent_from_ids(&orphan, "+1", "+1"));
            assert!(!adopt_parent_from_ids(&orphan, "1", "1"));
            assert!(adopt_parent_from_ids(&orphan, trace, "00f067aa0ba902b7"));
        });
    }

    #[test]
    fn http_headers_round_trip_the_trace_context() {
        with_tracing(|| {
            let client = tracing::info_span!("call");
            let mut headers = HeaderMap::new();
            inject_http(&client, &mut headers);
            let server = tracing::info_span!("serve");
            adopt_http_parent(&server, &headers);
            assert_eq!(
                ids_of(&server).unwrap().trace_id,
                ids_of(&client).unwrap().trace_id
            );
            let traceparent = traceparent_of(&client).unwrap();
            assert_eq!(headers["traceparent"], traceparent);
        });
    }

    #[test]
    fn stored_ids_make_a_later_span_a_child_of_that_trace() {
        with_tracing(|| {
            let order = tracing::info_span!("create_order");
            let stored = ids_of(&order).unwrap();
            let job = tracing::info_span!("job_run");
            let later = tracing::info_span!(parent: None, "timeout");
            assert!(adopt_parent_from_ids(
                &later,
                &stored.trace_id,
                &stored.span_id
            ));
            link_to(&later, &job);
            assert_eq!(ids_of(&later).unwrap().trace_id, stored.trace_id);
            assert_ne!(ids_of(&job).unwrap().trace_id, stored.trace_id);

            let orphan = tracing::info_span!(parent: None, "orphan");
            assert!(!adopt_parent_from_ids(
                &orphan,
                &"0".repeat(32),
                &"0".repeat(16)
            ));
            assert!(!adopt_parent_from_ids(&orphan, "xyz", "abc"));
            assert!(ids_of(&orphan).is_some(), "still a valid root span");
        });
    }

    #[test]
    fn a_detached_child_task_stays_in_the_callers_trace() {
        with_tracing(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let request = tracing::info_span!("request");
            let expected = ids_of(&request).unwrap();
            let seen = runtime.block_on(async {
                let _entered = request.enter();
                let span = tracing::info_span!(parent: None, "later");
                spawn_child_in_current_trace(span, async { current_ids() })
                    .await
                    .unwrap()
            });
            let seen = seen.unwrap();
            assert_eq!(seen.trace_id, expected.trace_id);
            assert_ne!(seen.span_id, expected.span_id);
        });
    }

    #[test]
    fn a_spawned_task_stays_in_the_callers_trace() {
        with_tracing(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let request = tracing::info_span!("request");
            let expected = ids_of(&request).unwrap();
            let seen = runtime.block_on(async {
                let _entered = request.enter();
                spawn_in_current_span(async { current_ids() })
                    .await
                    .unwrap()
            });
            assert_eq!(seen.unwrap().trace_id, expected.trace_id);
        });
    }
}

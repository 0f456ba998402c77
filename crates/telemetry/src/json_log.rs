//! JSON log lines: `timestamp`, `level`, `target`, `message`, the event's fields, and the
//! `trace_id`/`span_id` of the span the event happened in (tracing-subscriber's own JSON format
//! cannot know those).
//!
//! Every request writes an access line, so this is a hot path: a line is serialised straight
//! into a per-thread buffer (no map, no allocation per field) and handed to a bounded
//! non-blocking writer.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes through `writer`, a bounded non-blocking queue: a burst of logs never blocks a request,
/// it drops lines (counted) instead.
pub(crate) struct JsonLogLayer {
    writer: tracing_appender::non_blocking::NonBlocking,
    /// The subscriber this layer is part of, to find the span an event happened in and its
    /// OpenTelemetry ids (weak: the subscriber owns this layer).
    dispatch: OnceLock<WeakDispatch>,
}

impl JsonLogLayer {
    pub(crate) fn new(writer: tracing_appender::non_blocking::NonBlocking) -> Self {
        JsonLogLayer {
            writer,
            dispatch: OnceLock::new(),
        }
    }

    /// The ids of the span the current event happened in: the innermost span entered on this
    /// thread that is part of a trace (a span of a crate kept out of traces, `h2`'s for one, is
    /// passed for its nearest traced parent), whichever layer enabled it (this layer's own
    /// filter, the log level, must not hide it).
    ///
    /// Not for the OpenTelemetry SDK's own events: the bridge may emit them while it holds the
    /// lock of that very span's data, which this lookup takes.
    fn trace_ids(&self, event: &Event<'_>) -> Option<crate::propagation::TraceIds> {
        if event.metadata().target().starts_with("opentelemetry") {
            return None;
        }
        let dispatch = self.dispatch.get()?.upgrade()?;
        let current = dispatch.current_span();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        registry
            .span(current.id()?)?
            .scope()
            .find_map(|span| crate::propagation::ids_of_span_id(&span.id(), &dispatch))
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Appends `,"name":value` for each field; `message` is written like any other field.
struct FieldWriter<'a>(&'a mut Vec<u8>);

impl FieldWriter<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        let _ = serde_json::to_writer(&mut *self.0, field.name());
        self.0.push(b':');
    }

    fn string(&mut self, field: &Field, value: &str) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.0, value);
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // JSON has no NaN or infinity; write those as strings rather than break the line.
        if value.is_finite() {
            let _ = write!(self.0, "{value}");
        } else {
            let _ = serde_json::to_writer(&mut *self.0, &value.to_string());
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, &format!("{value:?}"));
    }
}

const TIMESTAMP: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl<S> Layer<S> for JsonLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return; // an event raised while writing one: drop it rather than recurse
            };
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":\"");
            let _ = time::OffsetDateTime::now_utc().format_into(&mut *line, TIMESTAMP);
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(meta.level().as_str().as_bytes());
            line.extend_from_slice(b"\",\"target\":");
            let _ = serde_json::to_writer(&mut *line, meta.target());
            event.record(&mut FieldWriter(&mut line));
            if let Some(ids) = self.trace_ids(event) {
                line.extend_from_slice(b",\"trace_id\":\"");
                line.extend_from_slice(ids.trace_id.as_bytes());
                line.extend_from_slice(b"\",\"span_id\":\"");
                line.extend_from_slice(ids.span_id.as_bytes());
                line.push(b'"');
            }
            line.extend_from_slice(b"}\n");
            // A full queue or a closed stdout must not take the service down; the line is
            // lost (and counted), nothing else.
            let _ = self.writer.clone().write_all(&line);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines written by `log` under a subscriber with the OpenTelemetry bridge (traces of
    /// the `ordo` target only) and this layer, as JSON values.
    fn lines_with_traces(log: impl FnOnce()) -> Vec<serde_json::Value> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        let captured = Captured::default();
        let (writer, guard) = tracing_appender::non_blocking(captured.clone());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let bridge = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("ordo", tracing::Level::INFO),
            );
        let subscriber = tracing_subscriber::registry()
            .with(JsonLogLayer::new(writer))
            .with(bridge);
        tracing::subscriber::with_default(subscriber, log);
        drop(guard);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_line_carries_the_ids_of_its_traced_span_or_of_the_nearest_traced_parent() {
        let mut expected = None;
        let lines = lines_with_traces(|| {
            tracing::info!(target: "ordo", "outside any span");
            let traced = tracing::info_span!(target: "ordo", "request");
            let _in_request = traced.enter();
            expected = crate::propagation::ids_of(&traced);
            tracing::info!(target: "ordo", "in the request");
            // A span the bridge does not see (like `h2`'s): its events belong to the request.
            let untraced = tracing::info_span!(target: "h2", "frame");
            let _in_frame = untraced.enter();
            tracing::info!(target: "h2", "in a frame");
        });
        let expected = expected.expect("the traced span has ids");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        for line in &lines[1..] {
            assert_eq!(line["trace_id"], expected.trace_id.as_str(), "{line}");
            assert_eq!(line["span_id"], expected.span_id.as_str(), "{line}");
        }
    }

    #[test]
    fn every_line_is_valid_json_whatever_the_field_values() {
        let captured = Captured::default();
        let (writer, guard) = tracing_appender::non_blocking(captured.clone());
        let subscriber = tracing_subscriber::registry().with(JsonLogLayer::new(writer));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                quoted = "a \"quoted\"\nline\u{0}",
                count = 5u64,
                delta = -3i64,
                ratio = f64::NAN,
                ok = true,
                "hello {}",
                "world"
            );
        });
        drop(guard);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "hello world");
        assert_eq!(line["quoted"], "a \"quoted\"\nline\u{0}");
        assert_eq!(line["count"], 5);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["ratio"], "NaN");
        assert_eq!(line["ok"], true);
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

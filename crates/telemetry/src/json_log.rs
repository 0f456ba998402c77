//! JSON log lines: `timestamp`, `level`, `target`, `message`, the event's fields, and the
//! `trace_id`/`span_id` of the span the event happened in (tracing-subscriber's own JSON format
//! cannot know those).

use std::fmt;
use std::io::Write;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes through `writer`, a bounded non-blocking queue: a burst of logs never blocks a request,
/// it drops lines (counted) instead.
pub(crate) struct JsonLogLayer {
    pub(crate) writer: tracing_appender::non_blocking::NonBlocking,
}

struct FieldsVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl<S> Layer<S> for JsonLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = serde_json::Map::with_capacity(8);
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut FieldsVisitor(&mut line));
        if let Some(ids) = crate::propagation::active_ids() {
            line.insert("trace_id".into(), ids.trace_id.into());
            line.insert("span_id".into(), ids.span_id.into());
        }
        let mut bytes = serde_json::Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        // A full queue or a closed stdout must not take the service down; the line is lost
        // (and counted), nothing else.
        let _ = self.writer.clone().write_all(&bytes);
    }
}

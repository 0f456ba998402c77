//! The envelope of an event, and appending one to the outbox inside a write transaction.

use ordo_domain::{Error, Result};
use ordo_storage::WriteTx;
use ordo_storage::records::{NewOutboxEvent, OutboxRow};
use std::collections::HashMap;

/// One event as transports carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event_id: String,
    pub topic: String,
    /// The order the event is about.
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    /// W3C trace-context fields: the PRODUCER span of the publish, so a consumer's span is its
    /// child.
    pub headers: HashMap<String, String>,
}

impl Envelope {
    /// The envelope of a claimed outbox row; `headers` are filled in by the publisher.
    pub fn from_row(row: &OutboxRow) -> Result<Envelope> {
        Ok(Envelope {
            event_id: row.event_id.clone(),
            topic: row.topic.clone(),
            aggregate_id: row.aggregate_id.clone(),
            payload: serde_json::from_str(&row.payload)
                .map_err(|_| Error::internal("an outbox payload is not JSON"))?,
            headers: HashMap::new(),
        })
    }
}

/// Appends an event about `aggregate_id` to the outbox of `tx`, stamped with the trace context
/// of the current span. It is published only if `tx` commits.
pub async fn new_event(
    tx: &mut WriteTx,
    topic: &str,
    aggregate_id: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<String> {
    let event_id = format!("evt_{:032x}", uuid::Uuid::now_v7().as_u128());
    let trace_context = ordo_telemetry::propagation::inject_map(&tracing::Span::current());
    tx.append_outbox(&NewOutboxEvent {
        event_id: &event_id,
        topic,
        aggregate_id,
        payload: &to_json(payload)?,
        trace_context: &to_json(&trace_context)?,
        created_at_ms: now_ms,
    })
    .await?;
    Ok(event_id)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("cannot encode: {e}")))
}

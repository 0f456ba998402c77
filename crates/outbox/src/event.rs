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
    /// Which delivery of the event to its consumer this is; filled in by the transport that
    /// delivers it (the relay for the in-process transport, the broker subscription otherwise).
    pub delivery: Delivery,
}

/// One delivery of an event to one consumer: its number, whether another follows if it fails,
/// and the trace context of the failed attempt before it (linked from this attempt's span).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delivery {
    /// 1 for the first delivery.
    pub attempt: u32,
    /// No redelivery follows a failure of this one: the consumer's last chance to settle the
    /// event itself ([`Consumer::give_up`](crate::consumer::Consumer::give_up)) before it is
    /// dead-lettered.
    pub last: bool,
    /// The W3C context of the previous attempt's span, when the transport kept it.
    pub previous_attempt: HashMap<String, String>,
}

impl Delivery {
    /// Delivery number `attempt` of at most `max`.
    pub fn numbered(attempt: u32, max: u32) -> Delivery {
        Delivery {
            attempt: attempt.max(1),
            last: attempt >= max,
            previous_attempt: HashMap::new(),
        }
    }
}

impl Envelope {
    /// The envelope of a claimed outbox row, as the relay's publish attempt number
    /// `row.attempts` delivers it; `headers` are filled in by the publisher.
    pub fn from_row(row: &OutboxRow) -> Result<Envelope> {
        Ok(Envelope {
            event_id: row.event_id.clone(),
            topic: row.topic.clone(),
            aggregate_id: row.aggregate_id.clone(),
            payload: serde_json::from_str(&row.payload)
                .map_err(|_| Error::internal("an outbox payload is not JSON"))?,
            headers: HashMap::new(),
            delivery: Delivery::numbered(
                u32::try_from(row.attempts).unwrap_or(u32::MAX),
                u32::try_from(crate::relay::MAX_ATTEMPTS).unwrap_or(u32::MAX),
            ),
        })
    }
}

/// Appends an event about `aggregate_id` to the outbox of `tx`, stamped with the trace context
/// of the current span. It is published only if `tx` commits.
pub async fn new_event<P: serde::Serialize + ?Sized>(
    tx: &mut WriteTx,
    topic: &str,
    aggregate_id: &str,
    payload: &P,
    now_ms: i64,
) -> Result<String> {
    let event = outbox_event(topic, aggregate_id, payload, now_ms)?;
    tx.append_outbox(&event).await?;
    Ok(event.event_id)
}

/// An event about `aggregate_id`, stamped with the trace context of the current span, for a
/// write that appends it to the outbox itself (an order placement).
pub fn outbox_event<P: serde::Serialize + ?Sized>(
    topic: &str,
    aggregate_id: &str,
    payload: &P,
    now_ms: i64,
) -> Result<NewOutboxEvent> {
    let trace_context = ordo_telemetry::propagation::inject_map(&tracing::Span::current());
    Ok(NewOutboxEvent {
        event_id: format!("evt_{:032x}", uuid::Uuid::now_v7().as_u128()),
        topic: topic.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        payload: to_json(payload)?,
        trace_context: to_json(&trace_context)?,
        created_at_ms: now_ms,
    })
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("cannot encode: {e}")))
}

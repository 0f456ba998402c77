//! Where the relay publishes. A transport acknowledges an event only when it is safe to forget
//! it on this side: for the in-process transport, once every subscribed consumer committed; for
//! a broker, once the broker confirmed it stored the message.
//!
//! [`start`] chooses the transport once, from `ORDO_BROKER_URL`:
//! - unset: [`InProcess`], the relay calls this process's consumers directly;
//! - `amqp://` / `amqps://`: [`rabbitmq`]: topic exchange `<ns>.events`, one durable queue
//!   `<ns>.<consumer>` per consumer, dead letters in `<ns>.<consumer>.dead`;
//! - `nats://` (and `tls://`): [`nats`]: JetStream stream `<NS>_EVENTS` on `<ns>.events.>`
//!   (subject `<ns>.events.<topic>`), one durable pull consumer per consumer, dead letters
//!   republished to `<ns>.dead.<consumer>`.
//!
//! `<ns>` is the namespace (`ORDO_BROKER_NAMESPACE`, default `ordo`). With a broker, the relay
//! publishes to it and one subscription task per consumer feeds its [`ConsumerRunner`]; a
//! message is acknowledged after the runner committed, redelivered on failure up to
//! [`MAX_DELIVERIES`] times, then dead-lettered and counted (`consumer_events_dead_lettered`).

mod in_process;
pub mod nats;
pub mod rabbitmq;

pub use in_process::InProcess;

use crate::consumer::ConsumerRunner;
use crate::event::{Delivery, Envelope};
use ordo_domain::Result;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
pub type WaveFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<()>>> + Send + 'a>>;

/// Events published at once, each of another order.
const WAVE_PARALLELISM: usize = 16;

pub trait Transport: Send + Sync + 'static {
    /// `messaging.system` of the spans (`ordo_in_process`, `rabbitmq`, `nats`).
    fn system(&self) -> &'static str;

    /// Publishes `event`; `Ok` is the acknowledgement.
    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a>;

    /// Publishes a wave of events, each of another order, each with the PRODUCER span it is
    /// published in; answers in their order. By default each one is published on its own, up
    /// to [`WAVE_PARALLELISM`] at once; a transport that can do better with many events at
    /// once (the in-process one commits them in batches) says so here.
    fn publish_wave<'a>(&'a self, wave: &'a [(Envelope, tracing::Span)]) -> WaveFuture<'a> {
        use futures::stream::{self, StreamExt};
        use tracing::Instrument;
        Box::pin(
            stream::iter(wave)
                .map(|(event, span)| self.publish(event).instrument(span.clone()))
                .buffered(WAVE_PARALLELISM)
                .collect(),
        )
    }

    /// Whether a failed publish is the transport being away rather than the event failing. A
    /// broker stores whatever it is given, so its failures (unreachable, channel closed, no
    /// confirmation) say nothing about the event: the relay waits them out and never counts
    /// them toward the event's attempts or dead-letters it for them. In process, a publish runs
    /// the consumers, so its failures are theirs and count (`false` there).
    fn failures_are_outages(&self) -> bool {
        true
    }
}

/// Deliveries of one message to one consumer before it is dead-lettered.
pub const MAX_DELIVERIES: u32 = 5;
/// Bound of every call to a broker (connect, declare, publish and its confirmation, ack).
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a consumer may hold unacknowledged.
pub const PREFETCH: u16 = 16;
/// Message header carrying the order id the event is about.
pub const AGGREGATE_HEADER: &str = "ordo-aggregate-id";
/// Prefix of the message headers carrying the trace context of the previous, failed attempt.
pub const PREVIOUS_ATTEMPT_PREFIX: &str = "ordo-previous-";
/// Message header carrying the event's topic (NATS subjects and dead letters keep it too).
pub const TOPIC_HEADER: &str = "ordo-topic";

/// The chosen transport, and the subscription tasks that feed the consumers from a broker
/// (none for the in-process transport). The tasks end once the `stop` token given to [`start`]
/// is cancelled, after finishing the message in hand.
pub struct Started {
    pub transport: Arc<dyn Transport>,
    pub subscriptions: Vec<JoinHandle<()>>,
}

/// Why the transport could not start (the broker is unreachable or refused the set-up).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Chooses the transport from `broker_url` (see the module documentation), connects, declares
/// what it needs, and starts one subscription task per consumer.
pub async fn start(
    broker_url: Option<&str>,
    namespace: &str,
    consumers: Vec<Arc<ConsumerRunner>>,
    stop: CancellationToken,
) -> std::result::Result<Started, StartError> {
    let Some(url) = broker_url.filter(|url| !url.trim().is_empty()) else {
        return Ok(Started {
            transport: Arc::new(InProcess::new(consumers)),
            subscriptions: Vec::new(),
        });
    };
    if !valid_namespace(namespace) {
        return Err(StartError(format!(
            "the broker namespace {namespace:?} must be 1 to 64 of a-z, 0-9, '_' and '-' \
             (ORDO_BROKER_NAMESPACE)"
        )));
    }
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "amqp" | "amqps" => rabbitmq::start(url, namespace, consumers, stop).await,
        "nats" | "tls" => nats::start(url, namespace, consumers, stop).await,
        _ => Err(StartError(format!(
            "unknown broker scheme {scheme:?}: use amqp:// (RabbitMQ) or nats:// (NATS JetStream)"
        ))),
    }
}

fn valid_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Rebuilds an envelope from what a broker carried: the body is the JSON payload, the headers
/// the trace context plus ordo's own.
#[doc(hidden)]
pub fn envelope_from_parts(
    event_id: String,
    topic: String,
    mut headers: HashMap<String, String>,
    body: &[u8],
    delivery: Delivery,
) -> std::result::Result<Envelope, String> {
    let payload = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let aggregate_id = headers.remove(AGGREGATE_HEADER).unwrap_or_default();
    headers.remove(TOPIC_HEADER);
    let mut delivery = delivery;
    headers.retain(
        |name, value| match name.strip_prefix(PREVIOUS_ATTEMPT_PREFIX) {
            Some(field) => {
                delivery
                    .previous_attempt
                    .insert(field.to_owned(), std::mem::take(value));
                false
            }
            None => true,
        },
    );
    Ok(Envelope {
        event_id,
        topic,
        aggregate_id,
        payload,
        headers,
        delivery,
    })
}

/// The headers that carry a failed attempt's span context to the redelivery (`traceparent`
/// becomes `ordo-previous-traceparent`, …), so the next attempt's span links to it.
fn previous_attempt_headers(context: &HashMap<String, String>) -> Vec<(String, String)> {
    context
        .iter()
        .map(|(name, value)| (format!("{PREVIOUS_ATTEMPT_PREFIX}{name}"), value.clone()))
        .collect()
}

/// The trace context and ordo's headers of `event`, as a broker carries them.
fn outgoing_headers(event: &Envelope) -> Vec<(&str, &str)> {
    let mut headers: Vec<(&str, &str)> = event
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push((AGGREGATE_HEADER, event.aggregate_id.as_str()));
    headers.push((TOPIC_HEADER, event.topic.as_str()));
    headers
}

/// The most characters of a failure's reason a dead letter carries (`ordo-error`,
/// `x-ordo-error`).
pub const MAX_REASON_CHARS: usize = 1_000;

/// A failure's reason fit for a message header: on one line (every control character, line
/// breaks included, becomes a space: a NATS header value cannot hold one at all) and at most
/// [`MAX_REASON_CHARS`] characters. A consumer's error says anything it likes.
pub fn header_reason(reason: &str) -> String {
    reason
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Waits before a redelivery: 200 ms · 2^(delivery - 1), capped at 5 s.
fn redelivery_delay(delivery: u32) -> Duration {
    Duration::from_millis((200u64 << delivery.saturating_sub(1).min(5)).min(5_000))
}

/// The message body of `event`: its payload as JSON.
fn event_body(event: &Envelope) -> Result<Vec<u8>, ordo_domain::Error> {
    serde_json::to_vec(&event.payload).map_err(|e| internal("cannot encode an event", e))
}

/// `call` to the broker, bounded by [`BROKER_TIMEOUT`]; its error says which call failed.
async fn timed<T, E: std::fmt::Display>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(BROKER_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what}: no answer within {BROKER_TIMEOUT:?}")),
    }
}

/// Counts and logs a message `consumer` gave up on, now parked in `destination` (a queue or
/// subject) after `deliveries` deliveries.
fn record_dead_letter(
    broker: &'static str,
    consumer: &'static str,
    destination: &dyn std::fmt::Display,
    deliveries: u32,
) {
    ordo_telemetry::metrics::count_consumer_dead_letter(consumer);
    tracing::error!(
        broker,
        consumer,
        %destination,
        deliveries,
        "{broker}: message dead-lettered"
    );
}

fn internal(context: &str, error: impl std::fmt::Display) -> ordo_domain::Error {
    ordo_domain::Error::internal(format!("{context}: {error}"))
}

/// Delivered messages (`M`: what settles one) and the events read from them.
pub(super) type Pending<M> = Vec<(M, Box<Envelope>)>;

/// The first pending event of each order, in delivery order, to be handled as one batch; and
/// the rest, for a later batch: an order's events are applied in their order.
pub(super) fn one_event_per_order<M>(pending: Pending<M>) -> (Pending<M>, Pending<M>) {
    let mut now: Pending<M> = Vec::with_capacity(pending.len());
    let mut later = Vec::new();
    for (message, event) in pending {
        if now
            .iter()
            .any(|(_, taken)| taken.aggregate_id == event.aggregate_id)
        {
            later.push((message, event));
        } else {
            now.push((message, event));
        }
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_plain_names() {
        assert!(valid_namespace("ordo"));
        assert!(valid_namespace("t_0a-1"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a.b"));
        assert!(!valid_namespace("A"));
        assert!(!valid_namespace(&"a".repeat(65)));
    }

    #[test]
    fn envelopes_round_trip_through_broker_parts() {
        let event = Envelope {
            event_id: "evt_1".into(),
            topic: "order.created".into(),
            aggregate_id: "ord_1".into(),
            payload: serde_json::json!({"a": 1}),
            headers: HashMap::from([("traceparent".to_owned(), "00-x-y-01".to_owned())]),
            delivery: Delivery::numbered(2, MAX_DELIVERIES),
        };
        let previous = HashMap::from([("traceparent".to_owned(), "00-a-b-01".to_owned())]);
        let mut headers: HashMap<String, String> = outgoing_headers(&event)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        headers.extend(previous_attempt_headers(&previous));
        let body = serde_json::to_vec(&event.payload).unwrap();
        let back = envelope_from_parts(
            "evt_1".into(),
            "order.created".into(),
            headers,
            &body,
            Delivery::numbered(2, MAX_DELIVERIES),
        )
        .unwrap();
        let mut expected = event;
        expected.delivery.previous_attempt = previous;
        assert_eq!(back, expected);
    }

    #[test]
    fn reasons_fit_a_header_line() {
        assert_eq!(header_reason("no\r\nway\t!"), "no  way !");
        assert_eq!(
            header_reason(&"é".repeat(5_000)).chars().count(),
            MAX_REASON_CHARS
        );
        assert_eq!(header_reason("fine"), "fine");
    }

    #[test]
    fn redelivery_waits_grow_and_stay_bounded() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(200));
        assert_eq!(redelivery_delay(2), Duration::from_millis(400));
        assert_eq!(redelivery_delay(30), Duration::from_secs(5));
    }
}

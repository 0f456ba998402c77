//! NATS JetStream (async-nats).
//!
//! - Publishing: stream `<NS>_EVENTS` (file storage) on `<ns>.events.>` and `<ns>.dead.>`;
//!   subject `<ns>.events.<topic>`; `Nats-Msg-Id` = event id, so the server drops a republished
//!   duplicate within its duplicate window; trace context, `ordo-aggregate-id` and `ordo-topic`
//!   in the headers; `publish` returns `Ok` only on the JetStream ack (within a timeout).
//!   async-nats reconnects by itself.
//! - Consuming: one durable pull consumer per consumer name (`.` in the name becomes `_`),
//!   explicit ack after the runner committed, at most [`PREFETCH`](super::PREFETCH) pending;
//!   filtered to its topic (one topic), its topics (several, NATS ≥ 2.10), or, on older
//!   servers, to `<ns>.events.>` with the other topics acked unseen. The messages already
//!   delivered when one is taken are handled with it as a batch (one transaction, one event
//!   per order: `ConsumerRunner::attempt_batch`), each acked after its batch committed.
//! - Failures: a nak with a growing delay; `max_deliver` = [`MAX_DELIVERIES`](super::MAX_DELIVERIES),
//!   and the last failed delivery is republished to `<ns>.dead.<consumer>` (kept in the stream),
//!   terminated (`AckKind::Term`) and counted (`consumer_events_dead_lettered`).
//! - A durable keeps the filter it was created with: changing a consumer's topics needs its
//!   durable deleted (`nats consumer rm <NS>_EVENTS <name>`).

use super::{
    BROKER_TIMEOUT, MAX_DELIVERIES, PREFETCH, PublishFuture, StartError, Started, TOPIC_HEADER,
    Transport, envelope_from_parts, event_body, header_reason, internal, one_event_per_order,
    outgoing_headers, record_dead_letter, redelivery_delay, timed,
};
use crate::consumer::ConsumerRunner;
use crate::event::{Delivery, Envelope};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SYSTEM: &str = "nats";
const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The stream of `namespace` (`ORDO_EVENTS` for `ordo`).
pub fn stream_name(namespace: &str) -> String {
    format!("{}_EVENTS", namespace.to_ascii_uppercase())
}

/// The subject of `topic`.
pub fn subject(namespace: &str, topic: &str) -> String {
    format!("{namespace}.events.{topic}")
}

/// The subject dead letters of `consumer` are republished to.
pub fn dead_subject(namespace: &str, consumer: &str) -> String {
    format!("{namespace}.dead.{}", durable_name(consumer))
}

/// The durable consumer name of `consumer`.
pub fn durable_name(consumer: &str) -> String {
    consumer.replace(['.', ' ', '*', '>'], "_")
}

pub struct Nats {
    jetstream: jetstream::Context,
    namespace: String,
}

pub(super) async fn start(
    url: &str,
    namespace: &str,
    consumers: Vec<Arc<ConsumerRunner>>,
    stop: CancellationToken,
) -> Result<Started, StartError> {
    let options = async_nats::ConnectOptions::new()
        .name("ordo")
        .connection_timeout(BROKER_TIMEOUT)
        .request_timeout(Some(BROKER_TIMEOUT));
    let client = timed("connect", options.connect(url))
        .await
        .map_err(|e| StartError(format!("cannot reach NATS: {e}")))?;
    let modern = server_at_least(&client.server_info().version, 2, 10);
    let context = jetstream::new(client);
    let stream_name = stream_name(namespace);
    let stream = timed(
        "create the stream",
        context.get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![
                format!("{namespace}.events.>"),
                format!("{namespace}.dead.>"),
            ],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        }),
    )
    .await
    .map_err(|e| {
        StartError(format!(
            "cannot use the JetStream stream {stream_name}: {e}"
        ))
    })?;
    let mut subscriptions = Vec::new();
    for runner in consumers {
        let name = durable_name(runner.name());
        let topics = runner.topics();
        let (filter_subject, filter_subjects) = match topics {
            [topic] => (subject(namespace, topic), Vec::new()),
            _ if modern => (
                String::new(),
                topics.iter().map(|t| subject(namespace, t)).collect(),
            ),
            _ => (format!("{namespace}.events.>"), Vec::new()),
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject,
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: i64::from(MAX_DELIVERIES),
            max_ack_pending: i64::from(PREFETCH),
            ..consumer::pull::Config::default()
        };
        let pull = timed(
            "create the consumer",
            stream.get_or_create_consumer(&name, config),
        )
        .await
        .map_err(|e| StartError(format!("cannot create the NATS consumer {name}: {e}")))?;
        let subscription = Subscription {
            context: context.clone(),
            dead_subject: dead_subject(namespace, runner.name()),
            prefix: format!("{namespace}.events."),
            runner,
            failed_attempts: std::sync::Mutex::default(),
        };
        subscriptions.push(tokio::spawn(subscription.run(pull, stop.clone())));
    }
    Ok(Started {
        transport: Arc::new(Nats {
            jetstream: context,
            namespace: namespace.to_owned(),
        }),
        subscriptions,
    })
}

/// Whether a server version such as `2.9.10` is at least `major.minor`.
fn server_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

fn header_map(pairs: &[(&str, &str)]) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (key, value) in pairs {
        headers.insert(*key, *value);
    }
    headers
}

impl Transport for Nats {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            let body = event_body(event)?;
            let mut headers = header_map(&outgoing_headers(event));
            headers.insert(MSG_ID_HEADER, event.event_id.as_str());
            let publish = async {
                self.jetstream
                    .publish_with_headers(
                        subject(&self.namespace, &event.topic),
                        headers,
                        body.into(),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            timed("JetStream publish", publish)
                .await
                .map(|_ack| ())
                .map_err(|e| internal("NATS publish", e))
        })
    }
}

struct Subscription {
    context: jetstream::Context,
    dead_subject: String,
    /// `<ns>.events.`: a subject minus this prefix is the topic.
    prefix: String,
    runner: Arc<ConsumerRunner>,
    /// Event id → the trace context of its last failed attempt here, for the redelivery's link.
    failed_attempts: std::sync::Mutex<HashMap<String, HashMap<String, String>>>,
}

/// Bound of [`Subscription::failed_attempts`].
const FAILED_ATTEMPTS_KEPT: usize = 10_000;

impl Subscription {
    async fn run(self, pull: consumer::Consumer<consumer::pull::Config>, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let messages = match timed("pull", pull.messages()).await {
                Ok(messages) => messages,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(consumer = self.runner.name(), %error, "nats: cannot pull");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(redelivery_delay(failures)) => {}
                    }
                    continue;
                }
            };
            tokio::pin!(messages);
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    None => break,
                    Some(Err(error)) => {
                        failures += 1;
                        tracing::warn!(consumer = self.runner.name(), %error, "nats: pull failed");
                        if failures > 3 {
                            break;
                        }
                    }
                    // The messages in hand are finished even if `stop` fires meanwhile.
                    Some(Ok(message)) => {
                        failures = 0;
                        let (batch, ended) = with_delivered(message, &mut messages);
                        self.handle_batch(batch).await;
                        if ended {
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(redelivery_delay(failures.max(1))) => {}
            }
        }
    }

    fn take_previous_attempt(&self, event_id: &str) -> HashMap<String, String> {
        let mut failed = self
            .failed_attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failed.remove(event_id).unwrap_or_default()
    }

    fn keep_previous_attempt(&self, event_id: &str, context: HashMap<String, String>) {
        let mut failed = self
            .failed_attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Redeliveries that went to another instance never come back for theirs.
        if failed.len() >= FAILED_ATTEMPTS_KEPT {
            failed.clear();
        }
        failed.insert(event_id.to_owned(), context);
    }

    /// Reads a delivered message: an event for this consumer, or one to settle unseen.
    fn read(&self, message: &jetstream::Message) -> Read {
        let delivered = delivered(message);
        let (event_id, topic, headers) = read_headers(
            message.message.headers.as_ref(),
            message.message.subject.as_str(),
            &self.prefix,
        );
        if !self.runner.topics().contains(&topic.as_str()) {
            // An older server cannot filter on several subjects: not ours.
            return Read::NotOurs;
        }
        // A nak cannot add headers: the failed attempt's span context waits here for the
        // redelivery (to this instance, usually; another instance's attempt has no link).
        let mut delivery = Delivery::numbered(delivered, MAX_DELIVERIES);
        delivery.previous_attempt = self.take_previous_attempt(&event_id);
        // Unreadable messages are dead at once: no redelivery can help them.
        match envelope_from_parts(event_id, topic, headers, &message.message.payload, delivery) {
            Ok(envelope) if !envelope.event_id.is_empty() => Read::Event(Box::new(envelope)),
            Ok(_) => Read::Unreadable("no Nats-Msg-Id".to_owned()),
            Err(error) => Read::Unreadable(error),
        }
    }

    /// Handles the messages delivered together: the events for this consumer in batches
    /// ([`ConsumerRunner::attempt_batch`]: one transaction for a batch, and each event its own
    /// outcome), each settled after its batch: acked, or nakked or dead-lettered as alone.
    /// A batch holds one event per order; an order's later event waits for the next batch,
    /// so each order's events are still applied in their order.
    async fn handle_batch(&self, messages: Vec<jetstream::Message>) {
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let settled = match self.read(&message) {
                Read::Event(envelope) => {
                    pending.push((message, envelope));
                    continue;
                }
                Read::NotOurs => timed("ack", message.ack()).await,
                Read::Unreadable(reason) => self.settle_failure(&message, reason, false).await,
            };
            self.report(settled);
        }
        while !pending.is_empty() {
            let (batch, later) = one_event_per_order(pending);
            let envelopes: Vec<&Envelope> = batch.iter().map(|(_, event)| &**event).collect();
            let attempts = self.runner.attempt_batch(&envelopes, SYSTEM).await;
            for ((message, event), attempt) in batch.iter().zip(attempts) {
                let settled = match attempt.result {
                    Ok(()) => timed("ack", message.ack()).await,
                    Err(error) => {
                        if event.delivery.attempt < MAX_DELIVERIES {
                            self.keep_previous_attempt(&event.event_id, attempt.context);
                        }
                        self.settle_failure(message, error.to_string(), true).await
                    }
                };
                self.report(settled);
            }
            pending = later;
        }
    }

    fn report(&self, settled: Result<(), String>) {
        if let Err(error) = settled {
            tracing::warn!(consumer = self.runner.name(), %error, "nats: cannot settle a message");
        }
    }

    /// A failed delivery: nakked with a growing delay while a redelivery may help, else
    /// republished to the dead-letter subject, terminated and counted.
    async fn settle_failure(
        &self,
        message: &jetstream::Message,
        failure: String,
        retryable: bool,
    ) -> Result<(), String> {
        let delivered = delivered(message);
        if retryable && delivered < MAX_DELIVERIES {
            let nak = AckKind::Nak(Some(redelivery_delay(delivered)));
            return timed("nak", message.ack_with(nak)).await;
        }
        let headers = dead_letter_headers(message.message.headers.as_ref(), &failure);
        let republish = async {
            self.context
                .publish_with_headers(
                    self.dead_subject.clone(),
                    headers,
                    message.message.payload.clone(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        timed("dead-letter publish", republish).await?;
        timed("term", message.ack_with(AckKind::Term)).await?;
        record_dead_letter("nats", self.runner.name(), &self.dead_subject, delivered);
        Ok(())
    }
}

/// Which delivery of its message this is, as JetStream counts (at least 1).
fn delivered(message: &jetstream::Message) -> u32 {
    message
        .info()
        .map(|info| u32::try_from(info.delivered).unwrap_or(1))
        .unwrap_or(1)
}

/// What a delivered message is to its consumer.
enum Read {
    Event(Box<Envelope>),
    /// Another consumer's topic (an older server's wider filter): acked unseen.
    NotOurs,
    /// No event can be read from it: dead-lettered at once.
    Unreadable(String),
}

/// `first` and the messages delivered with it, already received (nothing waits for more), up
/// to [`PREFETCH`]; and whether the stream ended meanwhile.
fn with_delivered(
    first: jetstream::Message,
    messages: &mut std::pin::Pin<&mut consumer::pull::Stream>,
) -> (Vec<jetstream::Message>, bool) {
    let mut batch = vec![first];
    while batch.len() < usize::from(PREFETCH) {
        match messages.next().now_or_never() {
            Some(Some(Ok(message))) => batch.push(message),
            // An error is met again, and reported, by the next read of the stream.
            Some(Some(Err(_))) | None => break,
            Some(None) => return (batch, true),
        }
    }
    (batch, false)
}

/// The headers of a dead letter: the original's, with `ordo-error` = `failure` (on one line,
/// cut: [`header_reason`]), and a
/// `Nats-Msg-Id` of its own (the original's plus `:dead`), so that the server does not drop the
/// dead copy as a duplicate of the original.
#[doc(hidden)]
pub fn dead_letter_headers(
    original: Option<&async_nats::HeaderMap>,
    failure: &str,
) -> async_nats::HeaderMap {
    let mut headers = original.cloned().unwrap_or_default();
    headers.insert("ordo-error", header_reason(failure));
    let dead_id = format!(
        "{}:dead",
        headers
            .get(MSG_ID_HEADER)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    );
    headers.insert(MSG_ID_HEADER, dead_id.as_str());
    headers
}

/// Reads a message's headers as a subscription does: the event id (`Nats-Msg-Id`), the topic
/// (`ordo-topic`, else the subject after `prefix`) and the other headers, the first value of
/// each (the trace context and ordo's own), for [`envelope_from_parts`].
#[doc(hidden)]
pub fn read_headers(
    map: Option<&async_nats::HeaderMap>,
    subject: &str,
    prefix: &str,
) -> (String, String, HashMap<String, String>) {
    let mut headers = HashMap::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            if let Some(value) = values.first() {
                headers.insert(name.to_string(), value.as_str().to_owned());
            }
        }
    }
    let event_id = headers.remove(MSG_ID_HEADER).unwrap_or_default();
    let topic = headers
        .get(TOPIC_HEADER)
        .cloned()
        .unwrap_or_else(|| subject.strip_prefix(prefix).unwrap_or_default().to_owned());
    (event_id, topic, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        assert_eq!(stream_name("ordo"), "ORDO_EVENTS");
        assert_eq!(subject("ordo", "order.paid"), "ordo.events.order.paid");
        assert_eq!(dead_subject("ordo", "a.b"), "ordo.dead.a_b");
        assert!(server_at_least("2.10.1", 2, 10));
        assert!(!server_at_least("2.9.10", 2, 10));
        assert!(server_at_least("v3.0.0", 2, 10));
    }

    /// Found by fuzzing (fuzz/ broker_headers): a consumer's error with a line break made the
    /// dead letter's header panic (async-nats refuses CR and LF in a value), which killed the
    /// subscription task: the consumer stopped until a restart.
    #[test]
    fn a_failure_with_line_breaks_still_dead_letters() {
        let mut original = async_nats::HeaderMap::new();
        original.insert(MSG_ID_HEADER, "evt_1");
        original.insert("traceparent", "00-x-y-01");
        let dead = dead_letter_headers(Some(&original), "carrier said:\r\n502 Bad Gateway\n");
        assert_eq!(
            dead.get("ordo-error").unwrap().as_str(),
            "carrier said:  502 Bad Gateway "
        );
        assert_eq!(dead.get(MSG_ID_HEADER).unwrap().as_str(), "evt_1:dead");
        assert_eq!(dead.get("traceparent").unwrap().as_str(), "00-x-y-01");
        let dead = dead_letter_headers(None, &"x".repeat(100_000));
        assert_eq!(dead.get("ordo-error").unwrap().as_str().len(), 1_000);
        assert_eq!(dead.get(MSG_ID_HEADER).unwrap().as_str(), ":dead");
    }
}

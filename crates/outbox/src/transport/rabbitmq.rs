//! RabbitMQ (AMQP 0-9-1, lapin).
//!
//! - Publishing: a durable topic exchange `<ns>.events`; routing key = topic; persistent
//!   messages, `message_id` = event id, trace context and `ordo-aggregate-id` in the headers;
//!   publisher confirms: `publish` returns `Ok` only on the broker's ack (a nack, a returned
//!   message or a timeout is an error, so the relay retries). The connection is opened again
//!   after a failure.
//! - Consuming: one durable queue `<ns>.<consumer>` per consumer, bound to its topics, prefetch
//!   [`PREFETCH`](super::PREFETCH). The deliveries already received when one is taken are
//!   handled with it as a batch (one transaction, one event per order:
//!   `ConsumerRunner::attempt_batch`); a delivery is acked after its batch committed.
//! - Failures (the retry scheme): on an error the message is republished (confirmed) to the
//!   back of its own queue with the header `x-ordo-delivery` = n + 1 after a short backoff, then
//!   the original is acked; at [`MAX_DELIVERIES`](super::MAX_DELIVERIES) (or when the message
//!   cannot be read at all) it goes to the durable queue `<ns>.<consumer>.dead` instead and is
//!   counted (`consumer_events_dead_lettered`). A crash between republish and ack delivers it
//!   once more, which the processed-event ids absorb. This works the same on classic and quorum
//!   queues and on every RabbitMQ version.

use super::{
    MAX_DELIVERIES, PREFETCH, PublishFuture, StartError, Started, Transport, envelope_from_parts,
    event_body, header_reason, internal, one_event_per_order, outgoing_headers,
    previous_attempt_headers, record_dead_letter, redelivery_delay, timed,
};
use crate::consumer::ConsumerRunner;
use crate::event::{Delivery as EventDelivery, Envelope};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub const SYSTEM: &str = "rabbitmq";
/// Header counting the deliveries of a message to one consumer (absent: the first).
pub const DELIVERY_HEADER: &str = "x-ordo-delivery";

/// The exchange events are published to.
pub fn exchange_name(namespace: &str) -> String {
    format!("{namespace}.events")
}

/// The queue of `consumer`.
pub fn queue_name(namespace: &str, consumer: &str) -> String {
    format!("{namespace}.{consumer}")
}

/// The dead-letter queue of `consumer`.
pub fn dead_queue_name(namespace: &str, consumer: &str) -> String {
    format!("{namespace}.{consumer}.dead")
}

/// Publishes to the `<ns>.events` exchange with publisher confirms.
pub struct RabbitMq {
    url: String,
    exchange: String,
    /// The publishing connection and its confirm-mode channel; `None` after a failure, opened
    /// again by the next publish. The lock is held to take the channel, never across a
    /// publish: the publishes of a wave share the channel, each awaiting its own confirm.
    publisher: Mutex<Option<Arc<(Connection, Channel)>>>,
}

pub(super) async fn start(
    url: &str,
    namespace: &str,
    consumers: Vec<Arc<ConsumerRunner>>,
    stop: CancellationToken,
) -> Result<Started, StartError> {
    let exchange = exchange_name(namespace);
    let (connection, channel) = open(url)
        .await
        .map_err(|e| StartError(format!("cannot reach RabbitMQ: {e}")))?;
    declare_exchange(&channel, &exchange)
        .await
        .map_err(|e| StartError(format!("cannot declare the exchange {exchange}: {e}")))?;
    for consumer in &consumers {
        declare_queues(&channel, namespace, &exchange, consumer)
            .await
            .map_err(|e| {
                StartError(format!(
                    "cannot declare the queues of consumer {}: {e}",
                    consumer.name()
                ))
            })?;
    }
    let subscriptions = consumers
        .into_iter()
        .map(|consumer| {
            let subscription = Subscription {
                url: url.to_owned(),
                queue: queue_name(namespace, consumer.name()),
                dead_queue: dead_queue_name(namespace, consumer.name()),
                consumer,
            };
            tokio::spawn(subscription.run(stop.clone()))
        })
        .collect();
    Ok(Started {
        transport: Arc::new(RabbitMq {
            url: url.to_owned(),
            exchange,
            publisher: Mutex::new(Some(Arc::new((connection, channel)))),
        }),
        subscriptions,
    })
}

/// A connection and a channel in confirm mode.
async fn open(url: &str) -> Result<(Connection, Channel), String> {
    let properties = ConnectionProperties::default().with_connection_name("ordo".into());
    let connection = timed("connect", Connection::connect(url, properties)).await?;
    let channel = timed("open a channel", connection.create_channel()).await?;
    timed(
        "enable publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok((connection, channel))
}

async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), String> {
    timed(
        "exchange.declare",
        channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

async fn declare_queues(
    channel: &Channel,
    namespace: &str,
    exchange: &str,
    consumer: &ConsumerRunner,
) -> Result<(), String> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let queue = queue_name(namespace, consumer.name());
    for name in [&queue, &dead_queue_name(namespace, consumer.name())] {
        timed(
            "queue.declare",
            channel.queue_declare(name.as_str().into(), durable, FieldTable::default()),
        )
        .await?;
    }
    for topic in consumer.topics() {
        timed(
            "queue.bind",
            channel.queue_bind(
                queue.as_str().into(),
                exchange.into(),
                (*topic).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    Ok(())
}

/// Publishes on `channel` and waits for the broker's confirmation.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), String> {
    let publish = async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        confirm.await
    };
    let confirmation = timed("basic.publish", publish).await?;
    if confirmation.is_nack() {
        return Err("the broker refused the message (nack)".to_owned());
    }
    if confirmation.take_message().is_some() {
        return Err("the broker returned the message".to_owned());
    }
    Ok(())
}

fn headers_table(headers: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in headers {
        table.insert(
            (*key).into(),
            AMQPValue::LongString(LongString::from((*value).to_owned())),
        );
    }
    table
}

impl Transport for RabbitMq {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            let body = event_body(event)?;
            let properties = BasicProperties::default()
                .with_message_id(event.event_id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers_table(&outgoing_headers(event)));
            let publisher = {
                let mut publisher = self.publisher.lock().await;
                match publisher.as_ref() {
                    Some(open) => Arc::clone(open),
                    None => {
                        let (connection, channel) = open(&self.url)
                            .await
                            .map_err(|e| internal("RabbitMQ unreachable", e))?;
                        // The broker may have lost its definitions (a non-durable restart).
                        declare_exchange(&channel, &self.exchange)
                            .await
                            .map_err(|e| internal("RabbitMQ exchange", e))?;
                        Arc::clone(publisher.insert(Arc::new((connection, channel))))
                    }
                }
            };
            let (_, channel) = &*publisher;
            let result =
                publish_confirmed(channel, &self.exchange, &event.topic, &body, properties).await;
            if let Err(error) = result {
                // Open afresh next time: the channel may be closed or its confirms lost. Only
                // this channel: another publish may have opened a new one meanwhile.
                let failed = {
                    let mut current = self.publisher.lock().await;
                    match current.as_ref() {
                        Some(open) if Arc::ptr_eq(open, &publisher) => current.take(),
                        _ => None,
                    }
                };
                if let Some(failed) = failed {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        failed.0.close(0, "publish failed".into()),
                    )
                    .await;
                }
                return Err(internal("RabbitMQ publish", error));
            }
            Ok(())
        })
    }
}

/// Feeds one consumer from its queue until stopped.
struct Subscription {
    url: String,
    queue: String,
    dead_queue: String,
    consumer: Arc<ConsumerRunner>,
}

impl Subscription {
    /// Consumes, and after a lost connection connects again (backing off), until `stop`.
    async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            match self.consume(&stop).await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        consumer = self.consumer.name(),
                        %error,
                        "rabbitmq: subscription lost; connecting again"
                    );
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(redelivery_delay(failures)) => {}
                    }
                }
            }
        }
    }

    /// One connection's worth of consuming: `Ok` when stopped, `Err` when the connection failed.
    async fn consume(&self, stop: &CancellationToken) -> Result<(), String> {
        let (connection, channel) = open(&self.url).await?;
        timed(
            "basic.qos",
            channel.basic_qos(PREFETCH, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("ordo-{}-{:x}", self.consumer.name(), std::process::id());
        let mut deliveries = timed(
            "basic.consume",
            channel.basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let outcome = loop {
            let next = tokio::select! {
                () = stop.cancelled() => break Ok(()),
                next = deliveries.next() => next,
            };
            match next {
                None => break Err("the consumer was cancelled by the broker".to_owned()),
                Some(Err(error)) => break Err(error.to_string()),
                // The messages in hand are finished even if `stop` fires meanwhile.
                Some(Ok(delivery)) => {
                    let (batch, ended) = with_received(delivery, &mut deliveries);
                    if let Err(error) = self.handle_batch(&channel, batch, stop).await {
                        break Err(error);
                    }
                    if let Some(reason) = ended {
                        break Err(reason);
                    }
                }
            }
        };
        // Unacked prefetched messages go back to the queue when the channel closes.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            connection.close(0, "ordo stopping".into()),
        )
        .await;
        outcome
    }

    /// Handles the deliveries received together: the events in batches
    /// ([`ConsumerRunner::attempt_batch`]: one transaction for a batch, each event its own
    /// outcome; one event per order in a batch, so an order's events keep their order), each
    /// acked after its batch committed, or retried or dead-lettered as alone.
    async fn handle_batch(
        &self,
        channel: &Channel,
        deliveries: Vec<Delivery>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut pending = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let (envelope, delivery_count) = read_delivery(
                &delivery.properties,
                delivery.routing_key.as_str(),
                &delivery.data,
            );
            match envelope {
                Ok(envelope) if !envelope.event_id.is_empty() => {
                    pending.push(((delivery, delivery_count), Box::new(envelope)));
                }
                // Unreadable messages (no id, not JSON) go straight to the dead letters.
                _ => {
                    self.settle_failure(
                        channel,
                        &delivery,
                        delivery_count,
                        None,
                        HashMap::new(),
                        stop,
                    )
                    .await?;
                }
            }
        }
        while !pending.is_empty() {
            let (batch, later) = one_event_per_order(pending);
            let events: Vec<&Envelope> = batch.iter().map(|(_, event)| &**event).collect();
            let attempts = self.consumer.attempt_batch(&events, SYSTEM).await;
            for (((delivery, delivery_count), _), attempt) in batch.iter().zip(attempts) {
                match attempt.result {
                    Ok(()) => {
                        timed("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
                    }
                    Err(error) => {
                        let failure = Some(error.to_string());
                        self.settle_failure(
                            channel,
                            delivery,
                            *delivery_count,
                            failure,
                            attempt.context,
                            stop,
                        )
                        .await?;
                    }
                }
            }
            pending = later;
        }
        Ok(())
    }

    /// A delivery that failed (`failure`) or cannot be read (`None`): republished for another
    /// try after a backoff while tries are left, else to the dead letters; then acked.
    async fn settle_failure(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        delivery_count: u32,
        failure: Option<String>,
        attempt_context: HashMap<String, String>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let properties = &delivery.properties;
        let retry = failure.is_some() && delivery_count < MAX_DELIVERIES;
        if retry {
            tokio::select! {
                () = stop.cancelled() => {
                    // Stopping: give the message back as it is, to this or another instance.
                    timed("basic.nack", delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })).await?;
                    return Ok(());
                }
                () = tokio::time::sleep(redelivery_delay(delivery_count)) => {}
            }
        }
        let mut table = properties.headers().clone().unwrap_or_default();
        let target = if retry {
            table.insert(
                DELIVERY_HEADER.into(),
                AMQPValue::LongUInt(delivery_count + 1),
            );
            for (name, value) in previous_attempt_headers(&attempt_context) {
                table.insert(
                    ShortString::from(name),
                    AMQPValue::LongString(LongString::from(value)),
                );
            }
            &self.queue
        } else {
            let reason = failure.unwrap_or_else(|| "unreadable message".to_owned());
            table.insert(
                ShortString::from("x-ordo-error"),
                AMQPValue::LongString(LongString::from(header_reason(&reason))),
            );
            &self.dead_queue
        };
        let forward = properties.clone().with_headers(table);
        // The default exchange routes by queue name.
        publish_confirmed(channel, "", target, &delivery.data, forward).await?;
        timed("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
        if !retry {
            record_dead_letter(
                "rabbitmq",
                self.consumer.name(),
                &self.dead_queue,
                delivery_count,
            );
        }
        Ok(())
    }
}

/// `first` and the deliveries received with it (nothing waits for more), up to [`PREFETCH`];
/// and, if the consumer ended meanwhile, why.
fn with_received(
    first: Delivery,
    deliveries: &mut lapin::Consumer,
) -> (Vec<Delivery>, Option<String>) {
    let mut batch = vec![first];
    while batch.len() < usize::from(PREFETCH) {
        match deliveries.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            Some(Some(Err(error))) => return (batch, Some(error.to_string())),
            Some(None) => {
                return (
                    batch,
                    Some("the consumer was cancelled by the broker".to_owned()),
                );
            }
            None => break,
        }
    }
    (batch, None)
}

/// Reads a delivery as a subscription does: the envelope, or why it cannot be read, and the
/// delivery number (`x-ordo-delivery`, at least 1). Text headers carry the trace context and
/// ordo's own; `ordo-previous-*` ones the previous attempt's context; other values are skipped.
#[doc(hidden)]
pub fn read_delivery(
    properties: &BasicProperties,
    routing_key: &str,
    data: &[u8],
) -> (Result<Envelope, String>, u32) {
    let mut headers = HashMap::new();
    let mut delivery_count = 1u32;
    if let Some(table) = properties.headers() {
        for (key, value) in table.inner() {
            if key.as_str() == DELIVERY_HEADER {
                delivery_count = as_u32(value).unwrap_or(1).max(1);
            } else if let AMQPValue::LongString(text) = value {
                headers.insert(
                    key.as_str().to_owned(),
                    String::from_utf8_lossy(text.as_bytes()).into_owned(),
                );
            }
        }
    }
    let event_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let envelope = envelope_from_parts(
        event_id,
        routing_key.to_owned(),
        headers,
        data,
        EventDelivery::numbered(delivery_count, MAX_DELIVERIES),
    );
    (envelope, delivery_count)
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

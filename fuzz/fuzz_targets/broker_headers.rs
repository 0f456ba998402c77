//! Messages from a broker: the AMQP (RabbitMQ) properties and headers and the NATS headers a
//! subscription reads into an envelope (`rabbitmq::read_delivery`, `nats::read_headers` and
//! `envelope_from_parts`), the consumer's span adopting the trace context they carry, and the
//! headers of a NATS dead letter. Invariants: nothing panics; the delivery number is at least
//! 1; ordo's own headers never leak into the envelope's trace context, and the previous
//! attempt's context is exactly the `ordo-previous-*` headers; every message that cannot be
//! processed can be dead-lettered.
//!
//! Input, one item a line, then the body:
//! - `amqp <name>=<type>:<value>`: an AMQP header; type `S` long string, `s` short string,
//!   `u8` `u16` `u32` `i8` `i16` `i32` `i64` `f64` `ts` (timestamp) `b` (bool) numbers in decimal;
//! - `id <message id>`, `key <routing key>`: the AMQP message id and routing key;
//! - `nats <name>: <value>`: a NATS header; `subject <subject>`, `delivered <number>`;
//! - `failure <text>`: why a consumer failed (the dead letter's `ordo-error`);
//! - `body`: the rest of the input is the message body.
#![no_main]

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use libfuzzer_sys::fuzz_target;
use ordo_outbox::transport::{
    AGGREGATE_HEADER, MAX_DELIVERIES, PREVIOUS_ATTEMPT_PREFIX, TOPIC_HEADER, envelope_from_parts,
    nats, rabbitmq,
};
use ordo_outbox::{Delivery, Envelope};
use ordo_telemetry::propagation;

/// An AMQP header value written `<type>:<value>`; `None` when it does not parse.
fn amqp_value(typed: &[u8]) -> Option<AMQPValue> {
    let colon = typed.iter().position(|&b| b == b':')?;
    let (kind, raw) = (&typed[..colon], &typed[colon + 1..]);
    if kind == b"S" {
        return Some(AMQPValue::LongString(LongString::from(raw.to_vec())));
    }
    let text = std::str::from_utf8(raw).ok()?;
    Some(match kind {
        b"s" => AMQPValue::ShortString(ShortString::try_new(text).ok()?),
        b"u8" => AMQPValue::ShortShortUInt(text.parse().ok()?),
        b"u16" => AMQPValue::ShortUInt(text.parse().ok()?),
        b"u32" => AMQPValue::LongUInt(text.parse().ok()?),
        b"i8" => AMQPValue::ShortShortInt(text.parse().ok()?),
        b"i16" => AMQPValue::ShortInt(text.parse().ok()?),
        b"i32" => AMQPValue::LongInt(text.parse().ok()?),
        b"i64" => AMQPValue::LongLongInt(text.parse().ok()?),
        b"f64" => AMQPValue::Double(text.parse().ok()?),
        b"ts" => AMQPValue::Timestamp(text.parse().ok()?),
        b"b" => AMQPValue::Boolean(text == "true"),
        _ => return None,
    })
}

fn check(envelope: &Envelope, attempt: u32, topic: &str, body: &[u8]) {
    assert_eq!(envelope.delivery.attempt, attempt.max(1));
    assert_eq!(envelope.delivery.last, attempt >= MAX_DELIVERIES);
    assert_eq!(envelope.topic, topic);
    for name in envelope.headers.keys() {
        assert!(name != AGGREGATE_HEADER && name != TOPIC_HEADER, "{name}");
        assert!(!name.starts_with(PREVIOUS_ATTEMPT_PREFIX), "{name}");
    }
    assert_eq!(
        Some(&envelope.payload),
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .as_ref()
    );
    // The consumer's span (`ConsumerRunner::attempt`): a child of the producer, linked to the
    // previous attempt; garbage leaves it a root.
    let span = tracing::info_span!(parent: None, "consume");
    propagation::adopt_parent_from_map(&span, &envelope.headers);
    propagation::link_to_map(&span, &envelope.delivery.previous_attempt);
    assert!(propagation::ids_of(&span).is_some());
}

fuzz_target!(|data: &[u8]| {
    ordo_fuzz::telemetry();

    let mut table = FieldTable::default();
    let mut map = async_nats::HeaderMap::new();
    let (mut message_id, mut routing_key, mut subject) = (None, "", "");
    let (mut delivered, mut failure, mut body): (i64, &str, &[u8]) = (1, "", b"");
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        let (word, value) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], &line[space + 1..]),
            None => (line, &b""[..]),
        };
        let text = std::str::from_utf8(value).ok();
        match (word, text) {
            (b"body", _) => {
                body = rest;
                break;
            }
            (b"amqp", _) => {
                let Some(eq) = value.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let Ok(name) = std::str::from_utf8(&value[..eq]) else {
                    continue;
                };
                if let (Ok(key), Some(value)) =
                    (ShortString::try_new(name), amqp_value(&value[eq + 1..]))
                {
                    table.insert(key, value);
                }
            }
            (b"nats", Some(text)) => {
                let Some((name, value)) = text.split_once(':') else {
                    continue;
                };
                if let (Ok(name), Ok(value)) = (
                    async_nats::HeaderName::try_from(name),
                    value.trim_start().parse::<async_nats::HeaderValue>(),
                ) {
                    map.append(name, value);
                }
            }
            (b"id", Some(text)) => message_id = ShortString::try_new(text).ok(),
            (b"key", Some(text)) => routing_key = text,
            (b"subject", Some(text)) => subject = text,
            (b"delivered", Some(text)) => delivered = text.parse().unwrap_or(1),
            (b"failure", Some(text)) => failure = text,
            _ => {}
        }
    }

    // RabbitMQ.
    let mut properties = BasicProperties::default().with_headers(table.clone());
    if let Some(id) = message_id {
        properties = properties.with_message_id(id);
    }
    let (envelope, attempt) = rabbitmq::read_delivery(&properties, routing_key, body);
    assert!(attempt >= 1);
    if let Ok(envelope) = &envelope {
        check(envelope, attempt, routing_key, body);
        // The previous attempt's context: the text under each `ordo-previous-*` name.
        let expected: std::collections::HashMap<String, String> = table
            .inner()
            .iter()
            .filter_map(|(k, v)| match v {
                AMQPValue::LongString(text) => Some((
                    k.as_str().strip_prefix(PREVIOUS_ATTEMPT_PREFIX)?.to_owned(),
                    String::from_utf8_lossy(text.as_bytes()).into_owned(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(envelope.delivery.previous_attempt, expected);
    }

    // NATS JetStream.
    let (event_id, topic, headers) = nats::read_headers(Some(&map), subject, "ordo.events.");
    let delivered = u32::try_from(delivered).unwrap_or(1);
    let envelope = envelope_from_parts(
        event_id,
        topic.clone(),
        headers,
        body,
        Delivery::numbered(delivered, MAX_DELIVERIES),
    );
    let failure = match &envelope {
        Ok(envelope) => {
            check(envelope, delivered, &topic, body);
            failure.to_owned()
        }
        Err(reason) => reason.clone(),
    };
    // Whatever failed, and however, the message can be dead-lettered.
    let dead = nats::dead_letter_headers(Some(&map), &failure);
    assert!(dead.get("ordo-error").is_some());
    assert!(dead.get("Nats-Msg-Id").unwrap().as_str().ends_with(":dead"));
    let _ = nats::dead_letter_headers(None, &failure);
});

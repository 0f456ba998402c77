//! How committed events travel: the broker, its names, and the outbox relay's retries.

use crate::{SecretUrl, syntax};
use serde::Deserializer;
use std::time::Duration;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct EventSettings {
    /// Unset: in process; `amqp://...`: RabbitMQ; `nats://...`: NATS JetStream
    /// (`ORDO_BROKER_URL`).
    pub broker_url: Option<SecretUrl>,
    /// The prefix of the exchange, queues, stream and subjects, so that several deployments (or
    /// test runs) can share one broker (`ORDO_BROKER_NAMESPACE`).
    #[serde(deserialize_with = "syntax::namespace")]
    pub broker_namespace: String,
    /// Base of the outbox relay's retry backoff (`ORDO_OUTBOX_RETRY_BASE_MS`, 1 ms to 10 s):
    /// an event's 8 publish attempts span about 256 times this.
    #[serde(rename = "outbox_retry_base_ms", deserialize_with = "retry_base")]
    pub outbox_retry_base: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            broker_url: None,
            broker_namespace: syntax::DEFAULT_NAMESPACE.to_owned(),
            outbox_retry_base: Duration::from_millis(100),
        }
    }
}

fn retry_base<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let base = syntax::millis(d)?;
    Ok(base.clamp(Duration::from_millis(1), Duration::from_secs(10)))
}

//! The carrier port: where the push stage hands a shipment over, and its two adapters, one
//! module each — [`sandbox`] (in-process, `ORDO_CARRIER_WEBHOOK_URL` unset: accepts everything)
//! and [`webhook`] (`POST` with `Idempotency-Key`, `traceparent` and `Ordo-Signature`, in a
//! CLIENT span, bounded by its timeout). [`Carriers`] puts a circuit breaker per carrier in
//! front of the adapter the settings chose.

mod sandbox;
mod webhook;

use ordo_config::{ExposeSecret, FulfillmentSettings};
use ordo_domain::breaker::{Admission, Breaker, BreakerPolicy, CallOutcome};
use sandbox::SandboxCarrier;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webhook::WebhookCarrier;

/// How one push attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Taken (`status`: the carrier's, none for the sandbox).
    Accepted { status: Option<u16> },
    /// Refused for good (a 4xx other than 408 and 429).
    Refused { status: u16 },
    /// Worth retrying; `carrier_failed` when the carrier itself failed (5xx, timeout,
    /// transport error), not when it asked us to slow down (408, 429).
    Transient {
        reason: String,
        carrier_failed: bool,
    },
}

/// One push of one shipment.
pub(super) struct PushRequest<'a> {
    /// The carrier's name (`thai-express`, ...).
    pub carrier: &'a str,
    pub shipment_id: &'a str,
    /// 1 for the first push of this delivery.
    pub attempt: u32,
    /// The JSON body.
    pub body: &'a [u8],
}

pub(super) type PushFuture<'a> = Pin<Box<dyn Future<Output = Pushed> + Send + 'a>>;

/// A carrier's intake.
pub(super) trait Carrier: Send + Sync {
    fn push<'a>(&'a self, request: PushRequest<'a>) -> PushFuture<'a>;
}

/// The carrier of `settings`: the webhook when a URL is set, else the sandbox.
fn from_settings(settings: &FulfillmentSettings) -> Arc<dyn Carrier> {
    let Some(url) = &settings.carrier_webhook_url else {
        return Arc::new(SandboxCarrier);
    };
    let secret = match &settings.carrier_webhook_secret {
        Some(secret) => secret.expose_secret().to_owned(),
        None => {
            tracing::warn!("ORDO_CARRIER_WEBHOOK_URL is set without ORDO_CARRIER_WEBHOOK_SECRET");
            String::new()
        }
    };
    match WebhookCarrier::new(url.expose_secret(), secret, settings.carrier_timeout) {
        Ok(webhook) => Arc::new(webhook),
        Err(error) => {
            tracing::error!(%error, "cannot build the carrier HTTP client; using the sandbox");
            Arc::new(SandboxCarrier)
        }
    }
}

/// The carrier of the settings and a circuit breaker per carrier name, with the push's retry
/// policy.
pub(super) struct Carriers {
    carrier: Arc<dyn Carrier>,
    /// One per carrier, with the label of its `circuit_breaker_state` series.
    breakers: Mutex<HashMap<String, (Breaker, String)>>,
    policy: BreakerPolicy,
    /// Pushes of one shipment per delivery of its event, at least 1.
    pub(super) max_attempts: u32,
    /// The first retry's backoff (then exponential, with jitter).
    pub(super) retry_base: Duration,
}

impl Carriers {
    pub(super) fn new(settings: &FulfillmentSettings) -> Carriers {
        Carriers {
            carrier: from_settings(settings),
            breakers: Mutex::new(HashMap::new()),
            policy: BreakerPolicy {
                failure_threshold: settings.breaker_threshold,
                cool_down: settings.breaker_cooldown,
                // A probe ends within the push's own timeout; one that never reports (its task
                // was cancelled) must not hold the breaker half-open for longer.
                probe_timeout: settings.carrier_timeout + Duration::from_secs(1),
            },
            max_attempts: settings.carrier_max_attempts.max(1),
            retry_base: settings.carrier_retry_base,
        }
    }

    /// One push attempt to the carrier.
    pub(super) fn push<'a>(&'a self, request: PushRequest<'a>) -> PushFuture<'a> {
        self.carrier.push(request)
    }

    /// Runs `step` on `carrier`'s breaker and publishes its state.
    fn with_breaker<T>(&self, carrier: &str, step: impl FnOnce(&mut Breaker, Instant) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let (breaker, target) = breakers
            .entry(carrier.to_owned())
            .or_insert_with(|| (Breaker::new(self.policy), format!("carrier:{carrier}")));
        let now = Instant::now();
        let before = breaker.state(now);
        let result = step(breaker, now);
        let after = breaker.state(now);
        ordo_telemetry::metrics::set_circuit_breaker_state(target, after.gauge_value());
        if before != after {
            tracing::warn!(carrier, from = ?before, to = ?after, "carrier circuit breaker changed state");
        }
        result
    }

    /// Whether a push to `carrier` may go out now (a probe, when half-open).
    pub(super) fn admit_push(&self, carrier: &str) -> Admission {
        self.with_breaker(carrier, |breaker, now| breaker.admit(now))
    }

    /// Reports how a push that went out ended.
    pub(super) fn record_push(&self, carrier: &str, outcome: CallOutcome) {
        self.with_breaker(carrier, |breaker, now| breaker.record(now, outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The carrier's breaker is the domain's state machine (tested there); here: one per
    /// carrier, fed by push outcomes, its state published as `circuit_breaker_state`.
    #[test]
    fn each_carrier_has_its_own_breaker_and_its_state_is_published() {
        let carriers = Carriers::new(&FulfillmentSettings {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_secs(60),
            ..FulfillmentSettings::default()
        });
        for _ in 0..2 {
            assert_eq!(carriers.admit_push("dhl"), Admission::Allowed);
            carriers.record_push("dhl", CallOutcome::Failed);
        }
        assert_eq!(carriers.admit_push("dhl"), Admission::Rejected);
        assert_eq!(carriers.admit_push("ups"), Admission::Allowed);
        let exposition = ordo_telemetry::metrics::encode(false).1;
        assert!(
            exposition.contains("circuit_breaker_state{target=\"carrier:dhl\"} 2"),
            "{exposition}"
        );
        assert!(exposition.contains("circuit_breaker_state{target=\"carrier:ups\"} 0"));
    }
}

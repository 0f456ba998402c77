//! The fulfillment pipeline (saga): four stages, each an outbox consumer of the previous
//! stage's event, each committing its state change, its timeline entry and its next event in
//! one transaction.
//!
//! ```text
//! order.paid ─risk─▶ order.risk_approved ─split─▶ order.split ─schedule─▶ order.scheduled
//!     │                                                                        │
//!     └─(rejected) order.rejected                               push ─▶ order.shipped
//!                                                                    └─▶ order.fulfillment_failed
//! ```
//!
//! - `risk`: `ordo_domain::risk::assess` on the order's amount, the customer's recent payments,
//!   the shipping country and the contact email (compared normalised, never logged).
//! - `split`: one shipment per warehouse holding the order's unreleased reservations.
//! - `schedule`: carrier by warehouse country, pickup slot at the next full hour after the lead
//!   time; one `order.scheduled` event carries every shipment (the push stage pushes them all).
//! - `push`: per shipment, outside any write transaction (`Consumer::prepare`): claim it as
//!   `pushing` (short transaction), `POST` it to the carrier with `Idempotency-Key`,
//!   `traceparent` and `Ordo-Signature`, retry 408/429/5xx/timeouts with backoff and jitter,
//!   record `accepted` or `failed` (another short transaction). Then, in the consumer's
//!   transaction: all accepted → `shipped`; one failed → compensations.
//!   A shipment already `accepted` is never pushed again; a `pushing` one (a crash mid-push) is
//!   pushed again with the same idempotency key, which the carrier deduplicates.
//!   A circuit breaker per carrier fails pushes fast while open: the event is then left to
//!   redelivery, and the shipment stays `pushing`.
//! - Every stage settles its event's last failed delivery (`Consumer::give_up`): if the order
//!   still waits for that stage, its unfinished shipments are dead-lettered and it is
//!   compensated to `fulfillment_failed`. No order stays half-way because a stage kept failing
//!   (an open breaker through every redelivery, a database outage).
//! - Compensations (risk rejection, fulfillment failure), in reverse order of the forward
//!   steps, each idempotent and each a span and a timeline entry: refund the payment (the
//!   sandbox refunds at once: `refunded`; the webhook provider gets a `refund_requested`),

mod carrier;
mod compensation;
mod push;
mod risk;
mod schedule;
mod split;
mod stage;
mod watchdog;

pub(crate) use compensation::refund_succeeded_payments;
use stage::Stage;

use crate::{Service, step_ids};
use carrier::Carrier;
use ordo_config::FulfillmentSettings;
use ordo_domain::Result;
use ordo_domain::breaker::{Admission, Breaker, BreakerPolicy, CallOutcome};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::risk::{RiskRules, normalise_email};
use ordo_domain::timeline::TimelineKind;
use ordo_outbox::consumer::ConsumerRunner;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;
use ordo_storage::timeline::NewTimelineEntry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The settings resolved once, the carrier and its breakers.
pub(crate) struct Fulfillment {
    settings: FulfillmentSettings,
    /// The settings' risk rules, emails normalised for comparison.
    risk: RiskRules,
    carrier: Arc<dyn Carrier>,
    /// One per carrier, with the label of its `circuit_breaker_state` series.
    breakers: Mutex<HashMap<String, (Breaker, String)>>,
}

impl Fulfillment {
    pub(crate) fn new(settings: FulfillmentSettings) -> Fulfillment {
        let risk = RiskRules {
            max_amount: settings.risk_max_amount.clone(),
            velocity: settings.risk_velocity,
            blocked_countries: settings.risk_blocked_countries.clone(),
            blocked_emails: settings
                .risk_blocked_emails
                .iter()
                .map(|email| normalise_email(email.expose()))
                .collect(),
        };
        let carrier = carrier::from_settings(&settings);
        Fulfillment {
            settings,
            risk,
            carrier,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    fn breaker_policy(&self) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: self.settings.breaker_threshold,
            cool_down: self.settings.breaker_cooldown,
            // A probe ends within the push's own timeout; one that never reports (its task was
            // cancelled) must not hold the breaker half-open for longer.
            probe_timeout: self.settings.carrier_timeout + Duration::from_secs(1),
        }
    }

    /// Runs `step` on `carrier`'s breaker and publishes its state.
    fn with_breaker<T>(&self, carrier: &str, step: impl FnOnce(&mut Breaker, Instant) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let (breaker, target) = breakers.entry(carrier.to_owned()).or_insert_with(|| {
            (
                Breaker::new(self.breaker_policy()),
                format!("carrier:{carrier}"),
            )
        });
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
    fn admit_push(&self, carrier: &str) -> Admission {
        self.with_breaker(carrier, |breaker, now| breaker.admit(now))
    }

    /// Reports how a push that went out ended.
    fn record_push(&self, carrier: &str, outcome: CallOutcome) {
        self.with_breaker(carrier, |breaker, now| breaker.record(now, outcome));
    }
}

impl Service {
    /// The pipeline's consumers, for whichever transport carries the events.
    pub fn pipeline_consumers(&self) -> Vec<Arc<ConsumerRunner>> {
        vec![
            self.stage_runner::<risk::RiskCheck>(),
            self.stage_runner::<split::Split>(),
            self.stage_runner::<schedule::Schedule>(),
            self.stage_runner::<push::Push>(),
        ]
    }

    fn stage_runner<S: stage::Step>(&self) -> Arc<ConsumerRunner> {
        Arc::new(ConsumerRunner::new(
            Stage::<S>::new(self.clone()),
            self.db.clone(),
            self.wakeup.clone(),
        ))
    }
}

/// A timeline entry stamped with the current step's ids.
async fn timeline(
    tx: &mut WriteTx,
    order_id: &str,
    kind: TimelineKind,
    detail: &str,
) -> Result<()> {
    let ids = step_ids();
    tx.append_timeline(&NewTimelineEntry {
        order_id,
        at_ms: now_ms(),
        kind,
        detail,
        trace_id: &ids.trace_id,
        span_id: &ids.span_id,
    })
    .await
}

/// Moves `order` by `event` from `from`. Every caller runs in a step's transaction after
/// locking the order and finding it in `from` ([`stage::Stage`], `fail_stuck_order`), so the
/// change cannot miss and travels with the commit.
async fn advance(
    tx: &mut WriteTx,
    order: &OrderRecord,
    from: OrderStatus,
    event: OrderEvent,
) -> Result<OrderStatus> {
    let to = from.apply(event)?;
    tx.set_status_of_locked(&order.id, from, to, now_ms())
        .await?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The carrier's breaker is the domain's state machine (tested there); here: one per
    /// carrier, fed by push outcomes, its state published as `circuit_breaker_state`.
    #[test]
    fn each_carrier_has_its_own_breaker_and_its_state_is_published() {
        let fulfillment = Fulfillment::new(FulfillmentSettings {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_secs(60),
            ..FulfillmentSettings::default()
        });
        for _ in 0..2 {
            assert_eq!(fulfillment.admit_push("dhl"), Admission::Allowed);
            fulfillment.record_push("dhl", CallOutcome::Failed);
        }
        assert_eq!(fulfillment.admit_push("dhl"), Admission::Rejected);
        assert_eq!(fulfillment.admit_push("ups"), Admission::Allowed);
        let exposition = ordo_telemetry::metrics::encode(false).1;
        assert!(
            exposition.contains("circuit_breaker_state{target=\"carrier:dhl\"} 2"),
            "{exposition}"
        );
        assert!(exposition.contains("circuit_breaker_state{target=\"carrier:ups\"} 0"));
    }

    #[test]
    fn settings_never_print_the_secret_or_blocked_emails() {
        let settings = FulfillmentSettings {
            carrier_webhook_secret: Some(ordo_config::Secret::new("carrier_visible")),
            risk_blocked_emails: vec![ordo_domain::personal::Personal::new(
                "visible@example.com".to_owned(),
            )],
            ..FulfillmentSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("visible"), "{printed}");
    }

    #[test]
    fn blocked_emails_are_compared_normalised() {
        let fulfillment = Fulfillment::new(FulfillmentSettings {
            risk_blocked_emails: vec![ordo_domain::personal::Personal::new(
                " SOMCHAI@Example.com".to_owned(),
            )],
            ..FulfillmentSettings::default()
        });
        assert!(
            fulfillment
                .risk
                .blocked_emails
                .contains("somchai@example.com")
        );
    }
}

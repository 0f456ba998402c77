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
//!   `pushing` (one statement for the order's shipments), `POST` it to the carrier with
//!   `Idempotency-Key`, `traceparent` and `Ordo-Signature`, retry 408/429/5xx/timeouts with
//!   backoff and jitter, record `accepted` or `failed` and its timeline entry (one statement).
//!   Then, in the consumer's transaction: all accepted → `shipped`; one failed → compensations.
//!   A shipment already `accepted` is never pushed again; a `pushing` one (a crash mid-push) is
//!   pushed again with the same idempotency key, which the carrier deduplicates.
//!   A circuit breaker per carrier fails pushes fast while open: the event is then left to
//!   redelivery, and the shipment stays `pushing`.
//! - Every stage settles its event's last failed delivery (`Consumer::give_up`): if the order
//!   still waits for that stage, its unfinished shipments are dead-lettered and it is
//!   compensated to `fulfillment_failed`. No order stays half-way because a stage kept failing
//!   (an open breaker through every redelivery, a database outage).
//! - Compensations (risk rejection, fulfillment failure), in reverse order of the forward
//!   steps, each idempotent and each a span and a timeline entry: refund the payment (through
//!   the payments face: the sandbox refunds at once, `refunded`; the webhook provider gets a
//!   `refund_requested`), release the stock, then the terminal status and its event.
//! - `watchdog`: re-sends the stage's event of an order stuck in a stage.
//!
//! The [`Fulfillment`] face holds what the steps work with: the risk rules, the carrier port
//! (`carrier`: the sandbox and the signed webhook, a breaker per carrier), and the payments
//! face for refunds.

mod carrier;
mod compensation;
mod push;
mod risk;
mod schedule;
mod split;
mod stage;
mod watchdog;

use crate::Shared;
use crate::payments::Payments;
use carrier::Carriers;
use ordo_config::FulfillmentSettings;
use ordo_domain::Result;
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::risk::{RiskRules, normalise_email};
use ordo_outbox::consumer::ConsumerRunner;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;
use stage::Stage;
use std::sync::Arc;
use std::time::Duration;

/// The fulfillment face: the saga's stages, its compensations and its watchdog (the `workers`
/// role). Cheap to clone.
#[derive(Clone)]
pub struct Fulfillment {
    shared: Shared,
    /// Refunds, the first compensation.
    payments: Payments,
    /// The settings' risk rules, emails normalised for comparison.
    risk: Arc<RiskRules>,
    /// How long after a shipment is scheduled its carrier picks it up, at the earliest.
    pickup_lead: Duration,
    /// The carrier port and a breaker per carrier.
    carriers: Arc<Carriers>,
    /// How long an order may sit in a stage before the watchdog re-drives it.
    stuck_after: Duration,
}

impl Fulfillment {
    pub(crate) fn new(
        shared: Shared,
        settings: &FulfillmentSettings,
        stuck_after: Duration,
        payments: Payments,
    ) -> Fulfillment {
        Fulfillment {
            shared,
            payments,
            risk: Arc::new(risk_rules(settings)),
            pickup_lead: settings.pickup_lead,
            carriers: Arc::new(Carriers::new(settings)),
            stuck_after,
        }
    }

    /// This face holding `payments` instead of its payments face.
    pub(crate) fn holding(self, payments: Payments) -> Fulfillment {
        Fulfillment { payments, ..self }
    }

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
            self.shared.db.clone(),
            self.shared.wakeup.clone(),
        ))
    }
}

/// The settings' risk rules, emails normalised for comparison.
fn risk_rules(settings: &FulfillmentSettings) -> RiskRules {
    RiskRules {
        max_amount: settings.risk_max_amount.clone(),
        velocity: settings.risk_velocity,
        blocked_countries: settings.risk_blocked_countries.clone(),
        blocked_emails: settings
            .risk_blocked_emails
            .iter()
            .map(|email| normalise_email(email.expose()))
            .collect(),
    }
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
        let rules = risk_rules(&FulfillmentSettings {
            risk_blocked_emails: vec![ordo_domain::personal::Personal::new(
                " SOMCHAI@Example.com".to_owned(),
            )],
            ..FulfillmentSettings::default()
        });
        assert!(rules.blocked_emails.contains("somchai@example.com"));
    }
}

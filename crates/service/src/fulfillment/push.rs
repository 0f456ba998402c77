//! The push stage: `order.scheduled` → `order.shipped`, or a failed shipment and the
//! compensations.
//!
//! Outside any write transaction ([`Step::prepare`]): claim the order's shipments as `pushing`
//! (one statement), then per shipment hand it to the [carrier](super::carrier), retry
//! 408/429/5xx/timeouts with backoff and jitter, record `accepted` or `failed` with its
//! timeline entry (one statement each on PostgreSQL). Then, in the consumer's transaction
//! ([`Step::run`]): all accepted → `shipped`; one failed → compensations. A shipment already
//! `accepted` is never pushed again; a `pushing` one (a crash mid-push) is pushed again with
//! the same idempotency key, which the carrier deduplicates. A circuit breaker per carrier
//! fails pushes fast while open: the event is then left to redelivery, and the shipment stays
//! `pushing`.

use super::Fulfillment;
use super::advance;
use super::carrier::{PushRequest, Pushed};
use super::compensation::Failure;
use super::stage::Step;
use crate::events::{self, OrderShipped};
use crate::{timeline, topics};
use ordo_domain::breaker::{Admission, CallOutcome};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::risk;
use ordo_domain::shipment::ShipmentStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_outbox::Envelope;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::{OrderRecord, ShipmentRecord};
use ordo_storage::timeline::NewTimelineEntry;
use std::time::Duration;

pub(crate) struct Push;

impl Step for Push {
    const NAME: &'static str = "push";
    const TOPICS: &'static [&'static str] = &[topics::ORDER_SCHEDULED];
    const WAITING: OrderStatus = OrderStatus::Scheduled;

    /// Every shipment of the order not yet accepted or failed is claimed (one statement for
    /// all, none if one has failed) and pushed to its carrier, in turn.
    async fn prepare(fulfillment: &Fulfillment, event: &Envelope) -> Result<()> {
        let Some(order) = fulfillment.shared.db.order(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        if order.status != Self::WAITING {
            return Ok(());
        }
        let claimed = fulfillment
            .shared
            .db
            .claim_shipment_pushes(&order.id, now_ms())
            .await?;
        for shipment in &claimed {
            if !fulfillment.push_shipment(&order, shipment).await? {
                break;
            }
        }
        Ok(())
    }

    /// The batch's shipments, in one statement (after the pushes of [`Step::prepare`]).
    async fn prefetch(_fulfillment: &Fulfillment, orders: &[&str], tx: &mut WriteTx) -> Result<()> {
        tx.prefetch_shipments(orders).await
    }

    /// All shipments accepted → `shipped`; one failed → compensations and
    /// `fulfillment_failed`; otherwise the pushes are not done (an error: the event is
    /// redelivered).
    async fn run(fulfillment: &Fulfillment, order: OrderRecord, tx: &mut WriteTx) -> Result<()> {
        let shipments = tx.shipments_of_order(&order.id).await?;
        if let Some(failed) = shipments
            .iter()
            .find(|s| s.status == ShipmentStatus::Failed)
        {
            let failure = Failure::fulfillment(
                "carrier_failed",
                format!("shipment {} could not be handed to its carrier", failed.id),
            );
            return fulfillment
                .compensate(tx, &order, Self::WAITING, failure)
                .await;
        }
        if shipments.is_empty()
            || shipments
                .iter()
                .any(|s| s.status != ShipmentStatus::Accepted)
        {
            return Err(Error::unavailable(format!(
                "the shipments of order {} are not all accepted yet",
                order.id
            )));
        }
        advance(tx, &order, Self::WAITING, OrderEvent::AllShipmentsAccepted).await?;
        let detail = format!(
            "all {} shipment(s) accepted by their carriers",
            shipments.len()
        );
        timeline(tx, &order.id, TimelineKind::Shipped, &detail).await?;
        let shipped = OrderShipped {
            order_id: order.id.clone(),
            shipments: shipments.into_iter().map(|s| s.id).collect(),
        };
        events::append(tx, &shipped, now_ms()).await?;
        tracing::info!(order.id = %order.id, "order shipped");
        Ok(())
    }
}

impl Fulfillment {
    /// Pushes one shipment, claimed `pushing`, until the carrier accepts it (`true`), refuses
    /// it for good or the attempts run out (`false`, the shipment is `failed`). An open breaker
    /// is an error: the event is redelivered later, the shipment stays `pushing`.
    async fn push_shipment(&self, order: &OrderRecord, shipment: &ShipmentRecord) -> Result<bool> {
        let carrier = shipment.carrier.as_deref().unwrap_or("global-post");
        let body = self.push_body(order, shipment).await?;
        let outcome = self
            .push_until_settled(carrier, &shipment.id, &body)
            .await?;
        let accepted = outcome.is_ok();
        let to = if accepted {
            ShipmentStatus::Accepted
        } else {
            ShipmentStatus::Failed
        };
        let (kind, detail) = match &outcome {
            Ok((status, attempt)) => (
                TimelineKind::ShipmentAccepted,
                format!(
                    "shipment {} from {} accepted by {carrier} (attempt {attempt}{})",
                    shipment.id,
                    shipment.warehouse,
                    status.map(|s| format!(", status {s}")).unwrap_or_default()
                ),
            ),
            Err(reason) => (
                TimelineKind::ShipmentFailed,
                format!(
                    "shipment {} from {} dead-lettered at {carrier}: {reason}",
                    shipment.id, shipment.warehouse
                ),
            ),
        };
        let ids = crate::step_ids();
        self.shared
            .db
            .finish_shipment_push(
                &shipment.id,
                to,
                &NewTimelineEntry {
                    order_id: &order.id,
                    at_ms: now_ms(),
                    kind,
                    detail: &detail,
                    trace_id: &ids.trace_id,
                    span_id: &ids.span_id,
                },
            )
            .await?;
        if let Err(reason) = &outcome {
            ordo_telemetry::metrics::count_shipment_dead_lettered();
            tracing::error!(order.id = %order.id, shipment.id = %shipment.id, carrier,
                reason = %reason, "shipment dead-lettered");
        }
        Ok(accepted)
    }

    /// The JSON a carrier receives for `shipment`.
    async fn push_body(&self, order: &OrderRecord, shipment: &ShipmentRecord) -> Result<Vec<u8>> {
        let items = self.shared.db.shipment_items(&shipment.id).await?;
        let address: serde_json::Value = serde_json::from_str(&order.shipping_address)
            .map_err(|_| Error::internal("a stored shipping address is not valid"))?;
        let body = serde_json::json!({
            "shipment_id": shipment.id,
            "order_id": order.id,
            "warehouse": shipment.warehouse,
            "items": items
                .iter()
                .map(|i| serde_json::json!({ "sku": i.sku, "quantity": i.quantity }))
                .collect::<Vec<_>>(),
            "shipping_address": address,
        });
        serde_json::to_vec(&body).map_err(|e| Error::internal(format!("cannot encode: {e}")))
    }

    /// Pushes until the carrier accepts (its status and the attempt), refuses for good or the
    /// attempts run out (why); an open breaker is an error (the event is redelivered later).
    async fn push_until_settled(
        &self,
        carrier: &str,
        shipment_id: &str,
        body: &[u8],
    ) -> Result<std::result::Result<(Option<u16>, u32), String>> {
        let carriers = &self.carriers;
        let max_attempts = carriers.max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if carriers.admit_push(carrier) == Admission::Rejected {
                return Err(Error::unavailable(format!(
                    "the circuit breaker of carrier {carrier} is open"
                )));
            }
            let pushed = carriers
                .push(PushRequest {
                    carrier,
                    shipment_id,
                    attempt,
                    body,
                })
                .await;
            // Only the carrier's own failures count against it: a refusal (4xx) or a "slow
            // down" (408, 429) comes from a carrier that is up.
            let outcome = match &pushed {
                Pushed::Transient {
                    carrier_failed: true,
                    ..
                } => CallOutcome::Failed,
                _ => CallOutcome::Healthy,
            };
            carriers.record_push(carrier, outcome);
            match pushed {
                Pushed::Accepted { status } => return Ok(Ok((status, attempt))),
                Pushed::Refused { status } => {
                    return Ok(Err(format!("the carrier refused it with status {status}")));
                }
                Pushed::Transient { reason, .. } => {
                    tracing::warn!(shipment.id = %shipment_id, carrier, attempt, reason = %reason,
                        "carrier push failed; retrying");
                    if attempt >= max_attempts {
                        return Ok(Err(format!(
                            "no success after {attempt} attempts ({reason})"
                        )));
                    }
                    let base = u64::try_from(carriers.retry_base.as_millis()).unwrap_or(200);
                    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
                    tokio::time::sleep(Duration::from_millis(risk::backoff_ms(
                        base, attempt, jitter,
                    )))
                    .await;
                }
            }
        }
    }
}

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
use ordo_storage::shipments::{ClaimedPush, FinishedPush};
use ordo_storage::timeline::NewTimelineEntry;
use std::time::Duration;
use tracing::Instrument;

pub(crate) struct Push;

impl Step for Push {
    const NAME: &'static str = "push";
    const TOPICS: &'static [&'static str] = &[topics::ORDER_SCHEDULED];
    const WAITING: OrderStatus = OrderStatus::Scheduled;

    /// [`Push::prepare_batch`] for one event.
    async fn prepare(fulfillment: &Fulfillment, event: &Envelope) -> Result<()> {
        let span = tracing::Span::current();
        let (events, spans) = ([event], [span.clone()]);
        let mut results = Self::prepare_batch(fulfillment, &events, &spans, &span).await;
        results.pop().unwrap_or(Ok(()))
    }

    /// The shipments of the batch's orders still `scheduled` claimed in one statement (none
    /// of an order with a failed shipment); each order's pushed to their carriers in turn, in
    /// its event's span; then every carrier's answer recorded with its timeline entry, in one
    /// round trip. An open breaker fails its event (redelivered later, its shipment stays
    /// `pushing`); the answers before it are recorded all the same.
    async fn prepare_batch(
        fulfillment: &Fulfillment,
        events: &[&Envelope],
        spans: &[tracing::Span],
        batch_span: &tracing::Span,
    ) -> Vec<Result<()>> {
        let db = &fulfillment.shared.db;
        let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let claimed = match db
            .claim_shipment_pushes(&ids, Self::WAITING, now_ms())
            .instrument(batch_span.clone())
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => return events.iter().map(|_| Err(error.clone())).collect(),
        };
        let pushed = futures::future::join_all(events.iter().zip(spans).map(|(event, span)| {
            let claims: Vec<&ClaimedPush> = claimed
                .iter()
                .filter(|claim| claim.shipment.order_id == event.aggregate_id)
                .collect();
            fulfillment.push_in_turn(claims).instrument(span.clone())
        }))
        .await;
        let finished: Vec<FinishedPush<'_>> = pushed
            .iter()
            .flat_map(|(answers, _)| answers.iter().map(Answer::finished))
            .collect();
        let recorded = db
            .finish_shipment_pushes(&finished)
            .instrument(batch_span.clone())
            .await;
        pushed
            .into_iter()
            .zip(spans)
            .map(|((answers, pushed), span)| {
                if let Err(error) = &recorded
                    && !answers.is_empty()
                {
                    return Err(error.clone());
                }
                for answer in &answers {
                    answer.count_dead_letter(span);
                }
                pushed
            })
            .collect()
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

/// A carrier's final answer on a claimed shipment, to record with its timeline entry.
struct Answer {
    shipment_id: String,
    order_id: String,
    carrier: String,
    to: ShipmentStatus,
    kind: TimelineKind,
    detail: String,
    at_ms: i64,
    /// The trace and span of the push (its event's CONSUMER span).
    ids: ordo_telemetry::propagation::TraceIds,
    /// Why the shipment failed, if it did.
    failure: Option<String>,
}

impl Answer {
    fn new(
        shipment: &ShipmentRecord,
        carrier: &str,
        outcome: &std::result::Result<(Option<u16>, u32), String>,
    ) -> Answer {
        let (to, kind, detail, failure) = match outcome {
            Ok((status, attempt)) => (
                ShipmentStatus::Accepted,
                TimelineKind::ShipmentAccepted,
                format!(
                    "shipment {} from {} accepted by {carrier} (attempt {attempt}{})",
                    shipment.id,
                    shipment.warehouse,
                    status.map(|s| format!(", status {s}")).unwrap_or_default()
                ),
                None,
            ),
            Err(reason) => (
                ShipmentStatus::Failed,
                TimelineKind::ShipmentFailed,
                format!(
                    "shipment {} from {} dead-lettered at {carrier}: {reason}",
                    shipment.id, shipment.warehouse
                ),
                Some(reason.clone()),
            ),
        };
        Answer {
            shipment_id: shipment.id.clone(),
            order_id: shipment.order_id.clone(),
            carrier: carrier.to_owned(),
            to,
            kind,
            detail,
            at_ms: now_ms(),
            ids: crate::step_ids(),
            failure,
        }
    }

    fn finished(&self) -> FinishedPush<'_> {
        FinishedPush {
            id: &self.shipment_id,
            to: self.to,
            entry: NewTimelineEntry {
                order_id: &self.order_id,
                at_ms: self.at_ms,
                kind: self.kind,
                detail: &self.detail,
                trace_id: &self.ids.trace_id,
                span_id: &self.ids.span_id,
            },
        }
    }

    /// A recorded failure is a dead letter: counted, and logged in the push's span.
    fn count_dead_letter(&self, span: &tracing::Span) {
        let Some(reason) = &self.failure else {
            return;
        };
        ordo_telemetry::metrics::count_shipment_dead_lettered();
        span.in_scope(|| {
            tracing::error!(order.id = %self.order_id, shipment.id = %self.shipment_id,
                carrier = %self.carrier, reason = %reason, "shipment dead-lettered")
        });
    }
}

impl Fulfillment {
    /// Pushes an order's claimed shipments in turn, each until its carrier accepts it, refuses
    /// it for good or the attempts run out; a refusal stops the rest (the order fails: they
    /// need not go). Returns the answers, and an error if a push could not be settled (an
    /// open breaker: the event is redelivered later, the shipment stays `pushing`).
    async fn push_in_turn(&self, claims: Vec<&ClaimedPush>) -> (Vec<Answer>, Result<()>) {
        let mut answers = Vec::with_capacity(claims.len());
        for claim in claims {
            let shipment = &claim.shipment;
            let carrier = shipment.carrier.as_deref().unwrap_or("global-post");
            let pushed = match push_body(claim) {
                Ok(body) => self.push_until_settled(carrier, &shipment.id, &body).await,
                Err(error) => Err(error),
            };
            let outcome = match pushed {
                Ok(outcome) => outcome,
                Err(error) => return (answers, Err(error)),
            };
            let accepted = outcome.is_ok();
            answers.push(Answer::new(shipment, carrier, &outcome));
            if !accepted {
                break;
            }
        }
        (answers, Ok(()))
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

/// The JSON a carrier receives for a claimed shipment.
fn push_body(claim: &ClaimedPush) -> Result<Vec<u8>> {
    let address: serde_json::Value = serde_json::from_str(&claim.shipping_address)
        .map_err(|_| Error::internal("a stored shipping address is not valid"))?;
    let body = serde_json::json!({
        "shipment_id": claim.shipment.id,
        "order_id": claim.shipment.order_id,
        "warehouse": claim.shipment.warehouse,
        "items": claim
            .items
            .iter()
            .map(|i| serde_json::json!({ "sku": i.sku, "quantity": i.quantity }))
            .collect::<Vec<_>>(),
        "shipping_address": address,
    });
    serde_json::to_vec(&body).map_err(|e| Error::internal(format!("cannot encode: {e}")))
}

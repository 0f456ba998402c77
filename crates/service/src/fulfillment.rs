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
//!   release the stock, then the terminal status.

use crate::{Service, step_ids, topics};
use ordo_domain::breaker::{Admission, Breaker, BreakerPolicy, CallOutcome};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::payment::{PaymentStatus, Provider};
use ordo_domain::risk::{self, PushOutcome, RiskDecision, RiskFacts, RiskRules};
use ordo_domain::shipment::ShipmentStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result, signature};
use ordo_outbox::consumer::{Consumer, ConsumerRunner, GiveUpFuture, HandleFuture};
use ordo_outbox::{Envelope, new_event};
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::{OrderRecord, ShipmentRecord};
use ordo_storage::timeline::NewTimelineEntry;
use ordo_telemetry::{conventions, propagation};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, field};

/// The pipeline's settings (configuration).
#[derive(Clone)]
pub struct FulfillmentSettings {
    pub risk: RiskRules,
    /// The carrier's webhook (`ORDO_CARRIER_WEBHOOK_URL`); unset: the in-process sandbox
    /// carrier, which accepts everything.
    pub carrier_webhook_url: Option<String>,
    /// The secret of the `Ordo-Signature` of pushes (`ORDO_CARRIER_WEBHOOK_SECRET`).
    pub carrier_webhook_secret: Option<String>,
    /// The timeout of one push.
    pub carrier_timeout: Duration,
    /// The base delay of the exponential backoff between pushes of one shipment.
    pub carrier_retry_base: Duration,
    /// Pushes of one shipment before it is dead-lettered.
    pub carrier_max_attempts: u32,
    /// Consecutive failures that open a carrier's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails pushes fast.
    pub breaker_cooldown: Duration,
    /// The least time between scheduling and the pickup slot.
    pub pickup_lead: Duration,
}

impl Default for FulfillmentSettings {
    fn default() -> Self {
        FulfillmentSettings {
            risk: RiskRules::default(),
            carrier_webhook_url: None,
            carrier_webhook_secret: None,
            carrier_timeout: Duration::from_secs(5),
            carrier_retry_base: Duration::from_millis(200),
            carrier_max_attempts: 5,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            pickup_lead: Duration::from_secs(2 * 3600),
        }
    }
}

impl fmt::Debug for FulfillmentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FulfillmentSettings")
            .field("risk.max_amount", &self.risk.max_amount)
            .field("risk.velocity", &self.risk.velocity)
            .field("risk.blocked_countries", &self.risk.blocked_countries)
            .field(
                "risk.blocked_emails",
                &format!("{} address(es)", self.risk.blocked_emails.len()),
            )
            .field("carrier_webhook_url", &self.carrier_webhook_url)
            .field(
                "carrier_webhook_secret",
                &self.carrier_webhook_secret.as_ref().map(|_| "[secret]"),
            )
            .field("carrier_timeout", &self.carrier_timeout)
            .field("carrier_retry_base", &self.carrier_retry_base)
            .field("carrier_max_attempts", &self.carrier_max_attempts)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("pickup_lead", &self.pickup_lead)
            .finish()
    }
}

/// The settings resolved once, the HTTP client and the breakers.
pub(crate) struct Fulfillment {
    settings: FulfillmentSettings,
    client: Option<reqwest::Client>,
    /// One per carrier, with the label of its `circuit_breaker_state` series.
    breakers: Mutex<HashMap<String, (Breaker, String)>>,
}

impl Fulfillment {
    pub(crate) fn new(mut settings: FulfillmentSettings) -> Fulfillment {
        settings.risk.blocked_emails = settings
            .risk
            .blocked_emails
            .iter()
            .map(|e| risk::normalise_email(e))
            .collect();
        let client = settings.carrier_webhook_url.as_ref().and_then(|_| {
            reqwest::Client::builder()
                .timeout(settings.carrier_timeout)
                .connect_timeout(settings.carrier_timeout)
                .build()
                .map_err(|error| tracing::error!(%error, "cannot build the carrier HTTP client"))
                .ok()
        });
        Fulfillment {
            settings,
            client,
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

/// One stage of the pipeline as an outbox consumer; `$waiting` is the status its event leaves
/// the order in until the stage runs.
macro_rules! stage {
    ($name:ident, $label:literal, $topic:expr, $waiting:expr, $method:ident) => {
        pub struct $name(Service);

        impl Consumer for $name {
            fn name(&self) -> &'static str {
                $label
            }

            fn topics(&self) -> &'static [&'static str] {
                &[$topic]
            }

            fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a> {
                Box::pin(self.0.$method(event, tx))
            }

            fn give_up<'a>(
                &'a self,
                event: &'a Envelope,
                error: &'a Error,
                tx: &'a mut WriteTx,
            ) -> GiveUpFuture<'a> {
                Box::pin(self.0.fail_stuck_order(event, error, tx, $waiting, $label))
            }
        }
    };
}

stage!(
    RiskStage,
    "risk",
    topics::ORDER_PAID,
    OrderStatus::Paid,
    risk_check
);
stage!(
    SplitStage,
    "split",
    topics::ORDER_RISK_APPROVED,
    OrderStatus::RiskApproved,
    split
);
stage!(
    ScheduleStage,
    "schedule",
    topics::ORDER_SPLIT,
    OrderStatus::Split,
    schedule
);

pub struct PushStage(Service);

impl Consumer for PushStage {
    fn name(&self) -> &'static str {
        "push"
    }

    fn topics(&self) -> &'static [&'static str] {
        &[topics::ORDER_SCHEDULED]
    }

    fn prepare<'a>(&'a self, event: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(self.0.push_shipments(event))
    }

    fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a> {
        Box::pin(self.0.finish_push(event, tx))
    }

    /// The last delivery failed (the carrier's breaker stayed open, or its shipments could
    /// not be recorded): the unfinished shipments are dead-lettered and the order compensated.
    fn give_up<'a>(
        &'a self,
        event: &'a Envelope,
        error: &'a Error,
        tx: &'a mut WriteTx,
    ) -> GiveUpFuture<'a> {
        Box::pin(
            self.0
                .fail_stuck_order(event, error, tx, OrderStatus::Scheduled, "push"),
        )
    }
}

fn json_field(raw: &str, field: &str) -> Result<String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_owned))
        .ok_or_else(|| Error::internal("a stored order field is not valid"))
}

fn new_shipment_id() -> String {
    format!("shp_{:032x}", uuid::Uuid::now_v7().as_u128())
}

fn unix_seconds() -> i64 {
    now_ms().div_euclid(1000)
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

/// The refund compensation, in its own span: every succeeded payment of `order_id` is refunded
/// (the sandbox at once: `refunded`; the webhook provider: `refund_requested`), each on the
/// timeline. Idempotent: a refunded payment is no longer `succeeded`.
pub(crate) async fn refund_succeeded_payments(tx: &mut WriteTx, order_id: &str) -> Result<()> {
    async {
        let now = now_ms();
        for payment in tx.succeeded_payments_of_order(order_id).await? {
            let (to, kind) = if payment.provider == Provider::Sandbox.as_str() {
                (PaymentStatus::Refunded, TimelineKind::PaymentRefunded)
            } else {
                (
                    PaymentStatus::RefundRequested,
                    TimelineKind::RefundRequested,
                )
            };
            if tx
                .set_payment_status(&payment.id, PaymentStatus::Succeeded, to, now)
                .await?
            {
                let detail = format!(
                    "payment {} of {} {} at {}: {}",
                    payment.id,
                    payment.amount_minor,
                    payment.currency,
                    payment.provider,
                    to.as_str()
                );
                timeline(tx, order_id, kind, &detail).await?;
            }
        }
        Ok::<_, Error>(())
    }
    .instrument(tracing::info_span!(
        "compensate refund",
        order.id = %order_id,
        compensation = "refund"
    ))
    .await
}

/// Moves `order` from `from` by `event`, or fails with `conflict` if it changed meanwhile.
async fn advance(
    tx: &mut WriteTx,
    order: &OrderRecord,
    from: OrderStatus,
    event: OrderEvent,
) -> Result<OrderStatus> {
    let to = from.apply(event)?;
    if !tx.set_status(&order.id, from, to, now_ms()).await? {
        return Err(Error::conflict(format!(
            "order {} changed concurrently",
            order.id
        )));
    }
    Ok(to)
}

/// What a terminal failure of the saga is.
struct Failure {
    event: OrderEvent,
    kind: TimelineKind,
    topic: &'static str,
    reason: &'static str,
    detail: String,
}

impl Failure {
    /// The order could not be fulfilled: `fulfillment_failed`, for `reason`.
    fn fulfillment(reason: &'static str, detail: String) -> Failure {
        Failure {
            event: OrderEvent::FulfillmentFailed,
            kind: TimelineKind::FulfillmentFailed,
            topic: topics::ORDER_FULFILLMENT_FAILED,
            reason,
            detail,
        }
    }
}

enum Pushed {
    Accepted {
        status: Option<u16>,
    },
    Refused {
        status: u16,
    },
    /// Worth retrying; `carrier_failed` when the carrier itself failed (5xx, timeout,
    /// transport error), not when it asked us to slow down (408, 429).
    Transient {
        reason: String,
        carrier_failed: bool,
    },
}

impl Service {
    /// The pipeline's consumers, for whichever transport carries the events.
    pub fn pipeline_consumers(&self) -> Vec<Arc<ConsumerRunner>> {
        let (db, wakeup) = (&self.db, &self.wakeup);
        vec![
            Arc::new(ConsumerRunner::new(
                RiskStage(self.clone()),
                db.clone(),
                wakeup.clone(),
            )),
            Arc::new(ConsumerRunner::new(
                SplitStage(self.clone()),
                db.clone(),
                wakeup.clone(),
            )),
            Arc::new(ConsumerRunner::new(
                ScheduleStage(self.clone()),
                db.clone(),
                wakeup.clone(),
            )),
            Arc::new(ConsumerRunner::new(
                PushStage(self.clone()),
                db.clone(),
                wakeup.clone(),
            )),
        ]
    }

    async fn risk_check(&self, event: &Envelope, tx: &mut WriteTx) -> Result<()> {
        let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        let status = order.status;
        if status != OrderStatus::Paid {
            tracing::info!(order.id = %order.id, %status, "risk: not paid; nothing to do");
            return Ok(());
        }
        let rules = &self.fulfillment.settings.risk;
        let since = now_ms().saturating_sub(rules.velocity.window_secs.saturating_mul(1000));
        let recent = tx
            .recent_payments_of_customer(&order.customer_id, since)
            .await?;
        let country = json_field(&order.shipping_address, "country")?;
        let email = json_field(&order.contact, "email")?;
        let decision = risk::assess(
            rules,
            &RiskFacts {
                currency: &order.currency,
                amount_minor: order.total_minor,
                recent_payments: recent,
                country: &country,
                email: &email,
            },
        );
        match decision {
            RiskDecision::Approved => {
                advance(tx, &order, status, OrderEvent::RiskApproved).await?;
                timeline(
                    tx,
                    &order.id,
                    TimelineKind::RiskApproved,
                    "the risk check passed",
                )
                .await?;
                let payload = serde_json::json!({ "order_id": order.id });
                new_event(
                    tx,
                    topics::ORDER_RISK_APPROVED,
                    &order.id,
                    &payload,
                    now_ms(),
                )
                .await?;
                tracing::info!(order.id = %order.id, "risk approved");
            }
            RiskDecision::Rejected { reason, detail } => {
                tracing::info!(order.id = %order.id, risk.reason = reason, "risk rejected");
                self.compensate(
                    tx,
                    &order,
                    status,
                    Failure {
                        event: OrderEvent::RiskRejected,
                        kind: TimelineKind::OrderRejected,
                        topic: topics::ORDER_REJECTED,
                        reason,
                        detail: format!("rejected by the risk check ({reason}): {detail}"),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Compensations in reverse order of the forward steps, each idempotent and each a span
    /// and a timeline entry: refund, release the stock, the terminal status (and its event).
    async fn compensate(
        &self,
        tx: &mut WriteTx,
        order: &OrderRecord,
        from: OrderStatus,
        failure: Failure,
    ) -> Result<()> {
        let order_id = order.id.as_str();
        refund_succeeded_payments(tx, order_id).await?;
        async {
            tx.release_reservations(order_id, now_ms()).await?;
            timeline(
                tx,
                order_id,
                TimelineKind::StockReleased,
                "the order's reserved stock was released",
            )
            .await
        }
        .instrument(tracing::info_span!(
            "compensate release_stock",
            order.id = %order_id,
            compensation = "release_stock"
        ))
        .await?;
        async {
            let to = advance(tx, order, from, failure.event).await?;
            timeline(tx, order_id, failure.kind, &failure.detail).await?;
            let payload = serde_json::json!({
                "order_id": order_id,
                "status": to.as_str(),
                "reason": failure.reason,
            });
            new_event(tx, failure.topic, order_id, &payload, now_ms()).await?;
            Ok::<_, Error>(())
        }
        .instrument(
            tracing::info_span!("compensate status", order.id = %order_id, compensation = "status"),
        )
        .await
    }

    /// A stage's event failed on its last delivery: unless the order has moved on, its
    /// unfinished shipments are dead-lettered and it is compensated to `fulfillment_failed`,
    /// so no order waits forever in a stage that will never run for it again.
    async fn fail_stuck_order(
        &self,
        event: &Envelope,
        error: &Error,
        tx: &mut WriteTx,
        waiting: OrderStatus,
        stage: &'static str,
    ) -> Result<bool> {
        let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
            return Ok(false);
        };
        let status = order.status;
        if status != waiting {
            return Ok(true);
        }
        let now = now_ms();
        for shipment in tx.shipments_of_order(&order.id).await? {
            if tx.fail_unfinished_shipment(&shipment.id, now).await? {
                let detail = format!(
                    "shipment {} from {} dead-lettered: {error}",
                    shipment.id, shipment.warehouse
                );
                timeline(tx, &order.id, TimelineKind::ShipmentFailed, &detail).await?;
                ordo_telemetry::metrics::count_shipment_dead_lettered();
            }
        }
        tracing::error!(order.id = %order.id, stage, error = %error,
            "the stage kept failing; the order fails and is compensated");
        self.compensate(
            tx,
            &order,
            status,
            Failure::fulfillment(
                "stage_failed",
                format!("the {stage} stage kept failing: {error}"),
            ),
        )
        .await?;
        Ok(true)
    }

    async fn split(&self, event: &Envelope, tx: &mut WriteTx) -> Result<()> {
        let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        let status = order.status;
        if status != OrderStatus::RiskApproved {
            tracing::info!(order.id = %order.id, %status, "split: nothing to do");
            return Ok(());
        }
        let now = now_ms();
        let mut by_warehouse: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for item in tx.unreleased_reservations(&order.id).await? {
            by_warehouse
                .entry(item.warehouse)
                .or_default()
                .push((item.sku, item.quantity));
        }
        let mut shipments = Vec::new();
        for (warehouse, items) in &by_warehouse {
            let id = tx
                .insert_shipment(&new_shipment_id(), &order.id, warehouse, now)
                .await?;
            for (sku, quantity) in items {
                tx.insert_shipment_item(&id, sku, *quantity).await?;
            }
            shipments.push(serde_json::json!({ "id": id, "warehouse": warehouse }));
        }
        advance(tx, &order, status, OrderEvent::SplitIntoShipments).await?;
        let detail = format!(
            "split into {} shipment(s): {}",
            by_warehouse.len(),
            by_warehouse.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        timeline(tx, &order.id, TimelineKind::Split, &detail).await?;
        let payload = serde_json::json!({ "order_id": order.id, "shipments": shipments });
        new_event(tx, topics::ORDER_SPLIT, &order.id, &payload, now).await?;
        Ok(())
    }

    async fn schedule(&self, event: &Envelope, tx: &mut WriteTx) -> Result<()> {
        let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        let status = order.status;
        if status != OrderStatus::Split {
            tracing::info!(order.id = %order.id, %status, "schedule: nothing to do");
            return Ok(());
        }
        let now = now_ms();
        let lead = i64::try_from(self.fulfillment.settings.pickup_lead.as_millis()).unwrap_or(0);
        let slot = risk::pickup_slot_ms(now, lead);
        let mut scheduled = Vec::new();
        let mut details = Vec::new();
        for shipment in tx.shipments_of_order(&order.id).await? {
            let carrier = risk::carrier_for_country(&shipment.country);
            if shipment.status == ShipmentStatus::Pending {
                tx.schedule_shipment(&shipment.id, carrier, slot, now)
                    .await?;
            }
            details.push(format!(
                "{} from {} by {carrier}",
                shipment.id, shipment.warehouse
            ));
            scheduled.push(serde_json::json!({
                "id": shipment.id,
                "warehouse": shipment.warehouse,
                "carrier": carrier,
                "pickup_slot": crate::rfc3339(slot),
            }));
        }
        advance(tx, &order, status, OrderEvent::ShipmentsScheduled).await?;
        let detail = format!("pickup at {}: {}", crate::rfc3339(slot), details.join("; "));
        timeline(tx, &order.id, TimelineKind::Scheduled, &detail).await?;
        let payload = serde_json::json!({ "order_id": order.id, "shipments": scheduled });
        new_event(tx, topics::ORDER_SCHEDULED, &order.id, &payload, now).await?;
        Ok(())
    }

    /// The push stage's work outside the write transaction: every shipment of the order not yet
    /// accepted or failed is pushed to its carrier.
    async fn push_shipments(&self, event: &Envelope) -> Result<()> {
        let Some(order) = self.db.order(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        if order.status != OrderStatus::Scheduled {
            return Ok(());
        }
        for shipment in self.db.shipments_of_order(&order.id).await? {
            // A shipment refused for good fails the order: the others need not go.
            if shipment.status == ShipmentStatus::Failed
                || (shipment.status.is_pushable() && !self.push_shipment(&order, &shipment).await?)
            {
                break;
            }
        }
        Ok(())
    }

    /// Pushes one shipment until the carrier accepts it (`true`), refuses it for good or the
    /// attempts run out (`false`, the shipment is `failed`). An open breaker is an error: the
    /// event is redelivered later, the shipment stays `pushing`.
    async fn push_shipment(&self, order: &OrderRecord, shipment: &ShipmentRecord) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let claimed = tx.claim_shipment_push(&shipment.id, now_ms()).await?;
        tx.commit().await?;
        if !claimed {
            return Ok(true);
        }
        let carrier = shipment.carrier.as_deref().unwrap_or("global-post");
        let items = self.db.shipment_items(&shipment.id).await?;
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
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::internal(format!("cannot encode: {e}")))?;
        let settings = &self.fulfillment.settings;
        let max_attempts = settings.carrier_max_attempts.max(1);
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            if self.fulfillment.admit_push(carrier) == Admission::Rejected {
                return Err(Error::unavailable(format!(
                    "the circuit breaker of carrier {carrier} is open"
                )));
            }
            let pushed = self.push_once(carrier, &shipment.id, attempt, &body).await;
            // Only the carrier's own failures count against it: a refusal (4xx) or a "slow
            // down" (408, 429) comes from a carrier that is up.
            let outcome = match &pushed {
                Pushed::Transient {
                    carrier_failed: true,
                    ..
                } => CallOutcome::Failed,
                _ => CallOutcome::Healthy,
            };
            self.fulfillment.record_push(carrier, outcome);
            match &pushed {
                Pushed::Accepted { .. } | Pushed::Refused { .. } => {}
                Pushed::Transient { reason, .. } => {
                    tracing::warn!(shipment.id = %shipment.id, carrier, attempt, reason = %reason,
                        "carrier push failed; retrying");
                }
            }
            match pushed {
                Pushed::Transient { reason, .. } if attempt >= max_attempts => {
                    break Err(format!("no success after {attempt} attempts ({reason})"));
                }
                Pushed::Transient { .. } => {
                    let base =
                        u64::try_from(settings.carrier_retry_base.as_millis()).unwrap_or(200);
                    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
                    tokio::time::sleep(Duration::from_millis(risk::backoff_ms(
                        base, attempt, jitter,
                    )))
                    .await;
                }
                Pushed::Accepted { status } => break Ok(status),
                Pushed::Refused { status } => {
                    break Err(format!("the carrier refused it with status {status}"));
                }
            }
        };
        let mut tx = self.db.begin().await?;
        let accepted = outcome.is_ok();
        let to = if accepted {
            ShipmentStatus::Accepted
        } else {
            ShipmentStatus::Failed
        };
        if tx.finish_shipment_push(&shipment.id, to, now_ms()).await? {
            let (kind, detail) = match &outcome {
                Ok(status) => (
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
            timeline(&mut tx, &order.id, kind, &detail).await?;
        }
        tx.commit().await?;
        if let Err(reason) = &outcome {
            ordo_telemetry::metrics::count_shipment_dead_lettered();
            tracing::error!(order.id = %order.id, shipment.id = %shipment.id, carrier,
                reason = %reason, "shipment dead-lettered");
        }
        Ok(accepted)
    }

    /// One push: the sandbox carrier in-process, or a `POST` to the webhook in a CLIENT span.
    async fn push_once(
        &self,
        carrier: &str,
        shipment_id: &str,
        attempt: u32,
        body: &[u8],
    ) -> Pushed {
        let settings = &self.fulfillment.settings;
        let (Some(url), Some(client)) = (
            settings.carrier_webhook_url.as_deref(),
            self.fulfillment.client.as_ref(),
        ) else {
            let span = tracing::info_span!("sandbox_carrier", shipment.id = shipment_id, carrier);
            span.in_scope(|| tracing::debug!("sandbox carrier accepted the shipment"));
            return Pushed::Accepted { status: None };
        };
        let (host, port) = conventions::server_of(url).unwrap_or_default();
        let span = tracing::info_span!(
            "carrier_push",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = "POST",
            server.address = %host,
            server.port = i64::from(port),
            url.full = url,
            http.response.status_code = field::Empty,
            error.type = field::Empty,
            shipment.id = shipment_id,
            carrier,
            attempt = i64::from(attempt),
        );
        let mut headers = reqwest::header::HeaderMap::new();
        propagation::inject_http(&span, &mut headers);
        let secret = settings.carrier_webhook_secret.as_deref().unwrap_or("");
        let signature = signature::sign(secret.as_bytes(), unix_seconds(), body);
        let request = client
            .post(url)
            .headers(headers)
            .header("content-type", "application/json")
            .header("idempotency-key", shipment_id)
            .header("ordo-signature", signature)
            .body(body.to_vec());
        let result = request.send().instrument(span.clone()).await;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                span.record("http.response.status_code", i64::from(status));
                let outcome = risk::classify_status(status);
                if outcome != PushOutcome::Accepted {
                    span.record("otel.status_code", "error");
                    span.record("error.type", status.to_string());
                }
                match outcome {
                    PushOutcome::Accepted => Pushed::Accepted {
                        status: Some(status),
                    },
                    PushOutcome::Retry => Pushed::Transient {
                        reason: format!("status {status}"),
                        carrier_failed: status >= 500,
                    },
                    PushOutcome::Final => Pushed::Refused { status },
                }
            }
            Err(error) => {
                span.record("otel.status_code", "error");
                span.record(
                    "error.type",
                    if error.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                );
                let reason = if error.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("transport error: {error}")
                };
                Pushed::Transient {
                    reason,
                    carrier_failed: true,
                }
            }
        }
    }

    /// The push stage's transaction: all shipments accepted → `shipped`; one failed →
    /// compensations and `fulfillment_failed`; otherwise the pushes are not done (an error: the
    /// event is redelivered).
    async fn finish_push(&self, event: &Envelope, tx: &mut WriteTx) -> Result<()> {
        let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
            return Err(Error::internal("an event's order is missing"));
        };
        let status = order.status;
        if status != OrderStatus::Scheduled {
            return Ok(());
        }
        let shipments = tx.shipments_of_order(&order.id).await?;
        if let Some(failed) = shipments
            .iter()
            .find(|s| s.status == ShipmentStatus::Failed)
        {
            return self
                .compensate(
                    tx,
                    &order,
                    status,
                    Failure::fulfillment(
                        "carrier_failed",
                        format!("shipment {} could not be handed to its carrier", failed.id),
                    ),
                )
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
        advance(tx, &order, status, OrderEvent::AllShipmentsAccepted).await?;
        let detail = format!(
            "all {} shipment(s) accepted by their carriers",
            shipments.len()
        );
        timeline(tx, &order.id, TimelineKind::Shipped, &detail).await?;
        let payload = serde_json::json!({
            "order_id": order.id,
            "shipments": shipments.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        });
        new_event(tx, topics::ORDER_SHIPPED, &order.id, &payload, now_ms()).await?;
        tracing::info!(order.id = %order.id, "order shipped");
        Ok(())
    }
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
        let mut settings = FulfillmentSettings {
            carrier_webhook_secret: Some("carrier_visible".to_owned()),
            ..FulfillmentSettings::default()
        };
        settings
            .risk
            .blocked_emails
            .insert("visible@example.com".to_owned());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("visible"), "{printed}");
    }
}

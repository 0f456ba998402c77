//! The saga's compensations, in reverse order of the forward steps, each idempotent and each a
//! span and a timeline entry: refund the payment (through the payments face: the sandbox
//! refunds at once, `refunded`; the webhook provider gets a `refund_requested`), release the
//! stock, then the terminal status and its event. Run after a risk rejection, a shipment refused for good, or a stage that kept
//! failing through every redelivery.

use super::Fulfillment;
use super::advance;
use crate::events::{self, OrderFailed};
use crate::{timeline, topics};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_outbox::Envelope;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;
use tracing::Instrument;

/// What a terminal failure of the saga is.
pub(super) struct Failure {
    event: OrderEvent,
    kind: TimelineKind,
    topic: &'static str,
    reason: &'static str,
    detail: String,
}

impl Failure {
    /// The risk check refused the order: `rejected`, for `reason`.
    pub(super) fn rejected(reason: &'static str, detail: String) -> Failure {
        Failure {
            event: OrderEvent::RiskRejected,
            kind: TimelineKind::OrderRejected,
            topic: topics::ORDER_REJECTED,
            reason,
            detail,
        }
    }

    /// The order could not be fulfilled: `fulfillment_failed`, for `reason`.
    pub(super) fn fulfillment(reason: &'static str, detail: String) -> Failure {
        Failure {
            event: OrderEvent::FulfillmentFailed,
            kind: TimelineKind::FulfillmentFailed,
            topic: topics::ORDER_FULFILLMENT_FAILED,
            reason,
            detail,
        }
    }
}

impl Fulfillment {
    /// Refund, release the stock, the terminal status (and its event).
    pub(super) async fn compensate(
        &self,
        tx: &mut WriteTx,
        order: &OrderRecord,
        from: OrderStatus,
        failure: Failure,
    ) -> Result<()> {
        let order_id = order.id.as_str();
        self.payments
            .refund_succeeded_payments(tx, order_id)
            .await?;
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
            let failed = OrderFailed {
                topic: failure.topic,
                order_id: order_id.to_owned(),
                status: to.as_str().to_owned(),
                reason: failure.reason.to_owned(),
            };
            events::append(tx, &failed, now_ms()).await?;
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
    pub(super) async fn fail_stuck_order(
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
}

//! The saga watchdog: finds orders that sit in a stage of the pipeline (paid to scheduled)
//! longer than `ORDO_SAGA_STUCK_AFTER_SECS` with no event on its way to move them — an event
//! lost outside the outbox's guarantees (a database restored from a backup, an event removed
//! by hand, a consumer that acknowledged without acting) — and sends their stage's event
//! again. Stages are idempotent by the order's status, so a re-sent event does the stage's
//! work once; if it keeps failing, the stage's last delivery compensates as usual. Each
//! re-drive is a span in the order's trace (linked to the run's span) and a `saga_redriven`
//! timeline entry. Dead events are not touched: they wait for an operator
//! (`ordo outbox redrive`).

use super::Fulfillment;
use crate::events;
use crate::{housekeeping, topics};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_storage::now_ms;
use ordo_storage::orders::StuckOrder;
use ordo_telemetry::{metrics, propagation};
use tracing::Instrument;

/// The event that starts the stage an order in `status` waits for.
fn stage_topic(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::Paid => Some(topics::ORDER_PAID),
        OrderStatus::RiskApproved => Some(topics::ORDER_RISK_APPROVED),
        OrderStatus::Split => Some(topics::ORDER_SPLIT),
        OrderStatus::Scheduled => Some(topics::ORDER_SCHEDULED),
        _ => None,
    }
}

impl Fulfillment {
    /// One run of the watchdog; returns how many orders it re-drove.
    pub async fn sweep_stuck_orders(&self) -> Result<usize> {
        let stuck_after_ms = i64::try_from(self.stuck_after.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(stuck_after_ms);
        let redriven = housekeeping::run(
            "saga watchdog poll",
            self.shared.db.stuck_orders(before, housekeeping::BATCH),
            |stuck| tracing::info_span!(parent: None, "saga_watchdog", orders.stuck = stuck),
            |order: StuckOrder| async move {
                let span = propagation::job_work_in_row_trace(
                    tracing::info_span!(parent: None, "saga_redrive",
                        order.id = %order.id, order.status = order.status.as_str()),
                    &order.trace_id,
                    &order.span_id,
                );
                self.redrive(&order).instrument(span).await
            },
        )
        .await?
        .acted;
        if redriven > 0 {
            self.shared.wakeup.wake();
            metrics::count_saga_redriven(redriven as u64);
            tracing::warn!(
                orders = redriven,
                "saga watchdog re-drove orders stuck in a stage"
            );
        }
        Ok(redriven)
    }

    async fn redrive(&self, order: &StuckOrder) -> Result<bool> {
        let Some(topic) = stage_topic(order.status) else {
            return Ok(false);
        };
        let now = now_ms();
        let mut tx = self.shared.db.begin().await?;
        if !tx
            .claim_stuck_order(&order.id, order.status, order.updated_at_ms, now)
            .await?
        {
            return Ok(false);
        }
        let redriven = events::StageRedriven {
            topic,
            order_id: order.id.clone(),
            redriven: true,
        };
        events::append(&mut tx, &redriven, now).await?;
        let detail = format!(
            "no progress in status {} for {} s: {topic} sent again",
            order.status,
            (now - order.updated_at_ms) / 1000
        );
        crate::timeline_at(&mut tx, &order.id, TimelineKind::SagaRedriven, &detail, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

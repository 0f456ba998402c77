//! The payment-timeout job: cancels the orders left unpaid longer than the timeout and
//! releases their stock, through the orders face's cancel transaction (the one a customer's
//! cancel takes). [`Faces::run_payment_timeouts`](crate::Faces::run_payment_timeouts) runs it.

use super::{Payments, corrupt};
use crate::housekeeping;
use crate::orders::CancelCause;
use ordo_domain::ids::OrderId;
use ordo_domain::{ErrorKind, Result};
use ordo_storage::now_ms;
use ordo_storage::records::UnpaidOrderRecord;
use ordo_telemetry::propagation;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

/// What one run of the payment-timeout job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Unpaid orders past the timeout that the run looked at (at most one batch).
    pub examined: usize,
    /// Of those, the orders it cancelled (the others were paid or cancelled meanwhile).
    pub cancelled: usize,
}

/// Runs in a row when batches come back full, before the job waits for its next tick.
const MAX_RUNS_PER_TICK: usize = 10;

/// The interval of the payment-timeout job: a quarter of the timeout, at most 5 s, at least
/// 200 ms.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

impl Payments {
    /// How long an order may stay unpaid.
    pub fn payment_timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the payment-timeout job runs.
    pub fn payment_timeout_interval(&self) -> Duration {
        sweep_interval(self.timeout)
    }

    /// One tick of the job: a full batch means more may be waiting, so it runs again at once,
    /// a bounded number of times (and no more once `stop` is cancelled).
    pub(crate) async fn time_out_unpaid_orders(&self, stop: &CancellationToken) {
        for _ in 0..MAX_RUNS_PER_TICK {
            match self.sweep_unpaid_orders().await {
                Ok(report) if report.examined == housekeeping::BATCH as usize => {
                    if stop.is_cancelled() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = %error, "payment timeout run failed; next run retries");
                    break;
                }
            }
        }
    }

    /// One run of the payment-timeout job: cancels up to a batch of the oldest orders unpaid for
    /// longer than the timeout and releases their stock.
    ///
    /// Traces: a run that finds orders to cancel is one root span, `payment_timeout_sweep`; each
    /// order's cancel is a span `payment_timeout` in that order's own trace (child of the step
    /// that created the order), linked to the run's span. A run that finds none exports nothing.
    pub async fn sweep_unpaid_orders(&self) -> Result<SweepReport> {
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(timeout_ms);
        let run = housekeeping::run(
            "payment timeout poll",
            self.shared
                .db
                .unpaid_orders_created_before(cutoff, housekeeping::BATCH),
            |examined| {
                tracing::info_span!(parent: None, "payment_timeout_sweep",
                    orders.examined = examined, orders.cancelled = field::Empty)
            },
            |order: UnpaidOrderRecord| async move {
                let span = propagation::job_work_in_row_trace(
                    tracing::info_span!(parent: None, "payment_timeout", order.id = %order.id),
                    &order.trace_id,
                    &order.span_id,
                );
                self.time_out_order(&order.id).instrument(span).await
            },
        )
        .await?;
        run.span.in_scope(|| {
            tracing::Span::current().record("orders.cancelled", run.acted);
            if run.acted > 0 {
                tracing::info!(
                    orders.cancelled = run.acted,
                    "unpaid orders cancelled after the payment timeout"
                );
            }
        });
        Ok(SweepReport {
            examined: run.found,
            cancelled: run.acted,
        })
    }

    /// Cancels order `id` for want of payment; `false` when there was nothing to do (it was
    /// paid or cancelled since the job looked).
    async fn time_out_order(&self, id: &str) -> Result<bool> {
        let id = OrderId::parse(id).map_err(corrupt("order id"))?;
        match self
            .orders
            .cancel_unpaid(&id, CancelCause::PaymentTimeout)
            .await
        {
            Ok((_, cancelled)) => Ok(cancelled),
            Err(error) if matches!(error.kind, ErrorKind::Conflict | ErrorKind::NotFound) => {
                tracing::debug!(order.id = %id, error = %error, "no longer to time out");
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_at_a_quarter_of_the_timeout_between_200_ms_and_5_s() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(900)),
            Duration::from_secs(5)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }
}

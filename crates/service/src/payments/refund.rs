//! The refund compensation: the saga's first step back (risk rejection, fulfillment failure),
//! and the payment callback's when a payment succeeds for an order that no longer waits for it.

use super::Payments;
use crate::timeline;
use ordo_domain::payment::PaymentStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use tracing::Instrument;

impl Payments {
    /// In its own span: every succeeded payment of `order_id` is refunded the way its provider
    /// refunds ([`PaymentProvider::refund_status`](super::providers::PaymentProvider::refund_status):
    /// the sandbox at once, `refunded`; the webhook provider is asked, `refund_requested`), each
    /// on the timeline. Idempotent: a refunded payment is no longer `succeeded`.
    pub(crate) async fn refund_succeeded_payments(
        &self,
        tx: &mut WriteTx,
        order_id: &str,
    ) -> Result<()> {
        async {
            let now = now_ms();
            for payment in tx.succeeded_payments_of_order(order_id).await? {
                let to = self.providers.refund_status(&payment.provider);
                let kind = match to {
                    PaymentStatus::Refunded => TimelineKind::PaymentRefunded,
                    _ => TimelineKind::RefundRequested,
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
}

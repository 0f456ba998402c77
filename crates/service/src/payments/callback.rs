//! A provider's callback: verified (`Ordo-Signature` over the exact body), parsed, then applied
//! to its payment and order in one transaction, idempotent by (provider, event id).

use super::{Payments, ack, stored_money};
use crate::api::{CallbackStatus, PaymentCallbackAck, PaymentCallbackInput};
use crate::events;
use ordo_domain::money::Money;
use ordo_domain::order::OrderEvent;
use ordo_domain::payment::{
    CallbackOutcome, PaymentId, PaymentStatus, Provider, ReportedStatus, decide, parse_event_id,
};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, ErrorKind, Result, signature};
use ordo_storage::now_ms;
use ordo_storage::records::{OrderRecord, PaymentEventRecord};

/// A provider's callback, authenticated and parsed ([`PaymentCallbackInput::verify_and_parse`]),
/// with the provider that sent it.
pub(super) struct Callback {
    pub(super) provider: Provider,
    pub(super) verified: VerifiedCallback,
}

/// A callback being applied to its payment (locked) and order (locked).
#[derive(Clone, Copy)]
struct Applied<'a> {
    callback: &'a Callback,
    payment_id: &'a str,
    payment_amount: Money,
    order: &'a OrderRecord,
    now: i64,
}

/// A provider's callback whose signature verified and whose body is well-formed: what
/// [`payment_callback`](crate::ports::PaymentsApi::payment_callback) acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCallback {
    pub event_id: String,
    pub payment_id: PaymentId,
    pub reported: ReportedStatus,
    pub amount: Money,
}

impl PaymentCallbackInput {
    /// The first steps of [`payment_callback`](crate::ports::PaymentsApi::payment_callback),
    /// before anything is read: verifies `signature_header` over the exact `raw_body` with
    /// `secret` at `now_unix_seconds`, then decodes and checks the body. A missing or bad signature is `unauthenticated`, a body
    /// that is not the callback's JSON `invalid_argument`.
    pub fn verify_and_parse(
        secret: &[u8],
        signature_header: Option<&str>,
        raw_body: &[u8],
        now_unix_seconds: i64,
    ) -> Result<VerifiedCallback> {
        let header = signature_header.ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                format!("the {} header is missing", signature::HEADER),
            )
        })?;
        signature::verify(secret, header, raw_body, now_unix_seconds)?;

        let input: PaymentCallbackInput = serde_json::from_slice(raw_body).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("the callback body is not valid: {e}"),
            )
        })?;
        Ok(VerifiedCallback {
            event_id: parse_event_id(&input.event_id)?.to_owned(),
            payment_id: PaymentId::parse(&input.payment_id)?,
            amount: input.amount.parse("amount")?,
            reported: match input.status {
                CallbackStatus::Succeeded => ReportedStatus::Succeeded,
                CallbackStatus::Failed => ReportedStatus::Failed,
            },
        })
    }
}

impl Payments {
    /// The callback's provider and its secret, if it is enabled.
    pub(super) fn callback_provider(&self, provider: &str) -> Result<(Provider, &[u8])> {
        Provider::from_name(provider)
            .and_then(|p| Some((p, self.providers.secret(p)?)))
            .ok_or_else(|| Error::not_found("payment provider"))
    }

    /// One transaction: the event (the idempotency of callbacks), what [`decide`] makes of it
    /// for the payment and its order, the timeline entry, and a refund when the order could no
    /// longer take the money.
    pub(super) async fn apply_callback(&self, callback: &Callback) -> Result<PaymentCallbackAck> {
        let span = tracing::Span::current();
        let provider = callback.provider;
        let mut tx = self.shared.db.begin().await?;
        let (payment, order) = tx
            .lock_payment_and_order(callback.verified.payment_id.as_str())
            .await?
            .filter(|(p, _)| p.provider == provider.as_str())
            .ok_or_else(|| Error::not_found(format!("payment {}", callback.verified.payment_id)))?;
        span.record("order.id", payment.order_id.as_str());
        let payment_amount = stored_money(payment.amount_minor, &payment.currency, "payment")?;
        let outcome = decide(
            payment.status,
            payment_amount,
            order.status,
            callback.verified.reported,
            callback.verified.amount,
        );

        let now = now_ms();
        let event = PaymentEventRecord {
            provider: provider.as_str().to_owned(),
            event_id: callback.verified.event_id.clone(),
            payment_id: payment.id.clone(),
            status: callback.verified.reported,
            amount_minor: callback.verified.amount.amount_minor(),
            currency: callback.verified.amount.currency().to_string(),
            outcome,
            received_at_ms: now,
        };
        if let Some(first) = tx.record_payment_event(&event).await? {
            // A concurrent delivery of the same event committed first.
            drop(tx);
            span.record("payment.outcome", first.outcome.as_str());
            return Ok(ack(first));
        }

        let applied = Applied {
            callback,
            payment_id: payment.id.as_str(),
            payment_amount,
            order: &order,
            now,
        };
        if let Some((kind, detail)) = self.apply_outcome(&mut tx, &applied, outcome).await? {
            crate::timeline_at(&mut tx, &order.id, kind, &detail, now).await?;
        }
        if matches!(outcome, CallbackOutcome::OrderNotPayable) {
            self.refund_succeeded_payments(&mut tx, &order.id).await?;
        }
        tx.commit().await?;
        self.shared.wakeup.wake();
        span.record("payment.outcome", outcome.as_str());
        tracing::info!(order.id = %order.id, payment.id = %payment.id, payment.provider = provider.as_str(),
            payment.outcome = outcome.as_str(), "payment callback applied");
        Ok(ack(event))
    }

    /// The writes of `outcome` to the payment and its order, and the timeline entry that says
    /// so (none when the payment was no longer pending).
    async fn apply_outcome(
        &self,
        tx: &mut ordo_storage::WriteTx,
        applied: &Applied<'_>,
        outcome: CallbackOutcome,
    ) -> Result<Option<(TimelineKind, String)>> {
        let Applied {
            callback,
            payment_id: id,
            payment_amount,
            order,
            now,
        } = *applied;
        let (provider, event_id) = (callback.provider, callback.verified.event_id.as_str());
        let order_status = order.status;
        Ok(match outcome {
            // The payment and the order are locked: their changes cannot miss, and go with
            // the commit.
            CallbackOutcome::Succeeded => {
                tx.set_payment_status_of_locked(
                    id,
                    PaymentStatus::Pending,
                    PaymentStatus::Succeeded,
                    now,
                )
                .await?;
                let paid = order_status.apply(OrderEvent::PaymentSucceeded)?;
                tx.set_status_of_locked(&order.id, order_status, paid, now)
                    .await?;
                // The fulfillment pipeline starts from this event, committed with the status.
                let paid = events::OrderPaid {
                    order_id: order.id.clone(),
                    payment_id: id.to_owned(),
                    provider: provider.as_str().to_owned(),
                    amount: events::Amount {
                        amount_minor: payment_amount.amount_minor(),
                        currency: payment_amount.currency().as_str().to_owned(),
                    },
                };
                events::append(tx, &paid, now).await?;
                Some((
                    TimelineKind::PaymentSucceeded,
                    format!(
                        "payment {id} of {payment_amount} succeeded at {provider} (event {event_id})"
                    ),
                ))
            }
            CallbackOutcome::Failed => {
                tx.set_payment_status_of_locked(
                    id,
                    PaymentStatus::Pending,
                    PaymentStatus::Failed,
                    now,
                )
                .await?;
                Some((
                    TimelineKind::PaymentFailed,
                    format!(
                        "payment {id} failed at {provider} (event {event_id}); the order still awaits payment"
                    ),
                ))
            }
            CallbackOutcome::AmountMismatch => Some((
                TimelineKind::PaymentMismatch,
                format!(
                    "{provider} reported {} for payment {id} of {payment_amount} \
                     (event {event_id}); the order is unchanged",
                    callback.verified.amount
                ),
            )),
            CallbackOutcome::OrderNotPayable => {
                // The provider took the money but the order can no longer be paid (cancelled,
                // e.g. by the payment timeout). The payment is recorded as succeeded, then
                // refunded by the caller, after this entry, by the saga's refund compensation.
                // Not deferred: the refund reads the succeeded payments back.
                self.set_payment_status(tx, id, PaymentStatus::Succeeded, now)
                    .await?;
                Some((
                    TimelineKind::PaymentNotApplied,
                    format!(
                        "payment {id} of {payment_amount} succeeded at {provider} (event {event_id}) \
                         but the order is {order_status}; it is refunded"
                    ),
                ))
            }
            CallbackOutcome::PaymentNotPending => None,
        })
    }

    async fn set_payment_status(
        &self,
        tx: &mut ordo_storage::WriteTx,
        id: &str,
        to: PaymentStatus,
        now: i64,
    ) -> Result<()> {
        if tx
            .set_payment_status(id, PaymentStatus::Pending, to, now)
            .await?
        {
            Ok(())
        } else {
            Err(Error::conflict(format!(
                "payment {id} changed concurrently"
            )))
        }
    }
}

//! The payments face: intents routed to a provider, the providers' signed callbacks, refunds
//! and the payment-timeout job.
//!
//! - `create_payment`: one intent per unpaid order at a time, for the order's total, routed by
//!   `ordo_domain::payment::route`; timeline `payment_requested`. The intent is then handed to
//!   its provider ([`providers`]: the in-process sandbox approves it, the webhook provider
//!   answers on its own).
//! - `payment_callback` (`callback`): authenticated (`Ordo-Signature`), idempotent by
//!   (provider, event id), checked against the payment's amount and currency; pays the order in
//!   the same transaction.
//! - `refund`: the refund of an order's succeeded payments, the saga's first compensation.
//! - `timeout`: the payment-timeout job cancels orders left unpaid too long and releases their
//!   stock, through the orders face's cancel transaction. Each order's cancel is traced in
//!   that order's trace, linked to the job run's own trace.

mod callback;
mod providers;
mod refund;
mod timeout;

pub use callback::VerifiedCallback;
pub use timeout::SweepReport;

use crate::Shared;
use crate::api::{
    CreatePaymentInput, MoneyDto, PaymentCallbackAck, PaymentCallbackInput, PaymentList,
    PaymentView, ProviderCallback,
};
use crate::orders::Orders;
use crate::ports::PaymentsApi;
use crate::step_ids;
use async_trait::async_trait;
use callback::Callback;
use ordo_config::PaymentSettings;
use ordo_domain::ids::{CountryCode, OrderId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::order::OrderStatus;
use ordo_domain::payment::{PaymentId, PaymentStatus, Provider, route};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::now_ms;
use ordo_storage::records::{OrderRecord, PaymentEventRecord, PaymentRecord};
use ordo_telemetry::propagation;
use providers::PaymentProviders;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, field};

/// The payments face (the `payments` role). Cheap to clone.
#[derive(Clone)]
pub struct Payments {
    shared: Shared,
    /// The providers, their secrets and the routing rules, resolved once.
    providers: Arc<PaymentProviders>,
    /// How long an order may stay unpaid before the payment-timeout job cancels it.
    timeout: Duration,
    /// The payment timeout cancels through the orders face's cancel transaction.
    orders: Orders,
}

impl Payments {
    pub(crate) fn new(shared: Shared, settings: PaymentSettings, orders: Orders) -> Payments {
        Payments {
            shared,
            providers: Arc::new(PaymentProviders::new(&settings)),
            timeout: settings.payment_timeout.max(Duration::from_secs(1)),
            orders,
        }
    }

    /// This face holding `orders` instead of its orders face.
    pub(crate) fn holding(self, orders: Orders) -> Payments {
        Payments { orders, ..self }
    }

    /// Hands every still-pending sandbox payment to the sandbox again: its approval lived in a
    /// task of a process that may have died (kill -9) after answering the intent. The callback's
    /// event id is fixed, so one that was delivered after all changes nothing. Each resumed
    /// approval runs in its order's trace, under the step that created the payment.
    pub async fn resume_sandbox_payments(&self) -> Result<usize> {
        self.providers.sandbox.resume(self).await
    }

    /// Hands a new (or re-requested) intent to its provider: the sandbox approves it; the
    /// webhook provider is told by the caller and answers with a callback.
    fn start_provider(&self, payment: &PaymentRecord) {
        if let Some(provider) = Provider::from_name(&payment.provider) {
            self.providers.get(provider).start(payment, self);
        }
    }
}

#[async_trait]
impl PaymentsApi for Payments {
    /// Creates the payment intent of an unpaid order, for its total, with the provider the
    /// routing rules choose (or the one `input` names, if enabled and matching). An order that
    /// already has a pending intent gets that one back (`replayed`), never a second.
    async fn create_payment(
        &self,
        order_id: &str,
        input: CreatePaymentInput,
    ) -> Result<PaymentCreated> {
        let order_id = OrderId::parse(order_id)?;
        let stored = self
            .shared
            .db
            .order(order_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("order {order_id}")))?;
        // The request may come in another trace than the order's: the step joins the order's
        // trace, under its creation, and links the request.
        let step = tracing::info_span!(parent: None, "create_payment", order.id = %order_id,
            payment.id = field::Empty, payment.provider = field::Empty);
        propagation::continue_stored_trace(&step, &stored.trace_id, &stored.span_id);
        async {
            let span = tracing::Span::current();
            let mut tx = self.shared.db.begin().await?;
            let Some((order, pending)) = tx
                .lock_order_with_pending_payment(order_id.as_str())
                .await?
            else {
                return Err(Error::not_found(format!("order {order_id}")));
            };
            let status = order.status;
            if status != OrderStatus::PendingPayment {
                return Err(Error::conflict(format!(
                    "order {order_id} is {status}: only an order in pending_payment takes a payment"
                )));
            }
            if let Some(pending) = pending {
                drop(tx);
                if let Some(requested) = input.provider.as_deref()
                    && requested != pending.provider
                {
                    return Err(Error::conflict(format!(
                        "order {order_id} already has a pending payment with provider {}",
                        pending.provider
                    )));
                }
                span.record("payment.id", pending.id.as_str());
                span.record("payment.provider", pending.provider.as_str());
                // The sandbox may have been stopped (a restart) before it approved: go again; its
                // callback has a fixed event id, so a second delivery changes nothing.
                self.start_provider(&pending);
                return Ok(PaymentCreated {
                    payment: view(&pending),
                    replayed: true,
                });
            }

            let total = stored_money(order.total_minor, &order.currency, "order total")?;
            let country = shipping_country(&order)?;
            let provider = route(
                &self.providers.rules,
                input.provider.as_deref(),
                total.currency(),
                &country,
                |name| self.providers.healthy(name),
            )?;
            let now = now_ms();
            let ids = step_ids();
            let record = PaymentRecord {
                id: new_payment_id().as_str().to_owned(),
                order_id: order.id.clone(),
                provider: provider.as_str().to_owned(),
                status: PaymentStatus::Pending,
                amount_minor: total.amount_minor(),
                currency: total.currency().to_string(),
                created_at_ms: now,
                updated_at_ms: now,
                trace_id: ids.trace_id.clone(),
                span_id: ids.span_id.clone(),
            };
            span.record("payment.id", record.id.as_str());
            span.record("payment.provider", provider.as_str());
            tx.insert_payment(&record).await?;
            let detail = format!("payment {} of {total} requested from {provider}", record.id);
            crate::timeline_at(
                &mut tx,
                &order.id,
                TimelineKind::PaymentRequested,
                &detail,
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(order.id = %order.id, payment.id = %record.id,
                payment.provider = provider.as_str(), "payment requested");
            self.start_provider(&record);
            Ok(PaymentCreated {
                payment: view(&record),
                replayed: false,
            })
        }
        .instrument(step)
        .await
    }

    /// The payments of order `order_id`, oldest first.
    #[tracing::instrument(name = "list_payments", skip_all, fields(order.id = %order_id))]
    async fn order_payments(&self, order_id: &str) -> Result<PaymentList> {
        let order_id = OrderId::parse(order_id)?;
        let payments = self.shared.db.payments_of_order(order_id.as_str()).await?;
        if payments.is_empty() && self.shared.db.order(order_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("order {order_id}")));
        }
        Ok(PaymentList {
            payments: payments.iter().map(view).collect(),
        })
    }

    /// Handles a provider's callback as it `arrived`: its body exactly as received, signed in
    /// its signature header with the provider's secret.
    ///
    /// Errors: an unknown or disabled provider is `not_found`; a missing or bad signature
    /// `unauthenticated`; a body that is not the callback's JSON `invalid_argument`; a payment
    /// id not of this provider `not_found`. A replayed event id answers what its first delivery
    /// did and changes nothing.
    #[tracing::instrument(name = "payment_callback", skip_all, fields(
        payment.provider = field::Empty, payment.id = field::Empty, payment.event_id = field::Empty,
        payment.outcome = field::Empty, order.id = field::Empty))]
    async fn payment_callback(&self, arrived: ProviderCallback<'_>) -> Result<PaymentCallbackAck> {
        let span = tracing::Span::current();
        let (provider, secret) = self.callback_provider(arrived.provider)?;
        span.record("payment.provider", provider.as_str());
        let verified = PaymentCallbackInput::verify_and_parse(
            secret,
            arrived.signature,
            arrived.body,
            unix_seconds(),
        )?;
        let callback = Callback { provider, verified };
        span.record("payment.event_id", callback.verified.event_id.as_str());
        span.record("payment.id", callback.verified.payment_id.as_str());

        let (stored, replayed) = self
            .shared
            .db
            .payment_and_event(
                callback.verified.payment_id.as_str(),
                provider.as_str(),
                &callback.verified.event_id,
            )
            .await?;
        // A replay: answer what the first delivery did, without a write.
        if let Some(first) = replayed {
            span.record("payment.outcome", first.outcome.as_str());
            return Ok(ack(first));
        }

        // The effect belongs to the order's trace, under the step that created the payment;
        // the callback request that caused it is linked (its second cause).
        let stored = stored
            .filter(|p| p.provider == provider.as_str())
            .ok_or_else(|| Error::not_found(format!("payment {}", callback.verified.payment_id)))?;
        span.record("order.id", stored.order_id.as_str());
        let step = tracing::info_span!(parent: None, "apply_payment_callback",
            payment.id = %callback.verified.payment_id, payment.provider = provider.as_str(),
            payment.event_id = callback.verified.event_id.as_str(), order.id = field::Empty,
            payment.outcome = field::Empty);
        propagation::continue_stored_trace(&step, &stored.trace_id, &stored.span_id);
        self.apply_callback(&callback).instrument(step).await
    }

    async fn ready(&self) -> Result<()> {
        self.shared.ready().await
    }
}

/// The outcome of a create: the intent, and whether it is the order's earlier pending one.
pub struct PaymentCreated {
    pub payment: PaymentView,
    pub replayed: bool,
}

fn new_payment_id() -> PaymentId {
    PaymentId::from_u128(uuid::Uuid::now_v7().as_u128())
}

fn unix_seconds() -> i64 {
    now_ms().div_euclid(1000)
}

/// A stored value that no longer parses: never trusted silently.
fn corrupt(what: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |error| {
        tracing::error!(error = %error, "a stored {what} failed validation");
        Error::internal(format!("a stored {what} is not valid"))
    }
}

fn stored_money(amount_minor: i64, currency: &str, what: &str) -> Result<Money> {
    Currency::parse(currency)
        .and_then(|c| Money::new(amount_minor, c))
        .map_err(corrupt(what))
}

/// The country an order ships to, from its stored shipping address.
fn shipping_country(order: &OrderRecord) -> Result<CountryCode> {
    #[derive(serde::Deserialize)]
    struct Stored {
        country: String,
    }
    serde_json::from_str::<Stored>(&order.shipping_address)
        .map_err(|_| Error::internal("a stored shipping address is not valid"))
        .and_then(|a| CountryCode::parse(&a.country).map_err(corrupt("shipping address")))
}

fn view(record: &PaymentRecord) -> PaymentView {
    PaymentView {
        id: record.id.clone(),
        order_id: record.order_id.clone(),
        provider: record.provider.clone(),
        status: record.status.as_str().to_owned(),
        amount: MoneyDto::from_parts(record.amount_minor, &record.currency),
    }
}

fn ack(event: PaymentEventRecord) -> PaymentCallbackAck {
    PaymentCallbackAck {
        event_id: event.event_id,
        outcome: event.outcome.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use ordo_config::{PaymentSettings, Secret};

    #[test]
    fn settings_never_print_their_secrets() {
        let settings = PaymentSettings {
            webhook_secret: Some(Secret::new("whsec_visible")),
            sandbox_secret: Some(Secret::new("sbx_visible")),
            ..PaymentSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("visible"), "{printed}");
    }
}

//! Payments: intents routed to a provider, the providers' signed callbacks, the sandbox provider
//! and the payment-timeout job.
//!
//! - `create_payment`: one intent per unpaid order at a time, for the order's total, routed by
//!   `ordo_domain::payment::route`; timeline `payment_requested`.
//! - `payment_callback`: authenticated (`Ordo-Signature`), idempotent by (provider, event id),
//!   checked against the payment's amount and currency; pays the order in the same transaction.
//! - The sandbox provider approves each of its intents by delivering a signed callback through
//!   `payment_callback`, the very path a real provider's request takes.
//! - The payment-timeout job cancels orders left unpaid too long and releases their stock,
//!   through the same transaction as a customer's cancel. Each order's cancel is traced in
//!   that order's trace, linked to the job run's own trace.

use crate::api::{
    CallbackStatus, CreatePaymentInput, MoneyDto, PaymentCallbackAck, PaymentCallbackInput,
    PaymentList, PaymentView,
};
use crate::events;
use crate::orders::CancelCause;
use crate::{Service, step_ids};
use ordo_config::{ExposeSecret, PaymentSettings, Secret};
use ordo_domain::ids::{CountryCode, OrderId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::payment::{
    CallbackOutcome, PaymentId, PaymentStatus, Provider, ProviderRule, ReportedStatus, decide,
    default_rules, parse_event_id, route,
};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, ErrorKind, Result, signature};
use ordo_storage::now_ms;
use ordo_storage::records::{OrderRecord, PaymentEventRecord, PaymentRecord};
use ordo_storage::timeline::NewTimelineEntry;
use ordo_telemetry::propagation;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

/// The settings resolved once: secrets as bytes, the routing rules.
pub(crate) struct Payments {
    sandbox_secret: Vec<u8>,
    webhook_secret: Option<Vec<u8>>,
    sandbox_delay: Duration,
    timeout: Duration,
    rules: Vec<ProviderRule>,
}

impl Payments {
    pub(crate) fn new(settings: PaymentSettings) -> Payments {
        let bytes = |secret: Secret| secret.expose_secret().as_bytes().to_vec();
        let webhook_secret = settings.webhook_secret.map(bytes);
        Payments {
            rules: default_rules(webhook_secret.is_some()),
            sandbox_secret: settings
                .sandbox_secret
                .map(bytes)
                .unwrap_or_else(random_secret),
            webhook_secret,
            sandbox_delay: settings.sandbox_delay,
            timeout: settings.payment_timeout.max(Duration::from_secs(1)),
        }
    }

    /// The secret `provider` signs its callbacks with; `None` when it is not enabled.
    fn secret(&self, provider: Provider) -> Option<&[u8]> {
        match provider {
            Provider::Sandbox => Some(&self.sandbox_secret),
            Provider::Webhook => self.webhook_secret.as_deref(),
        }
    }

    /// Routing's health view. Both providers are in-process or passive today (ordo sends
    /// nothing to them), so an enabled provider is healthy; once ordo delivers to a provider,
    /// consecutive delivery failures will mark it unhealthy here.
    fn healthy(&self, provider: &str) -> bool {
        Provider::from_name(provider).is_some_and(|p| self.secret(p).is_some())
    }
}

/// 32 bytes from the operating system's random source.
fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    if let Err(error) = getrandom::fill(&mut secret) {
        // Never seen on Linux; std's hasher keys come from the OS by another path.
        tracing::error!(%error, "no OS randomness for the sandbox secret; using a weaker one");
        use std::hash::{BuildHasher, Hasher};
        for chunk in secret.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_i64(now_ms());
            chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    secret
}

/// The outcome of a create: the intent, and whether it is the order's earlier pending one.
pub struct PaymentCreated {
    pub payment: PaymentView,
    pub replayed: bool,
}

/// What one run of the payment-timeout job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Unpaid orders past the timeout that the run looked at (at most one batch).
    pub examined: usize,
    /// Of those, the orders it cancelled (the others were paid or cancelled meanwhile).
    pub cancelled: usize,
}

/// Orders one run of the job handles at most.
const SWEEP_BATCH: u32 = 100;
/// Runs in a row when batches come back full, before the job waits for its next tick.
const MAX_RUNS_PER_TICK: usize = 10;
/// Tries of the sandbox's callback when the database is unavailable.
const SANDBOX_ATTEMPTS: u32 = 5;

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

/// A provider's callback, authenticated and parsed ([`PaymentCallbackInput::verify_and_parse`]),
/// with the provider that sent it.
struct Callback {
    provider: Provider,
    verified: VerifiedCallback,
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

/// The interval of the payment-timeout job: a quarter of the timeout, at most 5 s, at least
/// 200 ms.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// A provider's callback whose signature verified and whose body is well-formed: what
/// [`Service::payment_callback`] acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCallback {
    pub event_id: String,
    pub payment_id: PaymentId,
    pub reported: ReportedStatus,
    pub amount: Money,
}

impl PaymentCallbackInput {
    /// The first steps of [`Service::payment_callback`], before anything is read: verifies
    /// `signature_header` over the exact `raw_body` with `secret` at `now_unix_seconds`, then
    /// decodes and checks the body. A missing or bad signature is `unauthenticated`, a body
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

impl Service {
    /// Creates the payment intent of an unpaid order, for its total, with the provider the
    /// routing rules choose (or the one `input` names, if enabled and matching). An order that
    /// already has a pending intent gets that one back (`replayed`), never a second.
    pub async fn create_payment(
        &self,
        order_id: &str,
        input: CreatePaymentInput,
    ) -> Result<PaymentCreated> {
        let order_id = OrderId::parse(order_id)?;
        let stored = self
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
            let mut tx = self.db.begin().await?;
            let Some(order) = tx.lock_order_without_items(order_id.as_str()).await? else {
                return Err(Error::not_found(format!("order {order_id}")));
            };
            let status = order.status;
            if status != OrderStatus::PendingPayment {
                return Err(Error::conflict(format!(
                    "order {order_id} is {status}: only an order in pending_payment takes a payment"
                )));
            }
            if let Some(pending) = tx.pending_payment_of_order(order_id.as_str()).await? {
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
                &self.payments.rules,
                input.provider.as_deref(),
                total.currency(),
                &country,
                |name| self.payments.healthy(name),
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
            tx.append_timeline(&NewTimelineEntry {
                order_id: &order.id,
                at_ms: now,
                kind: TimelineKind::PaymentRequested,
                detail: &detail,
                trace_id: &ids.trace_id,
                span_id: &ids.span_id,
            })
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
    pub async fn order_payments(&self, order_id: &str) -> Result<PaymentList> {
        let order_id = OrderId::parse(order_id)?;
        let payments = self.db.payments_of_order(order_id.as_str()).await?;
        if payments.is_empty() && self.db.order(order_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("order {order_id}")));
        }
        Ok(PaymentList {
            payments: payments.iter().map(view).collect(),
        })
    }

    /// Handles a provider's callback: `raw_body` exactly as received, signed in
    /// `signature_header` with the provider's secret.
    ///
    /// Errors: an unknown or disabled provider is `not_found`; a missing or bad signature
    /// `unauthenticated`; a body that is not the callback's JSON `invalid_argument`; a payment
    /// id not of this provider `not_found`. A replayed event id answers what its first delivery
    /// did and changes nothing.
    #[tracing::instrument(name = "payment_callback", skip_all, fields(
        payment.provider = field::Empty, payment.id = field::Empty, payment.event_id = field::Empty,
        payment.outcome = field::Empty, order.id = field::Empty))]
    pub async fn payment_callback(
        &self,
        provider: &str,
        signature_header: Option<&str>,
        raw_body: &[u8],
    ) -> Result<PaymentCallbackAck> {
        let span = tracing::Span::current();
        let (provider, secret) = self.callback_provider(provider)?;
        span.record("payment.provider", provider.as_str());
        let verified = PaymentCallbackInput::verify_and_parse(
            secret,
            signature_header,
            raw_body,
            unix_seconds(),
        )?;
        let callback = Callback { provider, verified };
        span.record("payment.event_id", callback.verified.event_id.as_str());
        span.record("payment.id", callback.verified.payment_id.as_str());

        // A replay: answer what the first delivery did, without a write.
        if let Some(first) = self
            .db
            .payment_event(provider.as_str(), &callback.verified.event_id)
            .await?
        {
            span.record("payment.outcome", first.outcome.as_str());
            return Ok(ack(first));
        }

        // The effect belongs to the order's trace, under the step that created the payment;
        // the callback request that caused it is linked (its second cause).
        let stored = self
            .db
            .payment(callback.verified.payment_id.as_str())
            .await?
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

    /// The callback's provider and its secret, if it is enabled.
    fn callback_provider(&self, provider: &str) -> Result<(Provider, &[u8])> {
        Provider::from_name(provider)
            .and_then(|p| Some((p, self.payments.secret(p)?)))
            .ok_or_else(|| Error::not_found("payment provider"))
    }

    /// One transaction: the event (the idempotency of callbacks), what [`decide`] makes of it
    /// for the payment and its order, the timeline entry, and a refund when the order could no
    /// longer take the money.
    async fn apply_callback(&self, callback: &Callback) -> Result<PaymentCallbackAck> {
        let span = tracing::Span::current();
        let provider = callback.provider;
        let mut tx = self.db.begin().await?;
        let payment = tx
            .payment_for_update(callback.verified.payment_id.as_str())
            .await?
            .filter(|p| p.provider == provider.as_str())
            .ok_or_else(|| Error::not_found(format!("payment {}", callback.verified.payment_id)))?;
        span.record("order.id", payment.order_id.as_str());
        let order = tx
            .lock_order_without_items(&payment.order_id)
            .await?
            .ok_or_else(|| Error::internal("a payment's order is missing"))?;
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
            let ids = step_ids();
            tx.append_timeline(&NewTimelineEntry {
                order_id: &order.id,
                at_ms: now,
                kind,
                detail: &detail,
                trace_id: &ids.trace_id,
                span_id: &ids.span_id,
            })
            .await?;
        }
        if matches!(outcome, CallbackOutcome::OrderNotPayable) {
            crate::fulfillment::refund_succeeded_payments(&mut tx, &order.id).await?;
        }
        tx.commit().await?;
        self.wakeup.wake();
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
            CallbackOutcome::Succeeded => {
                self.set_payment_status(tx, id, PaymentStatus::Succeeded, now)
                    .await?;
                let paid = order_status.apply(OrderEvent::PaymentSucceeded)?;
                if !tx.set_status(&order.id, order_status, paid, now).await? {
                    return Err(Error::conflict(format!(
                        "order {} changed concurrently",
                        order.id
                    )));
                }
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
                self.set_payment_status(tx, id, PaymentStatus::Failed, now)
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

    /// Hands a new (or re-requested) intent to its provider: the sandbox approves it; the
    /// webhook provider is told by the caller and answers with a callback.
    fn start_provider(&self, payment: &PaymentRecord) {
        if payment.provider != Provider::Sandbox.as_str() {
            return;
        }
        let service = self.clone();
        let payment_id = payment.id.clone();
        let amount = MoneyDto::from_parts(payment.amount_minor, &payment.currency);
        let span = tracing::info_span!(parent: None, "sandbox_payment",
            payment.id = %payment_id, payment.provider = Provider::Sandbox.as_str());
        // A child of this step in the order's trace that does not hold the request's spans
        // open while it waits.
        propagation::spawn_child_in_current_trace(span, async move {
            tokio::time::sleep(service.payments.sandbox_delay).await;
            service.deliver_sandbox_callback(payment_id, amount).await;
        });
    }

    /// The sandbox provider's approval: a signed `succeeded` callback for the full amount,
    /// through the same [`Service::payment_callback`] a provider's request reaches.
    async fn deliver_sandbox_callback(&self, payment_id: String, amount: MoneyDto) {
        let body = PaymentCallbackInput {
            event_id: format!("sandbox_{payment_id}"),
            payment_id,
            status: CallbackStatus::Succeeded,
            amount,
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            tracing::error!("cannot encode the sandbox callback");
            return;
        };
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=SANDBOX_ATTEMPTS {
            let header = signature::sign(&self.payments.sandbox_secret, unix_seconds(), &body);
            match self
                .payment_callback(Provider::Sandbox.as_str(), Some(&header), &body)
                .await
            {
                Ok(ack) => {
                    tracing::info!(payment.outcome = %ack.outcome, "sandbox payment delivered");
                    return;
                }
                Err(error) if error.kind.is_server_fault() && attempt < SANDBOX_ATTEMPTS => {
                    tracing::warn!(error = %error, attempt, "sandbox callback failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(error) => {
                    tracing::warn!(error = %error, attempt, "sandbox callback not delivered");
                    return;
                }
            }
        }
    }

    /// How often the payment-timeout job runs.
    pub fn payment_timeout_interval(&self) -> Duration {
        sweep_interval(self.payments.timeout)
    }

    /// The payment-timeout job: every [`Service::payment_timeout_interval`], cancels the orders
    /// unpaid for longer than the timeout, until `stop` is cancelled. Safe to run in several
    /// instances at once: a cancel is a conditional status change, so a second one is a no-op.
    /// Hands every still-pending sandbox payment to the sandbox again: its approval lived in a
    /// task of a process that may have died (kill -9) after answering the intent. The callback's
    /// event id is fixed, so one that was delivered after all changes nothing. Each resumed
    /// approval runs in its order's trace, under the step that created the payment.
    pub async fn resume_sandbox_payments(&self) -> Result<usize> {
        // The look is housekeeping; each payment resumed continues in its order's trace.
        let pending = self
            .db
            .pending_payments_of_provider(Provider::Sandbox.as_str(), 10_000)
            .instrument(propagation::unexported_span("resume sandbox payments"))
            .await?;
        for payment in &pending {
            let step = tracing::info_span!(parent: None, "resume_sandbox_payment",
                payment.id = %payment.id, order.id = %payment.order_id);
            propagation::continue_stored_trace(&step, &payment.trace_id, &payment.span_id);
            step.in_scope(|| self.start_provider(payment));
        }
        if !pending.is_empty() {
            tracing::info!(payments = pending.len(), "pending sandbox payments resumed");
        }
        Ok(pending.len())
    }

    pub async fn run_payment_timeouts(&self, stop: CancellationToken) {
        let every = self.payment_timeout_interval();
        tracing::info!(
            timeout_secs = self.payments.timeout.as_secs(),
            interval_ms = every.as_millis() as u64,
            "payment timeout job started"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            // A full batch means more may be waiting: go again at once, a bounded number of
            // times.
            for _ in 0..MAX_RUNS_PER_TICK {
                match self.sweep_unpaid_orders().await {
                    Ok(report) if report.examined == SWEEP_BATCH as usize => {
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
            // Orders sitting in a stage with nothing on its way to move them: re-driven.
            if let Err(error) = self.sweep_stuck_orders().await {
                tracing::warn!(error = %error, "saga watchdog run failed; next run retries");
            }
            // Orders of customers who asked for erasure, terminal since: erased now.
            if let Err(error) = self.sweep_pending_erasures().await {
                tracing::warn!(error = %error, "erasure sweep failed; next run retries");
            }
        }
        tracing::info!("payment timeout job stopped");
    }

    /// One run of the payment-timeout job: cancels up to a batch of the oldest orders unpaid for
    /// longer than the timeout and releases their stock.
    ///
    /// Traces: a run that finds orders to cancel is one root span, `payment_timeout_sweep`; each
    /// order's cancel is a span `payment_timeout` in that order's own trace (child of the step
    /// that created the order), linked to the run's span. A run that finds none exports nothing.
    pub async fn sweep_unpaid_orders(&self) -> Result<SweepReport> {
        let timeout_ms = i64::try_from(self.payments.timeout.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(timeout_ms);
        // Looking is housekeeping: a run that finds nothing exports no trace, so an idle
        // service does not send a one-span trace every few seconds.
        let unpaid = self
            .db
            .unpaid_orders_created_before(cutoff, SWEEP_BATCH)
            .instrument(propagation::unexported_span("payment timeout poll"))
            .await?;
        if unpaid.is_empty() {
            return Ok(SweepReport::default());
        }
        let sweep = tracing::info_span!(parent: None, "payment_timeout_sweep",
            orders.examined = unpaid.len(), orders.cancelled = field::Empty);
        let run = async {
            let mut report = SweepReport {
                examined: unpaid.len(),
                cancelled: 0,
            };
            for order in &unpaid {
                let span =
                    tracing::info_span!(parent: None, "payment_timeout", order.id = %order.id);
                propagation::adopt_parent_from_ids(&span, &order.trace_id, &order.span_id);
                propagation::link_to(&span, &tracing::Span::current());
                if self.time_out_order(&order.id).instrument(span).await? {
                    report.cancelled += 1;
                }
            }
            tracing::Span::current().record("orders.cancelled", report.cancelled);
            if report.cancelled > 0 {
                tracing::info!(
                    orders.cancelled = report.cancelled,
                    "unpaid orders cancelled after the payment timeout"
                );
            }
            Ok::<_, Error>(report)
        };
        run.instrument(sweep).await
    }

    /// Cancels order `id` for want of payment; `false` when there was nothing to do (it was
    /// paid or cancelled since the job looked).
    async fn time_out_order(&self, id: &str) -> Result<bool> {
        let id = OrderId::parse(id).map_err(corrupt("order id"))?;
        match self.cancel_unpaid(&id, CancelCause::PaymentTimeout).await {
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

    #[test]
    fn only_enabled_providers_have_a_secret_and_count_as_healthy() {
        let payments = Payments::new(PaymentSettings::default());
        assert_eq!(payments.sandbox_secret.len(), 32);
        assert!(payments.healthy("sandbox"));
        assert!(!payments.healthy("webhook"));
        assert!(!payments.healthy("nope"));
        let with_webhook = Payments::new(PaymentSettings {
            webhook_secret: Some(Secret::new("s")),
            ..PaymentSettings::default()
        });
        assert!(with_webhook.healthy("webhook"));
        assert_eq!(with_webhook.rules.len(), 2);
    }
}

//! The sandbox provider, in-process: approves each of its intents after `sandbox_delay` by
//! delivering a signed `succeeded` callback through the payments face's callback path, the very
//! path a real provider's request takes; refunds at once. Its approvals live in tasks of this
//! process, so a start-up resumes the ones a previous process left pending.

use super::PaymentProvider;
use crate::api::{CallbackStatus, MoneyDto, PaymentCallbackInput, ProviderCallback};
use crate::payments::{Payments, unix_seconds};
use crate::ports::PaymentsApi;
use ordo_domain::payment::{PaymentStatus, Provider};
use ordo_domain::{Result, signature};
use ordo_storage::now_ms;
use ordo_storage::records::PaymentRecord;
use ordo_telemetry::propagation;
use std::time::Duration;
use tracing::Instrument;

/// Tries of the sandbox's callback when the database is unavailable.
const SANDBOX_ATTEMPTS: u32 = 5;

pub(crate) struct SandboxProvider {
    /// The configured secret, else a random one: the sandbox signs its own callbacks.
    secret: Vec<u8>,
    /// How long it waits before it approves.
    delay: Duration,
}

impl SandboxProvider {
    pub(super) fn new(secret: Option<Vec<u8>>, delay: Duration) -> SandboxProvider {
        SandboxProvider {
            secret: secret.unwrap_or_else(random_secret),
            delay,
        }
    }

    /// Hands every still-pending sandbox payment to the sandbox again; see
    /// [`Payments::resume_sandbox_payments`].
    pub(crate) async fn resume(&self, payments: &Payments) -> Result<usize> {
        // The look is housekeeping; each payment resumed continues in its order's trace.
        let pending = payments
            .shared
            .db
            .pending_payments_of_provider(Provider::Sandbox.as_str(), 10_000)
            .instrument(propagation::unexported_span("resume sandbox payments"))
            .await?;
        for payment in &pending {
            let step = tracing::info_span!(parent: None, "resume_sandbox_payment",
                payment.id = %payment.id, order.id = %payment.order_id);
            propagation::continue_stored_trace(&step, &payment.trace_id, &payment.span_id);
            step.in_scope(|| self.start(payment, payments));
        }
        if !pending.is_empty() {
            tracing::info!(payments = pending.len(), "pending sandbox payments resumed");
        }
        Ok(pending.len())
    }
}

impl PaymentProvider for SandboxProvider {
    fn callback_secret(&self) -> Option<&[u8]> {
        Some(&self.secret)
    }

    fn start(&self, payment: &PaymentRecord, payments: &Payments) {
        let payments = payments.clone();
        let delay = self.delay;
        let payment_id = payment.id.clone();
        let amount = MoneyDto::from_parts(payment.amount_minor, &payment.currency);
        let span = tracing::info_span!(parent: None, "sandbox_payment",
            payment.id = %payment_id, payment.provider = Provider::Sandbox.as_str());
        // A child of this step in the order's trace that does not hold the request's spans
        // open while it waits.
        propagation::spawn_child_in_current_trace(span, async move {
            tokio::time::sleep(delay).await;
            deliver_callback(&payments, payment_id, amount).await;
        });
    }

    fn refund_status(&self) -> PaymentStatus {
        PaymentStatus::Refunded
    }
}

/// The sandbox's approval: a signed `succeeded` callback for the full amount, through the same
/// [`PaymentsApi::payment_callback`] a provider's request reaches.
async fn deliver_callback(payments: &Payments, payment_id: String, amount: MoneyDto) {
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
        let header = signature::sign(&payments.providers.sandbox.secret, unix_seconds(), &body);
        match payments
            .payment_callback(ProviderCallback {
                provider: Provider::Sandbox.as_str(),
                signature: Some(&header),
                body: &body,
            })
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

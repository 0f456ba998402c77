//! Payments: the providers' signing secrets, the sandbox provider's delay, and how long an
//! order may stay unpaid.

use crate::{Secret, syntax};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PaymentSettings {
    /// Enables the `webhook` provider, whose callbacks it signs (`ORDO_PAYMENT_WEBHOOK_SECRET`).
    #[serde(rename = "payment_webhook_secret")]
    pub webhook_secret: Option<Secret>,
    /// The sandbox's signing secret (`ORDO_SANDBOX_SECRET`); unset: 32 random bytes per start.
    pub sandbox_secret: Option<Secret>,
    /// How long the sandbox waits before it approves (`ORDO_SANDBOX_PAYMENT_DELAY_MS`).
    #[serde(
        rename = "sandbox_payment_delay_ms",
        deserialize_with = "syntax::millis"
    )]
    pub sandbox_delay: Duration,
    /// How long an order may stay unpaid before the payment-timeout job cancels it
    /// (`ORDO_PAYMENT_TIMEOUT_SECS`, at least 1).
    #[serde(
        rename = "payment_timeout_secs",
        deserialize_with = "syntax::secs_at_least_one"
    )]
    pub payment_timeout: Duration,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            webhook_secret: None,
            sandbox_secret: None,
            sandbox_delay: Duration::ZERO,
            payment_timeout: Duration::from_secs(900),
        }
    }
}

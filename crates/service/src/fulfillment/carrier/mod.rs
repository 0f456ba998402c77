//! The carrier port: where the push stage hands a shipment over, and its two adapters, one
//! module each — [`sandbox`] (in-process, `ORDO_CARRIER_WEBHOOK_URL` unset: accepts everything)
//! and [`webhook`] (`POST` with `Idempotency-Key`, `traceparent` and `Ordo-Signature`, in a
//! CLIENT span, bounded by its timeout).

mod sandbox;
mod webhook;

use ordo_config::{ExposeSecret, FulfillmentSettings};
use sandbox::SandboxCarrier;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use webhook::WebhookCarrier;

/// How one push attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Taken (`status`: the carrier's, none for the sandbox).
    Accepted { status: Option<u16> },
    /// Refused for good (a 4xx other than 408 and 429).
    Refused { status: u16 },
    /// Worth retrying; `carrier_failed` when the carrier itself failed (5xx, timeout,
    /// transport error), not when it asked us to slow down (408, 429).
    Transient {
        reason: String,
        carrier_failed: bool,
    },
}

/// One push of one shipment.
pub(super) struct PushRequest<'a> {
    /// The carrier's name (`thai-express`, ...).
    pub carrier: &'a str,
    pub shipment_id: &'a str,
    /// 1 for the first push of this delivery.
    pub attempt: u32,
    /// The JSON body.
    pub body: &'a [u8],
}

pub(super) type PushFuture<'a> = Pin<Box<dyn Future<Output = Pushed> + Send + 'a>>;

/// A carrier's intake.
pub(super) trait Carrier: Send + Sync {
    fn push<'a>(&'a self, request: PushRequest<'a>) -> PushFuture<'a>;
}

/// The carrier of `settings`: the webhook when a URL is set, else the sandbox.
pub(super) fn from_settings(settings: &FulfillmentSettings) -> Arc<dyn Carrier> {
    let Some(url) = &settings.carrier_webhook_url else {
        return Arc::new(SandboxCarrier);
    };
    let secret = match &settings.carrier_webhook_secret {
        Some(secret) => secret.expose_secret().to_owned(),
        None => {
            tracing::warn!("ORDO_CARRIER_WEBHOOK_URL is set without ORDO_CARRIER_WEBHOOK_SECRET");
            String::new()
        }
    };
    match WebhookCarrier::new(url.expose_secret(), secret, settings.carrier_timeout) {
        Ok(webhook) => Arc::new(webhook),
        Err(error) => {
            tracing::error!(%error, "cannot build the carrier HTTP client; using the sandbox");
            Arc::new(SandboxCarrier)
        }
    }
}

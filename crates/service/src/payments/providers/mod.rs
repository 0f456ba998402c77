//! The payment-provider port: what ordo does with a provider — hands it an intent, verifies
//! its callbacks with its secret, refunds through it — and its adapters, one module each:
//! [`sandbox`] (in-process, approves every intent through a signed callback) and [`webhook`]
//! (an external provider that reports through signed callbacks; passive today).
//!
//! A provider without a callback secret is not enabled: routing skips it, and its callbacks
//! are refused as an unknown provider.

mod sandbox;
mod webhook;

use super::Payments;
use ordo_config::{ExposeSecret, PaymentSettings, Secret};
use ordo_domain::payment::{PaymentStatus, Provider, ProviderRule, default_rules};
use ordo_storage::records::PaymentRecord;
use sandbox::SandboxProvider;
use webhook::WebhookProvider;

/// A payment provider, as the payments face sees it.
pub(crate) trait PaymentProvider: Send + Sync {
    /// The secret its callbacks are signed with; `None` when it is not enabled.
    fn callback_secret(&self) -> Option<&[u8]>;

    /// Hands it a new (or re-requested) intent; its answer comes back as a signed callback
    /// through `payments`' callback path, the one a provider's request takes.
    fn start(&self, payment: &PaymentRecord, payments: &Payments);

    /// What a refund of one of its succeeded payments makes of the payment: `refunded` when it
    /// refunds at once, `refund_requested` when it is asked and confirms later.
    fn refund_status(&self) -> PaymentStatus;
}

/// The providers of the settings, resolved once: secrets as bytes, the routing rules.
pub(crate) struct PaymentProviders {
    pub(super) rules: Vec<ProviderRule>,
    pub(super) sandbox: SandboxProvider,
    webhook: WebhookProvider,
}

impl PaymentProviders {
    pub(crate) fn new(settings: &PaymentSettings) -> PaymentProviders {
        let webhook = WebhookProvider::new(settings.webhook_secret.as_ref().map(bytes));
        PaymentProviders {
            rules: default_rules(webhook.callback_secret().is_some()),
            sandbox: SandboxProvider::new(
                settings.sandbox_secret.as_ref().map(bytes),
                settings.sandbox_delay,
            ),
            webhook,
        }
    }

    /// The adapter of `provider`.
    pub(super) fn get(&self, provider: Provider) -> &dyn PaymentProvider {
        match provider {
            Provider::Sandbox => &self.sandbox,
            Provider::Webhook => &self.webhook,
        }
    }

    /// The secret `provider` signs its callbacks with; `None` when it is not enabled.
    pub(super) fn secret(&self, provider: Provider) -> Option<&[u8]> {
        self.get(provider).callback_secret()
    }

    /// Routing's health view. Both providers are in-process or passive today (ordo sends
    /// nothing to them), so an enabled provider is healthy; once ordo delivers to a provider,
    /// consecutive delivery failures will mark it unhealthy here.
    pub(super) fn healthy(&self, provider: &str) -> bool {
        Provider::from_name(provider).is_some_and(|p| self.secret(p).is_some())
    }

    /// What a refund makes of a succeeded payment of `provider` (a name ordo no longer knows:
    /// asked, as of an external provider).
    pub(super) fn refund_status(&self, provider: &str) -> PaymentStatus {
        Provider::from_name(provider).map_or(PaymentStatus::RefundRequested, |p| {
            self.get(p).refund_status()
        })
    }
}

fn bytes(secret: &Secret) -> Vec<u8> {
    secret.expose_secret().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enabled_providers_have_a_secret_and_count_as_healthy() {
        let providers = PaymentProviders::new(&PaymentSettings::default());
        assert_eq!(
            providers.secret(Provider::Sandbox).map(<[u8]>::len),
            Some(32)
        );
        assert!(providers.healthy("sandbox"));
        assert!(!providers.healthy("webhook"));
        assert!(!providers.healthy("nope"));
        let with_webhook = PaymentProviders::new(&PaymentSettings {
            webhook_secret: Some(Secret::new("s")),
            ..PaymentSettings::default()
        });
        assert!(with_webhook.healthy("webhook"));
        assert_eq!(with_webhook.rules.len(), 2);
    }

    #[test]
    fn the_sandbox_refunds_at_once_and_any_other_provider_is_asked() {
        let providers = PaymentProviders::new(&PaymentSettings::default());
        assert_eq!(providers.refund_status("sandbox"), PaymentStatus::Refunded);
        assert_eq!(
            providers.refund_status("webhook"),
            PaymentStatus::RefundRequested
        );
        assert_eq!(
            providers.refund_status("gone"),
            PaymentStatus::RefundRequested
        );
    }
}

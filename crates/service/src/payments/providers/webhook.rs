//! The webhook provider: an external provider that reports through signed callbacks. Passive
//! today: ordo sends it nothing (the caller tells it of an intent), so all it holds is the
//! secret its callbacks are verified with; a refund is asked of it and confirmed later.

use super::PaymentProvider;
use crate::payments::Payments;
use ordo_domain::payment::PaymentStatus;
use ordo_storage::records::PaymentRecord;

pub(crate) struct WebhookProvider {
    /// `None`: not enabled (no `ORDO_PAYMENT_WEBHOOK_SECRET`).
    secret: Option<Vec<u8>>,
}

impl WebhookProvider {
    pub(super) fn new(secret: Option<Vec<u8>>) -> WebhookProvider {
        WebhookProvider { secret }
    }
}

impl PaymentProvider for WebhookProvider {
    fn callback_secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }

    /// Nothing to send: the caller tells the provider, which answers with a callback.
    fn start(&self, _payment: &PaymentRecord, _payments: &Payments) {}

    fn refund_status(&self) -> PaymentStatus {
        PaymentStatus::RefundRequested
    }
}

//! ordo's application services: the use cases behind every transport.
//!
//! REST handlers (and, later, gRPC methods) parse nothing and decide nothing: they hand the
//! request's [`api`] input to a [`Service`] method and render what comes back. So both transports
//! share one set of semantics, one validation and one error model.
//!
//! Layout:
//! - [`api`]: the request inputs and response views (JSON and OpenAPI shapes of the contract).
//! - [`deadline`]: the current call's deadline, passed on to every downstream call.
//! - [`ports`]: the faces REST and gRPC serve (catalogue, orders, payments), local or remote.
//! - `catalog`: products, warehouses, stock.
//! - `orders`: create (idempotent, reserving stock atomically), read, list, cancel, timeline.
//! - `payments`: payment intents, provider callbacks, the sandbox provider, the payment timeout.
//! - `fulfillment`: the pipeline's stages (risk, split, schedule, carrier push) as outbox
//!   consumers, one file each, the saga's compensations, and the carrier port.
//! - [`events`]: the payloads of the outbox events, one struct per kind.
//!
//! Invariant: every write that changes an order also appends its timeline entry, stamped with
//! the trace and span ids of the step that wrote it, in the same transaction.

pub mod api;
mod catalog;
pub mod events;
/// The deadline of the call being served (it lives with the trace context: both travel with every call).
pub use ordo_telemetry::deadline;
mod fulfillment;
mod orders;
mod payments;
pub mod ports;

pub use orders::{CheckedSale, Created};
pub use ordo_config::{FulfillmentSettings, OrderSettings, PaymentSettings};
pub use payments::{PaymentCreated, SweepReport, VerifiedCallback};

use ordo_storage::Database;

/// The topics of the events ordo publishes (outbox `topic`, broker routing key / subject).
pub mod topics {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// A payment succeeded and the order is `paid`: the fulfillment pipeline's first input.
    pub const ORDER_PAID: &str = "order.paid";
    /// The risk check passed: the split stage's input.
    pub const ORDER_RISK_APPROVED: &str = "order.risk_approved";
    /// The risk check refused the order; it was refunded, its stock released.
    pub const ORDER_REJECTED: &str = "order.rejected";
    /// One shipment per warehouse exists: the scheduling stage's input.
    pub const ORDER_SPLIT: &str = "order.split";
    /// Every shipment has a carrier and pickup slot (one event carrying all shipment ids): the
    /// push stage's input.
    pub const ORDER_SCHEDULED: &str = "order.scheduled";
    /// Every shipment was accepted by its carrier.
    pub const ORDER_SHIPPED: &str = "order.shipped";
    /// A shipment failed for good; the order was refunded, its stock released.
    pub const ORDER_FULFILLMENT_FAILED: &str = "order.fulfillment_failed";
}

/// The use cases of ordo over one database. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    db: Database,
    /// Pokes the outbox relay after a commit that wrote events.
    wakeup: ordo_outbox::Wakeup,
    /// Payment providers, their secrets and routing rules, the payment timeout.
    payments: std::sync::Arc<payments::Payments>,
    /// Risk rules, carrier settings, the carrier client and its breakers.
    fulfillment: std::sync::Arc<fulfillment::Fulfillment>,
    /// Where order prices come from when the `inventory` role runs in another process; `None`:
    /// this database, read inside the order's transaction.
    price_source: Option<std::sync::Arc<dyn ports::CatalogApi>>,
    /// How old a POS terminal's sale may be when it syncs, how long an order may sit in a
    /// stage before the watchdog re-drives it.
    orders: OrderSettings,
}

impl Service {
    pub fn new(db: Database) -> Self {
        Service {
            db,
            wakeup: ordo_outbox::Wakeup::default(),
            payments: std::sync::Arc::new(payments::Payments::new(PaymentSettings::default())),
            fulfillment: std::sync::Arc::new(fulfillment::Fulfillment::new(
                FulfillmentSettings::default(),
            )),
            price_source: None,
            orders: OrderSettings::default(),
        }
    }

    /// Prices orders with the products of `catalog` (the `inventory` role in another process),
    /// read before the order's transaction begins, so no write waits on a network call.
    pub fn with_price_source(mut self, catalog: std::sync::Arc<dyn ports::CatalogApi>) -> Self {
        self.price_source = Some(catalog);
        self
    }

    /// Uses `settings` for the fulfillment pipeline (the default: nothing blocked, the sandbox
    /// carrier).
    pub fn with_fulfillment(mut self, settings: FulfillmentSettings) -> Self {
        self.fulfillment = std::sync::Arc::new(fulfillment::Fulfillment::new(settings));
        self
    }

    /// Uses `settings` for payments (the default: the sandbox only, with a random secret).
    pub fn with_payments(mut self, settings: PaymentSettings) -> Self {
        self.payments = std::sync::Arc::new(payments::Payments::new(settings));
        self
    }

    /// Uses `settings` for POS batches and the saga's watchdog.
    pub fn with_orders(mut self, settings: OrderSettings) -> Self {
        self.orders = settings;
        self
    }

    /// Wakes `wakeup`'s relay whenever a write commits events (else they wait for its poll).
    pub fn with_wakeup(mut self, wakeup: ordo_outbox::Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }

    /// Whether the service can do its work now (the readiness check).
    pub async fn ready(&self) -> ordo_domain::Result<()> {
        self.db.ping().await
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// The trace and span ids of the running step, for rows and timeline entries. All zeros when
/// telemetry is not installed (a unit test), which readers know as "no trace".
fn step_ids() -> ordo_telemetry::propagation::TraceIds {
    ordo_telemetry::propagation::current_ids().unwrap_or_else(|| {
        ordo_telemetry::propagation::TraceIds {
            trace_id: "0".repeat(32),
            span_id: "0".repeat(16),
        }
    })
}

/// RFC 3339 in UTC with exactly three fractional digits, so that the text sorts like the time.
fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_milliseconds_render_as_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_100),
            "2023-11-14T22:13:20.100Z"
        );
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}

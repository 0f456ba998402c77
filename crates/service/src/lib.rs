//! ordo's application services: the use cases behind every transport.
//!
//! REST handlers and gRPC methods parse nothing and decide nothing: they hand the request's
//! [`api`] input to a method of a face ([`ports`]) and render what comes back. So both
//! transports share one set of semantics, one validation and one error model.
//!
//! Layout — one type per face, each implementing its port directly, each in its module:
//! - [`api`]: the request inputs and response views (JSON and OpenAPI shapes of the contract).
//! - [`deadline`]: the current call's deadline, passed on to every downstream call.
//! - [`ports`]: the faces REST and gRPC serve (catalogue, orders, payments) as traits, local or
//!   remote.
//! - `catalog`: [`Catalog`], products, warehouses, stock.
//! - `orders`: [`Orders`], create (idempotent, reserving stock atomically), read, list, cancel,
//!   timeline; `pos` (a terminal's offline sales) and `erasure` (a customer's personal data).
//! - `payments`: [`Payments`], payment intents, provider callbacks (`callback`), refunds, the
//!   payment timeout (`timeout`); the payment-provider port and its adapters (`providers`:
//!   `sandbox`, `webhook`).
//! - `fulfillment`: [`Fulfillment`], the pipeline's stages (risk, split, schedule, carrier push)
//!   as outbox consumers, one file each, the saga's compensations, its watchdog, and the
//!   carrier port and its adapters (`carrier`: `sandbox`, `webhook`).
//! - `faces`: [`Faces`], the composition: which face holds which, and the periodic job.
//! - [`events`]: the payloads of the outbox events, one struct per kind.
//!
//! Faces share only `Shared` (the database, the outbox wakeup); what one needs of another it
//! holds: payments hold orders (the timeout cancels), fulfillment holds payments (refunds).
//!
//! Invariant: every write that changes an order also appends its timeline entry, stamped with
//! the trace and span ids of the step that wrote it, in the same transaction.

pub mod api;
mod catalog;
pub mod events;
mod faces;
/// The deadline of the call being served (it lives with the trace context: both travel with every call).
pub use ordo_telemetry::deadline;
mod fulfillment;
mod housekeeping;
mod orders;
mod payments;
pub mod ports;

pub use catalog::Catalog;
pub use faces::{Faces, Settings};
pub use fulfillment::Fulfillment;
pub use orders::{CheckedSale, Created, Orders};
pub use ordo_config::{FulfillmentSettings, OrderSettings, PaymentSettings};
pub use payments::{PaymentCreated, Payments, SweepReport, VerifiedCallback};

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

/// What every face works on: the database, and the wakeup of the outbox relay that a commit
/// which wrote events pokes (else they wait for its poll). Cheap to clone: both are `Arc`s.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) wakeup: ordo_outbox::Wakeup,
}

impl Shared {
    /// Whether the faces over this database can work now (the readiness check).
    pub(crate) async fn ready(&self) -> ordo_domain::Result<()> {
        self.db.ping().await
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

/// Appends a timeline entry to `order_id` in `tx`, at this instant, stamped with the running
/// step's ids.
async fn timeline(
    tx: &mut ordo_storage::WriteTx,
    order_id: &str,
    kind: ordo_domain::timeline::TimelineKind,
    detail: &str,
) -> ordo_domain::Result<()> {
    timeline_at(tx, order_id, kind, detail, ordo_storage::now_ms()).await
}

/// [`timeline`] for a step that took its time (`at_ms`) once for all it writes.
async fn timeline_at(
    tx: &mut ordo_storage::WriteTx,
    order_id: &str,
    kind: ordo_domain::timeline::TimelineKind,
    detail: &str,
    at_ms: i64,
) -> ordo_domain::Result<()> {
    let ids = step_ids();
    tx.append_timeline(&ordo_storage::timeline::NewTimelineEntry {
        order_id,
        at_ms,
        kind,
        detail,
        trace_id: &ids.trace_id,
        span_id: &ids.span_id,
    })
    .await
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

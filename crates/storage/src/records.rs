//! Row shapes exchanged with the service layer. Plain data: the service turns them into API
//! views; storage checked them on the way in. Statuses and kinds are the domain's enums,
//! parsed from their stored names as rows are read.

use ordo_domain::order::OrderStatus;
use ordo_domain::payment::{CallbackOutcome, PaymentStatus, ReportedStatus};
use ordo_domain::shipment::ShipmentStatus;
use ordo_domain::timeline::TimelineKind;

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProductRecord {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseRecord {
    pub id: String,
    pub country: String,
}

/// One SKU's stock in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRecord {
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderItemRecord {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRecord {
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub currency: String,
    pub total_minor: i64,
    /// JSON of the shipping address (personal data).
    pub shipping_address: String,
    /// JSON of the contact (personal data).
    pub contact: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub trace_id: String,
    pub span_id: String,
    pub items: Vec<OrderItemRecord>,
}

/// An order as `GET /v1/orders/{id}` shows it: the order with its items, and its shipments
/// (none before the split stage). What the order cache keeps.
pub struct OrderSnapshot {
    pub order: OrderRecord,
    pub shipments: Vec<ShipmentRecord>,
    /// What a reader derived from it once (the API view), kept with it: a snapshot never
    /// changes (a write replaces it in the cache), so neither does what follows from it.
    derived: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl OrderSnapshot {
    pub fn new(order: OrderRecord, shipments: Vec<ShipmentRecord>) -> Self {
        OrderSnapshot {
            order,
            shipments,
            derived: std::sync::OnceLock::new(),
        }
    }

    /// `derive(self)`, computed once per snapshot (a cached read then costs a clone, not a
    /// rebuild of the view: no JSON parsing of the address, no date formatting).
    pub fn derived<V, E>(&self, derive: impl FnOnce(&Self) -> Result<V, E>) -> Result<V, E>
    where
        V: Clone + Send + Sync + 'static,
    {
        if let Some(value) = self.derived.get().and_then(|any| any.downcast_ref::<V>()) {
            return Ok(value.clone());
        }
        let value = derive(self)?;
        let _ = self.derived.set(Box::new(value.clone()));
        Ok(value)
    }
}

/// The shape of a snapshot in the shared cache (what is derived from it is not kept).
#[derive(serde::Serialize)]
struct SnapshotOut<'a> {
    order: &'a OrderRecord,
    shipments: &'a [ShipmentRecord],
}

#[derive(serde::Deserialize)]
struct SnapshotIn {
    order: OrderRecord,
    shipments: Vec<ShipmentRecord>,
}

impl serde::Serialize for OrderSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotOut {
            order: &self.order,
            shipments: &self.shipments,
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for OrderSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let SnapshotIn { order, shipments } = SnapshotIn::deserialize(deserializer)?;
        Ok(OrderSnapshot::new(order, shipments))
    }
}

impl std::fmt::Debug for OrderSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderSnapshot")
            .field("order", &self.order)
            .field("shipments", &self.shipments)
            .finish_non_exhaustive()
    }
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRecord {
    pub at_ms: i64,
    pub kind: TimelineKind,
    pub detail: String,
    pub trace_id: String,
    pub span_id: String,
}

/// Filters and position of an order listing (newest first).
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub status: Option<OrderStatus>,
    /// Only orders older than this id (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: u32,
}

/// A payment intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: String,
    pub order_id: String,
    pub provider: String,
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The step that created the intent.
    pub trace_id: String,
    pub span_id: String,
}

/// A provider callback as received, with what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEventRecord {
    pub provider: String,
    pub event_id: String,
    pub payment_id: String,
    /// What the provider reported.
    pub status: ReportedStatus,
    pub amount_minor: i64,
    pub currency: String,
    pub outcome: CallbackOutcome,
    pub received_at_ms: i64,
}

/// An order still awaiting payment, as the payment-timeout job sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpaidOrderRecord {
    pub id: String,
    pub created_at_ms: i64,
    /// The step that created the order, whose trace the job's work joins.
    pub trace_id: String,
    pub span_id: String,
}

/// An event to append to the outbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewOutboxEvent {
    pub event_id: String,
    /// `order.created`, `payment.succeeded`...
    pub topic: String,
    /// The order the event is about: consumers and brokers key on it.
    pub aggregate_id: String,
    /// JSON.
    pub payload: String,
    /// JSON object of W3C trace-context fields of the step that wrote the event.
    pub trace_context: String,
    pub created_at_ms: i64,
}

/// An outbox row claimed by a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: String,
    pub topic: String,
    pub aggregate_id: String,
    pub payload: String,
    pub trace_context: String,
    pub created_at_ms: i64,
    /// Claims so far, this one included.
    pub attempts: i64,
    /// The trace context (JSON) of the last failed publish attempt, if one failed.
    pub last_attempt_context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPending {
    pub pending: i64,
    /// 0 when nothing is pending.
    pub oldest_created_at_ms: i64,
}

/// [`OutboxPending`] and the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub pending: i64,
    /// 0 when nothing is pending.
    pub oldest_created_at_ms: i64,
    pub dead: i64,
}

/// A shipment: the part of an order that leaves from one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShipmentRecord {
    pub id: String,
    pub order_id: String,
    pub warehouse: String,
    /// The warehouse's country.
    pub country: String,
    pub status: ShipmentStatus,
    pub carrier: Option<String>,
    pub pickup_slot_ms: Option<i64>,
    pub attempts: i64,
}

/// One SKU of a shipment (or one unreleased reservation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentItemRecord {
    pub warehouse: String,
    pub sku: String,
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> OrderSnapshot {
        let order = OrderRecord {
            id: "ord_1".into(),
            customer_id: "c".into(),
            status: OrderStatus::Paid,
            currency: "USD".into(),
            total_minor: 100,
            shipping_address: "{}".into(),
            contact: "{}".into(),
            created_at_ms: 1,
            updated_at_ms: 2,
            trace_id: "t".into(),
            span_id: "s".into(),
            items: Vec::new(),
        };
        OrderSnapshot::new(order, Vec::new())
    }

    #[test]
    fn a_derived_value_is_computed_once_and_an_error_is_not_kept() {
        let snapshot = snapshot();
        let failed: Result<String, &str> = snapshot.derived(|_| Err("not yet"));
        assert_eq!(failed, Err("not yet"));
        let mut calls = 0;
        for _ in 0..3 {
            let id: Result<String, &str> = snapshot.derived(|s| {
                calls += 1;
                Ok(s.order.id.clone())
            });
            assert_eq!(id.as_deref(), Ok("ord_1"));
        }
        assert_eq!(calls, 1);
    }
}

//! The payloads of the outbox events ordo publishes: one struct per kind, written by the step
//! that commits the event and read back by whoever consumes it (the pipeline's stages, a
//! broker's subscribers, tests), so producer and consumers share one definition.
//!
//! Words: an *outbox event* (here) is a message for other components, committed with the state
//! change and published by the relay; a *timeline entry* (`ordo_domain::timeline`) is a line of
//! an order's history shown to its owner; an *order transition* (`ordo_domain::order::OrderEvent`)
//! is the input of the order's state machine. They are three different things.

use crate::topics;
use ordo_domain::Result;
use ordo_storage::WriteTx;
use serde::{Deserialize, Serialize};

/// An outbox event's payload: the topic it is published on and the order it concerns (the
/// outbox row's aggregate, the broker's partitioning key).
pub trait OutboxPayload: Serialize {
    fn topic(&self) -> &'static str;
    fn order_id(&self) -> &str;
}

/// Appends `payload` to the outbox of `tx` (published only if `tx` commits).
pub(crate) async fn append<P: OutboxPayload>(
    tx: &mut WriteTx,
    payload: &P,
    now_ms: i64,
) -> Result<String> {
    ordo_outbox::new_event(tx, payload.topic(), payload.order_id(), payload, now_ms).await
}

/// An amount of money as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub amount_minor: i64,
    pub currency: String,
}

/// One reservation an order holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
}

/// `order.created`: an order was placed and its stock reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub customer_id: String,
    pub total: Amount,
    pub reservations: Vec<Reservation>,
}

/// `order.cancelled`: the customer cancelled, or the payment window closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    /// `customer` or `payment_timeout`.
    pub reason: String,
}

/// `order.paid`: a payment succeeded; the fulfillment pipeline's first input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: String,
    pub payment_id: String,
    pub provider: String,
    pub amount: Amount,
}

/// `order.risk_approved`: the risk check passed; the split stage's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRiskApproved {
    pub order_id: String,
}

/// A shipment as the split made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitShipment {
    pub id: String,
    pub warehouse: String,
}

/// `order.split`: one shipment per warehouse; the scheduling stage's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSplit {
    pub order_id: String,
    pub shipments: Vec<SplitShipment>,
}

/// A shipment with its carrier and pickup slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledShipment {
    pub id: String,
    pub warehouse: String,
    pub carrier: String,
    /// RFC 3339, UTC.
    pub pickup_slot: String,
}

/// `order.scheduled`: every shipment has a carrier and a slot; the push stage's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderScheduled {
    pub order_id: String,
    pub shipments: Vec<ScheduledShipment>,
}

/// `order.shipped`: every shipment was accepted by its carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: String,
    /// The shipment ids.
    pub shipments: Vec<String>,
}

/// `order.rejected` or `order.fulfillment_failed`: the saga ended the order after its
/// compensations (refund, stock released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    #[serde(skip)]
    pub topic: &'static str,
    pub order_id: String,
    /// The terminal status: `rejected` or `fulfillment_failed`.
    pub status: String,
    /// Why, in few values (`blocked_country`, `carrier_failed`, `stage_failed`, ...).
    pub reason: String,
}

/// A stage's input sent again by the saga watchdog for an order that made no progress: on
/// the topic of the stage the order waits for; its consumers read only the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRedriven {
    #[serde(skip)]
    pub topic: &'static str,
    pub order_id: String,
    pub redriven: bool,
}

macro_rules! fixed_topic {
    ($($payload:ident => $topic:expr),* $(,)?) => {$(
        impl OutboxPayload for $payload {
            fn topic(&self) -> &'static str {
                $topic
            }
            fn order_id(&self) -> &str {
                &self.order_id
            }
        }
    )*};
}

fixed_topic!(
    OrderCreated => topics::ORDER_CREATED,
    OrderCancelled => topics::ORDER_CANCELLED,
    OrderPaid => topics::ORDER_PAID,
    OrderRiskApproved => topics::ORDER_RISK_APPROVED,
    OrderSplit => topics::ORDER_SPLIT,
    OrderScheduled => topics::ORDER_SCHEDULED,
    OrderShipped => topics::ORDER_SHIPPED,
);

impl OutboxPayload for OrderFailed {
    fn topic(&self) -> &'static str {
        self.topic
    }
    fn order_id(&self) -> &str {
        &self.order_id
    }
}

impl OutboxPayload for StageRedriven {
    fn topic(&self) -> &'static str {
        self.topic
    }
    fn order_id(&self) -> &str {
        &self.order_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of each payload is the contract brokers' subscribers read: its field names
    /// stay what they were when payloads were written inline.
    #[test]
    fn payloads_keep_their_published_shape() {
        let scheduled = OrderScheduled {
            order_id: "ord_1".to_owned(),
            shipments: vec![ScheduledShipment {
                id: "shp_1".to_owned(),
                warehouse: "BKK-1".to_owned(),
                carrier: "thai-express".to_owned(),
                pickup_slot: "2026-12-02T14:00:00.000Z".to_owned(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&scheduled).unwrap(),
            serde_json::json!({"order_id": "ord_1", "shipments": [{"id": "shp_1",
                "warehouse": "BKK-1", "carrier": "thai-express",
                "pickup_slot": "2026-12-02T14:00:00.000Z"}]})
        );
        let failed = OrderFailed {
            topic: topics::ORDER_REJECTED,
            order_id: "ord_1".to_owned(),
            status: "rejected".to_owned(),
            reason: "blocked_country".to_owned(),
        };
        assert_eq!(failed.topic(), "order.rejected");
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({"order_id": "ord_1", "status": "rejected",
                "reason": "blocked_country"})
        );
        let paid: OrderPaid = serde_json::from_value(serde_json::json!({"order_id": "ord_1",
            "payment_id": "pay_1", "provider": "sandbox",
            "amount": {"amount_minor": 100, "currency": "USD"}}))
        .unwrap();
        assert_eq!(paid.topic(), "order.paid");
        assert_eq!(paid.amount.amount_minor, 100);
    }
}

//! The split stage: `order.risk_approved` → `order.split`, one shipment per warehouse holding
//! the order's unreleased reservations.

use super::Fulfillment;
use super::advance;
use super::stage::Step;
use crate::events::{self, OrderSplit, SplitShipment};
use crate::{timeline, topics};
use ordo_domain::Result;
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::timeline::TimelineKind;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;
use std::collections::BTreeMap;

pub(crate) struct Split;

impl Step for Split {
    const NAME: &'static str = "split";
    const TOPICS: &'static [&'static str] = &[topics::ORDER_RISK_APPROVED];
    const WAITING: OrderStatus = OrderStatus::RiskApproved;

    /// The batch's unreleased reservations, in one statement.
    async fn prefetch(_fulfillment: &Fulfillment, orders: &[&str], tx: &mut WriteTx) -> Result<()> {
        tx.prefetch_unreleased_reservations(orders).await
    }

    async fn run(_fulfillment: &Fulfillment, order: OrderRecord, tx: &mut WriteTx) -> Result<()> {
        let now = now_ms();
        let mut by_warehouse: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for item in tx.unreleased_reservations(&order.id).await? {
            by_warehouse
                .entry(item.warehouse)
                .or_default()
                .push((item.sku, item.quantity));
        }
        let mut shipments = Vec::new();
        for (warehouse, items) in &by_warehouse {
            // The order is locked and still `risk_approved`: it has no shipment yet.
            let id = new_shipment_id();
            tx.insert_shipment_of_locked_order(&id, &order.id, warehouse, now)
                .await?;
            for (sku, quantity) in items {
                tx.insert_shipment_item(&id, sku, *quantity).await?;
            }
            shipments.push(SplitShipment {
                id,
                warehouse: warehouse.clone(),
            });
        }
        advance(tx, &order, Self::WAITING, OrderEvent::SplitIntoShipments).await?;
        let detail = format!(
            "split into {} shipment(s): {}",
            by_warehouse.len(),
            by_warehouse.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        timeline(tx, &order.id, TimelineKind::Split, &detail).await?;
        let split = OrderSplit {
            order_id: order.id,
            shipments,
        };
        events::append(tx, &split, now).await?;
        Ok(())
    }
}

fn new_shipment_id() -> String {
    format!("shp_{:032x}", uuid::Uuid::now_v7().as_u128())
}

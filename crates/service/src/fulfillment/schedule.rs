//! The scheduling stage: `order.split` → `order.scheduled`. Carrier by the warehouse's
//! country, pickup slot at the next full hour after the lead time; one event carries every
//! shipment (the push stage pushes them all).

use super::Fulfillment;
use super::advance;
use super::stage::Step;
use crate::events::{self, OrderScheduled, ScheduledShipment};
use crate::{timeline, topics};
use ordo_domain::Result;
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::risk;
use ordo_domain::shipment::ShipmentStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;

pub(crate) struct Schedule;

impl Step for Schedule {
    const NAME: &'static str = "schedule";
    const TOPICS: &'static [&'static str] = &[topics::ORDER_SPLIT];
    const WAITING: OrderStatus = OrderStatus::Split;

    /// The batch's shipments, in one statement.
    async fn prefetch(_fulfillment: &Fulfillment, orders: &[&str], tx: &mut WriteTx) -> Result<()> {
        tx.prefetch_shipments(orders).await
    }

    async fn run(fulfillment: &Fulfillment, order: OrderRecord, tx: &mut WriteTx) -> Result<()> {
        let now = now_ms();
        let lead = i64::try_from(fulfillment.pickup_lead.as_millis()).unwrap_or(0);
        let slot = risk::pickup_slot_ms(now, lead);
        let mut scheduled = Vec::new();
        let mut details = Vec::new();
        for shipment in tx.shipments_of_order(&order.id).await? {
            let carrier = risk::carrier_for_country(&shipment.country);
            if shipment.status == ShipmentStatus::Pending {
                tx.schedule_shipment_of_locked_order(&order.id, &shipment.id, carrier, slot, now)
                    .await?;
            }
            details.push(format!(
                "{} from {} by {carrier}",
                shipment.id, shipment.warehouse
            ));
            scheduled.push(ScheduledShipment {
                id: shipment.id,
                warehouse: shipment.warehouse,
                carrier: carrier.to_owned(),
                pickup_slot: crate::rfc3339(slot),
            });
        }
        advance(tx, &order, Self::WAITING, OrderEvent::ShipmentsScheduled).await?;
        let detail = format!("pickup at {}: {}", crate::rfc3339(slot), details.join("; "));
        timeline(tx, &order.id, TimelineKind::Scheduled, &detail).await?;
        let scheduled = OrderScheduled {
            order_id: order.id,
            shipments: scheduled,
        };
        events::append(tx, &scheduled, now).await?;
        Ok(())
    }
}

//! The fulfillment pipeline's rows: shipments and their items, the facts of the risk check,
//! and the payment a compensation refunds. Writes are [`WriteTx`] steps; every status change
//! is conditional on the status it leaves, so a redelivered event cannot apply twice.

use crate::payments::{PAYMENT_COLUMNS, payment_from_row};
use crate::records::{PaymentRecord, ShipmentItemRecord, ShipmentRecord};
use crate::sql::{Conn, RowRef, params};
use crate::{Database, WriteTx};
use ordo_domain::Result;

const SHIPMENTS_OF_ORDER: &str = "SELECT s.id, s.order_id, s.warehouse, w.country, s.status,
         s.carrier, s.pickup_slot_ms, s.attempts
     FROM shipments s JOIN warehouses w ON w.id = s.warehouse
     WHERE s.order_id = $1 ORDER BY s.warehouse";

fn shipment_from_row(row: &RowRef<'_>) -> Result<ShipmentRecord> {
    Ok(ShipmentRecord {
        id: row.get(0)?,
        order_id: row.get(1)?,
        warehouse: row.get(2)?,
        country: row.get(3)?,
        status: row.get(4)?,
        carrier: row.get(5)?,
        pickup_slot_ms: row.get(6)?,
        attempts: row.get(7)?,
    })
}

/// The shipments of `order_id`, by warehouse, as `conn` sees them.
async fn shipments_of_order(conn: &Conn<'_>, order_id: &str) -> Result<Vec<ShipmentRecord>> {
    conn.query(
        "SELECT shipments",
        SHIPMENTS_OF_ORDER,
        &params![order_id],
        shipment_from_row,
    )
    .await
}

fn item_from_row(row: &RowRef<'_>) -> Result<ShipmentItemRecord> {
    Ok(ShipmentItemRecord {
        warehouse: row.get(0)?,
        sku: row.get(1)?,
        quantity: row.get(2)?,
    })
}

impl Database {
    /// The shipments of order `order_id`, by warehouse.
    pub async fn shipments_of_order(&self, order_id: &str) -> Result<Vec<ShipmentRecord>> {
        shipments_of_order(&self.read().await?.conn(), order_id).await
    }

    /// The items of shipment `shipment_id`, by SKU.
    pub async fn shipment_items(&self, shipment_id: &str) -> Result<Vec<ShipmentItemRecord>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT shipment_items",
                "SELECT s.warehouse, i.sku, i.quantity FROM shipment_items i
                 JOIN shipments s ON s.id = i.shipment_id WHERE i.shipment_id = $1
                 ORDER BY i.sku",
                &params![shipment_id],
                item_from_row,
            )
            .await
    }
}

impl WriteTx {
    /// The reservations of `order_id` not yet released, by warehouse and SKU.
    pub async fn unreleased_reservations(
        &mut self,
        order_id: &str,
    ) -> Result<Vec<ShipmentItemRecord>> {
        self.conn()
            .query(
                "SELECT reservations",
                "SELECT warehouse, sku, quantity FROM reservations
                 WHERE order_id = $1 AND released_at_ms IS NULL ORDER BY warehouse, sku",
                &params![order_id],
                item_from_row,
            )
            .await
    }

    /// Inserts a `pending` shipment of `order_id` from `warehouse`, unless that order already
    /// has one there; returns the id of the shipment that exists afterwards.
    pub async fn insert_shipment(
        &mut self,
        id: &str,
        order_id: &str,
        warehouse: &str,
        now_ms: i64,
    ) -> Result<String> {
        let conn = self.conn();
        conn.execute(
            "INSERT shipments",
            "INSERT INTO shipments (id, order_id, warehouse, status, attempts, created_at_ms,
                 updated_at_ms) VALUES ($1, $2, $3, 'pending', 0, $4, $4)
             ON CONFLICT (order_id, warehouse) DO NOTHING",
            &params![id, order_id, warehouse, now_ms],
        )
        .await?;
        conn.query_one(
            "SELECT shipments",
            "SELECT id FROM shipments WHERE order_id = $1 AND warehouse = $2",
            &params![order_id, warehouse],
            |row| row.get(0),
        )
        .await
    }

    pub async fn insert_shipment_item(
        &mut self,
        shipment_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<()> {
        self.conn()
            .execute(
                "INSERT shipment_items",
                "INSERT INTO shipment_items (shipment_id, sku, quantity) VALUES ($1, $2, $3)
                 ON CONFLICT (shipment_id, sku) DO NOTHING",
                &params![shipment_id, sku, quantity],
            )
            .await?;
        Ok(())
    }

    /// The shipments of `order_id` as this transaction sees them.
    pub async fn shipments_of_order(&mut self, order_id: &str) -> Result<Vec<ShipmentRecord>> {
        shipments_of_order(&self.conn(), order_id).await
    }

    /// Gives a `pending` shipment its carrier and pickup slot; `false` if it was not pending.
    pub async fn schedule_shipment(
        &mut self,
        id: &str,
        carrier: &str,
        pickup_slot_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let updated = self
            .conn()
            .execute(
                "UPDATE shipments",
                "UPDATE shipments SET status = 'scheduled', carrier = $1, pickup_slot_ms = $2,
                     updated_at_ms = $3 WHERE id = $4 AND status = 'pending'",
                &params![carrier, pickup_slot_ms, now_ms, id],
            )
            .await?;
        Ok(updated == 1)
    }

    /// Claims shipment `id` for a push to its carrier: `scheduled` (or `pushing`, left by a push
    /// that did not finish) becomes `pushing` and counts one attempt. `false`: it is accepted or
    /// failed already, and must not be pushed.
    pub async fn claim_shipment_push(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        let updated = self
            .conn()
            .execute(
                "UPDATE shipments",
                "UPDATE shipments SET status = 'pushing', attempts = attempts + 1,
                     updated_at_ms = $1 WHERE id = $2 AND status IN ('scheduled', 'pushing')",
                &params![now_ms, id],
            )
            .await?;
        Ok(updated == 1)
    }

    /// Records the carrier's final answer: `pushing` becomes `to` (`accepted` or `failed`).
    pub async fn finish_shipment_push(&mut self, id: &str, to: &str, now_ms: i64) -> Result<bool> {
        self.move_shipment(id, to, "'pushing'", now_ms).await
    }

    /// Gives up on a shipment the carrier has not accepted (`pending`, `scheduled` or
    /// `pushing` becomes `failed`); `false` if it was already accepted or failed.
    pub async fn fail_unfinished_shipment(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        self.move_shipment(id, "failed", "'pending', 'scheduled', 'pushing'", now_ms)
            .await
    }

    /// Sets shipment `id` to status `to` if its status is one of `from` (a fixed SQL list of
    /// literals, never input); `false` when it was not, and nothing changed.
    async fn move_shipment(
        &mut self,
        id: &str,
        to: &str,
        from: &'static str,
        now_ms: i64,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE shipments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ({from})"
        );
        let updated = self
            .conn()
            .execute("UPDATE shipments", &sql, &params![to, now_ms, id])
            .await?;
        Ok(updated == 1)
    }

    /// The succeeded payments of `order_id`: what a refund gives back.
    pub async fn succeeded_payments_of_order(
        &mut self,
        order_id: &str,
    ) -> Result<Vec<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE order_id = $1 AND status = 'succeeded' ORDER BY id"
        );
        self.conn()
            .query(
                "SELECT payments",
                &sql,
                &params![order_id],
                payment_from_row,
            )
            .await
    }

    /// How many payments of `customer_id` succeeded since `since_ms` (refunded ones count:
    /// they were attempts all the same).
    pub async fn recent_payments_of_customer(
        &mut self,
        customer_id: &str,
        since_ms: i64,
    ) -> Result<i64> {
        self.conn()
            .query_one(
                "SELECT payments",
                "SELECT COUNT(*) FROM payments p JOIN orders o ON o.id = p.order_id
                 WHERE o.customer_id = $1 AND p.updated_at_ms >= $2
                   AND p.status IN ('succeeded', 'refund_requested', 'refunded')",
                &params![customer_id, since_ms],
                |row| row.get(0),
            )
            .await
    }
}

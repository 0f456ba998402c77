//! Stock reservations: what an order holds of a warehouse's stock until it ships or is
//! cancelled. Every change of `stock.reserved` is conditional (`reserved + n <= on_hand`) or
//! gives back exactly what a reservation took.

use crate::records::ShipmentItemRecord;
use crate::shipments::item_from_row;
use crate::sql::{Param, params};
use crate::{WriteTx, placeholders};
use ordo_domain::Result;
use ordo_domain::stock::Allocation;
use std::collections::HashMap;

impl WriteTx {
    /// The reservations of `order_id` not yet released, by warehouse and SKU.
    pub async fn unreleased_reservations(
        &mut self,
        order_id: &str,
    ) -> Result<Vec<ShipmentItemRecord>> {
        if let Some(reservations) = self.batch_reads.reservations.remove(order_id) {
            return Ok(reservations);
        }
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

    /// Reads the unreleased reservations of every order of `order_ids` in one statement, for
    /// a batch of steps: each order's next [`WriteTx::unreleased_reservations`] is answered
    /// from it.
    pub async fn prefetch_unreleased_reservations(&mut self, order_ids: &[&str]) -> Result<()> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT order_id, warehouse, sku, quantity FROM reservations
             WHERE order_id IN ({}) AND released_at_ms IS NULL
             ORDER BY order_id, warehouse, sku",
            placeholders(1, order_ids.len())
        );
        let binds: Vec<Param<'_>> = order_ids.iter().map(|id| Param::Text(id)).collect();
        let rows = self
            .conn()
            .query("SELECT reservations", &sql, &binds, |row| {
                Ok((
                    row.get::<String>(0)?,
                    ShipmentItemRecord {
                        warehouse: row.get(1)?,
                        sku: row.get(2)?,
                        quantity: row.get(3)?,
                    },
                ))
            })
            .await?;
        let mut by_order: HashMap<String, Vec<ShipmentItemRecord>> = order_ids
            .iter()
            .map(|id| ((*id).to_owned(), Vec::new()))
            .collect();
        for (order_id, item) in rows {
            by_order.entry(order_id).or_default().push(item);
        }
        self.batch_reads.reservations = by_order;
        Ok(())
    }

    /// Reserves `allocations` for `order_id`. Each update is conditional on the units being
    /// available *now*, so a decision taken on a stale read cannot oversell: `false` when an
    /// allocation no longer fits; the allocations before it are then reserved already, so the
    /// caller rolls back.
    pub(crate) async fn try_reserve(
        &mut self,
        order_id: &str,
        allocations: &[Allocation],
        now_ms: i64,
    ) -> Result<bool> {
        let conn = self.conn();
        for allocation in allocations {
            let (sku, warehouse) = (allocation.sku.as_str(), allocation.warehouse.as_str());
            let updated = conn
                .execute(
                    "UPDATE stock",
                    "UPDATE stock SET reserved = reserved + $1, updated_at_ms = $2
                     WHERE sku = $3 AND warehouse = $4 AND reserved + $1 <= on_hand",
                    &params![allocation.quantity, now_ms, sku, warehouse],
                )
                .await?;
            if updated != 1 {
                return Ok(false);
            }
            conn.execute(
                "INSERT reservations",
                "INSERT INTO reservations (order_id, sku, warehouse, quantity)
                 VALUES ($1, $2, $3, $4)",
                &params![order_id, sku, warehouse, allocation.quantity],
            )
            .await?;
        }
        Ok(true)
    }

    /// Gives back every unreleased reservation of `order_id` and marks them released, so a
    /// second release finds nothing to give back.
    pub async fn release_reservations(&mut self, order_id: &str, now_ms: i64) -> Result<()> {
        let conn = self.conn();
        let reservations = conn
            .query(
                "SELECT reservations",
                "SELECT sku, warehouse, quantity FROM reservations
                 WHERE order_id = $1 AND released_at_ms IS NULL ORDER BY sku, warehouse",
                &params![order_id],
                |row| {
                    Ok((
                        row.get::<String>(0)?,
                        row.get::<String>(1)?,
                        row.get::<i64>(2)?,
                    ))
                },
            )
            .await?;
        for (sku, warehouse, quantity) in &reservations {
            conn.execute(
                "UPDATE stock",
                "UPDATE stock SET reserved = reserved - $1, updated_at_ms = $2
                 WHERE sku = $3 AND warehouse = $4",
                &params![*quantity, now_ms, sku, warehouse],
            )
            .await?;
        }
        conn.execute(
            "UPDATE reservations",
            "UPDATE reservations SET released_at_ms = $1
             WHERE order_id = $2 AND released_at_ms IS NULL",
            &params![now_ms, order_id],
        )
        .await?;
        Ok(())
    }
}

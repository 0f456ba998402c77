//! Shipments and their items: the part of an order that leaves from one warehouse. Writes are
//! [`WriteTx`] steps; every status change is conditional on the status it leaves, so a
//! redelivered event cannot apply twice.

use crate::deferred::AtCommit;
use crate::records::{ShipmentItemRecord, ShipmentRecord};
use crate::sql::{Conn, Param, RowRef, params};
use crate::timeline::NewTimelineEntry;
use crate::{Database, WriteTx, placeholders};
use ordo_domain::Result;
use ordo_domain::shipment::ShipmentStatus;
use std::collections::HashMap;

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
        status: row.named(4)?,
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

pub(crate) fn item_from_row(row: &RowRef<'_>) -> Result<ShipmentItemRecord> {
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

    /// The items of shipment `shipment_id`, by SKU. (Per shipment, on purpose: a join from
    /// the order's shipments to their items is planned as a scan of every item while the
    /// tables' statistics are young, and that plan then stays with the prepared statement.)
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

    /// Claims the shipments of order `order_id` for their pushes, in one statement of its own
    /// (atomic without a transaction around it): each pushable one (`scheduled`, or `pushing`
    /// left by a push that did not finish) becomes `pushing` and counts one attempt, unless a
    /// shipment of the order has failed (a shipment refused for good fails the order: the
    /// others need not go). Returns them by warehouse. Accepted and failed shipments are not
    /// claimed, and must not be pushed.
    pub async fn claim_shipment_pushes(
        &self,
        order_id: &str,
        now_ms: i64,
    ) -> Result<Vec<ShipmentRecord>> {
        let lease = self.write().await?;
        let mut claimed = lease
            .conn()
            .query(
                "UPDATE shipments",
                "UPDATE shipments SET status = $1, attempts = attempts + 1, updated_at_ms = $2
                 WHERE order_id = $3 AND status IN ($4, $5)
                   AND NOT EXISTS (SELECT 1 FROM shipments f
                                   WHERE f.order_id = $3 AND f.status = $6)
                 RETURNING id, order_id, warehouse,
                     (SELECT w.country FROM warehouses w WHERE w.id = shipments.warehouse),
                     status, carrier, pickup_slot_ms, attempts",
                &params![
                    ShipmentStatus::Pushing.as_str(),
                    now_ms,
                    order_id,
                    ShipmentStatus::Scheduled.as_str(),
                    ShipmentStatus::Pushing.as_str(),
                    ShipmentStatus::Failed.as_str(),
                ],
                shipment_from_row,
            )
            .await?;
        drop(lease);
        if !claimed.is_empty() {
            self.orders_cache().invalidate(&[order_id]).await;
        }
        // RETURNING does not promise an order.
        claimed.sort_by(|a, b| a.warehouse.cmp(&b.warehouse));
        Ok(claimed)
    }

    /// Records the carrier's final answer on shipment `id` of order `entry.order_id`:
    /// `pushing` becomes `to` (`accepted` or `failed`) and, if it did, `entry` joins the
    /// order's timeline; `false` when the shipment was no longer `pushing` (nothing written).
    /// PostgreSQL: one statement of its own (a data-modifying CTE); SQLite: one transaction.
    pub async fn finish_shipment_push(
        &self,
        id: &str,
        to: ShipmentStatus,
        entry: &NewTimelineEntry<'_>,
    ) -> Result<bool> {
        if self.backend() == crate::Backend::Sqlite {
            let mut tx = self.begin().await?;
            let moved = tx
                .move_shipment(id, &[ShipmentStatus::Pushing], to, entry.at_ms)
                .await?;
            if moved {
                tx.append_timeline(entry).await?;
            }
            tx.commit().await?;
            return Ok(moved);
        }
        let lease = self.write().await?;
        let moved = lease
            .conn()
            .query_opt(
                "UPDATE shipments",
                "WITH moved AS (
                     UPDATE shipments SET status = $1, updated_at_ms = $2
                     WHERE id = $3 AND status = $4 RETURNING order_id)
                 INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
                 SELECT order_id, $2, $5, $6, $7, $8 FROM moved
                 RETURNING order_id",
                &params![
                    to.as_str(),
                    entry.at_ms,
                    id,
                    ShipmentStatus::Pushing.as_str(),
                    entry.kind.as_str(),
                    entry.detail,
                    entry.trace_id,
                    entry.span_id,
                ],
                |row| row.get::<String>(0),
            )
            .await?;
        drop(lease);
        let moved = moved.is_some();
        if moved {
            self.orders_cache().invalidate(&[entry.order_id]).await;
        }
        Ok(moved)
    }
}

impl WriteTx {
    /// Inserts a `pending` shipment of `order_id` from `warehouse`, an order this transaction
    /// locked and found without shipments (the split stage: shipments are written only with
    /// the status that leaves `risk_approved`, in one transaction). Nothing waits for its
    /// answer: on PostgreSQL it travels with the `COMMIT`, before the shipment's items; a
    /// shipment of that order and warehouse written meanwhile would fail the commit.
    pub async fn insert_shipment_of_locked_order(
        &mut self,
        id: &str,
        order_id: &str,
        warehouse: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.touch_order(order_id);
        self.execute_at_commit(
            &INSERT_SHIPMENT,
            &params![
                id,
                order_id,
                warehouse,
                ShipmentStatus::Pending.as_str(),
                now_ms,
                now_ms
            ],
        )
        .await
    }

    /// Adds `quantity` of `sku` to shipment `shipment_id` unless it has that SKU already (on
    /// PostgreSQL it travels with the `COMMIT`).
    pub async fn insert_shipment_item(
        &mut self,
        shipment_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<()> {
        self.execute_at_commit(&INSERT_SHIPMENT_ITEM, &params![shipment_id, sku, quantity])
            .await
    }

    /// The shipments of `order_id` as this transaction sees them (from the batch's
    /// [`WriteTx::prefetch_shipments`], once, when it read them).
    pub async fn shipments_of_order(&mut self, order_id: &str) -> Result<Vec<ShipmentRecord>> {
        if let Some(shipments) = self.batch_reads.shipments.remove(order_id) {
            return Ok(shipments);
        }
        shipments_of_order(&self.conn(), order_id).await
    }

    /// Reads the shipments of every order of `order_ids` in one statement, for a batch of
    /// steps: each order's next [`WriteTx::shipments_of_order`] is answered from it.
    pub async fn prefetch_shipments(&mut self, order_ids: &[&str]) -> Result<()> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT s.id, s.order_id, s.warehouse, w.country, s.status,
                 s.carrier, s.pickup_slot_ms, s.attempts
             FROM shipments s JOIN warehouses w ON w.id = s.warehouse
             WHERE s.order_id IN ({}) ORDER BY s.order_id, s.warehouse",
            placeholders(1, order_ids.len())
        );
        let binds: Vec<Param<'_>> = order_ids.iter().map(|id| Param::Text(id)).collect();
        let rows = self
            .conn()
            .query("SELECT shipments", &sql, &binds, shipment_from_row)
            .await?;
        let mut by_order: HashMap<String, Vec<ShipmentRecord>> = order_ids
            .iter()
            .map(|id| ((*id).to_owned(), Vec::new()))
            .collect();
        for shipment in rows {
            by_order
                .entry(shipment.order_id.clone())
                .or_default()
                .push(shipment);
        }
        self.batch_reads.shipments = by_order;
        Ok(())
    }

    /// Gives shipment `id` of `order_id`, an order this transaction locked, its carrier and
    /// pickup slot if it is still `pending` (read so under that lock). Nothing waits for the
    /// answer: on PostgreSQL it travels with the `COMMIT` (the status condition stays, as a
    /// guard).
    pub async fn schedule_shipment_of_locked_order(
        &mut self,
        order_id: &str,
        id: &str,
        carrier: &str,
        pickup_slot_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        self.touch_order(order_id);
        self.execute_at_commit(
            &SCHEDULE_SHIPMENT,
            &params![
                ShipmentStatus::Scheduled.as_str(),
                carrier,
                pickup_slot_ms,
                now_ms,
                id,
                ShipmentStatus::Pending.as_str(),
            ],
        )
        .await
    }

    /// Gives up on a shipment the carrier has not accepted (`pending`, `scheduled` or
    /// `pushing` becomes `failed`); `false` if it was already accepted or failed.
    pub async fn fail_unfinished_shipment(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        let unfinished = ShipmentStatus::ALL.map(|s| (!s.is_finished()).then_some(s));
        let unfinished: Vec<ShipmentStatus> = unfinished.into_iter().flatten().collect();
        self.move_shipment(id, &unfinished, ShipmentStatus::Failed, now_ms)
            .await
    }

    /// Sets shipment `id` to status `to` if its status is one of `from`; `false` when it was
    /// not, and nothing changed.
    async fn move_shipment(
        &mut self,
        id: &str,
        from: &[ShipmentStatus],
        to: ShipmentStatus,
        now_ms: i64,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE shipments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ({})
             RETURNING order_id",
            placeholders(4, from.len())
        );
        let mut binds: Vec<Param<'_>> = params![to.as_str(), now_ms, id].into();
        binds.extend(from.iter().map(|status| Param::Text(status.as_str())));
        let updated = self
            .conn()
            .query_opt("UPDATE shipments", &sql, &binds, |row| row.get::<String>(0))
            .await?;
        Ok(self.touched_by(updated))
    }

    /// `true` when a shipment changed (`RETURNING` gave its order), whose order's cached read
    /// is then stale.
    fn touched_by(&mut self, order_id: Option<String>) -> bool {
        match order_id {
            Some(order_id) => {
                self.touch_order(&order_id);
                true
            }
            None => false,
        }
    }
}

pub(crate) static INSERT_SHIPMENT: AtCommit = AtCommit::insert(
    "INSERT shipments",
    "INSERT INTO shipments (id, order_id, warehouse, status, attempts, created_at_ms,
         updated_at_ms) VALUES ($1, $2, $3, $4, 0, $5, $6)",
);

pub(crate) static SCHEDULE_SHIPMENT: AtCommit = AtCommit {
    summary: "UPDATE shipments",
    postgres: "UPDATE shipments AS s SET status = v.status, carrier = v.carrier,
             pickup_slot_ms = v.slot, updated_at_ms = v.at_ms
         FROM (VALUES ($1, $2, $3::bigint, $4::bigint, $5, $6))
             AS v (status, carrier, slot, at_ms, id, from_status)
         WHERE s.id = v.id AND s.status = v.from_status",
    sqlite: "UPDATE shipments SET status = $1, carrier = $2, pickup_slot_ms = $3,
         updated_at_ms = $4 WHERE id = $5 AND status = $6",
    distinct_param: Some(4),
};

pub(crate) static INSERT_SHIPMENT_ITEM: AtCommit = AtCommit::insert(
    "INSERT shipment_items",
    "INSERT INTO shipment_items (shipment_id, sku, quantity) VALUES ($1, $2, $3)
     ON CONFLICT (shipment_id, sku) DO NOTHING",
);

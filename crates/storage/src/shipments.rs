//! Shipments and their items: the part of an order that leaves from one warehouse. Writes are
//! [`WriteTx`] steps; every status change is conditional on the status it leaves, so a
//! redelivered event cannot apply twice.

use crate::deferred::AtCommit;
use crate::records::{ShipmentItemRecord, ShipmentRecord};
use crate::sql::{Conn, Param, RowRef, params};
use crate::timeline::NewTimelineEntry;
use crate::{Backend, Database, WriteTx, placeholders};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;
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

    /// Claims, in one statement of its own (atomic without a transaction around it), the
    /// shipments to push of those of `order_ids` still in status `waiting`: each pushable one
    /// (`scheduled`, or `pushing` left by a push that did not finish) becomes `pushing` and
    /// counts one attempt, unless a shipment of its order has failed (a shipment refused for
    /// good fails the order: the others need not go). Returns them by order and warehouse,
    /// each with its order's shipping address and its items. Accepted and failed shipments
    /// are not claimed, and must not be pushed.
    pub async fn claim_shipment_pushes(
        &self,
        order_ids: &[&str],
        waiting: OrderStatus,
        now_ms: i64,
    ) -> Result<Vec<ClaimedPush>> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let items = match self.backend() {
            Backend::Postgres => {
                "(SELECT COALESCE(json_agg(json_build_array(i.sku, i.quantity)
                     ORDER BY i.sku), '[]')::text
                  FROM shipment_items i WHERE i.shipment_id = shipments.id)"
            }
            Backend::Sqlite => {
                "(SELECT json_group_array(json_array(sku, quantity)) FROM (
                     SELECT sku, quantity FROM shipment_items i
                     WHERE i.shipment_id = shipments.id ORDER BY sku))"
            }
        };
        let sql = format!(
            "UPDATE shipments SET status = $1, attempts = attempts + 1, updated_at_ms = $2
             WHERE status IN ($3, $4)
               AND EXISTS (SELECT 1 FROM orders o
                           WHERE o.id = shipments.order_id AND o.status = $5)
               AND NOT EXISTS (SELECT 1 FROM shipments f
                               WHERE f.order_id = shipments.order_id AND f.status = $6)
               AND order_id IN ({})
             RETURNING id, order_id, warehouse,
                 (SELECT w.country FROM warehouses w WHERE w.id = shipments.warehouse),
                 status, carrier, pickup_slot_ms, attempts,
                 (SELECT o.shipping_address FROM orders o WHERE o.id = shipments.order_id),
                 {items}",
            placeholders(7, order_ids.len())
        );
        let mut binds: Vec<Param<'_>> = params![
            ShipmentStatus::Pushing.as_str(),
            now_ms,
            ShipmentStatus::Scheduled.as_str(),
            ShipmentStatus::Pushing.as_str(),
            waiting.as_str(),
            ShipmentStatus::Failed.as_str(),
        ]
        .into();
        binds.extend(order_ids.iter().map(|id| Param::Text(id)));
        let lease = self.write().await?;
        let mut claimed = lease
            .conn()
            .query("UPDATE shipments", &sql, &binds, |row| {
                let shipment = shipment_from_row(row)?;
                let items: Vec<(String, i64)> = crate::sql::parse_json(&row.get::<String>(9)?)?;
                Ok(ClaimedPush {
                    items: items
                        .into_iter()
                        .map(|(sku, quantity)| ShipmentItemRecord {
                            warehouse: shipment.warehouse.clone(),
                            sku,
                            quantity,
                        })
                        .collect(),
                    shipping_address: row.get(8)?,
                    shipment,
                })
            })
            .await?;
        drop(lease);
        // RETURNING does not promise an order.
        claimed.sort_by(|a, b| {
            (&a.shipment.order_id, &a.shipment.warehouse)
                .cmp(&(&b.shipment.order_id, &b.shipment.warehouse))
        });
        let mut orders: Vec<&str> = claimed
            .iter()
            .map(|claim| claim.shipment.order_id.as_str())
            .collect();
        orders.dedup();
        self.orders_cache().invalidate(&orders).await;
        Ok(claimed)
    }

    /// Records the carriers' final answers: each shipment `pushing` becomes its `to`
    /// (`accepted` or `failed`) and, if it did, its entry joins its order's timeline (one no
    /// longer `pushing` is left as it is, nothing written), all in one transaction. On
    /// PostgreSQL the answers ride with the `COMMIT`, merged ([`FINISH_PUSH`]): one round trip.
    pub async fn finish_shipment_pushes(&self, finished: &[FinishedPush<'_>]) -> Result<()> {
        if finished.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        if self.backend() == Backend::Sqlite {
            for push in finished {
                let entry = &push.entry;
                if tx
                    .move_shipment(push.id, &[ShipmentStatus::Pushing], push.to, entry.at_ms)
                    .await?
                {
                    tx.append_timeline(entry).await?;
                }
            }
        } else {
            // One statement per chunk of answers, sent with the COMMIT: one round trip and
            // one transaction for the whole batch.
            for (pos, push) in finished.iter().enumerate() {
                let entry = &push.entry;
                tx.execute_at_commit(
                    &FINISH_PUSH,
                    &params![
                        push.id,
                        push.to.as_str(),
                        entry.at_ms,
                        ShipmentStatus::Pushing.as_str(),
                        pos as i64,
                        entry.kind.as_str(),
                        entry.detail,
                        entry.trace_id,
                        entry.span_id,
                    ],
                )
                .await?;
                tx.touch_order(entry.order_id);
            }
        }
        // The commit invalidates the cached reads of the orders it touched.
        tx.commit().await
    }
}

/// A carrier's answer on a `pushing` shipment and its timeline entry, if the shipment was
/// still `pushing` (PostgreSQL: a data-modifying CTE over a `VALUES` row, so that a batch's
/// answers merge; entries keep the order of `pos`). SQLite runs
/// [`WriteTx::move_shipment`] and the timeline entry instead.
pub(crate) static FINISH_PUSH: AtCommit = AtCommit::postgres_only(
    "UPDATE shipments",
    "WITH v (id, status, at_ms, from_status, pos, type, detail, trace_id, span_id) AS (
         VALUES ($1, $2, $3::bigint, $4, $5::bigint, $6, $7, $8, $9)),
     moved AS (
         UPDATE shipments AS s SET status = v.status, updated_at_ms = v.at_ms
         FROM v WHERE s.id = v.id AND s.status = v.from_status
         RETURNING s.id, s.order_id)
     INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
     SELECT m.order_id, v.at_ms, v.type, v.detail, v.trace_id, v.span_id
     FROM moved m JOIN v ON v.id = m.id ORDER BY v.pos",
    Some(0),
);

/// A shipment [`Database::claim_shipment_pushes`] claimed, with what its carrier is sent.
#[derive(Debug, Clone)]
pub struct ClaimedPush {
    pub shipment: ShipmentRecord,
    /// The order's shipping address (stored JSON).
    pub shipping_address: String,
    pub items: Vec<ShipmentItemRecord>,
}

/// A carrier's final answer on a shipment, for [`Database::finish_shipment_pushes`].
#[derive(Debug, Clone)]
pub struct FinishedPush<'a> {
    pub id: &'a str,
    pub to: ShipmentStatus,
    /// Its timeline entry (`entry.order_id` is the shipment's order).
    pub entry: NewTimelineEntry<'a>,
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

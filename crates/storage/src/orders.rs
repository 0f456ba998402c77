//! Orders and their items: the reads of the read connections (one order in one statement,
//! listings), and the [`WriteTx`] steps that insert an order, lock it and move its status.

use crate::deferred::AtCommit;
use crate::records::{OrderFilter, OrderItemRecord, OrderRecord, OrderSnapshot, ShipmentRecord};
use crate::sql::{Conn, Param, RowRef, params};
use crate::{Database, WriteTx, placeholders};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;
use ordo_domain::shipment::ShipmentStatus;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) const ORDER_COLUMNS: &str = "id, customer_id, status, currency, total_minor, shipping_address, \
     contact, created_at_ms, updated_at_ms, trace_id, span_id";

fn order_from_row(row: &RowRef<'_>) -> Result<OrderRecord> {
    order_from_row_at(row, 0)
}

/// The order (without items) whose [`ORDER_COLUMNS`] start at column `at` (a row of a join).
pub(crate) fn order_from_row_at(row: &RowRef<'_>, at: usize) -> Result<OrderRecord> {
    Ok(OrderRecord {
        id: row.get(at)?,
        customer_id: row.get(at + 1)?,
        status: row.named(at + 2)?,
        currency: row.get(at + 3)?,
        total_minor: row.get(at + 4)?,
        shipping_address: row.get(at + 5)?,
        contact: row.get(at + 6)?,
        created_at_ms: row.get(at + 7)?,
        updated_at_ms: row.get(at + 8)?,
        trace_id: row.get(at + 9)?,
        span_id: row.get(at + 10)?,
        items: Vec::new(),
    })
}

/// Loads the items of `orders` with one query and attaches them in line order.
async fn attach_items(conn: &Conn<'_>, orders: &mut [OrderRecord]) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT order_id, sku, quantity, unit_price_minor, line_total_minor FROM order_items
         WHERE order_id IN ({}) ORDER BY order_id, line_no",
        placeholders(1, orders.len())
    );
    let ids: Vec<Param<'_>> = orders.iter().map(|o| Param::Text(&o.id)).collect();
    let rows = conn
        .query("SELECT order_items", &sql, &ids, |row| {
            Ok((
                row.get::<String>(0)?,
                OrderItemRecord {
                    sku: row.get(1)?,
                    quantity: row.get(2)?,
                    unit_price_minor: row.get(3)?,
                    line_total_minor: row.get(4)?,
                },
            ))
        })
        .await?;
    let index: HashMap<String, usize> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| (o.id.clone(), i))
        .collect();
    for (order_id, item) in rows {
        if let Some(&i) = index.get(&order_id) {
            orders[i].items.push(item);
        }
    }
    Ok(())
}

/// One order with its items, from the rows of `orders LEFT JOIN order_items`.
const ORDER_WITH_ITEMS: &str = "SELECT o.id, o.customer_id, o.status, o.currency, o.total_minor,
         o.shipping_address, o.contact, o.created_at_ms, o.updated_at_ms, o.trace_id, o.span_id,
         i.sku, i.quantity, i.unit_price_minor, i.line_total_minor
     FROM orders o LEFT JOIN order_items i ON i.order_id = o.id
     WHERE o.id = $1 ORDER BY i.line_no";

/// [`ORDER_WITH_ITEMS`] and the order's shipments as a JSON array of
/// `[id, warehouse, country, status, carrier, pickup_slot_ms, attempts]`, by warehouse (`[]`
/// when it has none). The shipments come from a lateral subquery on the order's row, run once.
macro_rules! order_snapshot_select {
    () => {
        "SELECT o.id, o.customer_id, o.status, o.currency, o.total_minor,
         o.shipping_address, o.contact, o.created_at_ms, o.updated_at_ms, o.trace_id, o.span_id,
         i.sku, i.quantity, i.unit_price_minor, i.line_total_minor, s.shipments
     FROM orders o
     CROSS JOIN LATERAL (
         SELECT COALESCE(json_agg(json_build_array(s.id, s.warehouse, w.country, s.status,
                    s.carrier, s.pickup_slot_ms, s.attempts) ORDER BY s.warehouse), '[]')::text
                AS shipments
         FROM shipments s JOIN warehouses w ON w.id = s.warehouse
         WHERE s.order_id = o.id) s
     LEFT JOIN order_items i ON i.order_id = o.id"
    };
}
const ORDER_SNAPSHOT: &str = concat!(
    order_snapshot_select!(),
    " WHERE o.id = $1 ORDER BY i.line_no"
);

/// The item of a row of `orders LEFT JOIN order_items` (columns 11 to 14), if it has one.
fn item_from_joined_row(row: &RowRef<'_>) -> Result<Option<OrderItemRecord>> {
    // A LEFT JOIN row without an item (no order has none; kept for safety).
    Ok(match row.get::<Option<String>>(11)? {
        Some(sku) => Some(OrderItemRecord {
            sku,
            quantity: row.get(12)?,
            unit_price_minor: row.get(13)?,
            line_total_minor: row.get(14)?,
        }),
        None => None,
    })
}

/// The order of the rows of `orders LEFT JOIN order_items`, with their items in row order.
fn order_from_joined_rows(
    rows: Vec<(OrderRecord, Option<OrderItemRecord>)>,
) -> Option<OrderRecord> {
    let mut rows = rows.into_iter();
    let (mut order, first_item) = rows.next()?;
    order.items.extend(first_item);
    order.items.extend(rows.filter_map(|(_, item)| item));
    Some(order)
}

/// A row of [`ORDER_SNAPSHOT`]: the order and one of its items, and the order's shipments
/// (JSON).
type SnapshotRow = ((OrderRecord, Option<OrderItemRecord>), String);

fn snapshot_row(row: &RowRef<'_>) -> Result<SnapshotRow> {
    Ok((
        (order_from_row(row)?, item_from_joined_row(row)?),
        row.get::<String>(15)?,
    ))
}

/// The snapshots of the rows of [`ORDER_SNAPSHOT`] (or its many-order form), which come
/// grouped by order, each order's items in line order.
fn snapshots_from_rows(rows: Vec<SnapshotRow>) -> Result<Vec<OrderSnapshot>> {
    let mut snapshots = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some((first, shipments)) = rows.next() {
        let mut of_order = vec![first];
        while let Some(((next, _), _)) = rows.peek()
            && next.id == of_order[0].0.id
        {
            let Some((row, _)) = rows.next() else { break };
            of_order.push(row);
        }
        let Some(order) = order_from_joined_rows(of_order) else {
            continue;
        };
        let shipments = shipments_from_json(&order.id, &shipments)?;
        snapshots.push(OrderSnapshot::new(order, shipments));
    }
    Ok(snapshots)
}

/// The shipments of order `order_id` from [`ORDER_SNAPSHOT`]'s JSON array.
fn shipments_from_json(order_id: &str, json: &str) -> Result<Vec<ShipmentRecord>> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<i64>,
        i64,
    );
    let rows: Vec<Row> = crate::sql::parse_json(json)?;
    rows.into_iter()
        .map(
            |(id, warehouse, country, status, carrier, pickup_slot_ms, attempts)| {
                Ok(ShipmentRecord {
                    id,
                    order_id: order_id.to_owned(),
                    warehouse,
                    country,
                    status: ShipmentStatus::parse(&status).map_err(crate::sql::corrupt_row)?,
                    carrier,
                    pickup_slot_ms,
                    attempts,
                })
            },
        )
        .collect()
}

impl Database {
    /// One order with its items, in one statement (the hottest read: one round trip, one span).
    pub async fn order(&self, id: &str) -> Result<Option<OrderRecord>> {
        let lease = self.read().await?;
        let rows = lease
            .conn()
            .query("SELECT orders", ORDER_WITH_ITEMS, &params![id], |row| {
                Ok((order_from_row(row)?, item_from_joined_row(row)?))
            })
            .await?;
        Ok(order_from_joined_rows(rows))
    }

    /// Order `id` as `GET /v1/orders/{id}` shows it (with its shipments once it has any),
    /// through the order cache: a hit costs no statement. A miss on PostgreSQL reads the
    /// order, its items and its shipments in one statement; on SQLite (no round trips), the
    /// order with its items, then its shipments when it may have some.
    pub async fn order_snapshot(&self, id: &str) -> Result<Option<Arc<OrderSnapshot>>> {
        self.orders_cache()
            .get_or_load(id, || async {
                if self.backend() == crate::Backend::Postgres {
                    return self.order_snapshot_in_one_statement(id).await;
                }
                let Some(order) = self.order(id).await? else {
                    return Ok(None);
                };
                let shipments = if order.status.may_have_shipments() {
                    self.shipments_of_order(id).await?
                } else {
                    Vec::new()
                };
                Ok(Some(OrderSnapshot::new(order, shipments)))
            })
            .await
    }

    /// PostgreSQL: reads the orders of `ids` as [`Database::order_snapshot`] shows them, all
    /// in one statement, into the order cache — after a batch of writes changed them (a stage
    /// of the pipeline), so that the reads that follow are hits instead of a round trip each.
    /// An invalidation of an order after the read began keeps its entry out (the cache's
    /// generations). SQLite has no round trips to save: nothing is read.
    pub async fn refresh_cached_orders(&self, ids: &[&str]) -> Result<()> {
        if ids.is_empty() || self.backend() != crate::Backend::Postgres {
            return Ok(());
        }
        self.orders_cache()
            .refresh(ids, || self.order_snapshots_in_one_statement(ids))
            .await
    }

    /// PostgreSQL: [`Database::order_snapshot_in_one_statement`] of every order of `ids`, by id.
    async fn order_snapshots_in_one_statement(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, OrderSnapshot>> {
        let sql = format!(
            concat!(
                order_snapshot_select!(),
                " WHERE o.id IN ({}) ORDER BY o.id, i.line_no"
            ),
            placeholders(1, ids.len())
        );
        let binds: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
        let lease = self.read().await?;
        let rows = lease
            .conn()
            .query("SELECT orders", &sql, &binds, snapshot_row)
            .await?;
        Ok(snapshots_from_rows(rows)?
            .into_iter()
            .map(|snapshot| (snapshot.order.id.clone(), snapshot))
            .collect())
    }

    /// PostgreSQL: the order with its items (a row each) and, on every row, its shipments as
    /// one JSON array.
    async fn order_snapshot_in_one_statement(&self, id: &str) -> Result<Option<OrderSnapshot>> {
        let lease = self.read().await?;
        let rows = lease
            .conn()
            .query("SELECT orders", ORDER_SNAPSHOT, &params![id], snapshot_row)
            .await?;
        Ok(snapshots_from_rows(rows)?.pop())
    }

    /// Orders matching `filter`, newest first. Ids are time-ordered, so "newest first" is
    /// "highest id first" and the cursor is the last id of the previous page.
    pub async fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>> {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        for (column, op, value) in [
            ("customer_id", "=", filter.customer_id.as_deref()),
            ("status", "=", filter.status.map(OrderStatus::as_str)),
            ("id", "<", filter.before_id.as_deref()),
        ] {
            if let Some(value) = value {
                binds.push(Param::Text(value));
                conditions.push(format!("{column} {op} ${}", binds.len()));
            }
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders {where_clause} ORDER BY id DESC LIMIT {}",
            filter.limit
        );
        let lease = self.read().await?;
        let conn = lease.conn();
        let mut orders = conn
            .query("SELECT orders", &sql, &binds, order_from_row)
            .await?;
        attach_items(&conn, &mut orders).await?;
        Ok(orders)
    }
}

/// An order sitting in a stage of the saga longer than it should.
#[derive(Debug, Clone)]
pub struct StuckOrder {
    pub id: String,
    pub status: OrderStatus,
    pub updated_at_ms: i64,
    pub trace_id: String,
    pub span_id: String,
}

impl Database {
    /// Orders in a stage of the saga (paid to scheduled) unchanged since before
    /// `updated_before_ms` that have no event waiting to be published (an event waiting, or
    /// retried, will move them; a dead one is an operator's: `ordo outbox redrive`), oldest
    /// first, at most `limit`.
    pub async fn stuck_orders(
        &self,
        updated_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StuckOrder>> {
        let sql = format!(
            "SELECT o.id, o.status, o.updated_at_ms, o.trace_id, o.span_id FROM orders o
             WHERE o.status IN ('paid', 'risk_approved', 'split', 'scheduled')
               AND o.updated_at_ms < $1
               AND NOT EXISTS (SELECT 1 FROM outbox e
                               WHERE e.aggregate_id = o.id AND e.published_at_ms IS NULL)
             ORDER BY o.updated_at_ms LIMIT {limit}"
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query("SELECT orders", &sql, &params![updated_before_ms], |row| {
                Ok(StuckOrder {
                    id: row.get(0)?,
                    status: row.named(1)?,
                    updated_at_ms: row.get(2)?,
                    trace_id: row.get(3)?,
                    span_id: row.get(4)?,
                })
            })
            .await
    }
}

impl WriteTx {
    /// Claims a stuck order for a re-drive: moves its `updated_at_ms` to now if it is still
    /// in `status` and unchanged since `updated_at_ms` (so one instance re-drives it, once per
    /// bound); `false` when it moved on meanwhile.
    pub async fn claim_stuck_order(
        &mut self,
        id: &str,
        status: OrderStatus,
        updated_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let claimed = self
            .conn()
            .execute(
                "UPDATE orders",
                "UPDATE orders SET updated_at_ms = $1
                 WHERE id = $2 AND status = $3 AND updated_at_ms = $4",
                &params![now_ms, id, status.as_str(), updated_at_ms],
            )
            .await?;
        if claimed == 1 {
            self.touch_order(id);
        }
        Ok(claimed == 1)
    }

    pub async fn insert_order(&mut self, order: &OrderRecord) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT orders",
            "INSERT INTO orders (id, customer_id, status, currency, total_minor,
                 shipping_address, contact, created_at_ms, updated_at_ms, trace_id, span_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &params![
                &order.id,
                &order.customer_id,
                order.status.as_str(),
                &order.currency,
                order.total_minor,
                &order.shipping_address,
                &order.contact,
                order.created_at_ms,
                order.updated_at_ms,
                &order.trace_id,
                &order.span_id,
            ],
        )
        .await?;
        for (line_no, item) in order.items.iter().enumerate() {
            conn.execute(
                "INSERT order_items",
                "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor,
                     line_total_minor) VALUES ($1, $2, $3, $4, $5, $6)",
                &params![
                    &order.id,
                    line_no as i64,
                    &item.sku,
                    item.quantity,
                    item.unit_price_minor,
                    item.line_total_minor,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Reads order `id` with its items inside this transaction; on PostgreSQL the row stays
    /// locked until commit, so a status decision taken on it cannot race another.
    pub async fn order_for_update(&mut self, id: &str) -> Result<Option<OrderRecord>> {
        let Some(order) = self.lock_order_without_items(id).await? else {
            return Ok(None);
        };
        let mut orders = [order];
        attach_items(&self.conn(), &mut orders).await?;
        let [order] = orders;
        Ok(Some(order))
    }

    /// As [`WriteTx::order_for_update`], without reading the items (`items` stays empty): one
    /// statement, for the steps that decide on the order's status, total and address only.
    /// An order that [`WriteTx::lock_orders_without_items`] locked before is answered from
    /// that read (once), without another round trip.
    pub async fn lock_order_without_items(&mut self, id: &str) -> Result<Option<OrderRecord>> {
        if let Some(index) = self.locked_orders.iter().position(|order| order.id == id) {
            return Ok(Some(self.locked_orders.swap_remove(index)));
        }
        let lock = self.row_lock();
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{lock}");
        self.conn()
            .query_opt("SELECT orders", &sql, &params![id], order_from_row)
            .await
    }

    /// Locks the orders of `ids` at once, in id order (the order every batch takes them in), in
    /// one statement: a batch of steps then finds each of them locked by
    /// [`WriteTx::lock_order_without_items`] without a round trip of its own. A write to one of
    /// them forgets its read ([`WriteTx::touch_order`]), so no step decides on a stale row.
    pub async fn lock_orders_without_items(&mut self, ids: &[&str]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let lock = self.row_lock();
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id IN ({}) ORDER BY id{lock}",
            crate::placeholders(1, ids.len())
        );
        let binds: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
        let orders = self
            .conn()
            .query("SELECT orders", &sql, &binds, order_from_row)
            .await?;
        self.locked_orders = orders;
        Ok(())
    }

    /// The orders [`WriteTx::lock_orders_without_items`] locked and no step has asked for yet,
    /// in id order: what a batch of steps may read ahead for.
    pub fn locked_orders(&self) -> &[OrderRecord] {
        &self.locked_orders
    }

    /// Moves order `id`, which this transaction locked and found in status `from`
    /// ([`WriteTx::lock_order_without_items`], [`WriteTx::order_for_update`]), to `to`. The lock
    /// means the change cannot miss, so nothing waits for its answer: on PostgreSQL it travels
    /// with the `COMMIT`, in the same round trip (the `status` condition stays, as a guard).
    pub async fn set_status_of_locked(
        &mut self,
        id: &str,
        from: OrderStatus,
        to: OrderStatus,
        now_ms: i64,
    ) -> Result<()> {
        self.execute_at_commit(
            &SET_STATUS_OF_LOCKED,
            &params![to.as_str(), now_ms, id, from.as_str()],
        )
        .await?;
        self.touch_order(id);
        Ok(())
    }

    /// Moves order `id` from status `from` to `to`; `false` if it was no longer in `from`.
    pub async fn set_status(
        &mut self,
        id: &str,
        from: OrderStatus,
        to: OrderStatus,
        now_ms: i64,
    ) -> Result<bool> {
        let updated = self
            .conn()
            .execute(
                "UPDATE orders",
                SET_STATUS,
                &params![to.as_str(), now_ms, id, from.as_str()],
            )
            .await?;
        self.touch_order(id);
        Ok(updated == 1)
    }
}

const SET_STATUS: &str =
    "UPDATE orders SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4";

/// [`SET_STATUS`] of an order this transaction locked: on PostgreSQL a row of `VALUES`, so
/// that a batch's status changes ride in one statement (one change per order and statement:
/// `distinct_param` is the id).
pub(crate) static SET_STATUS_OF_LOCKED: AtCommit = AtCommit {
    summary: "UPDATE orders",
    postgres: "UPDATE orders AS o SET status = v.status, updated_at_ms = v.at_ms
         FROM (VALUES ($1, $2::bigint, $3, $4)) AS v (status, at_ms, id, from_status)
         WHERE o.id = v.id AND o.status = v.from_status",
    sqlite: SET_STATUS,
    distinct_param: Some(2),
};

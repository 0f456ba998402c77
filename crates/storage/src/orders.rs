//! Orders: reads on the read pool, and [`WriteTx`], the steps of a write that commit together.

use crate::records::{EventRecord, OrderFilter, OrderItemRecord, OrderRecord};
use crate::traced::Traced;
use crate::{Backend, Database, db_error, placeholders};
use ordo_domain::ids::{CountryCode, Sku, WarehouseId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::stock::{Allocation, StockLevel};
use ordo_domain::{Error, Result};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use std::collections::HashMap;

const ORDER_COLUMNS: &str = "id, customer_id, status, currency, total_minor, shipping_address, \
     contact, created_at_ms, updated_at_ms, trace_id, span_id";

fn order_from_row(row: &AnyRow) -> Result<OrderRecord, sqlx::Error> {
    Ok(OrderRecord {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        status: row.try_get(2)?,
        currency: row.try_get(3)?,
        total_minor: row.try_get(4)?,
        shipping_address: row.try_get(5)?,
        contact: row.try_get(6)?,
        created_at_ms: row.try_get(7)?,
        updated_at_ms: row.try_get(8)?,
        trace_id: row.try_get(9)?,
        span_id: row.try_get(10)?,
        items: Vec::new(),
    })
}

/// Loads the items of `orders` with one query and attaches them in line order.
async fn attach_items<'e, E>(
    backend: Backend,
    executor: E,
    orders: &mut [OrderRecord],
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    if orders.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT order_id, sku, quantity, unit_price_minor, line_total_minor FROM order_items
         WHERE order_id IN ({}) ORDER BY order_id, line_no",
        placeholders(1, orders.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for order in orders.iter() {
        query = query.bind(order.id.clone());
    }
    let rows = query
        .fetch_all(executor)
        .traced(backend, "SELECT order_items")
        .await?;
    let index: HashMap<String, usize> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| (o.id.clone(), i))
        .collect();
    for row in rows {
        let order_id: String = row.try_get(0).map_err(db_error)?;
        let item = OrderItemRecord {
            sku: row.try_get(1).map_err(db_error)?,
            quantity: row.try_get(2).map_err(db_error)?,
            unit_price_minor: row.try_get(3).map_err(db_error)?,
            line_total_minor: row.try_get(4).map_err(db_error)?,
        };
        if let Some(&i) = index.get(&order_id) {
            orders[i].items.push(item);
        }
    }
    Ok(())
}

impl Database {
    /// One order with its items, in one statement (the hottest read: one round trip, one span).
    pub async fn order(&self, id: &str) -> Result<Option<OrderRecord>> {
        let columns = ORDER_COLUMNS
            .split(", ")
            .map(|column| format!("o.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns}, i.sku, i.quantity, i.unit_price_minor, i.line_total_minor
             FROM orders o LEFT JOIN order_items i ON i.order_id = o.id
             WHERE o.id = $1 ORDER BY i.line_no"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(self.reader())
            .traced(self.backend, "SELECT orders")
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut order = order_from_row(first).map_err(db_error)?;
        let items = ORDER_COLUMNS.split(", ").count();
        for row in &rows {
            // A LEFT JOIN row without an item (no order has none; kept for safety) is skipped.
            let sku: Option<String> = row.try_get(items).map_err(db_error)?;
            let Some(sku) = sku else { continue };
            order.items.push(OrderItemRecord {
                sku,
                quantity: row.try_get(items + 1).map_err(db_error)?,
                unit_price_minor: row.try_get(items + 2).map_err(db_error)?,
                line_total_minor: row.try_get(items + 3).map_err(db_error)?,
            });
        }
        Ok(Some(order))
    }

    /// Orders matching `filter`, newest first. Ids are time-ordered, so "newest first" is
    /// "highest id first" and the cursor is the last id of the previous page.
    pub async fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>> {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        for (column, op, value) in [
            ("customer_id", "=", &filter.customer_id),
            ("status", "=", &filter.status),
            ("id", "<", &filter.before_id),
        ] {
            if let Some(value) = value {
                binds.push(value.clone());
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
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in binds {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(self.reader())
            .traced(self.backend, "SELECT orders")
            .await?;
        let mut orders = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        attach_items(self.backend, self.reader(), &mut orders).await?;
        Ok(orders)
    }

    /// The timeline of order `id`, oldest first.
    pub async fn timeline(&self, id: &str) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT at_ms, type, detail, trace_id, span_id FROM order_events
             WHERE order_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.reader())
        .traced(self.backend, "SELECT order_events")
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    at_ms: row.try_get(0)?,
                    kind: row.try_get(1)?,
                    detail: row.try_get(2)?,
                    trace_id: row.try_get(3)?,
                    span_id: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    /// Starts a write transaction. Dropping it without [`WriteTx::commit`] rolls back.
    pub async fn begin(&self) -> Result<WriteTx> {
        let tx = self.writer().begin().traced(self.backend, "BEGIN").await?;
        Ok(WriteTx {
            tx,
            backend: self.backend,
        })
    }
}

/// A write in progress: every step here commits together or not at all.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    backend: Backend,
}

/// What [`WriteTx::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new and now belongs to this transaction's order.
    Claimed,
    /// An earlier request holds the key.
    Existing {
        request_hash: String,
        order_id: String,
    },
}

/// A timeline entry to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub order_id: &'a str,
    pub at_ms: i64,
    pub kind: &'a str,
    pub detail: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
}

impl WriteTx {
    /// The transaction's connection, for steps defined in other modules.
    pub(crate) fn connection(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().traced(self.backend, "COMMIT").await
    }

    /// Claims `key` for `order_id`. A concurrent claim of the same key waits for this
    /// transaction (unique index) and then sees it as `Existing`.
    pub async fn claim_idempotency_key(
        &mut self,
        key: &str,
        request_hash: &str,
        order_id: &str,
        now_ms: i64,
    ) -> Result<KeyClaim> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, order_id, created_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(request_hash)
        .bind(order_id)
        .bind(now_ms)
        .execute(&mut *self.tx)
        .traced(self.backend, "INSERT idempotency_keys")
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(KeyClaim::Claimed);
        }
        let row = sqlx::query("SELECT request_hash, order_id FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *self.tx)
            .traced(self.backend, "SELECT idempotency_keys")
            .await?;
        Ok(KeyClaim::Existing {
            request_hash: row.try_get(0).map_err(db_error)?,
            order_id: row.try_get(1).map_err(db_error)?,
        })
    }

    /// Current prices of the products among `skus`.
    pub async fn prices(&mut self, skus: &[&Sku]) -> Result<HashMap<Sku, Money>> {
        let sql = format!(
            "SELECT sku, price_minor, currency FROM products WHERE sku IN ({})",
            placeholders(1, skus.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for sku in skus {
            query = query.bind(sku.as_str().to_owned());
        }
        let rows = query
            .fetch_all(&mut *self.tx)
            .traced(self.backend, "SELECT products")
            .await?;
        let mut prices = HashMap::with_capacity(rows.len());
        for row in rows {
            let sku: String = row.try_get(0).map_err(db_error)?;
            let amount: i64 = row.try_get(1).map_err(db_error)?;
            let currency: String = row.try_get(2).map_err(db_error)?;
            let price = Currency::parse(&currency).and_then(|c| Money::new(amount, c));
            prices.insert(Sku::parse(&sku)?, price.map_err(corrupt_row)?);
        }
        Ok(prices)
    }

    /// Reads the stock of `skus` in every warehouse and, on PostgreSQL, locks those rows in
    /// (sku, warehouse) order until commit. SQLite needs no row locks: its single writer
    /// already holds the database.
    pub async fn lock_stock(&mut self, skus: &[&Sku]) -> Result<HashMap<Sku, Vec<StockLevel>>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF s",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT s.sku, s.warehouse, w.country, s.on_hand, s.reserved
             FROM stock s JOIN warehouses w ON w.id = s.warehouse
             WHERE s.sku IN ({}) ORDER BY s.sku, s.warehouse{lock}",
            placeholders(1, skus.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for sku in skus {
            query = query.bind(sku.as_str().to_owned());
        }
        let rows = query
            .fetch_all(&mut *self.tx)
            .traced(self.backend, "SELECT stock")
            .await?;
        let mut stock: HashMap<Sku, Vec<StockLevel>> = HashMap::new();
        for row in rows {
            let sku: String = row.try_get(0).map_err(db_error)?;
            let warehouse: String = row.try_get(1).map_err(db_error)?;
            let country: String = row.try_get(2).map_err(db_error)?;
            let level = StockLevel {
                warehouse: WarehouseId::parse(&warehouse).map_err(corrupt_row)?,
                country: CountryCode::parse(&country).map_err(corrupt_row)?,
                on_hand: row.try_get(3).map_err(db_error)?,
                reserved: row.try_get(4).map_err(db_error)?,
            };
            stock
                .entry(Sku::parse(&sku).map_err(corrupt_row)?)
                .or_default()
                .push(level);
        }
        Ok(stock)
    }

    /// Reserves `allocations` for `order_id`. Each update is conditional on the units being
    /// available *now*, so a stale decision cannot oversell: it fails with `conflict` and the
    /// whole transaction is rolled back.
    pub async fn reserve(
        &mut self,
        order_id: &str,
        allocations: &[Allocation],
        now_ms: i64,
    ) -> Result<()> {
        for allocation in allocations {
            let updated = sqlx::query(
                "UPDATE stock SET reserved = reserved + $1, updated_at_ms = $2
                 WHERE sku = $3 AND warehouse = $4 AND reserved + $1 <= on_hand",
            )
            .bind(allocation.quantity)
            .bind(now_ms)
            .bind(allocation.sku.as_str().to_owned())
            .bind(allocation.warehouse.as_str().to_owned())
            .execute(&mut *self.tx)
            .traced(self.backend, "UPDATE stock")
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(Error::conflict(format!(
                    "stock of {} in {} changed during the reservation",
                    allocation.sku, allocation.warehouse
                )));
            }
            sqlx::query(
                "INSERT INTO reservations (order_id, sku, warehouse, quantity)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(order_id)
            .bind(allocation.sku.as_str().to_owned())
            .bind(allocation.warehouse.as_str().to_owned())
            .bind(allocation.quantity)
            .execute(&mut *self.tx)
            .traced(self.backend, "INSERT reservations")
            .await?;
        }
        Ok(())
    }

    /// Gives back every unreleased reservation of `order_id` and marks them released, so a
    /// second release finds nothing to give back.
    pub async fn release_reservations(&mut self, order_id: &str, now_ms: i64) -> Result<()> {
        let rows = sqlx::query(
            "SELECT sku, warehouse, quantity FROM reservations
             WHERE order_id = $1 AND released_at_ms IS NULL ORDER BY sku, warehouse",
        )
        .bind(order_id)
        .fetch_all(&mut *self.tx)
        .traced(self.backend, "SELECT reservations")
        .await?;
        for row in rows {
            let sku: String = row.try_get(0).map_err(db_error)?;
            let warehouse: String = row.try_get(1).map_err(db_error)?;
            let quantity: i64 = row.try_get(2).map_err(db_error)?;
            sqlx::query(
                "UPDATE stock SET reserved = reserved - $1, updated_at_ms = $2
                 WHERE sku = $3 AND warehouse = $4",
            )
            .bind(quantity)
            .bind(now_ms)
            .bind(&sku)
            .bind(&warehouse)
            .execute(&mut *self.tx)
            .traced(self.backend, "UPDATE stock")
            .await?;
        }
        sqlx::query(
            "UPDATE reservations SET released_at_ms = $1
             WHERE order_id = $2 AND released_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(order_id)
        .execute(&mut *self.tx)
        .traced(self.backend, "UPDATE reservations")
        .await?;
        Ok(())
    }

    pub async fn insert_order(&mut self, order: &OrderRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&order.id)
            .bind(&order.customer_id)
            .bind(&order.status)
            .bind(&order.currency)
            .bind(order.total_minor)
            .bind(&order.shipping_address)
            .bind(&order.contact)
            .bind(order.created_at_ms)
            .bind(order.updated_at_ms)
            .bind(&order.trace_id)
            .bind(&order.span_id)
            .execute(&mut *self.tx)
            .traced(self.backend, "INSERT orders")
            .await?;
        for (line_no, item) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor,
                     line_total_minor) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&order.id)
            .bind(line_no as i64)
            .bind(&item.sku)
            .bind(item.quantity)
            .bind(item.unit_price_minor)
            .bind(item.line_total_minor)
            .execute(&mut *self.tx)
            .traced(self.backend, "INSERT order_items")
            .await?;
        }
        Ok(())
    }

    /// Reads order `id` inside this transaction; on PostgreSQL the row stays locked until
    /// commit, so a status decision taken on it cannot race another.
    pub async fn order_for_update(&mut self, id: &str) -> Result<Option<OrderRecord>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{lock}");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .traced(self.backend, "SELECT orders")
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut orders = [order_from_row(&row).map_err(db_error)?];
        attach_items(self.backend, &mut *self.tx, &mut orders).await?;
        let [order] = orders;
        Ok(Some(order))
    }

    /// Moves order `id` from status `from` to `to`; `false` if it was no longer in `from`.
    pub async fn set_status(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE orders SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(now_ms)
        .bind(id)
        .bind(from)
        .execute(&mut *self.tx)
        .traced(self.backend, "UPDATE orders")
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub async fn append_event(&mut self, event: &NewEvent<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.order_id)
        .bind(event.at_ms)
        .bind(event.kind)
        .bind(event.detail)
        .bind(event.trace_id)
        .bind(event.span_id)
        .execute(&mut *self.tx)
        .traced(self.backend, "INSERT order_events")
        .await?;
        Ok(())
    }
}

/// A stored value that no longer parses: storage was written by something other than ordo.
fn corrupt_row(error: Error) -> Error {
    tracing::error!(error = %error, "a stored row failed validation");
    Error::internal("a stored row is not valid")
}

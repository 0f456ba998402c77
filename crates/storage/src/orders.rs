//! Orders: reads on the read pool, and [`WriteTx`], the steps of a write that commit together.

use crate::records::{EventRecord, OrderFilter, OrderItemRecord, OrderRecord};
use crate::sql::{Conn, Param, RowRef, params};
use crate::{Backend, Connections, Database, placeholders};
use ordo_domain::Result;
use ordo_domain::stock::Allocation;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;

const ORDER_COLUMNS: &str = "id, customer_id, status, currency, total_minor, shipping_address, \
     contact, created_at_ms, updated_at_ms, trace_id, span_id";

fn order_from_row(row: &RowRef<'_>) -> Result<OrderRecord> {
    Ok(OrderRecord {
        id: row.get(0)?,
        customer_id: row.get(1)?,
        status: row.get(2)?,
        currency: row.get(3)?,
        total_minor: row.get(4)?,
        shipping_address: row.get(5)?,
        contact: row.get(6)?,
        created_at_ms: row.get(7)?,
        updated_at_ms: row.get(8)?,
        trace_id: row.get(9)?,
        span_id: row.get(10)?,
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

impl Database {
    /// One order with its items, in one statement (the hottest read: one round trip, one span).
    pub async fn order(&self, id: &str) -> Result<Option<OrderRecord>> {
        let lease = self.read().await?;
        let rows = lease
            .conn()
            .query("SELECT orders", ORDER_WITH_ITEMS, &params![id], |row| {
                let order = order_from_row(row)?;
                // A LEFT JOIN row without an item (no order has none; kept for safety).
                let item = match row.get::<Option<String>>(11)? {
                    Some(sku) => Some(OrderItemRecord {
                        sku,
                        quantity: row.get(12)?,
                        unit_price_minor: row.get(13)?,
                        line_total_minor: row.get(14)?,
                    }),
                    None => None,
                };
                Ok((order, item))
            })
            .await?;
        let mut rows = rows.into_iter();
        let Some((mut order, first_item)) = rows.next() else {
            return Ok(None);
        };
        order.items.extend(first_item);
        order.items.extend(rows.filter_map(|(_, item)| item));
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

    /// The timeline of order `id`, oldest first.
    pub async fn timeline(&self, id: &str) -> Result<Vec<EventRecord>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT order_events",
                "SELECT at_ms, type, detail, trace_id, span_id FROM order_events
                 WHERE order_id = $1 ORDER BY seq",
                &params![id],
                |row| {
                    Ok(EventRecord {
                        at_ms: row.get(0)?,
                        kind: row.get(1)?,
                        detail: row.get(2)?,
                        trace_id: row.get(3)?,
                        span_id: row.get(4)?,
                    })
                },
            )
            .await
    }

    /// Starts a write transaction. Dropping it without [`WriteTx::commit`] rolls back.
    ///
    /// PostgreSQL: a pooled connection, whose `BEGIN` travels with the first statement.
    /// SQLite: the writer's turn, then a savepoint in the group transaction of the writes
    /// queued together (`group_commit`).
    pub async fn begin(&self) -> Result<WriteTx> {
        let state = match self.connections() {
            Connections::Postgres(_) => {
                let crate::Lease::Postgres(client) = self.write().await? else {
                    unreachable!("a PostgreSQL database leases PostgreSQL connections")
                };
                TxState::Postgres {
                    client: Some(client),
                    begun: false,
                }
            }
            Connections::Sqlite(sqlite) => {
                let turn = sqlite.group.turn().await;
                let group = Arc::clone(&sqlite.group);
                let connection = Arc::clone(&sqlite.writer);
                let epoch = crate::sql::observed(Backend::Sqlite, "BEGIN", async {
                    group.join(&crate::sql::lock_any(&connection))
                })
                .await?;
                TxState::Sqlite {
                    turn: Some(turn),
                    connection,
                    group,
                    epoch,
                }
            }
        };
        Ok(WriteTx {
            state,
            finished: false,
        })
    }
}

/// A write in progress: every step here commits together or not at all.
pub struct WriteTx {
    state: TxState,
    /// Committed or rolled back: nothing left to undo on drop.
    finished: bool,
}

// A pooled client is large; a transaction lives on one task's stack, so it is not boxed.
#[allow(clippy::large_enum_variant)]
enum TxState {
    Postgres {
        /// Taken only by the drop of an unfinished transaction, to roll it back.
        client: Option<deadpool_postgres::Object>,
        /// Whether `BEGIN` went out (with the first statement).
        begun: bool,
    },
    Sqlite {
        /// Handed on before waiting for the group's commit.
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        connection: Arc<StdMutex<rusqlite::Connection>>,
        group: Arc<crate::group_commit::GroupCommit>,
        /// The group this transaction's savepoint belongs to.
        epoch: u64,
    },
}

/// The request digest and order of an idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str =
    "SELECT request_hash, order_id FROM idempotency_keys WHERE key = $1";

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
    /// The transaction's connection, for steps defined in other modules. On PostgreSQL the
    /// first statement carries the `BEGIN`.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match &mut self.state {
            TxState::Postgres { client, begun } => {
                let begin_first = !*begun;
                *begun = true;
                Conn::Pg {
                    client: client.as_ref().expect("taken only on drop"),
                    begin_first,
                }
            }
            TxState::Sqlite { connection, .. } => Conn::Sqlite(connection),
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.state {
            TxState::Postgres { .. } => Backend::Postgres,
            TxState::Sqlite { .. } => Backend::Sqlite,
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        let result = match &self.state {
            // Nothing was sent: there is nothing to commit.
            TxState::Postgres { begun: false, .. } => Ok(()),
            TxState::Postgres { client, .. } => {
                Conn::Pg {
                    client: client.as_ref().expect("taken only on drop"),
                    begin_first: false,
                }
                .batch("COMMIT", "COMMIT")
                .await
            }
            TxState::Sqlite { .. } => return self.commit_in_group().await,
        };
        // A failed COMMIT has ended the transaction too.
        self.finished = true;
        result
    }

    /// SQLite: releases this step's savepoint into its group, then commits the group (nobody
    /// else waits for the writer) or waits until the step behind it does.
    async fn commit_in_group(&mut self) -> Result<()> {
        let TxState::Sqlite {
            turn,
            connection,
            group,
            epoch,
        } = &mut self.state
        else {
            return Ok(());
        };
        let (connection, group, epoch) = (Arc::clone(connection), Arc::clone(group), *epoch);
        // On failure the drop rolls the step back and leaves the group to the others.
        group.release(&crate::sql::lock_any(&connection))?;
        self.finished = true;
        let turn = turn.take();
        crate::sql::observed(Backend::Sqlite, "COMMIT", async move {
            if group.should_commit() {
                let committed = group.commit(&crate::sql::lock_any(&connection));
                drop(turn);
                return committed;
            }
            drop(turn);
            group.committed(epoch, &connection).await
        })
        .await
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
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT idempotency_keys",
                "INSERT INTO idempotency_keys (key, request_hash, order_id, created_at_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                &params![key, request_hash, order_id, now_ms],
            )
            .await?;
        if inserted == 1 {
            return Ok(KeyClaim::Claimed);
        }
        conn.query_one(
            "SELECT idempotency_keys",
            IDEMPOTENCY_KEY,
            &params![key],
            |row| {
                Ok(KeyClaim::Existing {
                    request_hash: row.get(0)?,
                    order_id: row.get(1)?,
                })
            },
        )
        .await
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
                &order.status,
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

    /// Reads order `id` inside this transaction; on PostgreSQL the row stays locked until
    /// commit, so a status decision taken on it cannot race another.
    pub async fn order_for_update(&mut self, id: &str) -> Result<Option<OrderRecord>> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{lock}");
        let conn = self.conn();
        let Some(order) = conn
            .query_opt("SELECT orders", &sql, &params![id], order_from_row)
            .await?
        else {
            return Ok(None);
        };
        let mut orders = [order];
        attach_items(&conn, &mut orders).await?;
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
        let updated = self
            .conn()
            .execute(
                "UPDATE orders",
                "UPDATE orders SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4",
                &params![to, now_ms, id, from],
            )
            .await?;
        Ok(updated == 1)
    }

    pub async fn append_event(&mut self, event: &NewEvent<'_>) -> Result<()> {
        self.conn()
            .execute(
                "INSERT order_events",
                "INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &params![
                    event.order_id,
                    event.at_ms,
                    event.kind,
                    event.detail,
                    event.trace_id,
                    event.span_id,
                ],
            )
            .await?;
        Ok(())
    }
}

impl Drop for WriteTx {
    /// Rolls back a transaction that was neither committed nor rolled back.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match &mut self.state {
            TxState::Postgres { begun: false, .. } => {}
            TxState::Postgres { client, .. } => {
                let Some(client) = client.take() else { return };
                // The ROLLBACK must go out before the connection serves anyone else: the
                // connection returns to the pool only after it.
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            if client.batch_execute("ROLLBACK").await.is_err() {
                                // Unknown state: never hand this connection out again.
                                drop(deadpool_postgres::Object::take(client));
                            }
                        });
                    }
                    // No runtime to roll back with: close the connection instead (the server
                    // rolls back), so it never returns to the pool inside a transaction.
                    Err(_) => drop(deadpool_postgres::Object::take(client)),
                }
            }
            TxState::Sqlite {
                connection, group, ..
            } => {
                let connection = crate::sql::lock_any(connection);
                group.roll_back(&connection);
                if group.should_commit() {
                    // The steps before this one in the group wait for a commit.
                    let _ = group.commit(&connection);
                }
            }
        }
    }
}

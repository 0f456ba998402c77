//! Erasure of a customer's personal data: the request, the orders it covers, and the rewrite
//! of each order's personal fields (the service decides the new values). On SQLite the writer
//! runs with `secure_delete` (freed space is zeroed) and [`Database::scrub_files`] checkpoints
//! and truncates the WAL after an erasure, so no old copy stays in the files.

use crate::sql::params;
use crate::timeline::NewTimelineEntry;
use crate::{Connections, Database, WriteTx};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;

/// An order of a customer who asked for erasure, as erasure needs it.
#[derive(Debug, Clone)]
pub struct ErasableOrder {
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub shipping_address: String,
    pub contact: String,
    pub erased_at_ms: Option<i64>,
    pub trace_id: String,
    pub span_id: String,
}

fn erasable_from_row(row: &crate::sql::RowRef<'_>) -> Result<ErasableOrder> {
    Ok(ErasableOrder {
        id: row.get(0)?,
        customer_id: row.get(1)?,
        status: row.named(2)?,
        shipping_address: row.get(3)?,
        contact: row.get(4)?,
        erased_at_ms: row.get(5)?,
        trace_id: row.get(6)?,
        span_id: row.get(7)?,
    })
}

const ERASABLE_COLUMNS: &str = "id, customer_id, status, shipping_address, contact, \
     personal_data_erased_at_ms, trace_id, span_id";

impl WriteTx {
    /// Records that `customer_id` asked for erasure (once: a repeated request keeps the first
    /// time); returns when it was first asked.
    pub async fn request_erasure(&mut self, customer_id: &str, now_ms: i64) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT customer_erasures",
            "INSERT INTO customer_erasures (customer_id, requested_at_ms) VALUES ($1, $2)
             ON CONFLICT (customer_id) DO NOTHING",
            &params![customer_id, now_ms],
        )
        .await?;
        conn.query_one(
            "SELECT customer_erasures",
            "SELECT requested_at_ms FROM customer_erasures WHERE customer_id = $1",
            &params![customer_id],
            |row| row.get(0),
        )
        .await
    }

    /// Every order of `customer_id`, locked on PostgreSQL until commit (a status change
    /// waits, so an order cannot turn terminal unseen between this look and the erasure).
    pub async fn orders_of_customer_for_erasure(
        &mut self,
        customer_id: &str,
    ) -> Result<Vec<ErasableOrder>> {
        let lock = self.row_lock();
        let sql = format!(
            "SELECT {ERASABLE_COLUMNS} FROM orders WHERE customer_id = $1 ORDER BY id{lock}"
        );
        self.conn()
            .query(
                "SELECT orders",
                &sql,
                &params![customer_id],
                erasable_from_row,
            )
            .await
    }

    /// Order `id` for the erasure sweep, locked on PostgreSQL.
    pub async fn order_for_erasure(&mut self, id: &str) -> Result<Option<ErasableOrder>> {
        let lock = self.row_lock();
        let sql = format!("SELECT {ERASABLE_COLUMNS} FROM orders WHERE id = $1{lock}");
        self.conn()
            .query_opt("SELECT orders", &sql, &params![id], erasable_from_row)
            .await
    }

    /// Replaces the personal fields of order `id` (not erased yet) with `shipping_address`
    /// and `contact`, forgets the digest of the request that created it (a digest of personal
    /// data is personal data), records the erasure in the timeline; `false` when the order was
    /// erased already.
    pub async fn erase_order(
        &mut self,
        id: &str,
        shipping_address: &str,
        contact: &str,
        now_ms: i64,
        timeline: &NewTimelineEntry<'_>,
    ) -> Result<bool> {
        let conn = self.conn();
        let erased = conn
            .execute(
                "UPDATE orders",
                "UPDATE orders SET shipping_address = $1, contact = $2,
                     personal_data_erased_at_ms = $3, updated_at_ms = $3
                 WHERE id = $4 AND personal_data_erased_at_ms IS NULL",
                &params![shipping_address, contact, now_ms, id],
            )
            .await?;
        if erased == 0 {
            return Ok(false);
        }
        conn.execute(
            "UPDATE idempotency_keys",
            "UPDATE idempotency_keys SET request_hash = $1 WHERE order_id = $2",
            &params![ordo_domain::personal::ERASED, id],
        )
        .await?;
        self.touch_order(id);
        self.append_timeline(timeline).await?;
        Ok(true)
    }
}

impl Database {
    /// Orders of customers who asked for erasure that are terminal now and not yet erased
    /// (they were in fulfillment when asked), at most `limit`.
    pub async fn orders_awaiting_erasure(&self, limit: u32) -> Result<Vec<String>> {
        let terminal: Vec<&str> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(OrderStatus::as_str)
            .collect();
        let list = terminal
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT o.id FROM orders o JOIN customer_erasures e ON e.customer_id = o.customer_id
             WHERE o.personal_data_erased_at_ms IS NULL AND o.status IN ({list})
             ORDER BY o.id LIMIT {limit}"
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query("SELECT orders", &sql, &[], |row| row.get(0))
            .await
    }

    /// After an erasure: on SQLite, copies the WAL into the database file and truncates it,
    /// so the pages that held the erased values before the rewrite leave the WAL (the writer's
    /// `secure_delete` has zeroed the freed space in the file). On PostgreSQL, `VACUUM`s the
    /// rewritten tables so the old row versions are pruned (their bytes may stay in free space
    /// until reused: see the README on backups and replicas).
    pub async fn scrub_files(&self) -> Result<()> {
        match self.connections() {
            Connections::Sqlite(_) => {
                let lease = self.write().await?;
                lease
                    .conn()
                    .batch("PRAGMA wal_checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)")
                    .await
            }
            Connections::Postgres(_) => {
                let lease = self.write().await?;
                lease
                    .conn()
                    .batch("VACUUM", "VACUUM orders, idempotency_keys")
                    .await
            }
        }
    }
}

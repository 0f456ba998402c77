//! POS terminals: the batches they sync and the sales in them. A batch is one transaction;
//! each sale in it claims its `(terminal_id, client_sale_id)` first (so a sale sent twice, even
//! by two uploads racing, is recorded once), then becomes a `completed` order; at the end the
//! batch's stock leaves `on_hand` at the terminal's warehouse.

use crate::WriteTx;
use crate::records::OrderRecord;
use crate::sql::params;
use crate::timeline::NewTimelineEntry;
use ordo_domain::Result;
use std::collections::HashMap;

/// A sale to record, already checked by the service (known SKUs, currency, time window).
#[derive(Debug)]
pub struct NewPosSale<'a> {
    pub terminal_id: &'a str,
    pub client_sale_id: &'a str,
    pub batch_seq: i64,
    pub sold_at_ms: i64,
    /// The order it becomes (status `completed`, the amount paid as its total).
    pub order: &'a OrderRecord,
    pub timeline: NewTimelineEntry<'a>,
}

/// What recording a sale did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosSaleWrite {
    /// A new order (its stock is taken at the end of the batch).
    Recorded,
    /// The terminal sent this sale before: the order it became then.
    Duplicate { order_id: String },
}

impl WriteTx {
    /// The answer a batch got when it was first received, if it was.
    pub async fn pos_batch_answer(
        &mut self,
        terminal_id: &str,
        batch_seq: i64,
    ) -> Result<Option<String>> {
        self.conn()
            .query_opt(
                "SELECT pos_batches",
                "SELECT answer FROM pos_batches WHERE terminal_id = $1 AND batch_seq = $2",
                &params![terminal_id, batch_seq],
                |row| row.get(0),
            )
            .await
    }

    /// The sequence numbers of the batches received from `terminal_id` below `below`.
    pub async fn pos_batches_received_below(
        &mut self,
        terminal_id: &str,
        below: i64,
    ) -> Result<Vec<i64>> {
        self.conn()
            .query(
                "SELECT pos_batches",
                "SELECT batch_seq FROM pos_batches WHERE terminal_id = $1 AND batch_seq < $2
                 ORDER BY batch_seq",
                &params![terminal_id, below],
                |row| row.get(0),
            )
            .await
    }

    /// Records one sale: claims its id for the terminal, writes its order. Its stock is taken
    /// for the whole batch at its end ([`WriteTx::lock_free_stock`], [`WriteTx::take_on_hand`]).
    pub async fn record_pos_sale(&mut self, sale: &NewPosSale<'_>) -> Result<PosSaleWrite> {
        let claimed = self
            .conn()
            .execute(
                "INSERT pos_sales",
                "INSERT INTO pos_sales (terminal_id, client_sale_id, order_id, batch_seq,
                     sold_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (terminal_id, client_sale_id) DO NOTHING",
                &params![
                    sale.terminal_id,
                    sale.client_sale_id,
                    &sale.order.id,
                    sale.batch_seq,
                    sale.sold_at_ms,
                ],
            )
            .await?;
        if claimed == 0 {
            let order_id = self
                .conn()
                .query_one(
                    "SELECT pos_sales",
                    "SELECT order_id FROM pos_sales WHERE terminal_id = $1 AND client_sale_id = $2",
                    &params![sale.terminal_id, sale.client_sale_id],
                    |row| row.get(0),
                )
                .await?;
            return Ok(PosSaleWrite::Duplicate { order_id });
        }
        self.insert_order(sale.order).await?;
        self.touch_order(&sale.order.id);
        self.append_timeline(&sale.timeline).await?;
        Ok(PosSaleWrite::Recorded)
    }

    /// The units of each of `skus` (sorted, distinct) on hand and not reserved at `warehouse`,
    /// locked until commit (PostgreSQL: in SKU order, the order every writer of stock rows
    /// takes them in, so two batches cannot deadlock). Taken at the end of a batch, so the
    /// locks are held for a few statements, not the whole batch.
    pub async fn lock_free_stock(
        &mut self,
        warehouse: &str,
        skus: &[&str],
    ) -> Result<HashMap<String, i64>> {
        let mut free = HashMap::with_capacity(skus.len());
        if skus.is_empty() {
            return Ok(free);
        }
        let lock = self.row_lock();
        let sql = format!(
            "SELECT sku, on_hand - reserved FROM stock WHERE warehouse = $1 AND sku IN ({})
             ORDER BY sku{lock}",
            crate::placeholders(2, skus.len())
        );
        let mut binds: Vec<crate::sql::Param<'_>> = Vec::with_capacity(skus.len() + 1);
        binds.push(warehouse.into());
        binds.extend(skus.iter().map(|sku| crate::sql::Param::from(*sku)));
        let rows: Vec<(String, i64)> = self
            .conn()
            .query("SELECT stock", &sql, &binds, |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .await?;
        free.extend(rows);
        Ok(free)
    }

    /// Takes `quantity` units of `sku` out of `on_hand` at `warehouse` (at most what
    /// [`WriteTx::lock_free_stock`] found free).
    pub async fn take_on_hand(
        &mut self,
        warehouse: &str,
        sku: &str,
        quantity: i64,
        now_ms: i64,
    ) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE stock",
                "UPDATE stock SET on_hand = on_hand - $1, updated_at_ms = $2
                 WHERE sku = $3 AND warehouse = $4",
                &params![quantity, now_ms, sku, warehouse],
            )
            .await?;
        Ok(())
    }

    /// Keeps the answer of a batch for its replays; `false` when an upload of the same batch
    /// got there first (the caller rolls back and answers with that one's answer).
    pub async fn record_pos_batch(
        &mut self,
        terminal_id: &str,
        batch_seq: i64,
        warehouse: &str,
        answer: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let inserted = self
            .conn()
            .execute(
                "INSERT pos_batches",
                "INSERT INTO pos_batches (terminal_id, batch_seq, warehouse, answer,
                     received_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (terminal_id, batch_seq) DO NOTHING",
                &params![terminal_id, batch_seq, warehouse, answer, now_ms],
            )
            .await?;
        Ok(inserted == 1)
    }
}

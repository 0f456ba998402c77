//! POS terminals: the batches they sync and the sales in them. A batch is one transaction;
//! each sale in it claims its `(terminal_id, client_sale_id)` first (so a sale sent twice, even
//! by two uploads racing, is recorded once), then becomes a `completed` order whose stock
//! leaves `on_hand` at the terminal's warehouse.

use crate::WriteTx;
use crate::records::OrderRecord;
use crate::sql::params;
use crate::timeline::NewTimelineEntry;
use ordo_domain::Result;

/// A sale to record, already checked by the service (known SKUs, currency, time window).
#[derive(Debug)]
pub struct NewPosSale<'a> {
    pub terminal_id: &'a str,
    pub client_sale_id: &'a str,
    pub batch_seq: i64,
    pub warehouse: &'a str,
    pub sold_at_ms: i64,
    /// The order it becomes (status `completed`, the amount paid as its total).
    pub order: &'a OrderRecord,
    pub timeline: NewTimelineEntry<'a>,
}

/// What recording a sale did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosSaleWrite {
    /// A new order; `deficits` lists the units per SKU that `on_hand` did not cover.
    Recorded { deficits: Vec<(String, i64)> },
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

    /// Records one sale: claims its id for the terminal, writes its order, takes its stock.
    /// Stock comes out of what is on hand and not reserved for other orders (those were
    /// promised first); what that does not cover is reported as a deficit, never refused: the
    /// goods have left the shop.
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
        let mut deficits = Vec::new();
        for item in &sale.order.items {
            let taken = self
                .take_on_hand(&item.sku, sale.warehouse, item.quantity, sale.sold_at_ms)
                .await?;
            if taken < item.quantity {
                deficits.push((item.sku.clone(), item.quantity - taken));
            }
        }
        self.append_timeline(&sale.timeline).await?;
        Ok(PosSaleWrite::Recorded { deficits })
    }

    /// Takes up to `quantity` units of `sku` out of `on_hand` at `warehouse`, never below what
    /// is reserved; returns how many it took. The first statement locks the row (PostgreSQL)
    /// and reads what is free, so the second cannot race another sale.
    async fn take_on_hand(
        &mut self,
        sku: &str,
        warehouse: &str,
        quantity: i64,
        now_ms: i64,
    ) -> Result<i64> {
        let conn = self.conn();
        let free: Option<i64> = conn
            .query_opt(
                "UPDATE stock",
                "UPDATE stock SET updated_at_ms = $1 WHERE sku = $2 AND warehouse = $3
                 RETURNING on_hand - reserved",
                &params![now_ms, sku, warehouse],
                |row| row.get(0),
            )
            .await?;
        let taken = quantity.min(free.unwrap_or(0).max(0));
        if taken > 0 {
            conn.execute(
                "UPDATE stock",
                "UPDATE stock SET on_hand = on_hand - $1 WHERE sku = $2 AND warehouse = $3",
                &params![taken, sku, warehouse],
            )
            .await?;
        }
        Ok(taken)
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

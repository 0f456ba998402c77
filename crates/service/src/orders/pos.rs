//! POS batches (`POST /v1/pos/batches`): the sales a terminal made while offline, synced
//! later. Each valid sale becomes a `completed` order, its stock taken from `on_hand` at the
//! terminal's warehouse; an invalid one is rejected alone, the rest of the batch goes on. The
//! whole batch is one transaction, and its answer is kept: a replay (same terminal and
//! `batch_seq`) gets that answer again and changes nothing.
//!
//! Each sale is a span (`pos.sale`) under the request's span; its order carries that trace.

use super::{Orders, item_records, new_order_id, parse_lines};
use crate::api::{
    MoneyDifferenceDto, PosBatchInput, PosBatchView, PosSaleErrorView, PosSaleInput,
    PosSaleResultView, StockDeficitView,
};
use crate::step_ids;
use ordo_domain::ids::{CustomerId, Sku, WarehouseId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::order::{OrderStatus, price_lines};
use ordo_domain::pos::{self, PosPaymentMethod, TerminalId};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::now_ms;
use ordo_storage::pos::{NewPosSale, PosSaleWrite};
use ordo_storage::records::OrderRecord;
use ordo_storage::timeline::NewTimelineEntry;
use ordo_telemetry::metrics;
use std::collections::HashMap;
use tracing::{Instrument, field};

/// At most this many missing batch numbers are listed in an answer.
const MAX_MISSING_LISTED: usize = 1_000;
/// At most this many lines per sale (as for orders).
const MAX_LINES: usize = ordo_domain::order::NewOrder::MAX_LINES;

/// A sale that passed every check, ready to be written.
#[derive(Debug, Clone)]
pub struct CheckedSale {
    pub client_sale_id: String,
    pub sold_at_ms: i64,
    /// The `completed` order the sale becomes; its total is what was paid.
    pub order: OrderRecord,
    /// What was paid minus the catalogue total.
    pub price_difference: MoneyDifferenceDto,
}

impl PosBatchInput {
    /// The checks of a batch as a whole, before any sale or read: its terminal, warehouse,
    /// sequence number and size.
    pub fn check(&self) -> Result<(TerminalId, WarehouseId)> {
        let terminal = TerminalId::parse(&self.terminal_id)?;
        let warehouse = WarehouseId::parse(&self.warehouse)?;
        if !(1..=pos::MAX_BATCH_SEQ).contains(&self.batch_seq) {
            return Err(Error::invalid_field(
                "batch_seq",
                format!("must be between 1 and {}", pos::MAX_BATCH_SEQ),
            ));
        }
        if self.sales.len() > pos::MAX_SALES_PER_BATCH {
            return Err(Error::invalid_field(
                "sales",
                format!("must hold at most {} sales", pos::MAX_SALES_PER_BATCH),
            ));
        }
        Ok((terminal, warehouse))
    }
}

impl Orders {
    /// Takes a batch of offline sales; see the module documentation.
    pub(super) async fn record_pos_batch(&self, input: PosBatchInput) -> Result<PosBatchView> {
        let (terminal, warehouse) = input.check()?;
        if !self.shared.db.warehouse_exists(warehouse.as_str()).await? {
            return Err(Error::not_found(format!(
                "warehouse {}",
                warehouse.as_str()
            )));
        }
        let mut skus: Vec<Sku> = input
            .sales
            .iter()
            .flat_map(|sale| sale.items.iter())
            .filter_map(|item| Sku::parse(&item.sku).ok())
            .collect();
        skus.sort();
        skus.dedup();
        let prices = if skus.is_empty() {
            HashMap::new()
        } else {
            self.shared
                .db
                .order_inputs(&skus.iter().collect::<Vec<_>>())
                .await?
                .prices
        };

        let now = now_ms();
        let mut tx = self.shared.db.begin().await?;
        if let Some(answer) = tx
            .pos_batch_answer(terminal.as_str(), input.batch_seq)
            .await?
        {
            drop(tx);
            return replayed(&answer);
        }
        let received = tx
            .pos_batches_received_below(terminal.as_str(), input.batch_seq)
            .await?;
        let mut results: Vec<PosSaleResultView> = Vec::with_capacity(input.sales.len());
        // The units each accepted sale takes, by its place in `results`.
        let mut demands: Vec<(usize, Vec<(String, i64)>)> = Vec::new();
        for sale in &input.sales {
            let results_so_far = results.len();
            let sale_span = tracing::info_span!(
                "pos.sale",
                pos.terminal_id = terminal.as_str(),
                pos.client_sale_id = field::Empty,
                pos.outcome = field::Empty,
                order.id = field::Empty,
            );
            let result = async {
                let checked =
                    match sale.check(&terminal, &prices, now, self.pos_offline_window_hours) {
                        Ok(checked) => checked,
                        Err(error) => return Ok(rejected(&sale.client_sale_id, &error)),
                    };
                tracing::Span::current()
                    .record("pos.client_sale_id", checked.client_sale_id.as_str());
                let detail = format!(
                    "sold at terminal {} (sale {}, batch {}), paid {} {}",
                    terminal.as_str(),
                    checked.client_sale_id,
                    input.batch_seq,
                    checked.order.total_minor,
                    checked.order.currency,
                );
                let written = tx
                    .record_pos_sale(&NewPosSale {
                        terminal_id: terminal.as_str(),
                        client_sale_id: &checked.client_sale_id,
                        batch_seq: input.batch_seq,
                        sold_at_ms: checked.sold_at_ms,
                        order: &checked.order,
                        timeline: NewTimelineEntry {
                            order_id: &checked.order.id,
                            at_ms: now,
                            kind: TimelineKind::PosSaleRecorded,
                            detail: &detail,
                            trace_id: &checked.order.trace_id,
                            span_id: &checked.order.span_id,
                        },
                    })
                    .await?;
                Ok::<_, Error>(match written {
                    PosSaleWrite::Recorded => {
                        demands.push((
                            results_so_far,
                            checked
                                .order
                                .items
                                .iter()
                                .map(|item| (item.sku.clone(), item.quantity))
                                .collect::<Vec<_>>(),
                        ));
                        PosSaleResultView {
                            client_sale_id: checked.client_sale_id,
                            outcome: "accepted".to_owned(),
                            order_id: Some(checked.order.id),
                            stock_deficit: Vec::new(),
                            price_difference: Some(checked.price_difference),
                            error: None,
                        }
                    }
                    PosSaleWrite::Duplicate { order_id } => PosSaleResultView {
                        client_sale_id: checked.client_sale_id,
                        outcome: "duplicate".to_owned(),
                        order_id: Some(order_id),
                        stock_deficit: Vec::new(),
                        price_difference: None,
                        error: None,
                    },
                })
            }
            .instrument(sale_span.clone())
            .await?;
            sale_span.record("pos.outcome", result.outcome.as_str());
            if let Some(order_id) = &result.order_id {
                sale_span.record("order.id", order_id.as_str());
            }
            results.push(result);
        }
        self.take_batch_stock(&mut tx, warehouse.as_str(), &demands, &mut results, now)
            .await?;
        let view = PosBatchView {
            terminal_id: terminal.as_str().to_owned(),
            batch_seq: input.batch_seq,
            results,
            missing_batch_seqs: pos::missing_batch_seqs(
                input.batch_seq,
                &received,
                MAX_MISSING_LISTED,
            ),
        };
        let answer = serde_json::to_string(&view)
            .map_err(|e| Error::internal(format!("cannot encode a POS answer: {e}")))?;
        let first = tx
            .record_pos_batch(
                terminal.as_str(),
                input.batch_seq,
                warehouse.as_str(),
                &answer,
                now,
            )
            .await?;
        if !first {
            // Another upload of this batch committed while this one ran: its answer stands,
            // and everything written here goes (the rollback on drop).
            drop(tx);
            let mut tx = self.shared.db.begin().await?;
            let answer = tx
                .pos_batch_answer(terminal.as_str(), input.batch_seq)
                .await?
                .ok_or_else(|| Error::internal("a POS batch answer vanished"))?;
            drop(tx);
            return replayed(&answer);
        }
        tx.commit().await?;
        for result in &view.results {
            metrics::count_pos_sale(match result.outcome.as_str() {
                "accepted" => "accepted",
                "duplicate" => "duplicate",
                _ => "rejected",
            });
            let deficit: i64 = result.stock_deficit.iter().map(|d| d.quantity).sum();
            metrics::count_pos_stock_deficit(u64::try_from(deficit).unwrap_or(0));
        }
        metrics::set_pos_terminal_last_sync(terminal.as_str(), now);
        tracing::info!(
            pos.terminal_id = terminal.as_str(),
            pos.batch_seq = input.batch_seq,
            pos.sales = view.results.len(),
            "POS batch recorded"
        );
        Ok(view)
    }

    /// Takes the stock of the batch's accepted sales, sale by sale in the batch's order, out
    /// of the warehouse's free units (on hand, not reserved: online orders were promised
    /// first); what they do not cover is each sale's deficit — reported, never refused, the
    /// goods have left the shop. The rows are locked only now, at the end of the batch.
    async fn take_batch_stock(
        &self,
        tx: &mut ordo_storage::WriteTx,
        warehouse: &str,
        demands: &[(usize, Vec<(String, i64)>)],
        results: &mut [PosSaleResultView],
        now: i64,
    ) -> Result<()> {
        let mut skus: Vec<&str> = demands
            .iter()
            .flat_map(|(_, lines)| lines.iter().map(|(sku, _)| sku.as_str()))
            .collect();
        skus.sort_unstable();
        skus.dedup();
        let mut free = tx.lock_free_stock(warehouse, &skus).await?;
        let mut taken: HashMap<&str, i64> = HashMap::new();
        for (index, lines) in demands {
            for (sku, quantity) in lines {
                let left = free.entry(sku.clone()).or_insert(0);
                let take = (*quantity).min((*left).max(0));
                *left -= take;
                *taken.entry(sku.as_str()).or_insert(0) += take;
                if take < *quantity {
                    results[*index].stock_deficit.push(StockDeficitView {
                        sku: sku.clone(),
                        quantity: quantity - take,
                    });
                }
            }
        }
        for sku in skus {
            if let Some(&quantity) = taken.get(sku)
                && quantity > 0
            {
                tx.take_on_hand(warehouse, sku, quantity, now).await?;
            }
        }
        Ok(())
    }
}

impl PosSaleInput {
    /// Checks one sale of `terminal`'s batch against the catalogue's `prices` and the clock
    /// (`now`, an offline window of `window_hours`) into the order it becomes.
    pub fn check(
        &self,
        terminal: &TerminalId,
        prices: &HashMap<Sku, Money>,
        now: i64,
        window_hours: u64,
    ) -> Result<CheckedSale> {
        let client_sale_id = pos::parse_client_sale_id("client_sale_id", &self.client_sale_id)?;
        let sold_at = time::OffsetDateTime::parse(
            &self.sold_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| Error::invalid_field("sold_at", "must be RFC 3339 with an offset"))?;
        let sold_at_ms = i64::try_from(sold_at.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| Error::invalid_field("sold_at", "is out of range"))?;
        pos::check_sold_at(sold_at_ms, now, window_hours)?;
        let customer_id = match &self.customer_id {
            Some(raw) => CustomerId::parse(raw)?.as_str().to_owned(),
            // An anonymous sale belongs to its terminal.
            None => format!("pos:{}", terminal.as_str()),
        };
        let currency = Currency::parse(&self.currency)?;
        PosPaymentMethod::parse(&self.payment.method)?;
        let paid = self.payment.amount.parse("payment.amount")?;
        if paid.currency() != currency {
            return Err(Error::invalid_field(
                "payment.amount.currency",
                format!("must be the sale's currency {currency}"),
            ));
        }
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(Error::invalid_field(
                "items",
                format!("must hold 1 to {MAX_LINES} lines"),
            ));
        }
        let lines = parse_lines(&self.items)?;
        let (priced, catalogue_total) =
            price_lines(currency, &lines, |sku| prices.get(sku).copied())?;
        let ids = step_ids();
        let order = OrderRecord {
            id: new_order_id().as_str().to_owned(),
            customer_id,
            status: OrderStatus::Completed,
            currency: currency.as_str().to_owned(),
            total_minor: paid.amount_minor(),
            shipping_address: "null".to_owned(),
            contact: "null".to_owned(),
            created_at_ms: sold_at_ms,
            updated_at_ms: now,
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            items: item_records(&priced),
        };
        Ok(CheckedSale {
            client_sale_id,
            sold_at_ms,
            price_difference: MoneyDifferenceDto {
                amount_minor: paid.amount_minor() - catalogue_total.amount_minor(),
                currency: currency.as_str().to_owned(),
            },
            order,
        })
    }
}

fn rejected(client_sale_id: &str, error: &Error) -> PosSaleResultView {
    tracing::Span::current().record("pos.client_sale_id", client_sale_id);
    PosSaleResultView {
        client_sale_id: client_sale_id.to_owned(),
        outcome: "rejected".to_owned(),
        order_id: None,
        stock_deficit: Vec::new(),
        price_difference: None,
        error: Some(PosSaleErrorView {
            code: error.kind.code().to_owned(),
            message: error.message.clone(),
        }),
    }
}

fn replayed(answer: &str) -> Result<PosBatchView> {
    serde_json::from_str(answer)
        .map_err(|e| Error::internal(format!("a stored POS answer does not read back: {e}")))
}

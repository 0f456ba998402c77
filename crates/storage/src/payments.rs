//! Payment intents and provider callback events: reads on the read connections, writes as
//! [`WriteTx`] steps; and the query of the payment-timeout job.
//!
//! Lock order on PostgreSQL: a callback locks its payment row, then the order row; nothing that
//! holds an order row waits for a payment row (creating an intent only inserts), so the two
//! never deadlock.

use crate::records::{PaymentEventRecord, PaymentRecord, UnpaidOrderRecord};
use crate::sql::{RowRef, params};
use crate::{Database, WriteTx};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;
use ordo_domain::payment::PaymentStatus;

pub(crate) const PAYMENT_COLUMNS: &str = "id, order_id, provider, status, amount_minor, currency, \
     created_at_ms, updated_at_ms, trace_id, span_id";

const EVENT_COLUMNS: &str =
    "provider, event_id, payment_id, status, amount_minor, currency, outcome, received_at_ms";

pub(crate) fn payment_from_row(row: &RowRef<'_>) -> Result<PaymentRecord> {
    Ok(PaymentRecord {
        id: row.get(0)?,
        order_id: row.get(1)?,
        provider: row.get(2)?,
        status: row.named(3)?,
        amount_minor: row.get(4)?,
        currency: row.get(5)?,
        created_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
        trace_id: row.get(8)?,
        span_id: row.get(9)?,
    })
}

fn event_from_row(row: &RowRef<'_>) -> Result<PaymentEventRecord> {
    Ok(PaymentEventRecord {
        provider: row.get(0)?,
        event_id: row.get(1)?,
        payment_id: row.get(2)?,
        status: row.named(3)?,
        amount_minor: row.get(4)?,
        currency: row.get(5)?,
        outcome: row.named(6)?,
        received_at_ms: row.get(7)?,
    })
}

impl Database {
    /// The payments of order `order_id`, oldest first.
    pub async fn payments_of_order(&self, order_id: &str) -> Result<Vec<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY id");
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT payments",
                &sql,
                &params![order_id],
                payment_from_row,
            )
            .await
    }

    /// Payment `id`, if it exists.
    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let lease = self.read().await?;
        lease
            .conn()
            .query_opt("SELECT payments", &sql, &params![id], payment_from_row)
            .await
    }

    /// Payments of `provider` still `pending`, oldest first (the sandbox's to resume).
    pub async fn pending_payments_of_provider(
        &self,
        provider: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>> {
        let pending = PaymentStatus::Pending;
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND status = '{pending}'
             ORDER BY id LIMIT {limit}"
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT payments",
                &sql,
                &params![provider],
                payment_from_row,
            )
            .await
    }

    /// The event `event_id` of `provider`, if it was received before.
    pub async fn payment_event(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<PaymentEventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM payment_events WHERE provider = $1 AND event_id = $2"
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query_opt(
                "SELECT payment_events",
                &sql,
                &params![provider, event_id],
                event_from_row,
            )
            .await
    }

    /// Up to `limit` orders still in `pending_payment` that were created before
    /// `created_before_ms`, oldest first (index `orders_unpaid_by_age`: no scan of the orders
    /// that are not due). The status is written into the text, not bound: PostgreSQL matches a
    /// partial index only against a literal.
    pub async fn unpaid_orders_created_before(
        &self,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<UnpaidOrderRecord>> {
        let unpaid = OrderStatus::PendingPayment;
        let sql = format!(
            "SELECT id, created_at_ms, trace_id, span_id FROM orders
             WHERE status = '{unpaid}' AND created_at_ms < $1
             ORDER BY created_at_ms, id LIMIT {limit}"
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query("SELECT orders", &sql, &params![created_before_ms], |row| {
                Ok(UnpaidOrderRecord {
                    id: row.get(0)?,
                    created_at_ms: row.get(1)?,
                    trace_id: row.get(2)?,
                    span_id: row.get(3)?,
                })
            })
            .await
    }
}

impl WriteTx {
    pub async fn insert_payment(&mut self, payment: &PaymentRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        self.conn()
            .execute(
                "INSERT payments",
                &sql,
                &params![
                    &payment.id,
                    &payment.order_id,
                    &payment.provider,
                    payment.status.as_str(),
                    payment.amount_minor,
                    &payment.currency,
                    payment.created_at_ms,
                    payment.updated_at_ms,
                    &payment.trace_id,
                    &payment.span_id,
                ],
            )
            .await?;
        Ok(())
    }

    /// The intent of order `order_id` that still awaits its provider, if any.
    pub async fn pending_payment_of_order(
        &mut self,
        order_id: &str,
    ) -> Result<Option<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = '{}'",
            PaymentStatus::Pending
        );
        self.conn()
            .query_opt(
                "SELECT payments",
                &sql,
                &params![order_id],
                payment_from_row,
            )
            .await
    }

    /// Reads payment `id`; on PostgreSQL the row stays locked until commit.
    pub async fn payment_for_update(&mut self, id: &str) -> Result<Option<PaymentRecord>> {
        let lock = self.row_lock();
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}");
        self.conn()
            .query_opt("SELECT payments", &sql, &params![id], payment_from_row)
            .await
    }

    /// Moves payment `id` from status `from` to `to`; `false` if it was no longer in `from`.
    pub async fn set_payment_status(
        &mut self,
        id: &str,
        from: PaymentStatus,
        to: PaymentStatus,
        now_ms: i64,
    ) -> Result<bool> {
        let updated = self
            .conn()
            .execute(
                "UPDATE payments",
                "UPDATE payments SET status = $1, updated_at_ms = $2
                 WHERE id = $3 AND status = $4",
                &params![to.as_str(), now_ms, id, from.as_str()],
            )
            .await?;
        Ok(updated == 1)
    }

    /// Records `event`. If the provider's event id was recorded before (a replay, or a
    /// concurrent delivery that committed first: the unique key makes this one wait for it),
    /// nothing is written and the first record is returned.
    pub async fn record_payment_event(
        &mut self,
        event: &PaymentEventRecord,
    ) -> Result<Option<PaymentEventRecord>> {
        let conn = self.conn();
        let sql = format!(
            "INSERT INTO payment_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (provider, event_id) DO NOTHING"
        );
        let inserted = conn
            .execute(
                "INSERT payment_events",
                &sql,
                &params![
                    &event.provider,
                    &event.event_id,
                    &event.payment_id,
                    event.status.as_str(),
                    event.amount_minor,
                    &event.currency,
                    event.outcome.as_str(),
                    event.received_at_ms,
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM payment_events WHERE provider = $1 AND event_id = $2"
        );
        conn.query_one(
            "SELECT payment_events",
            &sql,
            &params![&event.provider, &event.event_id],
            event_from_row,
        )
        .await
        .map(Some)
    }
}

impl WriteTx {
    /// The succeeded payments of `order_id`: what a refund gives back.
    pub async fn succeeded_payments_of_order(
        &mut self,
        order_id: &str,
    ) -> Result<Vec<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE order_id = $1 AND status = '{}' ORDER BY id",
            PaymentStatus::Succeeded
        );
        self.conn()
            .query(
                "SELECT payments",
                &sql,
                &params![order_id],
                payment_from_row,
            )
            .await
    }

    /// How many payments of `customer_id` succeeded since `since_ms` (refunded ones count:
    /// they were attempts all the same).
    ///
    /// Written as a count per order of the customer (a correlated subquery, which PostgreSQL
    /// never turns into a join): the customer's few orders by `orders_by_customer_time`, each
    /// one's payments by `payments_by_order`, whatever the statistics said when the prepared
    /// statement was planned. As a join, a plan made while the tables were small hashed the
    /// whole `payments` table on every call (0.9 ms per call after 3,000 orders, and growing).
    pub async fn recent_payments_of_customer(
        &mut self,
        customer_id: &str,
        since_ms: i64,
    ) -> Result<i64> {
        // A window counted from earlier counts every payment this one would: a velocity
        // check on it can only be stricter.
        if self.batch_reads.recent_payments_since_ms <= since_ms
            && let Some(count) = self.batch_reads.recent_payments.remove(customer_id)
        {
            return Ok(count);
        }
        self.conn()
            .query_one(
                "SELECT payments",
                "SELECT CAST(COALESCE(SUM((
                     SELECT COUNT(*) FROM payments p
                     WHERE p.order_id = o.id AND p.updated_at_ms >= $1
                       AND p.status IN ($2, $3, $4))), 0) AS BIGINT)
                 FROM orders o WHERE o.customer_id = $5",
                &params![
                    since_ms,
                    PaymentStatus::Succeeded.as_str(),
                    PaymentStatus::RefundRequested.as_str(),
                    PaymentStatus::Refunded.as_str(),
                    customer_id,
                ],
                |row| row.get(0),
            )
            .await
    }

    /// [`WriteTx::recent_payments_of_customer`] for every customer of `customer_ids` in one
    /// statement (the same correlated count, grouped by customer), for a batch of steps: each
    /// customer's next ask with a window starting at `since_ms` or later is answered from it.
    pub async fn prefetch_recent_payments(
        &mut self,
        customer_ids: &[&str],
        since_ms: i64,
    ) -> Result<()> {
        if customer_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT o.customer_id, CAST(COALESCE(SUM((
                 SELECT COUNT(*) FROM payments p
                 WHERE p.order_id = o.id AND p.updated_at_ms >= $1
                   AND p.status IN ($2, $3, $4))), 0) AS BIGINT)
             FROM orders o WHERE o.customer_id IN ({}) GROUP BY o.customer_id",
            crate::placeholders(5, customer_ids.len())
        );
        let mut binds = vec![
            crate::sql::Param::Int(since_ms),
            crate::sql::Param::Text(PaymentStatus::Succeeded.as_str()),
            crate::sql::Param::Text(PaymentStatus::RefundRequested.as_str()),
            crate::sql::Param::Text(PaymentStatus::Refunded.as_str()),
        ];
        binds.extend(customer_ids.iter().map(|id| crate::sql::Param::Text(id)));
        let counts = self
            .conn()
            .query("SELECT payments", &sql, &binds, |row| {
                Ok((row.get::<String>(0)?, row.get::<i64>(1)?))
            })
            .await?;
        let mut by_customer: std::collections::HashMap<String, i64> = customer_ids
            .iter()
            .map(|id| ((*id).to_owned(), 0))
            .collect();
        by_customer.extend(counts);
        self.batch_reads.recent_payments = by_customer;
        self.batch_reads.recent_payments_since_ms = since_ms;
        Ok(())
    }
}

//! Payment intents and provider callback events: reads on the read connections, writes as
//! [`WriteTx`] steps; and the query of the payment-timeout job.
//!
//! Lock order on PostgreSQL: a callback locks its payment row, then the order row; nothing that
//! holds an order row waits for a payment row (creating an intent only inserts), so the two
//! never deadlock.

use crate::deferred::AtCommit;
use crate::orders::{ORDER_COLUMNS, order_from_row_at};
use crate::records::{OrderRecord, PaymentEventRecord, PaymentRecord, UnpaidOrderRecord};
use crate::sql::{RowRef, params};
use crate::{Database, WriteTx};
use ordo_domain::Result;
use ordo_domain::order::OrderStatus;
use ordo_domain::payment::PaymentStatus;

pub(crate) const PAYMENT_COLUMNS: &str = "id, order_id, provider, status, amount_minor, currency, \
     created_at_ms, updated_at_ms, trace_id, span_id";

const EVENT_COLUMNS: &str =
    "provider, event_id, payment_id, status, amount_minor, currency, outcome, received_at_ms";

/// Columns of [`PAYMENT_COLUMNS`] in a row.
const PAYMENT_WIDTH: usize = 10;
/// Columns of [`ORDER_COLUMNS`] in a row.
const ORDER_WIDTH: usize = 11;

pub(crate) fn payment_from_row(row: &RowRef<'_>) -> Result<PaymentRecord> {
    payment_from_row_at(row, 0)
}

/// The payment whose [`PAYMENT_COLUMNS`] start at column `at` (a row of a join).
fn payment_from_row_at(row: &RowRef<'_>, at: usize) -> Result<PaymentRecord> {
    Ok(PaymentRecord {
        id: row.get(at)?,
        order_id: row.get(at + 1)?,
        provider: row.get(at + 2)?,
        status: row.named(at + 3)?,
        amount_minor: row.get(at + 4)?,
        currency: row.get(at + 5)?,
        created_at_ms: row.get(at + 6)?,
        updated_at_ms: row.get(at + 7)?,
        trace_id: row.get(at + 8)?,
        span_id: row.get(at + 9)?,
    })
}

/// The record `parse` reads from column `at` on, of an outer join's row, if the row has one
/// there (its first column, a key, is not null).
fn optional_at<T>(
    row: &RowRef<'_>,
    at: usize,
    parse: fn(&RowRef<'_>, usize) -> Result<T>,
) -> Result<Option<T>> {
    match row.get::<Option<String>>(at)? {
        Some(_) => parse(row, at).map(Some),
        None => Ok(None),
    }
}

fn event_from_row(row: &RowRef<'_>) -> Result<PaymentEventRecord> {
    event_from_row_at(row, 0)
}

/// The callback event whose [`EVENT_COLUMNS`] start at column `at`.
fn event_from_row_at(row: &RowRef<'_>, at: usize) -> Result<PaymentEventRecord> {
    Ok(PaymentEventRecord {
        provider: row.get(at)?,
        event_id: row.get(at + 1)?,
        payment_id: row.get(at + 2)?,
        status: row.named(at + 3)?,
        amount_minor: row.get(at + 4)?,
        currency: row.get(at + 5)?,
        outcome: row.named(at + 6)?,
        received_at_ms: row.get(at + 7)?,
    })
}

/// `columns` (a list of [`PAYMENT_COLUMNS`]' kind) each qualified with `alias`, for a join.
fn prefixed(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
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

    /// What a provider's callback is checked against before its transaction, in one statement:
    /// payment `payment_id`, if it exists, and the event `event_id` of `provider`, if it was
    /// received before (a replay, answered without a write).
    pub async fn payment_and_event(
        &self,
        payment_id: &str,
        provider: &str,
        event_id: &str,
    ) -> Result<(Option<PaymentRecord>, Option<PaymentEventRecord>)> {
        let sql = format!(
            "SELECT {}, {} FROM (SELECT 1) AS one
             LEFT JOIN payments p ON p.id = $1
             LEFT JOIN payment_events e ON e.provider = $2 AND e.event_id = $3",
            prefixed(PAYMENT_COLUMNS, "p"),
            prefixed(EVENT_COLUMNS, "e"),
        );
        let lease = self.read().await?;
        lease
            .conn()
            .query_one(
                "SELECT payments",
                &sql,
                &params![payment_id, provider, event_id],
                |row| {
                    Ok((
                        optional_at(row, 0, payment_from_row_at)?,
                        optional_at(row, PAYMENT_WIDTH, event_from_row_at)?,
                    ))
                },
            )
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
    /// Inserts a new intent. Nothing in the transaction reads it back, so on PostgreSQL it
    /// travels with the `COMMIT`; a failure (a duplicate id) fails the commit.
    pub async fn insert_payment(&mut self, payment: &PaymentRecord) -> Result<()> {
        self.execute_at_commit(
            &INSERT_PAYMENT,
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
        .await
    }

    /// Locks order `order_id` (as [`WriteTx::lock_order_without_items`]) and reads, in the
    /// same statement, its intent that still awaits its provider, if any: what creating an
    /// intent decides on. `None` if the order does not exist.
    pub async fn lock_order_with_pending_payment(
        &mut self,
        order_id: &str,
    ) -> Result<Option<(OrderRecord, Option<PaymentRecord>)>> {
        let lock = match self.backend() {
            crate::Backend::Postgres => " FOR UPDATE OF o",
            crate::Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {}, {} FROM orders o
             LEFT JOIN payments p ON p.order_id = o.id AND p.status = '{}'
             WHERE o.id = $1 ORDER BY p.id LIMIT 1{lock}",
            prefixed(ORDER_COLUMNS, "o"),
            prefixed(PAYMENT_COLUMNS, "p"),
            PaymentStatus::Pending,
        );
        self.conn()
            .query_opt("SELECT orders", &sql, &params![order_id], |row| {
                Ok((
                    order_from_row_at(row, 0)?,
                    optional_at(row, ORDER_WIDTH, payment_from_row_at)?,
                ))
            })
            .await
    }

    /// Locks payment `payment_id` and then its order, in one statement (the lock order of
    /// this module), for a callback to decide on both. `None` if the payment does not exist.
    pub async fn lock_payment_and_order(
        &mut self,
        payment_id: &str,
    ) -> Result<Option<(PaymentRecord, OrderRecord)>> {
        // Without `OF`, every joined row is locked, in the order of the `FROM` list.
        let lock = self.row_lock();
        let sql = format!(
            "SELECT {}, {} FROM payments p JOIN orders o ON o.id = p.order_id
             WHERE p.id = $1{lock}",
            prefixed(PAYMENT_COLUMNS, "p"),
            prefixed(ORDER_COLUMNS, "o"),
        );
        self.conn()
            .query_opt("SELECT payments", &sql, &params![payment_id], |row| {
                Ok((
                    payment_from_row_at(row, 0)?,
                    order_from_row_at(row, PAYMENT_WIDTH)?,
                ))
            })
            .await
    }

    /// Moves payment `id`, which this transaction locked and found in status `from`
    /// ([`WriteTx::lock_payment_and_order`]), to `to`. The lock means the change cannot miss,
    /// so nothing waits for its answer: on PostgreSQL it travels with the `COMMIT` (the
    /// `status` condition stays, as a guard). Not for a payment the same transaction reads
    /// again afterwards.
    pub async fn set_payment_status_of_locked(
        &mut self,
        id: &str,
        from: PaymentStatus,
        to: PaymentStatus,
        now_ms: i64,
    ) -> Result<()> {
        self.execute_at_commit(
            &SET_PAYMENT_STATUS_OF_LOCKED,
            &params![to.as_str(), now_ms, id, from.as_str()],
        )
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
                SET_PAYMENT_STATUS,
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

const SET_PAYMENT_STATUS: &str =
    "UPDATE payments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4";

/// [`SET_PAYMENT_STATUS`] of a payment this transaction locked: on PostgreSQL a row of
/// `VALUES`, so that such changes merge (one per payment and statement).
pub(crate) static SET_PAYMENT_STATUS_OF_LOCKED: AtCommit = AtCommit {
    summary: "UPDATE payments",
    postgres: "UPDATE payments AS p SET status = v.status, updated_at_ms = v.at_ms
         FROM (VALUES ($1, $2::bigint, $3, $4)) AS v (status, at_ms, id, from_status)
         WHERE p.id = v.id AND p.status = v.from_status",
    sqlite: SET_PAYMENT_STATUS,
    distinct_param: Some(2),
};

pub(crate) static INSERT_PAYMENT: AtCommit = AtCommit::insert(
    "INSERT payments",
    "INSERT INTO payments (id, order_id, provider, status, amount_minor, currency, \
     created_at_ms, updated_at_ms, trace_id, span_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
);

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

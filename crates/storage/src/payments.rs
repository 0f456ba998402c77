//! Payment intents and provider callback events: reads on the read pool, writes as
//! [`WriteTx`] steps; and the query of the payment-timeout job.
//!
//! Lock order on PostgreSQL: a callback locks its payment row, then the order row; nothing that
//! holds an order row waits for a payment row (creating an intent only inserts), so the two
//! never deadlock.

use crate::records::{PaymentEventRecord, PaymentRecord, UnpaidOrderRecord};
use crate::traced::Traced;
use crate::{Backend, Database, WriteTx, db_error};
use ordo_domain::Result;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

pub(crate) const PAYMENT_COLUMNS: &str = "id, order_id, provider, status, amount_minor, currency, \
     created_at_ms, updated_at_ms, trace_id, span_id";

const EVENT_COLUMNS: &str =
    "provider, event_id, payment_id, status, amount_minor, currency, outcome, received_at_ms";

pub(crate) fn payment_from_row(row: &AnyRow) -> Result<PaymentRecord> {
    let record = (|| {
        Ok::<_, sqlx::Error>(PaymentRecord {
            id: row.try_get(0)?,
            order_id: row.try_get(1)?,
            provider: row.try_get(2)?,
            status: row.try_get(3)?,
            amount_minor: row.try_get(4)?,
            currency: row.try_get(5)?,
            created_at_ms: row.try_get(6)?,
            updated_at_ms: row.try_get(7)?,
            trace_id: row.try_get(8)?,
            span_id: row.try_get(9)?,
        })
    })();
    record.map_err(db_error)
}

fn event_from_row(row: &AnyRow) -> Result<PaymentEventRecord> {
    let record = (|| {
        Ok::<_, sqlx::Error>(PaymentEventRecord {
            provider: row.try_get(0)?,
            event_id: row.try_get(1)?,
            payment_id: row.try_get(2)?,
            status: row.try_get(3)?,
            amount_minor: row.try_get(4)?,
            currency: row.try_get(5)?,
            outcome: row.try_get(6)?,
            received_at_ms: row.try_get(7)?,
        })
    })();
    record.map_err(db_error)
}

impl Database {
    /// The payments of order `order_id`, oldest first.
    pub async fn payments_of_order(&self, order_id: &str) -> Result<Vec<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_all(self.reader())
            .traced(self.backend, "SELECT payments")
            .await?;
        rows.iter().map(payment_from_row).collect()
    }

    /// Payment `id`, if it exists.
    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.reader())
            .traced(self.backend, "SELECT payments")
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// Payments of `provider` still `pending`, oldest first (the sandbox's to resume).
    pub async fn pending_payments_of_provider(
        &self,
        provider: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND status = 'pending'
             ORDER BY id LIMIT {limit}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(provider)
            .fetch_all(self.reader())
            .traced(self.backend, "SELECT payments")
            .await?;
        rows.iter().map(payment_from_row).collect()
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
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(provider)
            .bind(event_id)
            .fetch_optional(self.reader())
            .traced(self.backend, "SELECT payment_events")
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Up to `limit` orders still in `pending_payment` that were created before
    /// `created_before_ms`, oldest first (ids are time-ordered).
    pub async fn unpaid_orders_created_before(
        &self,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<UnpaidOrderRecord>> {
        let sql = format!(
            "SELECT id, created_at_ms, trace_id, span_id FROM orders
             WHERE status = 'pending_payment' AND created_at_ms < $1 ORDER BY id LIMIT {limit}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(created_before_ms)
            .fetch_all(self.reader())
            .traced(self.backend, "SELECT orders")
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UnpaidOrderRecord {
                    id: row.try_get(0)?,
                    created_at_ms: row.try_get(1)?,
                    trace_id: row.try_get(2)?,
                    span_id: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }
}

impl WriteTx {
    pub async fn insert_payment(&mut self, payment: &PaymentRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        let backend = self.backend();
        sqlx::query(AssertSqlSafe(sql))
            .bind(&payment.id)
            .bind(&payment.order_id)
            .bind(&payment.provider)
            .bind(&payment.status)
            .bind(payment.amount_minor)
            .bind(&payment.currency)
            .bind(payment.created_at_ms)
            .bind(payment.updated_at_ms)
            .bind(&payment.trace_id)
            .bind(&payment.span_id)
            .execute(self.connection())
            .traced(backend, "INSERT payments")
            .await?;
        Ok(())
    }

    /// The intent of order `order_id` that still awaits its provider, if any.
    pub async fn pending_payment_of_order(
        &mut self,
        order_id: &str,
    ) -> Result<Option<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'pending'"
        );
        let backend = self.backend();
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_optional(self.connection())
            .traced(backend, "SELECT payments")
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// Reads payment `id`; on PostgreSQL the row stays locked until commit.
    pub async fn payment_for_update(&mut self, id: &str) -> Result<Option<PaymentRecord>> {
        let backend = self.backend();
        let lock = match backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.connection())
            .traced(backend, "SELECT payments")
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// Moves payment `id` from status `from` to `to`; `false` if it was no longer in `from`.
    pub async fn set_payment_status(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let backend = self.backend();
        let updated = sqlx::query(
            "UPDATE payments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(now_ms)
        .bind(id)
        .bind(from)
        .execute(self.connection())
        .traced(backend, "UPDATE payments")
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Records `event`. If the provider's event id was recorded before (a replay, or a
    /// concurrent delivery that committed first: the unique key makes this one wait for it),
    /// nothing is written and the first record is returned.
    pub async fn record_payment_event(
        &mut self,
        event: &PaymentEventRecord,
    ) -> Result<Option<PaymentEventRecord>> {
        let backend = self.backend();
        let sql = format!(
            "INSERT INTO payment_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (provider, event_id) DO NOTHING"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(&event.provider)
            .bind(&event.event_id)
            .bind(&event.payment_id)
            .bind(&event.status)
            .bind(event.amount_minor)
            .bind(&event.currency)
            .bind(&event.outcome)
            .bind(event.received_at_ms)
            .execute(self.connection())
            .traced(backend, "INSERT payment_events")
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM payment_events WHERE provider = $1 AND event_id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&event.provider)
            .bind(&event.event_id)
            .fetch_one(self.connection())
            .traced(backend, "SELECT payment_events")
            .await?;
        event_from_row(&row).map(Some)
    }
}

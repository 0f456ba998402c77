//! Order placement with group commit: concurrent order creations are written together, one
//! transaction (and on PostgreSQL one round trip) per batch, each order with its own outcome.
//!
//! The service reads prices and stock first ([`Database::order_inputs`]), prices and allocates
//! in the domain, then hands the decided order to [`Database::place_order`]. A queue collects
//! the placements that arrive while the previous batch commits (at most [`MAX_BATCH`]); one task
//! writes them:
//! - PostgreSQL: one statement, `ordo_place_orders(batch)` (migration 0006), which locks every
//!   stock row of the batch in (sku, warehouse) order, then per order claims the idempotency
//!   key, checks the allocations still fit (the rows are locked: no race), and writes the order,
//!   items, reservations, timeline entry and outbox event.
//! - SQLite: the same steps on the writer connection, each order inside a savepoint of the
//!   batch's transaction.
//!
//! An order whose allocations no longer fit is `StockChanged` and writes nothing; the service
//! reads again and decides anew. One order's outcome never fails the others of its batch; a
//! batch that fails as a whole is retried order by order, so a fault stays with its order. A
//! caller hears its outcome only after its batch committed.
//!
//! Spans: each caller's wait is a CLIENT span in its own trace (`INSERT orders`, with
//! `db.operation.batch.size`); the batch is one CLIENT span (`BATCH orders`), a child of the
//! first caller's span; it and every caller's span link to each other.

use crate::idempotency::KeyClaim;
use crate::records::{NewOutboxEvent, OrderRecord};
use crate::sql::{self, Param, corrupt_row, observed_in, params};
use crate::{Connections, Database, WriteTx, placeholders};
use ordo_domain::ids::{CountryCode, Sku, WarehouseId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::stock::{Allocation, StockLevel};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, ErrorKind, Result};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// The most orders one batch writes.
pub const MAX_BATCH: usize = 64;

/// How long a placement may wait for its batch to commit before its caller hears
/// `unavailable`: with the SQLite writer's busy wait on top (a statement blocked on a lock is
/// not cut short), still inside the contract's 2 s for a database that does not answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_millis(1500);

/// Placements waiting for their batch; senders wait when it is full (back-pressure).
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// An order the service decided on from a read of prices and stock, with everything that must
/// commit with it.
#[derive(Debug, Clone)]
pub struct OrderPlacement {
    pub order: OrderRecord,
    /// The idempotency key and the digest of the request claiming it.
    pub idempotency: Option<(String, String)>,
    pub allocations: Vec<Allocation>,
    /// The detail of the order's first timeline entry, `order_created`.
    pub timeline_detail: String,
    pub event: NewOutboxEvent,
}

/// What became of one placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Placed,
    /// The idempotency key belongs to an earlier request; nothing was written.
    KeyTaken {
        request_hash: String,
        order_id: String,
    },
    /// An allocation no longer fits the stock on hand; nothing was written.
    StockChanged,
}

/// What an order is priced and allocated from.
#[derive(Debug, Clone, Default)]
pub struct OrderInputs {
    pub prices: HashMap<Sku, Money>,
    pub stock: HashMap<Sku, Vec<StockLevel>>,
}

pub(crate) struct Job {
    placement: OrderPlacement,
    /// The caller's span waiting for the batch.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Placement>>,
    /// When the caller must have its answer: a batch not written by then is abandoned (and
    /// rolled back), and a job not yet in a batch is not written at all.
    deadline: tokio::time::Instant,
}

pub(crate) type Queue = mpsc::Sender<Job>;

/// Starts the task that writes batches of placements; it ends when every sender is gone.
pub(crate) fn start(db: Database) -> Queue {
    let (sender, mut receiver) = mpsc::channel::<Job>(QUEUE_CAPACITY);
    tokio::spawn(async move {
        let mut waiting: Vec<Job> = Vec::with_capacity(QUEUE_CAPACITY);
        loop {
            // Whatever arrived while the previous batch was written; wait only when idle.
            if waiting.is_empty() {
                if receiver.recv_many(&mut waiting, QUEUE_CAPACITY).await == 0 {
                    return;
                }
            } else {
                while waiting.len() < QUEUE_CAPACITY {
                    match receiver.try_recv() {
                        Ok(job) => waiting.push(job),
                        Err(_) => break,
                    }
                }
            }
            let batch = next_batch(&mut waiting);
            write_batch(&db, batch).await;
        }
    });
    sender
}

/// Takes up to [`MAX_BATCH`] jobs, oldest first, no two with the same idempotency key (the
/// later one waits for the next batch, where it finds the key taken or free again).
fn next_batch(waiting: &mut Vec<Job>) -> Vec<Job> {
    let mut keys = std::collections::HashSet::new();
    let mut batch = Vec::with_capacity(MAX_BATCH.min(waiting.len()));
    let mut rest = Vec::new();
    for job in waiting.drain(..) {
        let key = job
            .placement
            .idempotency
            .as_ref()
            .map(|(key, _)| key.clone());
        let fits = batch.len() < MAX_BATCH && key.is_none_or(|key| keys.insert(key));
        if fits {
            batch.push(job);
        } else {
            rest.push(job);
        }
    }
    *waiting = rest;
    batch
}

impl Database {
    /// The prices of `skus` and their stock in every warehouse, in one statement.
    pub async fn order_inputs(&self, skus: &[&Sku]) -> Result<OrderInputs> {
        let sql = format!(
            "SELECT p.sku, p.price_minor, p.currency, s.warehouse, w.country, s.on_hand,
                 s.reserved
             FROM products p LEFT JOIN stock s ON s.sku = p.sku
                 LEFT JOIN warehouses w ON w.id = s.warehouse
             WHERE p.sku IN ({}) ORDER BY p.sku, s.warehouse",
            placeholders(1, skus.len())
        );
        let binds: Vec<Param<'_>> = skus.iter().map(|sku| Param::Text(sku.as_str())).collect();
        let lease = self.read().await?;
        let rows = lease
            .conn()
            .query("SELECT products", &sql, &binds, |row| {
                let sku = Sku::parse(&row.get::<String>(0)?).map_err(corrupt_row)?;
                let currency = Currency::parse(&row.get::<String>(2)?);
                let price = currency
                    .and_then(|c| Money::new(row.get(1)?, c))
                    .map_err(corrupt_row)?;
                let level = match row.get::<Option<String>>(3)? {
                    None => None,
                    Some(warehouse) => Some(StockLevel {
                        warehouse: WarehouseId::parse(&warehouse).map_err(corrupt_row)?,
                        country: CountryCode::parse(&row.get::<String>(4)?).map_err(corrupt_row)?,
                        on_hand: row.get(5)?,
                        reserved: row.get(6)?,
                    }),
                };
                Ok((sku, price, level))
            })
            .await?;
        let mut inputs = OrderInputs::default();
        for (sku, price, level) in rows {
            inputs.prices.insert(sku.clone(), price);
            let levels = inputs.stock.entry(sku).or_default();
            levels.extend(level);
        }
        Ok(inputs)
    }

    /// Writes `placement` in the next batch and answers once that batch committed.
    pub async fn place_order(&self, placement: OrderPlacement) -> Result<Placement> {
        let backend = self.backend();
        let span = sql::db_span(backend, "INSERT orders");
        let Some(queue) = &self.placements else {
            return Err(Error::internal("order placement is not running"));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            placement,
            span: span.clone(),
            reply,
            deadline: tokio::time::Instant::now() + ANSWER_WITHIN,
        };
        // No time-out of the caller's own: the batch answers every job, by its deadline at the
        // latest. A caller that gave up by itself could hear `unavailable` while its order
        // commits after all; the client, told nothing was done, would place it again.
        // (Boxed: the wait sits deep in a request's future, and debug builds give each layer
        // of nesting its own copy on the stack.)
        sql::unbounded(Box::pin(observed_in(
            span,
            backend,
            "INSERT orders",
            async {
                queue
                    .send(job)
                    .await
                    .map_err(|_| Error::unavailable("order placement has stopped"))?;
                answer
                    .await
                    .map_err(|_| Error::unavailable("order placement has stopped"))?
            },
        )))
        .await
    }
}

/// Writes one batch and answers each of its callers. Jobs whose caller is gone or whose
/// deadline passed while they queued are answered `unavailable` and never written; the batch
/// itself ends (rolled back) at the earliest deadline of the rest.
async fn write_batch(db: &Database, jobs: Vec<Job>) {
    let now = tokio::time::Instant::now();
    let (jobs, expired): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| !job.reply.is_closed() && job.deadline > now);
    for job in expired {
        let _ = job.reply.send(Err(Error::unavailable(
            "the database did not take the order in time",
        )));
    }
    let Some(deadline) = jobs.iter().map(|job| job.deadline).min() else {
        return;
    };
    let size = jobs.len();
    let span = sql::db_span(db.backend(), "BATCH orders");
    if let Some(first) = jobs.first() {
        ordo_telemetry::propagation::adopt_parent_span(&span, &first.span);
    }
    span.record("db.operation.batch.size", size as i64);
    for job in &jobs {
        job.span.record("db.operation.batch.size", size as i64);
        ordo_telemetry::propagation::link_to(&span, &job.span);
        ordo_telemetry::propagation::link_to(&job.span, &span);
    }
    let placements: Vec<&OrderPlacement> = jobs.iter().map(|job| &job.placement).collect();
    let outcomes = within(
        deadline,
        Box::pin(observed_in(
            span.clone(),
            db.backend(),
            "BATCH orders",
            sql::unspanned(write(db, &placements)),
        )),
    )
    .await;
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        // The database is away: every order of the batch hears so.
        Err(error) if error.kind == ErrorKind::Unavailable => {
            vec![Err(error); size]
        }
        // Something in the batch failed it as a whole: each order alone, so the fault stays
        // with the order that has it.
        Err(_) if size > 1 => {
            let mut outcomes = Vec::with_capacity(size);
            for placement in &placements {
                let alone = within(
                    deadline,
                    Box::pin(observed_in(
                        span.clone(),
                        db.backend(),
                        "BATCH orders",
                        sql::unspanned(write(db, &[*placement])),
                    )),
                )
                .await;
                outcomes.push(alone.map(|mut one| one.remove(0)));
            }
            outcomes
        }
        Err(error) => vec![Err(error)],
    };
    // A read of an id before the order existed may have cached its absence: forgotten before
    // anyone hears the order exists.
    let placed: Vec<&str> = jobs
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, Ok(Placement::Placed)))
        .map(|(job, _)| job.placement.order.id.as_str())
        .collect();
    db.orders_cache().invalidate(&placed).await;
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

/// Runs a batch's write bounded by its callers' earliest deadline instead of the per-statement
/// time-out: a write cut short is dropped, and its transaction rolls back, before any caller
/// is answered.
/// (The write comes boxed: in a debug build its future is large enough that moving it by
/// value through a call overflows the worker's stack.)
async fn within<T>(
    deadline: tokio::time::Instant,
    write: std::pin::Pin<Box<impl std::future::Future<Output = Result<T>>>>,
) -> Result<T> {
    sql::unbounded(async {
        tokio::time::timeout_at(deadline, write)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("an order batch did not commit by its callers' deadline");
                Err(Error::unavailable("the database did not answer in time"))
            })
    })
    .await
}

/// One transaction for `placements`; an outcome per placement, in order.
async fn write(db: &Database, placements: &[&OrderPlacement]) -> Result<Vec<Placement>> {
    match db.connections() {
        Connections::Postgres(_) => write_postgres(db, placements).await,
        Connections::Sqlite(_) => write_sqlite(db, placements).await,
    }
}

async fn write_postgres(db: &Database, placements: &[&OrderPlacement]) -> Result<Vec<Placement>> {
    let batch: Vec<serde_json::Value> = placements.iter().map(|p| placement_json(p)).collect();
    let batch = serde_json::to_string(&batch)
        .map_err(|e| Error::internal(format!("cannot encode a placement: {e}")))?;
    let lease = db.write().await?;
    let outcomes = lease
        .conn()
        .query(
            "SELECT ordo_place_orders",
            "SELECT outcome, existing_request_hash, existing_order_id
             FROM ordo_place_orders($1::text::jsonb) ORDER BY pos",
            &params![batch.as_str()],
            |row| match row.get::<String>(0)?.as_str() {
                "placed" => Ok(Placement::Placed),
                "stock_changed" => Ok(Placement::StockChanged),
                "key_taken" => Ok(Placement::KeyTaken {
                    request_hash: row.get(1)?,
                    order_id: row.get(2)?,
                }),
                other => Err(Error::internal(format!(
                    "ordo_place_orders answered {other}"
                ))),
            },
        )
        .await?;
    if outcomes.len() != placements.len() {
        return Err(Error::internal(
            "ordo_place_orders answered a different number of orders",
        ));
    }
    Ok(outcomes)
}

/// The JSON shape `ordo_place_orders` reads (see migration 0006): column names as keys.
fn placement_json(placement: &OrderPlacement) -> serde_json::Value {
    let order = &placement.order;
    let (key, request_hash) = match &placement.idempotency {
        Some((key, hash)) => (Some(key.as_str()), Some(hash.as_str())),
        None => (None, None),
    };
    serde_json::json!({
        "key": key,
        "request_hash": request_hash,
        "order": {
            "id": order.id, "customer_id": order.customer_id, "status": order.status.as_str(),
            "currency": order.currency, "total_minor": order.total_minor,
            "shipping_address": order.shipping_address, "contact": order.contact,
            "created_at_ms": order.created_at_ms, "updated_at_ms": order.updated_at_ms,
            "trace_id": order.trace_id, "span_id": order.span_id,
        },
        "items": order.items.iter().enumerate().map(|(line_no, item)| serde_json::json!({
            "order_id": order.id, "line_no": line_no, "sku": item.sku,
            "quantity": item.quantity, "unit_price_minor": item.unit_price_minor,
            "line_total_minor": item.line_total_minor,
        })).collect::<Vec<_>>(),
        "allocations": placement.allocations.iter().map(|a| serde_json::json!({
            "sku": a.sku.as_str(), "warehouse": a.warehouse.as_str(), "quantity": a.quantity,
        })).collect::<Vec<_>>(),
        "timeline": {
            "order_id": order.id, "at_ms": order.created_at_ms, "type": TimelineKind::OrderCreated.as_str(),
            "detail": placement.timeline_detail, "trace_id": order.trace_id,
            "span_id": order.span_id,
        },
        "event": placement.event,
    })
}

async fn write_sqlite(db: &Database, placements: &[&OrderPlacement]) -> Result<Vec<Placement>> {
    let mut tx = db.begin().await?;
    let mut outcomes = Vec::with_capacity(placements.len());
    for placement in placements {
        tx.savepoint().await?;
        let outcome = place_one(&mut tx, placement).await;
        if matches!(outcome, Ok(Placement::Placed)) {
            tx.release_savepoint().await?;
        } else {
            tx.rollback_to_savepoint().await?;
        }
        outcomes.push(outcome?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The steps of one placement inside `tx`.
async fn place_one(tx: &mut WriteTx, placement: &OrderPlacement) -> Result<Placement> {
    let order = &placement.order;
    if let Some((key, request_hash)) = &placement.idempotency {
        let claim = tx
            .claim_idempotency_key(key, request_hash, &order.id, order.created_at_ms)
            .await?;
        if let KeyClaim::Existing {
            request_hash,
            order_id,
        } = claim
        {
            return Ok(Placement::KeyTaken {
                request_hash,
                order_id,
            });
        }
    }
    tx.insert_order(order).await?;
    if !tx
        .try_reserve(&order.id, &placement.allocations, order.created_at_ms)
        .await?
    {
        return Ok(Placement::StockChanged);
    }
    tx.append_timeline(&crate::timeline::NewTimelineEntry {
        order_id: &order.id,
        at_ms: order.created_at_ms,
        kind: TimelineKind::OrderCreated,
        detail: &placement.timeline_detail,
        trace_id: &order.trace_id,
        span_id: &order.span_id,
    })
    .await?;
    tx.append_outbox(&placement.event).await?;
    Ok(Placement::Placed)
}

impl WriteTx {
    /// Opens savepoint `placement` (SQLite batches: one per order).
    async fn savepoint(&mut self) -> Result<()> {
        self.conn().batch("SAVEPOINT", "SAVEPOINT placement").await
    }

    async fn release_savepoint(&mut self) -> Result<()> {
        self.conn().batch("RELEASE", "RELEASE placement").await
    }

    /// Undoes everything since the savepoint, and closes it.
    async fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.conn()
            .batch("ROLLBACK", "ROLLBACK TO placement; RELEASE placement")
            .await
    }
}

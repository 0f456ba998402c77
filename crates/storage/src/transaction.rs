//! [`WriteTx`]: the steps of one write, which commit together or not at all. The steps
//! themselves live with their tables (orders, stock, idempotency, payments, shipments,
//! timeline, outbox); this module owns beginning, committing and rolling back.
//!
//! PostgreSQL: a pooled connection of the transaction's own; `BEGIN` travels with the first
//! statement. SQLite: the writer's turn, and a savepoint in the group transaction of the
//! writes queued together ([`crate::group_commit`]).

use crate::sql::Conn;
use crate::{Backend, Connections, Database};
use ordo_domain::Result;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;

impl Database {
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
                    deferred: Vec::new(),
                }
            }
            Connections::Sqlite(sqlite) => {
                sqlite.file.ensure_present()?;
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
            touched: Vec::new(),
            locked_orders: Vec::new(),
            batch_reads: BatchReads::default(),
            orders_cache: Arc::clone(self.orders_cache()),
        })
    }
}

/// A write in progress: every step here commits together or not at all.
pub struct WriteTx {
    state: TxState,
    /// Committed or rolled back: nothing left to undo on drop.
    finished: bool,
    /// Orders whose cached reads this transaction's writes make stale.
    touched: Vec<String>,
    /// Orders locked ahead for a batch of steps, not yet asked for
    /// ([`WriteTx::lock_orders_without_items`]).
    pub(crate) locked_orders: Vec<crate::records::OrderRecord>,
    /// Reads made once for a batch of steps, each answered once ([`BatchReads`]).
    pub(crate) batch_reads: BatchReads,
    orders_cache: Arc<crate::cache::ReadCache<crate::records::OrderSnapshot>>,
}

/// Reads made for a whole batch of steps in one statement each (`prefetch_*`), so that each
/// step finds its order's part without a round trip of its own. Each part is answered once,
/// and a write to an order forgets its parts ([`WriteTx::touch_order`]): no step decides on
/// a read older than its own writes.
#[derive(Default)]
pub(crate) struct BatchReads {
    /// Shipments by order ([`WriteTx::prefetch_shipments`]).
    pub(crate) shipments: HashMap<String, Vec<crate::records::ShipmentRecord>>,
    /// Unreleased reservations by order ([`WriteTx::prefetch_unreleased_reservations`]).
    pub(crate) reservations: HashMap<String, Vec<crate::records::ShipmentItemRecord>>,
    /// Recent payments by customer, and the start of the window they were counted in
    /// ([`WriteTx::prefetch_recent_payments`]).
    pub(crate) recent_payments: HashMap<String, i64>,
    pub(crate) recent_payments_since_ms: i64,
}

// A pooled client is large; a transaction lives on one task's stack, so it is not boxed.
#[allow(clippy::large_enum_variant)]
enum TxState {
    Postgres {
        /// Taken only by the drop of an unfinished transaction, to roll it back.
        client: Option<deadpool_postgres::Object>,
        /// Whether `BEGIN` went out (with the first statement).
        begun: bool,
        /// Writes that go out with the `COMMIT` ([`WriteTx::execute_at_commit`]).
        deferred: Vec<crate::deferred::Deferred>,
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

impl WriteTx {
    /// The transaction's connection, for steps defined in other modules. On PostgreSQL the
    /// first statement carries the `BEGIN`.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match &mut self.state {
            TxState::Postgres { client, begun, .. } => {
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

    /// The clause that keeps the rows a `SELECT` reads locked until commit: `FOR UPDATE` on
    /// PostgreSQL; nothing on SQLite, whose one writer holds the database already.
    pub(crate) fn row_lock(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.state {
            TxState::Postgres { .. } => Backend::Postgres,
            TxState::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Runs a write of `kind` whose outcome nothing in this transaction waits for and nothing
    /// in it reads back (an append-only row, a guarded change of a locked row). On PostgreSQL
    /// it is held back and sent with the `COMMIT`, in the same round trip, merged with the
    /// other writes of its kind ([`crate::deferred`]); its failure fails the commit. On SQLite
    /// (no round trips) it runs now.
    pub(crate) async fn execute_at_commit(
        &mut self,
        kind: &'static crate::deferred::AtCommit,
        params: &[crate::sql::Param<'_>],
    ) -> Result<()> {
        match &mut self.state {
            TxState::Postgres { deferred, .. } => {
                deferred.push(crate::deferred::Deferred {
                    kind,
                    params: params.iter().map(Into::into).collect(),
                });
                Ok(())
            }
            TxState::Sqlite { .. } if kind.sqlite.is_empty() => Err(ordo_domain::Error::internal(
                format!("{}: a write only PostgreSQL defers", kind.summary),
            )),
            TxState::Sqlite { .. } => self
                .conn()
                .execute(kind.summary, kind.sqlite, params)
                .await
                .map(drop),
        }
    }

    /// Records that this transaction changes what a read of order `order_id` shows: its cached
    /// read is invalidated when the transaction commits. Every step that writes an order or its
    /// shipments calls it, so no caller can forget.
    pub(crate) fn touch_order(&mut self, order_id: &str) {
        self.locked_orders.retain(|order| order.id != order_id);
        self.batch_reads.shipments.remove(order_id);
        self.batch_reads.reservations.remove(order_id);
        if !self.touched.iter().any(|id| id == order_id) {
            self.touched.push(order_id.to_owned());
        }
    }

    /// The orders this transaction's writes changed so far (their cached reads are
    /// invalidated at commit).
    pub fn touched_orders(&self) -> &[String] {
        &self.touched
    }

    /// Commits; then (whatever the commit's outcome: a failed `COMMIT` may still have landed)
    /// invalidates the cached reads of the orders it touched, before the caller answers anyone.
    pub async fn commit(mut self) -> Result<()> {
        let result = self.commit_inner().await;
        let touched = std::mem::take(&mut self.touched);
        let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
        self.orders_cache.invalidate(&touched).await;
        result
    }

    async fn commit_inner(&mut self) -> Result<()> {
        let result = match &self.state {
            // Nothing was sent: there is nothing to commit.
            TxState::Postgres {
                begun: false,
                deferred,
                ..
            } if deferred.is_empty() => Ok(()),
            TxState::Postgres {
                client,
                begun,
                deferred,
            } => {
                let client = client.as_ref().expect("taken only on drop");
                crate::sql::pg_commit(client, !*begun, deferred).await
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

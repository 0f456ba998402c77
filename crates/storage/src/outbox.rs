//! The transactional outbox: appending events inside a [`WriteTx`], and the relay's side —
//! claiming pending rows under a lease, marking them published or dead, measuring the backlog —
//! plus the processed-event ids that make consumers idempotent.
//!
//! Invariant: a row is marked published only by the relay that holds its claim (`claim_token`),
//! and only after the transport acknowledged it. A relay that dies mid-publish leaves its rows
//! to be claimed again when the lease ends: at-least-once, never lost.

use crate::deferred::AtCommit;
use crate::records::{NewOutboxEvent, OutboxBacklog, OutboxPending, OutboxRow};
use crate::sql::{Param, params};
use crate::{Backend, Database, WriteTx};
use ordo_domain::Result;

impl WriteTx {
    /// Writes `event` in this transaction: it leaves only if the transaction commits (on
    /// PostgreSQL it travels with the `COMMIT`).
    pub async fn append_outbox(&mut self, event: &NewOutboxEvent) -> Result<()> {
        self.execute_at_commit(
            &APPEND_OUTBOX,
            &params![
                &event.event_id,
                &event.topic,
                &event.aggregate_id,
                &event.payload,
                &event.trace_context,
                event.created_at_ms,
            ],
        )
        .await
    }

    /// Records that `consumer` handled `event_id`. `false` means it already had: the caller
    /// must then change nothing (and roll back).
    pub async fn mark_processed(
        &mut self,
        consumer: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let inserted = self
            .conn()
            .execute(
                "INSERT processed_events",
                "INSERT INTO processed_events (consumer, event_id, processed_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
                &params![consumer, event_id, now_ms],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// [`WriteTx::mark_processed`] for several events in one statement: returns the ids it
    /// recorded now, in no particular order. An id missing from the answer had been recorded
    /// before (a redelivery): the caller must change nothing for it.
    pub async fn mark_many_processed(
        &mut self,
        consumer: &str,
        event_ids: &[&str],
        now_ms: i64,
    ) -> Result<Vec<String>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        // `$1` and `$2` first, so that every parameter first appears in its order.
        let rows = (0..event_ids.len())
            .map(|i| format!("($1, $2, ${})", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO processed_events (consumer, processed_at_ms, event_id) VALUES {rows}
             ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
        );
        let mut binds = vec![Param::Text(consumer), Param::Int(now_ms)];
        binds.extend(event_ids.iter().map(|id| Param::Text(id)));
        self.conn()
            .query("INSERT processed_events", &sql, &binds, |row| row.get(0))
            .await
    }
}

impl Database {
    /// Claims up to `limit` pending rows, oldest first, for `lease_ms`, under `claim_token`.
    /// On PostgreSQL rows another relay is claiming right now are skipped (`SKIP LOCKED`); on
    /// SQLite the single writer serialises claims.
    pub async fn claim_outbox(
        &self,
        claim_token: &str,
        limit: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>> {
        let skip_locked = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_until_ms = $1, claim_token = $2, attempts = attempts + 1
             WHERE seq IN (SELECT seq FROM outbox
                 WHERE published_at_ms IS NULL AND dead_at_ms IS NULL
                   AND (claimed_until_ms IS NULL OR claimed_until_ms < $3)
                 ORDER BY seq LIMIT {limit}{skip_locked})
             RETURNING seq, event_id, topic, aggregate_id, payload, trace_context,
                 created_at_ms, attempts, last_attempt_context"
        );
        let lease = self.write().await?;
        let mut claimed = lease
            .conn()
            .query(
                "UPDATE outbox",
                &sql,
                &params![now_ms + lease_ms, claim_token, now_ms],
                |row| {
                    Ok(OutboxRow {
                        seq: row.get(0)?,
                        event_id: row.get(1)?,
                        topic: row.get(2)?,
                        aggregate_id: row.get(3)?,
                        payload: row.get(4)?,
                        trace_context: row.get(5)?,
                        created_at_ms: row.get(6)?,
                        attempts: row.get(7)?,
                        last_attempt_context: row.get(8)?,
                    })
                },
            )
            .await?;
        // RETURNING does not promise an order.
        claimed.sort_by_key(|row| row.seq);
        Ok(claimed)
    }

    /// Marks rows published, if this relay still holds their claim.
    pub async fn mark_published(&self, claim_token: &str, seqs: &[i64], now_ms: i64) -> Result<()> {
        self.finish_claimed("published_at_ms", claim_token, seqs, now_ms)
            .await
    }

    /// Gives up on rows that failed too often: they stay in the table, out of the relay's way,
    /// for an operator (counted as dead letters).
    pub async fn mark_dead(&self, claim_token: &str, seqs: &[i64], now_ms: i64) -> Result<()> {
        self.finish_claimed("dead_at_ms", claim_token, seqs, now_ms)
            .await
    }

    /// Puts dead events (of `topic`, or every topic) back in the relay's way with a fresh count
    /// of attempts, once an operator has fixed what killed them; returns how many. Their trace
    /// context is kept, so their next publish continues the orders' traces.
    pub async fn redrive_dead_events(&self, topic: Option<&str>) -> Result<u64> {
        let lease = self.write().await?;
        let conn = lease.conn();
        match topic {
            Some(topic) => {
                conn.execute(
                    "UPDATE outbox",
                    "UPDATE outbox SET dead_at_ms = NULL, attempts = 0, claimed_until_ms = NULL,
                         claim_token = NULL
                     WHERE dead_at_ms IS NOT NULL AND topic = $1",
                    &params![topic],
                )
                .await
            }
            None => {
                conn.execute(
                    "UPDATE outbox",
                    "UPDATE outbox SET dead_at_ms = NULL, attempts = 0, claimed_until_ms = NULL,
                         claim_token = NULL
                     WHERE dead_at_ms IS NOT NULL",
                    &[],
                )
                .await
            }
        }
    }

    /// Lets row `seq` be claimed again from `retry_at_ms` (a publish failed, or was held back
    /// behind one that did: retry after backoff), keeping the failed attempt's trace context
    /// (`None`: not tried this time, keep the one stored). Unless `attempt_counts`, the claim's
    /// attempt is given back: the row was not tried, or the transport was away.
    pub async fn release_claim(
        &self,
        claim_token: &str,
        seq: i64,
        retry_at_ms: i64,
        attempt_context: Option<&str>,
        attempt_counts: bool,
    ) -> Result<()> {
        let lease = self.write().await?;
        lease
            .conn()
            .execute(
                "UPDATE outbox",
                "UPDATE outbox SET attempts = attempts - $1, claimed_until_ms = $2,
                     last_attempt_context = COALESCE($3, last_attempt_context)
                 WHERE claim_token = $4 AND seq = $5",
                &params![
                    i64::from(!attempt_counts),
                    retry_at_ms,
                    attempt_context,
                    claim_token,
                    seq
                ],
            )
            .await?;
        Ok(())
    }

    /// Sets `column` to `value` on the rows of `seqs` this relay still holds the claim of.
    async fn finish_claimed(
        &self,
        column: &'static str,
        claim_token: &str,
        seqs: &[i64],
        value: i64,
    ) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET {column} = $1 WHERE claim_token = $2 AND seq IN ({})",
            crate::placeholders(3, seqs.len())
        );
        let mut binds = vec![Param::Int(value), Param::Text(claim_token)];
        binds.extend(seqs.iter().map(|seq| Param::Int(*seq)));
        let lease = self.write().await?;
        lease.conn().execute("UPDATE outbox", &sql, &binds).await?;
        Ok(())
    }

    /// How many events wait, how old the oldest is, and how many are dead.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        let OutboxPending {
            pending,
            oldest_created_at_ms,
        } = self.outbox_pending().await?;
        let lease = self.read().await?;
        let dead = lease
            .conn()
            .query_one(
                "SELECT outbox",
                "SELECT COUNT(*) FROM outbox WHERE dead_at_ms IS NOT NULL",
                &[],
                |row| row.get(0),
            )
            .await?;
        Ok(OutboxBacklog {
            pending,
            oldest_created_at_ms,
            dead,
        })
    }

    /// The pending part of [`Database::outbox_backlog`]: read through the index of pending
    /// rows alone, cheap however many rows were published. (Counting the dead letters may scan
    /// the table until its statistics say how rare they are: the relay does that less often.)
    pub async fn outbox_pending(&self) -> Result<OutboxPending> {
        let lease = self.read().await?;
        lease
            .conn()
            .query_one(
                "SELECT outbox",
                "SELECT COUNT(*), COALESCE(MIN(created_at_ms), 0) FROM outbox
                 WHERE published_at_ms IS NULL AND dead_at_ms IS NULL",
                &[],
                |row| {
                    Ok(OutboxPending {
                        pending: row.get(0)?,
                        oldest_created_at_ms: row.get(1)?,
                    })
                },
            )
            .await
    }
}

pub(crate) static APPEND_OUTBOX: AtCommit = AtCommit::insert(
    "INSERT outbox",
    "INSERT INTO outbox (event_id, topic, aggregate_id, payload, trace_context, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
);

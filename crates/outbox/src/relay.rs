//! The outbox relay: claims committed events, publishes them, marks them published.
//!
//! Several relays (one per instance) may run against one database: a claim is a lease, and on
//! PostgreSQL claims skip rows another relay is claiming, so no event is published twice by
//! design; only a relay that dies between publish and mark leaves its events to be published
//! again after the lease — which idempotent consumers absorb.

use crate::event::Envelope;
use crate::transport::Transport;
use ordo_storage::records::OutboxRow;
use ordo_storage::{Database, now_ms};
use ordo_telemetry::propagation;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

/// Attempts before an event is dead-lettered.
pub const MAX_ATTEMPTS: i64 = 8;
const BATCH: u32 = 64;
/// How long a claim lasts: far longer than publishing a batch takes. Events claimed by a relay
/// that crashed wait this long before another relay (or the restarted one) takes them.
const LEASE_MS: i64 = 10_000;
/// The longest wait between two tries while the transport is away.
const OUTAGE_BACKOFF_CAP_MS: i64 = 5_000;
/// How often the relay looks without being woken (events written by another instance).
const POLL: Duration = Duration::from_millis(200);
/// How often a busy relay measures the backlog (a count over the pending rows: under load, a
/// few milliseconds of the database's time); an idle one measures after every round, so the
/// gauges settle as soon as the work is done.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Wakes the relay when a transaction wrote events, so they leave at once instead of at the
/// next poll.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Relay {
    db: Database,
    transport: Arc<dyn Transport>,
    wakeup: Wakeup,
    /// This relay's claims.
    token: String,
    /// Base of the retry backoff (`ORDO_OUTBOX_RETRY_BASE_MS`).
    retry_base: Duration,
    /// When the backlog was last measured.
    backlog_measured: std::sync::Mutex<Option<std::time::Instant>>,
    /// Rounds in a row in which the transport was away (broker outages): their retries back
    /// off on it, not on the events' attempts.
    outage_rounds: std::sync::atomic::AtomicU32,
}

impl Relay {
    pub fn new(db: Database, transport: Arc<dyn Transport>, wakeup: Wakeup) -> Self {
        Relay {
            db,
            transport,
            wakeup,
            token: format!("relay_{:032x}", uuid::Uuid::now_v7().as_u128()),
            retry_base: Duration::from_millis(100),
            backlog_measured: std::sync::Mutex::new(None),
            outage_rounds: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The base of the retry backoff: attempt n waits up to `base` · 2^n (capped at 30 s), so
    /// the [`MAX_ATTEMPTS`] attempts of an event span about 256 · `base`.
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    /// The wait after a round in which the transport was away, growing with the rounds in a
    /// row and capped at [`OUTAGE_BACKOFF_CAP_MS`], so the relay resumes soon after it returns.
    fn outage_backoff_ms(&self, rounds: u32) -> i64 {
        self.backoff_ms(i64::from(rounds))
            .min(OUTAGE_BACKOFF_CAP_MS)
    }

    fn backoff_ms(&self, attempts: i64) -> i64 {
        backoff_ms(
            i64::try_from(self.retry_base.as_millis()).unwrap_or(100),
            attempts,
        )
    }

    /// Publishes until `stop` is cancelled, then publishes what is already committed once more
    /// (the shutdown flush) and returns.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let drained = self
                .publish_pending()
                .instrument(propagation::unexported_span("outbox relay"))
                .await;
            if stop.is_cancelled() {
                break;
            }
            if drained {
                tokio::select! {
                    () = self.wakeup.0.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        self.publish_pending()
            .instrument(propagation::unexported_span("outbox relay"))
            .await;
    }

    /// One claim-publish-mark round. Returns whether the backlog is drained (false: go again).
    pub async fn publish_pending(&self) -> bool {
        let claimed = match self
            .db
            .claim_outbox(&self.token, BATCH, now_ms(), LEASE_MS)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "outbox: cannot claim events");
                tokio::time::sleep(POLL).await;
                return true;
            }
        };
        let full_batch = claimed.len() == BATCH as usize;
        let idle = claimed.is_empty();
        let outages = self.transport.failures_are_outages();
        let mut published = Vec::new();
        let mut failed = Vec::new();
        let mut dead = Vec::new();
        for (row, outcome) in self.publish_in_waves(by_order(claimed)).await {
            match outcome {
                Outcome::Published => published.push(row.seq),
                Outcome::Failed { attempt_context } if outages => failed.push(Retry {
                    seq: row.seq,
                    attempts: row.attempts,
                    attempt_context: Some(attempt_context),
                    counts: false,
                }),
                Outcome::Failed { .. } if row.attempts >= MAX_ATTEMPTS => dead.push(row.seq),
                Outcome::Failed { attempt_context } => failed.push(Retry {
                    seq: row.seq,
                    attempts: row.attempts,
                    attempt_context: Some(attempt_context),
                    counts: true,
                }),
                Outcome::HeldBack => failed.push(Retry {
                    seq: row.seq,
                    attempts: row.attempts,
                    attempt_context: None,
                    counts: false,
                }),
            }
        }
        let transport_away = outages && failed.iter().any(|r| r.attempt_context.is_some());
        let outage_rounds = if transport_away {
            self.outage_rounds.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            if !published.is_empty() {
                self.outage_rounds.store(0, Ordering::Relaxed);
            }
            0
        };
        if transport_away {
            tracing::warn!(
                system = self.transport.system(),
                events = failed.len(),
                rounds = outage_rounds,
                "outbox: the transport is away; waiting it out"
            );
        }
        let now = now_ms();
        let results = [
            self.db.mark_published(&self.token, &published, now).await,
            self.db.mark_dead(&self.token, &dead, now).await,
        ];
        for retry in &failed {
            let wait = if transport_away {
                self.outage_backoff_ms(outage_rounds)
            } else {
                self.backoff_ms(retry.attempts)
            };
            let released = self
                .db
                .release_claim(
                    &self.token,
                    retry.seq,
                    now + wait,
                    retry.attempt_context.as_deref(),
                    retry.counts,
                )
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "outbox: cannot schedule a retry");
            }
        }
        for result in results {
            if let Err(error) = result {
                tracing::warn!(%error, "outbox: cannot mark events");
            }
        }
        ordo_telemetry::metrics::count_outbox(
            published.len() as u64,
            failed.len() as u64,
            dead.len() as u64,
        );
        if !dead.is_empty() {
            tracing::error!(
                events = dead.len(),
                "outbox: events dead-lettered after {MAX_ATTEMPTS} attempts"
            );
        }
        if self.backlog_due() {
            self.observe_backlog().await;
        } else if idle {
            self.observe_pending().await;
        }
        !full_batch
    }

    /// Publishes the claimed events, grouped by order, in waves: the first event of every
    /// order, then the second, and so on, so that each order's events keep their commit order
    /// while a wave carries many orders at once (the in-process transport commits a wave's
    /// events of one consumer in one transaction). After a failure, the order's later events
    /// are held back, so no consumer sees them ahead of the one that failed.
    async fn publish_in_waves(&self, by_order: Vec<Vec<OutboxRow>>) -> Vec<(OutboxRow, Outcome)> {
        let mut queues: Vec<std::collections::VecDeque<OutboxRow>> =
            by_order.into_iter().map(Into::into).collect();
        let mut outcomes = Vec::new();
        loop {
            let mut rows = Vec::new();
            let mut wave = Vec::new();
            for (order, queue) in queues.iter_mut().enumerate() {
                let Some(row) = queue.pop_front() else {
                    continue;
                };
                let span = self.producer_span(&row);
                match Envelope::from_row(&row) {
                    Ok(mut envelope) => {
                        envelope.headers = propagation::inject_map(&span);
                        rows.push((order, row));
                        wave.push((envelope, span));
                    }
                    Err(error) => {
                        let attempt_context = failed_publish(&span, &row, &error);
                        outcomes.push((row, Outcome::Failed { attempt_context }));
                        hold_back(queue, &mut outcomes);
                    }
                }
            }
            // Empty: every order's events are out, or held back behind a row that failed.
            if wave.is_empty() {
                break;
            }
            let results = self.transport.publish_wave(&wave).await;
            for (((order, row), (_, span)), result) in rows.into_iter().zip(&wave).zip(results) {
                match result {
                    Ok(()) => outcomes.push((row, Outcome::Published)),
                    Err(error) => {
                        let attempt_context = failed_publish(span, &row, &error);
                        outcomes.push((row, Outcome::Failed { attempt_context }));
                        hold_back(&mut queues[order], &mut outcomes);
                    }
                }
            }
        }
        outcomes
    }

    /// The PRODUCER span of one publish of `row`, continuing the trace of the step that wrote
    /// it and linking to the previous attempt's span.
    fn producer_span(&self, row: &OutboxRow) -> tracing::Span {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", row.topic),
            otel.kind = "producer",
            otel.status_code = field::Empty,
            messaging.system = self.transport.system(),
            messaging.operation.type = "publish",
            messaging.operation.name = "publish",
            messaging.destination.name = %row.topic,
            messaging.message.id = %row.event_id,
            order.id = %row.aggregate_id,
            attempt = row.attempts,
        );
        propagation::adopt_parent_from_map(&span, &stored_context(&row.trace_context));
        if let Some(previous) = &row.last_attempt_context {
            propagation::link_to_map(&span, &stored_context(previous));
        }
        span
    }

    /// Whether a busy relay should measure the backlog now.
    fn backlog_due(&self) -> bool {
        let mut measured = self
            .backlog_measured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = measured.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY);
        if due {
            *measured = Some(std::time::Instant::now());
        }
        due
    }

    /// Every gauge of the backlog, the dead letters included (at most every [`BACKLOG_EVERY`]).
    async fn observe_backlog(&self) {
        if let Ok(backlog) = self.db.outbox_backlog().await {
            let lag_seconds = lag_seconds(backlog.pending, backlog.oldest_created_at_ms);
            ordo_telemetry::metrics::set_outbox_backlog(backlog.pending, lag_seconds, backlog.dead);
        }
    }

    /// The pending events and the lag alone: one read of the pending rows' index, after every
    /// idle round, so the gauges settle as soon as the work is done.
    async fn observe_pending(&self) {
        if let Ok(pending) = self.db.outbox_pending().await {
            let lag_seconds = lag_seconds(pending.pending, pending.oldest_created_at_ms);
            ordo_telemetry::metrics::set_outbox_pending(pending.pending, lag_seconds);
        }
    }
}

/// How old the oldest pending event is, in seconds (0 when none is pending).
fn lag_seconds(pending: i64, oldest_created_at_ms: i64) -> f64 {
    if pending == 0 {
        0.0
    } else {
        (now_ms() - oldest_created_at_ms).max(0) as f64 / 1000.0
    }
}

/// Records a failed publish on its span; returns the attempt's trace context (JSON), for the
/// next attempt to link to.
fn failed_publish(span: &tracing::Span, row: &OutboxRow, error: &ordo_domain::Error) -> String {
    span.record("otel.status_code", "error");
    span.in_scope(|| tracing::warn!(%error, topic = %row.topic, "outbox: publish failed"));
    serde_json::to_string(&propagation::inject_map(span)).unwrap_or_default()
}

/// The rest of an order's events after one failed: not tried this round.
fn hold_back(
    queue: &mut std::collections::VecDeque<OutboxRow>,
    outcomes: &mut Vec<(OutboxRow, Outcome)>,
) {
    outcomes.extend(queue.drain(..).map(|row| (row, Outcome::HeldBack)));
}

/// A claimed row to release for a later try.
struct Retry {
    seq: i64,
    attempts: i64,
    /// The failed attempt's trace context (JSON); `None` when it was not tried.
    attempt_context: Option<String>,
    /// Whether the try counts toward the row's attempts (not when held back or when the
    /// transport was away).
    counts: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Published,
    Failed {
        /// The failed attempt's trace context (JSON), linked from the next attempt.
        attempt_context: String,
    },
    /// Not tried: an earlier event of the same order failed in this round.
    HeldBack,
}

/// The claimed rows grouped by order, each group in commit (seq) order, groups in the order of
/// their first event.
fn by_order(claimed: Vec<OutboxRow>) -> Vec<Vec<OutboxRow>> {
    let mut groups: Vec<Vec<OutboxRow>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in claimed {
        let slot = *index.entry(row.aggregate_id.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(row);
    }
    groups
}

/// A stored trace context (JSON object of W3C fields); unreadable → empty.
fn stored_context(json: &str) -> std::collections::HashMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Exponential backoff with jitter: between half and all of `base_ms` · 2^attempts, capped
/// at 30 s.
fn backoff_ms(base_ms: i64, attempts: i64) -> i64 {
    let ceiling = (base_ms.max(1) << attempts.clamp(0, 9)).min(30_000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as i64;
    ceiling / 2 + ceiling * jitter / 2000
}

#[cfg(test)]
mod tests {
    use super::{backoff_ms, by_order};
    use ordo_storage::records::OutboxRow;

    fn row(seq: i64, order: &str) -> OutboxRow {
        OutboxRow {
            seq,
            event_id: format!("evt_{seq}"),
            topic: "t".into(),
            aggregate_id: order.into(),
            payload: "{}".into(),
            trace_context: "{}".into(),
            created_at_ms: 0,
            attempts: 1,
            last_attempt_context: None,
        }
    }

    #[test]
    fn events_are_grouped_by_order_keeping_commit_order() {
        let claimed = [
            row(1, "a"),
            row(2, "b"),
            row(3, "a"),
            row(4, "c"),
            row(5, "b"),
        ];
        let seqs: Vec<Vec<i64>> = by_order(claimed.to_vec())
            .iter()
            .map(|group| group.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn backoff_grows_with_attempts_and_stays_capped() {
        for attempts in 1..20 {
            let ceiling = (100i64 << attempts.clamp(0, 9)).min(30_000);
            let wait = backoff_ms(100, attempts);
            assert!(
                (ceiling / 2..=ceiling).contains(&wait),
                "{attempts}: {wait}"
            );
        }
    }
}

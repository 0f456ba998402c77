//! Running a consumer on one event: a CONSUMER span that continues the publisher's trace, and a
//! transaction in which the consumer's effect and the event's processed id commit together.

use crate::event::Envelope;
use crate::relay::Wakeup;
use ordo_domain::Result;
use ordo_storage::{Database, WriteTx, now_ms};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use tracing::{Instrument, field};

pub type HandleFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A stage that reacts to events. `handle` does its work inside `tx` (and may append new
/// events to it); it must not commit: the runner does, together with the processed id.
pub trait Consumer: Send + Sync + 'static {
    /// Stable name: the key of its processed-event ids and its metric label.
    fn name(&self) -> &'static str;

    fn topics(&self) -> &'static [&'static str];

    fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a>;

    /// Called once before [`Consumer::handle`] runs for each of `events` in one transaction (a
    /// batch): the place to read or lock what they all need in one statement (the default does
    /// nothing).
    fn begin_batch<'a>(
        &'a self,
        _events: &'a [&'a Envelope],
        _tx: &'a mut WriteTx,
    ) -> HandleFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Work that must not hold the write transaction (a call to another system), run in the
    /// CONSUMER span before `handle`'s transaction begins — on every delivery, duplicates
    /// included, so it must be idempotent by itself. An error leaves the event to redelivery.
    fn prepare<'a>(&'a self, _event: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// [`Consumer::prepare`] for the events of a batch (of distinct orders), each in its own
    /// CONSUMER span (`spans`, in the order of `events`); answers in that order. What the
    /// batch does at once (one statement for all) runs in `batch_span`, the batch's span. By
    /// default each event is prepared on its own, all at once.
    fn prepare_batch<'a>(
        &'a self,
        events: &'a [&'a Envelope],
        spans: &'a [tracing::Span],
        _batch_span: &'a tracing::Span,
    ) -> PrepareBatchFuture<'a> {
        Box::pin(prepare_each(events, spans, |event| self.prepare(event)))
    }

    /// The last delivery of `event` failed (no redelivery follows): the consumer's chance to
    /// settle it instead of leaving it to the dead letters, e.g. by failing the order and
    /// running its compensations, so that no order is left stuck half-way. Runs in a
    /// transaction of its own that also records the event as processed; return `Ok(true)` once
    /// settled, `Ok(false)` to let the event be dead-lettered (the default).
    fn give_up<'a>(
        &'a self,
        _event: &'a Envelope,
        _error: &'a ordo_domain::Error,
        _tx: &'a mut WriteTx,
    ) -> GiveUpFuture<'a> {
        Box::pin(async { Ok(false) })
    }
}

/// Prepares each of `events` on its own, in its span (`spans`, in the same order), all at
/// once; answers in their order. What a batch does when its events share nothing to prepare.
pub fn prepare_each<'a, Prepared>(
    events: &'a [&'a Envelope],
    spans: &'a [tracing::Span],
    prepare: impl Fn(&'a Envelope) -> Prepared + 'a,
) -> impl Future<Output = Vec<Result<()>>> + 'a
where
    Prepared: Future<Output = Result<()>> + 'a,
{
    futures::future::join_all(
        events
            .iter()
            .zip(spans)
            .map(move |(event, span)| prepare(event).instrument(span.clone())),
    )
}

pub type PrepareBatchFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<()>>> + Send + 'a>>;

pub type GiveUpFuture<'a> = Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

/// What one delivery came to.
pub struct Attempt {
    pub result: Result<()>,
    /// The trace context of this attempt's CONSUMER span, for the next attempt to link to.
    pub context: HashMap<String, String>,
}

/// What processing one event did, for the stage-duration metric's `outcome`.
enum Processed {
    Applied,
    /// The event's id was recorded already: a redelivery, nothing changed.
    Duplicate,
}

/// A consumer with what it needs to run: the database, and the relay to wake when its
/// transaction wrote new events.
pub struct ConsumerRunner {
    consumer: Box<dyn Consumer>,
    db: Database,
    wakeup: Wakeup,
    system: &'static str,
}

impl ConsumerRunner {
    pub fn new(consumer: impl Consumer, db: Database, wakeup: Wakeup) -> Self {
        ConsumerRunner {
            consumer: Box::new(consumer),
            db,
            wakeup,
            system: "ordo_in_process",
        }
    }

    /// `messaging.system` of the CONSUMER spans of [`ConsumerRunner::deliver`]; transports
    /// that deliver themselves use [`ConsumerRunner::deliver_from`] with their own name.
    pub fn with_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    pub fn name(&self) -> &'static str {
        self.consumer.name()
    }

    pub fn topics(&self) -> &'static [&'static str] {
        self.consumer.topics()
    }

    /// Processes `event` once: a redelivered event finds its id recorded and changes nothing.
    pub async fn deliver(&self, event: &Envelope) -> Result<()> {
        self.deliver_from(event, self.system).await
    }

    /// As [`ConsumerRunner::deliver`], with the `messaging.system` of the transport that carried
    /// the event (`ordo_in_process`, `rabbitmq`, `nats`).
    pub async fn deliver_from(&self, event: &Envelope, system: &'static str) -> Result<()> {
        self.attempt(event, system).await.result
    }

    /// One delivery in a CONSUMER span that continues the publisher's trace and links to the
    /// previous attempt's span. When the last delivery fails, [`Consumer::give_up`] may settle
    /// the event; otherwise the error stands and the transport dead-letters it.
    pub async fn attempt(&self, event: &Envelope, system: &'static str) -> Attempt {
        let span = self.consumer_span(event, system);
        let started = std::time::Instant::now();
        let result = self.process(event).instrument(span.clone()).await;
        self.settle(event, &span, started, result).await
    }

    /// Delivers `events` (of distinct orders) together: their effects commit in one
    /// transaction, with one statement recording their processed ids, instead of a
    /// transaction each. Each event keeps its own CONSUMER span in its own trace; the shared
    /// statements run in a `process batch` span, a child of the first event's span, linked to
    /// and from every event's span. When anything in the batch fails, the batch is rolled back
    /// and each event is processed on its own, so one event's failure is never another's.
    /// Answers in the order of `events`.
    pub async fn attempt_batch(&self, events: &[&Envelope], system: &'static str) -> Vec<Attempt> {
        if events.len() < 2 {
            let mut attempts = Vec::with_capacity(events.len());
            for event in events {
                attempts.push(self.attempt(event, system).await);
            }
            return attempts;
        }
        let started = std::time::Instant::now();
        let spans: Vec<tracing::Span> = events
            .iter()
            .map(|event| self.consumer_span(event, system))
            .collect();
        let batch_span = self.batch_span(events, &spans, system);
        let prepared = self
            .consumer
            .prepare_batch(events, &spans, &batch_span)
            .await;
        let mut results: Vec<Option<Result<Processed>>> = Vec::with_capacity(events.len());
        let mut ready = Vec::new();
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Ok(()) => {
                    ready.push(index);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        // Orders are locked in id order, as every batch locks them: two batches never wait
        // for each other in a cycle.
        ready.sort_by(|&a, &b| events[a].aggregate_id.cmp(&events[b].aggregate_id));
        let batch: Vec<(&Envelope, &tracing::Span)> =
            ready.iter().map(|&i| (events[i], &spans[i])).collect();
        match self.process_batch(&batch, &batch_span).await {
            Ok(processed) => {
                for (&index, processed) in ready.iter().zip(processed) {
                    results[index] = Some(Ok(processed));
                }
            }
            Err(error) => {
                tracing::debug!(%error, consumer = self.consumer.name(),
                    "a batch failed; processing its events one by one");
                let singles = futures::future::join_all(ready.iter().map(|&index| {
                    self.process_prepared(events[index])
                        .instrument(spans[index].clone())
                }))
                .await;
                for (&index, result) in ready.iter().zip(singles) {
                    results[index] = Some(result);
                }
            }
        }
        let mut attempts = Vec::with_capacity(events.len());
        for ((event, span), result) in events.iter().zip(&spans).zip(results) {
            let result = result.unwrap_or_else(|| Err(ordo_domain::Error::internal("unprocessed")));
            attempts.push(self.settle(event, span, started, result).await);
        }
        attempts
    }

    /// The CONSUMER span of one delivery of `event`: a child of the publisher's span, linked to
    /// the previous attempt's.
    fn consumer_span(&self, event: &Envelope, system: &'static str) -> tracing::Span {
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", event.topic),
            otel.kind = "consumer",
            otel.status_code = field::Empty,
            messaging.system = system,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %event.topic,
            messaging.message.id = %event.event_id,
            messaging.consumer.group.name = self.consumer.name(),
            order.id = %event.aggregate_id,
            delivery.attempt = i64::from(event.delivery.attempt),
            duplicate = field::Empty,
            given_up = field::Empty,
        );
        ordo_telemetry::propagation::adopt_parent_from_map(&span, &event.headers);
        ordo_telemetry::propagation::link_to_map(&span, &event.delivery.previous_attempt);
        span
    }

    /// What one delivery came to: on the last delivery's failure, [`Consumer::give_up`]'s
    /// chance to settle the event; the stage-duration metric; the span's context for the next
    /// attempt.
    async fn settle(
        &self,
        event: &Envelope,
        span: &tracing::Span,
        started: std::time::Instant,
        result: Result<Processed>,
    ) -> Attempt {
        let mut outcome = match &result {
            Ok(Processed::Applied) => "ok",
            Ok(Processed::Duplicate) => "duplicate",
            Err(_) => "error",
        };
        let mut result = result.map(|_| ());
        if let Err(error) = &result {
            span.record("otel.status_code", "error");
            span.in_scope(|| {
                tracing::warn!(consumer = self.consumer.name(), error = %error,
                    attempt = event.delivery.attempt, last = event.delivery.last,
                    "event processing failed")
            });
            if event.delivery.last {
                match self.give_up(event, error).instrument(span.clone()).await {
                    Ok(true) => {
                        span.record("given_up", true);
                        outcome = "given_up";
                        result = Ok(());
                    }
                    Ok(false) => {}
                    Err(give_up_error) => span.in_scope(|| {
                        tracing::error!(consumer = self.consumer.name(), error = %give_up_error,
                            "settling an event that keeps failing failed too")
                    }),
                }
            }
        }
        let context = ordo_telemetry::propagation::inject_map(span);
        ordo_telemetry::metrics::observe_consumer_process(
            self.consumer.name(),
            outcome,
            started.elapsed().as_secs_f64(),
            context.get("traceparent").and_then(|traceparent| {
                ordo_telemetry::metrics::TraceExemplar::from_sampled_traceparent(
                    traceparent.as_bytes(),
                )
            }),
        );
        Attempt { result, context }
    }

    /// The `process batch` span of a batch of `events` (their CONSUMER spans are `spans`): a
    /// child of the first event's span, linked to and from every event's span.
    fn batch_span(
        &self,
        events: &[&Envelope],
        spans: &[tracing::Span],
        system: &'static str,
    ) -> tracing::Span {
        let topic = events
            .first()
            .map(|event| event.topic.as_str())
            .unwrap_or("");
        let batch_span = tracing::info_span!(
            "process batch",
            otel.name = %format!("process {topic} batch"),
            otel.kind = "consumer",
            otel.status_code = field::Empty,
            messaging.system = system,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %topic,
            messaging.consumer.group.name = self.consumer.name(),
            messaging.batch.message_count = events.len() as i64,
        );
        if let Some(first_span) = spans.first() {
            ordo_telemetry::propagation::adopt_parent_span(&batch_span, first_span);
        }
        for span in spans {
            ordo_telemetry::propagation::link_to(&batch_span, span);
            ordo_telemetry::propagation::link_to(span, &batch_span);
        }
        batch_span
    }

    /// The prepared `events` in one transaction, in `batch_span`: their processed ids in one
    /// statement, then each one's `handle` in its own span, then one commit. Any failure fails
    /// the whole batch (nothing of it is written).
    async fn process_batch(
        &self,
        events: &[(&Envelope, &tracing::Span)],
        batch_span: &tracing::Span,
    ) -> Result<Vec<Processed>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin().instrument(batch_span.clone()).await?;
        let ids: Vec<&str> = events.iter().map(|(e, _)| e.event_id.as_str()).collect();
        let fresh = tx
            .mark_many_processed(self.consumer.name(), &ids, now_ms())
            .instrument(batch_span.clone())
            .await?;
        let processed: Vec<Processed> = events
            .iter()
            .map(|(event, span)| {
                if fresh.contains(&event.event_id) {
                    Processed::Applied
                } else {
                    self.record_duplicate(span);
                    Processed::Duplicate
                }
            })
            .collect();
        let to_handle: Vec<(&Envelope, &tracing::Span)> = events
            .iter()
            .zip(&processed)
            .filter(|(_, processed)| matches!(processed, Processed::Applied))
            .map(|(&event_and_span, _)| event_and_span)
            .collect();
        let to_lock: Vec<&Envelope> = to_handle.iter().map(|(event, _)| *event).collect();
        self.consumer
            .begin_batch(&to_lock, &mut tx)
            .instrument(batch_span.clone())
            .await?;
        for (event, span) in to_handle {
            self.consumer
                .handle(event, &mut tx)
                .instrument(span.clone())
                .await?;
        }
        let touched = tx.touched_orders().to_vec();
        let committed = tx.commit().instrument(batch_span.clone()).await;
        if committed.is_err() {
            batch_span.record("otel.status_code", "error");
        }
        committed?;
        self.wakeup.wake();
        self.refresh_cached_orders(touched);
        Ok(processed)
    }

    /// After a batch changed `orders`: their cached reads, invalidated by the commit, read
    /// again in one statement (PostgreSQL), in the background, so that the reads of the
    /// orders a stage just moved (shoppers and storefronts following them) do not each miss.
    /// Best effort: a failure only leaves the next read to miss.
    fn refresh_cached_orders(&self, orders: Vec<String>) {
        if orders.len() < 2 {
            return;
        }
        let db = self.db.clone();
        tokio::spawn(
            async move {
                let ids: Vec<&str> = orders.iter().map(String::as_str).collect();
                if let Err(error) = db.refresh_cached_orders(&ids).await {
                    tracing::debug!(%error, "refreshing the cached orders of a batch failed");
                }
            }
            .instrument(ordo_telemetry::propagation::unexported_span(
                "refresh cached orders",
            )),
        );
    }

    async fn process(&self, event: &Envelope) -> Result<Processed> {
        self.consumer.prepare(event).await?;
        self.process_prepared(event).await
    }

    /// A redelivered event found its id recorded: nothing changes, and its span and the
    /// duplicates counter say so.
    fn record_duplicate(&self, span: &tracing::Span) {
        span.record("duplicate", true);
        ordo_telemetry::metrics::count_duplicate_event(self.consumer.name());
    }

    /// [`ConsumerRunner::process`] once [`Consumer::prepare`] has run.
    async fn process_prepared(&self, event: &Envelope) -> Result<Processed> {
        let mut tx = self.db.begin().await?;
        if !tx
            .mark_processed(self.consumer.name(), &event.event_id, now_ms())
            .await?
        {
            self.record_duplicate(&tracing::Span::current());
            return Ok(Processed::Duplicate);
        }
        self.consumer.handle(event, &mut tx).await?;
        tx.commit().await?;
        self.wakeup.wake();
        Ok(Processed::Applied)
    }

    /// [`Consumer::give_up`] in its own transaction, with the event's processed id.
    async fn give_up(&self, event: &Envelope, error: &ordo_domain::Error) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        if !tx
            .mark_processed(self.consumer.name(), &event.event_id, now_ms())
            .await?
        {
            return Ok(true);
        }
        if !self.consumer.give_up(event, error, &mut tx).await? {
            return Ok(false);
        }
        tx.commit().await?;
        self.wakeup.wake();
        tracing::error!(consumer = self.consumer.name(), error = %error,
            "the event's last delivery failed; the consumer settled it");
        Ok(true)
    }
}

//! The stage runner: a [`Step`] of the saga served as an outbox consumer.
//!
//! Every step begins the same way: lock the event's order in the step's transaction and run
//! only if the order still waits for this step (a redelivered or re-driven event finds it
//! moved on and does nothing). And every step ends the same way when its event's last delivery
//! fails: the order, if it still waits, fails and is compensated
//! ([`Fulfillment::fail_stuck_order`]). [`Stage`] does both, so a step file holds only its step.

use super::Fulfillment;
use ordo_domain::order::OrderStatus;
use ordo_domain::{Error, Result};
use ordo_outbox::Envelope;
use ordo_outbox::consumer::{Consumer, GiveUpFuture, HandleFuture, PrepareBatchFuture};
use ordo_storage::WriteTx;
use ordo_storage::records::OrderRecord;
use std::marker::PhantomData;

/// One step of the saga.
pub(crate) trait Step: Send + Sync + 'static {
    /// The consumer's name: its queue, its processed-event ids, its metric label.
    const NAME: &'static str;
    /// The topic it consumes (one).
    const TOPICS: &'static [&'static str];
    /// The status its event leaves the order in until the step runs.
    const WAITING: OrderStatus;

    /// Work outside any write transaction (a call to another system), before [`Step::run`];
    /// must be idempotent by itself (it runs on every delivery).
    fn prepare<'a>(
        _fulfillment: &'a Fulfillment,
        _event: &'a Envelope,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async { Ok(()) }
    }

    /// [`Step::prepare`] for the events of a batch, each result in the order of `events`
    /// (see [`Consumer::prepare_batch`]); by default each one on its own, all at once.
    fn prepare_batch<'a>(
        fulfillment: &'a Fulfillment,
        events: &'a [&'a Envelope],
        spans: &'a [tracing::Span],
        _batch_span: &'a tracing::Span,
    ) -> impl Future<Output = Vec<Result<()>>> + Send + 'a {
        ordo_outbox::consumer::prepare_each(events, spans, |event| {
            Self::prepare(fulfillment, event)
        })
    }

    /// Reads ahead, in one statement per kind, what the step will read for each of `orders`
    /// (locked, in [`Step::WAITING`]) in a batch: each [`Step::run`] then finds its part
    /// without a round trip of its own (the default reads nothing).
    fn prefetch<'a>(
        _fulfillment: &'a Fulfillment,
        _orders: &'a [&'a str],
        _tx: &'a mut WriteTx,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async { Ok(()) }
    }

    /// The step, on `order` (locked, in [`Step::WAITING`]), in the consumer's transaction.
    fn run<'a>(
        fulfillment: &'a Fulfillment,
        order: OrderRecord,
        tx: &'a mut WriteTx,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

/// A [`Step`] as an outbox consumer.
pub(crate) struct Stage<S> {
    fulfillment: Fulfillment,
    step: PhantomData<fn() -> S>,
}

impl<S: Step> Stage<S> {
    pub(crate) fn new(fulfillment: Fulfillment) -> Self {
        Stage {
            fulfillment,
            step: PhantomData,
        }
    }
}

impl<S: Step> Consumer for Stage<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn topics(&self) -> &'static [&'static str] {
        S::TOPICS
    }

    fn prepare<'a>(&'a self, event: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(S::prepare(&self.fulfillment, event))
    }

    fn prepare_batch<'a>(
        &'a self,
        events: &'a [&'a Envelope],
        spans: &'a [tracing::Span],
        batch_span: &'a tracing::Span,
    ) -> PrepareBatchFuture<'a> {
        Box::pin(S::prepare_batch(
            &self.fulfillment,
            events,
            spans,
            batch_span,
        ))
    }

    /// The batch's orders locked in one statement, and what the step reads of those still
    /// waiting for it read ahead ([`Step::prefetch`]); each `handle` then finds its own.
    fn begin_batch<'a>(
        &'a self,
        events: &'a [&'a Envelope],
        tx: &'a mut WriteTx,
    ) -> HandleFuture<'a> {
        Box::pin(async move {
            let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
            tx.lock_orders_without_items(&ids).await?;
            let waiting: Vec<String> = tx
                .locked_orders()
                .iter()
                .filter(|order| order.status == S::WAITING)
                .map(|order| order.id.clone())
                .collect();
            let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
            S::prefetch(&self.fulfillment, &waiting, tx).await
        })
    }

    fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a> {
        Box::pin(async move {
            let Some(order) = tx.lock_order_without_items(&event.aggregate_id).await? else {
                return Err(Error::internal("an event's order is missing"));
            };
            if order.status != S::WAITING {
                tracing::info!(order.id = %order.id, status = %order.status, stage = S::NAME,
                    "the order has moved on; nothing to do");
                return Ok(());
            }
            S::run(&self.fulfillment, order, tx).await
        })
    }

    fn give_up<'a>(
        &'a self,
        event: &'a Envelope,
        error: &'a Error,
        tx: &'a mut WriteTx,
    ) -> GiveUpFuture<'a> {
        Box::pin(
            self.fulfillment
                .fail_stuck_order(event, error, tx, S::WAITING, S::NAME),
        )
    }
}

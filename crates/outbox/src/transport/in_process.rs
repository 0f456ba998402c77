//! The default transport: hands each event to this process's consumers, by topic, and
//! acknowledges once every subscribed consumer committed.

use super::{PublishFuture, Transport, WaveFuture};
use crate::consumer::ConsumerRunner;
use crate::event::Envelope;
use ordo_domain::Result;
use std::collections::HashMap;
use std::sync::Arc;

/// Hands events to the consumers of this process, by topic.
#[derive(Clone, Default)]
pub struct InProcess {
    subscribers: Arc<HashMap<String, Vec<Arc<ConsumerRunner>>>>,
}

impl InProcess {
    pub fn new(consumers: Vec<Arc<ConsumerRunner>>) -> Self {
        let mut subscribers: HashMap<String, Vec<Arc<ConsumerRunner>>> = HashMap::new();
        for consumer in consumers {
            for topic in consumer.topics() {
                subscribers
                    .entry((*topic).to_owned())
                    .or_default()
                    .push(Arc::clone(&consumer));
            }
        }
        InProcess {
            subscribers: Arc::new(subscribers),
        }
    }
}

impl Transport for InProcess {
    fn system(&self) -> &'static str {
        "ordo_in_process"
    }

    /// A publish runs the consumers: its failures are theirs.
    fn failures_are_outages(&self) -> bool {
        false
    }

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            if let Some(consumers) = self.subscribers.get(&event.topic) {
                for consumer in consumers {
                    consumer.deliver_from(event, self.system()).await?;
                }
            }
            Ok(())
        })
    }

    /// Each consumer gets the wave's events of its topics as one batch
    /// ([`ConsumerRunner::attempt_batch`]: one transaction for all of them); the consumers
    /// run concurrently (the events are of distinct orders). An event is acknowledged once
    /// every consumer of its topic committed it.
    fn publish_wave<'a>(&'a self, wave: &'a [(Envelope, tracing::Span)]) -> WaveFuture<'a> {
        Box::pin(async move {
            let mut batches: Vec<(&Arc<ConsumerRunner>, Vec<usize>)> = Vec::new();
            for (index, (event, _)) in wave.iter().enumerate() {
                for consumer in self.subscribers.get(&event.topic).into_iter().flatten() {
                    match batches.iter_mut().find(|(c, _)| Arc::ptr_eq(c, consumer)) {
                        Some((_, indexes)) => indexes.push(index),
                        None => batches.push((consumer, vec![index])),
                    }
                }
            }
            let runs = batches.iter().map(|(consumer, indexes)| async move {
                let events: Vec<&Envelope> = indexes.iter().map(|&i| &wave[i].0).collect();
                consumer.attempt_batch(&events, self.system()).await
            });
            let attempts = futures::future::join_all(runs).await;
            let mut results: Vec<Result<()>> = wave.iter().map(|_| Ok(())).collect();
            for ((_, indexes), attempts) in batches.iter().zip(attempts) {
                for (&index, attempt) in indexes.iter().zip(attempts) {
                    if let Err(error) = attempt.result
                        && results[index].is_ok()
                    {
                        results[index] = Err(error);
                    }
                }
            }
            results
        })
    }
}

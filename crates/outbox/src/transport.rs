//! Where the relay publishes. A transport acknowledges an event only when it is safe to forget
//! it on this side: for the in-process transport, once every subscribed consumer committed.

use crate::consumer::ConsumerRunner;
use crate::event::Envelope;
use ordo_domain::Result;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

pub trait Transport: Send + Sync + 'static {
    /// `messaging.system` of the spans (`ordo_in_process`, `rabbitmq`, `nats`).
    fn system(&self) -> &'static str;

    /// Publishes `event`; `Ok` is the acknowledgement.
    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a>;
}

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

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            if let Some(consumers) = self.subscribers.get(&event.topic) {
                for consumer in consumers {
                    consumer.deliver(event).await?;
                }
            }
            Ok(())
        })
    }
}
